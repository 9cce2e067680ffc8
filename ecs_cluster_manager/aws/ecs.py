"""The ECS gateway: the ECS calls the manager makes, on the one transport (transport.py).

Complete paging, DescribeServices in batches of ten, and plain dataclasses out,
never a raw response. Every call goes through `_call`, so the transport meters
it, pays for it from the API budget, retries it and translates its errors. The
CloudFormation and SQS calls have gateways of their own (cloudformation.py,
sqs.py); `Api` keeps one-line delegates to them so callers need one object.
"""

from __future__ import annotations

import threading
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import structlog

from ecs_cluster_manager.aws.budget import DEFAULT_SHARE, SERVICE_MODIFY, Budget
from ecs_cluster_manager.aws.cloudformation import CloudFormation
from ecs_cluster_manager.aws.sqs import DELETE_MESSAGE_BATCH, SQS_MAX_WAIT_SECONDS, Sqs
from ecs_cluster_manager.aws.transport import (
    DEFAULT_ATTEMPTS,
    THROTTLING_CODES,
    TRANSIENT_CODES,
    AccessDenied,
    ClusterNotFound,
    CredentialsError,
    EcsError,
    Gateway,
    RequestRejected,
    ShuttingDown,
    Throttled,
    TransientError,
    Transport,
    chunks,
    is_transient,
    translate,
)
from ecs_cluster_manager.model.models import (
    ContainerInstance,
    PlacementConstraint,
    QueueMessage,
    Service,
    ServiceFailure,
    ServiceLookup,
    Task,
)
from ecs_cluster_manager.model.names import name_of
from ecs_cluster_manager.model.room import Needs

log = structlog.get_logger(__name__)

LIST_CONTAINER_INSTANCES_PAGE = 100  # the API's maximum
LIST_SERVICES_PAGE = 100  # the API's maximum (its default is 10)
DESCRIBE_CONTAINER_INSTANCES_BATCH = 100  # the API's limit per call
DESCRIBE_SERVICES_BATCH = 10  # the API's limit per call
LIST_TASKS_PAGE = 100  # the API's maximum
DESCRIBE_TASKS_BATCH = 100  # the API's limit per call
LIST_ATTRIBUTES_PAGE = 100  # the API's maximum
ATTRIBUTES_BATCH = 10  # PutAttributes and DeleteAttributes take at most 10 attributes a call
CONTAINER_INSTANCE = "container-instance"  # the attributes' targetType
# The start of ECS's service event for a task it could not place, and of the event that says all is placed.
PLACEMENT_FAILURE = "was unable to place a task"
STEADY_STATE = "has reached a steady state"
# Hosts of AWS's own endpoints: any other endpoint was configured (AWS_ENDPOINT_URL and the like).
AWS_ENDPOINT_SUFFIXES = (".amazonaws.com", ".amazonaws.com.cn", ".api.aws", ".c2s.ic.gov", ".sc2s.sgov.gov")

__all__ = [
    "DELETE_MESSAGE_BATCH",
    "SQS_MAX_WAIT_SECONDS",
    "THROTTLING_CODES",
    "TRANSIENT_CODES",
    "AccessDenied",
    "Api",
    "ClusterNotFound",
    "CredentialsError",
    "EcsError",
    "RequestRejected",
    "ShuttingDown",
    "Throttled",
    "TransientError",
    "is_transient",
    "translate",
]


class Api(Gateway):
    """The ECS calls the manager makes, with paging and batching, on a transport that budgets and retries them.

    Create one per process and keep it: the transport and its clients are reused.
    `stop` is an event that, once set, ends waits (for a token, between retries)
    at once so a SIGTERM is not held up. `api_budget` is the share of each ECS
    throttling bucket the manager may spend (API_BUDGET); None sends unbudgeted.
    """

    service = "ecs"

    def __init__(
        self,
        region: str | None = None,
        profile: str | None = None,
        *,
        stop: threading.Event | None = None,
        attempts: int = DEFAULT_ATTEMPTS,
        max_backoff: float = 8.0,
        botocore_attempts: int = 1,
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
        endpoint_url: str | None = None,
        api_budget: float | None = DEFAULT_SHARE,
        call_timeout: float = 30.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        budget = None
        if api_budget is not None:
            budget = Budget(api_budget, clock) if clock is not None else Budget(api_budget)
        super().__init__(
            Transport(
                region,
                profile,
                stop=stop,
                attempts=attempts,
                max_backoff=max_backoff,
                botocore_attempts=botocore_attempts,
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                call_timeout=call_timeout,
                endpoint_url=endpoint_url,
                budget=budget,
            )
        )
        self._ecs = self.transport.client("ecs")
        self._cloudformation: CloudFormation | None = None
        self._sqs: Sqs | None = None

    # -- the transport, as callers knew it -------------------------------------

    @property
    def stop(self) -> threading.Event:
        return self.transport.stop

    @property
    def attempts(self) -> int:
        return self.transport.attempts

    @property
    def max_backoff(self) -> float:
        return self.transport.max_backoff

    @property
    def read_timeout(self) -> float:
        return self.transport.read_timeout

    @property
    def botocore_attempts(self) -> int:
        return self.transport.botocore_attempts

    @property
    def budget(self) -> Budget | None:
        return self.transport.budget

    @property
    def calls(self) -> Counter[tuple[str, str]]:
        """HTTP attempts by (operation, outcome), every service included."""
        return self.transport.calls

    @property
    def retries(self) -> Counter[str]:
        return self.transport.retries

    @property
    def on_call(self) -> Callable[[str, str], None] | None:
        return self.transport.on_call

    @on_call.setter
    def on_call(self, hook: Callable[[str, str], None] | None) -> None:
        self.transport.on_call = hook

    def in_flight(self, thread: int | None = None) -> tuple[str, float] | None:
        """The HTTP attempt `thread` (an ident; the calling thread's by default) has on the wire, if any."""
        return self.transport.in_flight(thread)

    @property
    def total_calls(self) -> int:
        """The loop's HTTP attempts (ECS and CloudFormation): the events thread's SQS calls are not in it."""
        return self.transport.total_calls("ecs", "cloudformation")

    @property
    def region(self) -> str:
        return str(self._ecs.meta.region_name)

    @property
    def endpoint(self) -> str:
        """The ECS endpoint URL the client sends to."""
        return str(self._ecs.meta.endpoint_url)

    @property
    def custom_endpoint(self) -> str | None:
        """The ECS endpoint URL when it is not one of AWS's own (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_ECS, ...)."""
        host = (urllib.parse.urlsplit(self.endpoint).hostname or "").lower()
        return None if host.endswith(AWS_ENDPOINT_SUFFIXES) else self.endpoint

    # -- the write budget --------------------------------------------------------

    def writes_available(self) -> int | None:
        """UpdateService calls the budget can pay for now without waiting; None without a budget."""
        return None if self.budget is None else self.budget.available(SERVICE_MODIFY)

    def writes_ready_in(self, writes: int = 1) -> float:
        """Seconds until the budget can pay for `writes` UpdateService calls (at most its burst) at once."""
        return 0.0 if self.budget is None else self.budget.ready_in(SERVICE_MODIFY, writes)

    # -- reads -------------------------------------------------------------

    def _pages(self, operation: str, function: Callable[..., Any], key: str, **params: Any) -> list[str]:
        """Every item of a paged listing; raises on any failed page, so a partial list is never returned."""
        items: list[str] = []
        seen_tokens: set[str] = set()
        while True:
            page = self._call(operation, function, **params)
            items.extend(page.get(key, []))
            token = page.get("nextToken")
            if not token:
                return items
            if token in seen_tokens:  # a server that loops would otherwise keep us here forever
                raise EcsError(f"{operation}: the same nextToken came back twice")
            seen_tokens.add(token)
            params["nextToken"] = token

    def list_container_instances(
        self, cluster: str, status: str = "ACTIVE", filter_expression: str | None = None
    ) -> list[str]:
        """The ARNs of the container instances with this status matching the filter, across every page."""
        params: dict[str, Any] = {"cluster": cluster, "status": status, "maxResults": LIST_CONTAINER_INSTANCES_PAGE}
        if filter_expression:
            params["filter"] = filter_expression
        return self._pages(
            "ListContainerInstances", self._ecs.list_container_instances, "containerInstanceArns", **params
        )

    def registered_count(self, cluster: str) -> int:
        """DescribeClusters' registeredContainerInstancesCount: ACTIVE and DRAINING instances, in one call."""
        page = self._call("DescribeClusters", self._ecs.describe_clusters, clusters=[cluster])
        clusters = page.get("clusters") or []
        if not clusters or clusters[0].get("status") == "INACTIVE":
            raise ClusterNotFound(f"DescribeClusters: cluster {cluster!r} not found")
        return int(clusters[0].get("registeredContainerInstancesCount", 0))

    def list_services(self, cluster: str) -> list[str]:
        """Every service ARN of the cluster, across every page."""
        return self._pages(
            "ListServices", self._ecs.list_services, "serviceArns", cluster=cluster, maxResults=LIST_SERVICES_PAGE
        )

    def describe_services(self, cluster: str, services: Sequence[str]) -> ServiceLookup:
        """Describe services (names or ARNs) with their tags, ten per call."""
        found: list[Service] = []
        failures: list[ServiceFailure] = []
        for batch in chunks(list(services), DESCRIBE_SERVICES_BATCH):
            page = self._call(
                "DescribeServices", self._ecs.describe_services, cluster=cluster, services=list(batch), include=["TAGS"]
            )
            found.extend(_service(raw) for raw in page.get("services", []))
            failures.extend(
                ServiceFailure(service=f.get("arn", "?"), reason=f.get("reason", "UNKNOWN"), detail=f.get("detail"))
                for f in page.get("failures", [])
            )
        return ServiceLookup(tuple(found), tuple(failures))

    def list_tasks(self, cluster: str, service_name: str) -> list[str]:
        """The ARNs of the service's tasks whose desired status is RUNNING, across every page."""
        return self._pages(
            "ListTasks",
            self._ecs.list_tasks,
            "taskArns",
            cluster=cluster,
            serviceName=service_name,
            desiredStatus="RUNNING",
            maxResults=LIST_TASKS_PAGE,
        )

    def describe_tasks(self, cluster: str, arns: Sequence[str]) -> list[Task]:
        """Describe tasks, 100 per call; a task ECS no longer knows is left out (it stopped meanwhile)."""
        tasks: list[Task] = []
        for batch in chunks(list(arns), DESCRIBE_TASKS_BATCH):
            page = self._call("DescribeTasks", self._ecs.describe_tasks, cluster=cluster, tasks=list(batch))
            tasks.extend(_task(raw) for raw in page.get("tasks", []))
        return tasks

    def list_tasks_on_host(self, cluster: str, container_instance: str) -> list[str]:
        """The ARNs of the tasks on one container instance whose desired status is RUNNING, across every page."""
        return self._pages(
            "ListTasks",
            self._ecs.list_tasks,
            "taskArns",
            cluster=cluster,
            containerInstance=container_instance,
            desiredStatus="RUNNING",
            maxResults=LIST_TASKS_PAGE,
        )

    def describe_task_definition(self, task_definition: str) -> Needs:
        """What a task of this task definition reserves on its host: CPU units, MiB, and host ports."""
        page = self._call(
            "DescribeTaskDefinition", self._ecs.describe_task_definition, taskDefinition=task_definition
        )
        return task_definition_needs(page.get("taskDefinition") or {})

    def describe_container_instances(self, cluster: str, arns: Sequence[str]) -> list[ContainerInstance]:
        """Describe container instances, 100 per call; one ECS no longer knows is left out."""
        instances: list[ContainerInstance] = []
        for batch in chunks(list(arns), DESCRIBE_CONTAINER_INSTANCES_BATCH):
            page = self._call(
                "DescribeContainerInstances",
                self._ecs.describe_container_instances,
                cluster=cluster,
                containerInstances=list(batch),
            )
            instances.extend(
                ContainerInstance(
                    arn=raw["containerInstanceArn"],
                    ec2_instance_id=raw.get("ec2InstanceId"),
                    status=raw.get("status", "UNKNOWN"),
                    agent_connected=bool(raw.get("agentConnected", False)),
                    version=int(raw.get("version", 0)),
                    **_remaining(raw.get("remainingResources")),
                )
                for raw in page.get("containerInstances", [])
                if "containerInstanceArn" in raw
            )
        return instances

    def stack_status(self, stack_name: str) -> str | None:
        """The status of a CloudFormation stack, or None when it does not exist."""
        return self._cloudformation_gateway().stack_status(stack_name)

    def _cloudformation_gateway(self) -> CloudFormation:
        if self._cloudformation is None:
            self._cloudformation = CloudFormation(self.transport)
        return self._cloudformation

    def has_instance(self, cluster: str, filter_expression: str, ec2_instance_id: str) -> bool:
        """Whether one ACTIVE container instance (by EC2 instance id) matches a filter: one call, any cluster size."""
        expression = f"({filter_expression}) and ec2InstanceId == {ec2_instance_id}"
        return bool(self.list_container_instances(cluster, "ACTIVE", expression))

    # -- the events queue ----------------------------------------------------

    def prepare_events(self) -> None:
        """Create the SQS client now, so a malformed AWS_ENDPOINT_URL(_SQS) is a start-up error."""
        self._sqs_gateway().prepare()

    def _sqs_gateway(self) -> Sqs:
        if self._sqs is None:
            self._sqs = Sqs(self.transport)
        return self._sqs

    def receive_messages(
        self,
        queue_url: str,
        wait_seconds: int = SQS_MAX_WAIT_SECONDS,
        max_messages: int = 10,
        visibility_timeout: int | None = None,
    ) -> list[QueueMessage]:
        """Long-poll the queue: returns as soon as messages are there, or empty after `wait_seconds`.

        `visibility_timeout=0` leaves what it receives visible to the next receive.
        """
        return self._sqs_gateway().receive_messages(queue_url, wait_seconds, max_messages, visibility_timeout)

    def delete_messages(self, queue_url: str, messages: Sequence[QueueMessage]) -> dict[str, str]:
        """Delete messages, ten per call; returns the ones SQS did not delete (message id -> reason)."""
        return self._sqs_gateway().delete_messages(queue_url, messages)

    def list_attributes(self, cluster: str, name: str, value: str | None = None) -> list[str]:
        """The container instances (ARNs) that have the custom attribute `name` (with `value`), across every page."""
        targets: list[str] = []
        params: dict[str, Any] = {
            "cluster": cluster,
            "targetType": CONTAINER_INSTANCE,
            "attributeName": name,
            "maxResults": LIST_ATTRIBUTES_PAGE,
        }
        if value is not None:
            params["attributeValue"] = value
        seen_tokens: set[str] = set()
        while True:
            page = self._call("ListAttributes", self._ecs.list_attributes, **params)
            targets.extend(
                str(a["targetId"]) for a in page.get("attributes", []) if a.get("name") == name and a.get("targetId")
            )
            token = page.get("nextToken")
            if not token:
                return targets
            if token in seen_tokens:
                raise EcsError("ListAttributes: the same nextToken came back twice")
            seen_tokens.add(token)
            params["nextToken"] = token

    # -- writes ------------------------------------------------------------

    def stop_task(self, cluster: str, task: str, reason: str) -> None:
        """StopTask with a reason (ECS keeps it as the task's stoppedReason)."""
        self._call("StopTask", self._ecs.stop_task, cluster=cluster, task=task, reason=reason)
    def put_attributes(self, cluster: str, name: str, value: str, arns: Sequence[str]) -> None:
        """PutAttributes: the custom attribute `name`=`value` on each container instance (full ARNs), ten a call."""
        for batch in chunks(list(arns), ATTRIBUTES_BATCH):
            self._call(
                "PutAttributes",
                self._ecs.put_attributes,
                cluster=cluster,
                attributes=[
                    {"name": name, "value": value, "targetType": CONTAINER_INSTANCE, "targetId": arn} for arn in batch
                ],
            )

    def delete_attributes(self, cluster: str, name: str, arns: Sequence[str]) -> None:
        """DeleteAttributes: the custom attribute `name` off each container instance (full ARNs), ten a call."""
        for batch in chunks(list(arns), ATTRIBUTES_BATCH):
            self._call(
                "DeleteAttributes",
                self._ecs.delete_attributes,
                cluster=cluster,
                attributes=[{"name": name, "targetType": CONTAINER_INSTANCE, "targetId": arn} for arn in batch],
            )

    def set_desired_count(self, cluster: str, service: str, desired_count: int) -> None:
        """UpdateService with only desiredCount, which starts no new deployment."""
        self._call(
            "UpdateService", self._ecs.update_service, cluster=cluster, service=service, desiredCount=desired_count
        )


def _service(raw: Mapping[str, Any]) -> Service:
    deployment = raw.get("deploymentConfiguration") or {}
    primary: Mapping[str, Any] = next((d for d in raw.get("deployments") or [] if d.get("status") == "PRIMARY"), {})
    failures = _placement_failures(raw.get("events") or [])
    tags = {t["key"]: t.get("value", "") for t in raw.get("tags") or [] if "key" in t}
    return Service(
        arn=raw["serviceArn"],
        name=raw.get("serviceName") or name_of(raw["serviceArn"]),
        cluster_arn=raw.get("clusterArn", ""),
        status=raw.get("status", "UNKNOWN"),
        desired_count=int(raw.get("desiredCount", 0)),
        running_count=int(raw.get("runningCount", 0)),
        pending_count=int(raw.get("pendingCount", 0)),
        scheduling_strategy=raw.get("schedulingStrategy") or "REPLICA",
        launch_type=raw.get("launchType"),
        capacity_providers=tuple(s.get("capacityProvider", "") for s in raw.get("capacityProviderStrategy") or []),
        placement_constraints=tuple(
            PlacementConstraint(c.get("type", ""), c.get("expression")) for c in raw.get("placementConstraints") or []
        ),
        minimum_healthy_percent=deployment.get("minimumHealthyPercent"),
        maximum_percent=deployment.get("maximumPercent"),
        deployment_controller=(raw.get("deploymentController") or {}).get("type", "ECS"),
        tags=tags,
        task_definition=primary.get("taskDefinition") or raw.get("taskDefinition"),
        placement_failure=failures[0][1] if failures else None,
        placement_failure_since=failures[-1][0] if failures else None,
    )


def _unix(value: Any) -> float | None:
    """A timestamp from botocore (a datetime) or a raw answer (epoch seconds) as Unix time."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    timestamp = getattr(value, "timestamp", None)
    return float(timestamp()) if callable(timestamp) else None


def _placement_failures(events: Iterable[Mapping[str, Any]]) -> list[tuple[float | None, str]]:
    """The current run of placement failures, newest first: the failure events newer than the newest steady state."""
    failures: list[tuple[float | None, str]] = []
    for event in events:  # ECS lists them newest first
        message = str(event.get("message") or "")
        if STEADY_STATE in message:
            break
        if PLACEMENT_FAILURE in message:
            failures.append((_unix(event.get("createdAt")), message))
    return failures


def _task(raw: Mapping[str, Any]) -> Task:
    return Task(
        arn=raw.get("taskArn", "?"),
        container_instance_arn=raw.get("containerInstanceArn"),
        last_status=raw.get("lastStatus", "UNKNOWN"),
        task_definition_arn=raw.get("taskDefinitionArn", ""),
        desired_status=raw.get("desiredStatus", "RUNNING"),
        started_at=_unix(raw.get("startedAt")),
        created_at=_unix(raw.get("createdAt")),
        group=raw.get("group"),
        version=raw["version"] if isinstance(raw.get("version"), int) else None,
    )


def _remaining(resources: Any) -> dict[str, Any]:
    """A container instance's remainingResources as ContainerInstance fields (absent ones stay unknown)."""
    fields: dict[str, Any] = {}
    ports: set[str] = set()
    for resource in resources or []:
        name = resource.get("name")
        if name == "CPU":
            fields["remaining_cpu"] = int(resource.get("integerValue", 0))
        elif name == "MEMORY":
            fields["remaining_memory"] = int(resource.get("integerValue", 0))
        elif name in ("PORTS", "PORTS_UDP"):
            protocol = "tcp" if name == "PORTS" else "udp"
            ports |= {f"{port}/{protocol}" for port in resource.get("stringSetValue") or []}
    if ports:
        fields["ports_in_use"] = frozenset(ports)
    return fields


def _units(value: Any, unit: str, per_unit: int) -> int | None:
    """A task-level cpu or memory value ("1024", "1 vCPU", "2 GB") in CPU units or MiB; None when absent."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    if text.lower().endswith(unit):
        return round(float(text[: -len(unit)].strip()) * per_unit)
    return int(float(text))


def task_definition_needs(raw: Mapping[str, Any]) -> Needs:
    """What ECS reserves on a host for one task of a task definition (DescribeTaskDefinition's taskDefinition).

    CPU and memory: the task-level values when set, else the sum over the
    containers of `cpu` and of `memoryReservation` (or `memory` without one),
    as ECS reserves them. Host ports: each port mapping's hostPort, or its
    containerPort in the host network mode; awsvpc tasks take no host port,
    and a bridge mapping without a hostPort gets a dynamic one.
    """
    containers = raw.get("containerDefinitions") or []
    cpu = _units(raw.get("cpu"), "vcpu", 1024)
    memory = _units(raw.get("memory"), "gb", 1024)
    if cpu is None:
        cpu = sum(int(c.get("cpu") or 0) for c in containers)
    if memory is None:
        memory = sum(int(c.get("memoryReservation") or c.get("memory") or 0) for c in containers)
    mode = raw.get("networkMode") or "bridge"
    ports: set[str] = set()
    if mode != "awsvpc":
        for container in containers:
            for mapping in container.get("portMappings") or []:
                port = mapping.get("hostPort") or (mapping.get("containerPort") if mode == "host" else None)
                if port:
                    ports.add(f"{int(port)}/{str(mapping.get('protocol') or 'tcp').lower()}")
    return Needs(cpu=cpu, memory=memory, ports=frozenset(ports))
