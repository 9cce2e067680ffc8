"""Which hosts lack their task: a managed service's coverage, as a DaemonSet's status shows it.

`compute` is pure: from the eligible hosts, the service's tasks, its PRIMARY
task definition and its newest placement failure it says which eligible hosts
run the service's task (`covered`), have one starting (`pending`) or none
(`missing`), which hosts run more than their share (`extra`), which tasks run
on hosts that are not eligible (`misplaced`) and which run an older task
definition (`outdated`). `read` fetches what it needs through ecs.Api.
`GapWatch` turns coverage after coverage into one `coverage_gap` warning per
host missing its task for longer than COVERAGE_GRACE, and one
`coverage_restored` when it has it again.

The manager never stops or moves a task: coverage only reports.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from . import plan
from .models import Service, Task

if TYPE_CHECKING:
    from .ecs import Api
    from .reconcile import Memory

log = structlog.get_logger(__name__)

RUNNING = "RUNNING"
# A task on its way to RUNNING: the host is `pending`, not `missing`.
STARTING = frozenset({"PROVISIONING", "PENDING", "ACTIVATING"})
# How many hosts one coverage read looks up for their EC2 ids: one DescribeContainerInstances call.
DESCRIBED_HOSTS = 100
# The calls one pass may spend on coverage reads: half the burst of ECS's cluster resource read bucket
# (100, 20/s), which host counting and every other tool of the account share. Services beyond it are read
# at the next exact counts, those read longest ago first; the first read of a pass is always made.
CALLS_PER_PASS = 50
PAGE = 100  # ListTasks' page and DescribeTasks' batch


def read_cost(eligible: int, tasks_per_host: int = 1) -> int:
    """The calls one coverage read is expected to make: ListTasks pages, DescribeTasks calls, one lookup."""
    tasks = max(1, eligible * max(1, tasks_per_host))
    return 2 * -(-tasks // PAGE) + 1


@dataclass(frozen=True)
class Host:
    """A container instance as coverage names it: its ARN and, when looked up, its EC2 instance id."""

    container_instance_arn: str
    ec2_instance_id: str | None = None

    def as_json(self) -> dict[str, str | None]:
        return {"containerInstanceArn": self.container_instance_arn, "ec2InstanceId": self.ec2_instance_id}


@dataclass(frozen=True)
class Coverage:
    """One service's coverage at one reading (`read_at`, Unix time).

    `eligible` and `covered` are host counts; `wanted` is how many of the
    eligible hosts the sizing tags ask to run a task (all of them unless
    `ecs-cluster-manager:max` or `:min` says otherwise); `pending`, `missing` and
    `extra` list hosts; `misplaced` and `outdated` list one entry per task, by
    its host. `reason` is the service's newest placement failure while a host is missing.
    """

    service: str
    eligible: int
    covered: int
    pending: tuple[Host, ...] = ()
    missing: tuple[Host, ...] = ()
    extra: tuple[Host, ...] = ()
    misplaced: tuple[Host, ...] = ()
    outdated: tuple[Host, ...] = ()
    reason: str | None = None
    read_at: float | None = None
    wanted: int | None = None  # None: every eligible host

    @property
    def complete(self) -> bool:
        """Every wanted host runs the service's task, and nothing runs where it should not."""
        wanted = self.eligible if self.wanted is None else self.wanted
        return self.covered >= wanted and not (self.extra or self.misplaced or self.outdated)

    def as_json(self) -> dict[str, Any]:
        return {
            "eligible": self.eligible,
            "wanted": self.eligible if self.wanted is None else self.wanted,
            "covered": self.covered,
            "pending": [host.as_json() for host in self.pending],
            "missing": [host.as_json() for host in self.missing],
            "extra": [host.as_json() for host in self.extra],
            "misplaced": [host.as_json() for host in self.misplaced],
            "outdated": [host.as_json() for host in self.outdated],
            "reason": self.reason,
            "readAt": self.read_at,
        }


def compute(
    service: str,
    eligible: Collection[str],
    tasks: Iterable[Task],
    *,
    primary_task_definition: str | None = None,
    placement_failure: str | None = None,
    ineligible: Collection[str] = (),
    tasks_per_host: int = 1,
    target: int | None = None,
    ec2_ids: Mapping[str, str] | None = None,
    read_at: float | None = None,
) -> Coverage:
    """The coverage of one service. Pure: no I/O, no clock.

    `target`: the tasks its sizing asks for (plan.Sizing.target of the eligible
    hosts; None: a share on every eligible host). Hosts beyond it are not
    missing: with `ecs-cluster-manager:max` 2 on 6 hosts, two hosts with a task
    leave none missing. Of the hosts without a task, only as many as the target
    still asks for count as `missing` (the first by ARN).

    `eligible`: ARNs of the hosts that should run the service; `ineligible`: ARNs
    of hosts known not to (draining, outside the filter, agent lost), the only
    ones whose tasks count as misplaced (a host in neither set is one the
    caller has not seen yet). Tasks that are neither RUNNING nor starting
    (stopping, stopped) and tasks on no host are left out. `outdated` is empty
    when the PRIMARY task definition is unknown.
    """
    ec2_ids = ec2_ids or {}

    def host(arn: str) -> Host:
        return Host(arn, ec2_ids.get(arn))

    eligible_set = set(eligible)
    ineligible_set = set(ineligible) - eligible_set
    running: dict[str, int] = {}
    starting: dict[str, int] = {}
    misplaced: list[Host] = []
    outdated: list[Host] = []
    for task in sorted(tasks, key=lambda t: (t.container_instance_arn or "", t.arn)):
        arn = task.container_instance_arn
        if not arn or task.last_status not in STARTING | {RUNNING}:
            continue
        bucket = running if task.last_status == RUNNING else starting
        bucket[arn] = bucket.get(arn, 0) + 1
        if arn in ineligible_set:
            misplaced.append(host(arn))
        if primary_task_definition and task.task_definition_arn != primary_task_definition:
            outdated.append(host(arn))
    ordered = sorted(eligible_set)
    covered = [arn for arn in ordered if running.get(arn)]
    pending = [arn for arn in ordered if not running.get(arn) and starting.get(arn)]
    missing = [arn for arn in ordered if not running.get(arn) and not starting.get(arn)]
    wanted = len(ordered) if target is None else min(len(ordered), -(-max(0, target) // max(1, tasks_per_host)))
    missing = missing[: max(0, wanted - len(covered) - len(pending))]
    on_host = {arn: running.get(arn, 0) + starting.get(arn, 0) for arn in {*running, *starting}}
    extra = sorted(arn for arn, count in on_host.items() if count > max(1, tasks_per_host))
    return Coverage(
        service=service,
        eligible=len(eligible_set),
        covered=len(covered),
        pending=tuple(host(arn) for arn in pending),
        missing=tuple(host(arn) for arn in missing),
        extra=tuple(host(arn) for arn in extra),
        misplaced=tuple(misplaced),
        outdated=tuple(outdated),
        reason=placement_failure if missing else None,
        read_at=read_at,
        wanted=None if target is None else wanted,
    )


def read(
    api: Api,
    cluster: str,
    service: Service,
    eligible: Collection[str],
    *,
    ineligible: Collection[str] = (),
    tasks_per_host: int = 1,
    now: float | None = None,
) -> Coverage:
    """Read one service's tasks (ListTasks, 100 a page; DescribeTasks, 100 a call) and compute its coverage.

    The EC2 ids of the missing, extra and misplaced hosts come from one
    DescribeContainerInstances call (at most DESCRIBED_HOSTS hosts, missing
    ones first); the others keep `ec2InstanceId` null. The hosts wanted follow
    the service's sizing tags (`compute`'s `target`). Raises EcsError when a
    read fails: no partial coverage is returned.
    """
    try:
        target: int | None = plan.sizing(service.tags).target(len(set(eligible)))
    except plan.SizingError:  # not sized at all: every eligible host is wanted
        target = None
    arns = api.list_tasks(cluster, service.name)
    tasks = api.describe_tasks(cluster, arns) if arns else []
    # The same computation twice: first to learn which hosts to name, then with their EC2 ids.
    measure = functools.partial(
        compute,
        service.name,
        eligible,
        tasks,
        primary_task_definition=service.task_definition,
        placement_failure=service.placement_failure,
        ineligible=ineligible,
        tasks_per_host=tasks_per_host,
        target=target,
        read_at=now,
    )
    first = measure()
    wanted = list(dict.fromkeys(h.container_instance_arn for h in (*first.missing, *first.extra, *first.misplaced)))
    if not wanted:
        return first
    described = api.describe_container_instances(cluster, wanted[:DESCRIBED_HOSTS])
    ec2_ids = {instance.arn: instance.ec2_instance_id for instance in described if instance.ec2_instance_id}
    return measure(ec2_ids=ec2_ids)


def eligible_hosts(memory: Memory, host_filter: tuple[str, ...]) -> tuple[frozenset[str], frozenset[str]] | None:
    """(eligible, ineligible) host ARNs of a host filter, as the host store has them after an exact count.

    The one place coverage takes the host state from; call it once per exact
    count of the filter. Eligible: the filter's usable hosts. Ineligible: every
    other host the store knows (other filters' hosts, hosts whose agent is lost,
    drained ones it has not forgotten yet), plus the hosts that were eligible at
    an earlier count and are not now (drained, deregistered) while a task is left
    on them (`GapWatch.left`). None when the filter has no exact count yet.
    """
    if host_filter not in memory.store.filters:
        return None
    # Only the filters the store still counts (those of the managed services) keep their earlier reading.
    for stale in [f for f in memory.coverage.eligible_before if f not in memory.store.filters]:
        del memory.coverage.eligible_before[stale]
    eligible = memory.store.usable(host_filter)
    memory.coverage.saw_eligible(host_filter, eligible)
    known: set[str] = set(memory.coverage.left) | set(memory.store.hosts)
    return eligible, frozenset(known - eligible)


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

    def worth_reading(
        self, service: Service, eligible: frozenset[str], now: float, every: float, grace: float
    ) -> bool:
        """Whether a service's coverage may have changed since its last reading, or is due again after `every` s.

        While a gap is open it is read again every quarter of the grace, so the gap is reported (or found
        closed) within about a quarter of COVERAGE_GRACE of the moment it should be, at a bounded cost.
        """
        last = self.last_read.get(service.name)
        return (
            last is None
            or now - last >= every
            or (any(key[0] == service.name for key in self.gaps) and now - last >= grace / 4)
            or self.read_eligible.get(service.name) != eligible
            or service.running_count != service.desired_count
            or service.pending_count > 0
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

    def due(self, costs: Mapping[str, int], budget: int = CALLS_PER_PASS) -> list[str]:
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
        for kept in (self.last_read, self.read_eligible):
            for service in [name for name in kept if name not in services]:
                del kept[service]
