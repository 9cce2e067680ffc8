"""Host counting whose cost does not grow with the cluster, and scale-down by cause.

The daemon runs as `python run.py` against the local ECS API for the
behaviour a user sees; the counter itself is driven pass by pass in process,
over the same HTTP API, where a test needs to compare every pass with the truth.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon_helpers import Daemon
from ecs_cluster_manager import config as settings
from ecs_cluster_manager.aws.ecs import Api
from ecs_cluster_manager.engine.passes import run_pass
from ecs_cluster_manager.observe.counting import Counting
from ecs_cluster_manager.observe.hosts import HostStore
from ecs_cluster_manager.observe.memory import Memory
from localecs import ApiCall, LocalECS

CLUSTER = "prod"
DISTINCT = [{"type": "distinctInstance"}]
WEB = "attribute:role == web"
NOT_WEB = "attribute:role != web"
COUNTING_OPERATIONS = ("ListContainerInstances", "DescribeClusters")


def api_for(local: LocalECS, monkeypatch: pytest.MonkeyPatch) -> Api:
    for key, value in local.env().items():
        monkeypatch.setenv(key, value)
    return Api(local.region, endpoint_url=local.endpoint_url)


def truth(local: LocalECS, role: str | None = None, *, negate: bool = False) -> tuple[int, int]:
    """(ACTIVE, usable) hosts as the local API holds them; optionally only those with (or without) a role."""
    hosts = [h for h in local.hosts(CLUSTER) if role is None or (h["attributes"].get("role") == role) != negate]
    active = [h for h in hosts if h["status"] == "ACTIVE"]
    return len(active), sum(1 for h in active if h["agentConnected"])


def counting_calls(calls: list[ApiCall]) -> list[ApiCall]:
    return [c for c in calls if c.service == "ecs" and c.operation in COUNTING_OPERATIONS]


def test_local_api_cluster_count_follows_registrations(ecs: LocalECS) -> None:
    """DescribeClusters' registeredContainerInstancesCount is ACTIVE + DRAINING now, as ECS reports it."""
    ecs.create_cluster(CLUSTER)
    hosts = ecs.add_hosts(CLUSTER, 5)
    client = ecs.client()

    def registered() -> int:
        return int(client.describe_clusters(clusters=[CLUSTER])["clusters"][0]["registeredContainerInstancesCount"])

    def listed(status: str) -> int:
        return len(client.list_container_instances(cluster=CLUSTER, status=status)["containerInstanceArns"])

    assert registered() == 5
    ecs.drain(CLUSTER, hosts[0])
    assert registered() == 5 == listed("ACTIVE") + listed("DRAINING")
    ecs.deregister(CLUSTER, hosts[1])  # moto alone would still say 5
    ecs.deregister(CLUSTER, hosts[0])
    assert registered() == 3 == listed("ACTIVE") + listed("DRAINING")


@pytest.mark.parametrize("host_filter", [(), (WEB,), (NOT_WEB,)], ids=["all", "few", "most"])
def test_a_converged_pass_counts_with_at_most_four_calls_whatever_the_size(
    ecs: LocalECS, monkeypatch: pytest.MonkeyPatch, host_filter: tuple[str, ...]
) -> None:
    """At 450 hosts (5 pages), after the first exact count a filter costs at most 4 calls, not ceil(H/100)."""
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, 420, attributes={"role": "batch"})
    ecs.add_hosts(CLUSTER, 30, attributes={"role": "web"})
    api = api_for(ecs, monkeypatch)
    counter = Counting(HostStore())
    first = counter.regular(api, CLUSTER, [host_filter])[host_filter]
    assert first.exact
    expected = {(): 450, (WEB,): 30, (NOT_WEB,): 420}[host_filter]
    assert first.calls >= expected // 100 + 1  # every page of the filter's hosts, the first time
    for _ in range(5):
        ecs.clear_calls()
        again = counter.regular(api, CLUSTER, [host_filter])[host_filter]
        assert again.count == first.count
        assert len(counting_calls(ecs.calls)) == again.calls <= 4
        # 30 hosts fit on one page: counting them exactly (2 calls) is as cheap as any reading.
        assert again.exact == (host_filter == (WEB,))
    assert first.count.active == first.count.usable == expected


def test_every_pass_counts_the_truth_through_random_changes(ecs: LocalECS, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hosts added, drained, reactivated, deregistered, swapped, disconnected, reconnected, relabelled:
    each pass's count equals the truth, and a pass that lists a filter lists it before it writes."""
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, 150, attributes={"role": "batch"})
    ecs.add_hosts(CLUSTER, 20, attributes={"role": "web"})
    ecs.create_service(CLUSTER, "all", placement_constraints=DISTINCT)
    ecs.create_service(CLUSTER, "web", placement_constraints=[*DISTINCT, {"type": "memberOf", "expression": WEB}])
    # Most hosts match this one: it is read from its complement side.
    ecs.create_service(CLUSTER, "batch", placement_constraints=[*DISTINCT, {"type": "memberOf", "expression": NOT_WEB}])
    api = api_for(ecs, monkeypatch)
    config = settings.load(["--cluster", CLUSTER, "--services", "all,web,batch"], environ={})
    memory = Memory(hold=0.0)
    rng = random.Random(7)

    def pick(predicate: Callable[[dict[str, object]], bool]) -> str | None:
        candidates = [h["containerInstanceArn"] for h in ecs.hosts(CLUSTER) if predicate(h)]
        return rng.choice(candidates) if candidates else None

    def swap() -> None:
        arn = pick(lambda h: h["status"] == "ACTIVE")
        if arn:
            ecs.deregister(CLUSTER, arn)
        ecs.add_hosts(CLUSTER, 1, attributes={"role": rng.choice(["web", "batch"])})

    def act(status: str, action: Callable[[str, str], None]) -> Callable[[], None]:
        def run() -> None:
            arn = pick(lambda h: h["status"] == status)
            if arn:
                action(CLUSTER, arn)

        return run

    changes: list[Callable[[], None]] = [
        lambda: ecs.add_hosts(CLUSTER, rng.randint(1, 3), attributes={"role": rng.choice(["web", "batch"])}),
        act("ACTIVE", ecs.drain),
        act("DRAINING", ecs.activate),
        act("ACTIVE", ecs.deregister),
        act("DRAINING", ecs.deregister),
        swap,
        act("ACTIVE", lambda c, arn: ecs.set_agent_connected(c, arn, False)),
        lambda: [ecs.set_agent_connected(CLUSTER, h["containerInstanceArn"], True) for h in ecs.hosts(CLUSTER)],
        act("ACTIVE", lambda c, arn: ecs.set_attributes(c, arn, {"role": rng.choice(["web", "batch"])})),
        lambda: None,
        lambda: None,
    ]
    cheap_passes = 0
    for step in range(60):
        ecs.clear_calls()
        change = rng.choice(changes)
        change()
        report = run_pass(api, config, memory)
        assert report.ok, report.errors
        all_filter, web_filter = "agentConnected == true", f"agentConnected == true and ({WEB})"
        assert (report.active_hosts[all_filter], report.hosts[all_filter]) == truth(ecs), step
        assert (report.active_hosts[web_filter], report.hosts[web_filter]) == truth(ecs, "web"), step
        batch_filter = f"agentConnected == true and ({NOT_WEB})"
        assert (report.active_hosts[batch_filter], report.hosts[batch_filter]) == truth(ecs, "web", negate=True), step
        cheap_passes += sum(1 for mode in report.counting.values() if mode == "cheap")
        # An update is preceded, in this pass, by a full listing of every filter whose reading changed.
        calls = ecs.calls
        updates = [i for i, c in enumerate(calls) if c.operation == "UpdateService"]
        if updates and any(mode == "exact" for mode in report.counting.values()):
            full = [
                i
                for i, c in enumerate(calls)
                if c.operation == "ListContainerInstances"
                and c.params.get("status") == "ACTIVE"
                and "agentConnected" not in str(c.params.get("filter", ""))
                and not str(c.params.get("filter", "")).startswith("not")
            ]
            assert full and max(full) < min(updates), step
        assert ecs.desired_count(CLUSTER, "all") == truth(ecs)[1]
        assert ecs.desired_count(CLUSTER, "web") == truth(ecs, "web")[1]
        assert ecs.desired_count(CLUSTER, "batch") == truth(ecs, "web", negate=True)[1]
    assert cheap_passes >= 10  # the quiet steps were counted cheaply


def _decision(daemon: Daemon, service: str, after: int) -> list[dict[str, object]]:
    """The decision events for a service in passes after the first `after` ones."""
    seen = 0
    found = []
    for event in daemon.events:
        if event.get("event") == "pass":
            seen += 1
        elif event.get("event") == "decision" and event.get("service") == service and seen >= after:
            found.append(event)
    return found


@pytest.fixture
def four_hosts(ecs: LocalECS) -> list[str]:
    ecs.create_cluster(CLUSTER)
    hosts = ecs.add_hosts(CLUSTER, 4)
    ecs.create_service(CLUSTER, "agent", placement_constraints=DISTINCT, desired_count=4)
    return hosts


def test_draining_one_of_four_hosts_lowers_at_the_next_pass(
    ecs: LocalECS, four_hosts: list[str], tmp_path: Path
) -> None:
    """A drained host is removed on purpose: desiredCount drops at the next pass, SCALE_DOWN_AFTER=5 or not."""
    with Daemon(
        ecs,
        CLUSTER=CLUSTER,
        SERVICES="agent",
        INTERVAL="0.3",
        SCALE_DOWN_AFTER="5",
        HEARTBEAT_FILE=str(tmp_path / "hb"),
    ) as daemon:
        assert daemon.wait_passes(2)
        passes = daemon.passes()
        ecs.drain(CLUSTER, four_hosts[0])
        assert daemon.wait_passes(passes + 2)
        # The pass that started after the drain (at most one was already running) lowered it.
        lowered = [e for e in _decision(daemon, "agent", passes) if e["action"] == "update"]
        assert lowered and lowered[0]["target"] == 3
        assert lowered[0]["reason"] == "scale down: fewer ACTIVE hosts (drained or deregistered)"
        assert ecs.desired_count(CLUSTER, "agent") == 3
        assert daemon.stop() == 0


def test_a_lost_agent_lowers_only_after_scale_down_after_passes(
    ecs: LocalECS, four_hosts: list[str], tmp_path: Path
) -> None:
    """An agent disconnected for good lowers desiredCount only once lost SCALE_DOWN_AFTER=3 x INTERVAL=0.3 s."""
    with Daemon(
        ecs,
        CLUSTER=CLUSTER,
        SERVICES="agent",
        INTERVAL="0.3",
        SCALE_DOWN_AFTER="3",
        HEARTBEAT_FILE=str(tmp_path / "hb"),
    ) as daemon:
        assert daemon.wait_passes(2)
        lost_at = time.monotonic()
        ecs.set_agent_connected(CLUSTER, four_hosts[1], False)
        assert daemon.wait_for(lambda: ecs.desired_count(CLUSTER, "agent") == 3, timeout=30)
        assert time.monotonic() - lost_at >= 0.9
        # The pass logs its decisions when it ends, after its coverage read: wait for the write's line.
        assert daemon.wait_for(
            lambda: any(e["action"] == "update" for e in _decision(daemon, "agent", 0) if e["target"] == 3), timeout=10
        )
        reasons = [str(e["reason"]) for e in _decision(daemon, "agent", 0) if e["action"] != "skip"]
        held = [r for r in reasons if "scale down held" in r]
        assert held and all(r.startswith("1 agent(s) lost, scale down held (") for r in held)
        assert "scale down: agent lost for 0.9s or more" in reasons
        assert reasons.index("scale down: agent lost for 0.9s or more") > reasons.index(held[0])
        assert daemon.stop() == 0


def test_an_agent_back_within_the_hold_lowers_nothing(ecs: LocalECS, four_hosts: list[str], tmp_path: Path) -> None:
    """An agent that reconnects before SCALE_DOWN_AFTER passes have seen it lost stops no task."""
    with Daemon(
        ecs,
        CLUSTER=CLUSTER,
        SERVICES="agent",
        INTERVAL="0.3",
        SCALE_DOWN_AFTER="4",
        HEARTBEAT_FILE=str(tmp_path / "hb"),
    ) as daemon:
        assert daemon.wait_passes(2)
        ecs.set_agent_connected(CLUSTER, four_hosts[1], False)
        assert daemon.wait_for(
            lambda: sum("scale down held" in str(e["reason"]) for e in _decision(daemon, "agent", 0)) >= 2, timeout=30
        )
        ecs.set_agent_connected(CLUSTER, four_hosts[1], True)
        passes = daemon.passes()
        assert daemon.wait_passes(passes + 5)
        assert ecs.desired_count(CLUSTER, "agent") == 4
        assert not [c for c in ecs.calls if c.operation == "UpdateService" and c.params.get("desiredCount") != 4]
        assert daemon.stop() == 0


def test_agents_each_lost_for_one_pass_in_turn_lower_nothing(
    ecs: LocalECS, four_hosts: list[str], tmp_path: Path
) -> None:
    """The hold is per host: agents that are each lost for fewer than SCALE_DOWN_AFTER passes, one after
    another (as routine reconnects in a large cluster are), never lower the count."""
    with Daemon(ecs, CLUSTER=CLUSTER, SERVICES="agent", INTERVAL="0.5", SCALE_DOWN_AFTER="2",
                HEARTBEAT_FILE=str(tmp_path / "hb")) as daemon:
        assert daemon.wait_passes(2)
        for host in four_hosts * 2:
            ecs.set_agent_connected(CLUSTER, host, False)
            seen = daemon.passes()
            assert daemon.wait_passes(seen + 1)
            ecs.set_agent_connected(CLUSTER, host, True)
        assert daemon.wait_passes(daemon.passes() + 1)
        assert not [c for c in ecs.calls if c.operation == "UpdateService"]
        assert ecs.desired_count(CLUSTER, "agent") == 4
        assert daemon.stop() == 0


def test_a_host_swap_in_one_interval_keeps_the_count(ecs: LocalECS, four_hosts: list[str], tmp_path: Path) -> None:
    """One host deregistered and one registered between two passes: no update, the count stays 4."""
    with Daemon(
        ecs, CLUSTER=CLUSTER, SERVICES="agent", INTERVAL="1", SCALE_DOWN_AFTER="1", HEARTBEAT_FILE=str(tmp_path / "hb")
    ) as daemon:
        assert daemon.wait_passes(1)
        passes = daemon.passes()
        ecs.clear_calls()
        ecs.deregister(CLUSTER, four_hosts[2])
        ecs.add_hosts(CLUSTER, 1)
        assert daemon.wait_passes(passes + 2)
        assert ecs.count("UpdateService") == 0, [c.params for c in ecs.calls if c.operation == "UpdateService"]
        assert ecs.desired_count(CLUSTER, "agent") == 4
        assert all(e["target"] == 4 for e in _decision(daemon, "agent", passes))
        assert daemon.stop() == 0


def test_member_of_service_is_counted_right_cheaply_and_exactly(ecs: LocalECS, tmp_path: Path) -> None:
    """A memberOf service follows its hosts through cheap passes and the recounts a change starts.

    110 web hosts: more than one page, so the cheap reading is worth taking."""
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, 6, attributes={"role": "batch"})
    web = ecs.add_hosts(CLUSTER, 110, attributes={"role": "web"})
    ecs.create_service(CLUSTER, "web", placement_constraints=[*DISTINCT, {"type": "memberOf", "expression": WEB}])
    with Daemon(
        ecs, CLUSTER=CLUSTER, SERVICES="web", INTERVAL="0.3", SCALE_DOWN_AFTER="1", HEARTBEAT_FILE=str(tmp_path / "hb")
    ) as daemon:
        assert daemon.wait_for(lambda: ecs.desired_count(CLUSTER, "web") == 110, timeout=30)
        assert daemon.wait_passes(4)
        modes = [e.get("counting") for e in daemon.events if e.get("event") == "pass"]
        assert {"exact"} < {mode for m in modes if m for mode in m.values()}  # cheap ones too
        ecs.add_hosts(CLUSTER, 3, attributes={"role": "web"})
        assert daemon.wait_for(lambda: ecs.desired_count(CLUSTER, "web") == 113, timeout=30)
        ecs.drain(CLUSTER, web[0])
        assert daemon.wait_for(lambda: ecs.desired_count(CLUSTER, "web") == 112, timeout=30)
        ecs.set_attributes(CLUSTER, web[1], {"role": "batch"})  # no event in ECS, seen by the cheap reading
        assert daemon.wait_for(lambda: ecs.desired_count(CLUSTER, "web") == 111, timeout=30)
        assert daemon.stop() == 0


def test_a_reading_whose_lost_agent_is_not_a_known_member_lists(ecs: LocalECS, monkeypatch: pytest.MonkeyPatch) -> None:
    """One host out and one in whose agent is lost: the ACTIVE number is unchanged, but the lost instance is not
    one the store has, so the pass lists in full; the new host, never seen usable, is not held (nothing is raised
    for it), and the one that left is gone."""
    ecs.create_cluster(CLUSTER)
    hosts = ecs.add_hosts(CLUSTER, 150)
    api = api_for(ecs, monkeypatch)
    counting = Counting(HostStore(hold=60))
    counting.regular(api, CLUSTER, [()])
    ecs.deregister(CLUSTER, hosts[0])
    (new,) = ecs.add_hosts(CLUSTER, 1)
    ecs.set_agent_connected(CLUSTER, new, False)
    counted = counting.regular(api, CLUSTER, [()])[()]
    assert counted.exact
    assert (counted.count.active, counted.count.usable, counted.count.held) == (150, 149, 0)
    assert hosts[0] not in counting.store.filters[()].members and new in counting.store.lost()


def test_a_reading_takes_in_agents_lost_and_back_without_listing(
    ecs: LocalECS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Agents lost and back among known hosts: the cheap reading's complete list of disconnected instances is
    taken in host by host, with no full listing."""
    ecs.create_cluster(CLUSTER)
    hosts = ecs.add_hosts(CLUSTER, 150)
    api = api_for(ecs, monkeypatch)
    counting = Counting(HostStore(hold=60))
    counting.regular(api, CLUSTER, [()])
    ecs.set_agent_connected(CLUSTER, hosts[1], False)
    first = counting.regular(api, CLUSTER, [()])[()]
    ecs.set_agent_connected(CLUSTER, hosts[1], True)
    ecs.set_agent_connected(CLUSTER, hosts[2], False)
    second = counting.regular(api, CLUSTER, [()])[()]
    assert not first.exact and not second.exact
    assert counting.store.lost() == {hosts[2]} and second.count.usable == 149


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("change", ["register", "drain"])
def test_a_host_that_registers_or_drains_during_a_listing_counts_on_the_next_pass(
    ecs: LocalECS, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """Issue 20 item 1: a host that registers (or drains) while an exact listing of 150 hosts runs is not baked
    into the cheap reading's offset: the next pass counts it, not the next resync 9 passes later."""
    ecs.create_cluster(CLUSTER)
    hosts = ecs.add_hosts(CLUSTER, 150)
    api = api_for(ecs, monkeypatch)
    clock = Clock()
    counting = Counting(HostStore(clock=clock), resync=300.0, interval=30.0)
    listed = 0

    def mid_listing(operation: str, _outcome: str) -> None:
        nonlocal listed
        if operation == "ListContainerInstances":
            listed += 1
            if listed == 2:  # within the ACTIVE pages, before the cluster's count is read again
                if change == "register":
                    ecs.add_hosts(CLUSTER, 1)
                else:
                    ecs.drain(CLUSTER, hosts[7])

    api.on_call = mid_listing
    counting.regular(api, CLUSTER, [()])
    api.on_call = None
    expected = 151 if change == "register" else 149
    for _ in range(3):
        clock.now += 30.0
        counted = counting.regular(api, CLUSTER, [()])[()]
        assert (counted.count.active, counted.count.usable) == (expected, expected), counted
    assert not counted.exact  # measured again once the cluster held still: cheap readings from then on


def test_a_filter_ecs_rejects_fails_only_its_own_services(ecs: LocalECS, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 20 item 2: a memberOf expression ECS cannot parse fails the services that use it; the others are
    counted and sized in the same pass, in a regular pass and in an event pass."""
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, 3, attributes={"role": "web"})
    ecs.create_service(CLUSTER, "good", placement_constraints=DISTINCT)
    ecs.create_service(
        CLUSTER,
        "bad",
        placement_constraints=[*DISTINCT, {"type": "memberOf", "expression": "attribute:role == web and"}],
    )
    api = api_for(ecs, monkeypatch)
    config = settings.load(["--cluster", CLUSTER, "--services", "good,bad"], environ={})
    memory = Memory(hold=0.0, resync=300.0, interval=30.0)
    for changes in (None, []):
        report = run_pass(api, config, memory, changes=changes)
        by_service = {d.service: d for d in report.decisions}
        assert ecs.desired_count(CLUSTER, "good") == 3
        assert by_service["good"].error is False
        assert by_service["bad"].error and by_service["bad"].reason.startswith("host count failed: ")
        assert "InvalidParameterException" in by_service["bad"].reason
        assert not report.errors
        ecs.client().update_service(cluster=CLUSTER, service="good", desiredCount=0)  # for the event pass to raise


def test_events_on_hosts_outside_every_filter_start_no_pass_and_cost_no_call(
    ecs: LocalECS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 20 item 6: with only memberOf services, routine events (an agent reconnecting, a drain and back) on
    the 90 hosts outside every filter are taken in as changing nothing: no event pass, so no call, before and
    after each regular pass. The hosts outside are listed once per resync."""
    from dataclasses import replace

    from ecs_cluster_manager.observe import events
    from ecs_cluster_manager.observe.hosts import NO_CHANGE

    ecs.create_cluster(CLUSTER)
    ecs.enable_events(CLUSTER)
    batch = ecs.add_hosts(CLUSTER, 90, attributes={"role": "batch"})
    ecs.add_hosts(CLUSTER, 10, attributes={"role": "web"})
    ecs.create_service(CLUSTER, "web", placement_constraints=[*DISTINCT, {"type": "memberOf", "expression": WEB}])
    api = api_for(ecs, monkeypatch)
    config = settings.load(["--cluster", CLUSTER, "--services", "web"], environ={})
    clock = Clock()
    memory = Memory(hold=60.0, resync=300.0, interval=30.0, clock=clock)
    run_pass(api, config, memory)
    assert ecs.desired_count(CLUSTER, "web") == 10
    outside_listings = 0
    for round_ in range(4):
        for arn in batch[round_ * 18 : round_ * 18 + 18]:
            for step in ("lost", "back", "drain", "activate"):
                if step in ("lost", "back"):
                    ecs.set_agent_connected(CLUSTER, arn, step == "back")
                else:
                    getattr(ecs, step)(CLUSTER, arn)
                parsed = events.parse_document(ecs.last_event(arn))
                assert isinstance(parsed, events.InstanceChange)
                assert memory.store.observe_event(replace(parsed, arrived=clock.now)) == NO_CHANGE
        ecs.clear_calls()
        clock.now += 30.0
        run_pass(api, config, memory)
        outside_listings += sum(1 for c in ecs.calls if "not (" in str(c.params.get("filter", "")))
    assert outside_listings == 0  # listed with the first pass; the next is due at the resync
    assert len(memory.store.hosts) <= 100


def test_a_pass_that_skips_a_service_keeps_its_filter_and_holds(ecs: LocalECS, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 20 item 4: a memberOf service skipped for one pass (a bad sizing tag) keeps its filter in the store:
    a host lost before that pass is lowered for when its hold ends, neither at once (first seen lost again) nor
    a hold later (held again as a new loss)."""
    ecs.create_cluster(CLUSTER)
    hosts = ecs.add_hosts(CLUSTER, 4, attributes={"role": "web"})
    ecs.add_hosts(CLUSTER, 2, attributes={"role": "batch"})
    ecs.create_service(CLUSTER, "web", placement_constraints=[*DISTINCT, {"type": "memberOf", "expression": WEB}])
    batch = {"type": "memberOf", "expression": "attribute:role == batch"}
    ecs.create_service(CLUSTER, "batch", placement_constraints=[*DISTINCT, batch])  # sized in every pass
    api = api_for(ecs, monkeypatch)
    client = ecs.client()
    arn = client.describe_services(cluster=CLUSTER, services=["web"])["services"][0]["serviceArn"]
    config = settings.load(["--cluster", CLUSTER, "--services", "web,batch"], environ={})
    clock = Clock()
    memory = Memory(hold=60.0, resync=300.0, interval=30.0, clock=clock)
    run_pass(api, config, memory)
    assert ecs.desired_count(CLUSTER, "web") == 4
    ecs.set_agent_connected(CLUSTER, hosts[0], False)
    clock.now += 30.0  # the loss is seen here
    run_pass(api, config, memory)
    client.tag_resource(resourceArn=arn, tags=[{"key": "ecs-cluster-manager:max", "value": "many"}])
    clock.now += 20.0
    skipped = run_pass(api, config, memory)
    assert {d.service: d.action for d in skipped.decisions}["web"] == "skip"
    client.untag_resource(resourceArn=arn, tagKeys=["ecs-cluster-manager:max"])
    clock.now += 30.0  # 50 s lost of 60: still held
    run_pass(api, config, memory)
    assert ecs.desired_count(CLUSTER, "web") == 4
    clock.now += 15.0  # 65 s lost: lowered
    run_pass(api, config, memory)
    assert ecs.desired_count(CLUSTER, "web") == 3
