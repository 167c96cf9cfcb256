"""What callers import: the client (submit, get, wait, stream, ...) and the `llmdispatch` CLI.

The client arrives with the queue (issue #4); today the package holds the
command line (`llmdispatch --version`, `llmdispatch config check`).
"""

__all__: list[str] = []
