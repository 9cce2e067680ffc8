"""Whether a service can be managed at all: the one predicate the pass and `check` both use. Pure.

A service can be sized to the host count only when it is ACTIVE, a REPLICA
service, and its tasks run on container instances. `unmanageable` says which
rule it breaks; the pass skips it with `reason`, `check` reports the rule
with advice.
"""

from __future__ import annotations

from dataclasses import dataclass

from ecs_cluster_manager.model.models import Service
from ecs_cluster_manager.model.reasons import Reason

# Launch types whose tasks run on container instances; FARGATE tasks never do.
HOST_LAUNCH_TYPES = frozenset({"EC2", "EXTERNAL"})
# The capacity providers AWS reserves for Fargate; every other name is an Auto Scaling group of hosts.
FARGATE_CAPACITY_PROVIDERS = frozenset({"FARGATE", "FARGATE_SPOT"})

# The rules, named as `check`'s finding codes.
INACTIVE = "inactive"
DAEMON_STRATEGY = "daemon-strategy"
NO_CONTAINER_INSTANCES = "no-container-instances"


@dataclass(frozen=True)
class Unmanageable:
    """The rule a service breaks: `rule` (check's code), `code` (the decision's), `reason` (the pass's words).

    `runs_on` says what runs the tasks instead of container instances (NO_CONTAINER_INSTANCES only).
    """

    rule: str
    code: Reason
    reason: str
    runs_on: str | None = None


def unmanageable(service: Service) -> Unmanageable | None:
    """Why this service cannot be sized to the host count, or None when it can."""
    if service.status != "ACTIVE":
        return Unmanageable(INACTIVE, Reason.INACTIVE, f"service is {service.status}")
    if service.scheduling_strategy == "DAEMON":
        return Unmanageable(
            DAEMON_STRATEGY, Reason.UNMANAGEABLE, "schedulingStrategy is DAEMON: ECS already runs one task per host"
        )
    if service.launch_type is not None and service.launch_type not in HOST_LAUNCH_TYPES:
        return Unmanageable(
            NO_CONTAINER_INSTANCES,
            Reason.UNMANAGEABLE,
            f"launchType {service.launch_type} does not run on container instances",
            f"launchType {service.launch_type}",
        )
    fargate = [p for p in service.capacity_providers if p in FARGATE_CAPACITY_PROVIDERS]
    if fargate:
        return Unmanageable(
            NO_CONTAINER_INSTANCES,
            Reason.UNMANAGEABLE,
            f"capacity provider {fargate[0]} does not run on container instances",
            f"capacityProviderStrategy names {', '.join(fargate)}",
        )
    return None
