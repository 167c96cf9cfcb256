"""What the command line runs besides the client: the demo, a private Redis, the stand-in
vendor server (`standin`, every vendor's wire format) and the Prometheus exporter. Imported
only by the CLI commands that use them (and by tests and benchmarks), never by the client
library."""
