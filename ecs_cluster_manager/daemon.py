"""The loop: a reconcile pass every INTERVAL, and with EVENTS_QUEUE_URL one more whenever events matter.

With an events queue, an events source (events.py) long-polls it in a thread of
its own and hands the changes to this loop, which takes them into the host
store (the loop's thread is its only writer); the relevant changes that arrive
together (see `gather`) make one event pass. The INTERVAL passes go on as the
safety net and the resync, and a due one always runs, however many events
arrive. When the API budget deferred some writes, a pass that decides again
from the store runs as soon as the budget can pay for them, not after INTERVAL.

Transient faults never end the loop: a failed pass is logged and the next one
runs on schedule. Only the very first pass can end it with exit code 2: a
missing cluster (a typo in CLUSTER, or an endpoint left over in
AWS_ENDPOINT_URL) or no usable credentials; so do, before any pass, an
EVENTS_QUEUE_URL queue that does not exist or may not be read, and a metrics
server that cannot listen on METRICS_PORT. A pass that manages no service
is not a fault, but it is logged as a warning each time it begins.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

import structlog

from ecs_cluster_manager import __version__
from ecs_cluster_manager.aws.ecs import Api, CredentialsError
from ecs_cluster_manager.aws.metadata import task_identity
from ecs_cluster_manager.config import Config, ConfigError
from ecs_cluster_manager.engine.passes import run_pass
from ecs_cluster_manager.model.exits import EXIT_FAILED, EXIT_OK
from ecs_cluster_manager.model.holds import hold_seconds
from ecs_cluster_manager.model.report import PassReport
from ecs_cluster_manager.observe.events import (
    COALESCE_LIMIT,
    COALESCE_QUIET,
    TASK_NO_CHANGE,
    Change,
    EventSource,
    unreadable,
)
from ecs_cluster_manager.observe.memory import Memory
from ecs_cluster_manager.observe.readiness import TaskChange
from ecs_cluster_manager.ops import health
from ecs_cluster_manager.ops.health import Monitor

log = structlog.get_logger(__name__)

# Below this INTERVAL the start-up warns: the calls add up in the account's shared ECS throttling buckets.
SHORT_INTERVAL = 5.0
CALLS_PER_PASS = 3  # the fewest a regular pass makes: two host listings and one DescribeServices


def short_interval_cost(interval: float) -> str:
    """What INTERVAL below SHORT_INTERVAL costs, in one line."""
    per_hour = CALLS_PER_PASS * 3600 / interval
    return (
        f"INTERVAL={interval:g}s is below {SHORT_INTERVAL:g}s: every regular pass makes at least {CALLS_PER_PASS} "
        f"ECS calls, so at least {per_hour:,.0f} calls an hour from the account's ECS throttling buckets, which "
        "every other tool in the account and region shares; use 30 (the default), or EVENTS_QUEUE_URL with 300 "
        "to follow host changes in about a second"
    )


def loop(
    api: Api,
    config: Config,
    stop: threading.Event,
    environ: Mapping[str, str],
    *,
    fail: Callable[[str], int],
    observers: tuple[Callable[[PassReport], None], ...] = (),
) -> int:
    """Run passes until `stop` is set (or once); returns the process exit code."""
    identity = task_identity(environ)
    if config.events_queue_url:
        try:
            api.prepare_events()
        except CredentialsError as error:
            return fail(str(error))
        problem = unreadable(api, config.events_queue_url)  # before the first pass, which may write
        if problem is not None:
            return fail(problem)
    monitor = health.Monitor(config, api)
    try:
        monitor.start()
    except ConfigError as error:  # the metrics server cannot listen: METRICS_PORT / METRICS_ADDR
        return fail(str(error))
    log.info(
        "start",
        version=__version__,
        cluster=config.cluster,
        services=list(config.services),
        service_regex=config.service_regex.pattern if config.service_regex else None,
        managed_tag=str(config.managed_tag) if config.managed_tag else None,
        interval=config.interval,
        once=config.once,
        dry_run=config.dry_run,
        scale_down_after=config.scale_down_after,
        hold_seconds=hold_seconds(config.scale_down_after, config.interval),
        resync=config.resync,
        cloudformation_guard=config.cloudformation_guard,
        metrics_port=config.metrics_port,
        region=api.region,
        **({"endpoint": api.custom_endpoint} if api.custom_endpoint else {}),
        self_service=identity.service_name if identity else None,
        events_queue_url=config.events_queue_url,
    )
    if config.ready_attribute is not None and config.once:
        log.warning(
            "ready_attribute_ignored",
            attribute=config.ready_attribute,
            message="READY_ATTRIBUTE is kept by the daemon's loop only: --once neither puts nor deletes it",
        )
    if config.interval < SHORT_INTERVAL and not config.once:
        log.warning("interval_short", interval=config.interval, message=short_interval_cost(config.interval))
    memory = None if config.once else Memory.for_config(config)
    first = True
    managing_none = False
    wake = threading.Event()  # set by the events source when changes wait, and on stop
    readiness = config.ready_attribute is not None
    source: EventSource | None = None
    next_regular = time.monotonic()
    followup: float | None = None  # when the API budget can pay for writes a pass deferred
    try:
        while not stop.is_set():
            changes: list[Change] | None = None
            due = min(next_regular, followup if followup is not None else next_regular)
            if source is not None and memory is not None:
                if time.monotonic() < due and wake.wait(max(0.0, due - time.monotonic())):
                    if stop.is_set():
                        break
                    changes = gather(source, memory, stop, readiness=readiness) or None
                    if changes is None and memory.ready.task_stopped:
                        next_regular = min(next_regular, recheck(memory, config, time.monotonic()))
                    if changes is None and time.monotonic() < min(due, next_regular):
                        continue
                if changes is None and time.monotonic() >= next_regular:
                    # A regular pass is due: it runs whatever arrives, after taking in what waits.
                    absorb(source, memory, source.take(), readiness=readiness)
            if changes is None and followup is not None and time.monotonic() < next_regular:
                # Deferred writes, decided again from the store as it is now: no listing.
                changes = []
            if changes is None:
                next_regular = time.monotonic() + config.interval
            followup = None
            report = run_pass(api, config, memory, stop=stop, identity=identity, changes=changes, now=time.monotonic())
            if memory is not None:
                next_regular = min(next_regular, recheck(memory, config, time.monotonic(), bool(changes)))
            monitor.record(report)
            for observer in observers:
                observer(report)
            if report.deferred and not config.once:  # the budget deferred writes: run a pass as soon as it can pay
                followup = time.monotonic() + api.writes_ready_in(report.deferred)
            if first and report.cluster_missing:
                return fail(f"CLUSTER: cluster {config.cluster!r} not found in {where(api)}")
            if first and report.credentials_failed:
                return fail(credentials_message(report, config, environ))
            first = False
            if report.managed == 0 and not managing_none:
                log.warning(
                    "no_managed_services",
                    cluster=config.cluster,
                    selection=config.selection,
                    message=f"no service of cluster {config.cluster} matches {config.selection}: nothing is managed",
                )
            elif report.managed and managing_none:
                log.info("managed_services_found", cluster=config.cluster, services=report.managed)
            if report.managed is not None:
                managing_none = report.managed == 0
            if config.once:
                handled = (report.ok and report.managed != 0) or report.stopped
                return EXIT_OK if handled else EXIT_FAILED
            if config.events_queue_url and source is None:
                source = EventSource(api, config.events_queue_url, config.cluster, stop=stop, wake=wake)
                problem = source.first_poll()
                if problem is not None:
                    source = None
                    return fail(problem)
                _start_events(source, config, stop, wake, monitor)
            elif source is None:
                stop.wait(max(0.0, min(next_regular, followup or next_regular) - time.monotonic()))
    finally:
        if source is not None:
            # A long poll in flight is not waited for: messages it receives come back after their
            # visibility timeout, for the next process.
            source.join(timeout=0.5)
        monitor.close()
    log.info("stop", cluster=config.cluster)
    return EXIT_OK


# A host missing its task is looked at again at least this often, however small COVERAGE_GRACE.
MIN_GAP_RECHECK = 1.0


def recheck(memory: Memory, config: Config, now: float, hosts_changed: bool = False) -> float:
    """When the next regular pass must run to look at the hosts' tasks again (infinity: no sooner than INTERVAL).

    Only a regular pass reads coverage, and only time makes a host's missing
    task pass COVERAGE_GRACE (coverage_gap is logged, room is made, the ready
    attribute goes). So with events and a long INTERVAL the loop still runs a
    regular pass within a quarter of the grace after an event pass that
    followed host changes (ECS places the new hosts' tasks, or cannot), after
    a task event saying a managed service's task stopped, and while any host
    misses its task.
    """
    lost = memory.ready.task_stopped
    memory.ready.task_stopped = False
    if not (hosts_changed or lost or memory.coverage.gaps):
        return float("inf")
    return now + max(MIN_GAP_RECHECK, config.coverage_grace / 4)


def absorb(source: EventSource, memory: Memory, changes: list[Change], *, readiness: bool = False) -> list[Change]:
    """Take changes into the host store (this thread is its only writer); return those that can change a decision.

    A task event matters only with READY_ATTRIBUTE (`readiness`): when it makes a host newly run a
    managed service's task, the pass that follows may make the host ready.
    """
    relevant: list[Change] = []
    ignored: list[str] = []
    for change in changes:
        if isinstance(change, TaskChange):
            if readiness and memory.ready.observe_task(change):
                relevant.append(change)
                log.info(
                    "task_event",
                    task=change.task_arn,
                    service=change.service,
                    container_instance=change.container_instance_arn,
                    last_status=change.last_status,
                    version=change.version,
                )
            else:
                ignored.append(TASK_NO_CHANGE)
            continue
        reason = memory.store.observe_event(change)
        if reason is None:
            relevant.append(change)
            log.info(
                "event",
                container_instance=change.container_instance_arn,
                status=change.status,
                agent_connected=change.agent_connected,
                version=change.version,
            )
        else:
            ignored.append(reason)
            log.debug("event_ignored", container_instance=change.container_instance_arn, reason=reason)
    if changes:
        source.counted(len(relevant), ignored)
    return relevant


def gather(source: EventSource, memory: Memory, stop: threading.Event, *, readiness: bool = False) -> list[Change]:
    """The relevant changes of a burst: until none has come for COALESCE_QUIET after the first (COALESCE_LIMIT at most).

    Changes that arrive together make one event pass, so a burst of events never becomes a burst of writes.
    """
    relevant = absorb(source, memory, source.take(), readiness=readiness)
    if not relevant:
        return []
    deadline = time.monotonic() + COALESCE_LIMIT
    while time.monotonic() < deadline:
        if stop.wait(min(COALESCE_QUIET, max(0.0, deadline - time.monotonic()))):
            break
        more = absorb(source, memory, source.take(), readiness=readiness)
        if not more:
            break
        relevant.extend(more)
    return relevant


def _start_events(
    source: EventSource, config: Config, stop: threading.Event, wake: threading.Event, monitor: Monitor
) -> None:
    """Start long-polling EVENTS_QUEUE_URL; `wake` is also set on stop, so the loop never sleeps through it."""
    monitor.attach_events(source)

    def wake_on_stop() -> None:
        stop.wait()
        wake.set()

    threading.Thread(target=wake_on_stop, name="stop-wakes-loop", daemon=True).start()
    source.start()
    log.info("events_start", queue_url=config.events_queue_url, cluster=config.cluster, interval=config.interval)


def where(api: Api) -> str:
    """`region R`, plus the endpoint when it is not AWS's own: what a "not found" is relative to."""
    endpoint = api.custom_endpoint
    return f"region {api.region} at endpoint {endpoint}" if endpoint else f"region {api.region}"


def credentials_message(report: PassReport, config: Config, environ: Mapping[str, str]) -> str:
    """One line: the credentials error and every place boto3 looks for credentials, as configured here."""
    error = next((e for e in report.errors), "no credentials")
    profile = config.profile or environ.get("AWS_PROFILE") or "default"
    container_variables = ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")
    container = "set" if any(environ.get(name) for name in container_variables) else "not set"
    metadata = "disabled" if environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true" else "no role found"
    return (
        f"AWS credentials: no usable credentials ({error}); boto3 looked in the environment "
        f"(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), profile {profile!r} "
        f"(AWS_SHARED_CREDENTIALS_FILE={environ.get('AWS_SHARED_CREDENTIALS_FILE', '~/.aws/credentials')}, "
        f"AWS_CONFIG_FILE={environ.get('AWS_CONFIG_FILE', '~/.aws/config')}), the container role "
        f"(AWS_CONTAINER_CREDENTIALS_RELATIVE_URI / _FULL_URI: {container}) and the instance role (metadata {metadata})"
    )
