"""The host counting of the daemon before the cheap reading, for the benchmark's `exact` algorithm.

Every pass counts every host filter F with one listing of the ACTIVE container
instances matching `agentConnected == true and (F)`, every page: ceil(H/100)
ListContainerInstances calls per filter, whatever changed since the last pass.
That is what `reconcile.run_pass` did before `counting.HostCounter`; the rest of
the pass (describing, planning, writing, logging) is the daemon's own.

The previous count knew only the usable hosts, so `active` is set to the same
number: a converged pass does not depend on it.
"""

from __future__ import annotations

from collections.abc import Iterable

from ecs_cluster_manager.counting import Counted, HostCounter, HostFilter
from ecs_cluster_manager.ecs import Api, host_filter
from ecs_cluster_manager.models import HostCount


class PreviousCounter(HostCounter):
    """A `HostCounter` that lists each filter's usable hosts on every pass and remembers nothing."""

    def count(self, api: Api, cluster: str, host_filters: Iterable[HostFilter]) -> dict[HostFilter, Counted]:
        counted: dict[HostFilter, Counted] = {}
        for member_of in dict.fromkeys(host_filters):
            before = api.total_calls
            usable = api.count_hosts(cluster, host_filter(member_of))
            counted[member_of] = Counted(HostCount(active=usable, usable=usable), True, api.total_calls - before)
        return counted
