"""The process whose passes are measured: `python -m bench.driver ALGORITHM --cluster C ...`.

It runs in its own process, apart from the moto server, so its CPU time and
resident memory are the daemon's alone. It talks to the endpoint in its
environment (AWS_ENDPOINT_URL, from ``LocalECS.env()``) and takes commands on
stdin, one a line, answering each with one JSON line on stdout:

- ``pass``: run one pass; answer ``{"wall": s, "cpu": s, "rss": bytes, "clients": n, ...}``
  (``cpu`` is the process's CPU time over the pass, ``clients`` the botocore
  clients created so far in the process, ``counting`` how each host filter was
  counted in the pass: ``"exact"`` or ``"cheap"``, from the PassReport);
- ``profile PATH``: the same, under cProfile, whose statistics go to PATH;
- ``quit``: exit.

ALGORITHM is ``current`` (this project: one ``ecs.Api`` for the process,
``reconcile.run_pass`` with the loop's memory, ``Memory.for_config``, logs as
JSON lines at INFO to the null device), ``exact`` (the same, but with a
``Counting`` whose resync is 0: every host filter listed exactly, every page,
on every pass, as --once and ``check`` count), ``original`` (``bench.original``:
a new boto3 session and client each pass) or ``bare`` (``bench.bare``: the
calls of a cheap converged pass through one plain boto3 client, and nothing
else).

The passes run back to back, but the memory's clock is the daemon's schedule:
it advances INTERVAL after each pass, as the loop starts a pass every INTERVAL,
so RESYNC falls due on the pass it would fall due on in the daemon (see
``bench.measure.EXACT_EVERY``) and a lost agent's hold lasts as many passes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """This process's resident set size, read from /proc (psutil is not imported: it would add to it)."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * _PAGE_SIZE


def _count_clients() -> Callable[[], int]:
    """Count every botocore client the process creates from now on."""
    import botocore.session

    created = 0
    create_client = botocore.session.Session.create_client

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal created
        created += 1
        return create_client(self, *args, **kwargs)

    botocore.session.Session.create_client = counting
    return lambda: created


class PassClock:
    """The memory's clock: the daemon's schedule of passes, not the wall clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _current(args: argparse.Namespace, sink: Any, *, exact: bool = False) -> Callable[[], dict[str, Any]]:
    from ecs_cluster_manager import config as settings
    from ecs_cluster_manager.aws.ecs import Api
    from ecs_cluster_manager.engine.passes import run_pass
    from ecs_cluster_manager.model import plan
    from ecs_cluster_manager.observe.memory import Memory
    from ecs_cluster_manager.ops import logs

    argv = ["--cluster", args.cluster, "--log-format", "json", "--log-level", "INFO"]
    if args.services:
        argv += ["--services", args.services]
    if args.service_regex:
        argv += ["--service-regex", args.service_regex]
    config = settings.load(argv)
    logs.configure(config.log_level, config.log_format, stream=sink)
    api = Api(config.region, config.profile)
    schedule = PassClock()
    memory = Memory.for_config(config, clock=schedule)
    if exact:
        memory = Memory(hold=memory.store.hold, resync=0.0, interval=config.interval, clock=schedule)

    def one_pass() -> dict[str, Any]:
        report = run_pass(api, config, memory)
        schedule.advance(config.interval)
        return {
            "ok": report.ok,
            "updated": report.count(plan.UPDATE),
            "deferred": report.deferred,
            "decisions": len(report.decisions),
            "counting": dict(report.counting),
        }

    return one_pass


def _exact(args: argparse.Namespace, sink: Any) -> Callable[[], dict[str, Any]]:
    return _current(args, sink, exact=True)


def _original(args: argparse.Namespace, sink: Any) -> Callable[[], dict[str, Any]]:
    from bench import original

    services = [name for name in (args.services or "").split(",") if name]

    def one_pass() -> dict[str, Any]:
        updated = original.run_pass(args.cluster, services, args.service_regex, sink)
        return {"ok": True, "updated": updated}

    return one_pass


def _bare(args: argparse.Namespace, sink: Any) -> Callable[[], dict[str, Any]]:
    from bench import bare

    services = [name for name in (args.services or "").split(",") if name]
    ecs = bare.client()

    def one_pass() -> dict[str, Any]:
        bare.run_pass(ecs, args.cluster, services)
        return {"ok": True, "updated": 0}

    return one_pass


ALGORITHMS = {"current": _current, "exact": _exact, "original": _original, "bare": _bare}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.driver", description=__doc__.splitlines()[0])
    parser.add_argument("algorithm", choices=sorted(ALGORITHMS))
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--services", default="", help="service names, comma-separated")
    parser.add_argument("--service-regex", default=None)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    clients = _count_clients()
    sink = open(os.devnull, "w")  # the log and print sink, open for the life of the process
    one_pass = ALGORITHMS[args.algorithm](args, sink)
    print(json.dumps({"ready": True, "setup": time.perf_counter() - started, "rss": resident_bytes()}), flush=True)

    while True:
        command = sys.stdin.readline().strip()
        if command in ("", "quit"):  # end of input, or told to stop
            break
        profiler = None
        if command.startswith("profile "):
            import cProfile

            profiler = cProfile.Profile(time.process_time)  # CPU time, not waiting on the server
            profiler.enable()
        elif command != "pass":
            print(json.dumps({"error": f"unknown command {command!r}"}), flush=True)
            continue
        wall, cpu = time.perf_counter(), time.process_time()
        outcome = one_pass()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(command.split(" ", 1)[1])
        print(
            json.dumps({"wall": wall, "cpu": cpu, "rss": resident_bytes(), "clients": clients(), **outcome}),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
