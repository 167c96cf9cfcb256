"""A whole dispatcher for a test: private Redis, stand-in vendors, config, workers, Flower.

Everything is a real process or a real socket: the worker is `celery worker`
started as a subprocess, the vendors answer over HTTP on loopback. Waiting is
always on a condition with a timeout (a log line, a request seen, a job ended).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from producer.cli.tools.embedded_redis import EmbeddedRedis, free_port
from tests.standins.server import ThreadedServer, standin_server

ROOT = Path(__file__).resolve().parents[2]
WORKER_READY_TIMEOUT_S = 60.0
FLOWER_READY_TIMEOUT_S = 60.0
POLL_S = 0.05
# The console script docker-compose.yml runs, next to this interpreter.
LLMDISPATCH_SCRIPT = Path(sys.executable).parent / "llmdispatch"
# The status `Flower.get` gives while nothing answers HTTP on Flower's port.
NOT_ANSWERING = 0


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll `condition` until it returns something truthy; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(POLL_S)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


@dataclass
class Worker:
    """A `celery worker` subprocess and its log."""

    process: subprocess.Popen[bytes]
    log: Path
    name: str

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no warm shutdown, no acknowledgement of what it was running."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        stop_process(self.process)


@dataclass
class Front(Worker):
    """A `llmdispatch serve` subprocess, its log and its base URL (`/v1` is the API's)."""

    url: str = ""


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM and wait for the process to end; SIGKILL if it has not within 30 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


@dataclass
class Stack:
    """The parts a queue test needs, and the environment every process shares."""

    redis: EmbeddedRedis
    standin: ThreadedServer
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)
    fronts: list[Front] = field(default_factory=list)

    def configure(self, config: dict[str, Any], **env: str) -> None:
        """Write the configuration file (URLs may use {url}) and set the environment."""
        text = yaml.safe_dump(config).replace("{url}", self.standin.url)
        path = self.workdir / "llmdispatch.yaml"
        path.write_text(text)
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", ""),
            "PYTHONPATH": str(ROOT),
            "REDIS_URL": self.redis.url,
            "LLMDISPATCH_CONFIG": str(path),
            "LLMDISPATCH_KEY_PREFIX": "itest",
            **env,
        }

    @contextmanager
    def environment(self) -> Iterator[None]:
        """This stack's variables in the test process too (for Settings.load())."""
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def start_worker(
        self, queues: list[str], *, concurrency: int = 20, name: str = "w1", loglevel: str = "INFO"
    ) -> Worker:
        """Start a worker consuming `queues` and wait until it says it is ready."""
        log = self.workdir / f"{name}.log"
        args = [
            sys.executable, "-m", "celery", "-A", "workers.app", "worker",
            "-Q", ",".join(queues), "--pool", "threads", "-c", str(concurrency),
            "-n", f"{name}@%h", "--loglevel", loglevel, "--without-gossip", "--without-mingle",
            "--logfile", str(log),
        ]  # fmt: skip
        # Run from the stack's folder: a `.env` in the checkout (maybe with real keys) is
        # read from the working directory, and must not reach a test's worker.
        process = subprocess.Popen(
            args,
            env=self.env,
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        worker = Worker(process, log, name)
        self.workers.append(worker)

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"worker {name} exited: {worker.log_text()[-2000:]}")
            return " ready." in worker.log_text()

        wait_for(ready, WORKER_READY_TIMEOUT_S, f"worker {name} to be ready")
        return worker

    def start_front(self, *, name: str = "front") -> Front:
        """Start `llmdispatch serve` on a free port and wait until it says Redis answers."""
        port = free_port()
        log = self.workdir / f"{name}.log"
        args = [sys.executable, "-c", "from producer.cli import main; main()",
                "serve", "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
        with log.open("wb") as out:
            process = subprocess.Popen(
                args, env=self.env, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT
            )
        front = Front(process, log, name, f"http://127.0.0.1:{port}")
        self.fronts.append(front)

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"{name} exited: {front.log_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{front.url}/readyz", timeout=5) as answer:  # noqa: S310
                    return bool(answer.status == 200)
            except OSError:
                return False

        wait_for(ready, WORKER_READY_TIMEOUT_S, f"{name} to answer /readyz")
        return front

    def received(self) -> list[dict[str, Any]]:
        """What the stand-in vendors received, oldest first."""
        with urllib.request.urlopen(f"{self.standin.url}/__requests", timeout=10) as answer:  # noqa: S310
            data: list[dict[str, Any]] = json.load(answer)
            return data

    def stop(self) -> None:
        """Stop every worker: all are told at once, so their warm shutdowns overlap."""
        for front in self.fronts:
            front.stop()
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.terminate()
        for worker in self.workers:
            worker.stop()


@contextmanager
def running_stack(workdir: Path, *, redis_server: EmbeddedRedis | None = None) -> Iterator[Stack]:
    """A private Redis and stand-in vendors for one test; everything stopped after.

    `redis_server` (one with a password or TLS, say) replaces the default server;
    it is started here if need be, and closed with the stack.
    """
    with (
        redis_server or EmbeddedRedis() as server,
        standin_server() as standin,
    ):
        stack = Stack(server, standin, workdir)
        try:
            yield stack
        finally:
            stack.stop()


@dataclass(frozen=True)
class Flower:
    """A running Flower's base URL, its basic-auth credentials and its log."""

    url: str
    user: str
    password: str
    log: Path

    def get(self, path: str, *, auth: bool = True, text: bool = False) -> tuple[int, Any]:
        """GET `path`: the HTTP status and the body, parsed JSON (`text`: decoded, as is).

        Sends the credentials unless `auth` is false. An error status comes with
        the body None; while Flower does not answer, `(NOT_ANSWERING, None)`.
        """
        headers = {}
        if auth:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        request = urllib.request.Request(f"{self.url}{path}", headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - loopback only
                status, body = int(answer.status), answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, None
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return NOT_ANSWERING, None
        return status, body.decode(errors="replace") if text else json.loads(body)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextmanager
def running_flower(
    stack: Stack,
    *,
    user: str,
    password: str,
    via: Literal["llmdispatch", "celery"] = "llmdispatch",
    log_path: Path | None = None,
) -> Iterator[Flower]:
    """A real Flower with basic auth on a free loopback port, answering; stopped after.

    `via="llmdispatch"` starts it as docker-compose.yml does, `llmdispatch flower`
    with the credentials in FLOWER_BASIC_AUTH; `via="celery"` starts `celery flower`
    with them in `--basic-auth`. Its output goes to `log_path` (flower.log in the
    stack's folder unless given).
    """
    port = free_port()
    log_path = log_path or stack.workdir / "flower.log"
    listen = [f"--port={port}", "--address=127.0.0.1"]
    if via == "celery":
        auth = f"--basic-auth={user}:{password}"
        args = [sys.executable, "-m", "celery", "-A", "workers.app", "flower", *listen, auth]
        env = stack.env
    else:
        args = [str(LLMDISPATCH_SCRIPT), "flower", *listen]
        env = {**stack.env, "FLOWER_BASIC_AUTH": f"{user}:{password}"}
    flower = Flower(f"http://127.0.0.1:{port}", user, password, log_path)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            args, env=env, cwd=stack.workdir, stdout=log, stderr=subprocess.STDOUT
        )
        try:

            def up() -> bool:
                if process.poll() is not None:
                    raise AssertionError(f"Flower exited: {flower.log_text()[-2000:]}")
                return flower.get("/healthcheck", auth=False, text=True)[0] == 200

            wait_for(up, FLOWER_READY_TIMEOUT_S, "Flower to answer")
            yield flower
        finally:
            stop_process(process)


def two_vendors(
    *,
    timeout_s: float = 5,
    primary_headers: dict[str, str] | None = None,
    backup_headers: dict[str, str] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """The two-vendor configuration the queue tests share, before `settings` override it.

    `primary` (OpenAI format, serving `gpt-*`) and `backup` (OpenAI-compatible, any
    model) both point at the stand-in; the model group `smart` is gpt-4o on primary,
    then llama-3-70b on backup; two retries 0.2 s apart. `{url}` is the stand-in's.
    """

    def vendor(kind: str, models: list[str], headers: dict[str, str] | None) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "type": kind,
            "base_url": "{url}/v1",
            "models": models,
            "timeout_s": timeout_s,
            "api_key": "${OPENAI_API_KEY}",
        }
        if headers:
            entry["headers"] = headers
        return entry

    return {
        "vendors": {
            "primary": vendor("openai", ["gpt-*"], primary_headers),
            "backup": vendor("openai_compatible", ["*"], backup_headers),
        },
        "model_groups": {
            "smart": [
                {"vendor": "primary", "model": "gpt-4o"},
                {"vendor": "backup", "model": "llama-3-70b"},
            ]
        },
        "default_vendor": "primary",
        "retry_policy": {"max_retries": 2, "backoff": "fixed", "initial_delay_s": 0.2},
        **settings,
    }
