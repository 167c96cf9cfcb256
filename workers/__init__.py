"""Celery workers: the app, the per-vendor queues and the task that runs a job.

The Celery side arrives with the queue (issue #4). This package only ever
imports `dispatcher`, never `producer`; the two meet in Redis.
"""

__all__: list[str] = []
