"""Running the front on uvicorn: `serve(host, port, workers)`, and the refusal to listen
beyond loopback without API keys.

With `workers` above 1, uvicorn starts that many processes, each building the
app from the environment (`app_from_env`), as any number of replicas would.
"""

from __future__ import annotations

from typing import Any

from dispatcher.config.settings import Settings
from dispatcher.errors import ConfigError
from producer.loopback import is_loopback

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "app_from_env", "exposure_problem", "serve"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
KEEP_ALIVE_S = 75


def exposure_problem(settings: Settings, host: str) -> str | None:
    """Why the front may not listen on `host` as configured; None when it may."""
    if settings.server.api_keys or is_loopback(host):
        return None
    return (
        f"no API keys are configured, so the server listens on loopback only, not {host}: "
        "set server.api_keys in the configuration file or LLMDISPATCH_SERVER_API_KEYS="
        "key:tenant,... to let other machines in"
    )


def app_from_env() -> Any:
    """The app for the configuration in the environment (uvicorn's factory)."""
    # Imported here: building the app pulls in FastAPI, which other commands never need.
    from producer.http_api.app import create_app  # noqa: PLC0415

    return create_app(Settings.load())


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, workers: int = 1) -> None:
    """Serve until SIGINT or SIGTERM.

    Raises:
        ConfigError: the configuration is invalid, or would expose a keyless server.
    """
    import uvicorn  # noqa: PLC0415

    settings = Settings.load()
    problem = exposure_problem(settings, host)
    if problem is not None:
        raise ConfigError([problem])
    uvicorn.run(
        "producer.http_api.serving:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # The access log shows method, path and status, never bodies or headers (no keys).
        access_log=True,
        proxy_headers=False,
        # Longer than a load balancer's idle timeout (60 s on AWS's), and than a pooled
        # client's pause between bursts: uvicorn's 5 s closes connections clients reuse.
        timeout_keep_alive=KEEP_ALIVE_S,
        log_level="info",
    )
