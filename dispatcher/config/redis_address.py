"""Where Redis is: `REDIS_URL`, naming one server or a primary watched by Redis Sentinel.

Every component (producers, workers, the Celery broker, Flower, the metrics
exporter) reads the one `REDIS_URL`, in either of two forms:

- one server, as redis-py's `from_url` and kombu read it: `redis://`,
  `rediss://` (TLS, with `ssl_*` options in the query) or `unix://`;
- a primary found through Sentinel, which moves to a replica when the primary
  fails:

  ```
  redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB][?OPTIONS]
  ```

  the sentinels to ask (port 26379 when left out), the name they watch the
  primary under (`sentinel monitor SERVICE ...` in sentinel.conf) and the
  database (0 when left out). USER and PASSWORD are those of the primary and
  its replicas, as Celery's `sentinel://` URLs and redis-py's
  `Sentinel(..., password=...)` take them. Options: `sentinel_password` (and
  `sentinel_username`) when the sentinels require a password of their own
  (`requirepass` in sentinel.conf); with `rediss+sentinel://` every connection,
  to the sentinels and to the servers, uses TLS with the `ssl_*` options of
  `rediss://` URLs. Percent-encode any of `: / @ ? # % ,` in a password.

Why a URL, and not separate Sentinel variables: `REDIS_URL` is already the one
setting every process and the compose file pass around, so moving to Sentinel
is one value to change and cannot be half-applied (a worker on Sentinel and a
producer still on the old primary would split the queue in two). The form is
the `redis+sentinel://host,host/service/db` convention of the
`redis-sentinel-url` package and the Flask and Django Redis helpers; nobody
has to write Celery's form (`sentinel://h1;sentinel://h2` plus the
`master_name` and `sentinel_kwargs` transport options) and redis-py's
(`Sentinel([...]).master_for(...)`) by hand and keep them agreeing:
`dispatcher.state.redis_connect` derives both from this one value.

Messages never repeat the URL or a part of it: it may hold passwords.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
import redis.sentinel

from dispatcher.redaction import redact

__all__ = [
    "CERT_REQS",
    "DEFAULT_SENTINEL_PORT",
    "SENTINEL_SCHEMES",
    "URL_SCHEMES",
    "SentinelAddress",
    "is_sentinel_url",
    "parse_sentinel_url",
    "redis_url_problem",
    "redis_url_secrets",
    "shown_redis_url",
    "tls_options",
]

# Sentinel's own port when a host leaves it out (as redis-cli and kombu assume).
DEFAULT_SENTINEL_PORT = 26379
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
URL_SCHEMES = ("redis://", "rediss://", "unix://", *(f"{s}://" for s in SENTINEL_SCHEMES))
# `ssl_cert_reqs` values as redis-py spells them (kombu also takes CERT_REQUIRED, redis-py not).
CERT_REQS = {
    "required": ssl.CERT_REQUIRED,
    "optional": ssl.CERT_OPTIONAL,
    "none": ssl.CERT_NONE,
}
# Query parameters naming files, passed on as they are.
SSL_FILE_PARAMETERS = ("ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile")
SSL_PARAMETERS = ("ssl_cert_reqs", *SSL_FILE_PARAMETERS, "ssl_check_hostname")
SENTINEL_CREDENTIALS = ("sentinel_username", "sentinel_password")
# Spellings redis-py's URL parser reads as false for `ssl_check_hostname`.
FALSE_WORDS = ("0", "F", "FALSE", "N", "NO")
# Longest service name accepted: Sentinel's names are short labels.
MAX_SERVICE_NAME = 128


def is_sentinel_url(url: str) -> bool:
    """Whether `url` names a Sentinel-watched primary (`redis+sentinel://`, `rediss+sentinel://`)."""
    return url.partition("://")[0] in SENTINEL_SCHEMES


@dataclass(frozen=True)
class SentinelAddress:
    """A parsed `redis+sentinel://` URL: which sentinels to ask for which primary, and how."""

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)
    # redis-py's `ssl_*` keyword arguments for TLS connections; None for plain TCP.
    tls: Mapping[str, Any] | None = None

    def server_options(self) -> dict[str, Any]:
        """redis-py keyword arguments for connections to the primary: database, credentials, TLS."""
        options: dict[str, Any] = {"db": self.db}
        if self.username is not None:
            options["username"] = self.username
        if self.password is not None:
            options["password"] = self.password
        if self.tls is not None:
            options.update({"ssl": True, **self.tls})
        return options

    def sentinel_options(self) -> dict[str, Any]:
        """redis-py keyword arguments for connections to the sentinels: credentials, TLS."""
        options: dict[str, Any] = {}
        if self.sentinel_username is not None:
            options["username"] = self.sentinel_username
        if self.sentinel_password is not None:
            options["password"] = self.sentinel_password
        if self.tls is not None:
            options.update({"ssl": True, **self.tls})
        return options


def parse_sentinel_url(url: str) -> SentinelAddress:
    """`url` (`redis+sentinel://...`, see the module doc) as a `SentinelAddress`.

    Raises:
        ValueError: what is wrong, without repeating any part of the URL.
    """
    scheme, _, rest = url.partition("://")
    if scheme not in SENTINEL_SCHEMES:
        raise ValueError(f"a Sentinel URL starts with {' or '.join(SENTINEL_SCHEMES)}://")
    if "#" in rest:
        raise ValueError("a Sentinel URL has no #fragment (percent-encode # in a password)")
    location, _, query = rest.partition("?")
    netloc, slash, path = location.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username, password = _credentials(userinfo) if at else (None, None)
    tls = scheme == "rediss+sentinel"
    options = _options(query, tls=tls)
    service_name, db = _service_and_db(path if slash else "")
    return SentinelAddress(
        sentinels=_sentinels(hosts),
        service_name=service_name,
        db=db,
        username=username,
        password=password,
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
        tls=tls_options(options) if tls else None,
    )


def redis_url_problem(url: str) -> str | None:
    """What makes `url` unusable, or None; checked whole, as a client would use it, without
    connecting. Never repeats the URL.

    One server: a port out of range, a database that is not a number, an option
    redis-py does not know or a value it refuses (`ssl_cert_reqs=CERT_REQUIRED`).
    Sentinel: the form (`parse_sentinel_url`), then the same checks of the
    options each connection, to a sentinel or to the primary, would be built with.
    """
    if not url.startswith(URL_SCHEMES):
        return f"must start with one of {', '.join(URL_SCHEMES)}"
    if is_sentinel_url(url):
        return _sentinel_url_problem(url)
    parts = urlsplit(url)
    database = parts.path.strip("/")
    if parts.scheme != "unix" and database and not database.isdigit():
        return f"the database must be a number, not {database[:20]!r}"
    try:
        client = redis.Redis.from_url(url)
        try:
            client.connection_pool.make_connection()  # builds it; does not connect
        finally:
            client.connection_pool.disconnect()
    except (ValueError, TypeError, redis.RedisError) as exc:
        return f"not usable by redis-py: {redact(str(exc))[:200]}"
    return None


def _sentinel_url_problem(url: str) -> str | None:
    try:
        address = parse_sentinel_url(url)
    except ValueError as exc:
        return str(exc)
    try:
        sentinel = redis.sentinel.Sentinel(
            address.sentinels,
            sentinel_kwargs=address.sentinel_options(),
            **address.server_options(),
        )
        pool = sentinel.master_for(address.service_name).connection_pool
        try:  # builds both kinds of connection; neither connects
            pool.make_connection()
            sentinel.sentinels[0].connection_pool.make_connection()
        finally:
            pool.disconnect()
            sentinel.close()
    except (ValueError, TypeError, OSError, redis.RedisError) as exc:
        return f"not usable by redis-py: {redact(str(exc))[:200]}"
    return None


def tls_options(query: Mapping[str, str]) -> dict[str, Any]:
    """redis-py's `ssl_*` keyword arguments from a URL's query (`ssl_cert_reqs` as an
    `ssl.VerifyMode`, which Celery's `broker_use_ssl` and redis-py both take); the
    server's certificate is verified unless `ssl_cert_reqs` says otherwise.

    Raises:
        ValueError: `ssl_cert_reqs` is not one of required, optional, none.
    """
    cert_reqs = query.get("ssl_cert_reqs", "required")
    if cert_reqs not in CERT_REQS:
        # Not the value: a mistyped URL may have pasted anything there.
        raise ValueError(f"ssl_cert_reqs must be one of {', '.join(CERT_REQS)}, in lower case")
    options: dict[str, Any] = {"ssl_cert_reqs": CERT_REQS[cert_reqs]}
    options.update({name: query[name] for name in SSL_FILE_PARAMETERS if name in query})
    if "ssl_check_hostname" in query:
        options["ssl_check_hostname"] = query["ssl_check_hostname"].upper() not in FALSE_WORDS
    return options


def redis_url_secrets(url: str) -> list[str]:
    """The passwords `url` holds, as written and percent-decoded, to register for masking."""
    if is_sentinel_url(url):
        netloc = url.partition("://")[2].partition("/")[0].partition("?")[0]
        userinfo, at, _ = netloc.rpartition("@")
        written = [userinfo.partition(":")[2] if at else None]
        query = url.partition("?")[2].partition("#")[0]
        written += [
            value
            for name, _, value in (pair.partition("=") for pair in query.split("&"))
            if name == "sentinel_password"
        ]
    else:
        written = [urlsplit(url).password]
    # redis-py sends the percent-decoded password, so mask both spellings.
    found = [spelling for raw in written if raw for spelling in (raw, unquote(raw))]
    return list(dict.fromkeys(found))


def shown_redis_url(url: str) -> str:
    """`url` fit to print: every password masked (`***`), the rest as written."""
    base, question, query = url.partition("?")
    if question:
        query = "&".join(
            f"{name}=***" if name == "sentinel_password" else f"{name}{sep}{value}"
            for name, sep, value in (pair.partition("=") for pair in query.split("&"))
        )
    return redact(base + question + query)


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    user, colon, password = userinfo.partition(":")
    return (unquote(user) or None, unquote(password) if colon and password else None)


def _sentinels(hosts: str) -> tuple[tuple[str, int], ...]:
    if not hosts.strip(","):
        raise ValueError(
            "name at least one sentinel: redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE/DB"
        )
    found: list[tuple[str, int]] = []
    for number, item in enumerate(hosts.split(","), start=1):
        if not item:
            raise ValueError(f"sentinel {number} is empty (two commas in a row?)")
        parts = urlsplit(f"//{item}")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(
                f"sentinel {number}: the port must be a number from 1 to 65535"
            ) from None
        if not parts.hostname or parts.username is not None:
            raise ValueError(f"sentinel {number}: expected HOST or HOST:PORT")
        if port == 0:
            raise ValueError(f"sentinel {number}: the port must be a number from 1 to 65535")
        found.append((parts.hostname, port or DEFAULT_SENTINEL_PORT))
    if len(set(found)) != len(found):
        raise ValueError("a sentinel is listed twice")
    return tuple(found)


def _service_and_db(path: str) -> tuple[str, int]:
    segments = path.split("/") if path else []
    if segments and segments[-1] == "":
        segments.pop()  # a trailing slash
    if not segments or not segments[0]:
        raise ValueError(
            "name the service the sentinels watch after the hosts: "
            "redis+sentinel://HOST:PORT,.../SERVICE/DB"
        )
    if len(segments) > 2:
        raise ValueError("the path is SERVICE or SERVICE/DB, nothing more")
    service = unquote(segments[0])
    if len(service) > MAX_SERVICE_NAME or not service.isprintable() or " " in service:
        raise ValueError(
            f"the service name must be up to {MAX_SERVICE_NAME} printable characters, no spaces"
        )
    db = segments[1] if len(segments) == 2 else "0"
    if not db.isdigit() or not db.isascii():
        raise ValueError("the database must be a number")
    return service, int(db)


def _options(query: str, *, tls: bool) -> dict[str, str]:
    pairs = parse_qsl(query, keep_blank_values=True)
    accepted = SENTINEL_CREDENTIALS + (SSL_PARAMETERS if tls else ())
    options: dict[str, str] = {}
    for name, value in pairs:
        if name not in accepted:
            hint = "; ssl_* options need rediss+sentinel://" if name in SSL_PARAMETERS else ""
            # Not the name: a mistyped URL may have pasted a password there.
            raise ValueError(f"an option is not one of {', '.join(accepted)}{hint}")
        if name in options:
            raise ValueError(f"option {name} is given twice")
        options[name] = value
    return options
