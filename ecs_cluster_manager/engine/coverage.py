"""Which hosts lack their task: a managed service's coverage, as a DaemonSet's status shows it.

`compute` is pure: from the eligible hosts, the service's tasks, its PRIMARY
task definition and its newest placement failure it says which eligible hosts
run the service's task (`covered`), have one starting (`pending`) or none
(`missing`), which hosts run more than their share (`extra`), which tasks run
on hosts that are not eligible (`misplaced`) and which run an older task
definition (`outdated`). `read` fetches what it needs through ecs.Api.
`GapWatch` turns coverage after coverage into one `coverage_gap` warning per
host missing its task for longer than COVERAGE_GRACE, and one
`coverage_restored` when it has it again.

Coverage only reports; the one place the manager stops tasks is engine/room.py,
for make-room services.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from typing import TYPE_CHECKING

import structlog

from ecs_cluster_manager.model import sizing
from ecs_cluster_manager.model.coverage import Coverage, compute
from ecs_cluster_manager.model.models import Service

if TYPE_CHECKING:
    from ecs_cluster_manager.aws.gateway import PassGateway
    from ecs_cluster_manager.observe.memory import Memory

log = structlog.get_logger(__name__)

# How many hosts one coverage read looks up for their EC2 ids: one DescribeContainerInstances call.
DESCRIBED_HOSTS = 100




def read(
    api: PassGateway,
    cluster: str,
    service: Service,
    eligible: Collection[str],
    *,
    ineligible: Collection[str] = (),
    tasks_per_host: int = 1,
    now: float | None = None,
) -> Coverage:
    """Read one service's tasks (ListTasks, 100 a page; DescribeTasks, 100 a call) and compute its coverage.

    The EC2 ids of the missing, extra and misplaced hosts come from one
    DescribeContainerInstances call (at most DESCRIBED_HOSTS hosts, missing
    ones first); the others keep `ec2InstanceId` null. The hosts wanted follow
    the service's sizing tags (`compute`'s `target`). Raises EcsError when a
    read fails: no partial coverage is returned.
    """
    try:
        target: int | None = sizing.sizing(service.tags).target(len(set(eligible)))
    except sizing.SizingError:  # not sized at all: every eligible host is wanted
        target = None
    arns = api.list_tasks(cluster, service.name)
    tasks = api.describe_tasks(cluster, arns) if arns else []
    # The same computation twice: first to learn which hosts to name, then with their EC2 ids.
    measure = functools.partial(
        compute,
        service.name,
        eligible,
        tasks,
        primary_task_definition=service.task_definition,
        placement_failure=service.placement_failure,
        ineligible=ineligible,
        tasks_per_host=tasks_per_host,
        target=target,
        read_at=now,
    )
    first = measure()
    wanted = list(dict.fromkeys(h.container_instance_arn for h in (*first.missing, *first.extra, *first.misplaced)))
    if not wanted:
        return first
    described = api.describe_container_instances(cluster, wanted[:DESCRIBED_HOSTS])
    ec2_ids = {instance.arn: instance.ec2_instance_id for instance in described if instance.ec2_instance_id}
    return measure(ec2_ids=ec2_ids)


def eligible_hosts(memory: Memory, host_filter: tuple[str, ...]) -> tuple[frozenset[str], frozenset[str]] | None:
    """(eligible, ineligible) host ARNs of a host filter, as the host store has them after an exact count.

    The one place coverage takes the host state from; call it once per exact
    count of the filter. Eligible: the filter's usable hosts. Ineligible: every
    other host the store knows (other filters' hosts, hosts whose agent is lost,
    drained ones it has not forgotten yet), plus the hosts that were eligible at
    an earlier count and are not now (drained, deregistered) while a task is left
    on them (`GapWatch.left`). None when the filter has no exact count yet.
    """
    if not memory.store.has_filter(host_filter):
        return None
    # Only the filters the store still counts (those of the managed services) keep their earlier reading.
    for stale in [f for f in memory.coverage.eligible_before if not memory.store.has_filter(f)]:
        del memory.coverage.eligible_before[stale]
    eligible = memory.store.usable(host_filter)
    memory.coverage.saw_eligible(host_filter, eligible)
    known: set[str] = set(memory.coverage.left) | memory.store.known()
    return eligible, frozenset(known - eligible)


