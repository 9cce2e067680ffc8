"""The local API's service scheduler where room for a daemon depends on it, seen through plain boto3 clients:
memberOf with task:group and with the readiness attribute, hosts of other sizes, the order in which services
with tasks to place get the room, and placement (with its task event) without anybody reading the cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from daemon_helpers import ROOT
from localecs import LocalECS

CLUSTER = "placement"
READY = "ecs-cluster-manager.ready"
GATE = {"type": "memberOf", "expression": f"attribute:{READY} == true"}
DISTINCT = {"type": "distinctInstance"}
HOST_MEMORY = 7482  # MiB moto registers for a host


@pytest.fixture
def cluster(ecs: LocalECS) -> LocalECS:
    """A clean local ECS with scheduling on and one empty cluster."""
    ecs.scheduler.enabled = True
    ecs.create_cluster(CLUSTER)
    return ecs


@pytest.fixture
def placing(cluster: LocalECS) -> Iterator[LocalECS]:
    """The same, with tasks placed by the scheduler's own thread, each PENDING for 0.5 s before it is RUNNING."""
    cluster.scheduler.start_background(0.5)
    try:
        yield cluster
    finally:
        cluster.scheduler.stop_background()


def running(local: LocalECS, service: str) -> list[dict[str, Any]]:
    """The service's RUNNING tasks as ListTasks and DescribeTasks return them."""
    client = local.client()
    arns = client.list_tasks(cluster=CLUSTER, serviceName=service)["taskArns"]
    if not arns:
        return []
    return [t for t in client.describe_tasks(cluster=CLUSTER, tasks=arns)["tasks"] if t["lastStatus"] == "RUNNING"]


def hosts_of(local: LocalECS, service: str) -> list[str]:
    return sorted(t["containerInstanceArn"] for t in running(local, service))


def memory_left(local: LocalECS, host: str) -> int:
    [instance] = local.client().describe_container_instances(cluster=CLUSTER, containerInstances=[host])[
        "containerInstances"
    ]
    return next(int(r["integerValue"]) for r in instance["remainingResources"] if r["name"] == "MEMORY")


def test_member_of_task_group_places_next_to_another_services_tasks(cluster: LocalECS) -> None:
    """memberOf(task:group == service:db) places only on hosts running a db task, and follows db to a new one."""
    hosts = cluster.add_hosts(CLUSTER, 3)
    cluster.create_service(CLUSTER, "db", desired_count=1, placement_constraints=[DISTINCT])
    cluster.create_service(
        CLUSTER,
        "sidecar",
        desired_count=2,
        placement_constraints=[DISTINCT, {"type": "memberOf", "expression": "task:group == service:db"}],
    )
    [db_host] = hosts_of(cluster, "db")
    assert hosts_of(cluster, "sidecar") == [db_host]
    service = cluster.client().describe_services(cluster=CLUSTER, services=["sidecar"])["services"][0]
    assert "unable to place a task" in service["events"][0]["message"]
    cluster.update_desired_count(CLUSTER, "db", 2)
    assert hosts_of(cluster, "sidecar") == hosts_of(cluster, "db") and len(hosts_of(cluster, "db")) == 2
    assert set(hosts_of(cluster, "db")) < set(hosts)


def test_member_of_not_its_own_task_group_counts_the_tasks_placed_in_the_same_run(cluster: LocalECS) -> None:
    """not(task:group == service:spread) keeps one task a host, the tasks just placed included: 3 tasks on 3 hosts,
    and a 4th waits."""
    hosts = cluster.add_hosts(CLUSTER, 3)
    cluster.create_service(
        CLUSTER,
        "spread",
        desired_count=4,
        placement_constraints=[{"type": "memberOf", "expression": "not(task:group == service:spread)"}],
    )
    assert hosts_of(cluster, "spread") == sorted(hosts)


def test_the_gate_keeps_a_new_host_for_hosts_with_the_attribute(cluster: LocalECS) -> None:
    """An application service with memberOf(attribute:ecs-cluster-manager.ready == true) gets no task on a new host,
    with ECS's "missing an attribute" event, until PutAttributes marks the host; then it is placed there."""
    [ready] = cluster.add_hosts(CLUSTER, 1, attributes={READY: "true"})
    cluster.create_service(CLUSTER, "web", desired_count=2, placement_constraints=[DISTINCT, GATE])
    assert hosts_of(cluster, "web") == [ready]
    [new] = cluster.add_hosts(CLUSTER, 1)
    assert hosts_of(cluster, "web") == [ready]
    client = cluster.client()
    [service] = client.describe_services(cluster=CLUSTER, services=["web"])["services"]
    assert "unable to place a task" in service["events"][0]["message"]
    client.put_attributes(cluster=CLUSTER, attributes=[{"name": READY, "value": "true", "targetId": new}])
    assert hosts_of(cluster, "web") == sorted([ready, new])


def test_a_smaller_host_registers_its_own_memory_and_cpu(cluster: LocalECS) -> None:
    """add_hosts(memory=, cpu=) registers a host of that size; a task that does not fit there goes elsewhere."""
    [small] = cluster.add_hosts(CLUSTER, 1, memory=3800, cpu=2048)
    [instance] = cluster.client().describe_container_instances(cluster=CLUSTER, containerInstances=[small])[
        "containerInstances"
    ]
    for key in ("registeredResources", "remainingResources"):
        sizes = {r["name"]: r.get("integerValue") for r in instance[key]}
        assert (sizes["MEMORY"], sizes["CPU"]) == (3800, 2048), key
    big = cluster.register_task_definition("big", memory=4000)
    cluster.create_service(CLUSTER, "big", desired_count=1, task_definition=big)
    assert hosts_of(cluster, "big") == []
    [large] = cluster.add_hosts(CLUSTER, 1)
    assert hosts_of(cluster, "big") == [large]
    assert memory_left(cluster, large) == HOST_MEMORY - 4000


def test_a_task_stopped_to_make_room_does_not_retake_it(cluster: LocalECS) -> None:
    """A daemon service (one task a host) waits on a host whose room an application service's tasks took; one of
    those stopped with StopTask, the daemon's task is placed there and the stopped one starts on another host, although
    the application service was created first and would have had the freed host (it has the fewest of its tasks)."""
    [roomy] = cluster.add_hosts(CLUSTER, 1)
    app = cluster.register_task_definition("app", memory=1800)
    cluster.create_service(CLUSTER, "app", desired_count=2, task_definition=app)
    agent = cluster.register_task_definition("agent", memory=256)
    cluster.create_service(CLUSTER, "agent", desired_count=1, placement_constraints=[DISTINCT], task_definition=agent)
    assert hosts_of(cluster, "agent") == [roomy] and hosts_of(cluster, "app") == [roomy, roomy]
    # A smaller host joins as the application scales out: spread by instance puts both new tasks on it.
    [small] = cluster.add_hosts(CLUSTER, 1, memory=3800)
    cluster.update_desired_count(CLUSTER, "app", 4)
    assert hosts_of(cluster, "app") == sorted([roomy, roomy, small, small])
    cluster.update_desired_count(CLUSTER, "agent", 2)
    assert hosts_of(cluster, "agent") == [roomy]
    [service] = cluster.client().describe_services(cluster=CLUSTER, services=["agent"])["services"]
    assert f"{small.rsplit('/', 1)[-1]} has insufficient memory available" in service["events"][0]["message"]
    victim = next(t["taskArn"] for t in running(cluster, "app") if t["containerInstanceArn"] == small)
    cluster.client().stop_task(cluster=CLUSTER, task=victim, reason="ecs-cluster-manager: making room for agent")
    assert hosts_of(cluster, "agent") == sorted([roomy, small])
    assert hosts_of(cluster, "app") == sorted([roomy, roomy, roomy, small])
    assert victim not in {t["taskArn"] for t in running(cluster, "app")}
    assert memory_left(cluster, small) == 3800 - 1800 - 256


def test_a_service_waiting_longer_places_first(cluster: LocalECS) -> None:
    """Two services short of room: the one that began waiting first gets the first host that fits both."""
    late = cluster.register_task_definition("late", memory=5000)
    early = cluster.register_task_definition("early", memory=5000)
    cluster.create_service(CLUSTER, "late", desired_count=0, task_definition=late)
    cluster.create_service(CLUSTER, "early", desired_count=1, task_definition=early)
    assert hosts_of(cluster, "early") == []  # no host yet: it waits from now
    cluster.update_desired_count(CLUSTER, "late", 1)
    assert hosts_of(cluster, "late") == []
    [host] = cluster.add_hosts(CLUSTER, 1)
    assert hosts_of(cluster, "early") == [host] and hosts_of(cluster, "late") == []


def receive_task_events(local: LocalECS, queue_url: str, until: float) -> list[dict[str, Any]]:
    """The "ECS Task State Change" events on the queue until `until` (time.monotonic()), deleting each message."""
    sqs = local.client("sqs")
    found: list[dict[str, Any]] = []
    while time.monotonic() < until:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        )
        for message in messages:
            body = json.loads(message["Body"])
            if body["detail-type"] == "ECS Task State Change":
                found.append(body)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        if found and not messages:
            return found
    return found


def test_tasks_are_placed_without_a_read_pending_then_running_with_task_events(placing: LocalECS) -> None:
    """With start_after, an UpdateService that raises desiredCount places the task by itself: PENDING at first (a
    read just after the change finds no RUNNING task), RUNNING 0.5 s later; its "ECS Task State Change" events
    (group service:NAME, PENDING then RUNNING, the host, the cluster, version 1 then 2) reach the queue while nothing
    reads ECS; the gated service's task starts the same way once the host gets the attribute."""
    queue = placing.enable_events(CLUSTER, task_events=True)
    [host] = placing.add_hosts(CLUSTER, 1)
    placing.create_service(CLUSTER, "agent", desired_count=0)
    placing.create_service(CLUSTER, "web", desired_count=1, placement_constraints=[GATE])
    client = placing.client()
    client.update_service(cluster=CLUSTER, service="agent", desiredCount=1)
    raised = time.monotonic()
    assert running(placing, "agent") == [] or time.monotonic() - raised >= 0.5  # a slow machine may take that long
    events = receive_task_events(placing, queue, time.monotonic() + 10)
    assert [(e["detail"]["lastStatus"], e["detail"]["version"]) for e in events] == [("PENDING", 1), ("RUNNING", 2)]
    assert time.monotonic() - raised >= 0.5
    detail = events[-1]["detail"]
    assert (detail["group"], detail["containerInstanceArn"], detail["taskArn"]) == (
        "service:agent", host, events[0]["detail"]["taskArn"]
    )
    assert detail["clusterArn"].endswith(f":cluster/{CLUSTER}") and "startedAt" in detail
    [task] = running(placing, "agent")
    assert task["startedAt"].timestamp() - task["createdAt"].timestamp() >= 0.49
    [service] = client.describe_services(cluster=CLUSTER, services=["agent"])["services"]
    assert (service["runningCount"], service["pendingCount"]) == (1, 0)
    client.put_attributes(cluster=CLUSTER, attributes=[{"name": READY, "value": "true", "targetId": host}])
    gated = receive_task_events(placing, queue, time.monotonic() + 10)
    assert [(e["detail"]["group"], e["detail"]["lastStatus"]) for e in gated] == [
        ("service:web", "PENDING"), ("service:web", "RUNNING")
    ]


def test_serve_with_start_after_and_task_events_places_and_reports_without_a_read() -> None:
    """`serve --events --task-events --start-after 0.2`: a raised desiredCount puts the task's PENDING and RUNNING
    events on the exported queue while nothing reads ECS."""
    server = subprocess.Popen(
        [sys.executable, "-m", "localecs", "serve", "--hosts", "1", "--services", "agent", "--events", "--task-events",
         "--start-after", "0.2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert server.stdout is not None
        exports: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while not exports and time.monotonic() < deadline:
            line = server.stdout.readline()
            if line.startswith("export "):
                exports = dict(pair.split("=", 1) for pair in line.split()[1:])
        options: dict[str, Any] = {
            "endpoint_url": exports["AWS_ENDPOINT_URL"], "region_name": exports["AWS_REGION"],
            "aws_access_key_id": "testing", "aws_secret_access_key": "testing",
        }
        boto3.client("ecs", **options).update_service(cluster=exports["CLUSTER"], service="agent", desiredCount=1)
        sqs = boto3.client("sqs", **options)
        statuses: list[str] = []
        until = time.monotonic() + 15
        while len(statuses) < 2 and time.monotonic() < until:
            for message in sqs.receive_message(QueueUrl=exports["EVENTS_QUEUE_URL"], MaxNumberOfMessages=10,
                                               WaitTimeSeconds=1).get("Messages", []):
                body = json.loads(message["Body"])
                if body["detail-type"] == "ECS Task State Change":
                    statuses.append(body["detail"]["lastStatus"])
        assert statuses == ["PENDING", "RUNNING"]
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=20) == 0
    finally:
        if server.poll() is None:
            os.kill(server.pid, signal.SIGKILL)
            server.wait()


def test_the_attribute_is_read_back_by_short_id_and_full_arn(cluster: LocalECS) -> None:
    """An attribute put by short id (with targetType) reads the same through DescribeContainerInstances by short id
    and by full ARN, and ListAttributes names the host by its full ARN, as ECS does."""
    [host] = cluster.add_hosts(CLUSTER, 1)
    short = host.rsplit("/", 1)[-1]
    client = cluster.client()
    client.put_attributes(
        cluster=CLUSTER,
        attributes=[{"name": READY, "value": "true", "targetId": short, "targetType": "container-instance"}],
    )
    for reference in (short, host):
        [described] = client.describe_container_instances(cluster=CLUSTER, containerInstances=[reference])[
            "containerInstances"
        ]
        assert described["containerInstanceArn"] == host
        assert {"name": READY, "value": "true"} in described["attributes"], reference
    listed = client.list_attributes(
        cluster=CLUSTER, targetType="container-instance", attributeName=READY, attributeValue="true"
    )["attributes"]
    assert [(a["targetId"], a["value"]) for a in listed] == [(host, "true")]
