"""The host store: every container instance's state, in one place, written by the loop's thread alone.

For each container instance the store keeps its status, whether its agent is
connected, the newest ECS `version` known, since when its agent has been lost
(continuously, as far as anything seen says), and the time of the observation it
holds (`as_of`, on the store's clock). For each host filter (a service's
memberOf expressions) it keeps which ACTIVE instances match it.

Three kinds of input update it, and a change older than what the store holds
never overwrites it:

- **listings** (`observe_listing`): a filter's ACTIVE instances and those of
  them with a disconnected agent, complete across pages, as of the moment the
  listing started. A host whose state came from an event that arrived after
  that moment keeps it.
- **events** (`observe_event`): an ECS state change with its `detail.version`.
  One whose version is not newer than the store's is a duplicate or stale; one
  that arrived before a listing that has since overwritten the host is stale too.
- **descriptions** (`observe_descriptions`): DescribeContainerInstances of
  chosen instances (those whose agent is lost), with their versions. A version
  that moved while the agent stayed lost means a reconnect in between: the loss
  starts again.

Holds measure time: a host whose agent is lost counts as held until it has been
lost for `hold` seconds without a break (SCALE_DOWN_AFTER x INTERVAL in the
daemon), then it is lost for good and the services are lowered for it. A loss
starts when the answer that showed it came back (or the event arrived), never
earlier: a hold may run a little long, never short.

The store forgets an instance once it is INACTIVE, or once it belongs to no
filter and every filter has been listed since it was last seen, so its memory
follows the cluster's size, not its history.

Nothing here does I/O: counting.py reads the cluster and feeds the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from .models import ContainerInstance, HostCount

ACTIVE = "ACTIVE"
INACTIVE = "INACTIVE"

HostFilter = tuple[str, ...]  # the memberOf expressions of a service, in order; () is every host
EVERY_HOST: HostFilter = ()

# Why an event changed no decision (the `reason` label of the ignored-events metric).
DUPLICATE = "duplicate"
STALE = "stale"
NO_CHANGE = "no_change"
AGENT_LOST = "agent_lost"
AGENT_BACK = "agent_back_within_hold"


@dataclass
class Host:
    """One container instance as the store knows it."""

    status: str
    agent_connected: bool
    version: int | None  # the newest ECS detail.version known; None when only listings have seen it
    as_of: float  # store clock: when the observation it holds was made (a listing's start, an event's arrival)
    lost_since: float | None = None  # store clock: since when its agent has been lost without a break
    ec2_instance_id: str | None = None


@dataclass
class FilterHosts:
    """The ACTIVE instances matching one host filter, as of its last exact listing plus the events since."""

    members: set[str]
    listed_at: float  # store clock: when the last exact listing of the filter started
    unresolved: set[str] = field(default_factory=set)  # new ACTIVE instances not yet known to match (memberOf)
    side: str = ""  # how a cheap reading of it is taken (counting.py)
    offset: int = 0  # counting.py's constant for that reading


class EventChange(Protocol):
    """One container instance as an event described it, with when it arrived (store clock)."""

    @property
    def container_instance_arn(self) -> str: ...
    @property
    def ec2_instance_id(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def agent_connected(self) -> bool: ...
    @property
    def version(self) -> int: ...
    @property
    def arrived(self) -> float: ...


class HostStore:
    """Per container instance, the newest state known; per host filter, its ACTIVE members.

    `hold` is how long a lost agent keeps counting, in seconds (0: not at all).
    `clock` is a monotonic clock, injected in tests.
    """

    def __init__(self, hold: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.hold = hold
        self.clock = clock
        self.hosts: dict[str, Host] = {}
        self.filters: dict[HostFilter, FilterHosts] = {}
        # An event pass wrote from event-patched members: the next regular pass counts every filter exactly.
        self.events_wrote = False

    # -- inputs ------------------------------------------------------------------

    def observe_listing(self, host_filter: HostFilter, active: Iterable[str], disconnected: Iterable[str],
                        started: float, seen: float | None = None) -> FilterHosts:
        """Take in a filter's complete ACTIVE listing (and its disconnected part) that started at `started`.

        `seen` is when the disconnected part was answered (default `started`): a
        loss first seen there starts then. A listing of many pages takes a while,
        and an agent lost while it ran must not count as lost since its start.
        """
        seen = started if seen is None else seen
        listed = set(active)
        lost = set(disconnected) & listed
        previous = self.filters.get(host_filter)
        members: set[str] = set()
        for arn in listed:
            host = self.hosts.get(arn)
            if host is not None and host.as_of > started:
                if host.status == ACTIVE:  # an event that came after the listing started knows better
                    members.add(arn)
                continue
            connected = arn not in lost
            if host is None:
                self.hosts[arn] = Host(ACTIVE, connected, None, started, None if connected else seen)
                members.add(arn)
                continue
            # A host that comes back ACTIVE starts any loss again, as it would after a reconnect.
            self._set_agent(host, connected, seen, restart=host.status != ACTIVE)
            host.status = ACTIVE
            host.as_of = started
            members.add(arn)
        unresolved: set[str] = set()
        if previous is not None:
            # Members an event added after the listing started are still members; others it missed are gone.
            for arn in previous.members - listed:
                host = self.hosts.get(arn)
                if host is not None and host.as_of > started and host.status == ACTIVE:
                    members.add(arn)
            unresolved = {arn for arn in previous.unresolved - listed if self._newer(arn, started)}
        if host_filter == EVERY_HOST:
            # Every ACTIVE host is in this listing: one that is not is no longer ACTIVE.
            for arn, host in self.hosts.items():
                if arn not in listed and host.status == ACTIVE and host.as_of <= started:
                    host.status = "NOT_ACTIVE"
                    host.as_of = started
            for other in self.filters.values():
                other.members = {arn for arn in other.members if self._is_active(arn)}
        state = FilterHosts(members, started, unresolved)
        if previous is not None:
            state.side, state.offset = previous.side, previous.offset
        self.filters[host_filter] = state
        return state

    def observe_agents(self, host_filter: HostFilter, disconnected: Iterable[str], started: float,
                       seen: float | None = None) -> None:
        """Take in the complete listing of a filter's disconnected ACTIVE instances, started at `started`.

        `seen` is when it was answered (default `started`): a loss first seen in it starts then.
        """
        seen = started if seen is None else seen
        lost = set(disconnected)
        for arn in self.filters[host_filter].members:
            host = self.hosts[arn]
            if host.as_of > started:  # an event that came after the reading started knows better
                continue
            self._set_agent(host, arn not in lost, seen, restart=False)
            host.as_of = started

    def observe_event(self, change: EventChange, now: float | None = None) -> str | None:
        """Take in one event: None when it can change a decision now, else the reason it cannot."""
        now = self.clock() if now is None else now
        arn = change.container_instance_arn
        host = self.hosts.get(arn)
        if host is not None and host.version is not None and change.version <= host.version:
            return DUPLICATE if change.version == host.version else STALE
        if host is not None and change.arrived < host.as_of:
            # A listing that started after this event arrived has been taken in since: it is newer.
            host.version = change.version
            return STALE
        was_active = host is not None and host.status == ACTIVE
        was_connected = host.agent_connected if host is not None else True
        was_out = host is not None and self._counted_out(host, now)
        if change.status == INACTIVE or (host is None and change.status != ACTIVE):
            # Deregistered (or never known ACTIVE): keep only its version, to tell later copies stale.
            self.hosts[arn] = Host(change.status, change.agent_connected, change.version, change.arrived)
            self._leave(arn)
            return None if was_active else NO_CHANGE
        if host is None:
            host = self.hosts[arn] = Host(change.status, change.agent_connected, change.version, change.arrived)
            host.lost_since = None if change.agent_connected else change.arrived
        else:
            # A version skipped (a change not seen, maybe a reconnect) or a return to ACTIVE starts a loss again.
            skipped = host.version is not None and change.version > host.version + 1
            rejoined = host.status != ACTIVE and change.status == ACTIVE
            self._set_agent(host, change.agent_connected, change.arrived, restart=skipped or rejoined)
            host.status, host.version, host.as_of = change.status, change.version, change.arrived
        host.ec2_instance_id = change.ec2_instance_id or host.ec2_instance_id
        if change.status != ACTIVE:
            self._leave(arn)
            return None if was_active else NO_CHANGE
        if not was_active:
            self._join(arn)
            return None
        if change.agent_connected == was_connected:
            return NO_CHANGE
        if not change.agent_connected:
            return None if self.hold <= 0 else AGENT_LOST
        return None if was_out else AGENT_BACK

    def observe_descriptions(self, described: Iterable[ContainerInstance], asked: Iterable[str],
                             started: float, seen: float | None = None) -> None:
        """Take in DescribeContainerInstances of `asked`, made at `started`: those not returned are gone.

        `seen` is when it was answered (default `started`): a loss that starts again starts then.
        """
        seen = started if seen is None else seen
        found = {instance.arn: instance for instance in described}
        for arn in asked:
            host = self.hosts.get(arn)
            if host is None:
                continue
            instance = found.get(arn)
            if instance is None:
                if host.as_of <= started:
                    host.status, host.as_of = INACTIVE, started
                    self._leave(arn)
                continue
            if host.version is not None and instance.version <= host.version:
                continue
            moved = host.version is not None  # a newer version while lost: it may have reconnected in between
            self._set_agent(host, instance.agent_connected, seen, restart=moved)
            host.version = instance.version
            host.as_of = max(host.as_of, started)
            host.ec2_instance_id = instance.ec2_instance_id or host.ec2_instance_id
            if instance.status != host.status:
                host.status = instance.status
                if instance.status == ACTIVE:
                    self._join(arn)
                else:
                    self._leave(arn)

    def resolve(self, host_filter: HostFilter, arn: str, member: bool) -> None:
        """Say whether an unresolved new instance matches a memberOf filter."""
        state = self.filters.get(host_filter)
        if state is None:
            return
        state.unresolved.discard(arn)
        if member and self._is_active(arn):
            state.members.add(arn)

    def keep_only(self, host_filters: Iterable[HostFilter]) -> None:
        """Forget the filters no managed service uses any more, and the hosts no listing has."""
        wanted = set(host_filters)
        for host_filter in [f for f in self.filters if f not in wanted]:
            del self.filters[host_filter]
        self.forget()

    def forget(self) -> None:
        """Drop the instances that are INACTIVE, or in no filter with every filter listed since they were seen."""
        if not self.filters:
            return
        oldest = min(state.listed_at for state in self.filters.values())
        kept: set[str] = set()
        for state in self.filters.values():
            kept |= state.members | state.unresolved
        for arn in [a for a, host in self.hosts.items() if a not in kept and host.as_of <= oldest]:
            del self.hosts[arn]

    # -- reads -------------------------------------------------------------------

    def count(self, host_filter: HostFilter, now: float | None = None) -> HostCount:
        """The filter's ACTIVE hosts, the usable ones, and the lost ones still held (with the longest loss)."""
        now = self.clock() if now is None else now
        state = self.filters.get(host_filter)
        members = state.members if state else set()
        usable = held = 0
        held_for = 0.0
        for arn in members:
            host = self.hosts[arn]
            if host.agent_connected:
                usable += 1
            elif not self._counted_out(host, now):
                held += 1
                held_for = max(held_for, now - (host.lost_since if host.lost_since is not None else now))
        return HostCount(active=len(members), usable=usable, held=held, held_for=held_for)

    def lost(self, host_filter: HostFilter | None = None) -> set[str]:
        """The ACTIVE members (of one filter, or of any) whose agent is lost."""
        states = [self.filters[host_filter]] if host_filter is not None else list(self.filters.values())
        return {arn for state in states if state for arn in state.members if not self.hosts[arn].agent_connected}

    def usable(self, host_filter: HostFilter) -> frozenset[str]:
        """The ARNs of the filter's usable hosts (ACTIVE, agent connected)."""
        state = self.filters.get(host_filter)
        return frozenset(arn for arn in (state.members if state else ()) if self.hosts[arn].agent_connected)

    def unresolved(self) -> dict[HostFilter, set[str]]:
        return {f: set(state.unresolved) for f, state in self.filters.items() if state.unresolved}

    # -- internals ---------------------------------------------------------------

    def _counted_out(self, host: Host, now: float) -> bool:
        return not host.agent_connected and host.lost_since is not None and now - host.lost_since >= self.hold

    def _is_active(self, arn: str) -> bool:
        host = self.hosts.get(arn)
        return host is not None and host.status == ACTIVE

    def _newer(self, arn: str, started: float) -> bool:
        host = self.hosts.get(arn)
        return host is not None and host.as_of > started and host.status == ACTIVE

    @staticmethod
    def _set_agent(host: Host, connected: bool, at: float, *, restart: bool) -> None:
        if connected:
            host.lost_since = None
        elif host.agent_connected or host.lost_since is None or restart:
            host.lost_since = at
        host.agent_connected = connected

    def _join(self, arn: str) -> None:
        """A host became ACTIVE: a member of every host, to be resolved for memberOf filters."""
        for host_filter, state in self.filters.items():
            if host_filter == EVERY_HOST:
                state.members.add(arn)
            elif arn not in state.members:
                state.unresolved.add(arn)

    def _leave(self, arn: str) -> None:
        for state in self.filters.values():
            state.members.discard(arn)
            state.unresolved.discard(arn)
