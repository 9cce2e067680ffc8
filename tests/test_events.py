"""Which ECS container instance events start a pass, read from message bodies, without any server."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from ecs_cluster_manager import events
from ecs_cluster_manager.models import QueueMessage

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


def classify(relevance: events.Relevance, text: str) -> str | None:
    parsed = events.parse(text)
    return parsed.reason if isinstance(parsed, events.Ignored) else relevance.classify(parsed)


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
    task = json.dumps({"source": "aws.ecs", "detail-type": "ECS Task State Change", "detail": {}})
    assert events.parse(task) == events.Ignored(events.OTHER_TYPE)


def test_which_changes_start_a_pass() -> None:
    """Unknown instance and status changes do; duplicates, older versions, task placements and lost agents don't."""
    relevance = events.Relevance("prod")
    assert classify(relevance, body(5)) is None  # unknown instance
    assert classify(relevance, body(5)) == events.DUPLICATE
    assert classify(relevance, body(4, status="DRAINING")) == events.STALE
    assert classify(relevance, body(6)) == events.NO_CHANGE  # a task placed: remainingResources only
    assert classify(relevance, body(7, connected=False)) == events.AGENT_LOST
    assert classify(relevance, body(8, connected=True)) == events.AGENT_BACK  # back within its hold
    assert classify(relevance, body(9, status="DRAINING")) is None
    assert classify(relevance, body(10, status="ACTIVE")) is None
    assert classify(relevance, body(11, status="INACTIVE", connected=False)) is None
    assert classify(relevance, body(1, cluster="arn:aws:ecs:us-east-1:123456789012:cluster/other")) == (
        events.OTHER_CLUSTER
    )


def test_an_agent_back_after_its_hold_starts_a_pass() -> None:
    """An agent a regular pass found lost long enough to be lowered for starts a pass when it is back;
    one still within its hold does not."""
    relevance = events.Relevance("prod")
    other = HOST + "b"
    relevance.learn(active=[HOST, other], usable=[HOST, other])
    assert classify(relevance, body(3, connected=False)) == events.AGENT_LOST
    assert classify(relevance, body(1, arn=other, connected=False)) == events.AGENT_LOST
    relevance.learn(active=[HOST, other], usable=[], counted_out=[HOST])  # HOST's hold ran out, other's did not
    assert classify(relevance, body(4, connected=True)) is None
    assert classify(relevance, body(2, arn=other, connected=True)) == events.AGENT_BACK


def test_instances_a_pass_listed_are_known() -> None:
    """An instance seen in a regular pass's listing starts no pass for a task placement, even before any event."""
    relevance = events.Relevance("prod")
    relevance.learn(active=[HOST], usable=[HOST])
    assert classify(relevance, body(40)) == events.NO_CHANGE
    assert classify(relevance, body(41, status="DRAINING")) is None


def test_without_a_hold_every_agent_change_matters() -> None:
    """The Lambda handler has no hold: a lost agent lowers at once, so it starts a pass."""
    relevance = events.Relevance("arn:aws:ecs:us-east-1:999999999999:cluster/prod", hold=False)  # by name
    assert classify(relevance, body(1)) is None
    assert classify(relevance, body(2, connected=False)) is None
    assert classify(relevance, body(3, connected=True)) is None


class Queue:
    """What EventSource needs of ecs.Api to delete messages: records the deletions."""

    def __init__(self) -> None:
        self.deleted: list[str] = []

    def delete_messages(self, queue_url: str, messages: Sequence[QueueMessage]) -> dict[str, str]:
        self.deleted.extend(m.message_id for m in messages)
        return {}


def test_a_batch_is_deleted_whole_and_only_relevant_changes_wake_the_loop() -> None:
    """Relevant, ignored and malformed messages are all deleted; only relevant ones are handed on, once."""
    queue = Queue()
    wake = threading.Event()
    source = events.EventSource(
        queue,  # type: ignore[arg-type]
        "http://127.0.0.1/123456789012/q",
        events.Relevance("prod"),
        stop=threading.Event(),
        wake=wake,
    )
    bodies = [body(1), body(1), "{broken", body(2), body(1, arn=HOST + "x", cluster=CLUSTER_ARN + "x")]
    source.handle([QueueMessage(f"m{i}", f"r{i}", text) for i, text in enumerate(bodies)])
    assert queue.deleted == ["m0", "m1", "m2", "m3", "m4"]
    assert wake.is_set()
    changes = source.take()
    assert [c.version for c in changes] == [1] and not wake.is_set()
    stats = source.snapshot()
    assert (stats.received, stats.relevant, stats.malformed) == (5, 1, 1)
    assert stats.ignored == {events.DUPLICATE: 1, events.NO_CHANGE: 1, events.OTHER_CLUSTER: 1}
