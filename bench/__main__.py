"""`python -m bench` (`make bench`): run the whole benchmark, print the Markdown, write bench/results.md.

Progress goes to stderr, the Markdown to stdout and to --output. `--quick` runs
a smaller matrix with fewer repetitions, for working on the benchmark itself.
`--storm-only` runs only the scale-out storm (about 3 minutes) and replaces its
section of --output, leaving the rest of the file as it was.
`--only coverage` runs only the coverage read's part (bench/coverage.py) and
updates its section of --output in place; `--only ready` the same for the
readiness latency (bench/ready.py: host registered -> daemon task RUNNING ->
ready attribute set, with events and polling).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from localecs import LocalECS

from . import coverage, events, measure, ready, report, storm
from .measure import Repetitions, Row

FULL_HOSTS = (10, 100, 1000, 5000)
FULL_SERVICES = (1, 10, 100)
QUICK_HOSTS = (10, 100)
QUICK_SERVICES = (1, 10)
LATENCY_HOSTS = 10
SOAK_HOSTS, SOAK_SERVICES = 100, 10
EVENTS_INTERVAL, POLLING_INTERVAL = 300.0, 30.0  # the intervals compared: events' recommended, polling's default
POLLING_DAEMONS = 4  # polling latency at INTERVAL=30 runs on this many clusters at once, alongside the matrix
STEADY_HOSTS = 1000
# One hour of the steady cluster compressed this many times (INTERVAL and every duration of the workload
# alike): polling's passes at 1,000 hosts take up to 0.2 s, so its 30 s become 0.3 s and no less; at 200x
# the local API fell behind the events' schedule.
STEADY_SCALE = {events.EVENTS: 100.0, events.POLLING: 100.0}
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results.md"
# The scale-out storm of issue 15: 30 services, 200 hosts joining at 5 a second.
STORM_SERVICES, STORM_HOSTS, STORM_RATE = 30, 200, 5.0
QUICK_STORM_SERVICES, QUICK_STORM_HOSTS = 10, 40


def _sizes(raw: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({int(part) for part in raw.split(",") if part.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {raw!r}") from None
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError(f"expected numbers >= 1, got {raw!r}")
    return sizes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller matrix and fewer repetitions")
    parser.add_argument("--hosts", type=_sizes, help="host counts, comma-separated (default 10,100,1000,5000)")
    parser.add_argument("--services", type=_sizes, help="service counts, comma-separated (default 1,10,100)")
    parser.add_argument(
        "--memory-budget",
        type=float,
        default=None,
        help="seconds each (size, algorithm) may spend on passes for memory beyond the timed ones (default 6)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the Markdown")
    parser.add_argument(
        "--storm-only",
        action="store_true",
        help="run only the scale-out storm and replace its section of --output (about 3 minutes)",
    )
    parser.add_argument(
        "--only",
        choices=("coverage", "ready"),
        help="run only this part and update its section of --output (coverage: the coverage read's calls and time; "
        "ready: registration to daemon task RUNNING to the ready attribute)",
    )
    return parser.parse_args(argv)


def repetitions(hosts: int, services: int, algorithm: str, quick: bool, budget: float | None) -> Repetitions:
    """Timed passes per size: fewer where one pass takes seconds on the local API.

    `current` always times EXACT_EVERY converged passes after its warm-up (its first exact count): the
    cheap passes of one cycle and the exact count that ends it. `exact` times converged passes only, for
    the side-by-side comparison, and runs no memory passes.
    """
    if quick:
        converged, changed = 5, 3
    elif hosts <= 100:
        converged, changed = 9, 5
    elif hosts <= 1000:
        converged, changed = 7, 3
    else:
        converged, changed = 5, 2
    if algorithm == "original" and services >= 100:  # 200 calls a pass: about 2 s on the local API
        converged, changed = min(converged, 5), 2
    if algorithm == "current":
        converged = measure.EXACT_EVERY
    if algorithm == "exact":
        return Repetitions(converged, 0, memory_passes=0)
    if quick:
        return Repetitions(converged, changed, memory_passes=30, memory_budget=budget or 2.0)
    return Repetitions(converged, changed, memory_passes=100, memory_budget=6.0 if budget is None else budget)


class Clock:
    """Progress lines on stderr, stamped with the seconds since the start."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def __call__(self, message: str) -> None:
        print(f"[{self.elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)


def measure_row(
    local: LocalECS,
    cluster: str,
    hosts: int,
    managed: Sequence[str],
    quick: bool,
    budget: float | None,
    progress: Clock,
    *,
    service_regex: str | None = None,
    profile_to: str | None = None,
) -> Row:
    env = measure.process_env(local)
    runs = {}
    for algorithm in ("current", "exact", "original"):
        reps = repetitions(hosts, len(managed), algorithm, quick, budget)
        started = time.monotonic()
        runs[algorithm] = measure.measure(
            local,
            algorithm,
            cluster,
            managed,
            reps,
            env,
            service_regex=service_regex,
            profile_to=profile_to if algorithm == "current" else None,
        )
        run = runs[algorithm]
        kinds = (measure.CHEAP, measure.EXACT) if algorithm == "current" else (None,)
        for kind in kinds:
            if not run.samples("converged", kind):
                continue
            progress(
                f"H={hosts} S={len(managed)}{' regex' if service_regex else ''} {algorithm}"
                f"{f' ({kind})' if kind else ''}: "
                f"{report.calls_text(run.calls('converged', kind))} calls converged, "
                f"CPU {run.median('converged', 'cpu', kind) * 1000:.1f} ms, "
                f"wall {run.median('converged', 'wall', kind) * 1000:.0f} ms, "
                f"RSS {run.rss_end / measure.MIB:.1f} MiB after {run.passes} passes "
                f"({time.monotonic() - started:.0f} s)"
            )
    return Row(hosts, len(managed), service_regex is not None, runs["current"], runs["original"], runs["exact"])


def event_latency(
    local: LocalECS, cluster: str, hosts: int, trials: int, workdir: str, progress: Clock, *, create: bool = False
) -> events.Latency:
    """Registration to desiredCount with EVENTS_QUEUE_URL at INTERVAL=300, managing service s000."""
    if create:
        local.create_cluster(cluster)
        local.add_hosts(cluster, hosts)
        measure.create_services(local, cluster, 1)
    queue_url = local.enable_events(cluster)
    env = measure.daemon_env(
        local,
        cluster,
        ["s000"],
        events.heartbeat_dir(workdir, cluster),
        INTERVAL=f"{EVENTS_INTERVAL:g}",
        EVENTS_QUEUE_URL=queue_url,
    )
    try:
        return events.registration_latency(
            local,
            cluster,
            "s000",
            env,
            trials,
            progress,
            mode=events.EVENTS,
            interval=EVENTS_INTERVAL,
            offset=1.0,
            seed=hosts,
        )
    finally:
        local.disable_events(cluster)


def polling_latency(local: LocalECS, trials: int, workdir: str) -> events.Background:
    """Start the polling-latency trials at INTERVAL=30 in the background (see run())."""
    clusters = min(trials, POLLING_DAEMONS)
    jobs = []
    for index in range(clusters):
        cluster = f"polling{index}"
        local.create_cluster(cluster)
        local.add_hosts(cluster, LATENCY_HOSTS)
        measure.create_services(local, cluster, 1)
        env = events.background_env(
            measure.daemon_env(
                local, cluster, ["s000"], events.heartbeat_dir(workdir, cluster), INTERVAL=f"{POLLING_INTERVAL:g}"
            )
        )
        count = len(range(index, trials, clusters))

        def job(
            cluster: str = cluster, env: dict[str, str] = env, count: int = count, seed: int = index
        ) -> events.Latency:
            return events.registration_latency(
                local,
                cluster,
                "s000",
                env,
                count,
                lambda _message: None,
                mode=events.POLLING,
                interval=POLLING_INTERVAL,
                offset=POLLING_INTERVAL,
                seed=seed,
            )

        jobs.append(job)
    return events.Background(jobs)


def run(args: argparse.Namespace) -> report.Results:
    progress = Clock()
    quick = args.quick
    host_sizes = args.hosts or (QUICK_HOSTS if quick else FULL_HOSTS)
    service_sizes = args.services or (QUICK_SERVICES if quick else FULL_SERVICES)
    results = report.Results(quick=quick, load_before=os.getloadavg())
    workdir = tempfile.TemporaryDirectory(prefix="bench-")

    with LocalECS() as local:
        progress(f"local ECS API at {local.endpoint_url}")

        # Start-up and latency: one service on a small cluster, before the large one exists.
        local.create_cluster("latency")
        local.add_hosts("latency", LATENCY_HOSTS)
        measure.create_services(local, "latency", 1)
        results.latency_hosts = LATENCY_HOSTS
        env = measure.daemon_env(local, "latency", ["s000"], workdir.name, INTERVAL="30")
        results.startup = measure.startup(env, runs=3 if quick else 5)
        progress(f"start-up to first decision: {', '.join(f'{s:.2f}' for s in results.startup.seconds)} s")
        timing = measure.measure(
            local, "current", "latency", ["s000"], Repetitions(7, 0, memory_passes=0), measure.process_env(local)
        )
        results.latency_pass = timing.median("converged", "wall")
        env = measure.daemon_env(local, "latency", ["s000"], workdir.name, INTERVAL="1")
        results.latency = measure.latency(
            local, "latency", "s000", LATENCY_HOSTS, env, trials=5 if quick else 20, progress=progress
        )

        # Event mode: host registration to desiredCount at INTERVAL=300, on a small cluster.
        trials = 5 if quick else 20
        results.registration.append(
            event_latency(local, "events", LATENCY_HOSTS, trials, workdir.name, progress, create=True)
        )

        # Memory of the real daemon over many passes.
        local.create_cluster("soak")
        local.add_hosts("soak", SOAK_HOSTS)
        soak_services = measure.create_services(local, "soak", SOAK_SERVICES)
        env = measure.daemon_env(local, "soak", soak_services, workdir.name, INTERVAL="0.01")
        checkpoints = (10, 50, 100, 200) if quick else (10, 100, 250, 500, 750, 1000)
        results.soak = measure.soak(local, "soak", SOAK_HOSTS, soak_services, env, checkpoints, progress)

        # ECS calls per hour of a steady 1,000-host cluster: events at INTERVAL=300 against polling at 30.
        local.create_cluster("steady")
        local.add_hosts("steady", STEADY_HOSTS)
        measure.create_services(local, "steady", 1)
        env = measure.daemon_env(local, "steady", ["s000"], events.heartbeat_dir(workdir.name, "steady"))
        hours = 0.25 if quick else 1.0

        def steady_hour(mode: str, interval: float, queue_url: str | None = None) -> None:
            results.steady.append(
                events.steady(
                    local,
                    "steady",
                    "s000",
                    env,
                    progress,
                    mode=mode,
                    interval=interval,
                    scale=STEADY_SCALE[mode],
                    hours=hours,
                    workload=events.Workload(),
                    seed=11,
                    queue_url=queue_url,
                )
            )

        steady_hour(events.EVENTS, EVENTS_INTERVAL, local.enable_events("steady"))
        local.disable_events("steady")  # no cluster publishes events from here on
        steady_hour(events.POLLING, POLLING_INTERVAL)

        # The scale-out storm, while no other daemon runs (its calls are noted by a fault hook).
        storm_started = time.monotonic()
        results.storms = run_storms(local, quick, workdir.name, progress)
        results.storm_elapsed = time.monotonic() - storm_started

        # Polling latency at INTERVAL=30: a trial is about 30 s (a random wait, then the rest of the cycle),
        # so it runs on several small clusters at once, alongside the matrix; those daemons' calls carry
        # their own User-Agent app id and are left out of the matrix's counts.
        background = polling_latency(local, trials, workdir.name)

        # The matrix: one cluster grown from the smallest size to the largest; services named s000, s001, ...
        local.create_cluster("bench")
        services = measure.create_services(local, "bench", max(service_sizes))
        progress(f"created {len(services)} services")
        have = 0
        largest = (max(host_sizes), max(service_sizes))
        profile_path = os.path.join(workdir.name, "pass.prof")
        for hosts in host_sizes:
            started = time.monotonic()
            have = measure.grow_cluster(local, "bench", hosts, have)
            progress(f"cluster has {hosts} hosts ({time.monotonic() - started:.1f} s to register)")
            for count in service_sizes:
                profile_to = profile_path if (hosts, count) == largest else None
                managed = services[:count]
                results.rows.append(
                    measure_row(
                        local, "bench", hosts, managed, quick, args.memory_budget, progress, profile_to=profile_to
                    )
                )
                if (hosts, count) == largest:
                    # The same calls through a bare boto3 client, pass for pass with the daemon's.
                    results.paired = measure.paired(local, "bench", hosts, managed, measure.process_env(local))
                    progress(
                        f"H={hosts} S={count} alternating passes: CPU "
                        + ", ".join(
                            f"{algorithm} {results.paired.median_cpu(algorithm) * 1000:.1f} ms"
                            for algorithm in results.paired.cpu
                        )
                    )
            if hosts == 100:
                # Discovery: SERVICE_REGEX finds every service of the cluster (ListServices pages too).
                results.discovery.append(
                    measure_row(
                        local, "bench", hosts, services, quick, args.memory_budget, progress, service_regex=r"s\d{3}"
                    )
                )
        results.registration.append(
            events.merge(
                background.join(),
                f"{trials} registrations spread over {min(trials, POLLING_DAEMONS)} 10-host clusters with a daemon "
                "of their own, a random wait of 0-30 s before each, run alongside the matrix",
            )
        )
        progress(f"polling latency done, {time.monotonic() - background.started:.0f} s after it began")
        # Event mode on the largest cluster of the matrix.
        results.registration.append(event_latency(local, "bench", have, trials, workdir.name, progress))
        if os.path.exists(profile_path):
            results.profile = measure.profile_components(profile_path)
            results.profile_row = largest
    workdir.cleanup()
    results.load_after = os.getloadavg()
    results.elapsed = progress.elapsed
    progress(f"done in {results.elapsed:.0f} s")
    return results


def run_storms(local: LocalECS, quick: bool, workdir: str, progress: Clock) -> list[storm.Storm]:
    services, hosts = (QUICK_STORM_SERVICES, QUICK_STORM_HOSTS) if quick else (STORM_SERVICES, STORM_HOSTS)
    return storm.storms(local, services, hosts, STORM_RATE, workdir, progress)


def storm_only(args: argparse.Namespace) -> int:
    """Run the storm alone and put its section into --output in place of the old one (or at its end)."""
    progress = Clock()
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir, LocalECS() as local:
        progress(f"local ECS API at {local.endpoint_url}")
        section = "\n".join(report.storm_section(run_storms(local, args.quick, workdir, progress)))
    sys.stdout.write(section)
    text = args.output.read_text(encoding="utf-8") if args.output.exists() else "# Benchmark results\n"
    start = text.find(report.STORM_HEADING)
    if start < 0:
        text = text.rstrip() + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(report.STORM_HEADING))
        text = text[:start] + section + ("\n" + text[end + 1 :] if end >= 0 else "")
    args.output.write_text(text.rstrip() + "\n", encoding="utf-8")
    print(f"wrote the storm section of {args.output}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.storm_only:
        return storm_only(args)
    if args.only == "coverage":
        return coverage.main(["--output", str(args.output)])
    if args.only == "ready":
        return ready.main(["--output", str(args.output), *(["--quick"] if args.quick else [])])
    results = run(args)
    progress = Clock()
    readiness = ready.measure(args.quick, progress)
    markdown = report.render(results) + "\n" + coverage.render(coverage.measure()) + "\n" + ready.render(readiness)
    sys.stdout.write(markdown)
    args.output.write_text(markdown, encoding="utf-8")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
