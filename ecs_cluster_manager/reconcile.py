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
from dataclasses import dataclass, field
from typing import Any

import structlog

from . import coverage, plan
from .config import Config
from .counting import Counted, HostCounter
from .coverage import Coverage, GapWatch
from .ecs import Api, ClusterNotFound, CredentialsError, EcsError, ShuttingDown, host_filter
from .events import InstanceChange, oldest_time
from .models import HostCount, Service, TaskIdentity

log = structlog.get_logger(__name__)


@dataclass
class PassReport:
    """What one pass saw and did."""

    cluster: str
    started_at: float
    duration: float = 0.0
    api_calls: int = 0
    hosts: dict[str, int] = field(default_factory=dict)  # filter expression -> eligible (usable) hosts
    active_hosts: dict[str, int] = field(default_factory=dict)  # filter expression -> ACTIVE hosts, agent or not
    counting: dict[str, str] = field(default_factory=dict)  # filter expression -> "exact", "cheap" or "event"
    trigger: str = "interval"  # what started the pass: "interval", or "event" (state-change events)
    event_time: float | None = None  # the oldest event of an event pass (Unix time)
    write_times: list[float] = field(default_factory=list)  # Unix time of each UpdateService that succeeded
    decisions: list[plan.Decision] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # faults that stopped the whole pass
    cluster_missing: bool = False
    credentials_failed: bool = False  # no usable credentials (none found, expired, invalid)
    managed: int | None = None  # services the selection found and the pass handled; None when unknown
    stopped: bool = False  # a shutdown ended the pass early: some reads or updates were not made
    coverage: dict[str, Coverage] = field(default_factory=dict)  # service name -> coverage read in this pass
    coverage_errors: dict[str, str] = field(default_factory=dict)  # service name -> why its coverage read failed

    @property
    def observed(self) -> bool:
        """The pass read everything it needed: the health check's idea of success."""
        return not self.errors and not self.stopped

    @property
    def ok(self) -> bool:
        """Every managed service was handled."""
        return not self.errors and not any(d.error for d in self.decisions)

    def count(self, action: str) -> int:
        return sum(1 for d in self.decisions if d.action == action)

    @property
    def failed_services(self) -> int:
        return sum(1 for d in self.decisions if d.error)

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary (the Lambda handler returns it)."""
        return {
            "cluster": self.cluster,
            "ok": self.ok,
            "duration": round(self.duration, 3),
            "api_calls": self.api_calls,
            "hosts": dict(self.hosts),
            "active_hosts": dict(self.active_hosts),
            "updated": self.count(plan.UPDATE),
            "unchanged": self.count(plan.UNCHANGED),
            "dry_run": self.count(plan.DRY_RUN),
            "skipped": self.count(plan.SKIP),
            "failed_services": self.failed_services,
            "errors": list(self.errors),
            "decisions": [
                {
                    "service": d.service,
                    "action": d.action,
                    "current": d.current,
                    "target": d.target,
                    "hosts": d.hosts,
                    "reason": d.reason,
                }
                for d in self.decisions
            ],
        }


def _name(reference: str) -> str:
    return reference.rsplit("/", 1)[-1]


def _is_self(service: Service, identity: TaskIdentity | None) -> bool:
    if identity is None or not identity.service_name:
        return False
    if identity.service_name != service.name:
        return False
    return identity.cluster is None or _name(identity.cluster) == _name(service.cluster_arn)


@dataclass
class Memory:
    """What the loop carries from one pass to the next: the host counts, with how long each lost agent is lost."""

    hosts: HostCounter = field(default_factory=HostCounter)
    coverage: GapWatch = field(default_factory=GapWatch)  # hosts missing their task, and since when
    logged: dict[str, tuple[object, ...]] = field(default_factory=dict)  # service -> its last decision, as logged


@dataclass(frozen=True)
class Managed:
    """The managed services as observed, plus the references that could not be used."""

    services: list[Service]
    skipped: list[plan.Decision]


def discover(api: Api, config: Config, identity: TaskIdentity | None) -> Managed:
    """Find and describe the managed services: SERVICES, SERVICE_REGEX and MANAGED_TAG, deduplicated by ARN.

    Raises EcsError when a listing or a description fails.
    """
    explicit = list(config.services)
    candidates: list[str] = []
    if config.discovery:
        listed = api.list_services(config.cluster)
        by_name = {_name(arn): arn for arn in listed}
        # An explicit name that the listing knows is described by its ARN, once.
        explicit = [by_name.get(ref, ref) for ref in explicit]
        if config.managed_tag is not None:
            candidates = listed  # tags only come with DescribeServices
        elif config.service_regex is not None:
            candidates = [arn for arn in listed if config.service_regex.fullmatch(_name(arn))]
    references = list(dict.fromkeys([*explicit, *candidates]))
    lookup = api.describe_services(config.cluster, references) if references else None

    wanted = set(explicit) | {_name(ref) for ref in explicit}
    services: dict[str, Service] = {}
    skipped: list[plan.Decision] = []
    returned: set[str] = set()
    for service in lookup.services if lookup else ():
        returned |= {service.arn, service.name}
        named = service.arn in wanted or service.name in wanted
        discovered = service.status == "ACTIVE" and (
            (config.service_regex is not None and config.service_regex.fullmatch(service.name) is not None)
            or (config.managed_tag is not None and config.managed_tag.matches(service.tags))
        )
        if not (named or discovered) or service.arn in services:
            continue
        if _is_self(service, identity):
            log.info("skip_self", cluster=config.cluster, service=service.name)
            continue
        services[service.arn] = service
    for failure in lookup.failures if lookup else ():
        returned |= {failure.service, _name(failure.service)}
        if failure.service in wanted or _name(failure.service) in wanted:
            reason = (
                "service not found in this cluster"
                if failure.reason == "MISSING"
                else f"DescribeServices: {failure.reason}"
            )
            skipped.append(plan.skip(_name(failure.service), reason, arn=failure.service))
    # An explicit reference that came back neither as a service nor as a failure.
    for ref in explicit:
        if ref not in returned:
            skipped.append(plan.skip(_name(ref), "service not found in this cluster", arn=ref if "/" in ref else None))
    return Managed(list(services.values()), skipped)


def run_pass(
    api: Api,
    config: Config,
    memory: Memory | None = None,
    *,
    stop: threading.Event | None = None,
    identity: TaskIdentity | None = None,
    scale_down_after: int | None = None,
    changes: Sequence[InstanceChange] | None = None,
) -> PassReport:
    """Observe, plan and act once. `memory` carries the host counts (and lost agents' holds) between passes.

    `scale_down_after` defaults to the configured value when memory is given and
    to 1 (act at once) when it is not, as in --once and the Lambda handler;
    without memory every host filter is counted exactly. With `changes` (an
    event pass) the hosts are counted from the last exact sets with those
    instance changes applied, and no lost agent's hold advances.
    """
    started = time.monotonic()
    report = PassReport(cluster=config.cluster, started_at=time.time())
    if changes is not None:
        report.trigger = "event"
        report.event_time = oldest_time(changes)
    calls_before = api.total_calls
    if scale_down_after is None:
        scale_down_after = config.scale_down_after if memory is not None else 1
    looping = memory is not None
    if memory is None:
        memory = Memory()
    try:
        _observe_and_act(api, config, memory, report, stop, identity, scale_down_after, changes, looping)
    except ShuttingDown:
        report.stopped = True
    finally:
        report.duration = time.monotonic() - started
        report.api_calls = api.total_calls - calls_before
        _log_report(config, report, memory.logged if looping else None)
    return report


def _observe_and_act(
    api: Api,
    config: Config,
    memory: Memory,
    report: PassReport,
    stop: threading.Event | None,
    identity: TaskIdentity | None,
    scale_down_after: int,
    changes: Sequence[InstanceChange] | None = None,
    looping: bool = False,
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

    # Per-service checks that need no host count.
    sized: list[tuple[Service, plan.Sizing]] = []
    for service in managed.services:
        reason = plan.unmanageable(service)
        if reason is not None:
            report.decisions.append(plan.skip(service.name, reason, arn=service.arn, current=service.desired_count))
            continue
        try:
            size = plan.sizing(service.tags)
        except plan.SizingError as error:
            report.decisions.append(plan.skip(service.name, str(error), arn=service.arn, current=service.desired_count))
            continue
        sized.append((service, size))

    if config.cloudformation_guard:
        sized = _cloudformation_guard(api, sized, report)

    host_filters = {service.arn: tuple(service.member_of) for service, _ in sized}
    counts: dict[tuple[str, ...], HostCount] = {}
    counted: dict[tuple[str, ...], Counted] = {}
    try:
        if changes is not None:
            counted = memory.hosts.apply(api, config.cluster, host_filters.values(), changes)
        elif sized:  # with no service to size, keep the counts of the last pass that had some
            counted = memory.hosts.count(api, config.cluster, host_filters.values())
    except ClusterNotFound as error:
        report.cluster_missing = True
        report.errors.append(f"cluster not found: {error}")
    except EcsError as error:
        report.errors.append(f"counting hosts failed: {error}")

    def take(results: dict[tuple[str, ...], Counted]) -> None:
        for member_of, result in results.items():
            expression = host_filter(member_of)
            report.hosts[expression] = result.count.usable
            report.active_hosts[expression] = result.count.active
            report.counting[expression] = "exact" if result.exact else ("event" if changes is not None else "cheap")
            counts[member_of] = result.count

    def skip_all() -> None:
        # Never size anything from a partial count.
        for service, _ in sized:
            report.decisions.append(
                plan.skip(service.name, "host count failed", arn=service.arn, current=service.desired_count)
            )

    if report.errors:
        skip_all()
        return
    take(counted)

    def plan_all(only: set[tuple[str, ...]] | None = None) -> dict[str, plan.Decision]:
        decided: dict[str, plan.Decision] = {}
        for service, size in sized:
            member_of = host_filters[service.arn]
            if only is not None and member_of not in only:
                continue
            held, held_passes = memory.hosts.held(member_of, scale_down_after)
            hosts = dataclasses.replace(counts[member_of], held=held, held_passes=held_passes)
            decided[service.arn] = plan.decide(
                service, hosts, size, dry_run=config.dry_run, scale_down_after=scale_down_after
            )
        return decided

    planned = plan_all()
    # A stale reading may decide, but never write: count those filters exactly first, then decide again.
    stale = {f for f, result in counted.items() if result.stale}
    recount = {host_filters[arn] for arn, decision in planned.items() if decision.writes} & stale
    if recount:
        try:
            recounted = memory.hosts.recount(api, config.cluster, recount)
        except EcsError as error:
            report.errors.append(f"counting hosts failed: {error}")
            skip_all()
            return
        take(recounted)
        planned.update(plan_all(recount))

    for service, _ in sized:
        decision = planned[service.arn]
        if decision.writes:
            decision = _apply(api, config, decision, stop, report)
        report.decisions.append(decision)

    if looping:  # coverage needs the gap history the loop keeps; --once and the Lambda handler only size
        exact = {f for f, result in counted.items() if result.exact} | (recount if recount else set())
        _read_coverage(api, config, memory, report, sized, host_filters, exact)


def _read_coverage(
    api: Api,
    config: Config,
    memory: Memory,
    report: PassReport,
    sized: Sequence[tuple[Service, plan.Sizing]],
    host_filters: dict[str, tuple[str, ...]],
    exact: set[tuple[str, ...]],
) -> None:
    """Read the coverage of the services whose host filter was counted exactly in this pass, after sizing.

    At most coverage.CALLS_PER_PASS calls' worth of services per pass, those
    read longest ago first (GapWatch.due); the others wait for the next exact
    count. A failed read is logged and recorded for that service, and ends the
    pass's coverage reads (the rest wait for the next exact count), so a failing
    API never stretches the pass; sizing is already done by then.
    """
    hosts = {f: found for f in exact if (found := coverage.eligible_hosts(memory, f)) is not None}
    now, clock = time.time(), time.monotonic()
    readable = {
        service.name: coverage.read_cost(len(hosts[host_filters[service.arn]][0]), size.tasks_per_host)
        for service, size in sized
        if host_filters[service.arn] in hosts
    }
    order = memory.coverage.due(readable)  # read longest ago first, within the pass's share of the API budget
    due = set(order)
    by_name = {service.name: (service, size) for service, size in sized}
    for name in order:
        service, size = by_name[name]
        eligible, ineligible = hosts[host_filters[service.arn]]
        memory.coverage.last_read[service.name] = clock
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
    if hosts:
        misplaced = {h.container_instance_arn for c in report.coverage.values() for h in c.misplaced}
        memory.coverage.keep_left(misplaced, set().union(*(eligible for eligible, _ in hosts.values())))
        memory.coverage.forget({service.name for service, _ in sized})


def _cloudformation_guard(
    api: Api, sized: Iterable[tuple[Service, plan.Sizing]], report: PassReport
) -> list[tuple[Service, plan.Sizing]]:
    """Leave alone services whose CloudFormation stack is mid-operation (one DescribeStacks per stack)."""
    statuses: dict[str, str | None | EcsError] = {}
    kept: list[tuple[Service, plan.Sizing]] = []
    for service, size in sized:
        stack = service.tags.get(plan.STACK_NAME_TAG)
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
                    arn=service.arn,
                    current=service.desired_count,
                )
            )
        elif status is not None and status.endswith("_IN_PROGRESS"):
            report.decisions.append(
                plan.skip(
                    service.name,
                    f"cloudformation stack {stack} is {status}",
                    arn=service.arn,
                    current=service.desired_count,
                    error=False,
                )
            )
        else:
            kept.append((service, size))
    return kept


def _apply(
    api: Api, config: Config, decision: plan.Decision, stop: threading.Event | None, report: PassReport
) -> plan.Decision:
    """Make the update a decision asks for; a refused update becomes a skip for that service only."""
    if stop is not None and stop.is_set():
        report.stopped = True
        return dataclasses.replace(decision, action=plan.SKIP, reason="shutting down before update")
    assert decision.service_arn is not None and decision.target is not None
    try:
        api.set_desired_count(config.cluster, decision.service_arn, decision.target)
    except EcsError as error:
        return dataclasses.replace(decision, action=plan.SKIP, reason=f"update failed: {error}", error=True)
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
        ok=report.ok,
    )
