"""Model-based test: random cluster changes, lost, duplicated and reordered events, regular and event passes.

hypothesis's stateful testing drives the local ECS API (hosts added, drained,
activated, deregistered, relabelled, agents lost and back) and the manager's
passes in process, on a clock the test owns. Events are taken from the local
API as ECS would send them, then delivered late, out of order, twice, or never.
After every pass the model checks each service's desiredCount against its own
account of the cluster:

- every ACTIVE host of the service's filter counts, except those whose agent
  has been lost, as far as the manager could have seen, for the whole hold,
  and those lost that the manager never saw usable since they became ACTIVE
  (never counted, so never raised for: after a restart, say);
- that holds after every regular pass, and after every event pass when every
  event since the last full listing was delivered and none was lost;
- a host that registers or drains while a pass lists counts on the next pass;
- with only memberOf services (`WebOnlyModel`), routine events on hosts the
  manager knows to be outside every filter start no pass.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ecs_cluster_manager import config as configuration
from ecs_cluster_manager.aws.ecs import Api
from ecs_cluster_manager.engine.passes import run_pass
from ecs_cluster_manager.model.report import PassReport
from ecs_cluster_manager.observe import events
from ecs_cluster_manager.observe.events import InstanceChange
from ecs_cluster_manager.observe.memory import Memory
from localecs import LocalECS

CLUSTER = "model"
HOLD = 2.0
INTERVAL = 1.0
RESYNC = 8.0
WEB = "attribute:role == web"
DISTINCT = [{"type": "distinctInstance"}]
SERVICES = {"all": None, "web": "web"}  # service -> the role its memberOf filter selects (None: every host)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ClusterModel(RuleBasedStateMachine):
    """The cluster as the test knows it, the manager's memory, and the events on their way."""

    local: LocalECS
    api: Api
    services: dict[str, str | None] = SERVICES

    @initialize(web=st.integers(1, 4), batch=st.integers(1, 4))
    def start(self, web: int, batch: int) -> None:
        self.local.reset()
        self.local.create_cluster(CLUSTER)
        self.local.enable_events(CLUSTER)
        self.clock = Clock()
        self.memory = Memory(hold=HOLD, resync=RESYNC, interval=INTERVAL, clock=self.clock)
        self.memory.counting.small = 2  # so that the cheap readings are taken at this size
        self.role: dict[str, str] = {}
        self.seen_at: dict[str, float | None] = {}  # a lost agent -> when the manager could first see the loss
        # Whether the manager has seen the host usable since it became ACTIVE (None: it may have, or not).
        self.usable_seen: dict[str, bool | None] = {}
        self.outside_known: set[str] = set()  # batch hosts the manager last listed as outside every filter
        self.pending: list[InstanceChange] = []  # events sent, not yet delivered
        self.unseen = False  # an event lost or a change with no event since the last full listing
        for role, count in (("web", web), ("batch", batch)):
            for arn in self.local.add_hosts(CLUSTER, count, attributes={"role": role}):
                self.role[arn] = role
                self.usable_seen[arn] = False
        if "all" in self.services:
            self.local.create_service(CLUSTER, "all", placement_constraints=DISTINCT)
        self.local.create_service(
            CLUSTER, "web", placement_constraints=[*DISTINCT, {"type": "memberOf", "expression": WEB}]
        )
        self.config = configuration.load(["--cluster", CLUSTER, "--services", ",".join(self.services)], environ={})
        self.pending.clear()  # the manager starts with a full listing
        self.regular_pass()

    # -- the cluster ---------------------------------------------------------------

    def hosts(self, status: str | None = None, connected: bool | None = None) -> list[str]:
        return [
            h["containerInstanceArn"]
            for h in self.local.hosts(CLUSTER)
            if (status is None or h["status"] == status) and (connected is None or h["agentConnected"] == connected)
        ]

    def sent(self, arn: str) -> None:
        """Queue the event the local API published for this host's latest change."""
        document = self.local.last_event(arn)
        assert document is not None
        parsed = events.parse_document(document)
        assert isinstance(parsed, InstanceChange)
        self.pending.append(parsed)
        if arn in self.seen_at:  # any change to a lost host ends that loss as far as the manager can tell
            self.seen_at[arn] = None

    @rule(role=st.sampled_from(["web", "batch"]))
    def add_host(self, role: str) -> None:
        (arn,) = self.local.add_hosts(CLUSTER, 1, attributes={"role": role})
        self.role[arn] = role
        self.usable_seen[arn] = False
        self.sent(arn)

    @rule(data=st.data())
    def drain(self, data: st.DataObject) -> None:
        self._change(data, "ACTIVE", self.local.drain)

    @rule(data=st.data())
    def activate(self, data: st.DataObject) -> None:
        arn = self._change(data, "DRAINING", self.local.activate)
        if arn is not None and self.usable_seen.get(arn):
            self.usable_seen[arn] = None  # whether the manager saw it leave decides whether it is counted now
    @rule(data=st.data(), status=st.sampled_from(["ACTIVE", "DRAINING"]))
    def deregister(self, data: st.DataObject, status: str) -> None:
        arn = self._change(data, status, self.local.deregister)
        if arn is not None:
            self.seen_at.pop(arn, None)

    @rule(data=st.data())
    def lose_agent(self, data: st.DataObject) -> None:
        candidates = self.hosts(connected=True)
        if candidates:
            arn = data.draw(st.sampled_from(candidates))
            self.local.set_agent_connected(CLUSTER, arn, False)
            self.sent(arn)
            self.seen_at[arn] = None

    @rule(data=st.data())
    def agent_back(self, data: st.DataObject) -> None:
        candidates = self.hosts(connected=False)
        if candidates:
            arn = data.draw(st.sampled_from(candidates))
            self.local.set_agent_connected(CLUSTER, arn, True)
            self.sent(arn)
            self.seen_at.pop(arn, None)

    @rule(data=st.data())
    def relabel(self, data: st.DataObject) -> None:
        """An attribute change: ECS sends no event for it, so only a listing can see it."""
        candidates = self.hosts("ACTIVE")
        if candidates:
            arn = data.draw(st.sampled_from(candidates))
            role = "batch" if self.role[arn] == "web" else "web"
            self.local.set_attributes(CLUSTER, arn, {"role": role})
            self.role[arn] = role
            self.outside_known.discard(arn)
            self.unseen = True

    def _change(self, data: st.DataObject, status: str, change: object) -> str | None:
        candidates = self.hosts(status)
        if not candidates:
            return None
        arn = data.draw(st.sampled_from(candidates))
        change(CLUSTER, arn)  # type: ignore[operator]
        self.sent(arn)
        return arn

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 3.0]))
    def tick(self, seconds: float) -> None:
        self.clock.now += seconds

    @precondition(lambda self: "all" not in self.services and bool(self.outside_known))
    @rule(data=st.data())
    def routine_events_outside(self, data: st.DataObject) -> None:
        """An agent reconnect on a host the manager last listed as outside every filter: no pass starts."""
        candidates = sorted(self.outside_known & set(self.hosts("ACTIVE", connected=True)))
        if not candidates:
            return
        arn = data.draw(st.sampled_from(candidates))
        for connected in (False, True):
            self.local.set_agent_connected(CLUSTER, arn, connected)
            document = self.local.last_event(arn)
            assert document is not None
            change = events.parse_document(document)
            assert isinstance(change, InstanceChange)
            assert self.memory.store.observe_event(replace(change, arrived=self.clock.now)) is not None, change

    # -- events on their way ---------------------------------------------------------

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def lose_events(self, data: st.DataObject) -> None:
        lost = data.draw(st.sets(st.integers(0, len(self.pending) - 1), min_size=1))
        self.pending = [change for index, change in enumerate(self.pending) if index not in lost]
        self.unseen = True

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), twice=st.booleans())
    def deliver_some(self, data: st.DataObject, twice: bool) -> None:
        """Deliver some events, in any order, some twice, then run the event pass they start."""
        count = data.draw(st.integers(1, len(self.pending)))
        order = data.draw(st.permutations(range(len(self.pending))))
        chosen = set(order[:count])
        batch = [self.pending[index] for index in order[:count]]
        self.pending = [change for index, change in enumerate(self.pending) if index not in chosen]
        if twice:
            batch += batch[: len(batch) // 2 + 1]
        self.event_pass(batch)

    @precondition(lambda self: self.pending)
    @rule(seed=st.integers(0, 2**16))
    def deliver_all(self, seed: int) -> None:
        """Every event on its way, shuffled, one of them twice."""
        batch = list(self.pending)
        random.Random(seed).shuffle(batch)
        batch.append(batch[0])
        self.pending.clear()
        self.event_pass(batch)

    # -- the manager -----------------------------------------------------------------

    def event_pass(self, batch: list[InstanceChange]) -> None:
        """As the daemon's loop does: take the changes into the store, then one pass for the relevant ones."""
        relevant = []
        for change in batch:
            arrived = replace(change, arrived=self.clock.now)
            if self.memory.store.observe_event(arrived) is None:
                relevant.append(arrived)
            arn = change.container_instance_arn
            if change.status != "ACTIVE" and self.usable_seen.get(arn):
                self.usable_seen[arn] = None  # the manager may take it as gone, to be seen usable again
            elif change.status == "ACTIVE" and change.agent_connected and self.usable_seen.get(arn) is False:
                self.usable_seen[arn] = None  # an older copy may be taken as the newest it has
            if not change.agent_connected and self.seen_at.get(change.container_instance_arn, 0.0) is None:
                if self._is_current_loss(change):
                    self.seen_at[change.container_instance_arn] = self.clock.now
        if relevant:
            report = run_pass(self.api, self.config, self.memory, changes=relevant)
            assert report.ok, report.errors
            if not self.pending and not self.unseen:
                self.check("event pass", report)

    def _is_current_loss(self, change: InstanceChange) -> bool:
        """Whether this event reports the host's loss as it is now (its newest event)."""
        document = self.local.last_event(change.container_instance_arn)
        return document is not None and document["detail"]["version"] == change.version

    @rule()
    def regular_pass(self) -> None:
        self._regular_pass("regular pass")

    def _regular_pass(self, when: str, check: bool = True) -> PassReport:
        first = len(self.local.calls)
        report = run_pass(self.api, self.config, self.memory)
        assert report.ok, report.errors
        for arn, seen in self.seen_at.items():
            if seen is None:
                self.seen_at[arn] = self.clock.now
        self._saw_hosts(report, first)
        if all(how == "exact" for how in report.counting.values()):
            self.unseen = False
        if check:
            self.check(when, report)
        return report

    def _saw_hosts(self, report: PassReport, first: int) -> None:
        """What a regular pass showed the manager: every host of a filter it lists or reads, usable or not."""
        exact = all(how == "exact" for how in report.counting.values())
        outside_listed = any(
            call.operation == "ListContainerInstances" and "not (" in str(call.params.get("filter", ""))
            for call in self.local.calls[first:]
        )
        active = self.hosts("ACTIVE")
        if outside_listed and "all" not in self.services:
            self.outside_known = {arn for arn in active if self.role[arn] == "batch"}
        for host in self.local.hosts(CLUSTER):
            arn = host["containerInstanceArn"]
            counted = "all" in self.services or self.role[arn] == "web"
            if host["status"] != "ACTIVE" or not counted:
                continue
            connected = host["agentConnected"]
            if connected and (exact or not self.unseen):
                self.usable_seen[arn] = True
            elif connected and self.usable_seen.get(arn) is False:
                self.usable_seen[arn] = None  # a cheap reading with changes unseen may not have known it

    @rule(calls=st.integers(1, 4), kind=st.sampled_from(["register", "drain"]), role=st.sampled_from(["web", "batch"]))
    def change_during_a_listing(self, calls: int, kind: str, role: str) -> None:
        """A host registers, or one drains, after the first `calls` ECS calls of a pass that lists every
        filter (its resync due); its event is on its way. The next pass counts it, without the event."""
        self.clock.now += RESYNC
        made = 0
        changed: list[str] = []

        def change(_operation: str, _outcome: str) -> None:
            nonlocal made
            made += 1
            if made != calls:
                return
            if kind == "register":
                (arn,) = self.local.add_hosts(CLUSTER, 1, attributes={"role": role})
                self.role[arn] = role
                self.usable_seen[arn] = False
            else:
                candidates = self.hosts("ACTIVE")
                if not candidates:
                    return
                arn = candidates[0]
                self.local.drain(CLUSTER, arn)
            changed.append(arn)
            self.sent(arn)

        self.api.on_call = change
        try:
            self._regular_pass("listing with a change in it", check=False)
        finally:
            self.api.on_call = None
        self.unseen = self.unseen or bool(changed)  # the change's event may come later than a pass would
        self._regular_pass("the pass after a change during a listing")

    @rule(lost_for=st.sampled_from([0.5, 5.0, 3600.0]))
    def restart(self, lost_for: float) -> None:
        """The manager restarts (a deploy, a crash): a new store. A host lost when first seen was never counted
        by this process, so it is not raised for, however long it has been lost."""
        self.clock.now += lost_for
        self.memory = Memory(hold=HOLD, resync=RESYNC, interval=INTERVAL, clock=self.clock)
        self.memory.counting.small = 2
        self.usable_seen = dict.fromkeys(self.usable_seen, False)
        self.seen_at = dict.fromkeys(self.seen_at)  # each loss is seen anew by the first pass
        self.outside_known = set()
        self._regular_pass("first pass after a restart")

    # Every loss so far already seen: the pass's own timing then says when the manager sees the new one.
    @precondition(lambda self: all(seen is not None for seen in self.seen_at.values()))
    @rule(
        pick=st.integers(0, 63),
        calls=st.integers(1, 5),
        seconds=st.sampled_from([0.5, 1.0, 2.0]),
        resync_due=st.booleans(),
    )
    def slow_regular_pass(self, pick: int, calls: int, seconds: float, resync_due: bool) -> None:
        """A regular pass whose first `calls` ECS calls take `seconds` each (a paced, many-page listing), with an
        agent lost just after them. The manager can see a loss only in a listing of disconnected instances
        answered after it began; the loss is as old as the time since that answer, not since the pass began."""
        if resync_due:  # so that this pass lists every filter in full
            self.clock.now += RESYNC
        candidates = self.hosts(connected=True)
        victim = candidates[pick % len(candidates)] if candidates else None
        first = len(self.local.calls)
        answered: dict[int, float] = {}  # index in local.calls -> the clock when its answer came back
        lost_after = {arn: first for arn, seen in self.seen_at.items() if seen is None}
        made = 0

        def slow(_operation: str, _outcome: str) -> None:
            nonlocal made
            made += 1
            if made <= calls:
                self.clock.now += seconds
            answered[len(self.local.calls) - 1] = self.clock.now
            if made == calls and victim is not None:
                self.local.set_agent_connected(CLUSTER, victim, False)
                self.sent(victim)
                self.seen_at[victim] = None
                lost_after[victim] = len(self.local.calls)

        self.api.on_call = slow
        try:
            report = run_pass(self.api, self.config, self.memory)
        finally:
            self.api.on_call = None
        assert report.ok, report.errors
        before = self.usable_seen.get(victim) if victim is not None else None
        for arn, since in lost_after.items():
            if self.seen_at.get(arn, 0.0) is None:
                self.seen_at[arn] = self._first_listed_lost(arn, since, answered)
        self._saw_hosts(report, first)
        if victim is not None and victim in lost_after and before is not True:
            # Listed connected before its loss, in a reading the manager may not have taken in: it may have
            # been seen usable, or not. Never listed connected: as before this pass.
            listed = self._listed_connected(victim, first, lost_after[victim])
            self.usable_seen[victim] = None if listed else before
        if all(how == "exact" for how in report.counting.values()):
            self.unseen = False
        self.check("slow regular pass", report)

    def _listed_connected(self, arn: str, first: int, lost_at: int) -> bool:
        """Whether a listing of disconnected instances covering this host was answered before it was lost."""
        for call in self.local.calls[first:lost_at]:
            text = str(call.params.get("filter", ""))
            if call.operation == "ListContainerInstances" and "agentConnected" in text:
                if "role == web" not in text or self.role[arn] == "web":
                    return True
        return False

    def _first_listed_lost(self, arn: str, since: int, answered: dict[int, float]) -> float | None:
        """When the first listing of disconnected instances covering this host, made after call `since`, was
        answered; None when there was none (the next regular pass sees the loss)."""
        calls = self.local.calls
        for index in range(since, len(calls)):
            call = calls[index]
            text = str(call.params.get("filter", ""))
            if call.operation == "ListContainerInstances" and "agentConnected" in text:
                if "role == web" not in text or self.role[arn] == "web":
                    return answered.get(index, self.clock.now)
        return None

    def expected(self, role: str | None) -> tuple[int, int]:
        """The hosts a service counts, at least and at most: ACTIVE ones of its filter, but for agents lost (as
        seen) for the whole hold, and lost ones the manager never saw usable (a host it may or may not have
        seen usable is the difference between the two)."""
        low = high = 0
        for host in self.local.hosts(CLUSTER):
            arn = host["containerInstanceArn"]
            if host["status"] != "ACTIVE" or (role is not None and self.role[arn] != role):
                continue
            if not host["agentConnected"]:
                seen = self.seen_at.get(arn)
                if seen is not None and self.clock.now - seen >= HOLD:
                    continue
                usable_seen = self.usable_seen.get(arn)
                if usable_seen is False:
                    continue
                if usable_seen is None:
                    high += 1
                    continue
            low += 1
            high += 1
        return low, high

    def check(self, when: str, report: PassReport) -> None:
        for service, role in self.services.items():
            desired = self.local.desired_count(CLUSTER, service)
            low, high = self.expected(role)
            assert low <= desired <= high, (when, service, desired, (low, high), report.counting, report.hosts)

    @invariant()
    def never_more_than_the_active_hosts_after_a_listing(self) -> None:
        """With nothing unseen, desiredCount never exceeds the ACTIVE hosts of the service's filter."""
        if not self.pending and not self.unseen and hasattr(self, "clock"):
            for service, role in self.services.items():
                active = sum(
                    1
                    for h in self.local.hosts(CLUSTER)
                    if h["status"] == "ACTIVE" and (role is None or self.role[h["containerInstanceArn"]] == role)
                )
                assert self.local.desired_count(CLUSTER, service) <= active


class WebOnlyModel(ClusterModel):
    """Only a memberOf service: the batch hosts are outside every filter."""

    services = {"web": "web"}


@pytest.fixture
def model(ecs: LocalECS, monkeypatch: pytest.MonkeyPatch) -> Iterator[type[ClusterModel]]:
    for key, value in ecs.env().items():
        monkeypatch.setenv(key, value)
    ClusterModel.local = ecs
    # Unbudgeted: a token wait on the real clock would make the passes (and so the examples) depend on timing.
    ClusterModel.api = Api(ecs.region, endpoint_url=ecs.endpoint_url, api_budget=None)
    yield ClusterModel


def _run(machine: type[ClusterModel], max_examples: int = 40) -> None:
    run = machine.TestCase
    run.settings = settings(
        max_examples=max_examples,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        derandomize=True,
        phases=[Phase.explicit, Phase.reuse, Phase.generate] if os.environ.get("MODEL_NO_SHRINK") else list(Phase),
    )
    run().runTest()


@pytest.mark.long
def test_desired_count_follows_the_cluster_through_random_churn(model: type[ClusterModel]) -> None:
    """Random sequences of changes, event faults and passes: every check of the model holds after every pass."""
    _run(model)


@pytest.mark.long
def test_with_only_member_of_services_the_count_holds_and_outside_events_start_no_pass(
    model: type[ClusterModel],
) -> None:
    """The same with only a memberOf service: counts hold, and routine events on hosts outside it start no pass.
    Half the examples: the rules are the same as above but for the outside ones."""
    _run(WebOnlyModel, max_examples=20)


@pytest.mark.parametrize("calls", [1, 2, 3, 4, 5])
def test_an_agent_lost_while_a_resync_lists_is_held_from_when_the_listing_showed_it(
    model: type[ClusterModel], calls: int
) -> None:
    """Found by `make bench`, kept here: a resync whose first calls take 2 s each (the hold), an agent lost
    just after them. Counted from the listing's start, the manager lowered for it at once."""
    machine = model()
    machine.start(web=1, batch=2)
    machine.slow_regular_pass(pick=0, calls=calls, seconds=2.0, resync_due=True)
    machine.regular_pass()
    machine.tick(1.0)
    machine.regular_pass()
    machine.teardown()


@pytest.mark.parametrize("kind", ["register", "drain"])
@pytest.mark.parametrize("calls", [1, 2, 3, 4])
def test_a_host_that_registers_or_drains_during_a_resync_counts_on_the_next_pass(
    model: type[ClusterModel], calls: int, kind: str
) -> None:
    """Found by the model, kept here: a drain (or a registration) after the first calls of a resync was baked
    into the cheap reading's offset, and the next pass counted the old number."""
    machine = model()
    machine.start(web=3, batch=1)
    machine.change_during_a_listing(calls=calls, kind=kind, role="web")
    machine.regular_pass()
    machine.teardown()


@pytest.mark.parametrize("lost_for", [0.5, 5.0, 3600.0])
def test_a_restart_with_a_lost_host_does_not_raise_for_it(model: type[ClusterModel], lost_for: float) -> None:
    """A host lost and lowered for, then the manager restarts: the new process first sees it lost and never
    counted it, so it does not raise for it (and lower again a hold later)."""
    machine = model()
    machine.start(web=2, batch=1)
    (arn, *_) = machine.hosts("ACTIVE")
    machine.local.set_agent_connected(CLUSTER, arn, False)
    machine.sent(arn)
    machine.seen_at[arn] = None
    machine.regular_pass()
    machine.tick(3.0)
    machine.regular_pass()  # lowered: lost for the whole hold
    machine.restart(lost_for=lost_for)
    machine.tick(1.0)
    machine.regular_pass()
    machine.teardown()
