"""model/room.py chooses the fewest preemptible tasks that make a daemon's task fit, and says which gaps are due."""

from __future__ import annotations

import pytest

from ecs_cluster_manager.aws.ecs import task_definition_needs
from ecs_cluster_manager.model import room
from ecs_cluster_manager.model.room import Candidate, Gap, Needs, Room, RoomWatch


def task(name: str, cpu: int = 0, memory: int = 0, *ports: str, service: str = "web") -> Candidate:
    return Candidate(f"arn:aws:ecs:us-east-1:1:task/c/{name}", service, Needs(cpu, memory, frozenset(ports)))


def names(chosen: tuple[Candidate, ...] | None) -> list[str] | None:
    return None if chosen is None else [c.task_arn.rsplit("/", 1)[-1] for c in chosen]


@pytest.mark.parametrize(
    ("need", "left", "candidates", "expected"),
    [
        # The room is there already: nothing to stop.
        (Needs(0, 256), Room(0, 300), [task("a", 0, 512)], []),
        # One big task frees more than three small ones together need: the fewest tasks win.
        (Needs(0, 1024), Room(0, 100), [task("a", 0, 400), task("b", 0, 400), task("c", 0, 400), task("d", 0, 2000)],
         ["d"]),
        # Two are needed: the pair taking the least memory.
        (Needs(0, 1000), Room(0, 0), [task("a", 0, 600), task("b", 0, 500), task("c", 0, 900)], ["a", "b"]),
        # Equal size: the one taking the least memory, not the first by ARN.
        (Needs(0, 500), Room(0, 0), [task("a", 0, 2000), task("b", 0, 600)], ["b"]),
        # CPU short, memory plenty: the task that frees CPU, however small its memory.
        (Needs(512, 256), Room(100, 4000), [task("a", 0, 3000), task("b", 512, 64)], ["b"]),
        # Memory short, CPU plenty: the reverse.
        (Needs(128, 1024), Room(2048, 0), [task("a", 1024, 128), task("b", 0, 1100)], ["b"]),
        # Both short: one task must free both, else two.
        (Needs(512, 512), Room(0, 0), [task("a", 512, 0), task("b", 0, 512), task("c", 600, 600)], ["c"]),
        (Needs(512, 512), Room(0, 0), [task("a", 512, 0), task("b", 0, 512)], ["a", "b"]),
        # A port in use: the task holding it must go, even with memory to spare.
        (Needs(0, 64, frozenset({"8080/tcp"})), Room(0, 4000, frozenset({"8080/tcp", "22/tcp"})),
         [task("a", 0, 64), task("b", 0, 32, "8080/tcp")], ["b"]),
        # The port holder plus a second task for memory.
        (Needs(0, 1000, frozenset({"8080/tcp"})), Room(0, 0, frozenset({"8080/tcp"})),
         [task("a", 0, 1000), task("b", 0, 100, "8080/tcp"), task("c", 0, 2000)], ["a", "b"]),
        # The same port over UDP is another port.
        (Needs(0, 0, frozenset({"53/udp"})), Room(0, 0, frozenset({"53/tcp"})), [task("a", 0, 0, "53/tcp")], []),
        # A needed port held by no candidate (another task, the agent): nothing frees it.
        (Needs(0, 0, frozenset({"51678/tcp"})), Room(0, 4000, frozenset({"51678/tcp"})), [task("a", 0, 4000)], None),
        # Not enough among every candidate together.
        (Needs(1024, 4096), Room(0, 0), [task("a", 512, 2048), task("b", 256, 2048)], None),
        # No candidate at all.
        (Needs(0, 1), Room(0, 0), [], None),
    ],
    ids=[
        "room-already", "fewest-tasks", "least-memory-pair", "least-memory-single", "cpu-short", "memory-short",
        "both-one-task", "both-two-tasks", "port-holder", "port-and-memory", "udp-is-another-port",
        "port-not-freeable", "not-enough", "no-candidate",
    ],
)
def test_choose_stops_the_fewest_tasks_that_free_enough(
    need: Needs, left: Room, candidates: list[Candidate], expected: list[str] | None
) -> None:
    """The fewest tasks whose stopping makes the need fit; the least taken among equals; None when none do."""
    assert names(room.choose(need, left, candidates)) == expected


def test_ties_are_broken_by_task_arn_whatever_the_order() -> None:
    """Two tasks that free the same: the one whose ARN sorts first, in any order of the candidates."""
    twins = [task("b", 0, 512), task("a", 0, 512)]
    assert names(room.choose(Needs(0, 512), Room(0, 0), twins)) == ["a"]
    assert names(room.choose(Needs(0, 512), Room(0, 0), list(reversed(twins)))) == ["a"]


def test_a_search_beyond_its_bound_takes_the_largest_tasks_first() -> None:
    """Too many subsets to try (20 of 40 small tasks): the largest first, still the fewest with one resource short,
    and quickly; when even every task together is not enough, nothing."""
    many = [task(f"t{i:02}", 0, 10 + i % 3) for i in range(40)]
    chosen = room.choose(Needs(0, 230), Room(0, 0), many, max_combinations=1000) or ()
    assert len(chosen) == 20 and sum(c.needs.memory for c in chosen) >= 230
    assert {c.needs.memory for c in chosen} == {12, 11}
    assert room.choose(Needs(0, 10_000), Room(0, 0), many, max_combinations=1000) is None


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("service agent was unable to place a task because no container instance met all of its requirements. "
         "The closest matching container-instance abc has insufficient memory available.", room.MEMORY),
        ("... The closest matching container-instance abc has insufficient CPU units available.", room.CPU),
        ("... The closest matching container-instance abc is already using a port required by your task.", room.PORTS),
        ("... The closest matching container-instance abc is missing an attribute required by your task.", None),
        ('... encountered error "DistinctInstance placement constraint unsatisfied."', None),
        ("... Reason: No Container Instances were found in your cluster.", None),
        (None, None),
    ],
    ids=["memory", "cpu", "ports", "attribute", "distinct", "no-instances", "none"],
)
def test_only_resources_are_a_reason_to_make_room(message: str | None, kind: str | None) -> None:
    """ECS's wording (and the local API's) for memory, CPU and ports is a resource reason; nothing else is."""
    assert room.resource_reason(message) == kind


def test_a_task_of_no_service_has_no_service() -> None:
    """Only `service:NAME` groups name a service; RunTask's `family:...` and an empty group do not."""
    assert room.service_of_group("service:web") == "web"
    assert room.service_of_group("family:batch") is None
    assert room.service_of_group(None) is None
    assert room.service_of_group("service:") is None


HOST_A, HOST_B, HOST_C = "host/a", "host/b", "host/c"


def test_due_takes_overdue_gaps_oldest_first_on_at_most_limit_hosts_and_waits_per_host() -> None:
    """Only gaps older than the grace; one per host, oldest first; a host where room was made within the grace
    waits; no more than `limit` hosts."""
    gaps = [Gap("agent", HOST_A, 10.0), Gap("logs", HOST_A, 5.0), Gap("agent", HOST_B, 20.0),
            Gap("agent", HOST_C, 95.0)]
    assert room.due(gaps, 100.0, 10.0, {}, 5) == [Gap("logs", HOST_A, 5.0), Gap("agent", HOST_B, 20.0)]
    assert room.due(gaps, 100.0, 10.0, {}, 1) == [Gap("logs", HOST_A, 5.0)]
    assert room.due(gaps, 100.0, 10.0, {HOST_A: 95.0}, 1) == [Gap("agent", HOST_B, 20.0)]
    assert room.due(gaps, 100.0, 10.0, {HOST_A: 90.0}, 1) == [Gap("logs", HOST_A, 5.0)]
    assert room.due(gaps, 100.0, 10.0, {}, 0) == []


def test_the_watch_forgets_closed_gaps_and_ended_waits_and_bounds_its_cache() -> None:
    """Notices of closed gaps and waits older than the grace are dropped; the definitions cache keeps the newest."""
    watch = RoomWatch(max_definitions=2)
    watch.noticed = {("agent", HOST_A, "reason"), ("agent", HOST_B, "nothing")}
    watch.last_made = {HOST_A: 50.0, HOST_B: 95.0}
    watch.keep([("agent", HOST_B)], 100.0, 10.0)
    assert watch.noticed == {("agent", HOST_B, "nothing")} and watch.last_made == {HOST_B: 95.0}
    for arn in ("td:1", "td:2", "td:3"):
        watch.remember_definition(arn, Needs(0, 1))
    assert list(watch.definitions) == ["td:2", "td:3"]


@pytest.mark.parametrize(
    ("definition", "needs"),
    [
        ({"cpu": "512", "memory": "1024", "containerDefinitions": [{"cpu": 10, "memory": 20}]}, Needs(512, 1024)),
        ({"cpu": "0.5 vCPU", "memory": "2 GB", "containerDefinitions": []}, Needs(512, 2048)),
        ({"containerDefinitions": [{"cpu": 128, "memory": 256}, {"memoryReservation": 64, "memory": 512}]},
         Needs(128, 320)),
        ({"networkMode": "bridge", "containerDefinitions": [
            {"memory": 32, "portMappings": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 9000},
                                            {"containerPort": 53, "hostPort": 53, "protocol": "udp"}]}]},
         Needs(0, 32, frozenset({"8080/tcp", "53/udp"}))),
        ({"networkMode": "host", "containerDefinitions": [{"memory": 32, "portMappings": [{"containerPort": 9100}]}]},
         Needs(0, 32, frozenset({"9100/tcp"}))),
        ({"networkMode": "awsvpc", "containerDefinitions": [
            {"memory": 32, "portMappings": [{"containerPort": 80, "hostPort": 80}]}]}, Needs(0, 32)),
    ],
    ids=["task-level", "task-level-units", "containers", "bridge-ports", "host-ports", "awsvpc"],
)
def test_a_task_definition_needs_what_ecs_reserves(definition: dict[str, object], needs: Needs) -> None:
    """Task-level cpu and memory win; else containers' cpu and memoryReservation (or memory); host ports by mode."""
    assert task_definition_needs(definition) == needs
