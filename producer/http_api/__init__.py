"""The OpenAI-compatible HTTP front (`llmdispatch serve`): any OpenAI SDK submits jobs.

`create_app(settings)` builds the ASGI app; `serve` runs it on uvicorn.
"""

from producer.http_api.app import create_app
from producer.http_api.serving import serve

__all__ = ["create_app", "serve"]
