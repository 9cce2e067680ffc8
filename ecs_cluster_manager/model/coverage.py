"""A managed service's coverage, as a DaemonSet's status shows it: which hosts lack their task.

Pure: no I/O, no clock. The reading is engine/coverage.py; the gap history, observe/gaps.py.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ecs_cluster_manager.model.models import Task

RUNNING = "RUNNING"
# A task on its way to RUNNING: the host is `pending`, not `missing`.
STARTING = frozenset({"PROVISIONING", "PENDING", "ACTIVATING"})
# The calls one pass may spend on coverage reads: half the burst of ECS's cluster resource read bucket
# (100, 20/s), which host counting and every other tool of the account share. Services beyond it are read
# at the next exact counts, those read longest ago first; the first read of a pass is always made.
COVERAGE_CALLS_PER_PASS = 50
PAGE = 100  # ListTasks' page and DescribeTasks' batch


def read_cost(eligible: int, tasks_per_host: int = 1) -> int:
    """The calls one coverage read is expected to make: ListTasks pages, DescribeTasks calls, one lookup."""
    tasks = max(1, eligible * max(1, tasks_per_host))
    return 2 * -(-tasks // PAGE) + 1


@dataclass(frozen=True)
class CoveredHost:
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
    pending: tuple[CoveredHost, ...] = ()
    missing: tuple[CoveredHost, ...] = ()
    extra: tuple[CoveredHost, ...] = ()
    misplaced: tuple[CoveredHost, ...] = ()
    outdated: tuple[CoveredHost, ...] = ()
    reason: str | None = None
    read_at: float | None = None
    wanted: int | None = None  # None: every eligible host
    # The tasks it was computed from (RUNNING or starting, on a host): readiness takes them in.
    tasks: tuple[Task, ...] = field(default=(), repr=False, compare=False)

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

    def host(arn: str) -> CoveredHost:
        return CoveredHost(arn, ec2_ids.get(arn))

    eligible_set = set(eligible)
    ineligible_set = set(ineligible) - eligible_set
    running: dict[str, int] = {}
    starting: dict[str, int] = {}
    misplaced: list[CoveredHost] = []
    outdated: list[CoveredHost] = []
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
        tasks=tuple(t for t in tasks if t.container_instance_arn and t.last_status in STARTING | {RUNNING}),
    )
