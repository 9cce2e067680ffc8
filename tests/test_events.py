"""Which ECS container instance events start a pass, read from message bodies, without any server."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from ecs_cluster_manager.model.models import QueueMessage
from ecs_cluster_manager.observe import events

CLUSTER_ARN = "arn:aws:ecs:us-east-1:123456789012:cluster/prod"
HOST = "arn:aws:ecs:us-east-1:123456789012:container-instance/prod/0a1b"


def body(
    version: int,
    *,
    status: str = "ACTIVE",
    connected: bool = True,
    arn: str = HOST,
    cluster: str = CLUSTER_ARN,
    **extra: Any,
) -> str:
    detail = {
        "agentConnected": connected,
        "clusterArn": cluster,
        "containerInstanceArn": arn,
        "ec2InstanceId": "i-0123456789abcdef0",
        "status": status,
        "version": version,
        "attributes": [],
        "remainingResources": [],
    }
    document = {
        "version": "0",
        "id": "1",
        "detail-type": "ECS Container Instance State Change",
        "source": "aws.ecs",
        "time": "2026-11-28T12:00:00Z",
        "region": "us-east-1",
        "resources": [arn],
        "detail": detail,
        **extra,
    }
    return json.dumps(document)


def test_parse_reads_the_fields_and_the_time() -> None:
    """The instance, cluster, status, agent, version and event time come out of the EventBridge document."""
    change = events.parse(body(7, status="DRAINING", connected=False))
    assert change == events.InstanceChange(
        HOST,
        "i-0123456789abcdef0",
        CLUSTER_ARN,
        "DRAINING",
        False,
        7,
        change.time,  # type: ignore[union-attr]
    )
    assert isinstance(change, events.InstanceChange) and change.time == pytest.approx(1795867200.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ("[1]", "not a JSON object"),
        (json.dumps({"source": "aws.ecs", "detail-type": "ECS Container Instance State Change"}), "no detail"),
        (body(1).replace('"version": 1', '"version": "1"'), "version"),
        (body(1).replace('"agentConnected": true', '"agentConnected": "yes"'), "agentConnected"),
        (body(1).replace('"status": "ACTIVE", ', ""), "status"),
    ],
)
def test_malformed_bodies_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(events.MalformedEvent, match=message):
        events.parse(text)


def test_other_event_types_are_ignored() -> None:
    action = json.dumps({"source": "aws.ecs", "detail-type": "ECS Service Action", "detail": {}})
    assert events.parse(action) == events.Ignored(events.OTHER_TYPE)
    # Task state changes are read (READY_ATTRIBUTE follows them): one without its fields is malformed.
    task = json.dumps({"source": "aws.ecs", "detail-type": "ECS Task State Change", "detail": {}})
    with pytest.raises(events.MalformedEvent, match="taskArn"):
        events.parse(task)


def test_seen_drops_copies_and_older_versions_and_stays_bounded() -> None:
    """The source's memory of versions drops repeats, and never holds more than its limit of instances."""
    seen = events.Seen(limit=3)
    first = events.parse(body(5))
    assert isinstance(first, events.InstanceChange)
    assert seen.check(first) is None
    assert seen.check(first) == events.DUPLICATE
    older = events.parse(body(4, status="DRAINING"))
    assert isinstance(older, events.InstanceChange) and seen.check(older) == events.STALE
    for index in range(10):
        change = events.parse(body(1, arn=f"{HOST}-{index}"))
        assert isinstance(change, events.InstanceChange) and seen.check(change) is None
    assert len(seen) == 3


class Queue:
    """What EventSource needs of ecs.Api to delete messages: records the deletions."""

    def __init__(self) -> None:
        self.deleted: list[str] = []

    def delete_messages(self, queue_url: str, messages: Sequence[QueueMessage]) -> dict[str, str]:
        self.deleted.extend(m.message_id for m in messages)
        return {}


def test_a_batch_is_deleted_whole_and_only_new_changes_wake_the_loop() -> None:
    """New, ignored and malformed messages are all deleted; only this cluster's new versions are handed on, once."""
    queue = Queue()
    wake = threading.Event()
    source = events.EventSource(
        queue,  # type: ignore[arg-type]
        "http://127.0.0.1/123456789012/q",
        "prod",
        stop=threading.Event(),
        wake=wake,
    )
    bodies = [body(1), body(1), "{broken", body(2), body(1, arn=HOST + "x", cluster=CLUSTER_ARN + "x")]
    source.handle([QueueMessage(f"m{i}", f"r{i}", text) for i, text in enumerate(bodies)])
    assert queue.deleted == ["m0", "m1", "m2", "m3", "m4"]
    assert wake.is_set()
    changes = source.take()
    assert [c.version for c in changes] == [1, 2] and not wake.is_set()
    assert all(c.arrived > 0 for c in changes)  # stamped with their arrival, on the store's clock
    source.counted(1, [events.NO_CHANGE])  # the loop's verdict once the store has them
    stats = source.snapshot()
    assert (stats.received, stats.relevant, stats.malformed) == (5, 1, 1)
    assert stats.ignored == {events.DUPLICATE: 1, events.NO_CHANGE: 1, events.OTHER_CLUSTER: 1}
