"""Writes paced by the API budget: what a pass cannot pay for is deferred, never queued, and decided again."""

from __future__ import annotations

from typing import Any

import pytest

from ecs_cluster_manager import config as settings
from ecs_cluster_manager.aws.ecs import Api
from ecs_cluster_manager.engine import passes as reconcile
from ecs_cluster_manager.engine.passes import DEFERRED_REASON, run_pass
from ecs_cluster_manager.observe.memory import Memory
from localecs import LocalECS

CLUSTER = "prod"
DISTINCT = [{"type": "distinctInstance"}]


class Log:
    """Stands in for reconcile's logger: keeps each event with its fields."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.events.append({"event": event, **fields})

    error = warning = debug = info


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def local(ecs: LocalECS, monkeypatch: pytest.MonkeyPatch) -> LocalECS:
    for key, value in ecs.env().items():
        monkeypatch.setenv(key, value)
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, 2)
    return ecs


def test_a_pass_writes_what_the_budget_pays_scale_ups_first_then_the_longest_waiting(
    local: LocalECS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Write burst 5 (API_BUDGET=0.1): 4 scale-ups and 1 scale-down now, the rest deferred and decided again later."""
    ups, downs = ["up1", "up2", "up3", "up4"], ["down1", "down2", "down3", "down4"]
    for name in downs + ups:  # the scale-downs come first in SERVICES: order alone does not decide
        local.create_service(CLUSTER, name, desired_count=0 if name in ups else 10, placement_constraints=DISTINCT)
    clock = Clock()
    api = Api(local.region, endpoint_url=local.endpoint_url, api_budget=0.1, clock=clock)
    config = settings.load([], {"CLUSTER": CLUSTER, "SERVICES": " ".join([*downs, *ups]), "API_BUDGET": "0.1"})
    memory = Memory()

    log = Log()
    monkeypatch.setattr(reconcile, "log", log)
    first = run_pass(api, config, memory)
    assert first.deferred == 3 and first.ok
    assert sorted(d.service for d in first.decisions if d.action == "update") == ["down1", *ups]
    assert sorted(d.service for d in first.decisions if d.reason == DEFERRED_REASON) == ["down2", "down3", "down4"]
    assert {local.desired_count(CLUSTER, name) for name in ups} == {2}
    assert [e["deferred"] for e in log.events if e["event"] == "pass"] == [3] and first.summary()["deferred"] == 3

    # A service that starts wanting a write later waits behind those deferred before it.
    local.create_service(CLUSTER, "late", desired_count=10, placement_constraints=DISTINCT)
    config = settings.load([], {"CLUSTER": CLUSTER, "SERVICES": " ".join(["late", *downs, *ups]), "API_BUDGET": "0.1"})
    clock.now += 4.0  # 2 tokens at 0.5 writes a second
    assert api.writes_available() == 2
    second = run_pass(api, config, memory)
    assert second.deferred == 2
    assert sorted(d.service for d in second.decisions if d.action == "update") == ["down2", "down3"]

    clock.now += 100
    third = run_pass(api, config, memory)
    assert third.deferred == 0
    assert sorted(d.service for d in third.decisions if d.action == "update") == ["down4", "late"]
    assert {local.desired_count(CLUSTER, name) for name in ["late", *downs, *ups]} == {2}
    assert memory.waiting_since == {}


def test_once_waits_for_tokens_instead_of_deferring(local: LocalECS) -> None:
    """--once has no next pass: every write is sent, each waiting for its token."""
    names = [f"s{i}" for i in range(7)]
    for name in names:
        local.create_service(CLUSTER, name, placement_constraints=DISTINCT)
    api = Api(local.region, endpoint_url=local.endpoint_url, api_budget=0.1)
    waits: list[float] = []
    api.transport._wait_for_token = lambda seconds: bool(waits.append(seconds))  # type: ignore[method-assign]
    config = settings.load(["--once"], {"CLUSTER": CLUSTER, "SERVICES": " ".join(names)})
    report = run_pass(api, config, None)
    assert report.deferred == 0 and report.count("update") == 7
    assert len(waits) == 2  # the burst of 5 paid at once, 2 more waited for
