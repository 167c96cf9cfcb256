"""`llmdispatch`, the command line: parses arguments, prints, calls the client.

Its tools (the demo, the embedded Redis, the mock vendor server, the metrics
exporter) live in `producer.cli.root.tools`, which only the commands that use them
import, when they run.
"""

from producer.cli.root import app, main

__all__ = ["app", "main"]
