"""READY_ATTRIBUTE's latency: host registered -> daemon task RUNNING -> ready attribute set, with events and polling.

`python -m bench.ready` (or `make bench BENCH_ARGS="--only ready"`) runs only
this part and rewrites its section of bench/results.md in place; `make bench`
runs it after the rest. It has a local API of its own, with scheduling on and
tasks placed by the scheduler's own thread as soon as something changes, each
PENDING for START_AFTER s before it is RUNNING (as ECS places a task without
being asked, and a task waits for its image and containers). One managed
daemon service `agent` (distinctInstance) runs on a cluster of H hosts;
`python run.py` manages it with READY_ATTRIBUTE, with events
(EVENTS_QUEUE_URL, its rule taking task events too, INTERVAL=300) or polling
(no queue, INTERVAL=30). Each trial waits a random 0..offset s,
registers one host, and reads from the local API's call log and tasks: when
UpdateService raised desiredCount (registration -> desiredCount, the other
figures' measure and this one's baseline), when the host's task started (its
`startedAt`), and when PutAttributes named the host; and the daemon's calls from
the registration to the attribute, by operation. The cluster's first hosts
already run their task and have the attribute when the daemon starts. Nothing polls the API while a
trial waits (the call log is read in process), and polling's trials run on
several clusters at once, each with its own daemon.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from localecs import ApiCall, LocalECS

from .events import EVENTS, POLLING, heartbeat_dir, is_daemon_call, p95
from .measure import daemon, daemon_env
from .report import replace_marked

ATTRIBUTE = "ecs-cluster-manager.ready"
SERVICE = "agent"
START_AFTER = 1.0  # seconds a placed task is PENDING before it is RUNNING
EVENTS_INTERVAL, POLLING_INTERVAL, QUICK_POLLING_INTERVAL = 300.0, 30.0, 5.0
FULL_EVENTS_HOSTS, QUICK_EVENTS_HOSTS = (10, 100, 1000), (10,)
POLLING_HOSTS = 10
FULL_TRIALS, QUICK_TRIALS = 15, 4  # registrations per events size
FULL_POLLING_TRIALS, QUICK_POLLING_TRIALS = 8, 4  # polling's, in all: about a minute each at INTERVAL=30
POLLING_CLUSTERS = 4  # polling's trials run on this many clusters at once
BEGIN, END = "<!-- ready-attribute -->", "<!-- /ready-attribute -->"
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results.md"


@dataclass(frozen=True)
class Trial:
    """One registration, in seconds from it (time.time() of the local API's answers), and the daemon's calls."""

    desired: float  # UpdateService raised desiredCount
    running: float  # the host's task started
    ready: float  # PutAttributes named the host
    ecs: Counter[str]
    sqs: Counter[str]


@dataclass
class Figure:
    """The trials of one mode, interval and cluster size."""

    mode: str
    interval: float
    hosts: int
    offset: float
    trials: list[Trial] = field(default_factory=list)

    def median(self, key: Callable[[Trial], float]) -> float:
        return statistics.median(key(t) for t in self.trials)

    def p95(self, key: Callable[[Trial], float]) -> float:
        return p95([key(t) for t in self.trials])

    def calls(self, which: str) -> Counter[str]:
        """Calls per trial, by operation: the mean over the trials, rounded."""
        total: Counter[str] = Counter()
        for trial in self.trials:
            total.update(getattr(trial, which))
        return Counter({op: round(count / len(self.trials)) for op, count in total.items() if count})


def _names(call: ApiCall, host: str) -> bool:
    return call.operation == "PutAttributes" and any(
        a.get("targetId") == host and a.get("name") == ATTRIBUTE for a in call.params.get("attributes") or []
    )


def _ready_hosts(local: LocalECS, cluster: str) -> int:
    return sum(1 for h in local.hosts(cluster) if h["attributes"].get(ATTRIBUTE) == "true")


def trials(
    local: LocalECS,
    cluster: str,
    env: dict[str, str],
    figure: Figure,
    count: int,
    seed: int,
    progress: Callable[[str], None],
) -> None:
    """Run the daemon with `env` on `cluster` and register `count` hosts, one a trial, into `figure`."""
    rng = random.Random(seed)
    timeout = 2 * figure.interval + 30
    hosts = len(local.hosts(cluster))
    began = local.calls_recorded
    # The daemon has started when it has listed the attribute, and (with events) polled its queue.
    started = {"ListAttributes", "ReceiveMessage"} if "EVENTS_QUEUE_URL" in env else {"ListAttributes"}
    with daemon(env, stdout=subprocess.DEVNULL):
        deadline = time.monotonic() + 120
        while not started <= {c.operation for c in local.calls_since(began) if is_daemon_call(c)}:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{cluster}: the daemon did not start")
            time.sleep(0.2)
        time.sleep(1.0)  # its first pass done
        if local.desired_count(cluster, SERVICE) != hosts or _ready_hosts(local, cluster) != hosts:
            raise RuntimeError(f"{cluster}: the daemon changed the cluster it found converged")
        for index in range(count):
            time.sleep(rng.uniform(0.0, figure.offset))
            start = local.calls_recorded
            [host] = local.add_hosts(cluster, 1)
            registered = time.time()
            hosts += 1
            found: ApiCall | None = None
            until = time.monotonic() + timeout
            while found is None and time.monotonic() < until:
                time.sleep(0.02)
                found = next((c for c in local.calls_since(start) if _names(c, host)), None)
            if found is None:
                raise RuntimeError(f"{figure.mode}: {host} was not marked ready within {timeout:g} s")
            calls = [c for c in local.calls_since(start) if c.at <= found.at and is_daemon_call(c)]
            mine = [c for c in calls if c.service != "ecs" or c.params.get("cluster") in (cluster, None)]
            raised = next(
                c.at
                for c in mine
                if c.operation == "UpdateService"
                and str(c.params.get("service")).rsplit("/", 1)[-1] == SERVICE
                and c.params.get("desiredCount") == hosts
            )
            [task] = _tasks(local, cluster, host)
            figure.trials.append(
                Trial(
                    desired=raised - registered,
                    running=_epoch(task["startedAt"]) - registered,
                    ready=found.at - registered,
                    ecs=Counter(c.operation for c in mine if c.service == "ecs"),
                    sqs=Counter(c.operation for c in mine if c.service == "sqs"),
                )
            )
            last = figure.trials[-1]
            progress(
                f"ready {figure.mode} INTERVAL={figure.interval:g} H={figure.hosts} {index + 1}/{count}: "
                f"desiredCount {last.desired:.2f} s, RUNNING {last.running:.2f} s, attribute {last.ready:.2f} s, "
                f"{sum(last.ecs.values())} ECS calls"
            )


def _epoch(value: object) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(str(value))


def _tasks(local: LocalECS, cluster: str, host: str) -> list[dict[str, object]]:
    """The managed service's tasks on `host` (one ListTasks page: distinctInstance leaves at most one)."""
    client = local.client()
    arns = client.list_tasks(cluster=cluster, serviceName=SERVICE, containerInstance=host)["taskArns"]
    return list(client.describe_tasks(cluster=cluster, tasks=arns)["tasks"]) if arns else []


def _cluster(local: LocalECS, name: str, hosts: int) -> None:
    """A converged cluster of `hosts`: the service's task RUNNING on each, and each with the attribute."""
    local.create_cluster(name)
    arns = local.add_hosts(name, hosts)
    local.create_service(
        name,
        SERVICE,
        desired_count=hosts,
        placement_constraints=[{"type": "distinctInstance"}],
        deployment_configuration={"minimumHealthyPercent": 50, "maximumPercent": 100},
    )
    deadline = time.monotonic() + 60 + hosts / 10
    while sum(1 for t in local.tasks(name, SERVICE) if t["lastStatus"] == "RUNNING") < hosts:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: the local scheduler did not start {hosts} tasks")
        time.sleep(0.2)
    ecs = local.client()
    for start in range(0, hosts, 10):
        attributes = [{"name": ATTRIBUTE, "value": "true", "targetId": arn} for arn in arns[start : start + 10]]
        ecs.put_attributes(cluster=name, attributes=attributes)


def measure(quick: bool = False, progress: Callable[[str], None] | None = None) -> list[Figure]:
    """Every figure: events at each size, then polling on several small clusters at once."""
    say = progress or (lambda message: print(message, file=sys.stderr, flush=True))
    count = QUICK_TRIALS if quick else FULL_TRIALS
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="bench-ready-") as workdir, LocalECS(
        schedule=True, start_after=START_AFTER
    ) as local:
        for hosts in QUICK_EVENTS_HOSTS if quick else FULL_EVENTS_HOSTS:
            cluster = f"ready{hosts}"
            _cluster(local, cluster, hosts)
            queue_url = local.enable_events(cluster, task_events=True)
            env = daemon_env(
                local,
                cluster,
                [SERVICE],
                heartbeat_dir(workdir, cluster),
                INTERVAL=f"{EVENTS_INTERVAL:g}",
                EVENTS_QUEUE_URL=queue_url,
                READY_ATTRIBUTE=ATTRIBUTE,
            )
            figure = Figure(EVENTS, EVENTS_INTERVAL, hosts, offset=1.0)
            trials(local, cluster, env, figure, count, hosts, say)
            local.disable_events(cluster)
            local.delete_service(cluster, SERVICE)  # its cluster's scheduling costs nothing from here on
            figures.append(figure)
        interval = QUICK_POLLING_INTERVAL if quick else POLLING_INTERVAL
        polling = Figure(POLLING, interval, POLLING_HOSTS, offset=interval)
        count = QUICK_POLLING_TRIALS if quick else FULL_POLLING_TRIALS
        clusters = min(count, POLLING_CLUSTERS)
        errors: list[BaseException] = []
        threads = []
        for index in range(clusters):
            cluster = f"ready-polling{index}"
            _cluster(local, cluster, POLLING_HOSTS)
            env = daemon_env(
                local,
                cluster,
                [SERVICE],
                heartbeat_dir(workdir, cluster),
                INTERVAL=f"{interval:g}",
                READY_ATTRIBUTE=ATTRIBUTE,
            )
            part = Figure(POLLING, interval, POLLING_HOSTS, offset=interval)
            share = len(range(index, count, clusters))

            def job(
                cluster: str = cluster, env: dict[str, str] = env, part: Figure = part, share: int = share,
                seed: int = 100 + index,
            ) -> None:
                try:
                    trials(local, cluster, env, part, share, seed, say)
                except BaseException as error:  # re-raised below
                    errors.append(error)

            threads.append((threading.Thread(target=job, daemon=True), part))
        for thread, _ in threads:
            thread.start()
        for thread, part in threads:
            thread.join()
            polling.trials += part.trials
        if errors:
            raise RuntimeError(f"polling trials failed: {errors[0]!r}") from errors[0]
        figures.append(polling)
    return figures


def _calls_text(calls: Counter[str]) -> str:
    return ", ".join(f"{op} {n}" for op, n in sorted(calls.items(), key=lambda item: (-item[1], item[0]))) or "-"


def render(figures: Sequence[Figure]) -> str:
    """The Markdown section, between markers so `python -m bench.ready` can replace it in place."""
    lines = [
        BEGIN,
        "## Readiness: host registered -> daemon task RUNNING -> ready attribute set",
        "",
        (
            "One managed daemon service (distinctInstance) and `READY_ATTRIBUTE`, on a local API that places a "
            f"task as soon as desiredCount is raised, PENDING for {START_AFTER:g} s before it is RUNNING. Each "
            "trial registers one host after a random wait of 0..offset s; seconds from the registration to the "
            "raised desiredCount (UpdateService), to the host's task starting, and to PutAttributes naming the "
            "host, as the local API answered them; median (p95). Calls: the daemon's, from the registration to "
            "the attribute, per trial (mean). Events: EVENTS_QUEUE_URL with the task state-change events of the "
            f"managed service; polling: no queue, its trials on {POLLING_CLUSTERS} clusters at once. Run only "
            'this part with `make bench BENCH_ARGS="--only ready"`.'
        ),
        "",
        "| mode | INTERVAL (s) | hosts | trials | to desiredCount (s) | to task RUNNING (s) | to attribute (s) "
        "| RUNNING to attribute (s) | attribute / desiredCount | ECS calls | SQS calls |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for figure in figures:

        def cell(key: Callable[[Trial], float], figure: Figure = figure) -> str:
            return f"{figure.median(key):.2f} ({figure.p95(key):.2f})"

        ratio = figure.median(lambda t: t.ready) / max(figure.median(lambda t: t.desired), 1e-6)
        lines.append(
            f"| {figure.mode} | {figure.interval:g} | {figure.hosts:,} | {len(figure.trials)} "
            f"| {cell(lambda t: t.desired)} | {cell(lambda t: t.running)} | {cell(lambda t: t.ready)} "
            f"| {cell(lambda t: t.ready - t.running)} | {ratio:.1f}x | {_calls_text(figure.calls('ecs'))} "
            f"| {_calls_text(figure.calls('sqs'))} |"
        )
    events = [f for f in figures if f.mode == EVENTS]
    polled = [f for f in figures if f.mode == POLLING]
    if events and polled:
        small = min(events, key=lambda f: f.hosts)
        ratio = polled[0].median(lambda t: t.ready) / max(small.median(lambda t: t.ready), 1e-6)
        lines += [
            "",
            f"At {small.hosts} hosts, polling at INTERVAL={polled[0].interval:g} marks a new host "
            f"{ratio:.0f}x later than events (medians {polled[0].median(lambda t: t.ready):.1f} s and "
            f"{small.median(lambda t: t.ready):.2f} s): a pass raises desiredCount, and only a later pass sees "
            "the task RUNNING, where with events the task's own state-change event starts that pass.",
        ]
    lines += [END, ""]
    return "\n".join(lines)


def replace_section(document: str, section: str) -> str:
    """The document with this section replaced by `section` (appended when it has none)."""
    return replace_marked(document, section, BEGIN, END)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ready", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the results file whose section to update")
    parser.add_argument("--quick", action="store_true", help="fewer trials, one size, polling at INTERVAL=5")
    args = parser.parse_args(argv)
    section = render(measure(args.quick))
    sys.stdout.write(section)
    existing = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
    args.output.write_text(replace_section(existing, section), encoding="utf-8")
    print(f"updated the readiness section of {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
