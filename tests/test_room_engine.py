"""Making room in the pass, against the in-memory ECS (tests/fakes.py) with time passed in.

Three hosts lack the task of the make-room service `agent` (512 MiB) for want of
memory: each runs a 1024 MiB task of the preemptible service `web` and has 100
MiB left. COVERAGE_GRACE is 30 s and a pass runs every 10 s.
"""

from __future__ import annotations

import pytest
from fakes import FakeClock, FakeEcs, FakeHost
from structlog.testing import capture_logs

from ecs_cluster_manager import config as settings
from ecs_cluster_manager.engine.passes import run_pass
from ecs_cluster_manager.model.report import PassReport
from ecs_cluster_manager.model.room import MAKE_ROOM_TAG, PREEMPTIBLE_TAG, Needs
from ecs_cluster_manager.observe.memory import Memory

CLUSTER = "prod"
INTERVAL = 10.0
GRACE = 30.0
AGENT_DEFINITION = "arn:aws:ecs:us-east-1:123456789012:task-definition/agent:3"
NO_MEMORY = (
    "service agent was unable to place a task because no container instance met all of its requirements. "
    "The closest matching container-instance h1 has insufficient memory available."
)
REASON = "ecs-cluster-manager: making room for agent"


def config_for(**extra: str) -> settings.Config:
    return settings.load(
        [],
        {"CLUSTER": CLUSTER, "SERVICES": "agent logs", "INTERVAL": "10", "COVERAGE_GRACE": str(int(GRACE)), **extra},
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake() -> FakeEcs:
    """The module docstring's cluster; `logs` is a second managed service, converged, that asks for no room."""
    fake = FakeEcs(CLUSTER)
    for _ in range(3):
        host = fake.add_host()
        host.remaining_memory = 1124
    fake.add_service("agent", 3)
    agent = fake.services["agent"]
    agent.tags = {MAKE_ROOM_TAG: "true"}
    agent.task_definition = AGENT_DEFINITION
    agent.placement_failure = NO_MEMORY
    fake.definitions[AGENT_DEFINITION] = Needs(0, 512)
    fake.add_service("logs", 3)
    fake.add_service("web", 3)
    fake.services["web"].tags = {PREEMPTIBLE_TAG: "true"}
    for host in fake.hosts.values():
        fake.place(host, "service:web", Needs(0, 1024))
    return fake


def hosts(fake: FakeEcs) -> list[FakeHost]:
    return list(fake.hosts.values())


def stopped_on(fake: FakeEcs, before: int = 0) -> list[str]:
    """The hosts of the tasks stopped since the `before`th stop."""
    return [host for _, host, _ in fake.stops[before:]]


def run(fake: FakeEcs, config: settings.Config, memory: Memory, clock: FakeClock) -> PassReport:
    report = run_pass(fake, config, memory, now=clock())
    clock.advance(INTERVAL)
    return report


def test_room_is_made_on_one_host_a_pass_past_the_grace_oldest_first(fake: FakeEcs, clock: FakeClock) -> None:
    """Nothing within the grace; then, with MAKE_ROOM_MAX 1, web's task is stopped on one host a pass, by host
    ARN among gaps of the same age, each with the reason; a host that has its room is left alone."""
    config = config_for()
    memory = Memory.for_config(config, clock=clock)
    for _ in range(3):  # 0, 10, 20 s: within the grace
        run(fake, config, memory, clock)
    assert fake.stops == []
    h1, h2, h3 = (h.arn for h in hosts(fake))
    report = run(fake, config, memory, clock)  # 30 s
    assert stopped_on(fake) == [h1] and [r for _, _, r in fake.stops] == [REASON]
    assert [(p.service, p.for_service, p.container_instance_arn) for p in report.preempted] == [("web", "agent", h1)]
    run(fake, config, memory, clock)
    run(fake, config, memory, clock)
    assert stopped_on(fake) == [h1, h2, h3]
    for _ in range(6):  # every host has room now (the fake places nothing): nothing more is stopped
        run(fake, config, memory, clock)
    assert len(fake.stops) == 3


@pytest.mark.parametrize(("most", "per_pass"), [("2", [2, 1, 0]), ("0", [0, 0, 0])])
def test_make_room_max_bounds_the_hosts_a_pass_and_zero_turns_it_off(
    fake: FakeEcs, clock: FakeClock, most: str, per_pass: list[int]
) -> None:
    """MAKE_ROOM_MAX 2 stops on two hosts in the first pass past the grace and on the third in the next; 0 never
    stops anything (and reads nothing for it)."""
    config = config_for(MAKE_ROOM_MAX=most)
    memory = Memory.for_config(config, clock=clock)
    for _ in range(3):
        run(fake, config, memory, clock)
    stops = []
    for _ in per_pass:
        before = len(fake.stops)
        run(fake, config, memory, clock)
        stops.append(len(fake.stops) - before)
    assert stops == per_pass


def test_a_host_is_not_made_room_on_again_within_the_grace(fake: FakeEcs, clock: FakeClock) -> None:
    """After a stop on a host, another task takes the room again (as ECS may place web back there): the host waits
    COVERAGE_GRACE since its stop before room is made there again."""
    config = config_for(MAKE_ROOM_MAX="3")
    memory = Memory.for_config(config, clock=clock)
    for _ in range(4):
        run(fake, config, memory, clock)
    assert len(fake.stops) == 3
    h1 = hosts(fake)[0]
    fake.place(h1, "service:web", Needs(0, 1024))  # at 40 s the room on h1 is taken again
    for _ in range(2):  # 40 and 50 s: within the grace of the stop at 30 s
        run(fake, config, memory, clock)
    assert len(fake.stops) == 3
    run(fake, config, memory, clock)
    assert len(fake.stops) == 4 and stopped_on(fake, 3) == [h1.arn]


def test_only_unmanaged_preemptible_service_tasks_are_stopped(fake: FakeEcs, clock: FakeClock) -> None:
    """On h1 a managed service's task (tagged preemptible too), a task of no service and a task of an untagged
    service would each free enough with less memory taken: web's task is stopped all the same."""
    h1 = hosts(fake)[0]
    fake.services["logs"].tags = {PREEMPTIBLE_TAG: "true"}
    fake.add_service("db", 1)
    for group in ("service:logs", "family:batch", "service:db"):
        h1.remaining_memory += 600
        fake.place(h1, group, Needs(0, 600))
    [web] = [t.arn for t in fake.host_tasks.values() if t.container_instance_arn == h1.arn and "web" in t.group]
    config = config_for()
    memory = Memory.for_config(config, clock=clock)
    for _ in range(4):
        run(fake, config, memory, clock)
    assert [task for task, _, _ in fake.stops] == [web]


def test_a_failed_read_stops_nothing_and_a_failed_stop_spares_the_pass(fake: FakeEcs, clock: FakeClock) -> None:
    """A failing DescribeTaskDefinition: nothing is stopped and the pass says why; a failing StopTask is logged
    and reported for agent alone, the sizing decisions stand; once StopTask works, room is made."""
    config = config_for()
    memory = Memory.for_config(config, clock=clock)
    for _ in range(3):
        run(fake, config, memory, clock)
    fake.failing = {"DescribeTaskDefinition"}
    report = run(fake, config, memory, clock)
    assert fake.stops == [] and "DescribeTaskDefinition" in report.room_errors["agent"]
    fake.failing = {"StopTask"}
    with capture_logs() as logs:
        report = run(fake, config, memory, clock)
    assert fake.stops == [] and "StopTask" in report.room_errors["agent"]
    assert [e["event"] for e in logs if e["event"].startswith("room_")] == ["room_stop_failed"]
    assert {d.service: d.action for d in report.decisions} == {"agent": "unchanged", "logs": "unchanged"}
    assert report.ok and not report.errors
    fake.failing = set()
    for _ in range(3):  # the host whose stop failed waits a grace; the others are next
        run(fake, config, memory, clock)
    assert len(fake.stops) == 3


def test_once_makes_no_room(fake: FakeEcs, clock: FakeClock) -> None:
    """--once keeps no gap history, so it never stops a task."""
    config = settings.load(
        ["--once"], {"CLUSTER": CLUSTER, "SERVICES": "agent", "INTERVAL": "10", "COVERAGE_GRACE": "0"}
    )
    run_pass(fake, config, None, now=clock())
    assert fake.stops == []


def test_a_reason_that_is_not_resources_is_said_once_per_host_however_often_coverage_is_read(
    fake: FakeEcs, clock: FakeClock
) -> None:
    """ECS says the hosts miss an attribute: nothing is stopped, and room_not_made is logged once per host over
    many passes, some of which read no coverage (with a 60 s grace a gap is read every 15 s, a pass is 10 s)."""
    fake.services["agent"].placement_failure = NO_MEMORY.replace(
        "has insufficient memory available", "is missing an attribute required by your task"
    )
    config = config_for(COVERAGE_GRACE="60")
    memory = Memory.for_config(config, clock=clock)
    with capture_logs() as logs:
        for _ in range(20):
            run(fake, config, memory, clock)
    said = [e for e in logs if e["event"] == "room_not_made"]
    assert sorted(e["containerInstanceArn"] for e in said) == sorted(h.arn for h in hosts(fake))
    assert fake.stops == []
