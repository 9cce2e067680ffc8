"""Whether a service can be managed at all: the one predicate the pass and `check` both use. Pure."""

from __future__ import annotations

from ecs_cluster_manager.model.models import Service

# Launch types whose tasks run on container instances; FARGATE tasks never do.
HOST_LAUNCH_TYPES = frozenset({"EC2", "EXTERNAL"})
# The capacity providers AWS reserves for Fargate; every other name is an Auto Scaling group of hosts.
FARGATE_CAPACITY_PROVIDERS = frozenset({"FARGATE", "FARGATE_SPOT"})


def unmanageable(service: Service) -> str | None:
    """Why this service cannot be sized to the host count, or None when it can."""
    if service.status != "ACTIVE":
        return f"service is {service.status}"
    if service.scheduling_strategy == "DAEMON":
        return "schedulingStrategy is DAEMON: ECS already runs one task per host"
    if service.launch_type is not None and service.launch_type not in HOST_LAUNCH_TYPES:
        return f"launchType {service.launch_type} does not run on container instances"
    fargate = [p for p in service.capacity_providers if p in FARGATE_CAPACITY_PROVIDERS]
    if fargate:
        return f"capacity provider {fargate[0]} does not run on container instances"
    return None
