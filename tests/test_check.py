"""`run.py check`: the findings for each kind of service, and the command end to end against the local ECS API."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ecs_cluster_manager import check
from ecs_cluster_manager.engine import audit
from ecs_cluster_manager.model import sizing
from ecs_cluster_manager.model.models import PlacementConstraint, Service
from localecs import Fault, LocalECS, fault_on

ROOT = Path(__file__).resolve().parent.parent
RUN_PY = str(ROOT / "run.py")
CLUSTER = "audit"
DISTINCT = (PlacementConstraint("distinctInstance"),)


def service(**overrides: object) -> Service:
    """A service that passes every rule: REPLICA on EC2, distinctInstance, minimumHealthyPercent 50, 3 tasks."""
    fields: dict[str, object] = {
        "arn": f"arn:aws:ecs:us-east-1:123456789012:service/{CLUSTER}/agent",
        "name": "agent",
        "cluster_arn": f"arn:aws:ecs:us-east-1:123456789012:cluster/{CLUSTER}",
        "status": "ACTIVE",
        "desired_count": 3,
        "launch_type": "EC2",
        "placement_constraints": DISTINCT,
        "minimum_healthy_percent": 50,
        "maximum_percent": 200,
    }
    fields.update(overrides)
    return Service(**fields)  # type: ignore[arg-type]


SEVERITY = {
    "ok": audit.INFO,
    "inactive": audit.ERROR,
    "daemon-strategy": audit.ERROR,
    "no-container-instances": audit.ERROR,
    "bad-sizing-tag": audit.ERROR,
    "no-distinct-instance": audit.ERROR,
    "tasks-per-host-conflict": audit.ERROR,
    "deployment-deadlock": audit.ERROR,
    "cloudformation": audit.WARNING,
    "no-hosts": audit.WARNING,
}


@pytest.mark.parametrize(
    ("overrides", "hosts", "codes"),
    [
        pytest.param({}, 3, ["ok"], id="clean"),
        pytest.param({}, None, ["ok"], id="clean-without-host-count"),
        pytest.param(
            {"capacity_providers": ("asg-hosts",), "launch_type": None}, 3, ["ok"], id="asg-capacity-provider",
        ),
        pytest.param({"status": "INACTIVE"}, None, ["inactive"], id="inactive"),
        pytest.param({"status": "DRAINING"}, None, ["inactive"], id="being-deleted"),
        pytest.param({"scheduling_strategy": "DAEMON"}, None, ["daemon-strategy"], id="daemon"),
        pytest.param({"launch_type": "FARGATE"}, None, ["no-container-instances"], id="fargate"),
        pytest.param(
            {"launch_type": None, "capacity_providers": ("FARGATE_SPOT",)}, None, ["no-container-instances"],
            id="fargate-spot-capacity-provider",
        ),
        pytest.param(
            {"launch_type": None, "capacity_providers": ("asg-hosts", "FARGATE")}, None, ["no-container-instances"],
            id="mixed-capacity-providers",
        ),
        pytest.param({"placement_constraints": ()}, 3, ["no-distinct-instance"], id="stacking"),
        pytest.param(
            {"placement_constraints": (), "tags": {sizing.TASKS_PER_HOST_TAG: "2"}}, 3, ["ok"], id="two-per-host",
        ),
        pytest.param(
            {"tags": {sizing.TASKS_PER_HOST_TAG: "2"}}, 3, ["tasks-per-host-conflict"], id="two-per-host-distinct",
        ),
        pytest.param({"tags": {sizing.TASKS_PER_HOST_TAG: "two"}}, 3, ["bad-sizing-tag"], id="tag-not-a-number"),
        pytest.param({"tags": {sizing.MIN_TAG: "5", sizing.MAX_TAG: "2"}}, 3, ["bad-sizing-tag"], id="min-above-max"),
        pytest.param({"minimum_healthy_percent": 100}, 3, ["deployment-deadlock"], id="min-healthy-100"),
        pytest.param({"minimum_healthy_percent": None}, 3, ["deployment-deadlock"], id="min-healthy-default"),
        pytest.param({"minimum_healthy_percent": 90}, 5, ["deployment-deadlock"], id="min-healthy-90-rounds-up"),
        pytest.param({"minimum_healthy_percent": 90}, 20, ["ok"], id="min-healthy-90-many-hosts"),
        pytest.param({"minimum_healthy_percent": 50}, 1, ["deployment-deadlock"], id="one-host-needs-0"),
        pytest.param({"minimum_healthy_percent": 0}, 1, ["ok"], id="one-host-with-0"),
        pytest.param(
            {"minimum_healthy_percent": 100, "deployment_controller": "CODE_DEPLOY"}, 3, ["ok"], id="blue-green",
        ),
        pytest.param(
            {"tags": {sizing.STACK_NAME_TAG: "web-stack"}}, 3, ["cloudformation"], id="cloudformation",
        ),
        pytest.param(
            {"tags": {sizing.STACK_NAME_TAG: "web-stack", audit.DESIRED_COUNT_OMITTED_TAG: "omitted"}},
            3,
            ["ok"],
            id="cloudformation-template-omits-desired-count",
        ),
        pytest.param(
            {"tags": {sizing.STACK_NAME_TAG: "web-stack", audit.DESIRED_COUNT_OMITTED_TAG: "no"}},
            3,
            ["cloudformation"],
            id="cloudformation-other-tag-value",
        ),
        pytest.param({"minimum_healthy_percent": 0, "maximum_percent": 100}, 10, ["ok"], id="zero-many-hosts"),
        pytest.param({}, 0, ["no-hosts"], id="no-hosts"),
        pytest.param(
            {"placement_constraints": (), "minimum_healthy_percent": 100, "tags": {sizing.STACK_NAME_TAG: "s"}},
            3,
            ["no-distinct-instance", "cloudformation"],
            id="several-problems",
        ),
    ],
)
def test_findings_for(overrides: dict[str, object], hosts: int | None, codes: list[str]) -> None:
    """Each kind of service gets exactly the expected findings, each with its documented severity."""
    findings = audit.findings_for(service(**overrides), hosts)
    assert [f.code for f in findings] == codes
    assert [f.severity for f in findings] == [SEVERITY[code] for code in codes]
    assert all(f.service == "agent" and f.message for f in findings)


def test_deadlock_advice_names_a_value_below_100() -> None:
    """The deadlock finding tells the reader to lower minimumHealthyPercent below 100 and says 100 is the default."""
    (finding,) = audit.findings_for(service(minimum_healthy_percent=None), 3)
    assert "minimumHealthyPercent 100 (the default)" in finding.message
    assert "below 100" in finding.message and "50" in finding.message


def test_deadlock_advice_recommends_0_for_any_host_count() -> None:
    """Both deadlock messages name 0 as the minimumHealthyPercent that works whatever the number of hosts."""
    for percent, hosts in ((100, 3), (50, 1)):
        (finding,) = audit.findings_for(service(minimum_healthy_percent=percent), hosts)
        assert finding.code == "deployment-deadlock"
        assert re.search(r"\b0 (\(with maximumPercent 100\) )?works for any number of hosts", finding.message)


def test_cloudformation_warning_says_what_to_verify() -> None:
    """Unable to read the template, the warning names the stack and resource, how to verify, and the tag to set."""
    tags = {sizing.STACK_NAME_TAG: "web-stack", audit.LOGICAL_ID_TAG: "WebService"}
    (finding,) = audit.findings_for(service(tags=tags), 3)
    assert finding.code == "cloudformation" and finding.severity == audit.WARNING
    assert "cannot tell" in finding.message
    assert "resource WebService of stack web-stack has no DesiredCount" in finding.message
    assert "aws cloudformation get-template --stack-name web-stack" in finding.message
    assert f"{audit.DESIRED_COUNT_OMITTED_TAG}=omitted" in finding.message


def test_ok_line_says_what_the_daemon_would_do() -> None:
    """The ok line shows the current desiredCount, the eligible hosts and the target the daemon would set."""
    (finding,) = audit.findings_for(service(desired_count=1), 4)
    assert finding.message == "desiredCount 1, 4 eligible host(s): the daemon would set 4"
    (finding,) = audit.findings_for(service(desired_count=4), 4)
    assert finding.message.endswith("converged")


def test_table_is_aligned_and_summarised() -> None:
    """The table puts each column at the same offset on every line and ends with the verdict and counts."""
    findings = [
        audit.Finding(None, audit.WARNING, "no-services", "nothing matched"),
        audit.Finding("a-much-longer-service-name", audit.ERROR, "deployment-deadlock", "lower it"),
        audit.Finding("b", audit.INFO, "ok", "fine"),
    ]
    lines = check.as_table(CLUSTER, findings).splitlines()
    header, rows = lines[0], lines[1:4]
    for title in ("SEVERITY", "CODE", "MESSAGE"):
        column = header.index(title)
        assert all(row[column - 2 : column] == "  " and row[column] != " " for row in rows), title
    assert lines[-1] == f"FAILED: cluster {CLUSTER}, 2 service(s), 1 error(s), 1 warning(s)"


def test_json_document_shape() -> None:
    """--json prints the cluster, ok (false when any finding is an error), every finding's four fields, and coverage."""
    findings = [audit.Finding("a", audit.WARNING, "cloudformation", "omit DesiredCount")]
    document = json.loads(check.as_json(CLUSTER, findings))
    assert document == {
        "cluster": CLUSTER,
        "ok": True,
        "findings": [{"service": "a", "severity": "warning", "code": "cloudformation", "message": "omit DesiredCount"}],
        "coverage": {},
    }
    findings.append(audit.Finding(None, audit.ERROR, "cluster-not-found", "no such cluster"))
    assert json.loads(check.as_json(CLUSTER, findings))["ok"] is False


# -- end to end: `python run.py check` against the local ECS API ----------------------------------


@pytest.fixture
def audited(ecs: LocalECS) -> LocalECS:
    """A cluster with 3 hosts, a clean service and one whose rolling deployment would deadlock, each task placed."""
    ecs.scheduler.enabled = True
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, 3)
    distinct = [{"type": "distinctInstance"}]
    ecs.create_service(
        CLUSTER, "clean", desired_count=3, placement_constraints=distinct,
        deployment_configuration={"minimumHealthyPercent": 50, "maximumPercent": 200},
    )
    ecs.create_service(
        CLUSTER, "deadlocked", desired_count=3, placement_constraints=distinct,
        deployment_configuration={"minimumHealthyPercent": 100, "maximumPercent": 200},
    )
    ecs.clear_calls()
    return ecs


def run_check(local: LocalECS, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """`python run.py check ARGS` with only the local API's environment and the given settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "ECS_"))}
    for key in ("CLUSTER", "SERVICES", "SERVICE_REGEX", "MANAGED_TAG", "DRY_RUN", "LOG_FORMAT", "LOG_LEVEL"):
        env.pop(key, None)
    env.update(local.env())
    env.update(settings)
    return subprocess.run(
        [sys.executable, RUN_PY, "check", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_clean_service_passes(audited: LocalECS) -> None:
    """A service with distinctInstance and minimumHealthyPercent 50 gets one ok line and exit 0."""
    result = run_check(audited, CLUSTER=CLUSTER, SERVICES="clean")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[0] == ["SERVICE", "SEVERITY", "CODE", "MESSAGE"]
    assert rows[1][:3] == ["clean", "info", "ok"]
    assert result.stdout.splitlines()[-1].startswith("OK: cluster audit, 1 service(s), 0 error(s)")


def test_deadlock_prone_service_fails_the_check(audited: LocalECS) -> None:
    """A distinctInstance service with minimumHealthyPercent 100 is reported as an error and the exit code is 1."""
    result = run_check(audited, CLUSTER=CLUSTER, SERVICES="deadlocked clean")
    assert result.returncode == 1, result.stdout + result.stderr
    rows = [line.split(maxsplit=3) for line in result.stdout.splitlines()[1:5]]
    assert [row[:3] for row in rows] == [
        ["deadlocked", "error", "deployment-deadlock"],
        ["deadlocked", "info", "coverage"],
        ["clean", "info", "ok"],
        ["clean", "info", "coverage"],
    ]
    assert "below 100" in rows[0][3]


def test_json_output_and_no_change(audited: LocalECS) -> None:
    """`check --json` prints one parseable document, and the check changes no service."""
    result = run_check(audited, "--json", CLUSTER=CLUSTER, SERVICES="deadlocked,clean,gone")
    assert result.returncode == 1, result.stderr
    document = json.loads(result.stdout)
    assert document["cluster"] == CLUSTER and document["ok"] is False
    codes = {(f["service"], f["severity"], f["code"]) for f in document["findings"]}
    assert codes == {
        ("gone", "error", "not-found"),
        ("deadlocked", "error", "deployment-deadlock"),
        ("deadlocked", "info", "coverage"),
        ("clean", "info", "ok"),
        ("clean", "info", "coverage"),
    }
    assert document["coverage"]["clean"]["covered"] == document["coverage"]["clean"]["eligible"] == 3
    assert audited.count("UpdateService") == 0
    assert [audited.desired_count(CLUSTER, name) for name in ("clean", "deadlocked")] == [3, 3]


def test_unknown_cluster_is_an_error(audited: LocalECS) -> None:
    """A cluster that does not exist gives a cluster-not-found error finding and exit 1, not a traceback."""
    result = run_check(audited, "--json", CLUSTER="no-such-cluster", SERVICES="clean")
    assert result.returncode == 1, result.stderr
    document = json.loads(result.stdout)
    assert [(f["service"], f["code"]) for f in document["findings"]] == [(None, "cluster-not-found")]


def test_discovery_finds_the_daemons_services(audited: LocalECS) -> None:
    """With SERVICE_REGEX the check lists exactly the services the daemon would manage."""
    result = run_check(audited, "--json", CLUSTER=CLUSTER, SERVICE_REGEX="clean|dead.*")
    assert {f["service"] for f in json.loads(result.stdout)["findings"]} == {"clean", "deadlocked"}


@pytest.mark.parametrize(
    ("selection", "named"),
    [
        ({"SERVICE_REGEX": "nothing-.*"}, "SERVICE_REGEX='nothing-.*'"),
        ({"MANAGED_TAG": "ecs-cluster-manager:manged=true"}, "MANAGED_TAG='ecs-cluster-manager:manged=true'"),
    ],
    ids=["regex", "tag-typo"],
)
def test_a_selection_that_matches_nothing_fails_the_check(
    audited: LocalECS, selection: dict[str, str], named: str
) -> None:
    """A selection that finds no service is an error naming the selection and the cluster (exit 1), as `--once`
    exits 1 for it: a typo in MANAGED_TAG must not pass the audit."""
    result = run_check(audited, "--json", CLUSTER=CLUSTER, **selection)
    assert result.returncode == 1, result.stdout + result.stderr
    [finding] = json.loads(result.stdout)["findings"]
    assert (finding["code"], finding["severity"]) == ("no-services", "error")
    assert named in finding["message"] and CLUSTER in finding["message"]


def test_make_check_json_pipes_into_json_tool(audited: LocalECS) -> None:
    """`make check ARGS=--json | python3 -m json.tool` works: make prints nothing but the JSON document."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "ECS_", "MAKE"))}
    env.update(audited.env())
    env.update(CLUSTER=CLUSTER, SERVICES="clean,deadlocked")
    venv_dir = Path(sys.executable).parent.parent
    pipeline = f"make --no-print-directory check ARGS=--json VENV={venv_dir} | {sys.executable} -m json.tool"
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", pipeline],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # make exits 2 because check found an error (exit 1); json.tool must have parsed the whole output.
    assert "Expecting value" not in result.stderr and "Extra data" not in result.stderr, result.stderr
    document = json.loads(result.stdout)
    assert document["cluster"] == CLUSTER
    assert {f["service"] for f in document["findings"]} == {"clean", "deadlocked"}


def test_output_cut_short_by_its_reader_is_no_traceback(audited: LocalECS) -> None:
    """`check --json | head -3`: a reader that goes away early gets no BrokenPipeError traceback on stderr, and
    the exit status is still the verdict."""
    env = {**audited.env(), "CLUSTER": CLUSTER, "SERVICES": "clean,deadlocked"}
    process = subprocess.Popen(
        [sys.executable, RUN_PY, "check", "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # as `head` does once it has its lines, here before anything is written
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 1
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


def test_check_names_the_permission_counting_lacks_while_an_agent_is_lost(audited: LocalECS) -> None:
    """With an agent lost, counting describes that host: when DescribeContainerInstances is denied, check fails
    with an access-denied line naming ecs:DescribeContainerInstances."""
    lost = audited.hosts(CLUSTER)[0]["containerInstanceArn"]
    audited.set_agent_connected(CLUSTER, lost, False)
    audited.fault_hook = fault_on(
        "DescribeContainerInstances",
        Fault.error(400, "AccessDeniedException", "User is not authorized to perform: ecs:DescribeContainerInstances"),
    )
    result = run_check(audited, "--json", CLUSTER=CLUSTER, SERVICES="clean")
    assert result.returncode == 1, result.stdout + result.stderr
    [denied] = [f for f in json.loads(result.stdout)["findings"] if f["code"] == "access-denied"]
    assert denied["severity"] == "error" and denied["service"] is None
    assert "could not count hosts" in denied["message"]
    assert "grant ecs:DescribeContainerInstances" in denied["message"], denied
