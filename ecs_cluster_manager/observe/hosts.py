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
earlier: a hold may run a little long, never short. Only a host the store has
seen usable since it became ACTIVE is held: one already lost when first seen
(after a restart, say) was never counted, so nothing is raised for it.

Each observation supersedes only the fields it looked at: a reading of
disconnected agents stamps the agents it read (`agent_as_of`), not their
status (`status_as_of`), so an event about a status that arrived while the
reading ran still counts.

The store forgets an instance once it is INACTIVE, or once it belongs to no
filter and every filter has been listed since it was last seen, so its memory
follows the cluster's size, not its history. A host known to match none of a
memberOf filter (`outside`, from a listing of the hosts that do not match it,
or from matching a new one) is remembered until the next such listing, so
their routine events start no pass and cost no call. A filter no managed service uses is kept while a managed
service still has it (one pass that skipped the service forgets nothing); with
no filter left, no host is kept at all.

Nothing here does I/O: counting.py reads the cluster and feeds the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from ecs_cluster_manager.model.holds import lost_for_good
from ecs_cluster_manager.model.models import ContainerInstance, HostCount
from ecs_cluster_manager.observe.filters import EVERY_HOST, HostFilter

ACTIVE = "ACTIVE"
INACTIVE = "INACTIVE"


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
    status_as_of: float  # store clock: when the observation of its status was made (a listing's start, ...)
    agent_as_of: float  # store clock: when the observation of its agent was made
    lost_since: float | None = None  # store clock: since when its agent has been lost without a break
    ec2_instance_id: str | None = None
    # Seen usable since it last became ACTIVE: only then is a loss held (it was counted before the loss).
    holdable: bool = True

    @property
    def as_of(self) -> float:
        """When the newest observation of it was made."""
        return max(self.status_as_of, self.agent_as_of)


def _new_host(status: str, connected: bool, version: int | None, at: float, lost_since: float | None = None) -> Host:
    return Host(status, connected, version, at, at, lost_since, holdable=connected)


@dataclass
class FilterHosts:
    """The ACTIVE instances matching one host filter, as of its last exact listing plus the events since."""

    members: set[str]
    listed_at: float  # store clock: when the last exact listing of the filter started
    unresolved: set[str] = field(default_factory=set)  # new ACTIVE instances not yet known to match (memberOf)
    outside: set[str] = field(default_factory=set)  # ACTIVE instances known not to match it (memberOf)
    outside_at: float | None = None  # store clock: when `outside` was last listed in full
    side: str = ""  # how a cheap reading of it is taken (counting.py)
    offset: int | None = 0  # counting.py's constant for that reading (None: not measured yet)


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
            connected = arn not in lost
            host = self.hosts.get(arn)
            if host is None:
                self.hosts[arn] = _new_host(ACTIVE, connected, None, started, None if connected else seen)
                members.add(arn)
                continue
            # A field an event observed after the listing started is newer than the listing's.
            if host.agent_as_of <= started:
                self._set_agent(host, connected, seen, restart=False)
                host.agent_as_of = started
            if host.status_as_of <= started:
                self._set_status(host, ACTIVE, started)
            if host.status == ACTIVE:
                members.add(arn)
        unresolved: set[str] = set()
        outside: set[str] = set()
        if previous is not None:
            # Members an event added after the listing started are still members; others it missed are gone.
            for arn in previous.members - listed:
                host = self.hosts.get(arn)
                if host is not None and host.status_as_of > started and host.status == ACTIVE:
                    members.add(arn)
            unresolved = {arn for arn in previous.unresolved - listed if self._newer(arn, started)}
            outside = previous.outside - listed  # until the next listing of the outside replaces it
        if host_filter == EVERY_HOST:
            # Every ACTIVE host is in this listing: one that is not is no longer ACTIVE.
            for arn, host in self.hosts.items():
                if arn not in listed and host.status == ACTIVE and host.status_as_of <= started:
                    host.status = "NOT_ACTIVE"
                    host.status_as_of = started
            for other in self.filters.values():
                other.members = {arn for arn in other.members if self._is_active(arn)}
        state = FilterHosts(members, started, unresolved, outside)
        if previous is not None:
            state.side, state.offset = previous.side, previous.offset
            state.outside_at = previous.outside_at
        self.filters[host_filter] = state
        return state

    def observe_outside(self, host_filter: HostFilter, outside: Iterable[str], started: float) -> None:
        """Take in the complete listing of the ACTIVE instances that do not match a memberOf filter: their events
        change nothing for it."""
        state = self.filters[host_filter]
        state.outside = set(outside) - state.members
        state.unresolved -= state.outside
        state.outside_at = started

    def observe_agents(self, host_filter: HostFilter, disconnected: Iterable[str], started: float,
                       seen: float | None = None) -> None:
        """Take in the complete listing of a filter's disconnected ACTIVE instances, started at `started`.

        `seen` is when it was answered (default `started`): a loss first seen in it starts then.
        It observes agents only: the hosts' status keeps its own, possibly newer, observation.
        """
        seen = started if seen is None else seen
        lost = set(disconnected)
        for arn in self.filters[host_filter].members:
            host = self.hosts[arn]
            if host.agent_as_of > started:  # an event that came after the reading started knows better
                continue
            self._set_agent(host, arn not in lost, seen, restart=False)
            host.agent_as_of = started

    def observe_event(self, change: EventChange, now: float | None = None) -> str | None:
        """Take in one event: None when it can change a decision now, else the reason it cannot."""
        now = self.clock() if now is None else now
        arn = change.container_instance_arn
        host = self.hosts.get(arn)
        if not self.filters:
            return NO_CHANGE  # no managed service counts any host: nothing to keep
        if host is not None and host.version is not None and change.version <= host.version:
            return DUPLICATE if change.version == host.version else STALE
        if host is not None and change.arrived < host.status_as_of and change.arrived < host.agent_as_of:
            # A listing that started after this event arrived has been taken in since: it is newer.
            host.version = change.version
            return STALE
        was_active = host is not None and host.status == ACTIVE
        was_connected = host.agent_connected if host is not None else True
        was_out = host is not None and self._counted_out(host, now)
        was_counted = self._counted_anywhere(arn)
        if host is None:
            if change.status != ACTIVE:
                # Never known ACTIVE: keep only its version, to tell later copies stale.
                self.hosts[arn] = _new_host(change.status, change.agent_connected, change.version, change.arrived)
                return NO_CHANGE
            host = self.hosts[arn] = _new_host(
                ACTIVE, change.agent_connected, change.version, change.arrived,
                None if change.agent_connected else change.arrived,
            )
        else:
            take_status = change.arrived >= host.status_as_of
            take_agent = change.arrived >= host.agent_as_of
            # A version skipped (a change not seen, maybe a reconnect) or a return to ACTIVE starts a loss again.
            skipped = host.version is not None and change.version > host.version + 1
            rejoined = take_status and host.status != ACTIVE and change.status == ACTIVE
            if take_agent:
                self._set_agent(host, change.agent_connected, change.arrived, restart=skipped or rejoined)
                host.agent_as_of = change.arrived
            if take_status:
                self._set_status(host, change.status, change.arrived)
            host.version = change.version
        host.ec2_instance_id = change.ec2_instance_id or host.ec2_instance_id
        if host.status != ACTIVE:
            self._leave(arn, gone=host.status == INACTIVE)
            return None if was_active and was_counted else NO_CHANGE
        if not was_active:
            self._join(arn)
            return None if self._counted_anywhere(arn) else NO_CHANGE
        if not was_counted or host.agent_connected == was_connected:
            return NO_CHANGE  # outside every filter, or nothing a count reads changed
        if not host.agent_connected:
            return None if self._counted_out(host, now) else AGENT_LOST
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
                if host.status_as_of <= started:
                    host.status, host.status_as_of = INACTIVE, started
                    self._leave(arn, gone=True)
                continue
            if host.version is not None and instance.version <= host.version:
                continue
            moved = host.version is not None  # a newer version while lost: it may have reconnected in between
            host.version = instance.version
            host.ec2_instance_id = instance.ec2_instance_id or host.ec2_instance_id
            if host.agent_as_of <= started:
                self._set_agent(host, instance.agent_connected, seen, restart=moved)
                host.agent_as_of = started
            if host.status_as_of <= started and instance.status != host.status:
                joined = instance.status == ACTIVE
                self._set_status(host, instance.status, started)
                if joined:
                    self._join(arn)
                else:
                    self._leave(arn, gone=instance.status == INACTIVE)

    def resolve(self, host_filter: HostFilter, arn: str, member: bool) -> None:
        """Say whether an unresolved new instance matches a memberOf filter."""
        state = self.filters.get(host_filter)
        if state is None:
            return
        state.unresolved.discard(arn)
        if not self._is_active(arn):
            return
        if member:
            state.members.add(arn)
            state.outside.discard(arn)
        else:
            state.outside.add(arn)

    def keep_only(self, host_filters: Iterable[HostFilter]) -> None:
        """Forget the filters no managed service has any more (a service skipped in a pass still has its
        filter), and the hosts no filter needs."""
        wanted = set(host_filters)
        for host_filter in [f for f in self.filters if f not in wanted]:
            del self.filters[host_filter]
        self.forget()

    def forget(self) -> None:
        """Drop the instances that are INACTIVE, or in no filter with every filter listed since they were seen.

        With no filter at all, no instance is kept.
        """
        if not self.filters:
            self.hosts.clear()
            return
        oldest = min(state.listed_at for state in self.filters.values())
        kept: set[str] = set()
        for state in self.filters.values():
            kept |= state.members | state.unresolved | state.outside
        for arn in [a for a, host in self.hosts.items() if a not in kept and host.as_of <= oldest]:
            del self.hosts[arn]

    def set_reading(self, host_filter: HostFilter, side: str, offset: int | None) -> None:
        """Record how a cheap reading of a filter is taken (counting.py's `side`) and its offset."""
        state = self.filters[host_filter]
        state.side, state.offset = side, offset

    def note_event_write(self) -> None:
        """An event pass wrote from event-patched members: the next regular pass lists every filter exactly."""
        self.events_wrote = True

    def note_exact_counts(self) -> None:
        """A regular pass listed every filter exactly: cheap readings may stand again."""
        self.events_wrote = False

    # -- reads -------------------------------------------------------------------

    def has_filter(self, host_filter: HostFilter) -> bool:
        """Whether the store counts this filter (it has been listed exactly and is still used)."""
        return host_filter in self.filters

    def known(self) -> frozenset[str]:
        """Every container instance the store knows, in a filter or not."""
        return frozenset(self.hosts)

    @property
    def cold(self) -> bool:
        """Nothing listed yet: every event may change a decision."""
        return not self.filters

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
        if host.agent_connected:
            return False
        return lost_for_good(host.lost_since, now, self.hold, holdable=host.holdable)

    def _counted_anywhere(self, arn: str) -> bool:
        """Whether any filter has it as a member, or has yet to match it."""
        return any(arn in state.members or arn in state.unresolved for state in self.filters.values())

    def _is_active(self, arn: str) -> bool:
        host = self.hosts.get(arn)
        return host is not None and host.status == ACTIVE

    def _newer(self, arn: str, started: float) -> bool:
        host = self.hosts.get(arn)
        return host is not None and host.status_as_of > started and host.status == ACTIVE

    @staticmethod
    def _set_agent(host: Host, connected: bool, at: float, *, restart: bool) -> None:
        if connected:
            host.lost_since = None
            host.holdable = True
        elif host.agent_connected or host.lost_since is None or restart:
            host.lost_since = at
        host.agent_connected = connected

    @staticmethod
    def _set_status(host: Host, status: str, at: float) -> None:
        if status == ACTIVE and host.status != ACTIVE:
            host.holdable = host.agent_connected  # back to ACTIVE: counted again only once seen usable
        host.status, host.status_as_of = status, at

    def _join(self, arn: str) -> None:
        """A host became ACTIVE: a member of every host, to be resolved for memberOf filters it is not known
        to be outside of."""
        for host_filter, state in self.filters.items():
            if host_filter == EVERY_HOST:
                state.members.add(arn)
            elif arn not in state.members and arn not in state.outside:
                state.unresolved.add(arn)

    def _leave(self, arn: str, *, gone: bool = False) -> None:
        for state in self.filters.values():
            state.members.discard(arn)
            state.unresolved.discard(arn)
            if gone:
                state.outside.discard(arn)
