"""The transport under every gateway: each ECS call paid from the budget, one retry layer, a bounded call time."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon_helpers import RUN_PY, daemon_env, events
from ecs_cluster_manager.aws import budget
from ecs_cluster_manager.aws.ecs import Api, TransientError
from ecs_cluster_manager.aws.transport import DEFAULT_CALL_TIMEOUT
from localecs import Fault, LocalECS, fault_on

CLUSTER = "prod"


class Clock:
    """A monotonic clock that moves only when the transport waits for a token."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waited: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waited.append(seconds)
        self.now += seconds
        return False  # no shutdown requested


@pytest.fixture
def local(ecs: LocalECS, monkeypatch: pytest.MonkeyPatch) -> LocalECS:
    """The emptied local ECS API, with its dummy credentials in this process's environment."""
    for key, value in ecs.env().items():
        monkeypatch.setenv(key, value)
    return ecs


def budgeted_api(local: LocalECS, share: float = 0.5) -> tuple[Api, Clock]:
    clock = Clock()
    api = Api(local.region, endpoint_url=local.endpoint_url, api_budget=share, clock=clock, max_backoff=0.01)
    api.transport._wait_for_token = clock.wait  # type: ignore[method-assign]
    return api, clock


def test_every_ecs_call_takes_a_token_and_waits_when_the_bucket_is_empty(local: LocalECS) -> None:
    """At half share the write bucket pays 25 UpdateService calls at once, then one every 0.4 s."""
    local.create_cluster(CLUSTER)
    local.create_service(CLUSTER, "agent")
    api, clock = budgeted_api(local)
    for count in range(30):
        api.set_desired_count(CLUSTER, "agent", count)
    assert clock.waited == pytest.approx([0.4] * 5)
    assert api.transport.budget_waited == {budget.SERVICE_MODIFY: pytest.approx(2.0)}
    assert api.writes_available() == 0 and api.writes_ready_in(5) == pytest.approx(2.0)
    # Reads have buckets of their own: 30 writes cost them nothing.
    assert api.budget is not None and api.budget.available(budget.SERVICE_READS) == 50


def test_no_budget_sends_at_once(local: LocalECS) -> None:
    """api_budget=None is the manager as it was: no bucket, no wait, every write available."""
    local.create_cluster(CLUSTER)
    local.create_service(CLUSTER, "agent")
    api = Api(local.region, endpoint_url=local.endpoint_url, api_budget=None)
    for count in range(60):
        api.set_desired_count(CLUSTER, "agent", count)
    assert api.writes_available() is None and not api.transport.budget_waited


def test_a_throttled_call_shrinks_its_bucket_and_is_retried_once_per_attempt(local: LocalECS) -> None:
    """ThrottlingException twice: two retries of the one layer (3 HTTP attempts), and the bucket's rate halves twice."""
    local.create_cluster(CLUSTER)
    local.create_service(CLUSTER, "agent")
    api, _ = budgeted_api(local)
    local.fault_hook = fault_on("UpdateService", Fault.throttle(), times=2)
    api.set_desired_count(CLUSTER, "agent", 3)
    assert local.desired_count(CLUSTER, "agent") == 3
    assert local.count("UpdateService") == 3  # botocore adds no attempts of its own
    assert api.retries["UpdateService"] == 2 and api.transport.throttled["UpdateService"] == 2
    assert api.budget is not None
    writes = api.budget.buckets[budget.SERVICE_MODIFY]
    assert writes.scale == 0.25 and writes.current_rate == pytest.approx(2.5 / 4)
    assert api.budget.buckets[budget.SERVICE_READS].scale == 1.0  # only the throttled category slows down


def test_sqs_calls_are_not_in_the_loops_call_count(local: LocalECS) -> None:
    """total_calls (a pass's api_calls) counts ECS and CloudFormation attempts, not the events thread's SQS ones."""
    local.create_cluster(CLUSTER)
    queue_url = local.enable_events(CLUSTER)
    api = Api(local.region, endpoint_url=local.endpoint_url)
    api.list_services(CLUSTER)
    api.receive_messages(queue_url, 0)
    assert api.total_calls == 1
    assert api.transport.total_calls() == 2 and api.transport.total_calls("sqs") == 1


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """An endpoint that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not done.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    done.set()
    thread.join(timeout=2)
    for connection in accepted:
        connection.close()
    listener.close()


def test_a_call_to_a_silent_endpoint_ends_within_the_call_timeout(
    silent_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No attempt starts that could not end within call_timeout: a hung endpoint fails the call in time."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    api = Api("us-east-1", endpoint_url=silent_endpoint, connect_timeout=0.2, read_timeout=0.5, call_timeout=2.0)
    started = time.monotonic()
    with pytest.raises(TransientError, match="ListServices"):
        api.list_services(CLUSTER)
    assert time.monotonic() - started < 2.0 + 0.3
    attempts = sum(n for (operation, _), n in api.calls.items() if operation == "ListServices")
    assert 1 <= attempts < api.attempts


@pytest.mark.slow
def test_a_pass_against_a_silent_endpoint_ends_within_the_promised_30s(
    ecs: LocalECS, silent_endpoint: str, tmp_path: Path
) -> None:
    """`--once` against an endpoint that accepts connections and never answers: one pass, failed, within 30 s."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, RUN_PY, "--once"],
        env=daemon_env(ecs, tmp_path, CLUSTER=CLUSTER, SERVICES="agent", AWS_ENDPOINT_URL=silent_endpoint),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    elapsed = time.monotonic() - started
    [summary] = [e for e in events(result.stdout) if e.get("event") == "pass"]
    assert result.returncode == 1 and summary["ok"] is False, result.stdout + result.stderr
    assert summary["duration"] <= DEFAULT_CALL_TIMEOUT and elapsed < DEFAULT_CALL_TIMEOUT + 5
