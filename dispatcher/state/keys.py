"""Every Redis key name, under one prefix: the only place they are spelled.

Every key starts with the configured prefix (`llmd` by default):

| key                               | type   | holds                                        |
| --------------------------------- | ------ | -------------------------------------------- |
| `{p}:job:{id}`                    | hash   | request, route, status, attempt, timings ... |
| `{p}:job:{id}:events`             | list   | the job's history, one JSON event per entry  |
| `{p}:job:{id}:done`               | list   | one entry once the job ended; waiters block  |
| `{p}:stats`                       | hash   | counters (see `dispatcher.state.stats`)            |
| `{p}:hist:latency:{vendor}`       | hash   | vendor latency histogram (`_all`: every one) |
| `{p}:hist:queue_wait`             | hash   | queue wait histogram                         |
| `{p}:vendor:{vendor}:blocks`      | hash   | model -> until when that deployment waits (429) |
| `{p}:limit:{vendor}:{scope}:{kind}` | hash | a shared token bucket (`tokens`, `ts`)     |
| `{p}:circuit:{vendor}`            | hash   | the vendor's breaker (absent: closed)        |
| `{p}:vendor:{vendor}:health`      | string | the last health check (JSON `Health`)        |
| `{p}:vendor:{vendor}:running`     | zset   | jobs running on it -> when they started      |
| `{p}:vendor:{vendor}:minute:{m}`  | hash   | requests and tokens ended in minute `m`      |
| `{p}:vendor:{vendor}:health_turn` | string | held by the worker probing it this interval  |
| `{p}:batch:{id}`                  | hash   | a batch's counts by state, times, tokens, cost |
| `{p}:batch:{id}:jobs`             | list   | the batch's job ids, in input order          |
| `{p}:batch:{id}:custom_ids`       | list   | the items' custom ids, in the same order     |
| `{p}:batch:{id}:done`             | list   | one entry once every item ended; waiters block |
| `{p}:batch:{id}:messages`         | hash   | `<vendor>:<n>`: job ids of its n-th message  |
| `{p}:batch:{id}:api`              | hash   | the HTTP front's: tenant, input file, window |
| `{p}:file:{id}`                   | hash   | a file of the HTTP front: name, purpose, tenant |
| `{p}:file:{id}:content`           | string | that file's bytes                            |
| `{p}:tenant:{t}:files`            | zset   | a tenant's files -> when they were created   |
| `{p}:tenant:{t}:batches`          | zset   | a tenant's front batches -> when created     |
| `{p}:waiting`                     | zset   | queued jobs -> when their message is due     |
| `{p}:sweep:turn`                  | string | held by the worker sweeping this interval    |
| `{p}:sweep:suspects`              | hash   | jobs whose message the last sweep missed     |
| `{p}:ready:{queue}`               | zset   | a lane's submitted jobs -> priority and order |
| `{p}:ready:seq`                   | string | the last order number given to a ready job   |
| `{p}:bell:{queue}:{priority}`     | string | set while a bell of that priority is pending |
| `{p}:taken`                       | hash   | a bell's task id -> the job ids it took      |

A circuit holds `state` (open, half_open), `failures` (in a row), `opened_at`
and `probe_until` (while its one half-open probe is under way).
A bucket's kind is `rpm` or `tpm`; its scope `all` (the vendor), `model:{digest}`
(a model pattern's limit) or `tenant:{digest}` (one tenant's), digests of the text.
A front's tenant `{t}` is likewise a digest, `-` for no tenant (a front without keys).

Ids that become part of a key are checked first (`valid_job_id`), and free text
(a tenant, a model pattern) enters a key only as a digest, so no input can
address another key.
"""

from __future__ import annotations

import hashlib
import re

from dispatcher.errors import JobNotFound
from dispatcher.state.stats import ALL_VENDORS, QUEUE_WAIT

__all__ = ["Keys", "valid_file_id", "valid_job_id"]

_JOB_ID = re.compile(r"[0-9a-f]{32}")
# A file of the HTTP front: uploaded (`file-<32 hex>`), or a batch's output or error file.
_FILE_ID = re.compile(r"file-[0-9a-f]{32}(-output|-errors)?")
_DIGEST = re.compile(r"[0-9a-f]{64}")
# A worker's id: its Celery node name and process id, e.g. "openai@host-1:4242".
_WORKER_ID = re.compile(r"[A-Za-z0-9._@%+:-]{1,200}")


def valid_job_id(job_id: str) -> bool:
    """True for ids of the form we issue (32 hex digits), so no id can address another key."""
    return isinstance(job_id, str) and bool(_JOB_ID.fullmatch(job_id))


def valid_file_id(file_id: str) -> bool:
    """True for file ids the HTTP front issues, so no id can address another key."""
    return isinstance(file_id, str) and bool(_FILE_ID.fullmatch(file_id))


class Keys:
    """Every key name, under one prefix; the only place they are spelled."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def job(self, job_id: str) -> str:
        """The job's hash."""
        return f"{self.prefix}:job:{_checked(job_id)}"

    def events(self, job_id: str) -> str:
        """The job's history list."""
        return f"{self.prefix}:job:{_checked(job_id)}:events"

    def done(self, job_id: str) -> str:
        """The list that holds one entry once the job has ended."""
        return f"{self.prefix}:job:{_checked(job_id)}:done"

    def stream(self, job_id: str) -> str:
        """The job's stream buffer (a Redis Stream), for replay."""
        return f"{self.prefix}:job:{_checked(job_id)}:stream"

    def channel(self, job_id: str) -> str:
        """The pub/sub channel the job's stream events are published on."""
        return f"{self.prefix}:job:{_checked(job_id)}:chunks"

    def stats(self) -> str:
        """The counters hash."""
        return f"{self.prefix}:stats"

    def histogram(self, metric: str, vendor: str | None = None) -> str:
        """A latency (per vendor, or `_all`) or queue-wait histogram."""
        if metric == QUEUE_WAIT:
            return f"{self.prefix}:hist:{QUEUE_WAIT}"
        return f"{self.prefix}:hist:{metric}:{vendor or ALL_VENDORS}"

    def blocks(self, vendor: str) -> str:
        """The vendor's deployments that asked everyone to wait: model -> until when."""
        return f"{self.prefix}:vendor:{vendor}:blocks"

    def health(self, vendor: str) -> str:
        """The vendor's last health check."""
        return f"{self.prefix}:vendor:{vendor}:health"

    def health_turn(self, vendor: str) -> str:
        """Taken by the one worker that probes the vendor in an interval."""
        return f"{self.prefix}:vendor:{vendor}:health_turn"

    def running(self, vendor: str) -> str:
        """The jobs running on a vendor now, scored by when they started."""
        return f"{self.prefix}:vendor:{vendor}:running"

    def minute(self, vendor: str, minute: int) -> str:
        """A vendor's requests and tokens in one minute (epoch seconds // 60)."""
        return f"{self.prefix}:vendor:{vendor}:minute:{minute}"

    def circuit(self, vendor: str) -> str:
        """The vendor's shared circuit breaker."""
        return f"{self.prefix}:circuit:{vendor}"

    def limit(self, vendor: str, kind: str) -> str:
        """The vendor-wide token bucket of `kind` (rpm or tpm)."""
        return f"{self.prefix}:limit:{vendor}:all:{kind}"

    def model_limit(self, vendor: str, pattern: str, kind: str) -> str:
        """The bucket of the vendor's models matching `pattern` (a digest: any text is safe)."""
        return f"{self.prefix}:limit:{vendor}:model:{_digest(pattern)}:{kind}"

    def tenant_limit(self, vendor: str, tenant: str, kind: str) -> str:
        """One tenant's bucket on a vendor (a digest of the tenant: any text is safe)."""
        return f"{self.prefix}:limit:{vendor}:tenant:{_digest(tenant)}:{kind}"

    def batch(self, batch_id: str) -> str:
        """The batch's hash: counts by state, times, tokens and cost."""
        return f"{self.prefix}:batch:{_checked(batch_id, 'batch')}"

    def batch_jobs(self, batch_id: str) -> str:
        """The batch's job ids, in input order."""
        return f"{self.prefix}:batch:{_checked(batch_id, 'batch')}:jobs"

    def batch_custom_ids(self, batch_id: str) -> str:
        """The custom ids of the batch's items, in input order."""
        return f"{self.prefix}:batch:{_checked(batch_id, 'batch')}:custom_ids"

    def batch_keys(self, batch_id: str) -> list[str]:
        """The batch's hash, job list, custom id list, done list and messages, in that order."""
        return [
            self.batch(batch_id),
            self.batch_jobs(batch_id),
            self.batch_custom_ids(batch_id),
            self.batch_done(batch_id),
            self.batch_messages(batch_id),
        ]

    def batch_messages(self, batch_id: str) -> str:
        """The job ids of each of the batch's messages, by `<vendor>:<n>`."""
        return f"{self.prefix}:batch:{_checked(batch_id, 'batch')}:messages"

    def batch_done(self, batch_id: str) -> str:
        """The list that holds one entry once every item of the batch has ended."""
        return f"{self.prefix}:batch:{_checked(batch_id, 'batch')}:done"

    def batch_api(self, batch_id: str) -> str:
        """What the HTTP front keeps of a batch it made: tenant, input file, endpoint, window."""
        return f"{self.prefix}:batch:{_checked(batch_id, 'batch')}:api"

    def file(self, file_id: str) -> str:
        """A file of the HTTP front: its name, purpose, size, times and tenant."""
        return f"{self.prefix}:file:{_checked_file(file_id)}"

    def file_content(self, file_id: str) -> str:
        """The bytes of a file of the HTTP front."""
        return f"{self.prefix}:file:{_checked_file(file_id)}:content"

    def tenant_files(self, tenant: str | None) -> str:
        """A tenant's files (None: a front without keys), scored by when they were created."""
        return f"{self.prefix}:tenant:{_tenant(tenant)}:files"

    def tenant_batches(self, tenant: str | None) -> str:
        """The batches a tenant made through the HTTP front, scored by when they were made."""
        return f"{self.prefix}:tenant:{_tenant(tenant)}:batches"

    def waiting(self) -> str:
        """Queued jobs whose message is out, scored by when it is due (the sweeper's)."""
        return f"{self.prefix}:waiting"

    def sweep_turn(self) -> str:
        """Taken by the one worker that sweeps in an interval."""
        return f"{self.prefix}:sweep:turn"

    def sweep_suspects(self) -> str:
        """Job id -> attempt, for the jobs whose message the last sweep found nowhere."""
        return f"{self.prefix}:sweep:suspects"

    def ready(self, queue: str) -> str:
        """A lane's submitted jobs, scored by priority, then by order of arrival."""
        return f"{self.prefix}:ready:{queue}"

    def ready_seq(self) -> str:
        """The last order number given to a ready job."""
        return f"{self.prefix}:ready:seq"

    def bell(self, queue: str, celery_priority: int) -> str:
        """Set while a bell of that (Celery) priority is pending for the lane."""
        return f"{self.prefix}:bell:{queue}:{celery_priority}"

    def taken(self) -> str:
        """A bell's task id -> the job ids it took, until they have ended."""
        return f"{self.prefix}:taken"

    def idempotency(self, digest: str) -> str:
        """The id an idempotency key (its SHA-256, hex) names (`dispatcher.state.idempotency`)."""
        if not _DIGEST.fullmatch(digest):
            raise ValueError("not a SHA-256 hex digest")
        return f"{self.prefix}:idem:{digest}"

    def workers(self) -> str:
        """Each living worker -> until when its last heartbeat vouches for it (epoch s)."""
        return f"{self.prefix}:workers"

    def worker_held(self, worker: str) -> str:
        """The delivery tags of the messages a worker holds unacknowledged (its heartbeat's)."""
        if not _WORKER_ID.fullmatch(worker):
            raise ValueError(f"not a worker id: {worker[:80]!r}")
        return f"{self.prefix}:worker:{worker}:held"


def _checked(job_id: str, what: str = "job") -> str:
    """`job_id` when it is one of ours; no other string may become part of a key."""
    if not valid_job_id(job_id):
        raise JobNotFound(f"{job_id!r} is not a {what} id (32 hex digits)", job_id=None)
    return job_id


def _checked_file(file_id: str) -> str:
    """`file_id` when it is one the HTTP front issues; no other string may become a key."""
    if not valid_file_id(file_id):
        raise ValueError(f"not a file id: {file_id[:80]!r}")
    return file_id


def _tenant(tenant: str | None) -> str:
    """A tenant as a key part: a digest (any text is safe), `-` for none."""
    return "-" if tenant is None else _digest(tenant)


def _digest(text: str) -> str:
    """A short, key-safe stand-in for free text (a tenant id, a model glob)."""
    return hashlib.sha256(text.encode()).hexdigest()[:20]
