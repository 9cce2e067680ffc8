"""ECS container instance state-change events: which ones matter, and the SQS consumer that reads them.

An EventBridge rule sends this cluster's "ECS Container Instance State Change"
events to an SQS queue (EVENTS_QUEUE_URL). ECS emits one for every change of a
container instance: registration, status (ACTIVE, DRAINING, INACTIVE), every
agent disconnect and reconnect (routine, several times an hour per host), and
every task placement or stop (its remainingResources). Delivery is at least
once and unordered. So, per container instance, `Relevance` keeps the newest
`detail.version` seen with its status and agentConnected, and a pass is started
only by an event that can change a decision now:

- an instance it does not know, or a change of status: yes;
- a duplicate or an older version, another cluster, a change of neither status
  nor agent (a task placed or stopped): no;
- an agent lost: no, since a lost agent lowers nothing before its hold of
  SCALE_DOWN_AFTER regular passes, which those passes measure;
- an agent back: only when desiredCount may have been lowered for it (a
  regular pass found it lost for SCALE_DOWN_AFTER passes); back within its
  hold, nothing changes.

`EventSource` long-polls the queue in a thread of its own, deletes every message
it has handled (ignored and malformed ones too), and hands the relevant changes
to the loop, which runs one pass for all that arrived together (until none has
come for COALESCE_QUIET, at most COALESCE_LIMIT after the first). It never writes
to ECS itself. The regular INTERVAL passes stay the safety net: each one after
an event pass counts every host again, so a lost event or an attribute change
(which emits none) lasts at most one INTERVAL.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from .ecs import SQS_MAX_WAIT_SECONDS, AccessDenied, Api, EcsError, RequestRejected, ShuttingDown
from .models import QueueMessage

log = structlog.get_logger(__name__)

SOURCE = "aws.ecs"
DETAIL_TYPE = "ECS Container Instance State Change"
ACTIVE = "ACTIVE"

# Why an event started no pass: the `reason` label of the ignored-events metric.
OTHER_CLUSTER = "other_cluster"
OTHER_TYPE = "other_type"
DUPLICATE = "duplicate"
STALE = "stale"
NO_CHANGE = "no_change"
AGENT_LOST = "agent_lost"
AGENT_BACK = "agent_back_within_hold"
IGNORED_REASONS = (OTHER_CLUSTER, OTHER_TYPE, DUPLICATE, STALE, NO_CHANGE, AGENT_LOST, AGENT_BACK)

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


@dataclass(frozen=True)
class Ignored:
    """An event that is well formed but is not this cluster's container instance change."""

    reason: str


def parse(body: str) -> InstanceChange | Ignored:
    """Read one message body (an EventBridge event document); MalformedEvent says what is wrong."""
    try:
        document = json.loads(body)
    except ValueError as error:
        raise MalformedEvent(f"not JSON: {error}") from None
    return parse_document(document)


def parse_document(document: Any) -> InstanceChange | Ignored:
    """Read one EventBridge event document (already decoded); MalformedEvent says what is wrong."""
    if not isinstance(document, dict):
        raise MalformedEvent("not a JSON object")
    if document.get("source") != SOURCE or document.get("detail-type") != DETAIL_TYPE:
        return Ignored(OTHER_TYPE)
    detail = document.get("detail")
    if not isinstance(detail, dict):
        raise MalformedEvent("no detail object")
    try:
        arn = detail["containerInstanceArn"]
        cluster_arn = detail["clusterArn"]
        status = detail["status"]
        connected = detail["agentConnected"]
        version = detail["version"]
    except KeyError as error:
        raise MalformedEvent(f"detail has no {error.args[0]}") from None
    if not (isinstance(arn, str) and isinstance(cluster_arn, str) and isinstance(status, str)):
        raise MalformedEvent("containerInstanceArn, clusterArn and status must be strings")
    if not isinstance(connected, bool):
        raise MalformedEvent("agentConnected must be true or false")
    if isinstance(version, bool) or not isinstance(version, int):
        raise MalformedEvent("version must be a whole number")
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


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class _Known:
    version: int | None  # None: learnt from a listing, not from an event
    status: str
    agent_connected: bool
    counted_out: bool = False  # a regular pass found its agent lost long enough to lower for it


class Relevance:
    """Per container instance, the newest state seen; says which events can change a decision now.

    With `hold` (the daemon, where a lost agent counts until it has been lost for
    SCALE_DOWN_AFTER regular passes) a lost agent starts no pass, and one that
    comes back starts a pass only if a regular pass had found it lost that long
    (`learn`), since only then can its return raise anything. Without a hold
    (the Lambda handler acts at once) every agent change matters.
    """

    def __init__(self, cluster: str, *, hold: bool = True) -> None:
        self.cluster = cluster
        self.hold = hold
        self._known: dict[str, _Known] = {}
        self._lock = threading.Lock()

    def _same_cluster(self, cluster_arn: str) -> bool:
        # By name: CLUSTER may be a name or an ARN, and the rule already keeps other accounts' events out.
        return cluster_arn.rsplit("/", 1)[-1] == self.cluster.rsplit("/", 1)[-1]

    def classify(self, change: InstanceChange) -> str | None:
        """None when the change should start a pass, else the reason it should not; remembers the change."""
        if not self._same_cluster(change.cluster_arn):
            return OTHER_CLUSTER
        with self._lock:
            known = self._known.get(change.container_instance_arn)
            if known is not None and known.version is not None:
                if change.version == known.version:
                    return DUPLICATE
                if change.version < known.version:
                    return STALE
            counted_out = known is not None and known.counted_out and not change.agent_connected
            self._known[change.container_instance_arn] = _Known(
                change.version, change.status, change.agent_connected, counted_out
            )
            if known is None or change.status != known.status:
                return None
            if change.agent_connected == known.agent_connected:
                return NO_CHANGE
            if not self.hold:
                return None
            if not change.agent_connected:
                return AGENT_LOST
            return None if known.counted_out else AGENT_BACK

    def learn(self, active: Iterable[str], usable: Iterable[str], counted_out: Iterable[str] = ()) -> None:
        """Take in a regular pass: these instances are ACTIVE, those usable, those lost long enough to lower for."""
        usable_set, out = set(usable), set(counted_out)
        with self._lock:
            for arn in active:
                connected = arn in usable_set
                known = self._known.get(arn)
                if known is None:
                    self._known[arn] = _Known(None, ACTIVE, connected, arn in out)
                    continue
                known.status = ACTIVE
                known.agent_connected = connected
                known.counted_out = arn in out


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
    """Long-polls the queue in a thread, deletes what it handled, and wakes the loop for relevant changes.

    `wake` is set whenever relevant changes are waiting; `take()` returns them.
    """

    def __init__(
        self,
        api: Api,
        queue_url: str,
        relevance: Relevance,
        *,
        stop: threading.Event,
        wake: threading.Event,
        wait_seconds: int = WAIT_SECONDS,
        backoff: Sequence[float] = BACKOFF_SECONDS,
    ) -> None:
        self.api = api
        self.queue_url = queue_url
        self.relevance = relevance
        self.stop = stop
        self.wake = wake
        self.wait_seconds = wait_seconds
        self.backoff = tuple(backoff)
        self.stats = EventStats()
        self.on_update: Callable[[EventStats], None] | None = None  # after each batch and each change of health
        self._changes: list[InstanceChange] = []
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

    def settle(self, quiet: float = COALESCE_QUIET, limit: float = COALESCE_LIMIT) -> None:
        """Wait until no relevant change has arrived for `quiet` seconds (at most `limit`), or until stop."""
        deadline = time.monotonic() + limit
        with self._lock:
            seen = len(self._changes)
        while not self.stop.wait(min(quiet, max(0.0, deadline - time.monotonic()))):
            with self._lock:
                count = len(self._changes)
            if count == seen or time.monotonic() >= deadline:
                return
            seen = count

    def take(self) -> list[InstanceChange]:
        """The relevant changes received since the last call, oldest first."""
        with self._lock:
            changes, self._changes = self._changes, []
            self.wake.clear()
            return changes

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
        """Classify a batch, hand on the relevant changes, then delete every message of it."""
        relevant: list[InstanceChange] = []
        ignored: dict[str, int] = {}
        malformed = 0
        for message in messages:
            try:
                parsed = parse(message.body)
            except MalformedEvent as error:
                malformed += 1
                log.warning("event_malformed", message_id=message.message_id, error=str(error))
                continue
            reason = parsed.reason if isinstance(parsed, Ignored) else self.relevance.classify(parsed)
            if reason is None and isinstance(parsed, InstanceChange):
                relevant.append(parsed)
                log.info(
                    "event",
                    container_instance=parsed.container_instance_arn,
                    status=parsed.status,
                    agent_connected=parsed.agent_connected,
                    version=parsed.version,
                )
            elif reason is not None:
                ignored[reason] = ignored.get(reason, 0) + 1
                log.debug("event_ignored", message_id=message.message_id, reason=reason)
        with self._lock:
            self.stats.received += len(messages)
            self.stats.relevant += len(relevant)
            self.stats.malformed += malformed
            for reason, count in ignored.items():
                self.stats.ignored[reason] = self.stats.ignored.get(reason, 0) + count
            if relevant:
                self._changes.extend(relevant)
                self.wake.set()
        self._updated()
        self._delete(messages)

    def _delete(self, messages: Sequence[QueueMessage]) -> None:
        try:
            failed = self.api.delete_messages(self.queue_url, messages)
        except ShuttingDown:
            return
        except EcsError as error:  # they come back after the visibility timeout; relevance drops the repeats
            log.warning("events_not_deleted", queue_url=self.queue_url, count=len(messages), error=str(error))
            return
        for message_id, reason in failed.items():
            log.warning("event_not_deleted", message_id=message_id, error=reason)


def oldest_time(changes: Iterable[InstanceChange]) -> float | None:
    """The `time` of the oldest change with one: where the latency to an update is measured from."""
    times = [change.time for change in changes if change.time is not None]
    return min(times) if times else None


