"""End to end: `python run.py` with EVENTS_QUEUE_URL against the local ECS API, which publishes ECS
container instance state-change events through EventBridge to SQS, as AWS does."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon_helpers import Daemon, free_port, http_get
from localecs import ApiRequest, Fault, LocalECS, fault_on

GONE = "scale down: fewer ACTIVE hosts (drained or deregistered)"

CLUSTER = "prod"
DISTINCT = [{"type": "distinctInstance"}]
LONG_INTERVAL = "300"




def passes(daemon: Daemon, trigger: str | None = None) -> list[dict[str, Any]]:
    return [e for e in daemon.events if e.get("event") == "pass" and (trigger is None or e.get("trigger") == trigger)]


def queue_depth(local: LocalECS, queue_url: str) -> int:
    attributes = local.client("sqs").get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


@pytest.fixture
def events_daemon(ecs: LocalECS, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Daemon, str]]:
    """A cluster of `hosts` (default 4) with service agent, events on, and the daemon at INTERVAL=300."""
    hosts = getattr(request, "param", 4)
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, hosts)
    ecs.create_service(CLUSTER, "agent", placement_constraints=DISTINCT)
    queue_url = ecs.enable_events(CLUSTER)
    with Daemon(
        ecs,
        CLUSTER=CLUSTER,
        SERVICES="agent",
        INTERVAL=LONG_INTERVAL,
        SCALE_DOWN_AFTER="2",
        EVENTS_QUEUE_URL=queue_url,
        HEARTBEAT_FILE=str(tmp_path / "hb"),
    ) as daemon:
        assert daemon.wait_for(lambda: ecs.desired_count(CLUSTER, "agent") == hosts, timeout=120)
        assert daemon.wait_passes(1)  # the first pass has ended (its coverage read follows the write)
        assert daemon.wait_for(lambda: any(e.get("event") == "events_start" for e in daemon.events))
        yield daemon, queue_url
        assert daemon.stop() == 0


@pytest.mark.parametrize("events_daemon", [10, 1000], indirect=True, ids=["10-hosts", "1000-hosts"])
def test_a_registered_host_raises_desired_count_within_2s_of_its_event(
    ecs: LocalECS, events_daemon: tuple[Daemon, str]
) -> None:
    """At INTERVAL=300 a new host is sized for within 2 s, by an event pass whose calls do not grow with the hosts."""
    daemon, _ = events_daemon
    hosts = ecs.desired_count(CLUSTER, "agent")
    for added in range(1, 4):
        started = time.monotonic()
        ecs.add_hosts(CLUSTER, 1)
        assert daemon.wait_for(lambda: ecs.desired_count(CLUSTER, "agent") == hosts + added, timeout=10)  # noqa: B023
        assert time.monotonic() - started < 2.0
    # desiredCount is written before the pass logs its own line: wait for the third pass's line too.
    assert daemon.wait_for(lambda: len(passes(daemon, "event")) >= 3, timeout=5)
    event_passes = passes(daemon, "event")
    assert len(event_passes) == 3 and len(passes(daemon, "interval")) == 1
    # DescribeServices and UpdateService: no ListContainerInstances, whatever the cluster size.
    assert all(p["api_calls"] == 2 for p in event_passes), [p["api_calls"] for p in event_passes]


def test_a_drained_host_lowers_at_the_next_event_pass(ecs: LocalECS, events_daemon: tuple[Daemon, str]) -> None:
    """DRAINING, then deregistered: each lowers desiredCount at once, without waiting for INTERVAL or a hold."""
    daemon, _ = events_daemon
    arns = [h["containerInstanceArn"] for h in ecs.hosts(CLUSTER)]
    ecs.drain(CLUSTER, arns[0])
    assert daemon.wait_for(lambda: ecs.desired_count(CLUSTER, "agent") == 3, timeout=5)
    ecs.deregister(CLUSTER, arns[1])
    assert daemon.wait_for(lambda: ecs.desired_count(CLUSTER, "agent") == 2, timeout=5)

    def reasons() -> list[str]:
        return [e["reason"] for e in daemon.events if e.get("event") == "decision" and e.get("action") == "update"]

    assert daemon.wait_for(lambda: reasons()[-2:] == [GONE, GONE], timeout=5)
    assert len(passes(daemon, "interval")) == 1


def test_routine_agent_reconnects_and_task_placements_start_no_pass(
    ecs: LocalECS, events_daemon: tuple[Daemon, str]
) -> None:
    """An agent lost and back within its hold, and tasks placed and stopped, lower nothing and cost no pass."""
    daemon, queue_url = events_daemon
    arns = [h["containerInstanceArn"] for h in ecs.hosts(CLUSTER)]
    before = len(passes(daemon))
    ecs.set_agent_connected(CLUSTER, arns[0], False)
    ecs.set_agent_connected(CLUSTER, arns[0], True)
    ecs.task_placed(CLUSTER, arns[1])
    ecs.task_stopped(CLUSTER, arns[1])
    assert daemon.wait_for(lambda: queue_depth(ecs, queue_url) == 0, timeout=10)
    time.sleep(0.5)
    assert len(passes(daemon)) == before
    assert ecs.desired_count(CLUSTER, "agent") == 4


def test_duplicated_reordered_and_other_cluster_events_change_nothing(
    ecs: LocalECS, events_daemon: tuple[Daemon, str]
) -> None:
    """At-least-once and unordered delivery: repeats and older versions are dropped; another cluster's too."""
    daemon, queue_url = events_daemon
    arns = [h["containerInstanceArn"] for h in ecs.hosts(CLUSTER)]
    ecs.drain(CLUSTER, arns[0])
    assert daemon.wait_for(lambda: ecs.desired_count(CLUSTER, "agent") == 3, timeout=5)
    # The pass that wrote it logs its `pass` event just after the write: count passes from then on.
    assert daemon.wait_for(lambda: any(list(p["hosts"].values()) == [3] for p in passes(daemon)), timeout=5)
    drained = ecs.last_event(arns[0])
    assert drained is not None and drained["detail"]["status"] == "DRAINING"
    before = len(passes(daemon))
    older = json.loads(json.dumps(drained))
    older["detail"].update(status="ACTIVE", version=drained["detail"]["version"] - 1)
    other = json.loads(json.dumps(drained))
    other["detail"].update(clusterArn=drained["detail"]["clusterArn"].replace("/prod", "/staging"), version=10**6)
    for body in (drained, drained, older, other):
        ecs.send_raw_event(queue_url, body)
    assert daemon.wait_for(lambda: queue_depth(ecs, queue_url) == 0, timeout=10)
    time.sleep(0.5)
    assert len(passes(daemon)) == before
    assert ecs.desired_count(CLUSTER, "agent") == 3


def test_malformed_messages_are_logged_with_their_id_and_deleted(
    ecs: LocalECS, events_daemon: tuple[Daemon, str]
) -> None:
    """A body that is not an ECS event is logged once with the message id and deleted, never retried."""
    daemon, queue_url = events_daemon
    message_id = ecs.send_raw_event(queue_url, "not an event {")
    assert daemon.wait_for(lambda: queue_depth(ecs, queue_url) == 0, timeout=10)
    time.sleep(0.5)
    logged = [e for e in daemon.events if e.get("event") == "event_malformed"]
    assert [e["message_id"] for e in logged] == [message_id]


def test_a_burst_of_100_host_events_gives_at_most_3_passes(ecs: LocalECS, events_daemon: tuple[Daemon, str]) -> None:
    """100 hosts registering at once are coalesced: at most 3 event passes, and the count is right."""
    daemon, _ = events_daemon
    ecs.add_hosts(CLUSTER, 100)
    assert daemon.wait_for(lambda: ecs.desired_count(CLUSTER, "agent") == 104, timeout=30)
    time.sleep(1.0)
    assert 1 <= len(passes(daemon, "event")) <= 3, [p["api_calls"] for p in passes(daemon, "event")]


def test_sigterm_ends_the_long_poll_within_a_second(ecs: LocalECS, events_daemon: tuple[Daemon, str]) -> None:
    """With a 20 s long poll in flight, SIGTERM still ends the process within a second, exit 0."""
    daemon, _ = events_daemon
    time.sleep(0.5)
    started = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=10) == 0
    assert time.monotonic() - started < 1.5


def _stopping(daemon: Daemon) -> dict[str, Any]:
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.wait_for(lambda: any(e.get("event") == "stopping" for e in daemon.events), timeout=5)
    [stopping] = [e for e in daemon.events if e.get("event") == "stopping"]
    return stopping


def test_stopping_does_not_name_the_events_threads_long_poll_as_the_loops_call(
    ecs: LocalECS, events_daemon: tuple[Daemon, str]
) -> None:
    """A SIGTERM while the loop sleeps and the events thread long-polls: `stopping` says nothing is on the wire."""
    daemon, _ = events_daemon
    polling = threading.Event()

    def hook(request: ApiRequest) -> None:
        if request.operation == "ReceiveMessage":
            polling.set()

    ecs.fault_hook = hook
    assert polling.wait(30)  # a long poll on the wire (20 s, no message comes)
    time.sleep(0.3)
    stopping = _stopping(daemon)
    assert stopping["operation"] is None, stopping
    assert stopping["waiting_for"].startswith("nothing on the wire"), stopping
    assert daemon.process.wait(timeout=10) == 0


def test_stopping_names_the_loops_call_when_a_long_poll_started_after_it(
    ecs: LocalECS, events_daemon: tuple[Daemon, str]
) -> None:
    """The loop's slow DescribeServices is what `stopping` names, though the events thread's poll went out later."""
    daemon, _ = events_daemon
    slow = threading.Event()
    polled_after = threading.Event()

    def hook(request: ApiRequest) -> Fault | None:
        if request.operation == "DescribeServices" and not slow.is_set():
            slow.set()
            return Fault.delay(8)
        if request.operation == "ReceiveMessage" and slow.is_set():
            polled_after.set()
        return None

    ecs.fault_hook = hook
    ecs.add_hosts(CLUSTER, 1)  # an event pass: its DescribeServices hangs on the wire
    assert slow.wait(30)
    ecs.add_hosts(CLUSTER, 1)  # ends the events thread's poll; it polls again, while the loop's call still waits
    assert polled_after.wait(30)
    time.sleep(0.3)
    stopping = _stopping(daemon)
    assert stopping["operation"] == "DescribeServices", stopping
    assert "DescribeServices" in stopping["waiting_for"], stopping
    assert daemon.process.wait(timeout=20) == 0  # once that call has answered


def test_the_queue_down_for_30s_leaves_interval_passes_working(ecs: LocalECS, tmp_path: Path) -> None:
    """ReceiveMessage failing for 30 s: INTERVAL passes go on and size the service, /healthz stays 200 and
    says the events source is degraded, the metrics say so; then events work again."""
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, 2)
    ecs.create_service(CLUSTER, "agent", placement_constraints=DISTINCT)
    queue_url = ecs.enable_events(CLUSTER)
    port = free_port()
    ecs.fault_hook = fault_on("ReceiveMessage", Fault.error(500, "InternalError", "queue down"), service="sqs")
    with Daemon(
        ecs,
        CLUSTER=CLUSTER,
        SERVICES="agent",
        INTERVAL="1",
        EVENTS_QUEUE_URL=queue_url,
        METRICS_PORT=str(port),
        METRICS_ADDR="127.0.0.1",
        HEARTBEAT_FILE=str(tmp_path / "hb"),
    ) as daemon:
        outage_ends = time.monotonic() + 30
        assert daemon.wait_for(lambda: any(e.get("event") == "events_unavailable" for e in daemon.events), 20)
        ecs.add_hosts(CLUSTER, 1)
        assert daemon.wait_for(lambda: ecs.desired_count(CLUSTER, "agent") == 3, timeout=10)  # by polling
        status, body = http_get(port, "/healthz")
        assert status == 200 and "events source degraded" in body
        assert "ecs_cluster_manager_events_source_up 0.0" in http_get(port, "/metrics")[1]
        time.sleep(max(0.0, outage_ends - time.monotonic()))
        interval_passes = len(passes(daemon, "interval"))
        assert interval_passes >= 20, interval_passes
        ecs.fault_hook = None
        assert daemon.wait_for(lambda: any(e.get("event") == "events_available" for e in daemon.events), 40)
        status, body = http_get(port, "/healthz")
        assert status == 200 and "degraded" not in body
        assert "ecs_cluster_manager_events_source_up 1.0" in http_get(port, "/metrics")[1]
        assert daemon.stop() == 0


def test_a_queue_that_does_not_exist_is_a_startup_error(ecs: LocalECS, tmp_path: Path) -> None:
    """A typo in EVENTS_QUEUE_URL ends the daemon before its first pass, which may write: exit 2, one line naming
    the setting, no pass and no UpdateService."""
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, 2)
    ecs.create_service(CLUSTER, "agent", placement_constraints=DISTINCT)
    real = ecs.enable_events(CLUSTER)
    typo = real.rsplit("/", 1)[0] + "/no-such-queue"
    with Daemon(
        ecs, CLUSTER=CLUSTER, SERVICES="agent", EVENTS_QUEUE_URL=typo, HEARTBEAT_FILE=str(tmp_path / "hb")
    ) as daemon:
        assert daemon.process.wait(timeout=30) == 2
        lines = daemon.stderr().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ecs-cluster-manager: error: EVENTS_QUEUE_URL: "), lines
    assert "no-such-queue" in lines[0]
    assert ecs.desired_count(CLUSTER, "agent") == 0
    assert ecs.count("UpdateService") == 0 and ecs.count("DescribeServices") == 0
    assert not [e for e in daemon.events if e.get("event") == "pass"]


def test_checking_the_queue_at_start_leaves_its_messages_for_the_events_source(ecs: LocalECS, tmp_path: Path) -> None:
    """The start-up read of EVENTS_QUEUE_URL hides no message: one waiting on the queue is handled at once."""
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, 2)
    ecs.create_service(CLUSTER, "agent", placement_constraints=DISTINCT)
    queue_url = ecs.enable_events(CLUSTER)
    ecs.send_raw_event(queue_url, "not an event {")
    with Daemon(
        ecs, CLUSTER=CLUSTER, SERVICES="agent", INTERVAL=LONG_INTERVAL, EVENTS_QUEUE_URL=queue_url,
        HEARTBEAT_FILE=str(tmp_path / "hb"),
    ) as daemon:
        assert daemon.wait_for(lambda: any(e.get("event") == "event_malformed" for e in daemon.events), timeout=15)
        assert daemon.wait_for(lambda: queue_depth(ecs, queue_url) == 0, timeout=10)
        assert daemon.stop() == 0


def test_an_agent_back_after_its_hold_raises_at_once(ecs: LocalECS, tmp_path: Path) -> None:
    """An agent lost for SCALE_DOWN_AFTER regular passes is lowered for; when it is back an event pass raises
    the count again within seconds, not at the next INTERVAL."""
    ecs.create_cluster(CLUSTER)
    hosts = ecs.add_hosts(CLUSTER, 4)
    ecs.create_service(CLUSTER, "agent", placement_constraints=DISTINCT)
    queue_url = ecs.enable_events(CLUSTER)
    with Daemon(
        ecs,
        CLUSTER=CLUSTER,
        SERVICES="agent",
        INTERVAL="2",
        SCALE_DOWN_AFTER="2",
        EVENTS_QUEUE_URL=queue_url,
        HEARTBEAT_FILE=str(tmp_path / "hb"),
    ) as daemon:
        assert daemon.wait_for(lambda: ecs.desired_count(CLUSTER, "agent") == 4, timeout=30)
        ecs.set_agent_connected(CLUSTER, hosts[1], False)
        assert daemon.wait_for(lambda: ecs.desired_count(CLUSTER, "agent") == 3, timeout=15)
        # The lowering pass logs its `pass` line when it ends, after its coverage read: count it too.
        assert daemon.wait_for(
            lambda: any(p["updated"] and list(p["hosts"].values()) == [3] for p in passes(daemon, "interval"))
        )
        lowered = len(passes(daemon, "interval"))
        ecs.set_agent_connected(CLUSTER, hosts[1], True)
        assert daemon.wait_for(lambda: ecs.desired_count(CLUSTER, "agent") == 4, timeout=1.9)
        assert len(passes(daemon, "interval")) == lowered  # raised by an event pass
        assert daemon.stop() == 0
