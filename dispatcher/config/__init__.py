"""Configuration: settings from the environment and the YAML/JSON file, its schema, its problems."""
