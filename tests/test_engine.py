"""The pass's logic against an in-memory ECS (tests/fakes.py) with time passed in: no local API, no subprocess."""

from __future__ import annotations

import pytest
from fakes import FakeClock, FakeEcs

from ecs_cluster_manager import config as settings
from ecs_cluster_manager.engine.passes import run_pass
from ecs_cluster_manager.model import plan
from ecs_cluster_manager.model.reasons import Reason
from ecs_cluster_manager.observe.memory import Memory

CLUSTER = "prod"
INTERVAL = 10.0
SCALE_DOWN_AFTER = 2  # a lost agent is held for 20 s


def config_for(services: str) -> settings.Config:
    return settings.load(
        [],
        {"CLUSTER": CLUSTER, "SERVICES": services, "INTERVAL": "10", "SCALE_DOWN_AFTER": str(SCALE_DOWN_AFTER)},
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake() -> FakeEcs:
    """Three usable hosts and service web at desiredCount 3: converged."""
    fake = FakeEcs(CLUSTER)
    for _ in range(3):
        fake.add_host()
    fake.add_service("web", 3)
    return fake


def one_pass(fake: FakeEcs, config: settings.Config, memory: Memory, clock: FakeClock) -> dict[str, plan.Decision]:
    report = run_pass(fake, config, memory, now=clock())
    clock.advance(INTERVAL)
    return {decision.service: decision for decision in report.decisions}


def test_a_converged_pass_writes_nothing(fake: FakeEcs, clock: FakeClock) -> None:
    """Hosts and desiredCount agree: the decision is unchanged, converged, and no UpdateService is sent."""
    config = config_for("web")
    memory = Memory.for_config(config, clock=clock)
    for _ in range(2):
        decision = one_pass(fake, config, memory, clock)["web"]
        assert (decision.action, decision.code, decision.reason) == (plan.UNCHANGED, Reason.CONVERGED, "converged")
    assert fake.writes == []


def test_a_new_host_raises_at_once(fake: FakeEcs, clock: FakeClock) -> None:
    """A fourth host registers: the next pass sets desiredCount 4."""
    config = config_for("web")
    memory = Memory.for_config(config, clock=clock)
    one_pass(fake, config, memory, clock)
    fake.add_host()
    decision = one_pass(fake, config, memory, clock)["web"]
    assert (decision.action, decision.target, decision.code) == (plan.UPDATE, 4, Reason.SCALE_UP)
    assert fake.writes == [("web", 4)]


def test_a_lost_agent_is_held_then_lowered_by_time(fake: FakeEcs, clock: FakeClock) -> None:
    """A lost agent keeps counting for SCALE_DOWN_AFTER x INTERVAL seconds of the clock, then the service is lowered."""
    config = config_for("web")
    memory = Memory.for_config(config, clock=clock)
    one_pass(fake, config, memory, clock)
    fake.lose_agent(next(iter(fake.hosts.values())))
    held = one_pass(fake, config, memory, clock)["web"]
    assert (held.action, held.code, held.target) == (plan.UNCHANGED, Reason.HELD, 3)
    assert held.reason.startswith("1 agent(s) lost, scale down held")
    still = one_pass(fake, config, memory, clock)["web"]  # 10 s of 20 s
    assert still.code is Reason.HELD and fake.writes == []
    lowered = one_pass(fake, config, memory, clock)["web"]  # 20 s: the whole hold
    assert (lowered.action, lowered.target, lowered.code) == (plan.UPDATE, 2, Reason.SCALE_DOWN_AGENT_LOST)
    assert fake.writes == [("web", 2)]


def test_a_failed_listing_writes_nothing(fake: FakeEcs, clock: FakeClock) -> None:
    """When listing the hosts fails, every service is skipped with host_count_failed and nothing is written."""
    config = config_for("web")
    memory = Memory.for_config(config, clock=clock)
    fake.add_host()  # a raise would be due
    fake.fail_listing = True
    report = run_pass(fake, config, memory, now=clock())
    [decision] = report.decisions
    assert (decision.action, decision.code, decision.error) == (plan.SKIP, Reason.HOST_COUNT_FAILED, True)
    assert report.errors and not report.observed
    assert fake.writes == []


def test_a_rejected_filter_fails_only_its_services(fake: FakeEcs, clock: FakeClock) -> None:
    """A memberOf expression ECS rejects skips the service that uses it; the others are sized as usual."""
    fake.add_service("edge", 0, "attribute:INVALID ==")
    fake.add_host()
    config = config_for("web edge")
    memory = Memory.for_config(config, clock=clock)
    decisions = one_pass(fake, config, memory, clock)
    assert (decisions["edge"].action, decisions["edge"].code) == (plan.SKIP, Reason.HOST_COUNT_FAILED)
    assert decisions["edge"].reason.startswith("host count failed: ")
    assert (decisions["web"].action, decisions["web"].target) == (plan.UPDATE, 4)
    assert fake.writes == [("web", 4)]


def test_a_pass_without_memory_or_now_still_runs(fake: FakeEcs) -> None:
    """The defaults still work: no memory (as --once) and no `now` (the pass reads the clock itself)."""
    fake.add_host()
    report = run_pass(fake, config_for("web"))
    assert [d.code for d in report.decisions] == [Reason.SCALE_UP] and fake.writes == [("web", 4)]
