"""End to end: `python run.py` against the local ECS API stays inside the API budget and reaches every target.

Every ECS request the daemon sends is recorded with its arrival time by a
LocalECS fault hook (which faults nothing unless a test says so), so the calls
can be replayed through the documented ECS buckets (budget.shortfall).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon_helpers import Daemon
from ecs_cluster_manager.aws import budget
from localecs import ApiRequest, Fault, LocalECS

CLUSTER = "prod"
DISTINCT = [{"type": "distinctInstance"}]
LONG_INTERVAL = "300"  # no regular pass in these tests after the first: only events and the budget start passes
# A request arrives a few milliseconds after its token was taken; the replay forgives that much.
ARRIVAL_SLACK = 0.1


class Recorder:
    """A fault hook that notes (monotonic time, operation) of every ECS request and optionally throttles some."""

    def __init__(self, throttle: Callable[[ApiRequest], bool] | None = None) -> None:
        self.calls: list[tuple[float, str]] = []
        self.throttled: list[tuple[float, str]] = []
        self.throttle = throttle
        self._lock = threading.Lock()

    def __call__(self, request: ApiRequest) -> Fault | None:
        if request.service != "ecs":
            return None
        with self._lock:
            now = time.monotonic()
            if self.throttle is not None and self.throttle(request):
                self.throttled.append((now, request.operation))
                return Fault.throttle()
            self.calls.append((now, request.operation))
        return None

    def times(self, operation: str) -> list[float]:
        with self._lock:
            return [at for at, name in self.calls if name == operation]


def desired_counts(local: LocalECS, names: list[str]) -> dict[str, int]:
    """Every service's desiredCount, read by LocalECS's own client (neither recorded nor faulted)."""
    client = local._admin_client("ecs")
    counts: dict[str, int] = {}
    for start in range(0, len(names), 10):
        answer = client.describe_services(cluster=CLUSTER, services=names[start : start + 10])
        counts.update({s["serviceName"]: int(s["desiredCount"]) for s in answer["services"]})
    return counts


def passes(daemon: Daemon) -> list[dict[str, Any]]:
    return [e for e in daemon.events if e.get("event") == "pass"]


def make_services(local: LocalECS, count: int) -> list[str]:
    names = [f"svc{index:02d}" for index in range(count)]
    for name in names:
        local.create_service(CLUSTER, name, placement_constraints=DISTINCT)
    return names


@pytest.mark.parametrize(
    ("share", "burst", "rate"),
    [("1.0", 50, 5.0), ("0.1", 5, 0.5)],
    ids=["budget-1.0", "budget-0.1"],
)
def test_the_budget_share_sets_the_pace_of_writes(
    ecs: LocalECS, tmp_path: Path, share: str, burst: int, rate: float
) -> None:
    """10 services to raise at once: API_BUDGET=1.0 writes all 10 in one pass; 0.1 writes its burst of 5,
    defers 5, and writes them about 5 / 0.5 = 10 s later, in the pass it runs as soon as the budget pays."""
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, 2)
    names = make_services(ecs, 10)
    recorder = Recorder()
    ecs.fault_hook = recorder
    with Daemon(
        ecs,
        CLUSTER=CLUSTER,
        SERVICES=" ".join(names),
        INTERVAL=LONG_INTERVAL,
        API_BUDGET=share,
        HEARTBEAT_FILE=str(tmp_path / "hb"),
    ) as daemon:
        assert daemon.wait_for(lambda: set(desired_counts(ecs, names).values()) == {2}, timeout=30), daemon.lines
        assert daemon.wait_for(lambda: sum(p["updated"] for p in passes(daemon)) == 10, timeout=5)
        assert daemon.stop() == 0
    writes = recorder.times("UpdateService")
    assert len(writes) == 10
    now_paid = min(burst, 10)
    assert writes[now_paid - 1] - writes[0] < 1.0  # the burst goes at once
    deferred = [p["deferred"] for p in passes(daemon)]
    assert deferred[0] == 10 - now_paid
    if now_paid < 10:
        later = (10 - now_paid) / rate  # the next pass waits until the bucket holds all the deferred writes
        gap = writes[now_paid] - writes[now_paid - 1]
        assert later - 1.5 <= gap <= later + 3.0, writes
        assert deferred[1:] == [0] and len(passes(daemon)) == 2
    assert budget.shortfall(recorder.calls, float(share), slack=ARRIVAL_SLACK) == dict.fromkeys(
        budget.CATEGORY_OF.values(), 0
    )


@pytest.mark.slow
def test_a_scale_out_storm_stays_within_half_of_every_bucket_and_settles_in_time(ecs: LocalECS, tmp_path: Path) -> None:
    """Events mode, 30 managed services, 40 hosts joining at 5 a second (the issue's 200 over 40 s, scaled down
    to keep the test short): the daemon's calls replayed through the documented buckets at half size are never
    short, and every service reaches the final host count within 30 / 2.5 s plus one pass of the last host."""
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, 2)
    names = make_services(ecs, 30)
    queue_url = ecs.enable_events(CLUSTER)
    recorder = Recorder()
    ecs.fault_hook = recorder
    with Daemon(
        ecs,
        CLUSTER=CLUSTER,
        SERVICES=" ".join(names),
        INTERVAL=LONG_INTERVAL,
        EVENTS_QUEUE_URL=queue_url,
        HEARTBEAT_FILE=str(tmp_path / "hb"),
    ) as daemon:
        assert daemon.wait_for(lambda: set(desired_counts(ecs, names).values()) == {2}, timeout=60), daemon.lines
        assert daemon.wait_for(lambda: any(e.get("event") == "events_start" for e in daemon.events))
        hosts = 2
        started = time.monotonic()
        for index in range(40):
            time.sleep(max(0.0, started + index / 5 - time.monotonic()))
            ecs.add_hosts(CLUSTER, 1)
            hosts += 1
        last_host = time.monotonic()
        assert daemon.wait_for(lambda: set(desired_counts(ecs, names).values()) == {hosts}, timeout=60)
        settled = time.monotonic() - last_host
        one_pass = max(p["duration"] for p in passes(daemon))
        assert daemon.stop() == 0
    services_over_rate = 30 / 2.5
    # Plus the event's way to the daemon (the queue's long poll and the events source's settle): about a second.
    assert settled <= services_over_rate + one_pass + 2.0, (settled, one_pass)
    short = budget.shortfall(recorder.calls, budget.DEFAULT_SHARE, slack=ARRIVAL_SLACK)
    assert short == dict.fromkeys(budget.CATEGORY_OF.values(), 0), short
    assert any(p["deferred"] for p in passes(daemon))  # the budget did pace the writes
    # Never a write the decisions did not ask for: each UpdateService is a logged update.
    assert len(recorder.times("UpdateService")) == sum(p["updated"] for p in passes(daemon))


@pytest.mark.slow
def test_a_throttling_burst_slows_the_daemon_and_loses_no_write(ecs: LocalECS, tmp_path: Path) -> None:
    """ECS throttles the first 6 UpdateService requests (someone else spent the bucket): the write budget shrinks,
    the writes after it come more slowly, the ones throttled through every retry are deferred, and every service
    still reaches its target, with no decision in error."""
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, 2)
    names = make_services(ecs, 4)
    remaining = [6]

    def throttle(request: ApiRequest) -> bool:
        if request.operation != "UpdateService" or remaining[0] == 0:
            return False
        remaining[0] -= 1
        return True

    recorder = Recorder(throttle)
    ecs.fault_hook = recorder
    with Daemon(
        ecs,
        CLUSTER=CLUSTER,
        SERVICES=" ".join(names),
        INTERVAL=LONG_INTERVAL,
        HEARTBEAT_FILE=str(tmp_path / "hb"),
    ) as daemon:
        assert daemon.wait_for(lambda: set(desired_counts(ecs, names).values()) == {2}, timeout=90), daemon.lines
        assert daemon.wait_for(lambda: sum(p["updated"] for p in passes(daemon)) == 4, timeout=10)
        assert daemon.stop() == 0
    assert len(recorder.throttled) == 6
    assert not [e for e in daemon.events if e.get("event") == "decision" and e.get("level") == "error"]
    assert sum(p["deferred"] for p in passes(daemon)) >= 1
    # Unthrottled, 4 writes go within a second (the burst); after the throttles they were paced out.
    writes = recorder.times("UpdateService")
    attempts = sorted([*writes, *(at for at, _ in recorder.throttled)])
    assert attempts[-1] - attempts[0] > 3.0
    gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    assert max(gaps) >= 1 / (2.5 / 2)  # at least one wait at half the write rate or slower
