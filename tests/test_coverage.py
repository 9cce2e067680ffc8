"""coverage.compute puts each kind of host and task in its field; GapWatch logs one warning per gap."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from ecs_cluster_manager.model import coverage
from ecs_cluster_manager.model.coverage import Coverage, CoveredHost
from ecs_cluster_manager.model.models import Task
from ecs_cluster_manager.observe.gaps import GapWatch

NEW = "arn:aws:ecs:us-east-1:123456789012:task-definition/agent:2"
OLD = "arn:aws:ecs:us-east-1:123456789012:task-definition/agent:1"
FAILURE = (
    "service agent was unable to place a task because no container instance met all of its requirements. "
    "The closest matching container-instance h3 has insufficient memory available."
)


def task(host: str | None, status: str = "RUNNING", definition: str = NEW, name: str = "") -> Task:
    return Task(
        arn=f"task/{name or host}-{status}-{definition[-1]}",
        container_instance_arn=host,
        last_status=status,
        task_definition_arn=definition,
    )


def hosts(*arns: str) -> tuple[CoveredHost, ...]:
    return tuple(CoveredHost(arn) for arn in arns)


@pytest.mark.parametrize(
    ("eligible", "tasks", "ineligible", "tasks_per_host", "expected"),
    [
        pytest.param(
            ["h1", "h2"], [task("h1"), task("h2")], [], 1, Coverage("agent", 2, 2), id="every-host-covered"
        ),
        pytest.param(
            ["h1", "h2", "h3"],
            [task("h1"), task("h2")],
            [],
            1,
            Coverage("agent", 3, 2, missing=hosts("h3"), reason=FAILURE),
            id="one-missing-with-reason",
        ),
        pytest.param(
            ["h1", "h2"],
            [task("h1"), task("h2", "PENDING")],
            [],
            1,
            Coverage("agent", 2, 1, pending=hosts("h2")),
            id="starting-task-is-pending",
        ),
        pytest.param(
            ["h1", "h2"],
            [task("h1"), task("h1", name="second"), task("h2")],
            [],
            1,
            Coverage("agent", 2, 2, extra=hosts("h1")),
            id="two-on-one-host-is-extra",
        ),
        pytest.param(
            ["h1", "h2"],
            [task("h1"), task("h1", name="second"), task("h2")],
            [],
            2,
            Coverage("agent", 2, 2),
            id="two-per-host-wanted",
        ),
        pytest.param(
            ["h1"],
            [task("h1"), task("drained")],
            ["drained"],
            1,
            Coverage("agent", 1, 1, misplaced=hosts("drained")),
            id="task-on-ineligible-host-is-misplaced",
        ),
        pytest.param(
            ["h1"], [task("h1"), task("unknown")], [], 1, Coverage("agent", 1, 1), id="host-not-seen-yet-is-ignored"
        ),
        pytest.param(
            ["h1", "h2"],
            [task("h1", definition=OLD), task("h2")],
            [],
            1,
            Coverage("agent", 2, 2, outdated=hosts("h1")),
            id="old-task-definition-is-outdated",
        ),
        pytest.param(
            ["h1", "h2"],
            [task("h1"), task("h2", "STOPPING"), task(None)],
            [],
            1,
            Coverage("agent", 2, 1, missing=hosts("h2"), reason=FAILURE),
            id="stopping-and-hostless-tasks-do-not-count",
        ),
        pytest.param([], [], [], 1, Coverage("agent", 0, 0), id="no-eligible-host"),
    ],
)
def test_compute(
    eligible: list[str], tasks: list[Task], ineligible: list[str], tasks_per_host: int, expected: Coverage
) -> None:
    """Each kind of host and task lands in the field the issue names, and the reason only comes with a missing host."""
    result = coverage.compute(
        "agent",
        eligible,
        tasks,
        primary_task_definition=NEW,
        placement_failure=FAILURE,
        ineligible=ineligible,
        tasks_per_host=tasks_per_host,
    )
    assert result == expected


def test_compute_without_primary_knows_no_outdated_task() -> None:
    """With no PRIMARY task definition known, no task is called outdated."""
    result = coverage.compute("agent", ["h1"], [task("h1", definition=OLD)])
    assert result.outdated == ()


def test_json_names_the_fields_and_hosts() -> None:
    """as_json has the issue's field names, hosts as {containerInstanceArn, ec2InstanceId}."""
    result = coverage.compute("agent", ["h1", "h2"], [task("h1")], ec2_ids={"h2": "i-2"}, read_at=5.0)
    assert result.as_json() == {
        "eligible": 2,
        "wanted": 2,
        "covered": 1,
        "pending": [],
        "missing": [{"containerInstanceArn": "h2", "ec2InstanceId": "i-2"}],
        "extra": [],
        "misplaced": [],
        "outdated": [],
        "reason": None,
        "readAt": 5.0,
    }


SIX = [f"h{n}" for n in range(1, 7)]


@pytest.mark.parametrize(
    ("running", "target", "tasks_per_host", "missing"),
    [
        pytest.param(["h1", "h2"], 2, 1, (), id="max-2-of-6-covered"),
        pytest.param(["h1"], 2, 1, ("h2",), id="max-2-of-6-one-short"),
        pytest.param([], 0, 1, (), id="max-0"),
        pytest.param(["h1", "h2"], 6, 1, ("h3", "h4", "h5", "h6"), id="no-cap"),
        pytest.param(["h1"], 10, 1, ("h2", "h3", "h4", "h5", "h6"), id="min-above-the-hosts"),
        pytest.param(["h1", "h1", "h2"], 3, 2, (), id="two-per-host-max-3"),
    ],
)
def test_hosts_beyond_the_target_are_not_missing(
    running: list[str], target: int, tasks_per_host: int, missing: tuple[str, ...]
) -> None:
    """With ecs-cluster-manager:max 2 on 6 hosts and 2 tasks running, no host is missing; only as many hosts as the
    target still asks for are."""
    tasks = [task(host, name=f"t{n}") for n, host in enumerate(running)]
    result = coverage.compute("agent", SIX, tasks, target=target, tasks_per_host=tasks_per_host)
    assert tuple(h.container_instance_arn for h in result.missing) == missing
    assert result.eligible == 6
    assert result.as_json()["wanted"] == min(6, -(-target // tasks_per_host))


def test_a_capped_service_opens_no_gap() -> None:
    """No coverage_gap for the 4 hosts a max=2 service on 6 hosts does not want, however long."""
    watch = GapWatch()
    found = coverage.compute("agent", SIX, [task("h1"), task("h2")], target=2)
    with capture_logs() as logs:
        for now in (0.0, 200.0, 400.0):
            assert watch.observe("prod", found, SIX, now, grace=120) == []
    assert not [e for e in logs if e["event"] == "coverage_gap"] and not watch.gaps
    assert found.complete


def test_gap_is_reported_once_after_the_grace_and_restored_once() -> None:
    """coverage_gap once per host after the grace, whatever the passes; coverage_restored once when covered again."""
    watch = GapWatch()
    gap = Coverage("agent", 2, 1, missing=hosts("h2"), reason=FAILURE)
    whole = Coverage("agent", 2, 2)
    with capture_logs() as logs:
        assert watch.observe("c", gap, ["h1", "h2"], now=0.0, grace=10) == []
        assert watch.observe("c", gap, ["h1", "h2"], now=5.0, grace=10) == []
        assert watch.observe("c", gap, ["h1", "h2"], now=10.0, grace=10) == ["h2"]
        assert watch.observe("c", gap, ["h1", "h2"], now=20.0, grace=10) == []
        watch.observe("c", whole, ["h1", "h2"], now=30.0, grace=10)
        watch.observe("c", whole, ["h1", "h2"], now=40.0, grace=10)
    events = [(e["event"], e["log_level"]) for e in logs]
    assert events == [("coverage_gap", "warning"), ("coverage_restored", "info")]
    assert logs[0]["reason"] == FAILURE and logs[0]["containerInstanceArn"] == "h2"


def test_gap_of_a_host_that_leaves_ends_without_restored() -> None:
    """A host that stops being eligible (drained) ends its gap without a coverage_restored line."""
    watch = GapWatch()
    with capture_logs() as logs:
        watch.observe("c", Coverage("agent", 2, 1, missing=hosts("h2")), ["h1", "h2"], now=0.0, grace=0)
        watch.observe("c", Coverage("agent", 1, 1), ["h1"], now=1.0, grace=0)
    assert [e["event"] for e in logs] == ["coverage_gap"]
    assert watch.gaps == {}


def test_short_gap_is_never_reported() -> None:
    """A host that gets its task within the grace (ECS placing it) logs nothing."""
    watch = GapWatch()
    with capture_logs() as logs:
        watch.observe("c", Coverage("agent", 1, 0, missing=hosts("h1")), ["h1"], now=0.0, grace=120)
        watch.observe("c", Coverage("agent", 1, 0, pending=hosts("h1")), ["h1"], now=30.0, grace=120)
        watch.observe("c", Coverage("agent", 1, 1), ["h1"], now=60.0, grace=120)
    assert logs == []


def test_left_hosts_stay_known_while_a_task_runs_there() -> None:
    """A host that drops out of the eligible set is kept as ineligible while a task is still on it."""
    watch = GapWatch()
    watch.saw_eligible(("",), frozenset({"h1", "h2"}))
    watch.saw_eligible(("",), frozenset({"h1"}))
    assert watch.left == {"h2"}
    watch.keep_left({"h2"}, {"h1"})
    assert watch.left == {"h2"}
    watch.keep_left(set(), {"h1"})
    assert watch.left == set()


@pytest.mark.parametrize(
    ("eligible", "tasks_per_host", "calls"),
    [(0, 1, 3), (1, 1, 3), (100, 1, 3), (101, 1, 5), (1000, 1, 21), (5000, 1, 101), (60, 2, 5)],
)
def test_read_cost_counts_pages_and_the_lookup(eligible: int, tasks_per_host: int, calls: int) -> None:
    """A read is ListTasks pages plus DescribeTasks calls (100 tasks each) plus one DescribeContainerInstances."""
    assert coverage.read_cost(eligible, tasks_per_host) == calls


def test_reads_are_spread_over_passes_within_the_budget() -> None:
    """Each pass reads the services read longest ago within the budget; every service gets its turn."""
    watch = GapWatch()
    costs = {f"s{i}": 21 for i in range(5)}  # 1,000 hosts each
    seen: list[list[str]] = []
    for clock in range(3):
        due = watch.due(costs, budget=50)
        seen.append(due)
        for name in due:
            watch.last_read[name] = float(clock)
    assert seen == [["s0", "s1"], ["s2", "s3"], ["s4", "s0"]]
    assert watch.due({"huge": 101}, budget=50) == ["huge"]  # the first read of a pass is always made
