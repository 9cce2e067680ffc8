"""One reconcile pass: observe the cluster, plan each service, apply the updates.

The pass never acts on a failed or partial observation: if describing the
services or counting any host set fails, nothing is written in that pass. A
fault in one service (a bad tag, a rejected update) only affects that service.
The returned PassReport is what the loop, the Lambda handler and the metrics use.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterable, Sequence

import structlog

from ecs_cluster_manager.aws.ecs import (
    ClusterNotFound,
    CredentialsError,
    EcsError,
    ShuttingDown,
    Throttled,
)
from ecs_cluster_manager.aws.gateway import PassGateway
from ecs_cluster_manager.config import Config
from ecs_cluster_manager.engine import coverage, readiness, room
from ecs_cluster_manager.engine.audit import ERROR, findings_for
from ecs_cluster_manager.engine.discovery import discover
from ecs_cluster_manager.model import manage, plan, sizing
from ecs_cluster_manager.model.coverage import read_cost
from ecs_cluster_manager.model.models import Service, TaskIdentity
from ecs_cluster_manager.model.reasons import Reason
from ecs_cluster_manager.model.report import PassReport
from ecs_cluster_manager.observe.counting import Counted
from ecs_cluster_manager.observe.events import Change, oldest_time
from ecs_cluster_manager.observe.filters import eligible_expression, host_filter_of
from ecs_cluster_manager.observe.memory import Memory

log = structlog.get_logger(__name__)







def _warn_misconfigured(config: Config, memory: Memory, service: Service) -> None:
    """Log what `check` calls an error in a service this pass still sizes, once per service and problem.

    A service without distinctInstance, or with a deployment that would
    deadlock, is still sized (that is what the operator asked for), but not
    without a word: the same finding as `check`, as a warning.
    """
    problems = {f.code: f.message for f in findings_for(service) if f.severity == ERROR}
    for code, message in problems.items():
        if (service.arn, code) not in memory.misconfigured:
            log.warning(
                "service_misconfigured", cluster=config.cluster, service=service.name, code=code, message=message
            )
    memory.misconfigured = {key for key in memory.misconfigured if key[0] != service.arn}
    memory.misconfigured |= {(service.arn, code) for code in problems}


def run_pass(
    api: PassGateway,
    config: Config,
    memory: Memory | None = None,
    *,
    stop: threading.Event | None = None,
    identity: TaskIdentity | None = None,
    changes: Sequence[Change] | None = None,
    now: float | None = None,
) -> PassReport:
    """Observe, plan and act once. `memory` carries the host store (and lost agents' holds) between passes.

    Without memory the pass lists every host filter exactly and holds nothing
    (a lost agent stops counting at once), as in --once and the Lambda handler.
    With `changes` (an event pass) those changes are already in the store: the
    hosts are counted from it, with no listing.

    `now` is when the pass starts on the store's clock (monotonic), as the loop
    reads it; by default the pass reads that clock itself.
    """
    report = PassReport(cluster=config.cluster, started_at=time.time())
    if changes is not None:
        report.trigger = "event"
        report.event_time = oldest_time(changes)
    calls_before = api.total_calls
    # The daemon's loop: it keeps coverage's gap history and logs unchanged decisions at DEBUG. --once has no
    # memory, and the Lambda handler's warm memory (config.once) only spares it listings of known hosts.
    looping = memory is not None and not config.once
    if memory is None:
        memory = Memory(hold=0.0, resync=0.0)
    clock = memory.store.clock
    started = clock() if now is None else now
    try:
        _observe_and_act(api, config, memory, report, stop, identity, changes is not None, looping, started)
    except ShuttingDown:
        report.stopped = True
    finally:
        report.duration = max(0.0, clock() - started)
        report.api_calls = api.total_calls - calls_before
        if report.trigger == "event" and report.write_times:
            memory.store.note_event_write()
        _log_report(config, report, memory.logged if looping else None)
    return report


def _observe_and_act(
    api: PassGateway,
    config: Config,
    memory: Memory,
    report: PassReport,
    stop: threading.Event | None,
    identity: TaskIdentity | None,
    event_pass: bool,
    looping: bool,
    now: float,
) -> None:
    try:
        managed = discover(api, config, identity)
    except ClusterNotFound as error:
        report.cluster_missing = True
        report.errors.append(f"cluster not found: {error}")
        return
    except CredentialsError as error:
        report.credentials_failed = True
        report.errors.append(f"describing services failed: {error}")
        return
    except EcsError as error:
        report.errors.append(f"describing services failed: {error}")
        return
    report.decisions.extend(managed.skipped)
    report.managed = len(managed.services)
    memory.forget_unmanaged({service.arn for service in managed.services})

    # Per-service checks that need no host count.
    sized: list[tuple[Service, sizing.Sizing]] = []
    for service in managed.services:
        rule = manage.unmanageable(service)
        if rule is not None:
            report.decisions.append(
                plan.skip(service.name, rule.reason, rule.code, arn=service.arn, current=service.desired_count)
            )
            continue
        try:
            size = sizing.sizing(service.tags)
        except sizing.SizingError as error:
            report.decisions.append(plan.skip(
                    service.name, str(error), Reason.BAD_TAG, arn=service.arn, current=service.desired_count
                ))
            continue
        sized.append((service, size))
        _warn_misconfigured(config, memory, service)

    if config.cloudformation_guard:
        sized = _cloudformation_guard(api, sized, report)

    host_filters = {service.arn: host_filter_of(service) for service, _ in sized}
    # A managed service skipped in this pass (a stack mid-update, a bad tag) keeps its filter and its holds.
    kept = {host_filter_of(service) for service in managed.services}
    counted: dict[tuple[str, ...], Counted] = {}
    try:
        if event_pass:
            counted = memory.counting.events(api, config.cluster, host_filters.values())
        elif sized:
            counted = memory.counting.regular(api, config.cluster, host_filters.values(), keep=kept)
        else:
            memory.store.keep_only(kept)  # no service to size: only the skipped services' filters stay
    except ClusterNotFound as error:
        report.cluster_missing = True
        report.errors.append(f"cluster not found: {error}")
    except EcsError as error:
        report.errors.append(f"counting hosts failed: {error}")

    if report.errors:
        # Never size anything from a partial count.
        for service, _ in sized:
            report.decisions.append(
                plan.skip(
                    service.name, "host count failed", Reason.HOST_COUNT_FAILED, arn=service.arn,
                    current=service.desired_count,
                )
            )
        return
    for member_of, result in counted.items():
        expression = eligible_expression(member_of)
        if result.error is not None:
            report.counting[expression] = result.how
            continue
        report.hosts[expression] = result.count.usable
        report.active_hosts[expression] = result.count.active
        report.counting[expression] = result.how

    # A filter ECS rejected fails only the services that use it.
    uncounted = {service.arn for service, _ in sized if counted[host_filters[service.arn]].error is not None}
    for service, _ in sized:
        if service.arn in uncounted:
            why = counted[host_filters[service.arn]].error
            report.decisions.append(
                plan.skip(
                    service.name, f"host count failed: {why}", Reason.HOST_COUNT_FAILED, arn=service.arn,
                    current=service.desired_count,
                )
            )
    sized = [(service, size) for service, size in sized if service.arn not in uncounted]
    planned = {
        service.arn: plan.decide(
            service, counted[host_filters[service.arn]].count, size, dry_run=config.dry_run, hold=memory.store.hold
        )
        for service, size in sized
    }
    now_writable = _pace_writes(api, config, memory, [planned[service.arn] for service, _ in sized], now)
    for service, _ in sized:
        decision = planned[service.arn]
        # A throttle in this pass spends the budget (transport.py): then the rest wait for the next pass too.
        if decision.writes and (service.arn not in now_writable or (not config.once and api.writes_available() == 0)):
            decision = _deferred(decision)
        elif decision.writes:
            decision = _apply(api, config, decision, stop, report)
        if decision.code is Reason.DEFERRED:
            report.deferred += 1
            memory.waiting_since.setdefault(service.arn, now)
        report.decisions.append(decision)

    if looping:  # coverage needs the gap history the loop keeps; --once and the Lambda handler only size
        exact = {f for f, result in counted.items() if result.exact}
        _read_coverage(api, config, memory, report, sized, host_filters, exact, now)
        managed_names = {service.name for service in managed.services}
        room.make_room(api, config, memory, report, [s for s, _ in sized], managed_names, now, stop)
        if config.ready_attribute is not None:
            manageable = [s for s in managed.services if manage.unmanageable(s) is None]
            readiness.keep_ready(
                api, config, memory, report, manageable, {s.arn: host_filter_of(s) for s in manageable}, now,
                uncounted=sorted(s.name for s in managed.services if s.arn in uncounted),
            )


def _read_coverage(
    api: PassGateway,
    config: Config,
    memory: Memory,
    report: PassReport,
    sized: Sequence[tuple[Service, sizing.Sizing]],
    host_filters: dict[str, tuple[str, ...]],
    exact: set[tuple[str, ...]],
    clock: float,
) -> None:
    """Read the coverage of the services whose host filter was counted exactly in this pass, after sizing.

    A small filter is listed on every pass, so a service is read only when its
    coverage may have changed (GapWatch.worth_reading): never read, a gap open
    (every quarter of COVERAGE_GRACE), its eligible hosts changed, its tasks not
    all running, or RESYNC since its last reading.

    At most coverage.CALLS_PER_PASS calls' worth of services per pass, those
    read longest ago first (GapWatch.due); the others wait for the next exact
    count. A failed read is logged and recorded for that service, and ends the
    pass's coverage reads (the rest wait for the next exact count), so a failing
    API never stretches the pass; sizing is already done by then.
    """
    hosts = {f: found for f in exact if (found := coverage.eligible_hosts(memory, f)) is not None}
    now = time.time()
    readable = {
        service.name: read_cost(len(hosts[host_filters[service.arn]][0]), size.tasks_per_host)
        for service, size in sized
        if host_filters[service.arn] in hosts
        and memory.coverage.worth_reading(
            service,
            hosts[host_filters[service.arn]][0],
            clock,
            memory.counting.resync - memory.counting.interval,
            config.coverage_grace,
        )
    }
    order = memory.coverage.due(readable)  # read longest ago first, within the pass's share of the API budget
    due = set(order)
    by_name = {service.name: (service, size) for service, size in sized}
    for name in order:
        service, size = by_name[name]
        eligible, ineligible = hosts[host_filters[service.arn]]
        memory.coverage.last_read[service.name] = clock
        memory.coverage.read_eligible[service.name] = eligible
        memory.coverage.read_counts[service.name] = (service.running_count, service.pending_count)
        try:
            result = coverage.read(
                api,
                config.cluster,
                service,
                eligible,
                ineligible=ineligible,
                tasks_per_host=size.tasks_per_host,
                now=now,
            )
        except EcsError as error:
            report.coverage_errors[service.name] = str(error)
            left = sorted(due - set(report.coverage) - set(report.coverage_errors))
            log.warning(
                "coverage_failed", cluster=config.cluster, service=service.name, error=str(error), deferred=left
            )
            # The API is failing: the other reads wait for the next exact count rather than stretch this pass.
            break
        report.coverage[service.name] = result
        memory.coverage.observe(config.cluster, result, eligible, clock, config.coverage_grace)
        memory.ready.read(result, result.tasks, eligible)
    if hosts:
        misplaced = {h.container_instance_arn for c in report.coverage.values() for h in c.misplaced}
        memory.coverage.keep_left(misplaced, set().union(*(eligible for eligible, _ in hosts.values())))
        memory.coverage.forget({service.name for service, _ in sized})


def _cloudformation_guard(
    api: PassGateway, sized: Iterable[tuple[Service, sizing.Sizing]], report: PassReport
) -> list[tuple[Service, sizing.Sizing]]:
    """Leave alone services whose CloudFormation stack is mid-operation (one DescribeStacks per stack)."""
    statuses: dict[str, str | None | EcsError] = {}
    kept: list[tuple[Service, sizing.Sizing]] = []
    for service, size in sized:
        stack = service.tags.get(sizing.STACK_NAME_TAG)
        if not stack:
            kept.append((service, size))
            continue
        if stack not in statuses:
            try:
                statuses[stack] = api.stack_status(stack)
            except EcsError as error:
                statuses[stack] = error
        status = statuses[stack]
        if isinstance(status, EcsError):
            report.decisions.append(
                plan.skip(
                    service.name,
                    f"cloudformation stack {stack} status unknown: {status}",
                    Reason.CLOUDFORMATION,
                    arn=service.arn,
                    current=service.desired_count,
                )
            )
        elif status is not None and status.endswith("_IN_PROGRESS"):
            report.decisions.append(
                plan.skip(
                    service.name,
                    f"cloudformation stack {stack} is {status}",
                    Reason.CLOUDFORMATION,
                    arn=service.arn,
                    current=service.desired_count,
                    error=False,
                )
            )
        else:
            kept.append((service, size))
    return kept


DEFERRED_REASON = "deferred: the API budget pays for no more writes now; the next pass decides again"


def _deferred(decision: plan.Decision) -> plan.Decision:
    """The write a decision asks for, left to the next pass: the budget cannot pay for it now."""
    return dataclasses.replace(decision, action=plan.SKIP, reason=DEFERRED_REASON, code=Reason.DEFERRED)


def _pace_writes(
    api: PassGateway, config: Config, memory: Memory, decisions: Sequence[plan.Decision], now: float
) -> set[str]:
    """The services whose update this pass may send: as many as the service-modify budget pays for now.

    Scale-ups go first, then the services that have waited longest, so none
    starves; the rest are deferred, never queued: the next pass, which the loop
    runs as soon as the budget can pay again, decides them from fresh counts.
    With --once there is no next pass, so every write is sent (each waits for its token).
    """
    wanted = [d for d in decisions if d.writes and d.service_arn is not None]
    waiting = {arn: since for arn, since in memory.waiting_since.items() if arn in {d.service_arn for d in wanted}}
    for decision in wanted:
        waiting.setdefault(str(decision.service_arn), now)
    available = api.writes_available()
    if config.once or available is None or available >= len(wanted):
        memory.waiting_since = {}
        return {str(d.service_arn) for d in wanted}
    order = sorted(
        range(len(wanted)),
        key=lambda i: (
            not (wanted[i].target or 0) > (wanted[i].current or 0),  # scale-ups first
            waiting[str(wanted[i].service_arn)],
            i,
        ),
    )
    chosen = {str(wanted[i].service_arn) for i in order[:available]}
    memory.waiting_since = {arn: since for arn, since in waiting.items() if arn not in chosen}
    return chosen


def _apply(
    api: PassGateway, config: Config, decision: plan.Decision, stop: threading.Event | None, report: PassReport
) -> plan.Decision:
    """Make the update a decision asks for; a refused update becomes a skip for that service only."""
    if stop is not None and stop.is_set():
        report.stopped = True
        return dataclasses.replace(
            decision, action=plan.SKIP, reason="shutting down before update", code=Reason.SHUTTING_DOWN
        )
    assert decision.service_arn is not None and decision.target is not None
    try:
        api.set_desired_count(config.cluster, decision.service_arn, decision.target)
    except EcsError as error:
        if isinstance(error, Throttled) and not config.once:  # the next pass, when the budget pays, decides again
            return _deferred(decision)
        return dataclasses.replace(
            decision, action=plan.SKIP, reason=f"update failed: {error}", code=Reason.UPDATE_FAILED, error=True
        )
    report.write_times.append(time.time())
    return decision


def _log_report(config: Config, report: PassReport, logged: dict[str, tuple[object, ...]] | None = None) -> None:
    """Log the pass: one `pass` line, and a `decision` line per service at INFO only when it changed.

    With `logged` (the loop's memory of each service's last decision), a
    decision equal to the last one (a converged service, the same skip) goes
    to DEBUG; writes, failures, and a hold's every step stay at INFO or ERROR.
    Without it (--once, the Lambda handler) every decision is at INFO.
    """
    for decision in report.decisions:
        key = (decision.action, decision.current, decision.target, decision.reason)
        changed = logged is None or logged.get(decision.service) != key or decision.writes
        if logged is not None:
            # After a write, the next pass finding the service converged at its target is no news.
            written = decision.action == plan.UPDATE
            logged[decision.service] = (
                (plan.UNCHANGED, decision.target, decision.target, "converged") if written else key
            )
        emit = log.error if decision.error else (log.info if changed else log.debug)
        emit(
            "decision",
            cluster=config.cluster,
            service=decision.service,
            hosts=decision.hosts,
            current=decision.current,
            target=decision.target,
            action=decision.action,
            reason=decision.reason,
            dry_run=config.dry_run,
        )
    if logged is not None and report.observed:
        for service in set(logged) - {d.service for d in report.decisions}:
            del logged[service]
    for error in report.errors:
        log.error("pass_failed", cluster=config.cluster, error=error)
    log.info(
        "pass",
        cluster=config.cluster,
        duration=round(report.duration, 3),
        api_calls=report.api_calls,
        hosts=dict(report.hosts),
        active_hosts=dict(report.active_hosts),
        counting=dict(report.counting),
        trigger=report.trigger,
        services=len(report.decisions),
        updated=report.count(plan.UPDATE),
        unchanged=report.count(plan.UNCHANGED),
        dry_run=report.count(plan.DRY_RUN),
        skipped=report.count(plan.SKIP),
        failed_services=report.failed_services,
        deferred=report.deferred,
        ok=report.ok,
    )
