"""How many tasks a service wants: the ecs-cluster-manager:* sizing tags, read and applied. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

TAG_PREFIX = "ecs-cluster-manager:"
TASKS_PER_HOST_TAG = TAG_PREFIX + "tasks-per-host"
MIN_TAG = TAG_PREFIX + "min"
MAX_TAG = TAG_PREFIX + "max"
STACK_NAME_TAG = "aws:cloudformation:stack-name"


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
