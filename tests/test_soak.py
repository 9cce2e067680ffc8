"""Soak: `python run.py` runs over 360 passes at a short interval while hosts come and go.

The daemon runs with INTERVAL=0.001 and LOG_LEVEL=WARNING, so its log stays
small; passes are counted from `ecs_cluster_manager_passes_total` on its
METRICS_PORT, which also keeps the metrics server and /metrics scrapes inside
the soak. (The heartbeat file would say that passes happen, not how many.)

A thread in the test adds, drains, reactivates, disconnects, reconnects and
deregisters hosts every 0.5 s, keeping its own record of which hosts are usable.
After warm-up (pass 60) and again after pass 360 the test samples the
daemon's resident memory, open file descriptors and threads with psutil:

- RSS: the median of 10 samples over 0.5 s; it must not grow by more than 5 MiB.
- File descriptors and threads: the minimum of 100 samples over about 1 s, i.e. what
  the process holds between requests. A /metrics scrape or an API call in flight
  adds a socket (and the scrape a thread) for a moment; the minimum leaves those
  out, while a leaked descriptor or thread never closes and so raises it. The
  end minimum must not exceed the warm-up minimum.

Then the churn stops, every service must reach the count the test's own record
gives, and SIGTERM must end the daemon with exit 0.
"""

from __future__ import annotations

import random
import signal
import socket
import statistics
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon_helpers import Daemon
from localecs import LocalECS

CLUSTER = "soak"
INTERVAL = "0.001"
WARM_UP_PASSES = 60
# The API budget paces passes (2 to 4 a second here at API_BUDGET=1.0: each host change also reads the
# services' tasks), whatever INTERVAL is.
PASSES = 360
CHURN_EVERY = 0.5  # seconds between host changes
MIN_HOSTS, MAX_HOSTS = 2, 8
RSS_GROWTH_LIMIT = 5 * 1024 * 1024
SEED = 20_240_601
DISTINCT = [{"type": "distinctInstance"}]
WEB_ONLY = [*DISTINCT, {"type": "memberOf", "expression": "attribute:role == web"}]
SERVICES = ("every-host", "two-per-host", "web-only", "clamped")


@dataclass
class Host:
    """What the test knows of one container instance."""

    web: bool
    active: bool = True
    connected: bool = True

    @property
    def usable(self) -> bool:
        return self.active and self.connected


@dataclass
class Churn:
    """Hosts coming and going in a background thread, with a record of which are usable."""

    local: LocalECS
    hosts: dict[str, Host] = field(default_factory=dict)
    changes: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, web: bool) -> None:
        [arn] = self.local.add_hosts(CLUSTER, 1, attributes={"role": "web" if web else "batch"})
        self.hosts[arn] = Host(web=web)

    def step(self, rng: random.Random) -> None:
        """One random change that keeps between MIN_HOSTS and MAX_HOSTS registered."""
        arns = sorted(self.hosts)
        actions = ["drain", "activate", "disconnect", "reconnect"]
        if len(arns) < MAX_HOSTS:
            actions += ["add", "add"]
        if len(arns) > MIN_HOSTS:
            actions += ["deregister"]
        action = rng.choice(actions)
        if action == "add":
            self.add(web=rng.random() < 0.5)
        elif action == "deregister":
            arn = rng.choice(arns)
            self.local.deregister(CLUSTER, arn)
            del self.hosts[arn]
        elif action == "drain" and (candidates := [a for a in arns if self.hosts[a].active]):
            arn = rng.choice(candidates)
            self.local.drain(CLUSTER, arn)
            self.hosts[arn].active = False
        elif action == "activate" and (candidates := [a for a in arns if not self.hosts[a].active]):
            arn = rng.choice(candidates)
            self.local.activate(CLUSTER, arn)
            self.hosts[arn].active = True
        elif action in ("disconnect", "reconnect"):
            connected = action == "reconnect"
            if candidates := [a for a in arns if self.hosts[a].connected != connected]:
                arn = rng.choice(candidates)
                self.local.set_agent_connected(CLUSTER, arn, connected)
                self.hosts[arn].connected = connected
        else:
            return
        self.changes += 1

    def run(self) -> None:
        rng = random.Random(SEED)
        while not self.stop.wait(CHURN_EVERY):
            with self.lock:
                self.step(rng)

    def expected(self) -> dict[str, int]:
        """Each service's right desiredCount for the hosts as they are now."""
        with self.lock:
            usable = sum(1 for host in self.hosts.values() if host.usable)
            web = sum(1 for host in self.hosts.values() if host.usable and host.web)
        return {"every-host": usable, "two-per-host": 2 * usable, "web-only": web, "clamped": min(max(usable, 1), 4)}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    """The daemon's unlabelled counters and gauges, by sample name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:  # noqa: S310
        text = response.read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


def wait_passes(daemon: Daemon, port: int, passes: int, timeout: float) -> float:
    """Wait until the daemon has run `passes` passes; returns the count seen."""
    deadline = time.monotonic() + timeout
    seen = 0.0
    while time.monotonic() < deadline:
        assert daemon.process.poll() is None, f"the daemon exited with {daemon.process.returncode}"
        try:
            seen = scrape(port).get("ecs_cluster_manager_passes_total", 0.0)
        except OSError:  # the metrics server is not listening yet
            seen = 0.0
        if seen >= passes:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"only {seen:.0f} of {passes} passes in {timeout:.0f}s")


@dataclass(frozen=True)
class Sample:
    """Resources the daemon holds at one point of the soak."""

    passes: float
    rss: int  # bytes, median of 10 readings
    fds: int  # minimum of 100 readings
    threads: int  # minimum of 100 readings
    fds_max: int  # the most seen, for the report: a request or scrape in flight adds one


def sample(process: psutil.Process, passes: float) -> Sample:
    rss = []
    for _ in range(10):
        rss.append(process.memory_info().rss)
        time.sleep(0.05)
    fds, threads = [], []
    for _ in range(100):
        fds.append(process.num_fds())
        threads.append(process.num_threads())
        time.sleep(0.01)
    return Sample(passes, int(statistics.median(rss)), min(fds), min(threads), max(fds))


def counts(local: LocalECS) -> dict[str, int]:
    return {name: local.desired_count(CLUSTER, name) for name in SERVICES}


@pytest.mark.slow
def test_soak_360_passes_with_hosts_coming_and_going(ecs: LocalECS, tmp_path: Path) -> None:
    """Over 360 passes with host churn (API_BUDGET=1.0), RSS grows < 5 MiB, no fd or thread leak, counts
    converge, SIGTERM exits 0."""
    ecs.create_cluster(CLUSTER)
    churn = Churn(ecs)
    for index in range(4):
        churn.add(web=index % 2 == 0)
    ecs.create_service(CLUSTER, "every-host", placement_constraints=DISTINCT)
    ecs.create_service(
        CLUSTER, "two-per-host", tags={"ecs-cluster-manager:tasks-per-host": "2"}, placement_constraints=DISTINCT
    )
    ecs.create_service(CLUSTER, "web-only", placement_constraints=WEB_ONLY)
    ecs.create_service(
        CLUSTER,
        "clamped",
        tags={"ecs-cluster-manager:min": "1", "ecs-cluster-manager:max": "4"},
        placement_constraints=DISTINCT,
    )
    port = _free_port()
    churner = threading.Thread(target=churn.run, name="host-churn", daemon=True)
    started = time.monotonic()
    with Daemon(
        ecs,
        CLUSTER=CLUSTER,
        SERVICES=" ".join(SERVICES),
        INTERVAL=INTERVAL,
        API_BUDGET="1.0",
        LOG_LEVEL="WARNING",
        METRICS_PORT=str(port),
        METRICS_ADDR="127.0.0.1",
        HEARTBEAT_FILE=str(tmp_path / "heartbeat"),
    ) as daemon:
        process = psutil.Process(daemon.process.pid)
        churner.start()
        try:
            warm = sample(process, wait_passes(daemon, port, WARM_UP_PASSES, timeout=60))
            end = sample(process, wait_passes(daemon, port, PASSES, timeout=200))
        finally:
            churn.stop.set()
            churner.join(timeout=10)
        soaked = time.monotonic() - started

        # The test's record of the hosts agrees with what the API says is usable.
        usable = ecs.client().list_container_instances(
            cluster=CLUSTER, status="ACTIVE", filter="agentConnected == true"
        )
        assert len(usable["containerInstanceArns"]) == churn.expected()["every-host"]
        expected = churn.expected()
        assert daemon.wait_for(lambda: counts(ecs) == expected, timeout=20), (counts(ecs), expected)
        metrics = scrape(port)
        daemon.process.send_signal(signal.SIGTERM)
        code = daemon.process.wait(timeout=30)
        stderr = daemon.stderr()

    mib = 1024 * 1024
    print(
        f"\nsoak: {end.passes:.0f} passes in {soaked:.1f}s ({end.passes / soaked:.0f}/s), "
        f"{churn.changes} host changes, {metrics.get('ecs_cluster_manager_passes_failed_total', 0):.0f} failed passes\n"
        f"soak: RSS {warm.rss / mib:.2f} MiB at pass {warm.passes:.0f} -> {end.rss / mib:.2f} MiB at pass "
        f"{end.passes:.0f} ({(end.rss - warm.rss) / mib:+.2f} MiB)\n"
        f"soak: fds {warm.fds} -> {end.fds} (at most {warm.fds_max} / {end.fds_max}), "
        f"threads {warm.threads} -> {end.threads} (minimum over about 1 s)\n"
        f"soak: final counts {expected}"
    )
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert churn.changes >= 10, "the hosts hardly changed"
    assert metrics.get("ecs_cluster_manager_passes_failed_total", 0) == 0
    assert end.rss - warm.rss <= RSS_GROWTH_LIMIT
    assert end.fds <= warm.fds
    assert end.threads <= warm.threads


def test_memory_stays_bounded_while_many_services_come_and_go(ecs: LocalECS, monkeypatch: pytest.MonkeyPatch) -> None:
    """40 services managed one after another, each with a host filter of its own and a misconfiguration: what the
    loop carries between passes (misconfigurations logged, coverage's eligible hosts per service and per filter,
    gaps, reading times) holds the managed service alone, not every service ever managed."""
    import dataclasses

    from ecs_cluster_manager import config as settings
    from ecs_cluster_manager.aws.ecs import Api
    from ecs_cluster_manager.engine.passes import run_pass
    from ecs_cluster_manager.observe.memory import Memory

    for key, value in ecs.env().items():
        monkeypatch.setenv(key, value)
    cluster = "soak-memory"
    ecs.create_cluster(cluster)
    hosts = ecs.add_hosts(cluster, 3)
    for number, arn in enumerate(hosts):
        ecs.set_attributes(cluster, arn, {"soak": f"s{number % 2}"})
    api = Api(ecs.region, endpoint_url=ecs.endpoint_url)
    base = settings.load(["--cluster", cluster, "--services", "none", "--no-cloudformation-guard"], environ={})
    memory = Memory(resync=300, interval=30)
    sizes: list[tuple[int, ...]] = []
    previous: str | None = None
    for number in range(40):
        name = f"svc-{number}"
        # No distinctInstance: a misconfiguration logged once per service; a memberOf filter of its own.
        ecs.create_service(
            cluster,
            name,
            placement_constraints=[
                {"type": "memberOf", "expression": f"attribute:soak == s{number % 2} or attribute:never == n{number}"}
            ],
        )
        if previous is not None:
            ecs.delete_service(cluster, previous)
        previous = name
        report = run_pass(api, dataclasses.replace(base, services=(name,)), memory)
        assert report.observed and report.managed == 1, report.errors
        assert name in report.coverage, report.coverage_errors
        watch = memory.coverage
        sizes.append(
            (
                len(memory.misconfigured),
                len(watch.read_eligible),
                len(watch.eligible_before),
                len(watch.last_read),
                len({key[0] for key in watch.gaps}),
                len(memory.store.filters),
            )
        )
    assert all(size <= 1 for row in sizes for size in row), sizes[-5:]
