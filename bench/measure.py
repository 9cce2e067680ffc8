"""The measurements: passes through the driver, and `python run.py` itself.

Every API call is counted from LocalECS's call log (by operation), never from
the process being measured. CPU time and resident memory are the measured
process's own: the driver's (`bench.driver`) for one pass, psutil's view of
`run.py` for start-up, latency and the 1,000-pass soak.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ecs_cluster_manager.config import DEFAULT_INTERVAL, DEFAULT_RESYNC
from localecs import LocalECS

ROOT = Path(__file__).resolve().parent.parent
RUN_PY = str(ROOT / "run.py")
MIB = 1024 * 1024

LIST_CONTAINER_INSTANCES_PAGE = 100  # ECS's largest page
DESCRIBE_SERVICES_BATCH = 10  # ECS's limit per DescribeServices
LIST_SERVICES_PAGE = 100  # the daemon asks for ECS's largest page
COUNTING_OPERATIONS = ("ListContainerInstances", "DescribeClusters")  # the calls that count hosts
COUNTING_BOUND = 4  # counting calls per host filter in a converged pass read cheaply
CHEAP, EXACT = "cheap", "exact"
# The daemons that measure polling latency alongside the matrix send this User-Agent app id
# (AWS_SDK_UA_APP_ID); their calls are left out of every pass's count.
BACKGROUND_APP_ID = "bench-background"

Progress = Callable[[str], None]


def resync_cycle(resync: float, interval: float) -> int:
    """Passes from one exact listing of a large filter to the next, with passes `interval` apart.

    `counting.Counting` lists a filter in the last pass before its RESYNC falls due (so no filter goes
    RESYNC seconds unlisted): the n-th pass after a listing lists again once n x INTERVAL + INTERVAL
    reaches RESYNC.
    """
    return max(1, math.ceil(resync / interval - 1e-9) - 1)


# The cycle of the daemon at its defaults (RESYNC=300, INTERVAL=30): one exact listing, then cheap
# readings, then the next exact listing on this pass.
EXACT_EVERY = resync_cycle(DEFAULT_RESYNC, DEFAULT_INTERVAL)


def process_env(local: LocalECS, **settings: str) -> dict[str, str]:
    """The environment of a measured process: the local endpoint, dummy credentials, and `settings`."""
    env = local.env()  # already without the caller's CLUSTER, SERVICES and other manager settings
    env.pop("PYTHONPATH", None)  # the process imports this checkout, from its working directory
    env.update(settings)
    return env


def operation_calls(local: LocalECS) -> Counter[str]:
    """The recorded calls by operation (ECS's and any other service's)."""
    return Counter(call.operation for call in local.calls)


# ---------------------------------------------------------------------------
# The world


def grow_cluster(local: LocalECS, cluster: str, hosts: int, have: int) -> int:
    """Register hosts until the cluster has `hosts`; returns the new count."""
    if hosts > have:
        local.add_hosts(cluster, hosts - have)
    return max(hosts, have)


def service_names(count: int) -> list[str]:
    return [f"s{index:03d}" for index in range(count)]


def create_services(local: LocalECS, cluster: str, count: int) -> list[str]:
    """REPLICA services with a distinctInstance constraint, as the daemon expects; desiredCount 0."""
    names = service_names(count)
    for name in names:
        local.create_service(cluster, name, placement_constraints=[{"type": "distinctInstance"}])
    return names


def set_desired(local: LocalECS, cluster: str, services: Sequence[str], desired_count: int) -> None:
    for service in services:
        local.update_desired_count(cluster, service, desired_count)


# ---------------------------------------------------------------------------
# One pass at a time, through the driver


@dataclass(frozen=True)
class PassSample:
    """One pass as the driver timed it and LocalECS recorded it."""

    wall: float  # seconds
    cpu: float  # seconds of the driver's CPU time
    rss: int  # bytes, after the pass
    clients: int  # botocore clients the process had created so far
    updated: int
    calls: Mapping[str, int]
    failed_calls: int  # answers other than HTTP 200
    deferred: int = 0  # writes the API budget deferred to a later pass
    counting: Mapping[str, str] = field(default_factory=dict)  # host filter -> "exact" or "cheap" (the daemon's)

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    @property
    def kind(self) -> str | None:
        """How the pass counted hosts: exact when some filter was counted exactly, cheap when none was, else None."""
        if not self.counting:
            return None
        return EXACT if EXACT in self.counting.values() else CHEAP

    @property
    def counting_calls(self) -> int:
        return sum(self.calls.get(operation, 0) for operation in COUNTING_OPERATIONS)


@dataclass
class AlgorithmRun:
    """Every measured pass of one algorithm at one (hosts, services)."""

    algorithm: str
    converged: list[PassSample] = field(default_factory=list)
    changed: list[PassSample] = field(default_factory=list)
    passes: int = 0  # every pass the process ran, warm-up and memory passes included
    rss_at: dict[int, int] = field(default_factory=dict)  # pass number -> RSS bytes
    clients: int = 0
    setup_rss: int = 0

    @property
    def rss_end(self) -> int:
        return self.rss_at[self.passes]

    def samples(self, which: str, kind: str | None = None) -> list[PassSample]:
        """The converged or changed passes; with `kind`, only those whose hosts were counted so ("exact", "cheap").

        Where no converged pass read the count cheaply (hosts that fit on one page are counted exactly on
        every pass, 2 calls, no more than the reading), "cheap" means those exact passes: the everyday pass.
        """
        samples = self.converged if which == "converged" else self.changed
        if kind == CHEAP and which == "converged" and not any(sample.kind == CHEAP for sample in samples):
            kind = EXACT
        return [sample for sample in samples if kind is None or sample.kind == kind]

    def calls(self, which: str, kind: str | None = None) -> Counter[str]:
        """The largest count of each operation over the converged or changed passes (of one kind)."""
        calls: Counter[str] = Counter()
        for sample in self.samples(which, kind):
            for operation, count in sample.calls.items():
                calls[operation] = max(calls[operation], count)
        return calls

    def calls_vary(self, which: str, kind: str | None = None) -> bool:
        return len({tuple(sorted(sample.calls.items())) for sample in self.samples(which, kind)}) > 1

    def filters(self) -> int:
        """Host filters counted in a pass (0 for the original, which has none)."""
        return max((len(sample.counting) for sample in self.converged), default=0)

    def counting_calls(self, which: str, kind: str | None = None) -> int:
        """The most counting calls (ListContainerInstances + DescribeClusters) of one pass."""
        return max((sample.counting_calls for sample in self.samples(which, kind)), default=0)

    @staticmethod
    def _median(samples: Sequence[PassSample], attribute: str) -> float:
        return statistics.median(getattr(sample, attribute) for sample in samples) if samples else math.nan

    def median(self, which: str, attribute: str, kind: str | None = None) -> float:
        return self._median(self.samples(which, kind), attribute)


@dataclass
class Row:
    """One (hosts, services) cell of the matrix: the daemon, the original and, when measured, exact counting."""

    hosts: int
    services: int
    discovery: bool
    current: AlgorithmRun
    original: AlgorithmRun
    exact: AlgorithmRun | None = None
    note: str = ""

    @property
    def reads(self) -> Counter[str]:
        """The service reads every converged pass needs: ceil(S/10) DescribeServices, plus ListServices pages."""
        reads: Counter[str] = Counter(DescribeServices=math.ceil(self.services / DESCRIBE_SERVICES_BATCH))
        if self.discovery:
            reads["ListServices"] = max(1, math.ceil(self.services / LIST_SERVICES_PAGE))
        return reads

    @property
    def exact_listing(self) -> int:
        """ListContainerInstances pages of one exact listing of every host."""
        return max(1, math.ceil(self.hosts / LIST_CONTAINER_INSTANCES_PAGE))

    def within_bound(self) -> bool:
        """Every cheap converged pass of the daemon: at most COUNTING_BOUND counting calls per host filter,
        exactly the service reads, and nothing else (no write)."""
        samples = self.current.samples("converged", CHEAP)
        if not samples:
            return False
        for sample in samples:
            others = Counter({op: n for op, n in sample.calls.items() if op not in COUNTING_OPERATIONS and n})
            if sample.counting_calls > COUNTING_BOUND * len(sample.counting) or others != +self.reads:
                return False
        return True


class Driver:
    """A `python -m bench.driver` process, one pass per request."""

    def __init__(
        self,
        algorithm: str,
        cluster: str,
        env: Mapping[str, str],
        services: Sequence[str] = (),
        service_regex: str | None = None,
    ) -> None:
        command = [sys.executable, "-m", "bench.driver", algorithm, "--cluster", cluster]
        if services:
            command += ["--services", ",".join(services)]
        if service_regex:
            command += ["--service-regex", service_regex]
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=dict(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        self.ready = self._answer()

    def _answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=10)
            self._stderr.seek(0)
            raise RuntimeError(f"bench.driver exited with {self.process.returncode}: {self._stderr.read()[-2000:]}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"bench.driver: {answer['error']}")
        return answer

    def request(self, command: str = "pass") -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.close()
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self._stderr.close()


def _sample(local: LocalECS, driver: Driver, command: str = "pass") -> PassSample:
    local.clear_calls()
    answer = driver.request(command)
    # Leave out the daemons measuring latency alongside (their User-Agent app id says so).
    calls = [call for call in local.calls if f"app/{BACKGROUND_APP_ID}" not in call.user_agent.split()]
    return PassSample(
        wall=answer["wall"],
        cpu=answer["cpu"],
        rss=answer["rss"],
        clients=answer["clients"],
        updated=answer["updated"],
        deferred=answer.get("deferred", 0),
        calls=Counter(call.operation for call in calls),
        failed_calls=sum(1 for call in calls if call.status != 200),
        counting=answer.get("counting", {}),
    )


WARM_UP_LIMIT = 120.0  # seconds of warm-up passes at most (100 writes at the default budget take about 30 s)


@dataclass(frozen=True)
class Repetitions:
    """How many passes of each kind to time at one size."""

    converged: int
    changed: int
    memory_passes: int = 100  # the pass after which resident memory is reported
    memory_budget: float = 6.0  # seconds the memory passes may take beyond the timed ones


def measure(
    local: LocalECS,
    algorithm: str,
    cluster: str,
    managed: Sequence[str],
    reps: Repetitions,
    env: Mapping[str, str],
    *,
    service_regex: str | None = None,
    profile_to: str | None = None,
) -> AlgorithmRun:
    """Time converged passes, then passes that change every managed service, then keep passing for memory.

    Every service is set to its target first, and warm-up passes run until one
    writes nothing and (for `current`) every service's coverage has been read
    once, at most WARM_UP_LIMIT seconds, so no timed converged pass carries a
    write the API budget deferred or a first coverage read. A
    "changed" pass follows setting every managed service's desiredCount to 0.
    Memory passes (converged) continue to `reps.memory_passes` or until the
    budget is spent, whichever is first; at least 10 passes are always run.
    """
    run = AlgorithmRun(algorithm)
    # Every managed service at its target (one task per usable host) before the warm-up, through the local API:
    # writes the budget would spread over the warm-up's passes are not what this measures.
    target = sum(1 for host in local.hosts(cluster) if host["status"] == "ACTIVE" and host["agentConnected"])
    set_desired(local, cluster, managed, target)
    driver = Driver(algorithm, cluster, env, () if service_regex else managed, service_regex)
    try:
        run.setup_rss = driver.ready["rss"]

        def record(sample: PassSample) -> PassSample:
            run.passes += 1
            run.rss_at[run.passes] = sample.rss
            run.clients = sample.clients
            return sample

        warm_up_until = time.monotonic() + WARM_UP_LIMIT
        while True:  # warm-up
            warm = record(_sample(local, driver))
            # `current` reads each service's coverage once (at most 50 calls a pass), then when it may have
            # changed; `exact` reads it on every pass by design.
            first_reads = algorithm == "current" and warm.calls.get("ListTasks", 0) > 0
            if not (warm.updated or warm.deferred or first_reads) or time.monotonic() > warm_up_until:
                break
        started = time.monotonic()
        for _ in range(reps.converged):
            run.converged.append(record(_sample(local, driver)))
        for _ in range(reps.changed):
            set_desired(local, cluster, managed, 0)
            run.changed.append(record(_sample(local, driver)))
        set_desired(local, cluster, managed, target)  # what the budget deferred is not left to the memory passes
        if profile_to is not None:
            record(_sample(local, driver, f"profile {profile_to}"))
        while run.passes < reps.memory_passes and (run.passes < 10 or time.monotonic() - started < reps.memory_budget):
            record(_sample(local, driver))
    finally:
        driver.close()
    local.clear_calls()
    return run


@dataclass(frozen=True)
class Paired:
    """Converged passes of several algorithms, alternating one pass each, so machine drift hits all alike."""

    hosts: int
    services: int
    cpu: dict[str, list[float]]
    wall: dict[str, list[float]]
    calls: dict[str, Counter[str]]  # the last pass's calls, by algorithm
    kinds: dict[str, Counter[str]]  # by algorithm, how many passes counted hosts exactly or cheaply

    def median_cpu(self, algorithm: str) -> float:
        return statistics.median(self.cpu[algorithm])


def paired(
    local: LocalECS,
    cluster: str,
    hosts: int,
    managed: Sequence[str],
    env: Mapping[str, str],
    algorithms: Sequence[str] = ("current", "exact", "bare"),
    pairs: int = EXACT_EVERY - 1,
) -> Paired:
    """Alternate converged passes of `algorithms` (after one warm-up pass each); the services must be converged.

    With the default number of pairs every timed pass of `current` reads its host count cheaply (the warm-up
    is its first exact count, the next is due on pass EXACT_EVERY + 1).
    """
    drivers = {algorithm: Driver(algorithm, cluster, env, managed) for algorithm in algorithms}
    cpu: dict[str, list[float]] = {algorithm: [] for algorithm in algorithms}
    wall: dict[str, list[float]] = {algorithm: [] for algorithm in algorithms}
    calls: dict[str, Counter[str]] = {}
    kinds: dict[str, Counter[str]] = {algorithm: Counter() for algorithm in algorithms}
    try:
        for driver in drivers.values():
            driver.request()
        for _ in range(pairs):
            for algorithm, driver in drivers.items():
                sample = _sample(local, driver)
                cpu[algorithm].append(sample.cpu)
                wall[algorithm].append(sample.wall)
                calls[algorithm] = Counter(sample.calls)
                if sample.kind is not None:
                    kinds[algorithm][sample.kind] += 1
    finally:
        for driver in drivers.values():
            driver.close()
    local.clear_calls()
    return Paired(hosts, len(managed), cpu, wall, calls, kinds)


# ---------------------------------------------------------------------------
# python run.py


@contextmanager
def daemon(
    env: Mapping[str, str], *args: str, stdout: int | IO[Any] = subprocess.PIPE
) -> Iterator[subprocess.Popen[str]]:
    """`python run.py ARGS` in the background; SIGTERM and wait on the way out."""
    process = subprocess.Popen(
        [sys.executable, RUN_PY, *args],
        cwd=ROOT,
        env=dict(env),
        stdout=stdout,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def daemon_env(
    local: LocalECS, cluster: str, services: Sequence[str], heartbeat_dir: str, **settings: str
) -> dict[str, str]:
    """The environment of `python run.py` managing `services` of `cluster`, logging JSON at INFO."""
    return process_env(
        local,
        CLUSTER=cluster,
        SERVICES=",".join(services),
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        HEARTBEAT_FILE=os.path.join(heartbeat_dir, "heartbeat"),
        **settings,
    )


@dataclass(frozen=True)
class Startup:
    seconds: list[float]  # process start to its first `decision` line, per run
    import_seconds: float  # `python -X importtime run.py --once`: every import, cumulative
    top_imports: list[tuple[str, float]]  # top-level packages by cumulative import time (seconds)


def startup(env: Mapping[str, str], runs: int) -> Startup:
    """Spawn `python run.py` and time it to its first decision, `runs` times; then its imports."""
    seconds: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        with daemon(env) as process:
            assert process.stdout is not None
            for line in process.stdout:
                if line.startswith("{") and json.loads(line).get("event") == "decision":
                    seconds.append(time.perf_counter() - started)
                    break
            else:
                raise RuntimeError("run.py exited before its first decision")
    import_seconds, top = import_times(env)
    return Startup(seconds, import_seconds, top)


_IMPORT_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)")


def import_times(env: Mapping[str, str], top: int = 8) -> tuple[float, list[tuple[str, float]]]:
    """Total import time of `run.py --once`, and the packages that cost most.

    Each package is counted once, at its outermost import, with everything it
    imported itself (so boto3 includes botocore); the figures overlap.
    """
    done = subprocess.run(
        [sys.executable, "-X", "importtime", RUN_PY, "--once"],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    total = 0
    by_package: dict[str, int] = {}
    for line in done.stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match is None:
            continue
        name, cumulative = match.group(4), int(match.group(2))
        if len(match.group(3)) == 1:  # imported by run.py itself: the whole cost of the import tree
            total += cumulative
        if "." not in name:
            by_package[name] = max(by_package.get(name, 0), cumulative)
    ranked = sorted(by_package.items(), key=lambda item: item[1], reverse=True)[:top]
    return total / 1e6, [(name, micros / 1e6) for name, micros in ranked]


def latency(
    local: LocalECS,
    cluster: str,
    service: str,
    hosts: int,
    env: Mapping[str, str],
    trials: int,
    progress: Progress,
    *,
    poll: float = 0.02,
    seed: int = 20,
) -> list[float]:
    """Seconds from a host registration to the service's new desiredCount, with `run.py` looping at INTERVAL=1.

    Each registration waits a random 0-1 s first, so it lands at a random point
    of the daemon's cycle.
    """
    rng = random.Random(seed)
    results: list[float] = []
    with daemon(env, stdout=subprocess.DEVNULL):
        _wait_for(lambda: local.desired_count(cluster, service) == hosts, 30, "the daemon to converge")
        for trial in range(trials):
            time.sleep(rng.uniform(0.0, 1.0))
            local.add_hosts(cluster, 1)
            registered = time.perf_counter()
            hosts += 1
            expected = hosts
            while local.desired_count(cluster, service) != expected:
                if time.perf_counter() - registered > 15:
                    raise RuntimeError(f"desiredCount did not reach {expected} within 15 s")
                time.sleep(poll)
            results.append(time.perf_counter() - registered)
            progress(f"latency {trial + 1}/{trials}: {results[-1] * 1000:.0f} ms")
    return results


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass(frozen=True)
class Soak:
    """`run.py` looping with a tiny INTERVAL: resident memory and CPU time at pass checkpoints."""

    hosts: int
    services: int
    interval: float
    rss_at: dict[int, int]  # pass number (as counted from the call log) -> RSS bytes
    cpu_at: dict[int, float]  # pass number -> the process's CPU seconds so far
    exit_code: int | None

    @property
    def passes(self) -> int:
        return max(self.rss_at)

    def cpu_per_pass(self, first: int, last: int) -> float:
        return (self.cpu_at[last] - self.cpu_at[first]) / (last - first)


def soak(
    local: LocalECS,
    cluster: str,
    hosts: int,
    services: Sequence[str],
    env: Mapping[str, str],
    checkpoints: Sequence[int],
    progress: Progress,
    interval: float = 0.01,
) -> Soak:
    """Run `python run.py` for max(checkpoints) passes; sample its RSS at each checkpoint.

    Passes are counted from LocalECS's call log: each pass makes
    ceil(services / 10) DescribeServices calls and nothing else calls it meanwhile.
    """
    import psutil

    per_pass = math.ceil(len(services) / DESCRIBE_SERVICES_BATCH)
    rss_at: dict[int, int] = {}
    cpu_at: dict[int, float] = {}
    local.clear_calls()
    pending = sorted(checkpoints)
    deadline = time.monotonic() + 60 + max(pending) * 0.5
    with daemon(env, stdout=subprocess.DEVNULL) as process:
        watched = psutil.Process(process.pid)
        while pending:
            passes = local.count("DescribeServices") // per_pass
            if passes >= pending[0]:
                rss_at[passes] = watched.memory_info().rss
                times = watched.cpu_times()
                cpu_at[passes] = times.user + times.system
                progress(f"soak: pass {passes}, RSS {rss_at[passes] / MIB:.1f} MiB")
                while pending and pending[0] <= passes:
                    pending.pop(0)
                continue
            if process.poll() is not None:
                raise RuntimeError(f"run.py exited with {process.returncode} after {passes} passes")
            if time.monotonic() > deadline:
                raise RuntimeError(f"soak: only {passes} passes before the deadline")
            time.sleep(0.02)
    local.clear_calls()
    return Soak(hosts, len(services), interval, rss_at, cpu_at, process.returncode)


# ---------------------------------------------------------------------------
# Profile of one pass


# Where the CPU time of a pass goes, by the file each function lives in.
_COMPONENTS = (
    ("botocore (serialise, sign, events, parse)", ("/botocore/",)),
    ("HTTP stack (urllib3, http.client, email, socket)", ("/urllib3/", "/http/", "/email/", "socket.py", "ssl.py")),
    ("tenacity (retry wrapper)", ("/tenacity/",)),
    ("structlog (decision and pass logs)", ("/structlog/",)),
    ("ecs_cluster_manager (observe, plan, act)", ("/ecs_cluster_manager/",)),
)


def _component(filename: str) -> str:
    for component, markers in _COMPONENTS:
        if any(marker in filename for marker in markers):
            return component
    return "other (stdlib, json, dateutil)"


def profile_components(path: str) -> list[tuple[str, float]]:
    """Share of a profiled pass's CPU time per component, largest first.

    A builtin's time (``dict.get``, ``str.lower``, ...) goes to the components
    of its callers, in proportion to the time each caller spent in it.
    """
    import pstats

    stats = pstats.Stats(path)
    shares: Counter[str] = Counter()
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, callers) in raw.items():
        if filename != "~" or not callers:
            shares[_component(filename)] += tottime
            continue
        for (caller_file, _caller_line, _caller_name), caller_times in callers.items():
            shares[_component(caller_file)] += caller_times[2]
    total = sum(shares.values()) or 1.0
    return [(component, seconds / total) for component, seconds in shares.most_common()]
