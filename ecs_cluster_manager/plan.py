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


def seconds(value: float) -> str:
    """A duration for a reason: 0.9s, 12s, 300s."""
    return f"{value:.1f}s" if value < 10 and value != int(value) else f"{value:.0f}s"


def decide(
    service: Service,
    hosts: HostCount,
    size: Sizing,
    *,
    dry_run: bool = False,
    hold: float = 0.0,
) -> Decision:
    """Decide one service's desiredCount.

    The target is the hosts that count, sized: the usable ones and those whose
    agent has been lost for less than `hold` seconds (`hosts.held`), which
    routinely come back. It is the same for raises and lowers: a new host is
    raised for at once, whatever is held. A host drained or deregistered stops
    counting at once (its task only stays PENDING); a lost agent stops counting
    once it has been lost for the whole hold.
    """
    current = service.desired_count
    target = size.target(hosts.counted)

    def decision(action: str, reason: str) -> Decision:
        return Decision(service.name, service.arn, action, current, target, hosts.usable, reason)

    held = ""
    if hosts.held:
        held = f"{hosts.held} agent(s) lost, scale down held ({seconds(hosts.held_for)} of {seconds(hold)})"
    write = DRY_RUN if dry_run else UPDATE
    if target == current:
        return decision(UNCHANGED, held or "converged")
    if target > current:
        return decision(write, "scale up" + (f"; {held}" if held else ""))
    if target < size.target(hosts.active):
        reason = f"scale down: agent lost for {seconds(hold)} or more" if hold > 0 else "scale down: agent lost"
    else:
        reason = "scale down: fewer ACTIVE hosts (drained or deregistered)"
    return decision(write, reason + (f"; {held}" if held else ""))
