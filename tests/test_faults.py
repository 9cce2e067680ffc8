"""End to end through a fault-injecting proxy: `python run.py` talks to the local ECS API via tests/faultproxy.py.

The daemon's endpoint (AWS_ENDPOINT_URL) is the proxy, which throttles, fails,
delays or drops its requests as each test says; the tests' own setup and checks
go straight to LocalECS. First the proxy itself, then one test per fault of
docs/operations.md's "What each fault does to the daemon".
"""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import pytest
from faultproxy import DROP, PAGE, THROTTLE, FaultProxy
from prometheus_client.parser import text_string_to_metric_families

from daemon_helpers import RUN_PY, Daemon, daemon_env
from ecs_cluster_manager.aws.transport import DEFAULT_ATTEMPTS
from localecs import LocalECS

CLUSTER = "prod"
DISTINCT = [{"type": "distinctInstance"}]
P = "ecs_cluster_manager_"


# -- helpers --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    """(status, body) of one request to the daemon's metrics server; (0, "") when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of every sample of `name` whose labels include `labels`."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def passes(daemon: Daemon) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each `pass` event of the daemon with the `decision` events logged before it in the same pass."""
    grouped: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    pending: list[dict[str, Any]] = []
    for event in daemon.events:
        if event.get("event") == "decision":
            pending.append(event)
        elif event.get("event") == "pass":
            grouped.append((event, pending))
            pending = []
    return grouped


def desired(local: LocalECS, *names: str) -> list[int]:
    return [local.desired_count(CLUSTER, name) for name in names]


def all_at(local: LocalECS, names: list[str], count: int) -> Callable[[], bool]:
    """A condition: every named service's desiredCount is `count`."""
    return lambda: desired(local, *names) == [count] * len(names)


def healthcheck(local: LocalECS, tmp_path: Path, interval: str) -> subprocess.CompletedProcess[str]:
    """`run.py healthcheck` with the daemon's HEARTBEAT_FILE and INTERVAL."""
    return subprocess.run(
        [sys.executable, RUN_PY, "healthcheck"],
        env=daemon_env(local, tmp_path, INTERVAL=interval),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def ecs_client(endpoint_url: str) -> Any:
    """A boto3 ECS client without retries, so each call is exactly one request."""
    return boto3.client(
        "ecs",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )


@pytest.fixture
def proxy(ecs: LocalECS) -> Iterator[FaultProxy]:
    """A FaultProxy in front of the emptied local ECS API, with no faults switched on."""
    with FaultProxy(ecs.endpoint_url, seed=THROTTLE_SEED) as started:
        yield started


# With this seed, at 30 % the longest run of throttled requests in the first
# 3,000 is 4; a call gets 5 attempts (the transport's only retry layer, botocore
# making one attempt each), so no call runs out of retries and every pass can be
# expected to converge. Runs of 2 or more (a retried call) start at once.
THROTTLE_SEED = 594
THROTTLE_RATE = 0.3


# -- the proxy itself --------------------------------------------------------------


def test_proxy_forwards_requests_unchanged_and_counts_them(ecs: LocalECS, proxy: FaultProxy) -> None:
    """Without faults, a signed boto3 call through the proxy gets the local API's own answer, counted by operation."""
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, 2)
    through = ecs_client(proxy.url).list_container_instances(cluster=CLUSTER, status="ACTIVE")
    direct = ecs.client().list_container_instances(cluster=CLUSTER, status="ACTIVE")
    assert sorted(through["containerInstanceArns"]) == sorted(direct["containerInstanceArns"])
    assert proxy.forwarded["ListContainerInstances"] == 1 and not proxy.faulted
    assert [call.params.get("status") for call in ecs.calls if call.operation == "ListContainerInstances"] == [
        "ACTIVE",
        "ACTIVE",
    ]


def test_proxy_throttles_errors_and_drops_on_demand(ecs: LocalECS, proxy: FaultProxy) -> None:
    """throttle_rate, error_rate and down give a ThrottlingException 400, a ServerException 500, a closed connection."""
    ecs.create_cluster(CLUSTER)
    client = ecs_client(proxy.url)
    proxy.throttle_rate = 1.0
    with pytest.raises(botocore.exceptions.ClientError) as throttled:
        client.list_clusters()
    assert throttled.value.response["Error"]["Code"] == "ThrottlingException"
    assert throttled.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    proxy.throttle_rate = 0.0
    proxy.error_rate = 1.0
    with pytest.raises(botocore.exceptions.ClientError) as errored:
        client.list_clusters()
    assert errored.value.response["Error"]["Code"] == "ServerException"
    assert errored.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    proxy.error_rate = 0.0
    proxy.down = True
    with pytest.raises((botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)):
        client.list_clusters()
    proxy.down = False
    assert client.list_clusters()["clusterArns"]
    assert proxy.count("ListClusters", THROTTLE) == 1 and proxy.count("ListClusters", DROP) == 1
    assert ecs.count("ListClusters") == 1  # only the healthy call reached the API


def test_proxy_refuses_connections_and_fails_one_page(ecs: LocalECS) -> None:
    """down_mode="refuse" refuses new connections until cleared; fail_page fails page 2 of a listing, retries too."""
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, 150)
    with FaultProxy(ecs.endpoint_url, down_mode="refuse") as proxy:
        client = ecs_client(proxy.url)
        proxy.down = True
        fresh = ecs_client(proxy.url)
        with pytest.raises(botocore.exceptions.EndpointConnectionError):
            fresh.list_clusters()
        proxy.down = False
        assert client.list_clusters()["clusterArns"]

        proxy.fail_page("ListContainerInstances", 2)
        first = client.list_container_instances(cluster=CLUSTER, maxResults=100)
        assert len(first["containerInstanceArns"]) == 100
        for _ in range(2):
            with pytest.raises(botocore.exceptions.ClientError) as failed:
                client.list_container_instances(cluster=CLUSTER, maxResults=100, nextToken=first["nextToken"])
            assert failed.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
        proxy.heal_pages()
        second = client.list_container_instances(cluster=CLUSTER, maxResults=100, nextToken=first["nextToken"])
        assert len(second["containerInstanceArns"]) == 50
    assert proxy.count("ListContainerInstances", PAGE) == 2
    assert [r.page for r in proxy.requests if r.operation == "ListContainerInstances"] == [1, 2, 2, 2]


# -- the daemon through the proxy ------------------------------------------------------


@pytest.mark.long
def test_30_percent_throttling_every_pass_converges_with_backoff_in_logs_and_metrics(
    ecs: LocalECS, proxy: FaultProxy, tmp_path: Path
) -> None:
    """With 30 % of requests throttled, every pass converges; the retries show as api_retry events and in /metrics."""
    draws = random.Random(THROTTLE_SEED)
    longest = run = 0
    for _ in range(3000):
        run = run + 1 if draws.random() < THROTTLE_RATE else 0
        longest = max(longest, run)
    assert longest < DEFAULT_ATTEMPTS, f"the seed must not throttle one call's {DEFAULT_ATTEMPTS} attempts in a row"

    names = ["a", "b", "c", "d"]
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, 2)
    for name in names:
        ecs.create_service(CLUSTER, name, placement_constraints=DISTINCT)
    proxy.throttle_rate = THROTTLE_RATE
    port = free_port()
    hosts = 2
    with Daemon(
        ecs,
        CLUSTER=CLUSTER,
        SERVICES=",".join(names),
        INTERVAL="0.5",
        METRICS_PORT=str(port),
        METRICS_ADDR="127.0.0.1",
        HEARTBEAT_FILE=str(tmp_path / "heartbeat"),
        AWS_ENDPOINT_URL=proxy.url,
    ) as daemon:
        for _ in range(3):
            assert daemon.wait_for(all_at(ecs, names, hosts), timeout=60), daemon.lines
            ecs.add_hosts(CLUSTER, 1)
            hosts += 1
        assert daemon.wait_for(all_at(ecs, names, hosts), timeout=60), daemon.lines
        assert daemon.wait_for(lambda: any(e.get("event") == "api_retry" for e in daemon.events), timeout=60)
        proxy.throttle_rate = 0.0
        # desiredCount is written before the pass's own `pass` event is logged: wait for that event too.
        assert daemon.wait_for(
            lambda: any(
                list(e.get("hosts", {}).values()) == [hosts] for e in daemon.events if e.get("event") == "pass"
            ),
            timeout=30,
        )
        settled = daemon.passes()
        assert daemon.wait_passes(settled + 2, timeout=30)  # every throttled answer has been counted by now
        status, text = scrape(port)
        assert status == 200
        assert daemon.stop() == 0

    every_pass = passes(daemon)
    assert len(every_pass) >= 6
    assert not [e for e in daemon.events if e.get("event") == "pass_failed"]
    if not every_pass[-1][0]["hosts"]:
        # SIGTERM came during the last pass (waiting for a token, or in its coverage reads): it read nothing.
        every_pass.pop()
    for summary, decided in every_pass:
        (counted,) = summary["hosts"].values()
        assert summary["ok"] is True, summary
        # A pass logs a service's decision at INFO only when it differs from the last one.
        assert set(d["service"] for d in decided) <= set(names)
        # A throttle halves the write budget: an update it cannot pay for waits for a later pass (deferred).
        assert all(
            (d["action"] in ("update", "unchanged") or d["reason"].startswith("deferred")) and d["target"] == counted
            for d in decided
        ), decided
    assert sum(summary["updated"] for summary, _ in every_pass) == 4 * len(names)  # 0->2->3->4->5, once each

    throttled = proxy.count(fault=THROTTLE)
    retries = [e for e in daemon.events if e.get("event") == "api_retry"]
    assert throttled > 0 and retries
    assert all(e["sleep"] > 0 and "ThrottlingException" in e["error"] for e in retries)
    assert metric_sum(text, P + "api_calls_total", outcome="throttled") == throttled
    assert metric_sum(text, P + "api_retries_total") == len(retries)
    assert metric_sum(text, P + "api_throttled_total") == throttled
    assert metric_sum(text, P + "passes_failed_total") == 0


@pytest.mark.long
def test_endpoint_unreachable_for_30s_daemon_survives_reports_unhealthy_and_converges_on_return(
    ecs: LocalECS, proxy: FaultProxy, tmp_path: Path
) -> None:
    """Unreachable 30 s: the daemon lives on, reports unhealthy, and converges about one INTERVAL after the return."""
    interval = 4.0
    web = [{"type": "distinctInstance"}, {"type": "memberOf", "expression": "attribute:role == web"}]
    batch = [{"type": "distinctInstance"}, {"type": "memberOf", "expression": "attribute:role == batch"}]
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, 3, attributes={"role": "web"})
    batch_hosts = ecs.add_hosts(CLUSTER, 3, attributes={"role": "batch"})
    ecs.create_service(CLUSTER, "web", placement_constraints=web)
    ecs.create_service(CLUSTER, "batch", placement_constraints=batch)
    port = free_port()
    # SCALE_DOWN_AFTER=1: the hosts that leave during the outage are dropped by the first pass after it too.
    with Daemon(
        ecs,
        CLUSTER=CLUSTER,
        SERVICES="web batch",
        INTERVAL=f"{interval:g}",
        SCALE_DOWN_AFTER="1",
        METRICS_PORT=str(port),
        METRICS_ADDR="127.0.0.1",
        HEARTBEAT_FILE=str(tmp_path / "heartbeat"),
        AWS_ENDPOINT_URL=proxy.url,
    ) as daemon:
        assert daemon.wait_for(lambda: desired(ecs, "web", "batch") == [3, 3], timeout=30), daemon.lines
        # The writing pass records its success when it ends, after its coverage reads: wait for that.
        assert daemon.wait_for(lambda: healthcheck(ecs, tmp_path, f"{interval:g}").returncode == 0, timeout=10)
        assert scrape(port, "/healthz")[0] == 200

        proxy.down = True
        down_at = time.monotonic()
        ecs.add_hosts(CLUSTER, 2, attributes={"role": "web"})
        for arn in batch_hosts[:2]:
            ecs.deregister(CLUSTER, arn)
        unhealthy_after: float | None = None
        checked_unhealthy: subprocess.CompletedProcess[str] | None = None
        while time.monotonic() - down_at < 30:
            assert daemon.process.poll() is None, "the daemon ended during the outage"
            if unhealthy_after is None and scrape(port, "/healthz")[0] == 503:
                unhealthy_after = time.monotonic() - down_at
                checked_unhealthy = healthcheck(ecs, tmp_path, f"{interval:g}")
            time.sleep(0.25)
        failed_during = [e["error"] for e in daemon.events if e.get("event") == "pass_failed"]
        healthz_during = scrape(port, "/healthz")
        proxy.down = False
        back_at = time.monotonic()
        assert daemon.wait_for(lambda: desired(ecs, "web", "batch") == [5, 1], timeout=60), daemon.lines
        converged_after = time.monotonic() - back_at
        assert daemon.wait_for(lambda: scrape(port, "/healthz")[0] == 200, timeout=10)
        text = scrape(port)[1]
        recovered = healthcheck(ecs, tmp_path, f"{interval:g}")
        assert daemon.process.poll() is None
        assert daemon.stop() == 0

    print(f"unhealthy {unhealthy_after}s after the outage began; converged {converged_after:.1f}s after it ended")
    assert unhealthy_after is not None, "/healthz never answered 503 during the outage"
    # The last success ended at most one INTERVAL and a pass before the outage began.
    assert 2 * interval - 2 <= unhealthy_after <= 3 * interval + 2
    assert checked_unhealthy is not None and checked_unhealthy.returncode == 1, checked_unhealthy
    assert healthz_during[0] == 503 and healthz_during[1].startswith("unhealthy: last successful pass")
    assert failed_during
    assert all(e.startswith(("describing services failed", "counting hosts failed")) for e in failed_during)
    assert converged_after <= interval + 10, f"converged {converged_after:.1f}s after the endpoint came back"
    assert recovered.returncode == 0, recovered.stderr
    assert metric_sum(text, P + "passes_failed_total") == len(
        [e for e in daemon.events if e.get("event") == "pass_failed"]
    )
    assert metric_sum(text, P + "api_calls_total", outcome="unreachable") == proxy.count(fault=DROP)
    assert proxy.count(fault=DROP) > 0


def test_failed_page_2_of_the_host_listing_writes_nothing_in_that_pass(
    ecs: LocalECS, proxy: FaultProxy, tmp_path: Path
) -> None:
    """While page 2 of ListContainerInstances fails, a pass makes no UpdateService; the next healthy one does."""
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, 130)
    ecs.create_service(CLUSTER, "low", placement_constraints=DISTINCT, desired_count=0)
    ecs.create_service(CLUSTER, "high", placement_constraints=DISTINCT, desired_count=200)
    ecs.clear_calls()
    proxy.fail_page("ListContainerInstances", 2)
    # SCALE_DOWN_AFTER=1, so a partial count of 100 would be written at once, to both services.
    with Daemon(
        ecs,
        CLUSTER=CLUSTER,
        SERVICES="low high",
        INTERVAL="1",
        SCALE_DOWN_AFTER="1",
        HEARTBEAT_FILE=str(tmp_path / "heartbeat"),
        AWS_ENDPOINT_URL=proxy.url,
    ) as daemon:
        assert daemon.wait_passes(1, timeout=60), daemon.lines
        (summary, decided), *_ = passes(daemon)
        writes_in_failed_pass = ecs.count("UpdateService")
        counts_after_failed_pass = desired(ecs, "low", "high")
        proxy.heal_pages()
        assert daemon.wait_for(lambda: desired(ecs, "low", "high") == [130, 130], timeout=30), daemon.lines
        assert daemon.stop() == 0

    assert writes_in_failed_pass == 0
    assert counts_after_failed_pass == [0, 200]
    assert summary["ok"] is False and summary["updated"] == 0
    assert {(d["service"], d["action"], d["reason"]) for d in decided} == {
        ("low", "skip", "host count failed"),
        ("high", "skip", "host count failed"),
    }
    failed = [e for e in daemon.events if e.get("event") == "pass_failed"]
    assert failed and "counting hosts failed" in failed[0]["error"]
    assert proxy.count("ListContainerInstances", PAGE) >= 2  # page 2 failed, retries included
    first_pass_pages = [r.page for r in proxy.requests if r.operation == "ListContainerInstances"][:3]
    assert first_pass_pages == [1, 1, 2]  # the DRAINING count, then page 1 of the hosts; only page 2 failed
    assert ecs.count("UpdateService") == 2  # then the healthy pass wrote both services


@pytest.mark.parametrize("signal_at", ["DescribeServices", "UpdateService"])
def test_sigterm_with_a_2s_api_ends_within_the_ecs_stop_timeout(
    ecs: LocalECS, proxy: FaultProxy, tmp_path: Path, signal_at: str
) -> None:
    """With every call taking 2 s, SIGTERM mid-pass ends run.py with exit 0 well within ECS's 30 s stop timeout."""
    names = [f"svc-{index:02d}" for index in range(20)]  # a whole pass: 2 + 1 + 20 calls, 46 s
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, 3)
    for name in names:
        ecs.create_service(CLUSTER, name, placement_constraints=DISTINCT)
    ecs.clear_calls()
    proxy.delay = 2.0
    with Daemon(
        ecs,
        CLUSTER=CLUSTER,
        SERVICES=" ".join(names),
        INTERVAL="60",
        HEARTBEAT_FILE=str(tmp_path / "heartbeat"),
        AWS_ENDPOINT_URL=proxy.url,
    ) as daemon:
        assert proxy.wait_for(lambda: proxy.seen(signal_at) >= 1, timeout=60), daemon.lines
        signalled = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)
        code = daemon.process.wait(timeout=30)
        elapsed = time.monotonic() - signalled
        daemon.stop()

    print(f"SIGTERM at the first {signal_at}: exit {code} after {elapsed:.1f}s")
    assert code == 0
    assert elapsed < 30
    assert any(e.get("event") == "stop" for e in daemon.events)
    if signal_at == "UpdateService":
        # The update on the wire finished; none started after the signal.
        assert ecs.count("UpdateService") == 1
        skipped = [e for e in daemon.events if e.get("reason") == "shutting down before update"]
        assert len(skipped) == len(names) - 1
    else:
        assert ecs.count("UpdateService") == 0


def test_two_daemons_on_one_cluster_do_not_flap_and_write_idempotently(ecs: LocalECS, tmp_path: Path) -> None:
    """Two loops on the same services (a rolling deploy) write each target at most once apiece and never go back."""
    names = ["a", "b"]
    ecs.create_cluster(CLUSTER)
    hosts = ecs.add_hosts(CLUSTER, 3)
    for name in names:
        ecs.create_service(CLUSTER, name, placement_constraints=DISTINCT)
    ecs.clear_calls()

    def writes() -> dict[str, list[int]]:
        """desiredCount values written per service, in the order the API received them."""
        found: dict[str, list[int]] = {name: [] for name in names}
        for call in ecs.calls:
            if call.operation == "UpdateService" and call.status == 200:
                found[str(call.params["service"]).rsplit("/", 1)[-1]].append(int(call.params["desiredCount"]))
        return found

    changes = [
        ("start", lambda: None, 3),
        ("add 2 hosts", lambda: ecs.add_hosts(CLUSTER, 2), 5),
        ("drain 1 host", lambda: ecs.drain(CLUSTER, hosts[0]), 4),
        ("deregister 1 host", lambda: ecs.deregister(CLUSTER, hosts[1]), 3),
        ("add 1 host", lambda: ecs.add_hosts(CLUSTER, 1), 4),
    ]
    with FaultProxy(ecs.endpoint_url) as proxy_a, FaultProxy(ecs.endpoint_url) as proxy_b:
        # A little latency widens the window between each daemon's read and its write.
        proxy_a.delay = proxy_b.delay = 0.05
        settings = {"CLUSTER": CLUSTER, "SERVICES": "a b", "INTERVAL": "0.5"}
        with (
            Daemon(ecs, **settings, HEARTBEAT_FILE=str(tmp_path / "a"), AWS_ENDPOINT_URL=proxy_a.url) as first,
            Daemon(ecs, **settings, HEARTBEAT_FILE=str(tmp_path / "b"), AWS_ENDPOINT_URL=proxy_b.url) as second,
        ):
            previous = 0
            for label, change, target in changes:
                ecs.clear_calls()
                before = (proxy_a.count("UpdateService"), proxy_b.count("UpdateService"))
                change()
                assert first.wait_for(all_at(ecs, names, target), timeout=30), (label, writes())
                # Two more passes each: the last one started after convergence and must write nothing new.
                seen = (first.passes(), second.passes())
                assert first.wait_passes(seen[0] + 2, timeout=30) and second.wait_passes(seen[1] + 2, timeout=30)
                written = writes()
                for name in names:
                    sequence = [previous, *written[name]]
                    assert sequence[-1] == target, (label, name, sequence)
                    steps = [later - earlier for earlier, later in zip(sequence, sequence[1:], strict=False)]
                    assert all(step >= 0 for step in steps) or all(step <= 0 for step in steps), (label, sequence)
                    assert set(written[name]) == {target}, (label, name, written[name])  # idempotent: one value
                    assert len(written[name]) <= 2, (label, name, written[name])  # at most once per daemon
                per_daemon = (proxy_a.count("UpdateService") - before[0], proxy_b.count("UpdateService") - before[1])
                assert max(per_daemon) <= len(names), (label, per_daemon)
                previous = target

            ecs.clear_calls()
            seen = (first.passes(), second.passes())
            assert first.wait_passes(seen[0] + 4, timeout=30) and second.wait_passes(seen[1] + 4, timeout=30)
            assert ecs.count("UpdateService") == 0
            assert desired(ecs, *names) == [4, 4]
            assert first.stop() == 0 and second.stop() == 0
