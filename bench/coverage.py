"""The coverage read's cost: calls and time at 1,000 and 5,000 hosts, and its share of ECS's throttling bucket.

`python -m bench.coverage` (or `make bench BENCH_ARGS="--only coverage"`)
runs only this part and rewrites its section of bench/results.md in place;
`make bench` runs it after the rest. One service with distinctInstance runs a
task on every host of a cluster but one, whose memory is taken (so the read
also looks up the EC2 id of the missing host), on the local API with
scheduling on. The read is `coverage.read`, the daemon's own: ListTasks (100 a
page), DescribeTasks (100 a call), one DescribeContainerInstances for the hosts
named in the gaps. All four are cluster resource reads in ECS's throttling
table: a bucket of 100 with 20 tokens a second, shared with host counting and
every other tool of the account and region.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.report import replace_marked
from ecs_cluster_manager.aws.ecs import Api
from ecs_cluster_manager.config import DEFAULT_RESYNC
from ecs_cluster_manager.engine import coverage
from ecs_cluster_manager.model.coverage import COVERAGE_CALLS_PER_PASS
from ecs_cluster_manager.ops import logs
from localecs import LocalECS

HOSTS = (1000, 5000)
RUNS = 3
BURST, REFILL = 100, 20.0  # ECS's cluster resource read bucket: burst, tokens a second
RESYNC = DEFAULT_RESYNC  # the default resync: every host filter listed, and coverage read, at least this often
HOST_MEMORY = 7482  # what a local host registers: all taken leaves no room for a task
CLUSTER = "coverage"
BEGIN, END = "<!-- coverage-read -->", "<!-- /coverage-read -->"
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results.md"


@dataclass(frozen=True)
class Row:
    hosts: int
    calls: dict[str, int]  # by operation, one read
    seconds: list[float]  # wall time of each timed read
    covered: int
    missing: int

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def measure(hosts_list: Sequence[int] = HOSTS, runs: int = RUNS) -> list[Row]:
    """Time `coverage.read` for one service at each cluster size; calls counted from the local API's log."""
    rows: list[Row] = []
    logs.configure("WARNING", "console", stream=sys.stderr)
    with LocalECS(schedule=True) as local:
        os.environ.update(
            {key: value for key, value in local.env().items() if key.startswith("AWS_") and key != "AWS_PROFILE"}
        )
        api = Api(local.region, endpoint_url=local.endpoint_url)
        for hosts in hosts_list:
            local.reset()
            local.create_cluster(CLUSTER)
            arns = local.add_hosts(CLUSTER, hosts - 1)
            arns += local.add_hosts(CLUSTER, 1, reserved_memory=HOST_MEMORY)
            local.create_service(
                CLUSTER,
                "agent",
                desired_count=hosts,
                placement_constraints=[{"type": "distinctInstance"}],
                deployment_configuration={"minimumHealthyPercent": 50, "maximumPercent": 100},
            )
            local.tasks(CLUSTER, "agent")  # place the tasks now, outside the timed reads
            [service] = api.describe_services(CLUSTER, ["agent"]).services
            eligible = frozenset(arns)
            seconds: list[float] = []
            calls: Counter[str] = Counter()
            found = None
            for _ in range(runs):
                local.clear_calls()
                started = time.perf_counter()
                found = coverage.read(api, CLUSTER, service, eligible)
                seconds.append(time.perf_counter() - started)
                calls = Counter(call.operation for call in local.calls)
            assert found is not None
            rows.append(Row(hosts, dict(calls), seconds, found.covered, len(found.missing)))
            print(f"coverage read at {hosts} hosts: {sum(calls.values())} calls, {min(seconds):.2f} s", file=sys.stderr)
    return rows


def render(rows: Sequence[Row]) -> str:
    """The Markdown section, between markers so `python -m bench.coverage` can replace it in place."""
    lines = [
        BEGIN,
        "## Coverage read (one service)",
        "",
        "`coverage.read` for one service with distinctInstance on every host but one (whose memory is taken), "
        f"on the local API; median of {RUNS} reads. The share is of ECS's cluster resource read bucket "
        f"({BURST} burst, {REFILL:g}/s), which ListTasks, DescribeTasks and DescribeContainerInstances share "
        f"with host counting: a read spends the burst share at once, and at the default resync "
        f"(RESYNC {RESYNC:g} s: the daemon reads coverage on each full listing) "
        "the refill share of the bucket's tokens over that time. Run only this part with "
        '`make bench BENCH_ARGS="--only coverage"`.',
        "",
        "| hosts | ListTasks | DescribeTasks | DescribeContainerInstances | calls | time (s) | of the burst "
        "| of the refill per resync, per service | services per resync at 50% of the refill |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        refill = row.total / (REFILL * RESYNC)
        lines.append(
            f"| {row.hosts:,} | {row.calls.get('ListTasks', 0)} | {row.calls.get('DescribeTasks', 0)} "
            f"| {row.calls.get('DescribeContainerInstances', 0)} | {row.total} "
            f"| {statistics.median(row.seconds):.2f} | {row.total / BURST:.0%} | {refill:.1%} "
            f"| {int(0.5 / refill) if refill else '-'} |"
        )
    lines += [
        "",
        "Calls grow with the tasks (2 x ceil(tasks/100) + 1), not with the passes: the daemon reads coverage "
        "only on an exact count, and spends at most COVERAGE_CALLS_PER_PASS "
        f"({COVERAGE_CALLS_PER_PASS}) calls a pass on it, the services read longest ago first (the first read "
        "of a pass is always made). At 5,000 hosts one read is one service per exact count, and slightly more "
        "than the bucket's burst when nothing else spent it: the retries absorb the odd throttled call. "
        "Watch `ecs_cluster_manager_api_calls_total{operation=\"ListTasks\"}`.",
        END,
        "",
    ]
    return "\n".join(lines)


def replace_section(document: str, section: str) -> str:
    """The document with its coverage section replaced by `section` (appended when it has none)."""
    return replace_marked(document, section, BEGIN, END)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.coverage", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the results file whose section to update")
    args = parser.parse_args(argv)
    section = render(measure())
    sys.stdout.write(section)
    existing = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
    args.output.write_text(replace_section(existing, section), encoding="utf-8")
    print(f"updated the coverage section of {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
