"""Count each host filter's ACTIVE and usable container instances, at a cost that does not grow with the cluster.

A host filter is the service's memberOf expressions (none for most services).

- **Exact count**: list the ACTIVE instances matching the filter, every page,
  and those of them whose agent is disconnected (`agentConnected == false`,
  usually one page). usable = ACTIVE minus disconnected. ceil(H/100) + 1 calls.
- **Cheap reading**: a few numbers that change whenever the count can change,
  each one call in a healthy cluster:
  - no filter: DescribeClusters' `registeredContainerInstancesCount` (R, which
    counts ACTIVE and DRAINING instances), the DRAINING instances, and the
    ACTIVE instances with a disconnected agent;
  - a filter F, direct side (when few hosts match F): the ACTIVE instances
    matching F, and those of them with a disconnected agent;
  - a filter F, complement side (when most hosts match F): R, the DRAINING
    instances, the ACTIVE instances matching `not (F)`, and the ACTIVE ones
    matching F with a disconnected agent. R and the DRAINING listing are read
    once per pass for every filter.
  The side is chosen at each exact count, by which side was smaller.

A filter is counted exactly on its first pass, on every EXACT_EVERY-th pass,
on every pass while its ACTIVE hosts fit on one page (2 calls, no more than a reading),
and whenever its cheap reading differs from the reading taken at its last exact
count; only while the reading is unchanged is the last exact count reused. So no
decision ever rests on a derived number that disagrees with the last exact
count. What R does with REGISTERING or DEREGISTERING instances is not
documented: the comparison is of readings with readings, never of R with a
listing, so a constant offset in R costs nothing, and a changing one only
triggers an exact count.
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
    """One exact count of a filter, with the cheap reading taken alongside it."""

    count: HostCount
    side: str
    reading: tuple[int, ...]
    active: frozenset[str]  # ARNs of the ACTIVE instances matching the filter
    usable: frozenset[str]  # of those, the ones whose agent is connected


@dataclass(frozen=True)
class Counted:
    """A filter's count in one pass, and how it was obtained."""

    count: HostCount
    exact: bool
    calls: int  # API calls this filter cost in the pass (calls shared by filters go to the first that made them)


@dataclass
class _FilterMemory:
    exact: Exact
    passes_since_exact: int = 0


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
        """Count each filter for one pass; raises EcsError when any read fails (nothing partial is returned)."""
        shared = _ClusterReading(api, cluster)
        counted: dict[HostFilter, Counted] = {}
        for host_filter in dict.fromkeys(host_filters):
            before = api.total_calls
            count, exact = self._count_one(api, cluster, host_filter, shared)
            counted[host_filter] = Counted(count, exact, api.total_calls - before)
        for host_filter in [f for f in self.filters if f not in counted]:
            del self.filters[host_filter]
        return counted

    def apply(
        self, api: Api, cluster: str, host_filters: Iterable[HostFilter], changes: Sequence[InstanceChange]
    ) -> dict[HostFilter, Counted]:
        """Count each filter from its last exact sets with these instance changes applied.

        The calls do not grow with the cluster: none for a filter without
        memberOf, one per new instance (asking ECS whether it matches) for one
        with. A filter with no exact count yet, or a new instance whose EC2 id
        the event did not give, is counted exactly instead. Every filter counted
        here is counted exactly again at the next regular pass.
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
            exact = memory.exact if memory else None
            applied = self._apply(api, cluster, host_filter, exact, newest.values()) if exact else None
            if applied is None:
                fresh = self._exact(api, cluster, host_filter, shared, None, None)
                memory = self.filters[host_filter] = _FilterMemory(fresh)
                counted[host_filter] = Counted(fresh.count, True, api.total_calls - before)
            else:
                assert memory is not None
                memory.exact = applied
                counted[host_filter] = Counted(applied.count, False, api.total_calls - before)
            memory.passes_since_exact = self.exact_every  # the next regular pass counts every host again
        return counted

    @staticmethod
    def _apply(
        api: Api, cluster: str, host_filter: HostFilter, exact: Exact, changes: Iterable[InstanceChange]
    ) -> Exact | None:
        expression = member_expression(host_filter)
        active, usable = set(exact.active), set(exact.usable)
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
        return Exact(count, exact.side, exact.reading, frozenset(active), frozenset(usable))

    def known(self) -> tuple[set[str], set[str]]:
        """Every ACTIVE instance in any filter's last exact sets, and the usable ones among them."""
        active: set[str] = set()
        usable: set[str] = set()
        for memory in self.filters.values():
            active |= memory.exact.active
            usable |= memory.exact.usable
        return active, usable

    def exact(self, host_filter: HostFilter) -> Exact | None:
        """The last exact count of a filter, if it has one."""
        memory = self.filters.get(host_filter)
        return memory.exact if memory else None

    def _count_one(
        self, api: Api, cluster: str, host_filter: HostFilter, shared: _ClusterReading
    ) -> tuple[HostCount, bool]:
        memory = self.filters.get(host_filter)
        reading: tuple[int, ...] | None = None
        if (
            self.cheap
            and memory is not None
            and memory.exact.side != SMALL
            and memory.passes_since_exact + 1 < self.exact_every
        ):
            reading = self._reading(api, cluster, host_filter, memory.exact.side, shared)
            if reading == memory.exact.reading:
                memory.passes_since_exact += 1
                return memory.exact.count, False
        exact = self._exact(api, cluster, host_filter, shared, memory.exact.side if memory else None, reading)
        self.filters[host_filter] = _FilterMemory(exact)
        return exact.count, True

    def _exact(
        self,
        api: Api,
        cluster: str,
        host_filter: HostFilter,
        shared: _ClusterReading,
        previous_side: str | None,
        reading: tuple[int, ...] | None,
    ) -> Exact:
        expression = member_expression(host_filter)
        active = frozenset(api.list_container_instances(cluster, "ACTIVE", expression))
        disconnected = frozenset(api.list_container_instances(cluster, "ACTIVE", _and(DISCONNECTED, expression)))
        usable = active - disconnected
        count = HostCount(active=len(active), usable=len(usable))
        if not self.cheap or len(active) <= LIST_PAGE:
            return Exact(count, SMALL, (), active, usable)
        if expression is None:
            side = CLUSTER
            fresh: tuple[int, ...] = (shared.registered(), shared.draining(), len(disconnected))
        else:
            side = DIRECT if len(active) <= shared.active() - len(active) else COMPLEMENT
            if side == DIRECT:
                fresh = (len(active), len(disconnected))
            elif reading is not None and previous_side == COMPLEMENT:
                fresh = reading  # taken moments ago in this pass: no need to list the complement again
            else:
                fresh = self._reading(api, cluster, host_filter, COMPLEMENT, shared)
        return Exact(count, side, fresh, active, usable)

    @staticmethod
    def _reading(
        api: Api, cluster: str, host_filter: HostFilter, side: str, shared: _ClusterReading
    ) -> tuple[int, ...]:
        expression = member_expression(host_filter)
        disconnected = len(api.list_container_instances(cluster, "ACTIVE", _and(DISCONNECTED, expression)))
        if side == CLUSTER:
            return (shared.registered(), shared.draining(), disconnected)
        if side == DIRECT:
            return (len(api.list_container_instances(cluster, "ACTIVE", expression)), disconnected)
        outside = len(api.list_container_instances(cluster, "ACTIVE", f"not ({expression})"))
        return (shared.registered(), shared.draining(), outside, disconnected)
