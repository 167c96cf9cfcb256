"""What the command line runs besides the client: the demo, a private Redis, the mock
OpenAI-format vendor server and the Prometheus exporter. Imported only by the CLI
commands that use them (and by tests and benchmarks), never by the client library."""
