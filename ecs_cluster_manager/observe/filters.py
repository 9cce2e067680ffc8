"""Host filters: which container instances a service may run on, and how ECS is asked for them.

A host filter is a service's memberOf expressions, in order (`()`: every host).
This module is the one place that builds it from a service and turns it into
cluster query language expressions; the host store keys its members by it, the
counting lists through it, and `check` names it in its findings.
"""

from __future__ import annotations

from collections.abc import Iterable

from ecs_cluster_manager.model.models import Service

HostFilter = tuple[str, ...]  # the memberOf expressions of a service, in order; () is every host
EVERY_HOST: HostFilter = ()

AGENT_CONNECTED = "agentConnected == true"
DISCONNECTED = "agentConnected == false"


def host_filter_of(service: Service) -> HostFilter:
    """The host filter of a service: the hosts it may run on."""
    return tuple(service.member_of)


def member_expression(host_filter: HostFilter) -> str | None:
    """The filter as one cluster query language expression, or None for every host."""
    return " and ".join(f"({expression})" for expression in host_filter) or None


def eligible_expression(host_filter: Iterable[str] = ()) -> str:
    """The cluster query language expression for a filter's eligible hosts: agent connected and every memberOf
    expression (the `filter` label of the hosts metric, the expression `check` names)."""
    parts = [AGENT_CONNECTED, *(f"({expression})" for expression in host_filter)]
    return " and ".join(parts)
