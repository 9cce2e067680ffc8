"""The service scheduler moto lacks: services place their tasks on the cluster's container instances.

moto's services never start a task. With scheduling on (``LocalECS(schedule=True)``,
or ``local.scheduler.enabled = True``), each ACTIVE REPLICA service on EC2 is
brought to its desiredCount as ECS's service scheduler would:

- a task goes on an ACTIVE host whose agent is connected, that satisfies the
  service's ``memberOf`` constraints, has no task of the service yet when it
  has ``distinctInstance``, and has the CPU and memory (and host ports) the task
  definition needs left; among those, the host with the fewest tasks of the
  service (spread by instance);
- when no host can take a task, the service gets ECS's event ("service NAME
  was unable to place a task because no container instance met all of its
  requirements. The closest matching container-instance ID has insufficient
  memory available. ..."), and when every task is placed "has reached a
  steady state";
- tasks leave a host that is deregistered, and (unless ``hold_stops``) one that
  drains; tasks of an older task definition are replaced, and tasks above the
  desiredCount stopped, those on surplus or ineligible hosts first;
- ``hold_stops = True`` stops nothing but tasks of deregistered hosts, as a
  deployment waiting on its minimum healthy percent does: old tasks stay
  outdated, a drained host keeps its task (misplaced).

Services with tasks to place are placed oldest need first: those that could
not place every task at an earlier run, in the order they began waiting, then
the rest in creation order. ECS documents no order between services; its
scheduler works through pending tasks as they queue up, and a task that could
not be placed stays in the queue, so a service that has waited for room is not
overtaken by a task that has just been stopped. This is what lets a task
stopped to make room for another service's (preemption) go elsewhere instead
of retaking the room it left: the service it was stopped for has been waiting
since its task did not fit, the stopped task's service only since the stop.

``memberOf`` takes the cluster query language, ``task:group`` included: a
host's groups are those of its tasks, the ones placed earlier in the same run
too.

Scheduling is lazy: it runs before an ECS read (Describe*, List*) of a cluster,
and only when something changed since the last run (any ECS write, or a
LocalECS helper that changes hosts or resources), so a converged cluster costs
nothing per request, at 5,000 hosts too. Tasks it starts are RUNNING at once
and stay RUNNING (moto's task state manager does not move them on), and their
placements publish no container instance state-change event. Everything runs
with the moto lock held.

With ``start_after`` (seconds; the ``LocalECS(start_after=...)`` option) it
acts as ECS does without being asked: a background thread also runs it on
every cluster as soon as something changed, and a task it places is PENDING
(its resources taken) for that long before it is RUNNING, as a real task
waits for its image and containers. A raised desiredCount then gets its task,
and its task events (PENDING, then RUNNING), while nobody reads the cluster,
and a read just after the change does not find the task RUNNING yet.

A task stopped with StopTask (a service's or any other) is STOPPED at once,
with the request's ``reason`` as its stoppedReason; the service's scheduler
then starts a task again where one fits (CPU, memory, ports, constraints), as
ECS's does, while a task of no service (RunTask, StartTask) is not restarted.
With task events enabled (``enable_events(cluster, task_events=True)``), each
task the scheduler starts or stops is an "ECS Task State Change" event,
published by ``publish_events`` once the lock is released.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .querylang import Expr, QuerySyntaxError, parse

if TYPE_CHECKING:
    from .server import LocalECS

MAX_EVENTS = 100  # ECS keeps a service's last 100 events
MAX_RETRIES = 3  # rounds a run gives the services still waiting after the others placed tasks
TROUBLESHOOTING = "For more information, see the Troubleshooting section of the Amazon ECS Developer Guide."
STEADY_STATE = "service {name} has reached a steady state."
UNABLE = "service {name} was unable to place a task because no container instance met all of its requirements."


def _id(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def _remaining(instance: Any, name: str) -> Any:
    for resource in instance.remaining_resources:
        if resource.get("name") == name:
            return resource.get("stringSetValue") if name == "PORTS" else resource.get("integerValue", 0)
    return [] if name == "PORTS" else 0


class Scheduler:
    """Places and stops the tasks of a LocalECS's services; see the module docstring."""

    def __init__(self, owner: LocalECS, *, enabled: bool = False) -> None:
        self.owner = owner
        self.enabled = enabled
        self.hold_stops = False
        self._generation = 0
        self._scheduled: dict[str, int] = {}  # cluster name -> generation it was last scheduled at
        self._pending_events: list[Any] = []  # task state-change events waiting for publish_events()
        # Service ARN -> time.monotonic() of the first run that left it short of its desiredCount.
        self._waiting: dict[str, float] = {}
        self._started = 0  # tasks started, ever: tells a run whether a round placed anything
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.start_after = 0.0  # seconds a placed task is PENDING before it is RUNNING (0: RUNNING at once)
        self._starting: dict[str, tuple[float, Any]] = {}  # task ARN -> (time.monotonic() it runs at, task)

    def changed(self) -> None:
        """Something that may move tasks changed: the next read (or the background thread) schedules again."""
        self._generation += 1
        self._wake.set()

    def reset(self, enabled: bool) -> None:
        self.enabled = enabled
        self.hold_stops = False
        self._scheduled.clear()
        self._pending_events.clear()
        self._waiting.clear()
        self._starting.clear()
        self.changed()

    # -- placing without being asked ------------------------------------------------

    def start_background(self, start_after: float) -> None:
        """Schedule every cluster from a thread after each change, tasks RUNNING `start_after` s after placement."""
        if self._thread is not None:
            return
        self.start_after = start_after
        self._stopping.clear()
        self._thread = threading.Thread(target=self._background, name="localecs-scheduler", daemon=True)
        self._thread.start()

    def stop_background(self) -> None:
        if self._thread is None:
            return
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self._thread = None
        self.start_after = 0.0

    def _background(self) -> None:
        while not self._stopping.is_set():
            with self.owner._moto_lock:  # _start adds to _starting under it
                due = min((at for at, _ in self._starting.values()), default=None)
            self._wake.wait(None if due is None else max(0.0, due - time.monotonic()))
            if self._stopping.is_set():
                return
            if self._wake.is_set():
                self._wake.clear()
                time.sleep(0.01)  # the changes made together are scheduled together
            if not self.enabled:
                continue
            try:
                backend, _ = self.owner._backends()
                with self.owner._moto_lock:
                    self._run_started(time.monotonic())
                    for name in list(backend.clusters):
                        self.run(backend, name)
                self.publish_events()
            except Exception:  # noqa: BLE001  # the server is being reset or stopped: the next change runs again
                continue

    def _run_started(self, now: float) -> None:
        """PENDING tasks whose time has come are RUNNING (their task event follows); call with the moto lock."""
        for arn, (at, task) in list(self._starting.items()):
            if at > now:
                continue
            del self._starting[arn]
            if task.desired_status == "RUNNING" and task.last_status == "PENDING":
                task.last_status = "RUNNING"
                task.started_at = datetime.now(UTC)
                self._task_changed(task)
                self.changed()  # the services' runningCount

    def publish_events(self) -> None:
        """Publish the task state-change events of the tasks started and stopped so far.

        Call it after releasing the moto lock (``run`` holds it, and so only
        collects them).
        """
        pending, self._pending_events = self._pending_events, []
        self.owner.events.publish(pending)

    def _task_changed(self, task: Any) -> None:
        if self.owner.events.task_events_active:
            self._pending_events.append(self.owner.events.capture_task(task))

    def run(self, backend: Any, cluster: str) -> None:
        """Bring every scheduled service of the cluster to its desiredCount, if anything changed since the last run."""
        cluster_name = cluster.split("/")[-1]
        if not self.enabled or self._scheduled.get(cluster_name) == self._generation:
            return
        self._scheduled[cluster_name] = self._generation
        found = backend.clusters.get(cluster_name)
        if found is None:
            return
        scheduled = [
            service
            for service in backend.services.values()
            if service.cluster_name == cluster_name
            and service.status == "ACTIVE"
            and service.scheduling_strategy == "REPLICA"
            and (service.launch_type or "EC2") == "EC2"
            and service.task_definition
        ]
        never = float("inf")
        # Oldest need first (see the module docstring); sorted() keeps creation order among equals.
        for service in sorted(scheduled, key=lambda s: self._waiting.get(s.arn, never)):
            self._schedule(backend, found, service)
        # A service still waiting tries again while the run places tasks: one may have made a host match its
        # memberOf (task:group), as ECS retries a pending task.
        for _ in range(MAX_RETRIES):
            started = self._started
            for service in [s for s in scheduled if s.arn in self._waiting]:
                self._schedule(backend, found, service)
            if self._started == started:
                break

    # -- one service -------------------------------------------------------------

    def _schedule(self, backend: Any, cluster: Any, service: Any) -> None:
        instances: dict[str, Any] = backend.container_instances.get(cluster.name, {})
        all_tasks: dict[str, Any] = backend.tasks.setdefault(cluster.name, {})
        group = f"service:{service.name}"
        definition = backend.describe_task_definition(service.task_definition)
        requirements = backend._calculate_task_resource_requirements(definition)
        constraints = list(getattr(service, "placement_constraints", None) or [])
        distinct = any(c.get("type") == "distinctInstance" for c in constraints)
        member_of = [c["expression"] for c in constraints if c.get("type") == "memberOf" and c.get("expression")]
        queries: list[Expr | None] = []
        for expression in member_of:
            try:
                queries.append(parse(expression))
            except QuerySyntaxError:
                queries.append(None)  # ECS would have refused it; place nowhere

        def live() -> list[Any]:
            return [t for t in all_tasks.values() if t.group == group and t.desired_status == "RUNNING"]

        groups: dict[str, list[str]] = {}
        for task in all_tasks.values():
            if task.container_instance_arn and task.desired_status == "RUNNING":
                groups.setdefault(task.container_instance_arn, []).append(task.group)

        by_group = any(query is not None and "task:group" in query.subjects for query in queries)

        def matches(instance: Any) -> bool:
            from .server import _instance_fields

            fields = _instance_fields(instance, groups.get(instance.container_instance_arn, []))
            return all(query is not None and query.evaluate(fields) for query in queries)

        def usable(instance: Any) -> bool:
            return instance.status == "ACTIVE" and bool(instance.agent_connected) and matches(instance)

        # Tasks leave hosts that are gone; unless held, hosts that drain, and the old task definition.
        for task in live():
            instance = instances.get(_id(task.container_instance_arn or ""))
            if instance is None:
                self._stop(backend, cluster, task, None, "Container instance deregistered")
            elif self.hold_stops:
                continue
            elif instance.status != "ACTIVE":
                self._stop(backend, cluster, task, instance, "Container instance is draining")
            elif task.task_definition_arn != definition.arn:
                self._stop(backend, cluster, task, instance, f"Deployment to {definition.arn}")

        # Above the desiredCount: stop the surplus, from ineligible and crowded hosts first, newest first.
        if not self.hold_stops:
            tasks = live()
            surplus = len(tasks) - service.desired_count
            if surplus > 0:
                per_host: dict[str, int] = {}
                for task in tasks:
                    per_host[task.container_instance_arn] = per_host.get(task.container_instance_arn, 0) + 1

                def keep_first(task: Any) -> tuple[bool, int]:
                    instance = instances.get(_id(task.container_instance_arn or ""))
                    return (instance is not None and usable(instance), -per_host[task.container_instance_arn])

                for task in sorted(tasks, key=keep_first)[:surplus]:
                    per_host[task.container_instance_arn] -= 1
                    instance = instances.get(_id(task.container_instance_arn or ""))
                    self._stop(backend, cluster, task, instance, "Scaling activity initiated by deployment")

        # Below it: place, one task per host with room, spreading by instance.
        failure: str | None = None
        tasks = live()
        counts: dict[str, int] = {}
        for task in tasks:
            counts[task.container_instance_arn] = counts.get(task.container_instance_arn, 0) + 1
        candidates = [i for i in instances.values() if usable(i)]
        while len(tasks) < service.desired_count:
            if by_group:  # the tasks just placed change which hosts match
                candidates = [i for i in instances.values() if usable(i)]
            open_hosts = [i for i in candidates if not (distinct and counts.get(i.container_instance_arn))]
            fitting = [i for i in open_hosts if backend._can_be_placed(i, requirements)]
            if not fitting:
                failure = self._why_not(service, instances, candidates, open_hosts, requirements)
                break
            host = min(fitting, key=lambda i: (counts.get(i.container_instance_arn, 0), i.container_instance_arn))
            tasks.append(self._start(backend, cluster, service, definition, requirements, host, group))
            counts[host.container_instance_arn] = counts.get(host.container_instance_arn, 0) + 1
            groups.setdefault(host.container_instance_arn, []).append(group)
        if len(tasks) < service.desired_count:
            self._waiting.setdefault(service.arn, time.monotonic())
        else:
            self._waiting.pop(service.arn, None)

        self._deployments(service, definition.arn, tasks)
        running = sum(1 for task in tasks if task.last_status == "RUNNING")
        service.running_count = running
        service.pending_count = len(tasks) - running
        if failure is not None:
            self._event(service, f"{UNABLE.format(name=service.name)} {failure} {TROUBLESHOOTING}")
        elif len(tasks) == service.desired_count and all(t.task_definition_arn == definition.arn for t in tasks):
            self._event(service, STEADY_STATE.format(name=service.name))

    @staticmethod
    def _why_not(service: Any, instances: dict[str, Any], usable: list[Any], open_hosts: list[Any], needs: Any) -> str:
        """The second sentence of ECS's placement failure: what the closest matching host lacks."""
        if not [i for i in instances.values() if i.status == "ACTIVE"]:
            return "Reason: No Container Instances were found in your cluster."
        if not usable:
            closest = next(i for i in instances.values() if i.status == "ACTIVE")
            return (
                f"The closest matching container-instance {_id(closest.container_instance_arn)} "
                "is missing an attribute required by your task."
            )
        if not open_hosts:
            return (
                f"The closest matching container-instance {_id(usable[0].container_instance_arn)} encountered error "
                '"DistinctInstance placement constraint unsatisfied."'
            )
        closest = max(open_hosts, key=lambda i: (_remaining(i, "MEMORY"), _remaining(i, "CPU")))
        name = _id(closest.container_instance_arn)
        if needs.get("MEMORY", 0) > _remaining(closest, "MEMORY"):
            return f"The closest matching container-instance {name} has insufficient memory available."
        if needs.get("CPU", 0) > _remaining(closest, "CPU"):
            return f"The closest matching container-instance {name} has insufficient CPU units available."
        return f"The closest matching container-instance {name} is already using a port required by your task."

    def _start(
        self, backend: Any, cluster: Any, service: Any, definition: Any, needs: Any, host: Any, group: str
    ) -> Any:
        from moto.ecs.models import Task

        primary: dict[str, Any] = next((d for d in service.deployments if d.get("status") == "PRIMARY"), {})
        task = Task(
            cluster,
            definition,
            host.container_instance_arn,
            needs,
            backend=backend,
            group=group,
            launch_type="EC2",
            started_by=str(primary.get("id", "")),
        )
        # ECS does not move a task on because it was described: keep it RUNNING until it is stopped.
        task._transitions = [("RUNNING", "RUNNING")]
        task.created_at = task.started_at = datetime.now(UTC)  # type: ignore[attr-defined]  # moto's Task has neither
        if self.start_after > 0:
            task.started_at = None  # type: ignore[attr-defined]
            task.last_status = "PENDING"  # no transition leads on from it: RUNNING once _run_started says so
            self._starting[task.task_arn] = (time.monotonic() + self.start_after, task)
        backend.update_container_instance_resources(host, needs)
        backend.update_cluster_resources(cluster, 1)
        backend.tasks[cluster.name][task.task_arn] = task
        self._started += 1
        self._task_changed(task)
        return task

    def _stop(self, backend: Any, cluster: Any, task: Any, instance: Any, reason: str) -> None:
        if instance is not None and task.resource_requirements:
            backend.update_container_instance_resources(instance, task.resource_requirements, removing=True)
        backend.update_cluster_resources(cluster, -1, task_state="RUNNING")
        task.last_status = "STOPPED"
        task.desired_status = "STOPPED"
        task.stopped_reason = reason
        task.stop_code = "ServiceSchedulerInitiated"
        task.stopped_at = datetime.now(UTC)
        self._task_changed(task)

    @staticmethod
    def _deployments(service: Any, primary_definition: str, tasks: list[Any]) -> None:
        """The PRIMARY deployment runs the service's task definition; an older one stays ACTIVE while it has tasks."""
        left = {task.task_definition_arn for task in tasks}
        kept = []
        for deployment in service.deployments:
            if deployment.get("status") == "PRIMARY":
                deployment["runningCount"] = sum(1 for t in tasks if t.task_definition_arn == primary_definition)
                deployment["desiredCount"] = service.desired_count
                kept.append(deployment)
            elif deployment.get("taskDefinition") in left:
                old = deployment["taskDefinition"]
                deployment["runningCount"] = sum(1 for t in tasks if t.task_definition_arn == old)
                kept.append(deployment)
        service.deployments = kept

    @staticmethod
    def _event(service: Any, message: str) -> None:
        """Add a service event, newest first, unless the newest already says the same."""
        if service.events and service.events[0].get("message") == message:
            return
        service.events.insert(0, {"id": str(uuid.uuid4()), "createdAt": datetime.now(UTC), "message": message})
        del service.events[MAX_EVENTS:]


def rotate_deployments(backend: Any, service: Any) -> None:
    """After an UpdateService with a taskDefinition: a new PRIMARY deployment for it, the old one ACTIVE."""
    definition = backend.describe_task_definition(service.task_definition)
    service.task_definition = definition.arn
    primary = next((d for d in service.deployments if d.get("status") == "PRIMARY"), None)
    if primary is not None and primary.get("taskDefinition") == definition.arn:
        return
    now = datetime.now(UTC)
    if primary is not None:
        primary["status"] = "ACTIVE"
        primary["updatedAt"] = now
    deployment = {
        **(primary or {}),
        "id": f"ecs-svc/{uuid.uuid4().int % 10**19}",
        "status": "PRIMARY",
        "taskDefinition": definition.arn,
        "desiredCount": service.desired_count,
        "runningCount": 0,
        "pendingCount": 0,
        "createdAt": now,
        "updatedAt": now,
        "rolloutState": "IN_PROGRESS",
    }
    service.deployments.insert(0, deployment)
