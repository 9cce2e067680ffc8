"""Count each host filter's ACTIVE and usable container instances, at a cost that does not grow with the cluster.

A host filter is the service's memberOf expressions (none for most services).

- **Exact count**: list the ACTIVE instances matching the filter, every page,
  and those of them whose agent is disconnected (`agentConnected == false`,
  usually one page). usable = ACTIVE minus disconnected. ceil(H/100) + 1 calls.
  A filter whose ACTIVE instances fit on one page, or that few hosts match (the
  *direct* side), is counted so on every pass: that costs no more than a reading.
- **Cheap reading** for a large filter, a few calls whatever the size:
  DescribeClusters' `registeredContainerInstancesCount` (R, which counts ACTIVE
  and DRAINING instances), the DRAINING instances, for a memberOf filter the
  ACTIVE instances matching `not (F)` (its *complement* side, chosen when most
  hosts match F), and the filter's ACTIVE instances with a disconnected agent
  (their ARNs). R and the DRAINING listing are read once per pass for all filters.
  From it, ACTIVE = R - DRAINING - outside - offset, where the offset is what
  the same sum gave at the last exact count beyond the listed hosts (R's
  treatment of REGISTERING or DEREGISTERING instances is not documented: a
  constant offset costs nothing).

The ARN sets of the last exact count are kept. A reading is *consistent* when its
ACTIVE number equals the kept set's size and every disconnected instance is in
the set: then ACTIVE is the set, and usable is the set minus the disconnected
instances just listed. Otherwise the filter is counted exactly, in the same
pass. A consistent reading whose usable number differs from the last count (an
agent lost or back) is *stale*: decisions may use it, but before any
UpdateService that depends on it the caller counts those filters exactly
(`recount`), so no write follows a derived number that disagrees with the last
exact count. Every filter is also counted exactly on its first pass and every
EXACT_EVERY-th pass.

Event passes (`apply`) update the kept sets with the instances the events
described, so the next regular reading stays consistent when every change came
through an event, and is inconsistent (an exact count) when one was lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .ecs import LIST_CONTAINER_INSTANCES_PAGE as LIST_PAGE
from .ecs import Api
from .models import HostCount

if TYPE_CHECKING:
    from .events import InstanceChange

EXACT_EVERY = 10
DISCONNECTED = "agentConnected == false"
CLUSTER, DIRECT, COMPLEMENT = "cluster", "direct", "complement"
# A filter whose ACTIVE hosts fit on one page costs 2 calls to count exactly, no more than any reading.
SMALL = "small"

HostFilter = tuple[str, ...]  # the memberOf expressions of a service, in order


def member_expression(host_filter: HostFilter) -> str | None:
    """The filter as one cluster query language expression, or None for every host."""
    return " and ".join(f"({expression})" for expression in host_filter) or None


def _and(*parts: str | None) -> str:
    return " and ".join(part for part in parts if part)


@dataclass(frozen=True)
class Exact:
    """A filter's last count: from an exact listing, or that listing with event changes applied."""

    count: HostCount
    side: str
    offset: int  # R - DRAINING - outside - |active| at the exact count (CLUSTER and COMPLEMENT sides)
    active: frozenset[str]  # ARNs of the ACTIVE instances matching the filter
    usable: frozenset[str]  # of those, the ones whose agent is connected


@dataclass(frozen=True)
class Counted:
    """A filter's count in one pass, and how it was obtained."""

    count: HostCount
    exact: bool
    calls: int  # API calls this filter cost in the pass (calls shared by filters go to the first that made them)
    stale: bool = False  # a consistent reading whose usable number differs from the last count: recount before a write


@dataclass
class _FilterMemory:
    exact: Exact
    passes_since_exact: int = 0
    usable_now: frozenset[str] | None = None  # usable per the latest consistent reading, when it is stale
    lost: dict[str, int] = field(default_factory=dict)  # ACTIVE instance with its agent lost -> regular passes so

    @property
    def usable(self) -> frozenset[str]:
        """The usable instances as last seen: by a stale reading, else by the kept count."""
        return self.usable_now if self.usable_now is not None else self.exact.usable

    def see_lost(self, lost_now: Iterable[str], *, advance: bool) -> None:
        """Take in the instances whose agent is lost now: one more pass each (`advance`), or as they were."""
        self.lost = {arn: self.lost.get(arn, 0) + 1 if advance else self.lost.get(arn, 1) for arn in lost_now}


class _ClusterReading:
    """R and the DRAINING count, read at most once per pass whichever filters need them."""

    def __init__(self, api: Api, cluster: str) -> None:
        self.api, self.cluster = api, cluster
        self._registered: int | None = None
        self._draining: int | None = None

    def registered(self) -> int:
        if self._registered is None:
            self._registered = self.api.registered_count(self.cluster)
        return self._registered

    def draining(self) -> int:
        if self._draining is None:
            self._draining = len(self.api.list_container_instances(self.cluster, "DRAINING"))
        return self._draining

    def active(self) -> int:
        return max(0, self.registered() - self.draining())


@dataclass
class HostCounter:
    """Counts host filters pass after pass, remembering each one's last exact count.

    `cheap=False` counts every filter exactly on every pass.
    """

    exact_every: int = EXACT_EVERY
    cheap: bool = True
    filters: dict[HostFilter, _FilterMemory] = field(default_factory=dict)

    def count(self, api: Api, cluster: str, host_filters: Iterable[HostFilter]) -> dict[HostFilter, Counted]:
        """Count each filter for one regular pass; raises EcsError when any read fails (nothing partial is returned).

        Each instance whose agent is lost is seen lost for one more pass (`held`).
        """
        shared = _ClusterReading(api, cluster)
        counted: dict[HostFilter, Counted] = {}
        for host_filter in dict.fromkeys(host_filters):
            before = api.total_calls
            count, exact, stale = self._count_one(api, cluster, host_filter, shared)
            memory = self.filters[host_filter]
            memory.see_lost(memory.exact.active - memory.usable, advance=True)
            counted[host_filter] = Counted(count, exact, api.total_calls - before, stale)
        for host_filter in [f for f in self.filters if f not in counted]:
            del self.filters[host_filter]
        return counted

    def recount(self, api: Api, cluster: str, host_filters: Iterable[HostFilter]) -> dict[HostFilter, Counted]:
        """Count these filters exactly now (before a write that a stale reading would otherwise justify)."""
        shared = _ClusterReading(api, cluster)
        counted: dict[HostFilter, Counted] = {}
        for host_filter in dict.fromkeys(host_filters):
            before = api.total_calls
            exact = self._exact(api, cluster, host_filter, shared)
            previous = self.filters.get(host_filter)
            memory = self.filters[host_filter] = _FilterMemory(exact, lost=previous.lost if previous else {})
            memory.see_lost(exact.active - exact.usable, advance=False)
            counted[host_filter] = Counted(exact.count, True, api.total_calls - before)
        return counted

    def apply(
        self, api: Api, cluster: str, host_filters: Iterable[HostFilter], changes: Sequence[InstanceChange]
    ) -> dict[HostFilter, Counted]:
        """Count each filter from its kept sets with these instance changes applied.

        The calls do not grow with the cluster: none for a filter without
        memberOf, one per new instance (asking ECS whether it matches) for one
        with. A filter with no count yet, or a new instance whose EC2 id the
        event did not give, is counted exactly instead.
        """
        newest: dict[str, InstanceChange] = {}
        for change in changes:
            seen = newest.get(change.container_instance_arn)
            if seen is None or change.version > seen.version:
                newest[change.container_instance_arn] = change
        shared = _ClusterReading(api, cluster)
        counted: dict[HostFilter, Counted] = {}
        for host_filter in dict.fromkeys(host_filters):
            before = api.total_calls
            memory = self.filters.get(host_filter)
            applied = self._apply(api, cluster, host_filter, memory, newest.values()) if memory else None
            if applied is None:
                fresh = self._exact(api, cluster, host_filter, shared)
                memory = self.filters[host_filter] = _FilterMemory(fresh, lost=memory.lost if memory else {})
                counted[host_filter] = Counted(fresh.count, True, api.total_calls - before)
            else:
                assert memory is not None
                memory.exact, memory.usable_now = applied, None
                counted[host_filter] = Counted(applied.count, False, api.total_calls - before)
            memory.see_lost(memory.exact.active - memory.exact.usable, advance=False)
        return counted

    @staticmethod
    def _apply(
        api: Api, cluster: str, host_filter: HostFilter, memory: _FilterMemory, changes: Iterable[InstanceChange]
    ) -> Exact | None:
        expression = member_expression(host_filter)
        exact = memory.exact
        active = set(exact.active)
        usable = set(memory.usable)
        for change in changes:
            arn = change.container_instance_arn
            member = change.status == "ACTIVE"
            if member and expression is not None and arn not in active:
                if change.ec2_instance_id is None:
                    return None
                member = api.has_instance(cluster, expression, change.ec2_instance_id)
            if member:
                active.add(arn)
                if change.agent_connected:
                    usable.add(arn)
                else:
                    usable.discard(arn)
            else:
                active.discard(arn)
                usable.discard(arn)
        count = HostCount(active=len(active), usable=len(usable))
        return Exact(count, exact.side, exact.offset, frozenset(active), frozenset(usable))

    def held(self, host_filter: HostFilter, hold: int) -> tuple[int, int]:
        """(instances lost for fewer than `hold` regular passes, the most passes among them)."""
        memory = self.filters.get(host_filter)
        passes = [n for n in (memory.lost.values() if memory else ()) if n < hold]
        return len(passes), max(passes, default=0)

    def known(self, hold: int) -> tuple[set[str], set[str], set[str]]:
        """Every ACTIVE instance in the kept sets, the usable ones, and those lost for `hold` passes or more."""
        active: set[str] = set()
        usable: set[str] = set()
        counted_out: set[str] = set()
        for memory in self.filters.values():
            active |= memory.exact.active
            usable |= memory.usable
            counted_out |= {arn for arn, passes in memory.lost.items() if passes >= hold}
        return active, usable, counted_out

    def _count_one(
        self, api: Api, cluster: str, host_filter: HostFilter, shared: _ClusterReading
    ) -> tuple[HostCount, bool, bool]:
        """(count, exact, stale) of one filter in a regular pass."""
        memory = self.filters.get(host_filter)
        if (
            self.cheap
            and memory is not None
            and memory.exact.side in (CLUSTER, COMPLEMENT)
            and memory.passes_since_exact + 1 < self.exact_every
        ):
            exact = memory.exact
            active, disconnected = self._reading(api, cluster, host_filter, exact.side, shared)
            if active - exact.offset == len(exact.active) and disconnected <= exact.active:
                usable = exact.active - disconnected
                count = HostCount(active=len(exact.active), usable=len(usable))
                memory.passes_since_exact += 1
                stale = count != exact.count
                memory.usable_now = usable if stale else None
                return count, False, stale
        exact = self._exact(api, cluster, host_filter, shared)
        self.filters[host_filter] = _FilterMemory(exact, lost=memory.lost if memory else {})
        return exact.count, True, False

    def _exact(self, api: Api, cluster: str, host_filter: HostFilter, shared: _ClusterReading) -> Exact:
        expression = member_expression(host_filter)
        active = frozenset(api.list_container_instances(cluster, "ACTIVE", expression))
        disconnected = frozenset(api.list_container_instances(cluster, "ACTIVE", _and(DISCONNECTED, expression)))
        usable = active - disconnected
        count = HostCount(active=len(active), usable=len(usable))
        if not self.cheap or len(active) <= LIST_PAGE:
            return Exact(count, SMALL, 0, active, usable)
        if expression is None:
            side = CLUSTER
        elif len(active) <= shared.active() - len(active):
            return Exact(count, DIRECT, 0, active, usable)  # few hosts match: listing them is the reading
        else:
            side = COMPLEMENT
        reading, _ = self._reading(api, cluster, host_filter, side, shared, disconnected=disconnected)
        return Exact(count, side, reading - len(active), active, usable)

    @staticmethod
    def _reading(
        api: Api,
        cluster: str,
        host_filter: HostFilter,
        side: str,
        shared: _ClusterReading,
        *,
        disconnected: frozenset[str] | None = None,
    ) -> tuple[int, frozenset[str]]:
        """(R - DRAINING - outside: the ACTIVE instances before the offset, the disconnected ones' ARNs)."""
        expression = member_expression(host_filter)
        if disconnected is None:
            disconnected = frozenset(api.list_container_instances(cluster, "ACTIVE", _and(DISCONNECTED, expression)))
        active = shared.registered() - shared.draining()
        if side == COMPLEMENT:
            active -= len(api.list_container_instances(cluster, "ACTIVE", f"not ({expression})"))
        return active, disconnected
