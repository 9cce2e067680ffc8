"""Least privilege, checked: every AWS operation the daemon made in this test run is allowed by deploy/iam-policy.json.

tests/conftest.py records, for the whole session, each (service, operation) the
code under test sent to the local ECS API (told apart from the tests' own
clients by the User-Agent suffix `ecs-cluster-manager`). This module runs after
every other test (marker `after_all`), first runs its own `python run.py --once`
pass that uses every feature needing a permission, and a `python run.py` loop
that reads the events queue (EVENTS_QUEUE_URL), then compares the record with
the policy. A `--once` pass made while an agent is lost (counting describes that
host) must be allowed by the statements docs/iam.md says are always needed,
since users are told they may drop the others. `missing_actions` is the comparison, unit-tested on its own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from daemon_helpers import Daemon, decisions, run_once
from localecs import ApiCall, LocalECS

if TYPE_CHECKING:
    from conftest import OperationRecorder

pytestmark = pytest.mark.after_all

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "deploy" / "iam-policy.json"
TAG_POLICY = ROOT / "deploy" / "iam-policy-managed-tag.json"

# The request's SigV4 signing name -> the IAM service prefix of its actions (the same for every service used here).
IAM_PREFIX = {"ecs": "ecs", "cloudformation": "cloudformation", "sqs": "sqs"}
# An operation allowed by an IAM action of another name: SQS's batch calls need the single call's action.
IAM_ACTION_NAMES = {("sqs", "DeleteMessageBatch"): "DeleteMessage"}

CLUSTER = "prod"
ROOM_CLUSTER = "prod-room"  # where a full host gets room made for a daemon's task
# More than one page of hosts, so the count also takes its cheap reading (DescribeClusters, the DRAINING listing).
HOSTS = 101
FULL_MEMORY = 7482  # every MiB a local host registers
STACK_TAG = "aws:cloudformation:stack-name"

Operation = tuple[str, str]


# -- the comparison -------------------------------------------------------------------------------


def iam_action(service: str, operation: str) -> str:
    """The IAM action that allows one API operation, e.g. ("ecs", "UpdateService") -> "ecs:UpdateService"."""
    return f"{IAM_PREFIX.get(service, service)}:{IAM_ACTION_NAMES.get((service, operation), operation)}"


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return [value] if isinstance(value, str | dict) else list(value)


def _matches(pattern: str, action: str) -> bool:
    """IAM action matching: case-insensitive, `*` any run of characters, `?` one character."""
    regex = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, action, flags=re.IGNORECASE) is not None


def _statement_covers(statement: Mapping[str, Any], action: str) -> bool:
    if "NotAction" in statement:
        return not any(_matches(pattern, action) for pattern in _as_list(statement["NotAction"]))
    return any(_matches(pattern, action) for pattern in _as_list(statement.get("Action")))


def allows(policy: Mapping[str, Any], action: str) -> bool:
    """Whether some Allow statement names the action and no Deny statement does.

    Resources and conditions are not evaluated (tests/test_deploy.py checks the
    scoping); a Deny counts whatever its resource, which errs on the strict side.
    """
    statements = _as_list(policy.get("Statement"))
    denied = any(s.get("Effect") == "Deny" and _statement_covers(s, action) for s in statements)
    allowed = any(s.get("Effect") == "Allow" and _statement_covers(s, action) for s in statements)
    return allowed and not denied


def missing_actions(operations: Iterable[Operation], policy: Mapping[str, Any]) -> set[str]:
    """The IAM actions of these (service, operation) pairs that the policy does not allow."""
    return {iam_action(*operation) for operation in operations if not allows(policy, iam_action(*operation))}


def granted_actions(policy: Mapping[str, Any]) -> set[str]:
    """The actions an Allow statement names literally (no wildcards in our policy)."""
    return {
        action
        for statement in _as_list(policy.get("Statement"))
        if statement.get("Effect") == "Allow"
        for action in _as_list(statement.get("Action"))
    }


def load_policy(path: Path) -> dict[str, Any]:
    policy: dict[str, Any] = json.loads(path.read_text())
    return policy


# -- the scenario: one pass that needs every permission, then the events queue ---------------------


@dataclass(frozen=True)
class Scenario:
    """What the module's own daemon pass did."""

    operations: set[Operation]
    desired: dict[str, int]
    counting: set[Operation]  # the operations of a --once pass (it reads no coverage) while an agent is lost


def _read_events_queue(local: LocalECS, heartbeat: Path) -> None:
    """`run.py` with EVENTS_QUEUE_URL and READY_ATTRIBUTE until it has received a host's event and deleted it from
    the queue, put the ready attribute on the hosts running its task and deleted it from a host that drained."""
    queue_url = local.enable_events(CLUSTER)
    with Daemon(
        local,
        CLUSTER=CLUSTER,
        SERVICES="named",
        INTERVAL="300",
        EVENTS_QUEUE_URL=queue_url,
        HEARTBEAT_FILE=str(heartbeat),
        READY_ATTRIBUTE="ecs-cluster-manager.ready",
    ) as daemon:
        assert daemon.wait_for(lambda: any(e.get("event") == "events_start" for e in daemon.events), timeout=60)
        local.add_hosts(CLUSTER, 1)
        assert daemon.wait_for(lambda: local.desired_count(CLUSTER, "named") == HOSTS + 1, timeout=60)
        assert daemon.wait_for(lambda: any(call.operation == "DeleteMessageBatch" for call in local.calls))
        assert daemon.wait_for(lambda: any(call.operation == "PutAttributes" for call in local.calls), timeout=60)
        local.drain(CLUSTER, local.hosts(CLUSTER)[1]["containerInstanceArn"])
        assert daemon.wait_for(lambda: any(call.operation == "DeleteAttributes" for call in local.calls), timeout=60)
        assert daemon.stop() == 0


def _make_room(local: LocalECS, heartbeat: Path) -> None:
    """`run.py` on a cluster whose full host lacks a make-room service's task, until it stops a preemptible task
    there (DescribeTaskDefinition, ListTasks of the host, StopTask)."""
    local.create_cluster(ROOM_CLUSTER)
    local.add_hosts(ROOM_CLUSTER, 2)
    local.create_service(
        ROOM_CLUSTER, "agent", task_definition=local.register_task_definition("agent", memory=1024),
        placement_constraints=[{"type": "distinctInstance"}], tags={"ecs-cluster-manager:make-room": "true"},
    )
    local.create_service(
        ROOM_CLUSTER, "web", desired_count=1, task_definition=local.register_task_definition("web", memory=4000),
        tags={"ecs-cluster-manager:preemptible": "true"},
    )
    [web] = local.tasks(ROOM_CLUSTER, "web")
    local.task_placed(ROOM_CLUSTER, web["containerInstanceArn"], cpu=0, memory=FULL_MEMORY - 4000 - 500)
    with Daemon(
        local, CLUSTER=ROOM_CLUSTER, SERVICES="agent", INTERVAL="0.3", COVERAGE_GRACE="1",
        HEARTBEAT_FILE=str(heartbeat),
    ) as daemon:
        assert daemon.wait_for(lambda: any(call.operation == "StopTask" for call in local.calls), timeout=60)
        assert daemon.stop() == 0


@pytest.fixture(scope="module")
def scenario(
    local_ecs: LocalECS, daemon_operations: OperationRecorder, tmp_path_factory: pytest.TempPathFactory
) -> Scenario:
    """One `run.py --once` with SERVICES, SERVICE_REGEX, MANAGED_TAG and a CloudFormation-tagged service; then
    `run.py` with EVENTS_QUEUE_URL, which reads its services' coverage (tasks, and the host missing its task),
    receives a new host's event from the queue and deletes it; then `run.py` making room on a full host for a
    make-room service's task (it reads task definitions and stops a preemptible task)."""
    local = local_ecs
    local.reset()
    local.scheduler.enabled = True  # services place their tasks, so the loop's coverage read describes them
    local.create_cluster(CLUSTER)
    hosts = local.add_hosts(CLUSTER, HOSTS)
    # One host too full for a task: coverage looks up the EC2 id of the host missing it.
    local.task_placed(CLUSTER, hosts[0], memory=FULL_MEMORY)
    template = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}}
    local.client("cloudformation").create_stack(StackName="calm", TemplateBody=json.dumps(template))
    distinct = [{"type": "distinctInstance"}]
    local.create_service(CLUSTER, "named", placement_constraints=distinct)
    local.create_service(CLUSTER, "agent-logs", placement_constraints=distinct)
    local.create_service(CLUSTER, "tagged", tags={"managed": "true"}, placement_constraints=distinct)
    local.create_service(CLUSTER, "stacked", tags={STACK_TAG: "calm"}, placement_constraints=distinct)
    local.create_service(CLUSTER, "bystander", placement_constraints=distinct)
    local.clear_calls()

    result = run_once(
        local, CLUSTER=CLUSTER, SERVICES="named stacked", SERVICE_REGEX="agent-.*", MANAGED_TAG="managed=true"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert {name: d["action"] for name, d in decisions(result.stdout).items()} == dict.fromkeys(
        ("named", "agent-logs", "tagged", "stacked"), "update"
    )
    desired = {
        name: local.desired_count(CLUSTER, name) for name in ("named", "agent-logs", "tagged", "stacked", "bystander")
    }
    # A host whose agent is lost is described (its version tells a reconnect in between).
    lost = local.hosts(CLUSTER)[0]["containerInstanceArn"]
    local.set_agent_connected(CLUSTER, lost, False)
    before = len(local.calls)
    assert run_once(local, CLUSTER=CLUSTER, SERVICES="named").returncode == 0
    counting = {(c.service, c.operation) for c in local.calls[before:] if daemon_operations.is_daemon_call(c)}
    local.set_agent_connected(CLUSTER, lost, True)
    _read_events_queue(local, tmp_path_factory.mktemp("events") / "heartbeat")
    _make_room(local, tmp_path_factory.mktemp("room") / "heartbeat")
    operations = {(call.service, call.operation) for call in local.calls if daemon_operations.is_daemon_call(call)}
    local.reset()
    return Scenario(operations, desired, counting)


# -- unit tests of the comparison -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_agent", "daemon"),
    [
        ("Boto3/1.44.5 md/Botocore#1.44.8 ua/2.1 cfg/retry-mode#standard Botocore/1.44.8 ecs-cluster-manager", True),
        ("Boto3/1.44.5 md/Botocore#1.44.8 ua/2.1 cfg/retry-mode#standard Botocore/1.44.8", False),
        ("Boto3/1.44.5 Botocore/1.44.8 ecs-cluster-manager-tests", False),
        ("", False),
    ],
)
def test_the_recorder_tells_daemon_calls_by_user_agent(
    daemon_operations: OperationRecorder, user_agent: str, daemon: bool
) -> None:
    """Only requests whose User-Agent carries the token `ecs-cluster-manager` count as the daemon's."""
    call = ApiCall("ecs", "ListClusters", {}, 200, None, user_agent)
    assert daemon_operations.is_daemon_call(call) is daemon


def test_operations_map_to_iam_actions() -> None:
    """A recorded (signing name, operation) pair becomes the IAM action that allows it."""
    assert iam_action("ecs", "ListContainerInstances") == "ecs:ListContainerInstances"
    assert iam_action("cloudformation", "DescribeStacks") == "cloudformation:DescribeStacks"
    assert iam_action("sqs", "ReceiveMessage") == "sqs:ReceiveMessage"
    assert iam_action("sqs", "DeleteMessageBatch") == "sqs:DeleteMessage"


@pytest.mark.parametrize(
    ("policy", "missing"),
    [
        ({"Statement": [{"Effect": "Allow", "Action": ["ecs:DescribeServices", "ecs:UpdateService"]}]}, set()),
        ({"Statement": {"Effect": "Allow", "Action": "ecs:DescribeServices"}}, {"ecs:UpdateService"}),
        ({"Statement": [{"Effect": "Allow", "Action": "ecs:*"}]}, set()),
        ({"Statement": [{"Effect": "Allow", "Action": "ecs:Describe*"}]}, {"ecs:UpdateService"}),
        ({"Statement": [{"Effect": "Allow", "Action": ["ECS:describeservices", "ecs:updateservice"]}]}, set()),
        ({"Statement": [{"Effect": "Allow", "Action": "ecs:?pdateService"}]}, {"ecs:DescribeServices"}),
        ({"Statement": [{"Effect": "Allow", "NotAction": "ecs:UpdateService"}]}, {"ecs:UpdateService"}),
        (
            {"Statement": [{"Effect": "Allow", "Action": "ecs:*"}, {"Effect": "Deny", "Action": "ecs:UpdateService"}]},
            {"ecs:UpdateService"},
        ),
        (
            {"Statement": [{"Effect": "Allow", "Action": "cloudformation:*"}]},
            {"ecs:DescribeServices", "ecs:UpdateService"},
        ),
        ({"Statement": []}, {"ecs:DescribeServices", "ecs:UpdateService"}),
    ],
    ids=[
        "exact",
        "one-statement",
        "service-wildcard",
        "prefix-wildcard",
        "case",
        "qmark",
        "notaction",
        "deny",
        "other-service",
        "empty",
    ],
)
def test_missing_actions_follows_iam_matching(policy: dict[str, Any], missing: set[str]) -> None:
    """Wildcards, case, NotAction and Deny are read as IAM reads them when deciding what is missing."""
    used = [("ecs", "DescribeServices"), ("ecs", "UpdateService")]
    assert missing_actions(used, policy) == missing


def test_a_policy_copy_without_an_action_is_caught(scenario: Scenario, tmp_path: Path) -> None:
    """Removing any one action from a copy of deploy/iam-policy.json makes the check report exactly that action."""
    policy = load_policy(POLICY)
    assert missing_actions(scenario.operations, policy) == set()
    for action in sorted(granted_actions(policy)):
        trimmed = json.loads(json.dumps(policy))
        for statement in trimmed["Statement"]:
            statement["Action"] = [a for a in _as_list(statement["Action"]) if a != action]
        trimmed["Statement"] = [s for s in trimmed["Statement"] if s["Action"]]
        copy = tmp_path / f"without-{action.replace(':', '-')}.json"
        copy.write_text(json.dumps(trimmed))
        assert missing_actions(scenario.operations, load_policy(copy)) == {action}, action


# -- the checks over the whole run -----------------------------------------------------------------


def test_scenario_uses_every_discovery_path_and_writes(scenario: Scenario) -> None:
    """The module's own pass lists, describes, counts, reads the stack and updates; the bystander is untouched.
    Its events daemon reads coverage, receives from the queue and deletes what it received, and keeps the ready
    attribute (reads it, puts it, deletes it from a drained host); its make-room daemon reads task definitions
    and stops a preemptible task."""
    assert scenario.desired == {"named": HOSTS, "agent-logs": HOSTS, "tagged": HOSTS, "stacked": HOSTS, "bystander": 0}
    assert scenario.operations == {
        ("ecs", "ListServices"),
        ("ecs", "DescribeServices"),
        ("ecs", "ListContainerInstances"),
        ("ecs", "DescribeClusters"),
        ("ecs", "DescribeContainerInstances"),
        ("ecs", "UpdateService"),
        ("ecs", "ListTasks"),
        ("ecs", "DescribeTasks"),
        ("ecs", "DescribeContainerInstances"),
        ("ecs", "DescribeTaskDefinition"),
        ("ecs", "StopTask"),
        ("ecs", "ListAttributes"),
        ("ecs", "PutAttributes"),
        ("ecs", "DeleteAttributes"),
        ("cloudformation", "DescribeStacks"),
        ("sqs", "ReceiveMessage"),
        ("sqs", "DeleteMessageBatch"),
    }


def test_every_operation_the_daemon_made_is_allowed_by_the_policy(
    scenario: Scenario, daemon_operations: OperationRecorder
) -> None:
    """Each AWS operation recorded from the daemon across the whole run is an action deploy/iam-policy.json allows."""
    recorded = daemon_operations.operations
    print("\nAWS operations the daemon made in this run:")
    for line in daemon_operations.lines():
        print(f"  {line}")
    assert recorded, "no daemon request was recorded: the User-Agent recorder in conftest.py is broken"
    assert scenario.operations <= recorded
    assert missing_actions(recorded, load_policy(POLICY)) == set()


def test_every_granted_action_was_exercised(scenario: Scenario, daemon_operations: OperationRecorder) -> None:
    """The policy grants nothing the daemon was not seen to use (least privilege from the other side)."""
    used = {iam_action(*operation) for operation in daemon_operations.operations}
    assert granted_actions(load_policy(POLICY)) <= used


def test_managed_tag_policy_allows_the_same_operations(scenario: Scenario) -> None:
    """deploy/iam-policy-managed-tag.json names every action the daemon used, and only those, like iam-policy.json.

    Its UpdateService condition (the managed tag) is not evaluated here; tests/test_deploy.py checks it.
    """
    assert missing_actions(scenario.operations, load_policy(TAG_POLICY)) == set()
    assert granted_actions(load_policy(TAG_POLICY)) == granted_actions(load_policy(POLICY))


def _statements_always_needed() -> set[str]:
    """The Sids docs/iam.md's table of statements says are needed always (the others it tells users they may drop)."""
    section = (ROOT / "docs" / "iam.md").read_text().split("\n## The statements\n", 1)[1].split("\n## ", 1)[0]
    always = set()
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) == 6 and cells[1].startswith("`") and "always" in cells[4]:
            always.add(cells[1].strip("`"))
    return always


def test_counting_with_an_agent_lost_needs_only_the_statements_always_needed(scenario: Scenario) -> None:
    """Every call of a pass made while an agent is lost (DescribeContainerInstances of that host among them) is
    allowed by the policy's statements docs/iam.md calls always needed: dropping the optional ones keeps counting."""
    assert ("ecs", "DescribeContainerInstances") in scenario.counting, scenario.counting
    always = _statements_always_needed()
    assert {"CountHostsOfTheCluster", "ReadAndSizeManagedServices"} <= always, always
    # The managed-tag form splits ReadAndSizeManagedServices in two (docs/iam.md).
    tag_always = always - {"ReadAndSizeManagedServices"} | {"ReadServicesOfTheCluster", "SizeServicesWithTheManagedTag"}
    for path, needed in ((POLICY, always), (TAG_POLICY, tag_always)):
        policy = load_policy(path)
        kept = {"Statement": [s for s in policy["Statement"] if s["Sid"] in needed]}
        assert missing_actions(scenario.counting, kept) == set(), path.name
