"""Decide what each managed service's desiredCount should be: pure functions, no I/O.

Given a service as observed and the number of hosts it may run on, return one
Decision (update, unchanged, dry-run or skip) with the current and target counts
and the reason. How long each lost agent has been lost comes in with the host
count, so the caller owns all state and these functions stay pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .models import HostCount, Service

UPDATE = "update"
UNCHANGED = "unchanged"
DRY_RUN = "dry-run"
SKIP = "skip"

TAG_PREFIX = "ecs-cluster-manager:"
TASKS_PER_HOST_TAG = TAG_PREFIX + "tasks-per-host"
MIN_TAG = TAG_PREFIX + "min"
MAX_TAG = TAG_PREFIX + "max"
STACK_NAME_TAG = "aws:cloudformation:stack-name"

# Launch types whose tasks run on container instances; FARGATE tasks never do.
HOST_LAUNCH_TYPES = frozenset({"EC2", "EXTERNAL"})
# The capacity providers AWS reserves for Fargate; every other name is an Auto Scaling group of hosts.
FARGATE_CAPACITY_PROVIDERS = frozenset({"FARGATE", "FARGATE_SPOT"})


class SizingError(ValueError):
    """A sizing tag of the service has a value that cannot be used."""


@dataclass(frozen=True)
class Sizing:
    """How many tasks a service wants: tasks_per_host per eligible host, clamped to [minimum, maximum]."""

    tasks_per_host: int = 1
    minimum: int | None = None
    maximum: int | None = None

    def target(self, hosts: int) -> int:
        count = hosts * self.tasks_per_host
        if self.minimum is not None:
            count = max(count, self.minimum)
        if self.maximum is not None:
            count = min(count, self.maximum)
        return count


@dataclass(frozen=True)
class Decision:
    """What to do with one service in one pass, and why."""

    service: str
    service_arn: str | None
    action: str
    current: int | None
    target: int | None
    hosts: int | None
    reason: str
    error: bool = False

    @property
    def writes(self) -> bool:
        return self.action == UPDATE


def _tag_int(tags: Mapping[str, str], key: str, minimum: int) -> int | None:
    if key not in tags:
        return None
    raw = tags[key]
    try:
        value = int(raw.strip())
    except ValueError:
        raise SizingError(f"tag {key}={raw!r} is not a whole number") from None
    if value < minimum:
        raise SizingError(f"tag {key}={raw!r} must be >= {minimum}")
    return value


def sizing(tags: Mapping[str, str]) -> Sizing:
    """Read the ecs-cluster-manager:* sizing tags; SizingError names the bad one."""
    tasks_per_host = _tag_int(tags, TASKS_PER_HOST_TAG, 1)
    minimum = _tag_int(tags, MIN_TAG, 0)
    maximum = _tag_int(tags, MAX_TAG, 0)
    if minimum is not None and maximum is not None and minimum > maximum:
        raise SizingError(f"tag {MIN_TAG}={minimum} is greater than {MAX_TAG}={maximum}")
    return Sizing(tasks_per_host=tasks_per_host or 1, minimum=minimum, maximum=maximum)


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


def skip(
    service: str, reason: str, *, arn: str | None = None, current: int | None = None, error: bool = True
) -> Decision:
    """A decision to leave a service alone; error marks the service as not handled."""
    return Decision(service, arn, SKIP, current, None, None, reason, error)


def decide(
    service: Service,
    hosts: HostCount,
    size: Sizing,
    *,
    dry_run: bool = False,
    scale_down_after: int = 1,
) -> Decision:
    """Decide one service's desiredCount.

    The target is the usable hosts' count, sized. Raising is immediate. A drop
    down to the target of the ACTIVE hosts is immediate too: those hosts were
    drained or deregistered on purpose, and a task left without a host only
    stays PENDING. A host whose agent is lost, which routinely comes back, still
    counts until it has been lost for `scale_down_after` regular passes
    (`hosts.held` are those that have not): only then is it lowered for.
    """
    current = service.desired_count
    target = size.target(hosts.usable)

    def decision(action: str, reason: str, count: int) -> Decision:
        return Decision(service.name, service.arn, action, current, count, hosts.usable, reason)

    write = DRY_RUN if dry_run else UPDATE
    if target >= current:
        if target == current:
            return decision(UNCHANGED, "converged", target)
        return decision(write, "scale up", target)

    hold = f"agent lost, scale down held ({hosts.held_passes}/{scale_down_after} passes)" if hosts.held else ""
    # The held hosts still count; drained and deregistered ones never do.
    new = min(current, size.target(hosts.usable + hosts.held))
    if new == current:
        return decision(UNCHANGED, hold or "converged", target)
    if new < size.target(hosts.active):
        reason = f"scale down: agent lost, held {scale_down_after}/{scale_down_after} passes"
        return decision(write, reason + (f"; {hold}" if hold else ""), new)
    return decision(write, "scale down: drained" + (f"; {hold}" if hold else ""), new)
