"""The host store: newer state always wins, holds measure one continuous loss, memory follows the cluster."""

from __future__ import annotations

from dataclasses import dataclass

from ecs_cluster_manager.model.models import ContainerInstance, HostCount
from ecs_cluster_manager.observe import hosts
from ecs_cluster_manager.observe.filters import EVERY_HOST
from ecs_cluster_manager.observe.hosts import HostStore

A, B, C = "arn:ci/a", "arn:ci/b", "arn:ci/c"
WEB = ("attribute:role == web",)


@dataclass(frozen=True)
class Change:
    container_instance_arn: str
    status: str = "ACTIVE"
    agent_connected: bool = True
    version: int = 1
    arrived: float = 0.0
    ec2_instance_id: str | None = "i-1"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def store(hold: float = 3.0) -> tuple[HostStore, Clock]:
    clock = Clock()
    return HostStore(hold, clock), clock


def test_a_listing_sets_members_and_agents() -> None:
    """A filter's listing makes its ACTIVE hosts members; the disconnected ones are lost from that moment."""
    s, _ = store()
    s.observe_listing(EVERY_HOST, [A, B, C], [], started=-1.0)
    s.observe_listing(EVERY_HOST, [A, B, C], [C], started=0.0)
    assert s.count(EVERY_HOST, now=1.0) == HostCount(active=3, usable=2, held=1, held_for=1.0)
    assert s.count(EVERY_HOST, now=3.0) == HostCount(active=3, usable=2, held=0, held_for=0.0)


def test_an_event_newer_than_a_listing_survives_it() -> None:
    """Item 3: a host drained while a pass was listing stays drained; the listing that started before is older."""
    s, _ = store()
    s.observe_listing(EVERY_HOST, [A, B], [], started=0.0)
    assert s.observe_event(Change(A, "DRAINING", version=5, arrived=2.0), now=2.0) is None
    s.observe_listing(EVERY_HOST, [A, B], [], started=1.0)  # started before the event arrived, still lists A
    assert s.count(EVERY_HOST, now=3.0).active == 1
    assert s.hosts[A].status == "DRAINING"


def test_a_reconnect_during_a_listing_is_not_undone() -> None:
    """Item 3: an agent back while a pass runs stays back, and it is not marked lost by the older listing."""
    s, _ = store()
    s.observe_listing(EVERY_HOST, [A, B], [A], started=0.0)
    s.observe_event(Change(A, agent_connected=True, version=7, arrived=5.0), now=5.0)
    s.observe_listing(EVERY_HOST, [A, B], [A], started=4.0)
    assert s.hosts[A].agent_connected and s.count(EVERY_HOST, now=6.0).usable == 2


def test_an_event_older_than_a_listing_is_stale() -> None:
    """An event that arrived before a listing that has since been taken in changes nothing."""
    s, _ = store()
    s.observe_listing(EVERY_HOST, [A], [], started=5.0)
    assert s.observe_event(Change(A, "DRAINING", version=3, arrived=4.0), now=6.0) == hosts.STALE
    assert s.hosts[A].status == "ACTIVE"


def test_duplicates_and_older_versions_are_dropped() -> None:
    s, _ = store()
    s.observe_listing(EVERY_HOST, [A], [], started=0.0)
    assert s.observe_event(Change(A, "DRAINING", version=5, arrived=1.0), now=1.0) is None
    assert s.observe_event(Change(A, "DRAINING", version=5, arrived=1.5), now=1.5) == hosts.DUPLICATE
    assert s.observe_event(Change(A, "ACTIVE", version=4, arrived=2.0), now=2.0) == hosts.STALE
    assert s.hosts[A].status == "DRAINING"


def test_which_events_can_change_a_decision() -> None:
    """New and status changes can; a task placed, a lost agent and one back within its hold cannot."""
    s, _ = store(hold=10)
    s.observe_listing(EVERY_HOST, [A], [], started=0.0)
    assert s.observe_event(Change(B, version=1, arrived=1.0), now=1.0) is None  # a new host
    assert s.observe_event(Change(B, version=2, arrived=1.0), now=1.0) == hosts.NO_CHANGE  # a task placed
    assert s.observe_event(Change(B, agent_connected=False, version=3, arrived=2.0), now=2.0) == hosts.AGENT_LOST
    assert s.observe_event(Change(B, version=4, arrived=3.0), now=3.0) == hosts.AGENT_BACK
    assert s.observe_event(Change(B, agent_connected=False, version=5, arrived=4.0), now=4.0) == hosts.AGENT_LOST
    # Lost for the whole hold: its return raises, so it matters.
    assert s.observe_event(Change(B, version=6, arrived=20.0), now=20.0) is None
    assert s.observe_event(Change(B, "DRAINING", version=7, arrived=21.0), now=21.0) is None
    assert s.observe_event(Change(C, "DRAINING", version=1, arrived=21.0), now=21.0) == hosts.NO_CHANGE


def test_without_a_hold_every_agent_change_matters() -> None:
    s, _ = store(hold=0)
    s.observe_listing(EVERY_HOST, [A], [], started=0.0)
    assert s.observe_event(Change(A, agent_connected=False, version=2, arrived=1.0), now=1.0) is None
    assert s.observe_event(Change(A, agent_connected=True, version=3, arrived=1.0), now=1.0) is None


def test_the_hold_measures_one_continuous_loss() -> None:
    """Item 6: two short losses of one agent on consecutive passes are two losses, not one long one."""
    s, _ = store(hold=2.0)
    s.observe_listing(EVERY_HOST, [A, B], [], started=-1.0)
    s.observe_listing(EVERY_HOST, [A, B], [A], started=0.0)
    s.observe_descriptions([ContainerInstance(A, "i-a", "ACTIVE", False, 10)], [A], started=0.0)
    # Between passes it reconnects and is lost again: the listing alone cannot see it, the version can.
    s.observe_listing(EVERY_HOST, [A, B], [A], started=1.0)
    s.observe_descriptions([ContainerInstance(A, "i-a", "ACTIVE", False, 12)], [A], started=1.0)
    assert s.hosts[A].lost_since == 1.0
    assert s.count(EVERY_HOST, now=2.5).held == 1  # lost 1.5 s of 2: still counts
    assert s.count(EVERY_HOST, now=3.0).held == 0  # now lost for the whole hold


def test_a_loss_starts_when_the_answer_showed_it_not_when_the_call_began() -> None:
    """A listing, a reading or a description that takes a while: the agent may have been lost only just before
    its answer, so the loss counts from the answer (`seen`). Counting from the start cut the hold short."""
    s, _ = store(hold=2.0)
    s.observe_listing(EVERY_HOST, [A, B, C], [], started=-1.0)
    s.observe_listing(EVERY_HOST, [A, B, C], [A], started=0.0, seen=1.5)
    assert s.hosts[A].lost_since == 1.5 and s.hosts[A].as_of == 0.0  # as_of stays the listing's start
    assert s.count(EVERY_HOST, now=3.0).held == 1  # 1.5 s since the answer, 3 s since the start: held
    s.observe_agents(EVERY_HOST, [A, B], started=4.0, seen=4.5)
    assert s.hosts[B].lost_since == 4.5
    s.observe_descriptions([ContainerInstance(A, "i-a", "ACTIVE", False, 10)], [A], started=5.0, seen=5.2)
    s.observe_descriptions([ContainerInstance(A, "i-a", "ACTIVE", False, 12)], [A], started=6.0, seen=6.4)
    assert s.hosts[A].lost_since == 6.4  # reconnected and lost again before the answer: from the answer
    assert s.count(EVERY_HOST, now=8.3).held == 1 and s.count(EVERY_HOST, now=8.4).held == 0


def test_a_steady_loss_is_not_restarted_by_an_unchanged_version() -> None:
    s, _ = store(hold=2.0)
    s.observe_listing(EVERY_HOST, [A], [], started=-1.0)
    s.observe_listing(EVERY_HOST, [A], [A], started=0.0)
    s.observe_descriptions([ContainerInstance(A, "i-a", "ACTIVE", False, 10)], [A], started=0.0)
    s.observe_listing(EVERY_HOST, [A], [A], started=1.0)
    s.observe_descriptions([ContainerInstance(A, "i-a", "ACTIVE", False, 10)], [A], started=1.0)
    assert s.hosts[A].lost_since == 0.0 and s.count(EVERY_HOST, now=2.0).held == 0


def test_a_reconnect_event_between_two_losses_restarts_the_hold() -> None:
    s, _ = store(hold=2.0)
    s.observe_listing(EVERY_HOST, [A], [], started=0.0)
    s.observe_event(Change(A, agent_connected=False, version=2, arrived=1.0), now=1.0)
    s.observe_event(Change(A, agent_connected=True, version=3, arrived=1.5), now=1.5)
    s.observe_event(Change(A, agent_connected=False, version=4, arrived=2.0), now=2.0)
    assert s.count(EVERY_HOST, now=3.5).held == 1


def test_a_lost_reconnect_event_is_seen_through_the_version_gap() -> None:
    """Lost, then (reconnect event lost) lost again: the version skips one, so the loss starts again."""
    s, _ = store(hold=2.0)
    s.observe_listing(EVERY_HOST, [A], [], started=0.0)
    s.observe_event(Change(A, agent_connected=False, version=2, arrived=1.0), now=1.0)
    s.observe_event(Change(A, agent_connected=False, version=4, arrived=2.0), now=2.0)
    assert s.hosts[A].lost_since == 2.0


def test_new_hosts_of_a_member_of_filter_wait_to_be_matched() -> None:
    s, _ = store()
    s.observe_listing(EVERY_HOST, [A], [], started=0.0)
    s.observe_listing(WEB, [A], [], started=0.0)
    s.observe_event(Change(B, version=1, arrived=1.0), now=1.0)
    assert s.count(EVERY_HOST).active == 2 and s.count(WEB).active == 1
    assert s.unresolved() == {WEB: {B}}
    s.resolve(WEB, B, True)
    assert s.count(WEB).active == 2 and not s.unresolved()


def test_the_store_forgets_hosts_that_left() -> None:
    """Item 7: after hosts come and go, the store holds the current cluster, not its history."""
    s, clock = store()
    for generation in range(20):
        clock.now = float(generation)
        current = [f"arn:ci/{generation}-{i}" for i in range(50)]
        for i, arn in enumerate(current):
            s.observe_event(Change(arn, version=1, arrived=clock.now - 0.5), now=clock.now)
            s.observe_event(Change(f"arn:ci/{generation - 1}-{i}", "INACTIVE", False, 9, clock.now - 0.5))
        s.observe_listing(EVERY_HOST, current, [], started=clock.now)
        s.forget()
    assert len(s.hosts) == 50
    assert s.count(EVERY_HOST).active == 50


def test_an_inactive_event_takes_a_host_out_at_once() -> None:
    s, _ = store()
    s.observe_listing(EVERY_HOST, [A, B], [], started=0.0)
    assert s.observe_event(Change(A, "INACTIVE", False, 3, arrived=1.0), now=1.0) is None
    assert s.count(EVERY_HOST).active == 1


def test_described_instances_that_are_gone_leave() -> None:
    s, _ = store()
    s.observe_listing(EVERY_HOST, [A, B], [A], started=0.0)
    s.observe_descriptions([], [A], started=1.0)
    assert s.count(EVERY_HOST).active == 1 and A not in s.lost()


def test_a_host_already_lost_when_first_seen_is_not_held() -> None:
    """Issue 20 item 4: after a restart a host lost for hours is first seen lost. It was never counted, so it is
    not held (a raise for it would be lowered again a hold later); one seen usable first is held."""
    s, _ = store(hold=2.0)
    s.observe_listing(EVERY_HOST, [A, B, C], [C], started=0.0)
    assert s.count(EVERY_HOST, now=0.0) == HostCount(active=3, usable=2, held=0, held_for=0.0)
    s.observe_listing(EVERY_HOST, [A, B, C], [], started=1.0)  # back: counted, so its next loss is held
    s.observe_listing(EVERY_HOST, [A, B, C], [C], started=2.0)
    assert s.count(EVERY_HOST, now=3.0).held == 1


def test_a_host_first_seen_lost_in_an_event_or_back_from_draining_lost_is_not_held() -> None:
    """Issue 20 item 4: the same for a new host whose first event shows its agent lost, and for a drained host
    that comes back ACTIVE with its agent lost (it was not counted while draining)."""
    s, _ = store(hold=2.0)
    s.observe_listing(EVERY_HOST, [A], [], started=0.0)
    assert s.observe_event(Change(B, agent_connected=False, version=1, arrived=1.0), now=1.0) is None
    assert s.count(EVERY_HOST, now=1.0) == HostCount(active=2, usable=1, held=0, held_for=0.0)
    s.observe_event(Change(A, "DRAINING", version=2, arrived=2.0), now=2.0)
    s.observe_event(Change(A, "ACTIVE", agent_connected=False, version=3, arrived=3.0), now=3.0)
    assert s.count(EVERY_HOST, now=3.0).held == 0


def test_a_filter_no_service_has_is_forgotten_with_its_hosts() -> None:
    """Issue 20 item 8: once no managed service has a filter, the store drops it, and with no filter left, every
    host."""
    s, _ = store(hold=2.0)
    s.observe_listing(WEB, [A, B], [], started=0.0)
    s.observe_listing(EVERY_HOST, [A, B, C], [], started=0.0)
    s.keep_only([WEB])
    assert set(s.filters) == {WEB} and set(s.hosts) == {A, B}
    s.keep_only([])
    assert not s.filters and not s.hosts


def test_an_agent_reading_does_not_supersede_a_status_event() -> None:
    """Issue 20 item 5: a drain that arrived while a reading of disconnected agents ran still counts: the reading
    looked at agents, not at status."""
    s, _ = store()
    s.observe_listing(EVERY_HOST, [A, B], [], started=0.0)
    s.observe_agents(EVERY_HOST, [], started=2.0)  # began at 2.0; the drain arrived at 1.5, handed over after
    assert s.observe_event(Change(A, "DRAINING", version=4, arrived=1.5), now=2.5) is None
    assert s.count(EVERY_HOST, now=2.5).active == 1 and s.hosts[A].status == "DRAINING"
    # An agent change from before the reading is older than what the reading saw.
    s.observe_event(Change(B, agent_connected=False, version=4, arrived=1.5), now=2.5)
    assert s.hosts[B].agent_connected


def test_hosts_outside_every_filter_are_remembered_and_their_events_start_no_pass() -> None:
    """Issue 20 item 6: with only memberOf filters, a host matched once as outside them stays known; its routine
    events (a task placed, a reconnect, a drain) change nothing, before and after the next listing."""
    s, _ = store()
    s.observe_listing(WEB, [A], [], started=0.0)
    assert s.observe_event(Change(B, version=1, arrived=1.0), now=1.0) is None  # new: to be matched
    s.resolve(WEB, B, False)
    assert s.observe_event(Change(B, version=2, arrived=2.0), now=2.0) == hosts.NO_CHANGE
    s.observe_listing(WEB, [A], [], started=3.0)
    s.keep_only([WEB])
    assert B in s.hosts
    assert s.observe_event(Change(B, agent_connected=False, version=3, arrived=4.0), now=4.0) == hosts.NO_CHANGE
    assert s.observe_event(Change(B, "DRAINING", False, version=4, arrived=5.0), now=5.0) == hosts.NO_CHANGE
    assert s.observe_event(Change(B, "ACTIVE", True, version=5, arrived=6.0), now=6.0) == hosts.NO_CHANGE
    assert s.count(WEB).active == 1


def test_with_no_filter_no_host_is_kept() -> None:
    """Issue 20 item 8: with no service to size, events about hosts fill nothing."""
    s, _ = store()
    for i in range(100):
        assert s.observe_event(Change(f"arn:ci/{i}", version=1, arrived=1.0), now=1.0) == hosts.NO_CHANGE
    assert not s.hosts
