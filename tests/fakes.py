"""An in-memory ECS at the gateway interface (aws/gateway.py's PassGateway), for the engine's tests.

No local API, no HTTP, no subprocess: hosts and services are plain records, time
is whatever the test's FakeClock says. Filter expressions are understood as far
as the pass builds them: `agentConnected == true|false`, `ec2InstanceId == ID`,
and memberOf parts `(attribute:NAME)`, matched against a host's attributes, or
`not (...)` of those. A part that contains INVALID is rejected, as ECS rejects
an expression it cannot parse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ecs_cluster_manager.aws.errors import EcsError, RequestRejected, TransientError
from ecs_cluster_manager.model.models import (
    ContainerInstance,
    PlacementConstraint,
    Service,
    ServiceFailure,
    ServiceLookup,
    Task,
)
from ecs_cluster_manager.model.room import Needs

ACCOUNT = "arn:aws:ecs:us-east-1:123456789012"


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeHost:
    arn: str
    ec2_instance_id: str
    status: str = "ACTIVE"
    agent_connected: bool = True
    version: int = 1
    attributes: set[str] = field(default_factory=set)
    remaining_cpu: int = 2048  # remainingResources
    remaining_memory: int = 3800
    ports_in_use: frozenset[str] = frozenset()


@dataclass
class FakeService:
    name: str
    desired_count: int
    member_of: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    task_definition: str | None = None
    placement_failure: str | None = None


class FakeEcs:
    """One cluster's hosts and services; `writes` records each UpdateService, `fail_listing` fails every listing."""

    def __init__(self, cluster: str = "prod") -> None:
        self.cluster = cluster
        self.hosts: dict[str, FakeHost] = {}
        self.services: dict[str, FakeService] = {}
        # Making room: every task on a host by ARN, task definitions, each StopTask as (task, host, reason) ARNs.
        self.host_tasks: dict[str, Task] = {}
        self.definitions: dict[str, Needs] = {}
        self.stops: list[tuple[str, str, str]] = []
        self.failing: set[str] = set()  # operations that fail, e.g. {"StopTask", "DescribeTaskDefinition"}
        self.writes: list[tuple[str, int]] = []
        self.calls = 0
        self.fail_listing = False
        self.tasks: dict[str, list[Task]] = {}  # service name -> its tasks
        self.attributes: dict[str, dict[str, str]] = {}  # container instance ARN -> custom attributes
        self.attribute_writes: list[tuple[str, str, tuple[str, ...]]] = []  # (operation, name, ARNs)

    # -- the world ---------------------------------------------------------------

    def add_host(self, *attributes: str) -> FakeHost:
        number = len(self.hosts) + 1
        arn = f"{ACCOUNT}:container-instance/{self.cluster}/h{number}"
        host = FakeHost(arn, f"i-{number:04d}", attributes=set(attributes))
        self.hosts[host.arn] = host
        return host

    def lose_agent(self, host: FakeHost) -> None:
        host.agent_connected = False
        host.version += 1

    def add_service(self, name: str, desired_count: int, *member_of: str) -> None:
        self.services[name] = FakeService(name, desired_count, member_of)

    def desired_count(self, name: str) -> int:
        return self.services[name].desired_count

    # -- PassGateway ---------------------------------------------------------------

    @property
    def total_calls(self) -> int:
        return self.calls

    def _call(self) -> None:
        self.calls += 1

    def list_services(self, cluster: str) -> list[str]:
        self._call()
        return [self._service_arn(name) for name in self.services]

    def describe_services(self, cluster: str, services: Sequence[str]) -> ServiceLookup:
        self._call()
        found: list[Service] = []
        failures: list[ServiceFailure] = []
        for reference in services:
            record = self.services.get(reference.rsplit("/", 1)[-1])
            if record is None:
                failures.append(ServiceFailure(reference, "MISSING"))
                continue
            constraints = (PlacementConstraint("distinctInstance"),) + tuple(
                PlacementConstraint("memberOf", expression) for expression in record.member_of
            )
            found.append(
                Service(
                    arn=self._service_arn(record.name),
                    name=record.name,
                    cluster_arn=f"{ACCOUNT}:cluster/{self.cluster}",
                    status="ACTIVE",
                    desired_count=record.desired_count,
                    # Once a test runs tasks of the service, its runningCount is theirs, as ECS reports it.
                    running_count=(
                        sum(1 for t in self.tasks[record.name] if t.last_status == "RUNNING")
                        if record.name in self.tasks
                        else record.desired_count
                    ),
                    placement_constraints=constraints,
                    minimum_healthy_percent=0,
                    tags=dict(record.tags),
                    task_definition=record.task_definition,
                    placement_failure=record.placement_failure,
                )
            )
        return ServiceLookup(tuple(found), tuple(failures))

    def list_container_instances(
        self, cluster: str, status: str = "ACTIVE", filter_expression: str | None = None
    ) -> list[str]:
        self._call()
        if self.fail_listing:
            raise TransientError("ListContainerInstances: ServerException: the fake is failing")
        parts = [part.strip() for part in (filter_expression or "").split(" and ") if part.strip()]
        if any("INVALID" in part for part in parts):
            raise RequestRejected(f"ListContainerInstances: InvalidParameterException: {filter_expression}")
        return [h.arn for h in self.hosts.values() if h.status == status and all(_matches(h, p) for p in parts)]

    def registered_count(self, cluster: str) -> int:
        self._call()
        return sum(1 for host in self.hosts.values() if host.status in ("ACTIVE", "DRAINING"))

    def describe_container_instances(self, cluster: str, arns: Sequence[str]) -> list[ContainerInstance]:
        self._call()
        return [
            ContainerInstance(
                h.arn, h.ec2_instance_id, h.status, h.agent_connected, h.version,
                h.remaining_cpu, h.remaining_memory, h.ports_in_use,
            )
            for arn in arns
            if (h := self.hosts.get(arn)) is not None
        ]

    def has_instance(self, cluster: str, filter_expression: str, ec2_instance_id: str) -> bool:
        expression = f"({filter_expression}) and ec2InstanceId == {ec2_instance_id}"
        return bool(self.list_container_instances(cluster, "ACTIVE", expression))

    def run_task(self, service: str, host: FakeHost, status: str = "RUNNING") -> Task:
        """A task of `service` on `host`, as the service scheduler would start it."""
        number = sum(map(len, self.tasks.values())) + 1
        task = Task(f"{ACCOUNT}:task/{self.cluster}/t{number}", host.arn, status, "td:1")
        self.tasks.setdefault(service, []).append(task)
        return task

    def list_tasks(self, cluster: str, service_name: str) -> list[str]:
        self._call()
        return [task.arn for task in self.tasks.get(service_name, [])]

    def describe_tasks(self, cluster: str, arns: Sequence[str]) -> list[Task]:
        self._call()
        wanted = set(arns)
        return [task for tasks in self.tasks.values() for task in tasks if task.arn in wanted] + [
            self.host_tasks[arn] for arn in arns if arn in self.host_tasks
        ]

    def list_attributes(self, cluster: str, name: str, value: str | None = None) -> list[str]:
        self._call()
        return [
            arn for arn, attributes in self.attributes.items()
            if name in attributes and (value is None or attributes[name] == value)
        ]

    def put_attributes(self, cluster: str, name: str, value: str, arns: Sequence[str]) -> None:
        for _batch in range(0, len(arns), 10):
            self._call()
        for arn in arns:
            self.attributes.setdefault(arn, {})[name] = value
        self.attribute_writes.append(("PutAttributes", name, tuple(arns)))

    def delete_attributes(self, cluster: str, name: str, arns: Sequence[str]) -> None:
        for _batch in range(0, len(arns), 10):
            self._call()
        for arn in arns:
            self.attributes.get(arn, {}).pop(name, None)
        self.attribute_writes.append(("DeleteAttributes", name, tuple(arns)))

    def stack_status(self, stack_name: str) -> str | None:
        self._call()
        return None

    def writes_available(self) -> int | None:
        return None

    def set_desired_count(self, cluster: str, service: str, desired_count: int) -> None:
        self._call()
        name = service.rsplit("/", 1)[-1]
        self.services[name].desired_count = desired_count
        self.writes.append((name, desired_count))

    def _service_arn(self, name: str) -> str:
        return f"{ACCOUNT}:service/{self.cluster}/{name}"

    # -- making room -----------------------------------------------------------------

    def place(self, host: FakeHost, group: str, needs: Needs) -> Task:
        """A RUNNING task of `group` (`service:NAME`, or another group for a task of no service) on `host`."""
        definition = f"{ACCOUNT}:task-definition/{group.replace(':', '-')}:1"
        self.definitions[definition] = needs
        task = Task(
            f"{ACCOUNT}:task/{self.cluster}/t{len(self.host_tasks) + 1:03}", host.arn, "RUNNING", definition,
            group=group,
        )
        self.host_tasks[task.arn] = task
        host.remaining_cpu -= needs.cpu
        host.remaining_memory -= needs.memory
        host.ports_in_use |= needs.ports
        return task

    def _fail(self, operation: str) -> None:
        if operation in self.failing:
            raise TransientError(f"{operation}: ServerException: the fake is failing")

    def list_tasks_on_host(self, cluster: str, container_instance: str) -> list[str]:
        self._call()
        self._fail("ListTasks")
        return [arn for arn, task in self.host_tasks.items() if task.container_instance_arn == container_instance]

    def describe_task_definition(self, task_definition: str) -> Needs:
        self._call()
        self._fail("DescribeTaskDefinition")
        if task_definition not in self.definitions:
            raise RequestRejected(f"DescribeTaskDefinition: ClientException: {task_definition} not found")
        return self.definitions[task_definition]

    def stop_task(self, cluster: str, task: str, reason: str) -> None:
        self._call()
        self._fail("StopTask")
        stopped = self.host_tasks.pop(task, None)
        if stopped is None:
            raise EcsError(f"StopTask: InvalidParameterException: {task} not found")
        host = self.hosts[str(stopped.container_instance_arn)]
        needs = self.definitions[stopped.task_definition_arn]
        host.remaining_cpu += needs.cpu
        host.remaining_memory += needs.memory
        host.ports_in_use -= needs.ports
        self.stops.append((task, host.arn, reason))


def _matches(host: FakeHost, part: str) -> bool:
    """Whether a host matches one `and` part of a filter expression the pass built."""
    part = part.strip()
    while part.startswith("(") and part.endswith(")"):
        part = part[1:-1].strip()
    if part.startswith("not "):
        return not _matches(host, part[4:])
    if part.startswith("agentConnected == "):
        return host.agent_connected == (part.endswith("true"))
    if part.startswith("ec2InstanceId == "):
        return host.ec2_instance_id == part.split("==", 1)[1].strip()
    return part in host.attributes

