"""Count each host filter's hosts through the host store, at a cost that does not grow with the cluster.

A host filter is a service's memberOf expressions (none for most services). The
counts always come from the store (hosts.py); the strategies here decide how the
store is brought up to date in a pass:

- **Exact listing**: the filter's ACTIVE instances, every page, and those of
  them whose agent is disconnected (`agentConnected == false`, usually one
  page): ceil(H/100) + 1 calls. Used on a filter's first pass, whenever a
  reading disagrees with the store, at least every RESYNC seconds, on the
  first regular pass after an event pass wrote, and on every pass for a filter
  whose hosts fit on one page or that few hosts match (then listing them is as
  cheap as any reading).
- **Cheap reading** of a large filter, a few calls whatever the size:
  DescribeClusters' `registeredContainerInstancesCount` (R: ACTIVE and DRAINING
  instances) minus the DRAINING instances, minus for a memberOf filter that
  most hosts match the ACTIVE instances matching `not (F)` (its complement),
  minus a constant offset measured at the last exact listing; and the filter's
  disconnected instances, by ARN. It is used only when it agrees with the store
  host for host: the same ACTIVE number, every disconnected instance one the
  store has in the filter, no new instance waiting to be matched against the
  filter; the store then takes each member's agent state from that complete
  listing of disconnected instances. Otherwise the filter is listed exactly in
  the same pass. The offset is measured only from a consistent read: the
  reading taken before the exact listing and again after it, kept only when
  both agree (a host that registered or drained meanwhile would otherwise be
  baked into it); when they differ, the filter is listed exactly again on the
  next pass.
- **Event application** (an event pass): the events are already in the store;
  a new instance of a memberOf filter is matched with one `ec2InstanceId == ...`
  question. No listing.

Every regular pass also describes the instances whose agent is lost (100 per
call, usually one call): an agent that reconnected and was lost again in
between shows as a newer `version`, which starts its loss again.

A filter ECS rejects (a memberOf expression it cannot parse) fails only that
filter: its count carries the error, and the other filters are counted as usual.
Any other failed read fails the whole count (nothing partial is used).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ecs_cluster_manager.aws.ecs import LIST_CONTAINER_INSTANCES_PAGE as LIST_PAGE
from ecs_cluster_manager.aws.ecs import RequestRejected
from ecs_cluster_manager.aws.gateway import PassGateway
from ecs_cluster_manager.model.models import HostCount
from ecs_cluster_manager.observe.filters import DISCONNECTED, EVERY_HOST, HostFilter, member_expression
from ecs_cluster_manager.observe.hosts import HostStore

RESYNC = 300.0  # seconds: the longest a filter goes without an exact listing
# How a large filter is read cheaply: the whole cluster, or a memberOf filter through its complement.
CLUSTER, COMPLEMENT = "cluster", "complement"
# Filters listed on every pass: their hosts fit on one page, or few hosts match them.
SMALL, DIRECT = "small", "direct"

EXACT, CHEAP, EVENT = "exact", "cheap", "event"
FAILED = "failed"  # ECS rejected the filter: the count carries the error


def _and(*parts: str | None) -> str:
    return " and ".join(part for part in parts if part)


@dataclass(frozen=True)
class Counted:
    """A filter's count in one pass, and how the store was brought up to date for it."""

    count: HostCount
    how: str  # EXACT, CHEAP, EVENT or FAILED
    calls: int  # API calls this filter cost in the pass (calls shared by filters go to the first that made them)
    error: str | None = None  # why it could not be counted (FAILED): ECS rejected the filter

    @property
    def exact(self) -> bool:
        return self.how == EXACT

    @classmethod
    def failed(cls, error: RequestRejected, calls: int) -> Counted:
        return cls(HostCount(active=0, usable=0), FAILED, calls, str(error))


class _ClusterReading:
    """R and the DRAINING count, read at most once per pass whichever filters need them (`reread` reads again)."""

    def __init__(self, api: PassGateway, cluster: str) -> None:
        self.api, self.cluster = api, cluster
        self._registered: int | None = None
        self._draining: int | None = None

    def reread(self) -> None:
        self._registered = self._draining = None

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


class Counting:
    """Brings the store up to date for the filters of a pass, and counts them from it.

    `resync`: the longest a filter goes without an exact listing (0: list every
    filter on every pass, as --once, check and the Lambda handler do).
    `interval`: the time between regular passes, so that a filter is listed in
    the last pass before its resync falls due rather than the first after.
    """

    def __init__(
        self, store: HostStore, *, resync: float = RESYNC, interval: float = 0.0, small: int = LIST_PAGE
    ) -> None:
        self.store = store
        self.resync = resync
        self.interval = interval
        self.small = small  # a filter with at most this many hosts is listed on every pass (one page)

    def regular(
        self, api: PassGateway, cluster: str, host_filters: Iterable[HostFilter], keep: Iterable[HostFilter] = ()
    ) -> dict[HostFilter, Counted]:
        """Count each filter for a regular pass; raises EcsError when a read fails (nothing partial is used),
        except that a filter ECS rejects fails alone (its Counted carries the error).

        `keep`: more filters the store keeps (those of managed services this pass skipped), uncounted."""
        store = self.store
        filters = list(dict.fromkeys(host_filters))
        shared = _ClusterReading(api, cluster)
        list_all = store.events_wrote
        how: dict[HostFilter, str] = {}
        calls: dict[HostFilter, int] = {}
        failed: dict[HostFilter, RequestRejected] = {}
        for host_filter in filters:
            before = api.total_calls
            how[host_filter] = EXACT
            try:
                if not list_all and self._readable(host_filter) and self._agrees(api, cluster, host_filter, shared):
                    how[host_filter] = CHEAP
                else:
                    self._list(api, cluster, host_filter, shared)
            except RequestRejected as error:
                failed[host_filter] = error
            calls[host_filter] = api.total_calls - before
        store.keep_only([*filters, *keep])
        lost = sorted(store.lost())
        if lost and filters:
            before = api.total_calls
            started = store.clock()
            described = api.describe_container_instances(cluster, lost)
            store.observe_descriptions(described, lost, started, seen=store.clock())
            calls[filters[0]] += api.total_calls - before
        if all(mode == EXACT for f, mode in how.items() if f not in failed):
            store.note_exact_counts()
        now = store.clock()
        return {
            f: Counted.failed(failed[f], calls[f]) if f in failed else Counted(store.count(f, now), how[f], calls[f])
            for f in filters
        }

    def events(self, api: PassGateway, cluster: str, host_filters: Iterable[HostFilter]) -> dict[HostFilter, Counted]:
        """Count each filter for an event pass: the events are in the store; match new instances of memberOf filters.

        A filter never listed yet, or a new instance whose EC2 id no event gave, is listed exactly instead.
        A filter ECS rejects fails alone, as in a regular pass.
        """
        store = self.store
        shared = _ClusterReading(api, cluster)
        counted: dict[HostFilter, Counted] = {}
        for host_filter in dict.fromkeys(host_filters):
            before = api.total_calls
            state = store.filters.get(host_filter)
            how = EVENT
            expression = member_expression(host_filter)
            pending = sorted(state.unresolved) if state is not None else []
            try:
                if state is None or any(store.hosts[arn].ec2_instance_id is None for arn in pending):
                    self._list(api, cluster, host_filter, shared)
                    how = EXACT
                elif expression is not None:
                    for arn in pending:
                        ec2_instance_id = store.hosts[arn].ec2_instance_id
                        assert ec2_instance_id is not None
                        store.resolve(host_filter, arn, api.has_instance(cluster, expression, ec2_instance_id))
            except RequestRejected as error:
                counted[host_filter] = Counted.failed(error, api.total_calls - before)
                continue
            counted[host_filter] = Counted(store.count(host_filter), how, api.total_calls - before)
        return counted

    # -- strategies ----------------------------------------------------------------

    def _readable(self, host_filter: HostFilter) -> bool:
        """Whether a cheap reading may stand for this filter now (else it is listed)."""
        state = self.store.filters.get(host_filter)
        if state is None or state.side not in (CLUSTER, COMPLEMENT) or state.offset is None or self.resync <= 0:
            return False
        # List in the last pass before the resync falls due, so no filter goes longer than `resync` unlisted.
        return self.store.clock() + self.interval - state.listed_at < self.resync

    def _agrees(self, api: PassGateway, cluster: str, host_filter: HostFilter, shared: _ClusterReading) -> bool:
        """Take a cheap reading; True when it agrees with the store host for host (and the store has taken it in).

        It agrees when its ACTIVE number is the store's and every disconnected
        instance it lists is one the store has in the filter. That listing of
        disconnected instances is complete, so the store then takes each
        member's agent state from it: an agent lost or back since the last
        pass is seen exactly, without listing every host.
        """
        state = self.store.filters[host_filter]
        assert state.offset is not None
        started = self.store.clock()
        active, disconnected, seen = self._reading(api, cluster, host_filter, state.side, shared)
        if state.unresolved or active - state.offset != len(state.members) or not disconnected <= state.members:
            return False
        self.store.observe_agents(host_filter, disconnected, started, seen=seen)
        return True

    def _list(self, api: PassGateway, cluster: str, host_filter: HostFilter, shared: _ClusterReading) -> None:
        expression = member_expression(host_filter)
        previous = self.store.filters.get(host_filter)
        # A filter that may be read cheaply afterwards: R - DRAINING is read before the listing too, and the
        # offset is measured only when it is the same after (no host registered, drained or left meanwhile).
        before: int | None = None
        if self.resync > 0 and (previous is None or previous.side in (CLUSTER, COMPLEMENT)):
            before = shared.active()
        started = self.store.clock()
        active = frozenset(api.list_container_instances(cluster, "ACTIVE", expression))
        # Listed after every ACTIVE page: an agent lost meanwhile is lost since this answer, not since `started`.
        disconnected = frozenset(api.list_container_instances(cluster, "ACTIVE", _and(DISCONNECTED, expression)))
        state = self.store.observe_listing(host_filter, active, disconnected, started, seen=self.store.clock())
        self.store.set_reading(host_filter, SMALL, 0)
        if self.resync <= 0:
            return
        if len(active) <= self.small:
            if expression is not None:
                self._list_outside(api, cluster, host_filter)
            return
        if expression is None:
            self.store.set_reading(host_filter, CLUSTER, None)
        elif len(active) <= shared.active() - len(active):
            self.store.set_reading(host_filter, DIRECT, None)  # few hosts match: listing them is the reading
            self._list_outside(api, cluster, host_filter)
            return
        else:
            self.store.set_reading(host_filter, COMPLEMENT, None)
        if before is None:
            return  # no reading from before the listing: the offset is measured at the next one
        shared.reread()
        reading, _, _ = self._reading(api, cluster, host_filter, state.side, shared, disconnected=disconnected)
        if shared.active() == before:
            self.store.set_reading(host_filter, state.side, reading - len(active))

    def _list_outside(self, api: PassGateway, cluster: str, host_filter: HostFilter) -> None:
        """With no service on every host, list the hosts outside a memberOf filter once per resync, so that the
        store knows them: events about hosts outside every filter then start no pass and cost no call."""
        state = self.store.filters[host_filter]
        if EVERY_HOST in self.store.filters:
            return
        if state.outside_at is not None and self.store.clock() + self.interval - state.outside_at < self.resync:
            return
        self._take_outside(api, cluster, host_filter)

    def _take_outside(self, api: PassGateway, cluster: str, host_filter: HostFilter) -> int:
        """List the ACTIVE hosts that do not match a memberOf filter into the store; how many there are."""
        started = self.store.clock()
        outside = api.list_container_instances(cluster, "ACTIVE", f"not ({member_expression(host_filter)})")
        self.store.observe_outside(host_filter, outside, started)
        return len(outside)

    def _reading(
        self,
        api: PassGateway,
        cluster: str,
        host_filter: HostFilter,
        side: str,
        shared: _ClusterReading,
        *,
        disconnected: frozenset[str] | None = None,
    ) -> tuple[int, frozenset[str], float]:
        """(R - DRAINING - outside: the ACTIVE instances before the offset, the disconnected ones' ARNs,
        when those were answered)."""
        expression = member_expression(host_filter)
        if disconnected is None:
            disconnected = frozenset(api.list_container_instances(cluster, "ACTIVE", _and(DISCONNECTED, expression)))
        seen = self.store.clock()
        active = shared.active()
        if side == COMPLEMENT:
            active -= self._take_outside(api, cluster, host_filter)
        return active, disconnected, seen


def usable_exactly(api: PassGateway, cluster: str, host_filter: HostFilter) -> frozenset[str]:
    """List one filter exactly into a new store: the ARNs of its usable hosts, as `check` sees them."""
    counting = Counting(HostStore(), resync=0)
    counted = counting.regular(api, cluster, [host_filter])[host_filter]
    if counted.error is not None:
        raise RequestRejected(counted.error)
    return counting.store.usable(host_filter)
