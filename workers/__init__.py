"""Celery workers: the app, the per-vendor queues and the tasks that run jobs.

Start one with `llmdispatch worker --vendors openai,anthropic` (or
`celery -A workers.app worker -Q llm.openai,llm.anthropic --pool threads`).
This package imports `dispatcher`, never `producer`; the two meet in Redis.
"""

__all__: list[str] = []
