"""The benchmark's Markdown: the machine, the tables, the targets and the headline."""

from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata

from .measure import MIB, AlgorithmRun, Paired, Row, Soak, Startup

# Targets from the issue.
CPU_TARGET = 0.150  # seconds of CPU per pass at 5,000 hosts and 100 services
RSS_TARGET = 64 * MIB  # after 1,000 passes
RSS_FLAT = 1 * MIB  # growth from pass 100 to the last pass that still counts as flat
STARTUP_TARGET = 1.5  # seconds to the first decision
RUNTIME_TARGET = 600.0  # seconds for the whole benchmark
# The median of 20 uniform phases of a 1 s cycle has a standard deviation of about 0.1 s.
LATENCY_TOLERANCE = 0.25

_ABBREVIATIONS = {
    "ListServices": "LS",
    "ListContainerInstances": "LCI",
    "DescribeServices": "DS",
    "DescribeClusters": "DC",
    "UpdateService": "US",
    "DescribeStacks": "DSt",
}
_ORDER = list(_ABBREVIATIONS)


@dataclass
class Results:
    """Everything one run measured."""

    quick: bool
    rows: list[Row] = field(default_factory=list)
    discovery: list[Row] = field(default_factory=list)
    startup: Startup | None = None
    latency: list[float] = field(default_factory=list)
    latency_hosts: int = 0
    latency_pass: float = math.nan  # median wall time of a pass at the latency world's size
    soak: Soak | None = None
    paired: Paired | None = None
    profile: list[tuple[str, float]] = field(default_factory=list)
    profile_row: tuple[int, int] | None = None
    elapsed: float = 0.0
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)


def machine() -> list[tuple[str, str]]:
    """What the numbers were measured on."""
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    return [
        ("CPU", f"{model}, {os.cpu_count()} cores"),
        ("OS", platform.platform()),
        ("Python", f"{platform.python_version()} ({platform.python_implementation()})"),
        (
            "packages",
            f"boto3 {version('boto3')}, botocore {version('botocore')}, moto {version('moto')}, "
            f"structlog {version('structlog')}, tenacity {version('tenacity')}",
        ),
        ("date", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")),
    ]


def calls_text(calls: Mapping[str, int]) -> str:
    """`11 (LCI 1, DS 10)`."""
    total = sum(calls.values())
    parts = [f"{_ABBREVIATIONS.get(op, op)} {calls[op]}" for op in sorted(calls, key=_sort_key) if calls[op]]
    return f"{total} ({', '.join(parts)})" if parts else "0"


def _sort_key(operation: str) -> int:
    return _ORDER.index(operation) if operation in _ORDER else len(_ORDER)


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return f"{seconds * 1000:.0f}" if seconds >= 0.0995 else f"{seconds * 1000:.1f}"


def _mib(size: int) -> str:
    return f"{size / MIB:.1f}"


def _ratio(numerator: float, denominator: float) -> str:
    if not denominator or math.isnan(numerator) or math.isnan(denominator):
        return "-"
    ratio = numerator / denominator
    return f"{ratio:.1f}×" if ratio >= 0.95 else f"{ratio:.2f}×"


def _memory(run: AlgorithmRun) -> str:
    at_10 = run.rss_at.get(10)
    start = f"{_mib(at_10)} → " if at_10 is not None and run.passes > 10 else ""
    return f"{start}{_mib(run.rss_end)} ({run.passes})"


def _reps(run: AlgorithmRun) -> str:
    return f"{len(run.converged)}+{len(run.changed)}"


def main_table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| hosts | services | calls, converged pass: current / original | fewer | calls, pass changing all: "
        "current / original | wall ms, converged: current / original | CPU ms, converged: current / original "
        "| less CPU | CPU ms, changing all: current / original | RSS MiB at pass 10 → last (passes): current "
        "| same: original | passes timed (converged+changing): current / original |",
        "|---:|---:|---|---:|---|---|---|---:|---|---|---|---|",
    ]
    for row in rows:
        current, original = row.current, row.original
        conv_current, conv_original = current.calls("converged"), original.calls("converged")
        lines.append(
            "| "
            + " | ".join(
                [
                    f"{row.hosts:,}",
                    f"{row.services}" + (" (regex)" if row.discovery else ""),
                    f"**{sum(conv_current.values())}** / {sum(conv_original.values())}",
                    _ratio(sum(conv_original.values()), sum(conv_current.values())),
                    f"{sum(current.calls('changed').values())} / {sum(original.calls('changed').values())}",
                    f"{_ms(current.median('converged', 'wall'))} / {_ms(original.median('converged', 'wall'))}",
                    f"**{_ms(current.median('converged', 'cpu'))}** / {_ms(original.median('converged', 'cpu'))}",
                    _ratio(original.median("converged", "cpu"), current.median("converged", "cpu")),
                    f"{_ms(current.median('changed', 'cpu'))} / {_ms(original.median('changed', 'cpu'))}",
                    _memory(current),
                    _memory(original),
                    f"{_reps(current)} / {_reps(original)}",
                ]
            )
            + " |"
        )
    return lines


def _fewer_note(rows: Sequence[Row]) -> list[str]:
    """Why the original makes fewer calls where it does, naming those sizes."""
    fewer = [
        f"H={row.hosts:,} S={row.services}"
        for row in rows
        if sum(row.original.calls("converged").values()) < sum(row.current.calls("converged").values())
    ]
    if not fewer:
        return []
    return [
        f"The original makes fewer calls at {', '.join(fewer)}: it reads `registeredContainerInstancesCount`",
        "from one DescribeClusters per service, a count that includes DRAINING hosts and hosts whose agent is",
        "disconnected. Counting only usable hosts takes the ListContainerInstances pages, one per 100 hosts,",
        "and that price is paid once per pass however many services there are.",
        "",
    ]


def operations_table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| hosts | services | floor (converged) | current, converged | at floor | current, changing all "
        "| original, converged | original, changing all |",
        "|---:|---:|---|---|---|---|---|---|",
    ]
    for row in rows:
        converged = row.current.calls("converged")
        at_floor = _at_floor(row)
        vary = " (varied)" if row.current.calls_vary("converged") else ""
        lines.append(
            f"| {row.hosts:,} | {row.services}{' (regex)' if row.discovery else ''} | {calls_text(row.floor)} "
            f"| {calls_text(converged)}{vary} | {'yes' if at_floor else '**no**'} "
            f"| {calls_text(row.current.calls('changed'))} | {calls_text(row.original.calls('converged'))} "
            f"| {calls_text(row.original.calls('changed'))} |"
        )
    return lines


def _at_floor(row: Row) -> bool:
    converged = row.current.calls("converged")
    writes = converged.get("UpdateService", 0)
    return writes == 0 and +converged == +row.floor


def _find(rows: Sequence[Row], hosts: int, services: int) -> Row | None:
    for row in rows:
        if row.hosts == hosts and row.services == services and not row.discovery:
            return row
    return None


def headline(results: Results) -> str | None:
    """The sentence for the README, from the (100 hosts, 100 services) row when it was measured."""
    row = _find(results.rows, 100, 100) or (results.rows[-1] if results.rows else None)
    if row is None:
        return None
    current = sum(row.current.calls("converged").values())
    original = sum(row.original.calls("converged").values())
    cpu_current, cpu_original = row.current.median("converged", "cpu"), row.original.median("converged", "cpu")
    memory = ""
    if results.soak is not None:
        original_rss = [r.original.rss_end for r in results.rows]
        memory = (
            f"; the daemon's resident memory stays at {_mib(results.soak.rss_at[results.soak.passes])} MiB after "
            f"{results.soak.passes:,} passes, where the original's reaches {_mib(min(original_rss))}-"
            f"{_mib(max(original_rss))} MiB"
        )
    return (
        f"With {row.hosts:,} hosts and {row.services} managed services, a converged pass makes {current} ECS API "
        f"calls where the original algorithm made {original} ({original / current:.0f}× fewer) and uses "
        f"{_ms(cpu_current)} ms of CPU instead of {_ms(cpu_original)} ms{memory} (`make bench`, bench/results.md)."
    )


def targets(results: Results) -> list[str]:
    lines = ["| target | measured | met |", "|---|---|---|"]
    rows = results.rows + results.discovery
    if rows:
        misses = [row for row in rows if not _at_floor(row)]
        where = ", ".join(f"H={r.hosts} S={r.services}" for r in misses)
        example = _find(results.rows, 100, 100)
        ratio = ""
        if example is not None:
            current = sum(example.current.calls("converged").values())
            original = sum(example.original.calls("converged").values())
            ratio = (
                f"; at H=100, S=100: {current} calls against the original's {original}, {original / current:.1f}× fewer"
            )
        lines.append(
            "| converged pass at the floor: ceil(H/100) LCI + ceil(S/10) DS (+ LS pages with discovery), 0 writes "
            f"| {len(rows) - len(misses)} of {len(rows)} rows at the floor{ratio} "
            f"| {'yes' if not misses else 'no: ' + where} |"
        )
    big = _find(results.rows, 5000, 100)
    if big is not None:
        samples = [sample.cpu for sample in big.current.converged]
        paired = results.paired
        floor = ""
        if paired is not None and (paired.hosts, paired.services) == (5000, 100):
            samples += paired.cpu["current"]
            floor = (
                f"; a bare boto3 client making the same 60 calls, pass for pass alternating with the daemon: "
                f"{_ms(paired.median_cpu('bare'))} ms against the daemon's {_ms(paired.median_cpu('current'))} ms"
            )
        cpu = statistics.median(samples)
        wall = big.current.median("converged", "wall")
        lines.append(
            f"| CPU per converged pass at H=5,000, S=100 under 150 ms | median {_ms(cpu)} ms over {len(samples)} "
            f"passes ({', '.join(_ms(c) for c in samples)}){floor}; wall {_ms(wall)} ms, so the daemon's CPU is "
            f"{cpu / wall * 100:.0f}% of its pass; the original: {_ms(big.original.median('converged', 'cpu'))} ms "
            f"| {'yes' if cpu < CPU_TARGET else '**no**'} |"
        )
    if results.soak is not None:
        soak = results.soak
        last = soak.passes
        growth = soak.rss_at[last] - min(p for n, p in soak.rss_at.items() if n >= min(100, last))
        flat = growth <= RSS_FLAT
        rss = soak.rss_at[last]
        lines.append(
            f"| RSS after 1,000 passes under 64 MiB and flat (`run.py`) | {_mib(rss)} MiB after {last:,} passes; "
            + ", ".join(f"{_mib(v)} at {n:,}" for n, v in sorted(soak.rss_at.items()))
            + f" | {'yes' if rss < RSS_TARGET and flat and last >= 1000 else '**no**'}"
            + ("" if last >= 1000 else f" (only {last} passes: --quick)")
            + " |"
        )
    if rows:
        clients = sorted({row.current.clients for row in rows})
        lines.append(
            f"| one boto3 client for the process's life | current: {'/'.join(map(str, clients))} client(s) in every "
            f"row; the original: one per pass | {'yes' if clients == [1] else '**no**'} |"
        )
    if results.startup is not None and results.startup.seconds:
        median = statistics.median(results.startup.seconds)
        lines.append(
            f"| start-up to the first decision under 1.5 s | median {median:.2f} s of "
            f"{len(results.startup.seconds)} ({', '.join(f'{s:.2f}' for s in results.startup.seconds)}) "
            f"| {'yes' if median < STARTUP_TARGET else '**no**'} |"
        )
    if results.latency:
        median = statistics.median(results.latency)
        expected = 0.5 + results.latency_pass
        lines.append(
            f"| host registration to desiredCount, INTERVAL=1: about INTERVAL/2 + a pass "
            f"({expected * 1000:.0f} ms; within {LATENCY_TOLERANCE * 1000:.0f} ms) | median {median * 1000:.0f} ms "
            f"of {len(results.latency)} | {'yes' if abs(median - expected) <= LATENCY_TOLERANCE else '**no**'} |"
        )
    lines.append(
        f"| `make bench` under 10 minutes | {results.elapsed / 60:.1f} min "
        f"| {'yes' if results.elapsed < RUNTIME_TARGET else '**no**'} |"
    )
    return lines


def render(results: Results) -> str:
    out: list[str] = ["# Benchmark results", ""]
    mode = "`make bench BENCH_ARGS=--quick` (a smaller matrix)" if results.quick else "`make bench`"
    out += [
        f"Written by {mode}; every figure below was measured in the same run. The local ECS API is moto behind",
        "the layer in `localecs/server.py` that enforces real ECS paging (100 container instances a",
        "ListContainerInstances page, 10 services a DescribeServices call) and evaluates the host filter.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in machine()),
        f"| load average | {' '.join(f'{v:.2f}' for v in results.load_before)} before, "
        f"{' '.join(f'{v:.2f}' for v in results.load_after)} after (a shared machine: medians, not single runs) |",
        f"| run time | {results.elapsed:.0f} s |",
        "",
    ]
    sentence = headline(results)
    if sentence:
        out += ["## Headline", "", sentence, ""]
    out += ["## Targets", "", *targets(results), ""]
    if results.rows or results.discovery:
        out += [
            "## Per pass, by cluster size",
            "",
            "*current* is this project (`reconcile.run_pass` with one `ecs.Api` for the process); *original* is the",
            "2017 algorithm as re-implemented in `bench/original.py` (a new boto3 session each pass, one",
            "DescribeServices and one DescribeClusters per service). Both run in `bench/driver.py`, a process of",
            "their own, so CPU and memory are theirs and not the moto server's. Calls are counted from LocalECS's",
            "call log. A *converged* pass finds every service at its target; a pass *changing all* follows",
            "setting every managed service's desiredCount to 0. Times are medians of the timed passes; the first",
            "pass of each process is a warm-up and is not timed. Memory is the driver's resident set after pass",
            "10 and after its last pass (the number in brackets): 100 where the time budget allowed, fewer at",
            "the largest sizes, where one pass takes seconds on the local API. *regex* rows find their services",
            "with SERVICE_REGEX (ListServices) instead of naming them.",
            "",
            *main_table(results.rows + results.discovery),
            "",
            *_fewer_note(results.rows + results.discovery),
            "Calls by operation (LCI ListContainerInstances, DS DescribeServices, LS ListServices,",
            "DC DescribeClusters, US UpdateService); the floor is ceil(H/100) LCI + ceil(S/10) DS, plus the",
            "ListServices pages with discovery, and no write:",
            "",
            *operations_table(results.rows + results.discovery),
            "",
        ]
    if results.paired is not None:
        paired = results.paired
        current, bare = paired.median_cpu("current"), paired.median_cpu("bare")
        out += [
            f"## The daemon against bare boto3 (H={paired.hosts:,}, S={paired.services})",
            "",
            "Converged passes of the daemon and of `bench/bare.py` (the same requests through one plain boto3",
            "client, with no retry wrapper, dataclasses, planning or logs) in two driver processes, one pass",
            "each in turn, so that the machine's drift hits both alike:",
            "",
            "| | calls | CPU ms, median | CPU ms, each pass | wall ms, median |",
            "|---|---|---:|---|---:|",
            *(
                f"| {algorithm} | {calls_text(paired.calls[algorithm])} | {_ms(paired.median_cpu(algorithm))} "
                f"| {', '.join(_ms(c) for c in paired.cpu[algorithm])} "
                f"| {_ms(statistics.median(paired.wall[algorithm]))} |"
                for algorithm in paired.cpu
            ),
            "",
            f"The daemon's own work (observe, plan, act, log) adds {_ms(current - bare)} ms "
            f"({(current / bare - 1) * 100:+.0f}%) to what boto3 itself spends on the same calls.",
            "",
        ]
    if results.profile and results.profile_row:
        hosts, services = results.profile_row
        out += [
            f"## Where a pass's CPU goes (H={hosts:,}, S={services}, cProfile of one converged pass)",
            "",
            "| component | share of CPU |",
            "|---|---:|",
            *(f"| {component} | {share * 100:.1f}% |" for component, share in results.profile),
            "",
        ]
    if results.startup is not None:
        startup = results.startup
        out += [
            "## Start-up",
            "",
            f"`python run.py` from spawn to its first `decision` log line: "
            f"{', '.join(f'{s:.2f}' for s in startup.seconds)} s "
            f"(median {statistics.median(startup.seconds):.2f} s). `python -X importtime run.py --once` spends "
            f"{startup.import_seconds:.2f} s importing; the top-level packages that cost most (cumulative):",
            "",
            "| package | import s |",
            "|---|---:|",
            *(f"| {name} | {seconds:.3f} |" for name, seconds in startup.top_imports),
            "",
        ]
    if results.latency:
        out += [
            "## Host registration to desiredCount",
            "",
            f"`python run.py` with INTERVAL=1 managing one service of a {results.latency_hosts}-host cluster; a",
            "host is registered at a random point of its cycle and the service's desiredCount is polled every",
            f"20 ms. Median {statistics.median(results.latency) * 1000:.0f} ms, min "
            f"{min(results.latency) * 1000:.0f}, max {max(results.latency) * 1000:.0f} over "
            f"{len(results.latency)} registrations (expected: INTERVAL/2 + one pass of "
            f"{results.latency_pass * 1000:.0f} ms).",
            "",
        ]
    if results.soak is not None:
        soak = results.soak
        checkpoints = sorted(soak.rss_at)
        first = next((n for n in checkpoints if n >= 100), checkpoints[0])
        last = checkpoints[-1]
        out += [
            "## Memory over a long run",
            "",
            f"`python run.py` (the real daemon, JSON logs at INFO to /dev/null) with INTERVAL={soak.interval:g} "
            f"managing {soak.services} services of a {soak.hosts}-host cluster; passes counted from the call log, "
            "RSS read by psutil:",
            "",
            "| pass | RSS MiB |",
            "|---:|---:|",
            *(f"| {n:,} | {_mib(soak.rss_at[n])} |" for n in checkpoints),
            "",
        ]
        if last > first:
            out += [
                f"CPU per pass between pass {first:,} and {last:,}: "
                f"{soak.cpu_per_pass(first, last) * 1000:.1f} ms. Exit code after SIGTERM: {soak.exit_code}.",
                "",
            ]
    return "\n".join(out).rstrip() + "\n"
