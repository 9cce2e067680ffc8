"""Room made on a full host: which tasks of preemptible services to stop so a daemon's task fits.

Pure: no I/O, no clock, no logging. The reads and StopTask are engine/room.py.

A make-room service (tag `ecs-cluster-manager:make-room=true`, managed) whose
task ECS cannot place on an eligible host for lack of resources gets room
there: the manager stops the fewest tasks of preemptible services (tag
`ecs-cluster-manager:preemptible=true`, any service but a managed one) that
free what the daemon's task definition needs, given what the host has left.
ECS's service scheduler then places the daemon's task there and the stopped
tasks where they fit.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ecs_cluster_manager.model.sizing import TAG_PREFIX

MAKE_ROOM_TAG = TAG_PREFIX + "make-room"
PREEMPTIBLE_TAG = TAG_PREFIX + "preemptible"
TRUE = "true"
SERVICE_GROUP = "service:"  # a service's tasks have group `service:NAME`; RunTask's and batch jobs' do not
STOP_REASON = "ecs-cluster-manager: making room for {service}"

# ECS's placement failure names what the closest matching container instance lacks. These say it lacks
# resources (the local API's scheduler words them the same way); anything else (a missing attribute, a
# distinctInstance conflict, no instance at all) is not solved by stopping tasks.
MEMORY = "memory"
CPU = "cpu"
PORTS = "ports"
RESOURCE_WORDING = (
    ("insufficient memory", MEMORY),
    ("insufficient cpu", CPU),
    ("already using a port", PORTS),
)

# Subsets of a host's tasks tried before settling for the greedy choice: with a few dozen tasks on a host the
# fewest that fit are found long before this.
MAX_COMBINATIONS = 200_000


def is_true(tags: Mapping[str, str], key: str) -> bool:
    return tags.get(key, "").strip().lower() == TRUE


def makes_room(tags: Mapping[str, str]) -> bool:
    """Whether a managed service asked for room to be made for its task (its make-room tag)."""
    return is_true(tags, MAKE_ROOM_TAG)


def resource_reason(placement_failure: str | None) -> str | None:
    """`memory`, `cpu` or `ports` when ECS's placement failure says the host lacks that resource, else None."""
    if not placement_failure:
        return None
    text = placement_failure.lower()
    return next((kind for wording, kind in RESOURCE_WORDING if wording in text), None)


def service_of_group(group: str | None) -> str | None:
    """The service name of a task's group (`service:NAME`), None for a task of no service."""
    if not group or not group.startswith(SERVICE_GROUP):
        return None
    return group[len(SERVICE_GROUP) :] or None


@dataclass(frozen=True)
class Needs:
    """What a task reserves on its host: CPU units, MiB of memory, and host ports ("80/tcp", "53/udp")."""

    cpu: int = 0
    memory: int = 0
    ports: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Room:
    """What a host has left (its remainingResources): CPU units, MiB, and the host ports in use."""

    cpu: int
    memory: int
    ports_in_use: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Candidate:
    """A task that may be stopped to make room: its ARN, its service, and what stopping it frees."""

    task_arn: str
    service: str
    needs: Needs


def fits(need: Needs, room: Room) -> bool:
    return need.cpu <= room.cpu and need.memory <= room.memory and not need.ports & room.ports_in_use


def _freed(room: Room, stopped: Iterable[Candidate]) -> Room:
    tasks = list(stopped)
    freed_ports = frozenset[str]().union(*(task.needs.ports for task in tasks))
    return Room(
        cpu=room.cpu + sum(task.needs.cpu for task in tasks),
        memory=room.memory + sum(task.needs.memory for task in tasks),
        ports_in_use=room.ports_in_use - freed_ports,
    )


def choose(
    need: Needs, room: Room, candidates: Sequence[Candidate], *, max_combinations: int = MAX_COMBINATIONS
) -> tuple[Candidate, ...] | None:
    """The fewest candidates whose stopping makes `need` fit in `room`; () when it fits already; None when none do.

    Among sets of the same size, the one that takes the least (memory, then
    CPU, then host ports) wins, then the one whose task ARNs sort first, so
    the choice is the same on every pass. A needed port in use by no candidate
    (another task, the agent's own) can never be freed: None. A host with so
    many small tasks that more than `max_combinations` sets would be tried
    gets the greedy choice instead (`_greedy`).
    """
    if fits(need, room):
        return ()
    pool = sorted({c.task_arn: c for c in candidates}.values(), key=lambda c: c.task_arn)
    # Every candidate holding a needed port must go; only then can CPU and memory be made up by others.
    holding = [c for c in pool if c.needs.ports & need.ports]
    freeable = frozenset[str]().union(*(c.needs.ports for c in holding))
    if (need.ports & room.ports_in_use) - freeable:
        return None
    others = [c for c in pool if c not in holding]
    base = _freed(room, holding)
    short_cpu = max(0, need.cpu - base.cpu)
    short_memory = max(0, need.memory - base.memory)
    by_cpu = sorted((c.needs.cpu for c in others), reverse=True)
    by_memory = sorted((c.needs.memory for c in others), reverse=True)
    tried = 0
    for size in range(len(others) + 1):
        # The most `size` tasks could free: fewer than that never suffice, so skip the size without trying it.
        if sum(by_cpu[:size]) < short_cpu or sum(by_memory[:size]) < short_memory:
            continue
        best: tuple[tuple[int, int, int, tuple[str, ...]], tuple[Candidate, ...]] | None = None
        for extra in itertools.combinations(others, size):
            tried += 1
            if tried > max_combinations:
                return _greedy(need, room, holding, others, short_cpu, short_memory)
            chosen = (*holding, *extra)
            if not fits(need, _freed(room, chosen)):
                continue
            key = (
                sum(c.needs.memory for c in chosen),
                sum(c.needs.cpu for c in chosen),
                sum(len(c.needs.ports) for c in chosen),
                tuple(sorted(c.task_arn for c in chosen)),
            )
            if best is None or key < best[0]:
                best = (key, chosen)
        if best is not None:
            return tuple(sorted(best[1], key=lambda c: c.task_arn))
    return None


def _greedy(
    need: Needs,
    room: Room,
    holding: Sequence[Candidate],
    others: Sequence[Candidate],
    short_cpu: int,
    short_memory: int,
) -> tuple[Candidate, ...] | None:
    """Beyond the search's bound: the tasks that free most of what is short first, until the need fits.

    The fewest when only one resource is short (as it nearly always is); with
    both short, a few more than the fewest at worst.
    """

    def share(candidate: Candidate) -> float:
        cpu = min(candidate.needs.cpu, short_cpu) / short_cpu if short_cpu else 0.0
        memory = min(candidate.needs.memory, short_memory) / short_memory if short_memory else 0.0
        return cpu + memory

    chosen = list(holding)
    for candidate in sorted(others, key=lambda c: (-share(c), c.task_arn)):
        if fits(need, _freed(room, chosen)):
            break
        chosen.append(candidate)
    if not fits(need, _freed(room, chosen)):
        return None
    return tuple(sorted(chosen, key=lambda c: c.task_arn))


@dataclass(frozen=True)
class Preemption:
    """One task stopped to make room: the task, its service, the service it made room for, and the host."""

    task_arn: str
    service: str
    for_service: str
    container_instance_arn: str


@dataclass(frozen=True)
class Gap:
    """A host missing a make-room service's task: the service, the host, and since when (the caller's clock)."""

    service: str
    container_instance_arn: str
    since: float


def due(
    gaps: Iterable[Gap], now: float, grace: float, last_made: Mapping[str, float], limit: int
) -> list[Gap]:
    """The gaps to make room for now, oldest first, on at most `limit` distinct hosts.

    A gap is due once it has lasted `grace` seconds, unless room was made (or
    looked for) on its host less than `grace` ago: ECS gets that long to place.
    One host is taken once, for its oldest gap.
    """
    chosen: list[Gap] = []
    hosts: set[str] = set()
    for gap in sorted(gaps, key=lambda g: (g.since, g.service, g.container_instance_arn)):
        host = gap.container_instance_arn
        if len(hosts) >= limit:
            break
        if host in hosts or now - gap.since < grace:
            continue
        made = last_made.get(host)
        if made is not None and now - made < grace:
            continue
        chosen.append(gap)
        hosts.add(host)
    return chosen


@dataclass
class RoomWatch:
    """What the loop keeps between passes for making room: per host the time room was last made (or looked for)
    there, the (service, host, kind) notices already logged, and the task definitions read (immutable per ARN)."""

    last_made: dict[str, float] = field(default_factory=dict)  # host ARN -> the caller's clock
    noticed: set[tuple[str, str, str]] = field(default_factory=set)
    definitions: dict[str, Needs] = field(default_factory=dict)
    max_definitions: int = 256

    def remember_definition(self, arn: str, needs: Needs) -> None:
        """Cache one task definition's needs, dropping the oldest entries beyond `max_definitions`."""
        self.definitions.pop(arn, None)
        self.definitions[arn] = needs
        while len(self.definitions) > self.max_definitions:
            del self.definitions[next(iter(self.definitions))]

    def keep(self, open_gaps: Iterable[tuple[str, str]], now: float, grace: float) -> None:
        """Forget the notices of gaps now closed and the hosts whose wait is over: memory stays bounded."""
        still = set(open_gaps)
        self.noticed = {key for key in self.noticed if (key[0], key[1]) in still}
        self.last_made = {host: at for host, at in self.last_made.items() if now - at < grace}
