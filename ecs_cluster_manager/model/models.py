"""The data model the manager reasons about: plain dataclasses, no AWS code.

`ecs.py` fills them from API answers; `plan.py`, `check.py` and `reconcile.py`
read them. Importing this module imports neither boto3 nor botocore, so the
pure decisions can be loaded and tested without them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PlacementConstraint:
    type: str
    expression: str | None = None


@dataclass(frozen=True)
class Service:
    """What the manager needs to know of one ECS service."""

    arn: str
    name: str
    cluster_arn: str
    status: str
    desired_count: int
    running_count: int = 0
    pending_count: int = 0
    scheduling_strategy: str = "REPLICA"
    launch_type: str | None = None
    capacity_providers: tuple[str, ...] = ()
    placement_constraints: tuple[PlacementConstraint, ...] = ()
    minimum_healthy_percent: int | None = None
    maximum_percent: int | None = None
    deployment_controller: str = "ECS"
    tags: Mapping[str, str] = field(default_factory=dict)
    # The task definition of the PRIMARY deployment: the one every task should run.
    task_definition: str | None = None
    # The newest "was unable to place a task" event message, unless a newer event says the service reached a
    # steady state (then the failure is over), and the Unix time of the first failure of that unbroken run.
    placement_failure: str | None = None
    placement_failure_since: float | None = None

    @property
    def member_of(self) -> tuple[str, ...]:
        return tuple(c.expression for c in self.placement_constraints if c.type == "memberOf" and c.expression)

    @property
    def distinct_instance(self) -> bool:
        return any(c.type == "distinctInstance" for c in self.placement_constraints)


@dataclass(frozen=True)
class ServiceFailure:
    """A service DescribeServices could not return (reason MISSING and the like)."""

    service: str
    reason: str
    detail: str | None = None


@dataclass(frozen=True)
class ServiceLookup:
    services: tuple[Service, ...]
    failures: tuple[ServiceFailure, ...]


@dataclass(frozen=True)
class TaskIdentity:
    """Who this process is when it runs as an ECS task (from the task metadata endpoint)."""

    cluster: str | None
    service_name: str | None
    task_arn: str | None


@dataclass(frozen=True)
class Task:
    """What coverage needs of one task: where it runs, its state and its task definition."""

    arn: str
    container_instance_arn: str | None
    last_status: str
    task_definition_arn: str
    desired_status: str = "RUNNING"
    started_at: float | None = None  # Unix time the task started RUNNING, when ECS says
    created_at: float | None = None  # Unix time the task was created, when ECS says
    group: str | None = None  # `service:NAME` for a service's task; RunTask's and batch jobs' have another
    version: int | None = None  # ECS's version of the task's state, which its state-change events carry too


@dataclass(frozen=True)
class ContainerInstance:
    """One container instance as DescribeContainerInstances returns it."""

    arn: str
    ec2_instance_id: str | None
    status: str
    agent_connected: bool
    version: int
    # Its remainingResources: CPU units and MiB left, and the host ports in use ("80/tcp", "53/udp").
    remaining_cpu: int | None = None
    remaining_memory: int | None = None
    ports_in_use: frozenset[str] = frozenset()


@dataclass(frozen=True)
class HostCount:
    """The container instances of one host filter: ACTIVE ones, and of those the usable (agent connected).

    A drop in `active` is deliberate (a host drained or deregistered); a drop in
    `usable` alone is an agent that may come back. `held` of the hosts with a
    lost agent have not been lost for the whole hold yet (the longest for
    `held_for` seconds): they still count, for raises and lowers alike.
    """

    active: int
    usable: int
    held: int = 0
    held_for: float = 0.0

    @property
    def counted(self) -> int:
        """The hosts a service is sized for: the usable ones and the held ones."""
        return self.usable + self.held


@dataclass(frozen=True)
class QueueMessage:
    """One SQS message: its id, the handle that deletes it, and its body."""

    message_id: str
    receipt_handle: str
    body: str
