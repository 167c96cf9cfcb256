"""Every change we make to Celery's and kombu's own classes, in one place.

Each module names the versions it was tested with; `dispatcher/tested_versions.py`
holds the ranges (a worker warns at start outside them), and
`docs/private-internals.md` lists every private attribute touched, why, and the
test that catches a change.

- `clients`: kombu's Redis channels reuse one redis-py client
  (`dispatcher.broker.channel_clients`, shared with producers), and its QoS keeps
  what a lost connection would drop (applied as the Celery app is built).
- `consumer`: Celery's consumer restores countdowns a lost connection dropped,
  finishes acknowledgements Redis refused, pushes back messages popped but not
  recorded, records what the worker holds (for its heartbeat), and paces task
  events.
"""
