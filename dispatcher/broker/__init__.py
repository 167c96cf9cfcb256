"""The broker: Celery's message format and settings (no celery import), the ready
set and bells, and the messages the queues carry."""
