"""Room made on a full host: stop the fewest preemptible tasks there so a make-room daemon's task fits.

The loop runs `make_room` after coverage, for the managed services tagged
`ecs-cluster-manager:make-room=true` whose task an eligible host has been
missing for longer than COVERAGE_GRACE (the gap watch's time) while ECS's
placement failure says the host lacks memory, CPU or a port. For each such
host (at most MAKE_ROOM_MAX a pass, none again within COVERAGE_GRACE of the
last time room was made there) it reads what the daemon's task definition
needs, what the host has left and its tasks, and stops the fewest tasks of
services tagged `ecs-cluster-manager:preemptible=true` that free enough
(model/room.py chooses). ECS's service scheduler then places the daemon's task
there and the stopped tasks where they fit.

Never stopped: a managed service's task, a task of no service, a task of a
service without the preemptible tag. Nothing is stopped when the reason is not
resources (logged once per service and host), when no set of tasks frees enough
(logged once), when any read of the pass failed, or with DRY_RUN (which logs
what it would stop). `plan_host` is also what `check` reports.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import structlog

from ecs_cluster_manager.aws.ecs import EcsError
from ecs_cluster_manager.aws.gateway import PassGateway
from ecs_cluster_manager.config import Config
from ecs_cluster_manager.model import room
from ecs_cluster_manager.model.models import Service, Task
from ecs_cluster_manager.model.report import PassReport
from ecs_cluster_manager.model.room import Candidate, Needs, Room, RoomWatch
from ecs_cluster_manager.observe.memory import Memory

log = structlog.get_logger(__name__)

# How many hosts one pass looks at for room at most (each costs about four reads), however many lack it.
HOSTS_READ_PER_PASS = 10
STOPPING = frozenset({"STOPPED", "DEACTIVATING", "STOPPING", "DEPROVISIONING"})


@dataclass(frozen=True)
class HostPlan:
    """What making room on one host for one service takes: `stop` the tasks to stop, () when the room is there
    already, None when no set of preemptible tasks frees enough."""

    service: str
    container_instance_arn: str
    ec2_instance_id: str | None
    need: Needs
    room: Room
    stop: tuple[Candidate, ...] | None

    def as_log(self) -> dict[str, object]:
        return {
            "containerInstanceArn": self.container_instance_arn,
            "ec2InstanceId": self.ec2_instance_id,
            "tasks": [c.task_arn for c in self.stop or ()],
            "services": sorted({c.service for c in self.stop or ()}),
            "needs": {"cpu": self.need.cpu, "memory": self.need.memory, "ports": sorted(self.need.ports)},
            "remaining": {"cpu": self.room.cpu, "memory": self.room.memory},
        }


def _needs(api: PassGateway, watch: RoomWatch, task_definition: str) -> Needs:
    """A task definition's needs, from the cache (task definitions never change once registered) or one read."""
    found = watch.definitions.get(task_definition)
    if found is None:
        found = api.describe_task_definition(task_definition)
        watch.remember_definition(task_definition, found)
    return found


def _preemptible_services(api: PassGateway, cluster: str, names: Collection[str]) -> set[str]:
    """The names among these services that carry the preemptible tag (DescribeServices, ten a call)."""
    lookup = api.describe_services(cluster, sorted(names))
    return {s.name for s in lookup.services if s.status == "ACTIVE" and room.is_true(s.tags, room.PREEMPTIBLE_TAG)}


def _candidates(
    api: PassGateway, cluster: str, host: str, tasks: Sequence[Task], managed: Collection[str], watch: RoomWatch
) -> list[Candidate]:
    """The tasks on the host that may be stopped: running tasks of preemptible services that are not managed."""
    by_service: dict[str, list[Task]] = {}
    for task in tasks:
        name = room.service_of_group(task.group)
        if name is None or name in managed or task.container_instance_arn != host:
            continue
        if task.desired_status != "RUNNING" or task.last_status in STOPPING:
            continue
        by_service.setdefault(name, []).append(task)
    if not by_service:
        return []
    preemptible = _preemptible_services(api, cluster, by_service)
    return [
        Candidate(task.arn, name, _needs(api, watch, task.task_definition_arn))
        for name, service_tasks in sorted(by_service.items())
        if name in preemptible
        for task in service_tasks
    ]


def plan_host(
    api: PassGateway, cluster: str, service: Service, host: str, managed: Collection[str], watch: RoomWatch
) -> HostPlan | None:
    """Read one host and choose what to stop there for `service`'s task; None when ECS no longer knows the host.

    Reads: DescribeTaskDefinition of the PRIMARY task definition (cached),
    DescribeContainerInstances of the host (its remainingResources), ListTasks
    and DescribeTasks of the host, DescribeServices of its tasks' unmanaged
    services (their tags), DescribeTaskDefinition of theirs (cached). Raises
    EcsError when any read fails.
    """
    if not service.task_definition:
        raise EcsError(f"service {service.name} has no PRIMARY task definition to size the room by")
    need = _needs(api, watch, service.task_definition)
    described = api.describe_container_instances(cluster, [host])
    instance = next((i for i in described if i.arn == host), None)
    if instance is None:
        return None
    if instance.remaining_cpu is None or instance.remaining_memory is None:
        raise EcsError(f"DescribeContainerInstances: no remainingResources for {host}")
    left = Room(instance.remaining_cpu, instance.remaining_memory, instance.ports_in_use)
    arns = api.list_tasks_on_host(cluster, host)
    tasks = api.describe_tasks(cluster, arns) if arns else []
    candidates = _candidates(api, cluster, host, tasks, managed, watch)
    return HostPlan(service.name, host, instance.ec2_instance_id, need, left, room.choose(need, left, candidates))


def _notice(watch: RoomWatch, key: tuple[str, str, str]) -> bool:
    """Whether a notice is new (and note it): each is logged once per service, host and kind while its gap lasts."""
    if key in watch.noticed:
        return False
    watch.noticed.add(key)
    return True


def make_room(
    api: PassGateway,
    config: Config,
    memory: Memory,
    report: PassReport,
    services: Sequence[Service],
    managed: Collection[str],
    now: float,
    stop: threading.Event | None = None,
) -> None:
    """Make room, as the module docstring says, for the make-room services whose coverage this pass read.

    `now` is the pass's time on the gap watch's clock. A failed read ends the
    making of room for this pass (recorded in `report.room_errors`, nothing
    stopped from it); a failed StopTask is logged and recorded for that
    service, and the pass goes on.
    """
    watch = memory.room
    grace = config.coverage_grace
    wanted = {s.name: s for s in services if room.makes_room(s.tags) and s.name in report.coverage}
    gaps: list[room.Gap] = []
    for name, service in wanted.items():
        missing = {h.container_instance_arn for h in report.coverage[name].missing}
        for arn in sorted(missing):
            watched = memory.coverage.gaps.get((name, arn))
            if watched is None:
                continue
            kind = room.resource_reason(service.placement_failure)
            if kind is not None:
                gaps.append(room.Gap(name, arn, watched.since))
            elif now - watched.since >= grace and _notice(watch, (name, arn, "reason")):
                log.warning(
                    "room_not_made",
                    cluster=config.cluster,
                    service=name,
                    containerInstanceArn=arn,
                    reason=service.placement_failure,
                    why="ECS's reason is not a lack of memory, CPU or ports, so stopping tasks would not help: "
                    "fix what it names (a missing attribute, a placement constraint)",
                )
    # Every make-room service's open gaps, read in this pass or not, keep their notices: each is said once.
    makers = {s.name for s in services if room.makes_room(s.tags)}
    open_gaps = [(name, arn) for (name, arn) in memory.coverage.gaps if name in makers]
    watch.keep(open_gaps, now, grace)
    if config.make_room_max <= 0 or not gaps or report.errors or report.coverage_errors:
        return  # nothing to do, or a read of this pass failed: no write from a partial view
    due = room.due(gaps, now, grace, watch.last_made, min(config.make_room_max, HOSTS_READ_PER_PASS))
    for gap in due:
        service = wanted[gap.service]
        try:
            plan = plan_host(api, config.cluster, service, gap.container_instance_arn, managed, watch)
        except EcsError as error:
            report.room_errors[service.name] = str(error)
            log.warning(
                "room_failed",
                cluster=config.cluster,
                service=service.name,
                containerInstanceArn=gap.container_instance_arn,
                error=str(error),
            )
            return
        if plan is None:
            continue
        if plan.stop is None:
            watch.last_made[gap.container_instance_arn] = now
            if _notice(watch, (service.name, gap.container_instance_arn, "nothing")):
                log.warning(
                    "room_not_found",
                    cluster=config.cluster,
                    service=service.name,
                    reason=service.placement_failure,
                    why="no set of tasks of preemptible services on the host frees what the task needs",
                    **plan.as_log(),
                )
            continue
        if not plan.stop:
            watch.last_made[gap.container_instance_arn] = now  # the room is there: ECS gets time to place
            continue
        if config.dry_run:
            watch.last_made[gap.container_instance_arn] = now
            log.warning(
                "room_would_be_made",
                cluster=config.cluster,
                service=service.name,
                reason=service.placement_failure,
                dry_run=True,
                **plan.as_log(),
            )
            continue
        available = api.writes_available()
        if available is not None and available < len(plan.stop):
            continue  # the budget cannot pay for every stop now: the next pass tries again
        if stop is not None and stop.is_set():
            report.stopped = True
            return
        _stop_tasks(api, config, report, service, plan)
        watch.last_made[gap.container_instance_arn] = now


def _stop_tasks(api: PassGateway, config: Config, report: PassReport, service: Service, plan: HostPlan) -> None:
    """StopTask each chosen task; a failure is logged and recorded for the service, and the host's rest wait."""
    stopped: list[Candidate] = []
    for candidate in plan.stop or ():
        try:
            api.stop_task(config.cluster, candidate.task_arn, room.STOP_REASON.format(service=service.name))
        except EcsError as error:
            report.room_errors[service.name] = f"StopTask {candidate.task_arn} failed: {error}"
            log.error(
                "room_stop_failed",
                cluster=config.cluster,
                service=service.name,
                containerInstanceArn=plan.container_instance_arn,
                task=candidate.task_arn,
                task_service=candidate.service,
                error=str(error),
            )
            break
        stopped.append(candidate)
        report.preempted.append(
            room.Preemption(candidate.task_arn, candidate.service, service.name, plan.container_instance_arn)
        )
    if stopped:
        fields = plan.as_log()
        fields["tasks"] = [c.task_arn for c in stopped]
        fields["services"] = sorted({c.service for c in stopped})
        log.warning(
            "room_made", cluster=config.cluster, service=service.name, reason=service.placement_failure, **fields
        )
