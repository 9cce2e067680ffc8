"""Which hosts are ready: every managed service a host is eligible for runs its task there.

Pure: no I/O, no clock. The state it reads is observe/readiness.py's; the writes,
engine/readiness.py's. With READY_ATTRIBUTE set, the manager keeps that
container-instance attribute with the value `true` on each ready host, so
application services that require it (`memberOf(attribute:NAME == true)`) are
placed only where the daemons already run: a NoSchedule taint, in Kubernetes'
words. A deleted attribute never moves a task that already runs.

- A host is *ready* when it is usable (ACTIVE, agent connected) and, for each
  managed service whose host filter it is in, that service has a RUNNING task
  on it, or its sizing tags do not want a task there (a host beyond
  `ecs-cluster-manager:max`). A service whose tasks were never read makes its
  hosts not ready: readiness is proven, never assumed.
- The attribute is *put* on a ready host that lacks it, and *deleted* from a
  host that has it when the host is no longer ACTIVE (draining) or one of its
  services has been missing its task there for COVERAGE_GRACE or longer. A
  task that is only briefly gone (a deploy replacing it, a restart) leaves the
  attribute in place, as does a lost agent (ECS places nothing there anyway).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from ecs_cluster_manager.model.coverage import RUNNING, Coverage
from ecs_cluster_manager.model.models import Task

ACTIVE = "ACTIVE"
TRUE = "true"  # the attribute's value on a ready host
PUT_BATCH = 10  # PutAttributes and DeleteAttributes take at most 10 attributes a call


@dataclass(frozen=True)
class ServiceHosts:
    """What readiness needs of one managed service.

    `eligible`: its usable hosts now; `running`: hosts with a RUNNING task of
    it; `unwanted`: hosts its sizing tags leave without a task (beyond its
    target) at its last reading; `missing_since`: per host, since when (the
    store's clock) it has lacked the task, from the gap watch; `read`: whether
    its tasks have been read at all.
    """

    name: str
    eligible: frozenset[str]
    running: frozenset[str] = frozenset()
    unwanted: frozenset[str] = frozenset()
    missing_since: Mapping[str, float] = field(default_factory=dict)
    read: bool = True


@dataclass(frozen=True)
class HostState:
    """A host as the store knows it: its status and whether its agent is connected."""

    status: str
    agent_connected: bool


@dataclass(frozen=True)
class NotReady:
    """A host that is not ready, and why: the services without a task there, or its status."""

    arn: str
    why: str
    waiting_for: tuple[str, ...] = ()


@dataclass(frozen=True)
class Readiness:
    """One pass's readiness: which hosts are ready, which are not (and why), and the writes that follow."""

    ready: frozenset[str]
    not_ready: tuple[NotReady, ...]
    put: tuple[str, ...]
    delete: tuple[str, ...]
    # Host -> why its attribute is deleted.
    delete_why: Mapping[str, str] = field(default_factory=dict)


def running_hosts(tasks: Iterable[Task]) -> frozenset[str]:
    """The hosts with a RUNNING task that is meant to keep running."""
    return frozenset(
        t.container_instance_arn
        for t in tasks
        if t.container_instance_arn and t.last_status == RUNNING and t.desired_status == RUNNING
    )


def unwanted_hosts(coverage: Coverage, eligible: Iterable[str], running: Collection[str]) -> frozenset[str]:
    """The eligible hosts a coverage reading leaves without a task on purpose (beyond the sizing tags' target)."""
    wanted = {h.container_instance_arn for h in (*coverage.missing, *coverage.pending)}
    return frozenset(set(eligible) - set(running) - wanted)


def waiting_for(host: str, services: Collection[ServiceHosts]) -> tuple[list[str], list[str]]:
    """The services a host waits for: (never read, no RUNNING task on it), each by name."""
    unread: list[str] = []
    lacking: list[str] = []
    for service in services:
        if host not in service.eligible:
            continue
        if not service.read:
            unread.append(service.name)
        elif host not in service.running and host not in service.unwanted:
            lacking.append(service.name)
    return unread, lacking


def decide(
    hosts: Mapping[str, HostState],
    services: Collection[ServiceHosts],
    marked: Collection[str],
    *,
    now: float,
    grace: float,
) -> Readiness:
    """The ready hosts among `hosts`, and the attribute writes: put where ready and unmarked, delete per the rules.

    `marked`: the hosts that have the attribute now. A marked host the store
    does not know is left alone: there is nothing to say it drained.
    """
    marked_set = set(marked)
    ready: set[str] = set()
    not_ready: list[NotReady] = []
    delete_why: dict[str, str] = {}
    ordered = sorted(services, key=lambda s: s.name)
    for arn in sorted(hosts):
        host = hosts[arn]
        if host.status != ACTIVE:
            not_ready.append(NotReady(arn, f"status {host.status}"))
            if arn in marked_set:
                delete_why[arn] = f"status {host.status}"
            continue
        unread, lacking = waiting_for(arn, ordered)
        if not host.agent_connected:
            not_ready.append(NotReady(arn, "agent disconnected", tuple(lacking + unread)))
        elif lacking or unread:
            parts = [f"no RUNNING task of {', '.join(lacking)}"] if lacking else []
            parts += [f"tasks of {', '.join(unread)} not read yet"] if unread else []
            not_ready.append(NotReady(arn, "; ".join(parts), tuple(lacking + unread)))
        else:
            ready.add(arn)
            continue
        if arn in marked_set:
            overdue = [
                s.name
                for s in ordered
                if arn in s.eligible and arn not in s.running and arn in s.missing_since
                and now - s.missing_since[arn] >= grace
            ]
            if overdue:
                delete_why[arn] = f"{', '.join(overdue)} missing its task for COVERAGE_GRACE ({grace:g}s) or longer"
    return Readiness(
        ready=frozenset(ready),
        not_ready=tuple(not_ready),
        put=tuple(sorted(ready - marked_set)),
        delete=tuple(sorted(delete_why)),
        delete_why=delete_why,
    )
