"""A Redis Sentinel deployment on loopback for one test: a primary, replicas, three sentinels.

Every server is a child process of the test (`redis-server`, and `redis-server
<file> --sentinel` for a sentinel), on a port the OS just handed out, with its
files in a folder of the test's; `stop()` ends each by its own process, never
by name. Nothing here touches a Redis the test did not start.

The sentinels watch the primary under `SERVICE` with a quorum of 2 and short
timeouts (`DOWN_AFTER_MS`, `FAILOVER_TIMEOUT_MS`), so a killed primary is
replaced within seconds. `start()` returns once every replica has synced and
every sentinel sees the primary, every replica and every other sentinel: a
failover can then be voted on at once.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlencode

import redis

from producer.cli.tools.embedded_redis import TlsFiles, find_redis_server, free_port

__all__ = ["SERVICE", "SentinelGroup", "Server"]

# The name the sentinels know the primary by (`sentinel monitor <name> ...`).
SERVICE = "llmd-primary"
QUORUM = 2
# A primary silent for a second is down in one sentinel's view; the quorum makes it so.
DOWN_AFTER_MS = 1_000
# Redis's minimum sensible value: a failed election is tried again after twice this.
FAILOVER_TIMEOUT_MS = 3_000
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
POLL_S = 0.05
# Another process may take the free port between our probe and the server's bind.
PORT_ATTEMPTS = 3


@dataclass
class Server:
    """One redis-server (or sentinel) process of the group."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    is_sentinel: bool = False

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def running(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a host that loses power: no shutdown, no goodbye to replicas."""
        self.process.kill()
        self.process.wait(timeout=STOP_TIMEOUT_S)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not ended in time."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_S)

    def tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return " | ".join(lines[-5:]) or "(no log)"


class SentinelGroup:
    """A primary, `replicas` replicas and `sentinels` sentinels; a context manager."""

    def __init__(
        self,
        workdir: Path,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        password: str | None = None,
        sentinel_password: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        """`password`: the primary's and replicas' (`requirepass`); `sentinel_password`: the
        sentinels' own; `tls`: every server and sentinel speaks only TLS, with these files."""
        self.workdir = workdir
        self.replica_count = replicas
        self.sentinel_count = sentinels
        self.password = password
        self.sentinel_password = sentinel_password
        self.tls = tls
        self.binary = find_redis_server()
        self.primary: Server | None = None
        self.replicas: list[Server] = []
        self.sentinels: list[Server] = []

    @property
    def url(self) -> str:
        """`REDIS_URL` for this group: every sentinel, the service, database 0."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        options: dict[str, str] = {}
        if self.sentinel_password:
            options["sentinel_password"] = self.sentinel_password
        if self.tls:
            options.update(ssl_cert_reqs="required", ssl_ca_certs=str(self.tls.ca))
        query = f"?{urlencode(options)}" if options else ""
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        return f"{scheme}://{auth}{hosts}/{SERVICE}/0{query}"

    def start(self) -> Self:
        """Start every server; return once the group could survive losing its primary."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.primary = self._start_server("primary", [])
        for n in range(self.replica_count):
            replica = self._start_server(
                f"replica{n + 1}", ["--replicaof", "127.0.0.1", str(self.primary.port)]
            )
            self.replicas.append(replica)
        self._wait(lambda: all(self._synced(r) for r in self.replicas), "replicas to sync")
        for n in range(self.sentinel_count):
            self.sentinels.append(self._start_sentinel(f"sentinel{n + 1}", self.primary.port))
        self._wait(self._sentinels_see_everyone, "sentinels to see the group")
        return self

    def client_of(self, server: Server, **options: Any) -> redis.Redis:
        """A client of one server of the group, by its address (not through the sentinels)."""
        password = self.sentinel_password if server.is_sentinel else self.password
        tls = (
            {"ssl": True, "ssl_cert_reqs": "required", "ssl_ca_certs": str(self.tls.ca)}
            if self.tls
            else {}
        )
        return redis.Redis(
            *server.address,
            password=password,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            decode_responses=True,
            **tls,
            **options,
        )

    def role(self, server: Server) -> str | None:
        """`master` or `slave` as the server says, or None if it does not answer."""
        client = self.client_of(server)
        try:
            return str(client.info("replication")["role"])
        except redis.RedisError:
            return None
        finally:
            client.close()

    def primary_as_sentinels_say(self) -> tuple[str, int] | None:
        """The primary's address if a majority of the sentinels name the same one."""
        named: list[tuple[str, int]] = []
        for sentinel in self.sentinels:
            client = self.client_of(sentinel)
            try:
                found = client.sentinel_get_master_addr_by_name(SERVICE)
            except redis.RedisError:
                continue
            finally:
                client.close()
            if found:
                named.append((str(found[0]), int(found[1])))
        for address in named:
            if named.count(address) > len(self.sentinels) // 2:
                return address
        return None

    def wait_for_promotion(self, old: Server, timeout_s: float) -> Server:
        """The replica promoted in `old`'s place, once it says it is the primary and a
        majority of the sentinels name it."""

        def promoted() -> Server | None:
            address = self.primary_as_sentinels_say()
            for replica in self.replicas:
                if replica.address == address != old.address and self.role(replica) == "master":
                    return replica
            return None

        found: Server = self._wait(promoted, "a replica to be promoted", timeout_s)
        return found

    def stop(self) -> None:
        """Stop every server this group started, sentinels first."""
        for server in [*self.sentinels, *self.replicas, *([self.primary] if self.primary else [])]:
            server.stop()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- starting -------------------------------------------------------------------

    def _start_server(self, name: str, extra: list[str]) -> Server:
        folder = self.workdir / name
        folder.mkdir(exist_ok=True)
        auth = ["--requirepass", self.password, "--masterauth", self.password]
        args = [
            "--bind", "127.0.0.1",
            "--dir", str(folder),
            "--logfile", str(folder / "redis.log"),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            *(auth if self.password else []),
            *extra,
        ]  # fmt: skip
        if self.tls is None:
            return self._launch(name, [str(self.binary), "--port", "{port}", *args], folder)
        # TLS only, replication included; clients need not present a certificate.
        tls = [
            "--port", "0",
            "--tls-port", "{port}",
            *self._tls_files(),
            "--tls-auth-clients", "no",
            "--tls-replication", "yes",
        ]  # fmt: skip
        return self._launch(name, [str(self.binary), *tls, *args], folder)

    def _tls_files(self) -> list[str]:
        if self.tls is None:
            return []
        return [
            "--tls-cert-file", str(self.tls.cert),
            "--tls-key-file", str(self.tls.key),
            "--tls-ca-cert-file", str(self.tls.ca),
        ]  # fmt: skip

    def _start_sentinel(self, name: str, primary_port: int) -> Server:
        folder = self.workdir / name
        folder.mkdir(exist_ok=True)
        lines = [
            "bind 127.0.0.1",
            "daemonize no",
            f"dir {folder}",
            f"logfile {folder / 'sentinel.log'}",
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} {QUORUM}",
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {SERVICE} 1",
        ]
        if self.password:
            lines.append(f"sentinel auth-pass {SERVICE} {self.password}")
        if self.sentinel_password:
            # The sentinels' own password, which they also use to talk to each other.
            lines += [
                f"requirepass {self.sentinel_password}",
                f"sentinel sentinel-pass {self.sentinel_password}",
            ]
        config = folder / "sentinel.conf"  # a sentinel rewrites its file as it learns
        config.write_text("\n".join(lines) + "\n")
        argv = [str(self.binary), str(config), "--sentinel", "--port", "{port}"]
        if self.tls is not None:  # TLS only, to clients, servers and the other sentinels
            files = self._tls_files()
            argv[-2:] = ["--port", "0", "--tls-port", "{port}", *files]
            argv += ["--tls-auth-clients", "no", "--tls-replication", "yes"]
        return self._launch(name, argv, folder, sentinel=True)

    def _launch(
        self, name: str, argv: list[str], folder: Path, *, sentinel: bool = False
    ) -> Server:
        last = ""
        for _ in range(PORT_ATTEMPTS):
            port = free_port()
            process = subprocess.Popen(
                [arg.replace("{port}", str(port)) for arg in argv],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            log = folder / ("sentinel.log" if sentinel else "redis.log")
            server = Server(name, port, process, log, is_sentinel=sentinel)
            try:
                self._wait(lambda s=server: self._answers_as_itself(s), f"{name} to answer")
            except AssertionError as exc:
                last = str(exc)
                server.stop()
                continue
            return server
        raise AssertionError(f"could not start {name}: {last}")

    # --- conditions -------------------------------------------------------------------

    def _answers_as_itself(self, server: Server) -> bool:
        if not server.running():
            raise AssertionError(f"{server.name} exited: {server.tail()}")
        client = self.client_of(server)
        try:
            pid = int(client.info("server")["process_id"])
        except redis.RedisError:
            return False
        finally:
            client.close()
        if pid != server.process.pid:  # another process holds the port: try another
            raise AssertionError(f"port {server.port} is served by process {pid}")
        return True

    def _synced(self, replica: Server) -> bool:
        client = self.client_of(replica)
        try:
            return client.info("replication").get("master_link_status") == "up"
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _sentinels_see_everyone(self) -> bool:
        for sentinel in self.sentinels:
            client = self.client_of(sentinel)
            try:
                state = client.sentinel_master(SERVICE)
            except redis.RedisError:
                return False
            finally:
                client.close()
            if (
                int(state["num-slaves"]) < self.replica_count
                or int(state["num-other-sentinels"]) < self.sentinel_count - 1
            ):
                return False
        return True

    def _wait(
        self, condition: Callable[[], Any], what: str, timeout_s: float = START_TIMEOUT_S
    ) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(POLL_S)
        logs = "; ".join(f"{s.name}: {s.tail()}" for s in self._all())
        raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}: {logs}")

    def _all(self) -> list[Server]:
        return [*([self.primary] if self.primary else []), *self.replicas, *self.sentinels]
