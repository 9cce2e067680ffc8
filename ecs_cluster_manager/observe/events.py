"""ECS container instance state-change events: the SQS consumer that reads them and hands them to the loop.

An EventBridge rule sends this cluster's "ECS Container Instance State Change"
events to an SQS queue (EVENTS_QUEUE_URL). ECS emits one for every change of a
container instance: registration, status (ACTIVE, DRAINING, INACTIVE), every
agent disconnect and reconnect (routine, several times an hour per host), and
every task placement or stop (its remainingResources). Delivery is at least
once and unordered.

`EventSource` long-polls the queue in a thread of its own. It only parses,
drops other clusters' events, other kinds and copies it has already handed
over (by `detail.version`, in a bounded memory), stamps each change with the
moment it arrived, and hands it to the loop. It deletes every message it has
handled (ignored and malformed ones too) and never writes to ECS or to the
host store: the loop's thread takes the changes into the store (hosts.py),
which says which of them can change a decision now, and runs one pass for those
that arrive together. The regular passes stay the safety net: a full listing at
least every RESYNC seconds, so a lost event lasts at most that long.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from ecs_cluster_manager.aws.ecs import SQS_MAX_WAIT_SECONDS, AccessDenied, Api, EcsError, RequestRejected, ShuttingDown
from ecs_cluster_manager.model.models import QueueMessage
from ecs_cluster_manager.model.names import name_of
from ecs_cluster_manager.observe.hosts import AGENT_BACK, AGENT_LOST, DUPLICATE, NO_CHANGE, STALE
from ecs_cluster_manager.observe.readiness import TaskChange

log = structlog.get_logger(__name__)

SOURCE = "aws.ecs"
DETAIL_TYPE = "ECS Container Instance State Change"
TASK_DETAIL_TYPE = "ECS Task State Change"
ACTIVE = "ACTIVE"

# Why an event started no pass: the `reason` label of the ignored-events metric.
OTHER_CLUSTER = "other_cluster"
OTHER_TYPE = "other_type"
NOT_A_SERVICE_TASK = "not_a_service_task"  # a task event of a task that belongs to no service (RunTask, batch)
TASK_NO_CHANGE = "task_no_change"  # a task event that makes no host ready (READY_ATTRIBUTE off, or nothing new)
IGNORED_REASONS = (
    OTHER_CLUSTER, OTHER_TYPE, DUPLICATE, STALE, NO_CHANGE, AGENT_LOST, AGENT_BACK, NOT_A_SERVICE_TASK, TASK_NO_CHANGE
)
# How many instances the source remembers the newest version of, to drop copies: twice ECS's most per cluster.
SEEN_LIMIT = 10_000

WAIT_SECONDS = SQS_MAX_WAIT_SECONDS
MAX_MESSAGES = 10  # SQS's most per ReceiveMessage
# Events that arrive together start one pass: after the first, wait until none has come for
# COALESCE_QUIET seconds, but never longer than COALESCE_LIMIT (the latency the coalescing may cost).
COALESCE_QUIET = 0.1
COALESCE_LIMIT = 1.0
BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)


class MalformedEvent(ValueError):
    """A message body that is not an ECS container instance state-change event we can read."""


@dataclass(frozen=True)
class InstanceChange:
    """One container instance as an event described it."""

    container_instance_arn: str
    ec2_instance_id: str | None
    cluster_arn: str
    status: str
    agent_connected: bool
    version: int
    time: float | None = None  # the event's `time`, as a Unix timestamp
    arrived: float = 0.0  # when the source received it (time.monotonic(), the store's clock)


@dataclass(frozen=True)
class Ignored:
    """An event that is well formed but is not this cluster's container instance change."""

    reason: str


Change = InstanceChange | TaskChange  # what the source hands to the loop


def parse(body: str) -> InstanceChange | TaskChange | Ignored:
    """Read one message body (an EventBridge event document); MalformedEvent says what is wrong."""
    try:
        document = json.loads(body)
    except ValueError as error:
        raise MalformedEvent(f"not JSON: {error}") from None
    return parse_document(document)


def parse_document(document: Any) -> InstanceChange | TaskChange | Ignored:
    """Read one EventBridge event document (already decoded); MalformedEvent says what is wrong."""
    if not isinstance(document, dict):
        raise MalformedEvent("not a JSON object")
    if document.get("source") == SOURCE and document.get("detail-type") == TASK_DETAIL_TYPE:
        return parse_task(document)
    if document.get("source") != SOURCE or document.get("detail-type") != DETAIL_TYPE:
        return Ignored(OTHER_TYPE)
    detail = _detail(document, ("containerInstanceArn", "clusterArn", "status"), ("agentConnected", "version"))
    arn, cluster_arn, status, connected = (
        detail["containerInstanceArn"], detail["clusterArn"], detail["status"], detail["agentConnected"]
    )
    if not isinstance(connected, bool):
        raise MalformedEvent("agentConnected must be true or false")
    version = _version(detail["version"])
    ec2_instance_id = detail.get("ec2InstanceId")
    return InstanceChange(
        arn,
        ec2_instance_id if isinstance(ec2_instance_id, str) else None,
        cluster_arn,
        status,
        connected,
        version,
        _timestamp(document.get("time")),
    )


def parse_task(document: dict[str, Any]) -> TaskChange | Ignored:
    """Read an "ECS Task State Change" event: a service's task on a host; Ignored for a task of no service."""
    detail = _detail(document, ("taskArn", "clusterArn", "lastStatus"), ("version",))
    arn, cluster_arn, last_status = detail["taskArn"], detail["clusterArn"], detail["lastStatus"]
    version = _version(detail["version"])
    group = detail.get("group")
    host = detail.get("containerInstanceArn")
    desired = detail.get("desiredStatus")
    change = TaskChange(
        task_arn=arn,
        cluster_arn=cluster_arn,
        group=group if isinstance(group, str) else "",
        container_instance_arn=host if isinstance(host, str) and host else None,
        last_status=last_status,
        desired_status=desired if isinstance(desired, str) else last_status,
        version=version,
        time=_timestamp(document.get("time")),
    )
    return change if change.service is not None else Ignored(NOT_A_SERVICE_TASK)


def _detail(document: dict[str, Any], strings: tuple[str, ...], others: tuple[str, ...]) -> dict[str, Any]:
    """The event's detail, with every one of these fields (`strings` must be strings); else MalformedEvent."""
    detail = document.get("detail")
    if not isinstance(detail, dict):
        raise MalformedEvent("no detail object")
    for key in (*strings, *others):
        if key not in detail:
            raise MalformedEvent(f"detail has no {key}")
    if not all(isinstance(detail[key], str) for key in strings):
        raise MalformedEvent(f"{', '.join(strings[:-1])} and {strings[-1]} must be strings")
    return detail


def _version(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedEvent("version must be a whole number")
    return value


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def same_cluster(cluster_arn: str, cluster: str) -> bool:
    """Whether an event's clusterArn is this cluster (CLUSTER may be a name or an ARN): by name."""
    return name_of(cluster_arn) == name_of(cluster)


class Seen:
    """The newest version handed over per container instance, bounded: drops copies and older versions."""

    def __init__(self, limit: int = SEEN_LIMIT) -> None:
        self.limit = limit
        self._versions: OrderedDict[str, int] = OrderedDict()

    def check(self, change: Change) -> str | None:
        """None for a change newer than any handed over (and remember it), else DUPLICATE or STALE.

        A container instance's versions and a task's are kept apart, by their ARNs.
        """
        key = change.task_arn if isinstance(change, TaskChange) else change.container_instance_arn
        known = self._versions.get(key)
        if known is not None and change.version <= known:
            return DUPLICATE if change.version == known else STALE
        self._versions[key] = change.version
        self._versions.move_to_end(key)
        while len(self._versions) > self.limit:
            self._versions.popitem(last=False)
        return None

    def __len__(self) -> int:
        return len(self._versions)


@dataclass
class EventStats:
    """What the events source has done, for the metrics and /healthz; read under the source's lock."""

    received: int = 0
    relevant: int = 0
    malformed: int = 0
    ignored: dict[str, int] = field(default_factory=dict)
    healthy: bool = True
    last_error: str | None = None


def unreadable(api: Api, queue_url: str) -> str | None:
    """Why the queue cannot be read (it does not exist, or may not be read), or None.

    One ReceiveMessage that waits for nothing and leaves any message it sees on
    the queue (visibility timeout 0), so the daemon can check the queue before
    its first pass, which may write. Transient faults are not an answer: the
    events thread retries them.
    """
    try:
        api.receive_messages(queue_url, 0, 1, visibility_timeout=0)
    except (RequestRejected, AccessDenied) as error:
        return f"EVENTS_QUEUE_URL: cannot read queue {queue_url}: {error}"
    except (EcsError, ShuttingDown):
        return None
    return None


class EventSource:
    """Long-polls the queue in a thread, deletes what it handled, and wakes the loop for new changes.

    `wake` is set whenever changes are waiting; `take()` returns them. The loop
    reports back which of them were relevant (`counted`), for the metrics.
    """

    def __init__(
        self,
        api: Api,
        queue_url: str,
        cluster: str,
        *,
        stop: threading.Event,
        wake: threading.Event,
        wait_seconds: int = WAIT_SECONDS,
        backoff: Sequence[float] = BACKOFF_SECONDS,
    ) -> None:
        self.api = api
        self.queue_url = queue_url
        self.cluster = cluster
        self.seen = Seen()  # written by the events thread only
        self.stop = stop
        self.wake = wake
        self.wait_seconds = wait_seconds
        self.backoff = tuple(backoff)
        self.stats = EventStats()
        self.on_update: Callable[[EventStats], None] | None = None  # after each batch and each change of health
        self._changes: list[Change] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def first_poll(self) -> str | None:
        """Read the queue once, at once, before the thread starts: why it is unusable, or None.

        A queue that does not exist or may not be read is a configuration error
        (a typo in EVENTS_QUEUE_URL, a missing permission), reported at start-up
        rather than as a warning every 30 s. Transient faults are not: the thread
        retries them. Messages read here are handled as usual.
        """
        try:
            messages = self.api.receive_messages(self.queue_url, 0, MAX_MESSAGES)
        except (RequestRejected, AccessDenied) as error:
            return f"EVENTS_QUEUE_URL: cannot read queue {self.queue_url}: {error}"
        except (EcsError, ShuttingDown):
            return None
        if messages:
            self.handle(messages)
        return None

    def join(self, timeout: float) -> None:
        """Wait up to `timeout` for the thread; a long poll in flight is left to end on its own."""
        self._thread.join(timeout)

    def take(self) -> list[Change]:
        """The changes received since the last call, oldest first."""
        with self._lock:
            changes, self._changes = self._changes, []
            self.wake.clear()
            return changes

    def counted(self, relevant: int, ignored: Sequence[str]) -> None:
        """The loop's verdict on changes it took: how many could change a decision, why the others could not."""
        with self._lock:
            self.stats.relevant += relevant
            for reason in ignored:
                self.stats.ignored[reason] = self.stats.ignored.get(reason, 0) + 1
        self._updated()

    def snapshot(self) -> EventStats:
        with self._lock:
            return dataclasses.replace(self.stats, ignored=dict(self.stats.ignored))

    def _run(self) -> None:
        failures = 0
        while not self.stop.is_set():
            try:
                messages = self.api.receive_messages(self.queue_url, self.wait_seconds, MAX_MESSAGES)
            except ShuttingDown:
                return
            except EcsError as error:
                delay = self.backoff[min(failures, len(self.backoff) - 1)]
                failures += 1
                with self._lock:
                    self.stats.healthy = False
                    self.stats.last_error = str(error)
                self._updated()
                log.warning("events_unavailable", queue_url=self.queue_url, error=str(error), retry_in=delay)
                self.stop.wait(delay)
                continue
            with self._lock:
                self.stats.healthy = True
                self.stats.last_error = None
            if failures:
                log.info("events_available", queue_url=self.queue_url)
                self._updated()
            failures = 0
            if messages:
                self.handle(messages)

    def _updated(self) -> None:
        if self.on_update is not None:
            self.on_update(self.snapshot())

    def handle(self, messages: Sequence[QueueMessage]) -> None:
        """Parse a batch, hand on this cluster's new changes, then delete every message of it."""
        arrived = time.monotonic()
        changes: list[Change] = []
        ignored: dict[str, int] = {}
        malformed = 0
        for message in messages:
            try:
                parsed = parse(message.body)
            except MalformedEvent as error:
                malformed += 1
                log.warning("event_malformed", message_id=message.message_id, error=str(error))
                continue
            if isinstance(parsed, Ignored):
                reason: str | None = parsed.reason
            elif not same_cluster(parsed.cluster_arn, self.cluster):
                reason = OTHER_CLUSTER
            else:
                reason = self.seen.check(parsed)
            if reason is None and isinstance(parsed, InstanceChange | TaskChange):
                changes.append(dataclasses.replace(parsed, arrived=arrived))
            elif reason is not None:
                ignored[reason] = ignored.get(reason, 0) + 1
                log.debug("event_ignored", message_id=message.message_id, reason=reason)
        with self._lock:
            self.stats.received += len(messages)
            self.stats.malformed += malformed
            for reason, count in ignored.items():
                self.stats.ignored[reason] = self.stats.ignored.get(reason, 0) + count
            if changes:
                self._changes.extend(changes)
                self.wake.set()
        self._updated()
        self._delete(messages)

    def _delete(self, messages: Sequence[QueueMessage]) -> None:
        try:
            failed = self.api.delete_messages(self.queue_url, messages)
        except ShuttingDown:
            return
        except EcsError as error:  # they come back after the visibility timeout; copies are dropped then
            log.warning("events_not_deleted", queue_url=self.queue_url, count=len(messages), error=str(error))
            return
        for message_id, reason in failed.items():
            log.warning("event_not_deleted", message_id=message_id, error=reason)


def oldest_time(changes: Iterable[Change]) -> float | None:
    """The `time` of the oldest change with one: where the latency to an update is measured from."""
    times = [change.time for change in changes if change.time is not None]
    return min(times) if times else None


