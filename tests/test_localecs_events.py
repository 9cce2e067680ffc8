"""The local ECS API's container instance state-change events: EventBridge to SQS, as ECS delivers them.

Every event is read back from the queue with a plain boto3 SQS client, as the
daemon's events source will read it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import boto3
import pytest

from daemon_helpers import ROOT
from localecs import LocalECS

CLUSTER = "events-cluster"
OTHER = "other-cluster"
DETAIL_KEYS = {
    "agentConnected",
    "attributes",
    "clusterArn",
    "containerInstanceArn",
    "ec2InstanceId",
    "registeredResources",
    "remainingResources",
    "status",
    "version",
    "versionInfo",
    "updatedAt",
}


@pytest.fixture
def queue(ecs: LocalECS) -> str:
    """A clean local ECS with one cluster whose events go to the returned queue URL."""
    ecs.create_cluster(CLUSTER)
    return ecs.enable_events(CLUSTER)


def receive(ecs: LocalECS, queue_url: str, *, wait: int = 1) -> list[dict[str, Any]]:
    """Every message body now on the queue, parsed, deleting each; waits up to `wait` s for the first."""
    sqs = ecs.client("sqs")
    bodies: list[dict[str, Any]] = []
    while True:
        answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0 if bodies else wait)
        messages = answer.get("Messages", [])
        if not messages:
            return bodies
        bodies.extend(json.loads(message["Body"]) for message in messages)
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
        )


def remaining(detail: dict[str, Any], name: str) -> int:
    return next(int(r["integerValue"]) for r in detail["remainingResources"] if r["name"] == name)


def test_registration_event_has_the_ecs_document_shape(ecs: LocalECS, queue: str) -> None:
    """add_hosts publishes one event per host whose body is EventBridge's document, detail mirroring the host."""
    [host] = ecs.add_hosts(CLUSTER, 1, attributes={"role": "web"})
    [event] = receive(ecs, queue)
    assert set(event) == {"id", "time", "version", "detail-type", "source", "region", "resources", "detail"}
    assert event["source"] == "aws.ecs" and event["detail-type"] == "ECS Container Instance State Change"
    assert event["version"] == "0" and event["region"] == ecs.region and event["resources"] == [host]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["time"])
    detail = event["detail"]
    assert set(detail) == DETAIL_KEYS
    assert detail["clusterArn"] == f"arn:aws:ecs:{ecs.region}:{ecs.account_id}:cluster/{CLUSTER}"
    assert detail["containerInstanceArn"] == host
    assert detail["status"] == "ACTIVE" and detail["agentConnected"] is True and detail["version"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", detail["updatedAt"])
    assert detail["updatedAt"].startswith(event["time"][:-1])
    attributes = {a["name"]: a.get("value") for a in detail["attributes"]}
    assert attributes["role"] == "web" and attributes["ecs.os-type"] == "linux"
    assert {"ecs.instance-type", "ecs.availability-zone", "ecs.ami-id"} <= attributes.keys()
    [described] = ecs.client().describe_container_instances(cluster=CLUSTER, containerInstances=[host])[
        "containerInstances"
    ]
    assert detail["ec2InstanceId"] == described["ec2InstanceId"]
    assert detail["registeredResources"] == described["registeredResources"]
    assert detail["remainingResources"] == described["remainingResources"]
    assert detail["versionInfo"] == described["versionInfo"]
    assert event == ecs.last_event(host)


def test_each_kind_of_change_is_one_event_with_a_growing_version(ecs: LocalECS, queue: str) -> None:
    """Drain, activate, disconnect, connect, task placed and stopped, deregister: one event each, version +1."""
    host, _ = ecs.add_hosts(CLUSTER, 2)
    receive(ecs, queue)
    ecs.drain(CLUSTER, host)
    ecs.activate(CLUSTER, host)
    ecs.set_agent_connected(CLUSTER, host, False)
    ecs.set_agent_connected(CLUSTER, host, True)
    ecs.task_placed(CLUSTER, host, cpu=256, memory=64)
    ecs.task_stopped(CLUSTER, host, cpu=256, memory=64)
    ecs.deregister(CLUSTER, host)
    events = sorted(receive(ecs, queue), key=lambda event: event["detail"]["version"])
    assert [e["resources"] for e in events] == [[host]] * 7
    details = [e["detail"] for e in events]
    assert [d["version"] for d in details] == [2, 3, 4, 5, 6, 7, 8]
    assert [(d["status"], d["agentConnected"]) for d in details] == [
        ("DRAINING", True),
        ("ACTIVE", True),
        ("ACTIVE", False),
        ("ACTIVE", True),
        ("ACTIVE", True),
        ("ACTIVE", True),
        ("INACTIVE", False),
    ]
    assert [remaining(d, "CPU") for d in details[3:6]] == [4096, 4096 - 256, 4096]
    assert [remaining(d, "MEMORY") for d in details[3:6]] == [7482, 7482 - 64, 7482]


def test_changes_through_the_api_publish_events(ecs: LocalECS, queue: str) -> None:
    """RegisterContainerInstance and UpdateContainerInstancesState by a client publish; a no-op update does not."""
    ec2 = ecs.client("ec2")
    instance = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)["Instances"][0]
    document = json.dumps({"instanceId": instance["InstanceId"], "region": ecs.region})
    client = ecs.client()
    registered = client.register_container_instance(cluster=CLUSTER, instanceIdentityDocument=document)
    arn = registered["containerInstance"]["containerInstanceArn"]
    client.update_container_instances_state(cluster=CLUSTER, containerInstances=[arn], status="DRAINING")
    client.update_container_instances_state(cluster=CLUSTER, containerInstances=[arn], status="DRAINING")
    client.deregister_container_instance(cluster=CLUSTER, containerInstance=arn, force=True)
    events = sorted(receive(ecs, queue), key=lambda event: event["detail"]["version"])
    assert [(e["detail"]["version"], e["detail"]["status"]) for e in events] == [
        (1, "ACTIVE"),
        (2, "DRAINING"),
        (3, "INACTIVE"),
    ]
    assert all(e["detail"]["ec2InstanceId"] == instance["InstanceId"] for e in events)


def test_put_attributes_publishes_nothing(ecs: LocalECS, queue: str) -> None:
    """PutAttributes, by a client or set_attributes, changes a host without an event, as in ECS."""
    [host] = ecs.add_hosts(CLUSTER, 1)
    receive(ecs, queue)
    ecs.set_attributes(CLUSTER, host, {"role": "batch"})
    ecs.client().put_attributes(cluster=CLUSTER, attributes=[{"name": "team", "value": "a", "targetId": host}])
    assert receive(ecs, queue) == []
    ecs.drain(CLUSTER, host)
    [event] = receive(ecs, queue)
    attributes = {a["name"]: a.get("value") for a in event["detail"]["attributes"]}
    assert attributes["role"] == "batch" and attributes["team"] == "a" and event["detail"]["version"] == 2


def test_another_clusters_changes_stay_out_of_this_clusters_queue(ecs: LocalECS, queue: str) -> None:
    """The rule's clusterArn pattern keeps each cluster's events in its own queue."""
    ecs.create_cluster(OTHER)
    other_hosts = ecs.add_hosts(OTHER, 2)
    ecs.drain(OTHER, other_hosts[0])
    assert receive(ecs, queue) == []
    other_queue = ecs.enable_events(OTHER)
    assert other_queue != queue
    ecs.deregister(OTHER, other_hosts[1])
    mine = ecs.add_hosts(CLUSTER, 1)
    assert [e["resources"] for e in receive(ecs, queue)] == [mine]
    assert [e["detail"]["status"] for e in receive(ecs, other_queue)] == ["INACTIVE"]


def test_enable_is_idempotent_and_disable_stops_delivery(ecs: LocalECS, queue: str) -> None:
    """enable_events twice gives the same queue and one copy of each event; after disable nothing is published."""
    assert ecs.enable_events(CLUSTER) == queue
    host = ecs.add_hosts(CLUSTER, 1)[0]
    assert len(receive(ecs, queue)) == 1
    ecs.disable_events(CLUSTER)
    assert not ecs.events.active
    published = ecs.events.published
    ecs.drain(CLUSTER, host)
    assert ecs.events.published == published
    assert ecs.events.queue_url(CLUSTER) is None


def test_reset_forgets_subscriptions_and_versions(ecs: LocalECS, queue: str) -> None:
    """After reset() nothing is published until events are enabled again, and versions start over."""
    ecs.add_hosts(CLUSTER, 1)
    ecs.reset()
    assert not ecs.events.active and ecs.events.published == 0
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, 1)
    assert ecs.events.published == 0
    again = ecs.enable_events(CLUSTER)
    [host] = ecs.add_hosts(CLUSTER, 1)
    [event] = receive(ecs, again)
    assert event["resources"] == [host] and event["detail"]["version"] == 1


def test_raw_messages_reach_the_queue_as_sent(ecs: LocalECS, queue: str) -> None:
    """send_raw_event puts duplicates, stale versions and garbage on the queue, unlogged."""
    [host] = ecs.add_hosts(CLUSTER, 1)
    ecs.drain(CLUSTER, host)
    delivered = sorted(receive(ecs, queue), key=lambda event: event["detail"]["version"])
    latest = ecs.last_event(host)
    assert latest == delivered[-1] and latest is not None
    stale = json.loads(json.dumps(latest))
    stale["detail"]["version"] = 1
    ecs.clear_calls()
    ecs.send_raw_event(queue, json.dumps(latest))
    ecs.send_raw_event(queue, stale)
    ecs.send_raw_event(queue, "not json {")
    sqs = ecs.client("sqs")
    bodies = []
    while len(bodies) < 3:
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        assert messages, f"only {len(bodies)} of 3 raw messages arrived"
        bodies.extend(message["Body"] for message in messages)
    assert sorted(bodies) == sorted([json.dumps(latest), json.dumps(stale), "not json {"])
    assert {call.operation for call in ecs.calls} == {"ReceiveMessage"}


def test_harness_publishing_is_not_in_the_call_log(ecs: LocalECS, queue: str) -> None:
    """The call log shows a client's own calls only: no PutEvents, SendMessage or rule set-up of the harness."""
    ecs.create_cluster(OTHER)
    ecs.enable_events(OTHER)
    host = ecs.add_hosts(CLUSTER, 3)[0]
    ecs.drain(CLUSTER, host)
    ecs.set_agent_connected(CLUSTER, host, False)
    ecs.client().update_container_instances_state(cluster=CLUSTER, containerInstances=[host], status="ACTIVE")
    assert [(call.service, call.operation) for call in ecs.calls] == [("ecs", "UpdateContainerInstancesState")]


def test_thousand_hosts_publish_a_thousand_events(ecs: LocalECS, queue: str) -> None:
    """Registering 1,000 hosts puts 1,000 registration events, one per host, on the queue."""
    started = time.perf_counter()
    hosts = ecs.add_hosts(CLUSTER, 1000)
    registered = time.perf_counter() - started
    events = receive(ecs, queue)
    received = time.perf_counter() - started - registered
    print(f"\n1,000 hosts with events: add_hosts {registered:.1f} s, receiving them {received:.1f} s")
    assert sorted(e["resources"][0] for e in events) == sorted(hosts)
    assert {e["detail"]["version"] for e in events} == {1}
    assert ecs.events.published == 1000


def test_serve_with_events_exports_the_queue_and_control_commands_fill_it() -> None:
    """`serve --events` prints EVENTS_QUEUE_URL; add-host and drain from another process land on that queue."""
    server = subprocess.Popen(
        [sys.executable, "-m", "localecs", "serve", "--hosts", "1", "--services", "", "--events"],
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
        assert "EVENTS_QUEUE_URL" in exports, "no EVENTS_QUEUE_URL in the export line"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(exports, AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
        for command in (["add-host"], ["drain"]):
            result = subprocess.run([sys.executable, "-m", "localecs", *command], cwd=ROOT, env=env,
                                    capture_output=True, text=True, timeout=60, check=False)
            assert result.returncode == 0, result.stderr
        sqs = boto3.client("sqs", endpoint_url=exports["AWS_ENDPOINT_URL"], region_name=exports["AWS_REGION"],
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        details = []
        while len(details) < 2:
            answer = sqs.receive_message(QueueUrl=exports["EVENTS_QUEUE_URL"], MaxNumberOfMessages=10,
                                         WaitTimeSeconds=2)
            assert answer.get("Messages"), f"{len(details)} of 2 events arrived"
            details.extend(json.loads(message["Body"])["detail"] for message in answer["Messages"])
        # The serve's own first host registered before the queue existed; the added one is the newest.
        assert sorted((d["status"], d["version"]) for d in details) == [("ACTIVE", 1), ("DRAINING", 2)]
        assert len({d["containerInstanceArn"] for d in details}) == 1
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=20) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
