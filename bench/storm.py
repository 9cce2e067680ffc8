"""A scale-out storm: services x hosts joining per second, in events mode, against the API buckets.

An operator's Auto Scaling group launches hosts a few a second; each
registration is an ECS state-change event, and each event pass wants a write
for every managed service. For each daemon (with the default API budget, with
API_BUDGET=1.0, and as it was before the budget) a cluster of its own starts
with STORM_START_HOSTS hosts and the services at their target; then hosts join
at the given rate. Every ECS request the daemon sends is noted with its arrival
time by a LocalECS fault hook that faults nothing, and afterwards

- counted by throttling category, with the peak in any one-second window;
- replayed through ECS's documented buckets at full and at half size
  (budget.shortfall): the calls that would have found no token, i.e. been
  throttled (at full size: the manager alone would have emptied the account's
  bucket; at half size: it spent more than its half);
- and the time from the last host's registration to every service's
  desiredCount at the final host count is measured, by polling the services
  through LocalECS's own client (neither recorded nor faulted).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ecs_cluster_manager.aws import budget
from localecs import ApiRequest, Fault, LocalECS

from .measure import ROOT, RUN_PY, Progress, daemon_env

STORM_START_HOSTS = 2
DISTINCT = [{"type": "distinctInstance"}]
BUDGETED, FULL_BUDGET, UNBUDGETED = "budget 0.5 (default)", "budget 1.0", "no budget (before)"
# The daemon before the budget: run.py with ecs.Api built without one (bench/unbudgeted.py).
UNBUDGETED_MODULE = "bench.unbudgeted"
_clusters = itertools.count(1)


ARRIVAL_SLACK = 0.1  # tokens


@dataclass
class Storm:
    """One daemon through one storm."""

    daemon: str
    services: int
    hosts: int  # hosts that joined
    per_second: float
    calls: list[tuple[float, str]] = field(default_factory=list)  # (arrival, operation) of each ECS request
    settle: float | None = None  # last host to every service at target; None if not within the timeout
    deferred: int = 0  # writes the daemon deferred (its pass events)
    passes: int = 0

    def by_category(self) -> Counter[str]:
        return Counter(budget.category_of(operation) for _, operation in self.calls)

    def peak_per_second(self) -> dict[str, int]:
        """The most calls of each category in any one-second window."""
        peaks: dict[str, int] = {}
        for category in budget.CATEGORY_OF.values():
            times = sorted(at for at, operation in self.calls if budget.category_of(operation) == category)
            best, start = 0, 0
            for end, at in enumerate(times):
                while at - times[start] >= 1.0:
                    start += 1
                best = max(best, end - start + 1)
            peaks[category] = best
        return peaks

    def short(self, share: float) -> dict[str, int]:
        # A request reaches ECS a few milliseconds after its token was taken: the replay forgives a tenth of a
        # token of that (as tests/test_budget_daemon.py does), so a budget spent exactly at its rate reads as within.
        return budget.shortfall(self.calls, share, slack=ARRIVAL_SLACK)

    @property
    def updates(self) -> int:
        return sum(1 for _, operation in self.calls if operation == "UpdateService")


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def __call__(self, request: ApiRequest) -> Fault | None:
        if request.service == "ecs":
            with self._lock:
                self.calls.append((time.monotonic(), request.operation))
        return None


def _desired(local: LocalECS, cluster: str, names: Sequence[str]) -> set[int]:
    client = local._admin_client("ecs")
    counts: set[int] = set()
    for start in range(0, len(names), 10):
        answer = client.describe_services(cluster=cluster, services=list(names[start : start + 10]))
        counts |= {int(s["desiredCount"]) for s in answer["services"]}
    return counts


def _wait(condition: Callable[[], bool], timeout: float, poll: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return False


def storm(
    local: LocalECS,
    label: str,
    services: int,
    hosts: int,
    per_second: float,
    workdir: str,
    progress: Progress,
    *,
    settings: Mapping[str, str] | None = None,
    module: str | None = None,
    settle_timeout: float = 120.0,
) -> Storm:
    """Run one daemon (`python run.py`, or `python -m MODULE`) through one storm on a cluster of its own."""
    cluster = f"storm-{next(_clusters)}"
    local.create_cluster(cluster)
    local.add_hosts(cluster, STORM_START_HOSTS)
    names = [f"s{index:03d}" for index in range(services)]
    for name in names:
        local.create_service(cluster, name, desired_count=STORM_START_HOSTS, placement_constraints=DISTINCT)
    queue_url = local.enable_events(cluster)
    env = daemon_env(
        local, cluster, names, workdir, INTERVAL="300", EVENTS_QUEUE_URL=queue_url, **dict(settings or {})
    )
    command = [sys.executable, "-m", module] if module else [sys.executable, RUN_PY]
    result = Storm(label, services, hosts, per_second)
    recorder = _Recorder()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout or ()), daemon=True)
    reader.start()
    try:
        if not _wait(lambda: any('"events_start"' in line for line in lines), 60):
            raise RuntimeError(f"{label}: the daemon did not start its events source")
        local.fault_hook = recorder
        started = time.monotonic()
        for index in range(hosts):
            time.sleep(max(0.0, started + index / per_second - time.monotonic()))
            local.add_hosts(cluster, 1)
        last_host = time.monotonic()
        final = STORM_START_HOSTS + hosts
        if _wait(lambda: _desired(local, cluster, names) == {final}, settle_timeout, poll=0.05):
            result.settle = time.monotonic() - last_host
        time.sleep(1.0)  # the pass that wrote the last update logs its event
    finally:
        local.fault_hook = None
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(timeout=5)
        local.disable_events(cluster)
    result.calls = list(recorder.calls)
    for line in lines:
        if line.startswith("{") and '"event": "pass"' in line:
            event = json.loads(line)
            result.passes += 1
            result.deferred += int(event.get("deferred", 0))
    settle = f"{result.settle:.1f} s" if result.settle is not None else f"not within {settle_timeout:.0f} s"
    progress(
        f"storm {label}: {services} services x {hosts} hosts at {per_second:g}/s: {len(result.calls)} ECS calls, "
        f"{result.updates} UpdateService, peak {result.peak_per_second()[budget.SERVICE_MODIFY]}/s, "
        f"short at half size {sum(result.short(0.5).values())}, settled {settle}"
    )
    return result


def storms(
    local: LocalECS, services: int, hosts: int, per_second: float, workdir: str, progress: Progress
) -> list[Storm]:
    """The same storm for the daemon at the default budget, at API_BUDGET=1.0, and without a budget."""
    return [
        storm(local, BUDGETED, services, hosts, per_second, workdir, progress),
        storm(local, FULL_BUDGET, services, hosts, per_second, workdir, progress, settings={"API_BUDGET": "1.0"}),
        storm(local, UNBUDGETED, services, hosts, per_second, workdir, progress, module=UNBUDGETED_MODULE),
    ]
