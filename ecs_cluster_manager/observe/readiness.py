"""Readiness state: which hosts run each managed service's task, and which hosts have the ready attribute.

Written only by the loop's thread. A coverage reading replaces a service's
tasks (it is the full list, a snapshot); an ECS Task State Change event
updates one task when it is newer (`version`) than what is known of it. An
event saying a task is RUNNING is only a hint, since events come late and out
of order (the task may have stopped since): the pass that follows describes
that task (`unconfirmed`, DescribeTasks) before its host can be made ready, so
a daemon task that reaches RUNNING makes its host ready within that pass.
`marked` is what ECS has: read with ListAttributes at start and at least every
RESYNC, and updated by every write that succeeded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ecs_cluster_manager.model.coverage import RUNNING, Coverage
from ecs_cluster_manager.model.models import Task
from ecs_cluster_manager.model.readiness import running_hosts, unwanted_hosts

# The task events of the services a pass does not manage (yet) are kept for this many tasks at most.
MAX_TASKS = 50_000


@dataclass(frozen=True)
class TaskChange:
    """One task as an ECS Task State Change event described it."""

    task_arn: str
    cluster_arn: str
    group: str  # `service:NAME` for a service's task
    container_instance_arn: str | None
    last_status: str
    desired_status: str
    version: int
    time: float | None = None  # the event's `time`, as a Unix timestamp
    arrived: float = 0.0  # when the source received it (the store's clock)

    @property
    def service(self) -> str | None:
        """The name of the service the task belongs to, or None for a task of no service."""
        prefix, _, name = self.group.partition(":")
        return name if prefix == "service" and name else None


@dataclass
class ReadyWatch:
    """Per managed service, its tasks (by ARN) as last read or reported; the hosts that have the attribute."""

    tasks: dict[str, dict[str, Task]] = field(default_factory=dict)  # service -> task ARN -> the task as last known
    unwanted: dict[str, frozenset[str]] = field(default_factory=dict)  # service -> hosts its tags leave empty
    marked: set[str] | None = None  # hosts with the attribute; None: not read from ECS yet
    marked_at: float | None = None  # store clock: when `marked` was last read in full
    active_before: set[str] = field(default_factory=set)  # hosts the store had ACTIVE at the last decision
    unconfirmed: dict[str, str] = field(default_factory=dict)  # task ARN -> service: reported RUNNING, not read yet
    would: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())  # a dry run's last (puts, deletes), as logged
    task_stopped: bool = False  # a task event said a RUNNING task of a managed service stopped (the loop resets it)

    def read(self, coverage: Coverage, tasks: Iterable[Task], eligible: Iterable[str]) -> None:
        """Take in a coverage reading: the service's tasks (replacing what was known) and the hosts it leaves empty."""
        # The reading is newer than every event taken in before it: it replaces them.
        self.tasks[coverage.service] = {task.arn: task for task in tasks}
        self.unwanted[coverage.service] = unwanted_hosts(coverage, eligible, self.running(coverage.service))

    def observe_task(self, change: TaskChange) -> bool:
        """Take in a task event of a service read before; True when it makes a host newly run the service's task."""
        service = change.service
        if service is None or service not in self.tasks:
            return False
        known = self.tasks[service]
        before = known.get(change.task_arn)
        if before is not None and before.version is not None and change.version <= before.version:
            return False
        if sum(len(t) for t in self.tasks.values()) >= MAX_TASKS and before is None:
            return False
        if change.last_status == RUNNING and change.desired_status == RUNNING:
            if change.container_instance_arn is None or change.container_instance_arn in self.running(service):
                return False
            if change.task_arn in self.unconfirmed:
                return False
            self.unconfirmed[change.task_arn] = service
            return True
        # A task on its way out (or not started yet): taking it in can only make a host wait, never ready.
        if before is not None and before.last_status == RUNNING and before.desired_status == RUNNING:
            self.task_stopped = True
        known[change.task_arn] = Task(
            change.task_arn,
            change.container_instance_arn,
            change.last_status,
            before.task_definition_arn if before is not None else "",
            desired_status=change.desired_status,
            version=change.version,
        )
        self.unconfirmed.pop(change.task_arn, None)
        return False

    def confirm(self, described: Iterable[Task]) -> None:
        """Take in the description of the unconfirmed tasks: a task ECS no longer returns is gone."""
        found = {task.arn: task for task in described}
        for arn, service in self.unconfirmed.items():
            known = self.tasks.get(service)
            if known is None:
                continue
            task = found.get(arn)
            if task is None:
                known.pop(arn, None)
            else:
                known[arn] = task
        self.unconfirmed = {}

    def running(self, service: str) -> frozenset[str]:
        """The hosts with a RUNNING task of the service that is meant to keep running."""
        return running_hosts(self.tasks.get(service, {}).values())

    def was_read(self, service: str) -> bool:
        return service in self.tasks

    def forget(self, services: Iterable[str]) -> None:
        """Keep only the services managed now."""
        keep = set(services)
        for kept in (self.tasks, self.unwanted):
            for name in [name for name in kept if name not in keep]:
                del kept[name]
        self.unconfirmed = {arn: service for arn, service in self.unconfirmed.items() if service in keep}
