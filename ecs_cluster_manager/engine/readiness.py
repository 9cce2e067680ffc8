"""READY_ATTRIBUTE: keep the ready attribute on the hosts whose managed services' tasks run.

After sizing and coverage, each pass of the loop (regular or event) decides
which hosts are ready (model/readiness.py) from the host store, the tasks the
readiness state knows (coverage readings and task events) and the gap watch,
then writes only the differences: PutAttributes on hosts that became ready,
DeleteAttributes on hosts that drained or lacked a task for COVERAGE_GRACE,
ten a call, paid for from the service-modify budget (deletes first; what the
budget cannot pay for waits for the next pass, which decides again). What ECS
has is read with ListAttributes at start and at least every RESYNC. Nothing is
written after a failed read, or in a dry run (which logs what it would write).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from ecs_cluster_manager.aws.ecs import DESCRIBE_CONTAINER_INSTANCES_BATCH
from ecs_cluster_manager.aws.errors import EcsError
from ecs_cluster_manager.aws.gateway import PassGateway
from ecs_cluster_manager.config import Config
from ecs_cluster_manager.model.coverage import Coverage
from ecs_cluster_manager.model.models import Service
from ecs_cluster_manager.model.readiness import (
    ACTIVE,
    PUT_BATCH,
    TRUE,
    HostState,
    Readiness,
    ServiceHosts,
    decide,
    running_hosts,
    unwanted_hosts,
)
from ecs_cluster_manager.model.report import PassReport
from ecs_cluster_manager.observe.filters import DISCONNECTED, HostFilter
from ecs_cluster_manager.observe.hosts import INACTIVE
from ecs_cluster_manager.observe.memory import Memory

log = structlog.get_logger(__name__)

LOGGED_HOSTS = 20  # a log line names at most this many hosts, and counts the rest


def _named(arns: Sequence[str]) -> list[str]:
    return list(arns[:LOGGED_HOSTS]) + ([f"... {len(arns) - LOGGED_HOSTS} more"] if len(arns) > LOGGED_HOSTS else [])


def views(memory: Memory, services: Sequence[Service], host_filters: Mapping[str, HostFilter]) -> list[ServiceHosts]:
    """Each managed service as readiness sees it: its usable hosts, the hosts running its task, its gaps."""
    missing: dict[str, dict[str, float]] = {}
    for (service, arn), gap in memory.coverage.gaps.items():
        missing.setdefault(service, {})[arn] = gap.since
    unresolved = memory.store.unresolved()
    return [
        ServiceHosts(
            name=service.name,
            # A new host not yet known to match a memberOf filter may be the service's: it waits for it.
            eligible=memory.store.usable(host_filters[service.arn]) | unresolved.get(host_filters[service.arn], set()),
            running=memory.ready.running(service.name),
            unwanted=memory.ready.unwanted.get(service.name, frozenset()),
            missing_since=missing.get(service.name, {}),
            read=memory.ready.was_read(service.name),
        )
        for service in services
    ]


def keep_ready(
    api: PassGateway,
    config: Config,
    memory: Memory,
    report: PassReport,
    services: Sequence[Service],
    host_filters: Mapping[str, HostFilter],
    now: float,
    uncounted: Sequence[str] = (),
) -> Readiness | None:
    """Decide the ready hosts and write the attribute's differences; None when this pass could not decide.

    `services`: the managed services that can be managed; those whose hosts the
    store has never counted (skipped since they appeared) are left out.
    `uncounted`: services whose host count failed in this pass: nothing is
    decided then.
    """
    name = config.ready_attribute
    if name is None:
        return None
    watch = memory.ready
    watch.forget(service.name for service in services)
    services = [s for s in services if memory.store.has_filter(host_filters[s.arn])]
    if report.errors or report.stopped or uncounted:
        why = "the pass did not read everything" if not uncounted else f"hosts of {', '.join(uncounted)} not counted"
        report.readiness_error = why
        log.debug("readiness_skipped", cluster=config.cluster, attribute=name, reason=why)
        return None
    if watch.marked is None or watch.marked_at is None or now - watch.marked_at >= memory.counting.resync:
        try:
            listed = api.list_attributes(config.cluster, name, TRUE)
        except EcsError as error:
            report.readiness_error = f"reading {name} failed: {error}"
            log.warning("readiness_failed", cluster=config.cluster, attribute=name, error=str(error))
            return None
        watch.marked, watch.marked_at = set(listed), now
    hosts = {arn: HostState(host.status, host.agent_connected) for arn, host in memory.store.hosts.items()}
    try:
        if watch.unconfirmed:  # tasks an event said are RUNNING: read them before their hosts can be ready
            watch.confirm(api.describe_tasks(config.cluster, sorted(watch.unconfirmed)))
        hosts.update(_left(api, config, memory, hosts))
    except EcsError as error:
        report.readiness_error = f"describing tasks or hosts failed: {error}"
        log.warning("readiness_failed", cluster=config.cluster, attribute=name, error=str(error))
        return None
    # A deregistered host loses its attributes with it.
    gone = {arn for arn, host in hosts.items() if host.status == INACTIVE}
    watch.marked -= gone
    hosts = {arn: host for arn, host in hosts.items() if arn not in gone}
    readiness = decide(hosts, views(memory, services, host_filters), watch.marked, now=now, grace=config.coverage_grace)
    report.readiness = readiness
    if config.dry_run:
        # Logged when what it would write changes, not on every pass.
        if (readiness.put or readiness.delete) and watch.would != (readiness.put, readiness.delete):
            log.info(
                "readiness",
                cluster=config.cluster,
                attribute=name,
                would_put=_named(readiness.put),
                would_delete=_named(readiness.delete),
                dry_run=True,
            )
        watch.would = (readiness.put, readiness.delete)
    else:
        _write(api, config, memory, report, readiness, name)
    report.hosts_marked = len(watch.marked)
    return readiness


def _left(api: PassGateway, config: Config, memory: Memory, hosts: Mapping[str, HostState]) -> dict[str, HostState]:
    """The marked hosts the store saw ACTIVE at the last pass and no longer knows, as ECS describes them now.

    A listing drops a drained host from the store, so without events a drain
    shows only as a host gone from it; one DescribeContainerInstances call (100
    hosts) tells a drain (DRAINING: its attribute goes) from a deregistration
    (INACTIVE or unknown to ECS: the attribute went with it) and from a host
    that is still ACTIVE outside the filters the store lists.
    """
    watch = memory.ready
    assert watch.marked is not None
    active = {arn for arn, host in hosts.items() if host.status == ACTIVE}
    # One DescribeContainerInstances call a pass at most.
    left = sorted((watch.marked & watch.active_before) - set(hosts))[:DESCRIBE_CONTAINER_INSTANCES_BATCH]
    found: dict[str, HostState] = {}
    if left:
        described = {i.arn: i for i in api.describe_container_instances(config.cluster, left)}
        for arn in left:
            instance = described.get(arn)
            if instance is None or instance.status == INACTIVE:
                found[arn] = HostState(INACTIVE, False)
            elif instance.status != ACTIVE:
                found[arn] = HostState(instance.status, instance.agent_connected)
            else:
                active.add(arn)  # still ACTIVE, outside what the store lists: its attribute stays
    watch.active_before = active
    return found


def _write(
    api: PassGateway, config: Config, memory: Memory, report: PassReport, readiness: Readiness, name: str
) -> None:
    """Deletes first (they keep gated tasks off a host that lacks a daemon), then puts, within the budget."""
    watch = memory.ready
    assert watch.marked is not None
    available = api.writes_available()
    for operation, arns in (("delete", readiness.delete), ("put", readiness.put)):
        for start in range(0, len(arns), PUT_BATCH):
            if available is not None and available <= 0:
                report.readiness_error = "deferred: the API budget pays for no more attribute writes now"
                log.info(
                    "readiness_deferred", cluster=config.cluster, attribute=name, left=len(arns) - start,
                    operation=operation,
                )
                return
            batch = list(arns[start : start + PUT_BATCH])
            try:
                if operation == "delete":
                    api.delete_attributes(config.cluster, name, batch)
                else:
                    api.put_attributes(config.cluster, name, TRUE, batch)
            except EcsError as error:
                report.readiness_error = f"{operation} of {name} failed: {error}"
                log.warning(
                    "readiness_write_failed", cluster=config.cluster, attribute=name, operation=operation,
                    hosts=_named(batch), error=str(error),
                )
                watch.marked_at = None  # what ECS has is read again at the next pass
                return
            if available is not None:
                available -= 1
            if operation == "delete":
                watch.marked -= set(batch)
                for arn in batch:
                    log.info(
                        "host_not_ready", cluster=config.cluster, attribute=name, containerInstanceArn=arn,
                        ec2InstanceId=_ec2_id(memory, arn), reason=readiness.delete_why.get(arn),
                    )
            else:
                watch.marked |= set(batch)
                log.info("hosts_ready", cluster=config.cluster, attribute=name, hosts=_named(batch), count=len(batch))


def _ec2_id(memory: Memory, arn: str) -> str | None:
    host = memory.store.hosts.get(arn)
    return host.ec2_instance_id if host is not None else None


def audit(
    api: PassGateway,
    config: Config,
    services: Sequence[Service],
    eligible: Mapping[str, frozenset[str]],
    coverages: Mapping[str, Coverage],
    now: float,
) -> list[HostReport]:
    """`check`'s readiness: per ACTIVE or DRAINING host, ready or not and why, and whether it has the attribute.

    check keeps no memory, so a missing task's age is the service's unbroken run
    of placement failures (`placement_failure_since`), as for `missing-task`.
    Raises EcsError when a read fails.
    """
    name = config.ready_attribute
    assert name is not None
    marked = set(api.list_attributes(config.cluster, name, TRUE))
    active = api.list_container_instances(config.cluster, "ACTIVE")
    disconnected = set(api.list_container_instances(config.cluster, "ACTIVE", DISCONNECTED))
    draining = api.list_container_instances(config.cluster, "DRAINING")
    hosts = {arn: HostState(ACTIVE, arn not in disconnected) for arn in active}
    hosts.update((arn, HostState("DRAINING", True)) for arn in draining)
    views: list[ServiceHosts] = []
    for service in services:
        found = coverages.get(service.name)
        if service.arn not in eligible:
            continue
        running = running_hosts(found.tasks) if found else frozenset()
        since = service.placement_failure_since
        views.append(
            ServiceHosts(
                name=service.name,
                eligible=eligible[service.arn],
                running=running,
                unwanted=unwanted_hosts(found, eligible[service.arn], running) if found else frozenset(),
                missing_since={h.container_instance_arn: since for h in found.missing} if found and since else {},
                read=found is not None,
            )
        )
    decided = decide(hosts, views, marked, now=now, grace=config.coverage_grace)
    why = {host.arn: host.why for host in decided.not_ready}
    ec2_ids = {i.arn: i.ec2_instance_id for i in api.describe_container_instances(config.cluster, sorted(hosts))}
    return [
        HostReport(
            container_instance_arn=arn,
            ec2_instance_id=ec2_ids.get(arn),
            ready=arn in decided.ready,
            attribute=arn in marked,
            why=why.get(arn, "every managed service it is eligible for runs its task there"),
            would=("put" if arn in decided.put else "delete" if arn in decided.delete else None),
        )
        for arn in sorted(hosts)
    ]


@dataclass(frozen=True)
class HostReport:
    """One host as `check` reports its readiness."""

    container_instance_arn: str
    ec2_instance_id: str | None
    ready: bool
    attribute: bool  # whether it has the attribute now
    why: str
    would: str | None  # the write the daemon would make: "put", "delete" or None

    def as_json(self) -> dict[str, Any]:
        return {
            "containerInstanceArn": self.container_instance_arn,
            "ec2InstanceId": self.ec2_instance_id,
            "ready": self.ready,
            "attribute": self.attribute,
            "why": self.why,
            "daemonWould": self.would,
        }
