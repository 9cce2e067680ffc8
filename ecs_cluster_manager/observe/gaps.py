"""The gap watch: per service and host, since when the host has been missing its task; logs each gap once."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import structlog

from ecs_cluster_manager.model.coverage import COVERAGE_CALLS_PER_PASS, Coverage
from ecs_cluster_manager.model.models import Service

log = structlog.get_logger(__name__)

@dataclass
class _Gap:
    since: float  # monotonic time the host was first seen missing its task
    warned: bool = False


@dataclass
class GapWatch:
    """Per service and host, since when the host has been missing its task; logs each gap once.

    `left` keeps the hosts that were eligible at an earlier reading and no
    longer are, while a task of some service still runs on them, so a task
    left behind on a drained host shows as misplaced.
    """

    gaps: dict[tuple[str, str], _Gap] = field(default_factory=dict)
    last_read: dict[str, float] = field(default_factory=dict)  # service -> monotonic time of its last reading
    eligible_before: dict[tuple[str, ...], frozenset[str]] = field(default_factory=dict)
    left: set[str] = field(default_factory=set)
    read_eligible: dict[str, frozenset[str]] = field(default_factory=dict)  # service -> eligible hosts at its reading
    starting: set[str] = field(default_factory=set)  # services with a task starting on a host at their last reading
    # service -> its (runningCount, pendingCount) when it was last read: a change means its tasks changed.
    read_counts: dict[str, tuple[int, int]] = field(default_factory=dict)

    def worth_reading(
        self, service: Service, eligible: frozenset[str], now: float, every: float, grace: float
    ) -> bool:
        """Whether a service's coverage may have changed since its last reading, or is due again after `every` s.

        While a gap is open it is read again every quarter of the grace, so the gap is reported (or found
        closed) within about a quarter of COVERAGE_GRACE of the moment it should be, at a bounded cost.
        A service with a task starting at its last reading, or whose runningCount or pendingCount
        changed since, is read again, so the pass after a task reaches RUNNING sees it (readiness
        follows from it).
        """
        last = self.last_read.get(service.name)
        return (
            last is None
            or now - last >= every
            or (any(key[0] == service.name for key in self.gaps) and now - last >= grace / 4)
            or self.read_eligible.get(service.name) != eligible
            or service.running_count != service.desired_count
            or service.pending_count > 0
            or service.name in self.starting
            or self.read_counts.get(service.name) != (service.running_count, service.pending_count)
        )

    def saw_eligible(self, host_filter: tuple[str, ...], eligible: frozenset[str]) -> None:
        """Note a filter's eligible hosts at this reading; the ones that dropped out join `left`."""
        before = self.eligible_before.get(host_filter)
        if before is not None:
            self.left |= before - eligible
        self.eligible_before[host_filter] = eligible

    def keep_left(self, hosts_with_tasks: Collection[str], eligible_now: Collection[str]) -> None:
        """Forget the hosts that left and run no task any more (or are eligible again)."""
        self.left = {arn for arn in self.left if arn in hosts_with_tasks and arn not in eligible_now}

    def observe(
        self, cluster: str, coverage: Coverage, eligible: Collection[str], now: float, grace: float
    ) -> list[str]:
        """Take in one service's coverage; returns the hosts that just passed the grace (logged as coverage_gap).

        A host whose task is starting keeps its gap open; one that is covered
        again ends it (`coverage_restored`, when it was reported); one that is
        no longer eligible ends it silently.
        """
        service = coverage.service
        if coverage.pending:
            self.starting.add(service)
        else:
            self.starting.discard(service)
        missing = {host.container_instance_arn: host for host in coverage.missing}
        starting = {host.container_instance_arn for host in coverage.pending}
        overdue: list[str] = []
        for arn, host in missing.items():
            gap = self.gaps.setdefault((service, arn), _Gap(now))
            if not gap.warned and now - gap.since >= grace:
                gap.warned = True
                overdue.append(arn)
                log.warning(
                    "coverage_gap",
                    cluster=cluster,
                    service=service,
                    containerInstanceArn=arn,
                    ec2InstanceId=host.ec2_instance_id,
                    missing_for=round(now - gap.since, 1),
                    reason=coverage.reason,
                )
        eligible_set = set(eligible)
        for key in [key for key in self.gaps if key[0] == service and key[1] not in missing]:
            arn = key[1]
            if arn in starting and arn in eligible_set:
                continue
            gap = self.gaps.pop(key)
            if gap.warned and arn in eligible_set:
                log.info(
                    "coverage_restored",
                    cluster=cluster,
                    service=service,
                    containerInstanceArn=arn,
                    missing_for=round(now - gap.since, 1),
                )
        return overdue

    def due(self, costs: Mapping[str, int], budget: int = COVERAGE_CALLS_PER_PASS) -> list[str]:
        """The services to read in this pass: those read longest ago (never first), within `budget` calls.

        The first is always included, so a service whose read alone exceeds the budget is still read.
        """
        chosen: list[str] = []
        spent = 0
        for service in sorted(costs, key=lambda name: (self.last_read.get(name, float("-inf")), name)):
            if chosen and spent + costs[service] > budget:
                break
            chosen.append(service)
            spent += costs[service]
        return chosen

    def forget(self, services: Collection[str]) -> None:
        """Drop the gaps, reading times and eligible hosts at reading of services no longer managed."""
        for key in [key for key in self.gaps if key[0] not in services]:
            del self.gaps[key]
        for kept in (self.last_read, self.read_eligible, self.read_counts):
            for service in [name for name in kept if name not in services]:
                del kept[service]
        self.starting &= set(services)
