"""The deployment examples: deploy/iam-policy.json, its managed-tag form and deploy/cloudformation.yaml."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint
from cfnlint.data import AdditionalSpecs
from cfnlint.decode.cfn_yaml import loads as load_template
from cfnlint.helpers import load_resource

from ecs_cluster_manager import config
from ecs_cluster_manager.engine import audit
from localecs import LocalECS

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "deploy" / "iam-policy.json"
TAG_POLICY = ROOT / "deploy" / "iam-policy-managed-tag.json"
TEMPLATE = ROOT / "deploy" / "cloudformation.yaml"
RUN_PY = str(ROOT / "run.py")

# The gateways: the only modules whose calls reach AWS (through transport.py).
GATEWAYS = [ROOT / "ecs_cluster_manager" / "aws" / name for name in ("ecs.py", "cloudformation.py", "sqs.py")]

# How the template's Fn::Sub variables read in the documented policy's placeholders.
SUBSTITUTIONS = {
    "${AWS::Partition}": "aws",
    "${AWS::Region}": "REGION",
    "${AWS::AccountId}": "ACCOUNT_ID",
    "${ClusterName}": "CLUSTER",
    "${ManagedTagKey}": "TAG_KEY",
    "${ManagedTagValue}": "TAG_VALUE",
}
# How the template's Fn::GetAtt of a resource reads in the documented policy.
ATTRIBUTES = {("InstanceEventsQueue", "Arn"): "arn:aws:sqs:REGION:ACCOUNT_ID:QUEUE_NAME"}
# An API operation whose IAM action has another name.
IAM_ACTIONS = {"sqs:DeleteMessageBatch": "sqs:DeleteMessage"}


@pytest.fixture(scope="module")
def policy() -> dict[str, Any]:
    return json.loads(POLICY.read_text())


@pytest.fixture(scope="module")
def tag_policy() -> dict[str, Any]:
    return json.loads(TAG_POLICY.read_text())


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE.read_text(), str(TEMPLATE))


def actions_used() -> set[str]:
    """Every AWS call of the gateways (the only code whose calls reach AWS), as the IAM action that allows it.

    ECS calls go through the client `self._ecs`; CloudFormation's and the queue's through a local
    `cloudformation = self._cloudformation()` and `sqs = self._sqs_client()`.
    """
    source = "\n".join(path.read_text() for path in GATEWAYS)
    assert re.search(r"\bsqs = self\._sqs_client\(", source), "the SQS client is no longer the local `sqs`"
    assert re.search(r"\bcloudformation = self\._cloudformation\(", source), "no local `cloudformation` client"
    calls = re.findall(r'_(?:call|pages|once)\(\s*"(\w+)",\s*(?:self\._)?(ecs|cloudformation|sqs)\.', source)
    return {IAM_ACTIONS.get(f"{service}:{operation}", f"{service}:{operation}") for operation, service in calls}


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def _conditions(template: dict[str, Any], parameters: dict[str, Any]) -> dict[str, bool]:
    """The template's conditions, evaluated with these parameter values (Fn::Equals, Fn::Not and Fn::And of Refs
    and of other conditions)."""
    named = template.get("Conditions", {})

    def value(node: Any) -> Any:
        if isinstance(node, dict) and set(node) == {"Condition"}:
            return value(named[node["Condition"]])
        if isinstance(node, dict) and set(node) == {"Fn::And"}:
            return all(value(part) for part in node["Fn::And"])
        if isinstance(node, dict) and set(node) == {"Ref"}:
            return parameters[node["Ref"]]
        if isinstance(node, dict) and set(node) == {"Fn::Equals"}:
            left, right = node["Fn::Equals"]
            return str(value(left)) == str(value(right))
        if isinstance(node, dict) and set(node) == {"Fn::Not"}:
            return not value(node["Fn::Not"][0])
        if isinstance(node, str | int):
            return node
        raise AssertionError(f"condition not understood: {node!r}")

    return {name: bool(value(node)) for name, node in template.get("Conditions", {}).items()}


def _chosen(value: Any, conditions: dict[str, bool]) -> Any:
    """The template value with each Fn::If replaced by its chosen branch and AWS::NoValue left out."""
    no_value = {"Ref": "AWS::NoValue"}
    if isinstance(value, dict):
        if set(value) == {"Fn::If"}:
            condition, when_true, when_false = value["Fn::If"]
            return _chosen(when_true if conditions[condition] else when_false, conditions)
        chosen = {key: _chosen(item, conditions) for key, item in value.items()}
        return {key: item for key, item in chosen.items() if item != no_value}
    if isinstance(value, list):
        return [item for item in (_chosen(item, conditions) for item in value) if item != no_value]
    return value


def _defaults(template: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {name: p.get("Default") for name, p in template["Parameters"].items()} | overrides


def _plain(value: Any) -> Any:
    """The template value with each Fn::Sub string (and Fn::GetAtt in ATTRIBUTES) written with the policy
    file's placeholders."""
    if isinstance(value, dict):
        if set(value) == {"Fn::GetAtt"} and tuple(value["Fn::GetAtt"]) in ATTRIBUTES:
            return ATTRIBUTES[tuple(value["Fn::GetAtt"])]
        if set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
            text: str = value["Fn::Sub"]
            for variable, placeholder in SUBSTITUTIONS.items():
                text = text.replace(variable, placeholder)
            assert "${" not in text, f"unmapped variable in {text!r}"
            return text
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def test_template_is_cfn_lint_clean() -> None:
    """cfn-lint (errors, warnings and informational checks, in several regions) finds nothing in the stack."""
    matches = lint(
        TEMPLATE.read_text(),
        config=ManualArgs(include_checks=["I"], regions=["us-east-1", "eu-west-1", "ap-southeast-2"]),
    )
    assert [str(match) for match in matches] == []


@pytest.mark.parametrize("path", [POLICY, TAG_POLICY], ids=["generic", "managed-tag"])
def test_policy_is_a_valid_document_with_named_statements(path: Path) -> None:
    """Each policy is IAM JSON: version 2012-10-17, and each statement an Allow with a unique alphanumeric Sid."""
    policy = json.loads(path.read_text())
    assert policy["Version"] == "2012-10-17"
    sids = [statement.get("Sid", "") for statement in policy["Statement"]]
    assert all(re.fullmatch(r"[A-Za-z0-9]+", sid) for sid in sids), sids
    assert len(set(sids)) == len(sids)
    assert {statement["Effect"] for statement in policy["Statement"]} == {"Allow"}


def test_policy_grants_exactly_the_calls_the_manager_makes(policy: dict[str, Any]) -> None:
    """Every action is a real IAM action (per cfn-lint's IAM data) that the manager needs, and none is missing."""
    service_map = load_resource(AdditionalSpecs, "Policies.json")
    granted = [action for statement in policy["Statement"] for action in _actions(statement)]
    for action in granted:
        service, name = action.split(":")
        assert name.lower() in service_map[service]["Actions"], f"{action} is not an IAM action"
    used = actions_used()
    assert {"ecs:ListContainerInstances", "ecs:UpdateService", "sqs:ReceiveMessage", "sqs:DeleteMessage"} <= used
    assert sorted(granted) == sorted(used)


# Actions with no resource type and no condition key either (AWS's Service Authorization Reference): a condition
# on ecs:cluster would never match, so they are granted on "*" alone. Task definitions belong to no cluster.
UNCONDITIONED_ACTIONS = {"ecs:DescribeTaskDefinition"}


def test_policy_scopes_each_action_as_tightly_as_iam_allows(policy: dict[str, Any]) -> None:
    """Actions with a resource type name this cluster's ARNs; ListServices, having none, is held by ecs:cluster;
    DescribeTaskDefinition, with neither a resource type nor a condition key, is the one action on "*" alone.
    StopTask is held to the cluster's tasks and by ecs:cluster too."""
    service_map = load_resource(AdditionalSpecs, "Policies.json")
    cluster_arn = "arn:aws:ecs:REGION:ACCOUNT_ID:cluster/CLUSTER"
    for statement in policy["Statement"]:
        for action in _actions(statement):
            service, name = action.split(":")
            resource_types = service_map[service]["Actions"][name.lower()].get("Resources", [])
            if resource_types:
                assert statement["Resource"] != "*", f"{action} could be scoped to a resource"
            elif action in UNCONDITIONED_ACTIONS:
                assert statement["Resource"] == "*" and "Condition" not in statement
                assert _actions(statement) == [action]
            else:
                assert statement["Resource"] == "*"
                assert statement["Condition"] == {"ArnEquals": {"ecs:cluster": cluster_arn}}
    by_action = {action: statement for statement in policy["Statement"] for action in _actions(statement)}
    assert by_action["ecs:ListContainerInstances"]["Resource"] == cluster_arn
    assert by_action["ecs:UpdateService"]["Resource"] == "arn:aws:ecs:REGION:ACCOUNT_ID:service/CLUSTER/*"
    assert by_action["ecs:StopTask"]["Resource"] == "arn:aws:ecs:REGION:ACCOUNT_ID:task/CLUSTER/*"
    assert by_action["ecs:StopTask"]["Condition"] == {"ArnEquals": {"ecs:cluster": cluster_arn}}
    assert by_action["sqs:ReceiveMessage"]["Resource"] == "arn:aws:sqs:REGION:ACCOUNT_ID:QUEUE_NAME"
    assert by_action["sqs:DeleteMessage"] is by_action["sqs:ReceiveMessage"]


def test_managed_tag_policy_is_the_generic_one_with_updates_held_to_the_tag(
    policy: dict[str, Any], tag_policy: dict[str, Any]
) -> None:
    """iam-policy-managed-tag.json grants the same actions on the same resources as iam-policy.json, except that
    UpdateService has its own statement, allowed only on services tagged TAG_KEY=TAG_VALUE."""

    def grants(document: dict[str, Any]) -> dict[str, str]:
        return {action: s["Resource"] for s in document["Statement"] for action in _actions(s)}

    assert grants(tag_policy) == grants(policy)
    by_action = {action: statement for statement in tag_policy["Statement"] for action in _actions(statement)}
    update = by_action["ecs:UpdateService"]
    assert _actions(update) == ["ecs:UpdateService"]
    assert update["Condition"] == {"StringEquals": {"aws:ResourceTag/TAG_KEY": "TAG_VALUE"}}
    others = [s for s in tag_policy["Statement"] if s is not update]
    assert [s for s in policy["Statement"] if "ecs:UpdateService" not in _actions(s)] == [
        s for s in others if "ecs:DescribeServices" not in _actions(s)
    ]


def _inline_statements(template: dict[str, Any], **parameters: Any) -> list[dict[str, Any]]:
    """Every statement of the manager task role's inline policies, JSON-string documents included, with the
    conditions of the parameters' defaults (or of these parameters)."""
    task_role_name = _resources(template, "AWS::ECS::TaskDefinition")["ManagerTaskDefinition"]["Properties"][
        "TaskRoleArn"
    ]["Fn::GetAtt"][0]
    conditions = _conditions(template, _defaults(template, **parameters))
    role = _chosen(template["Resources"][task_role_name]["Properties"], conditions)
    statements: list[dict[str, Any]] = []
    for inline in role["Policies"]:
        document = _plain(inline["PolicyDocument"])
        if isinstance(document, str):
            document = json.loads(document)
        statements.extend(document["Statement"])
    return statements


def test_stack_inline_policy_is_the_documented_managed_tag_policy(
    tag_policy: dict[str, Any], template: dict[str, Any]
) -> None:
    """The stack selects services by MANAGED_TAG, so its task role carries deploy/iam-policy-managed-tag.json,
    with UpdateService held to services that carry the stack's ManagedTagKey=ManagedTagValue, and the queue
    statement ReadEventsQueue only with EventsQueue=Enabled (the default), the READY_ATTRIBUTE statements only
    with a ReadyAttribute (default none)."""
    ready = {"ReadTheReadyAttribute", "KeepTheReadyAttribute"}
    every = tag_policy["Statement"]
    assert _inline_statements(template, ReadyAttribute="ecs-cluster-manager.ready") == every
    without_ready = [s for s in every if s["Sid"] not in ready]
    assert _inline_statements(template) == without_ready
    assert _inline_statements(template, EventsQueue="Enabled") == without_ready
    without_queue = [s for s in without_ready if s["Sid"] != "ReadEventsQueue"]
    assert _inline_statements(template, EventsQueue="Disabled") == without_queue


def _manager_environment(template: dict[str, Any], **parameters: Any) -> dict[str, Any]:
    """The manager container's environment (template values) with these parameters, the others at their default."""
    conditions = _conditions(template, _defaults(template, **parameters))
    [container] = _chosen(template["Resources"]["ManagerTaskDefinition"]["Properties"], conditions)[
        "ContainerDefinitions"
    ]
    return {item["Name"]: item["Value"] for item in container["Environment"]}


def test_events_queue_is_fed_by_a_rule_for_this_clusters_instance_changes(template: dict[str, Any]) -> None:
    """With EventsQueue=Enabled: a queue, a rule with ECS's pattern for this cluster targeting it, a queue policy
    that lets only that rule send, the queue's URL in EVENTS_QUEUE_URL and the queue's ARN in the role's
    ReadEventsQueue statement; with Disabled, none of them."""
    assert template["Parameters"]["EventsQueue"]["Default"] == "Enabled"
    queues = _resources(template, "AWS::SQS::Queue")
    [(queue_id, queue)] = queues.items()
    rules = _resources(template, "AWS::Events::Rule")
    rule_id, task_rule_id = "InstanceStateChangeRule", "TaskStateChangeRule"
    assert set(rules) == {rule_id, task_rule_id}
    rule, task_rule = rules[rule_id], rules[task_rule_id]
    [(_, queue_policy)] = _resources(template, "AWS::SQS::QueuePolicy").items()
    for resource in (queue, rule, queue_policy):
        assert template["Conditions"][resource["Condition"]] == {"Fn::Equals": [{"Ref": "EventsQueue"}, "Enabled"]}
    assert (queue_id, "Arn") in ATTRIBUTES
    assert queue["Properties"]["MessageRetentionPeriod"] <= 3600
    assert queue["Properties"]["SqsManagedSseEnabled"] is True

    cluster_arn = _plain(
        {"Fn::Sub": "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:cluster/${ClusterName}"}
    )
    pattern = _plain(rule["Properties"]["EventPattern"])
    assert pattern == {
        "source": ["aws.ecs"],
        "detail-type": ["ECS Container Instance State Change"],
        "detail": {"clusterArn": [cluster_arn]},
    }
    [target] = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    assert set(target) == {"Id", "Arn"}  # no InputTransformer: the message body is the event document

    assert queue_policy["Properties"]["Queues"] == [{"Ref": queue_id}]
    [send] = queue_policy["Properties"]["PolicyDocument"]["Statement"]
    assert send["Effect"] == "Allow"
    assert send["Principal"] == {"Service": "events.amazonaws.com"}
    assert send["Action"] == "sqs:SendMessage"
    assert send["Resource"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    default = _conditions(template, _defaults(template))
    assert _chosen(send["Condition"], default) == {"ArnEquals": {"aws:SourceArn": [{"Fn::GetAtt": [rule_id, "Arn"]}]}}

    # READY_ATTRIBUTE: a second rule sends the cluster's service tasks reaching RUNNING, and may send too.
    ready = _conditions(template, _defaults(template, ReadyAttribute="ecs-cluster-manager.ready"))
    assert not default[task_rule["Condition"]] and ready[task_rule["Condition"]]
    assert _plain(task_rule["Properties"]["EventPattern"]) == {
        "source": ["aws.ecs"],
        "detail-type": ["ECS Task State Change"],
        "detail": {"clusterArn": [cluster_arn], "group": [{"prefix": "service:"}], "lastStatus": ["RUNNING"]},
    }
    [task_target] = task_rule["Properties"]["Targets"]
    assert task_target["Arn"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    assert _chosen(send["Condition"], ready) == {
        "ArnEquals": {"aws:SourceArn": [{"Fn::GetAtt": [rule_id, "Arn"]}, {"Fn::GetAtt": [task_rule_id, "Arn"]}]}
    }
    environment = _manager_environment(template, ReadyAttribute="ecs-cluster-manager.ready")
    assert environment["READY_ATTRIBUTE"] == {"Ref": "ReadyAttribute"}
    assert "READY_ATTRIBUTE" not in _manager_environment(template)

    assert _manager_environment(template)["EVENTS_QUEUE_URL"] == {"Ref": queue_id}
    assert "EVENTS_QUEUE_URL" not in _manager_environment(template, EventsQueue="Disabled")
    assert template["Outputs"]["EventsQueueUrl"]["Value"] == {"Ref": queue_id}


@pytest.mark.parametrize(
    ("parameters", "interval"),
    [
        ({}, "300"),
        ({"EventsQueue": "Disabled"}, "30"),
        ({"IntervalSeconds": "60"}, {"Ref": "IntervalSeconds"}),
        ({"EventsQueue": "Disabled", "IntervalSeconds": "60"}, {"Ref": "IntervalSeconds"}),
    ],
    ids=["events", "no-events", "events-set", "no-events-set"],
)
def test_interval_follows_the_events_queue_unless_set(
    template: dict[str, Any], parameters: dict[str, str], interval: Any
) -> None:
    """INTERVAL is IntervalSeconds when set; else 300 with the events queue (the passes are the safety net), 30
    without (as before the queue)."""
    assert _manager_environment(template, **parameters)["INTERVAL"] == interval
    pattern = template["Parameters"]["IntervalSeconds"]["AllowedPattern"]
    assert [v for v in ("", "5", "30", "300", "0", "4", "05", "-1", "1.5") if re.fullmatch(pattern, v)] == [
        "",
        "5",
        "30",
        "300",
    ]


def test_managed_service_is_sized_by_the_manager_only(template: dict[str, Any]) -> None:
    """The managed service has no DesiredCount, distinctInstance, minimum healthy below 100 and the managed tag."""
    service = _resources(template, "AWS::ECS::Service")["ShipperService"]["Properties"]
    assert "DesiredCount" not in service
    assert service.get("SchedulingStrategy", "REPLICA") == "REPLICA"
    assert {"Type": "distinctInstance"} in service["PlacementConstraints"]
    # 0 / 100: the only minimum that lets a one-task-per-host deploy progress with a single host.
    assert service["DeploymentConfiguration"] == {"MinimumHealthyPercent": 0, "MaximumPercent": 100}
    assert {"Key": {"Ref": "ManagedTagKey"}, "Value": {"Ref": "ManagedTagValue"}} in service["Tags"]
    assert {"Key": audit.DESIRED_COUNT_OMITTED_TAG, "Value": audit.DESIRED_COUNT_OMITTED} in service["Tags"]


def test_manager_finds_the_managed_service_by_its_tag(template: dict[str, Any]) -> None:
    """The manager's MANAGED_TAG is built from the same parameters as the managed service's tag, and it logs JSON."""
    environment = _manager_environment(template)
    assert environment["MANAGED_TAG"] == {"Fn::Sub": "${ManagedTagKey}=${ManagedTagValue}"}
    assert environment["CLUSTER"] == {"Ref": "ClusterName"}
    assert environment["LOG_FORMAT"] == "json"


def test_manager_runs_alone_with_the_image_health_check(template: dict[str, Any]) -> None:
    """One manager task, never two during a deploy, checked with `python /app/run.py healthcheck`."""
    service = template["Resources"]["ManagerService"]["Properties"]
    assert service["DesiredCount"] == 1
    assert service["DeploymentConfiguration"] == {"MinimumHealthyPercent": 0, "MaximumPercent": 100}
    [container] = template["Resources"]["ManagerTaskDefinition"]["Properties"]["ContainerDefinitions"]
    assert container["HealthCheck"]["Command"] == ["CMD", "python", "/app/run.py", "healthcheck"]


def test_manager_container_has_a_read_only_root_and_a_writable_heartbeat(template: dict[str, Any]) -> None:
    """ReadonlyRootFilesystem is on, and the heartbeat file (HEARTBEAT_FILE or its default) is on a small tmpfs."""
    [container] = template["Resources"]["ManagerTaskDefinition"]["Properties"]["ContainerDefinitions"]
    assert container["ReadonlyRootFilesystem"] is True
    environment = _manager_environment(template)
    heartbeat = environment.get("HEARTBEAT_FILE", config.DEFAULT_HEARTBEAT_FILE)
    tmpfs = container["LinuxParameters"]["Tmpfs"]
    assert any(Path(heartbeat).parent == Path(mount["ContainerPath"]) for mount in tmpfs), (heartbeat, tmpfs)
    assert all(mount["Size"] <= 16 for mount in tmpfs)
    assert not container.get("MountPoints")


# -- the stack's own services pass `run.py check` ----------------------------------------------------


def _resolve(value: Any, parameters: dict[str, Any]) -> Any:
    """A template value with Ref and Fn::Sub of parameters replaced by the parameters' defaults."""
    if isinstance(value, dict):
        if set(value) == {"Ref"}:
            return parameters[value["Ref"]]
        if set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
            return re.sub(r"\$\{([\w:]+)\}", lambda match: str(parameters[match[1]]), value["Fn::Sub"])
        return {key: _resolve(item, parameters) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item, parameters) for item in value]
    return value


def _create_stack_service(ecs: LocalECS, cluster: str, logical_id: str, properties: dict[str, Any]) -> None:
    """Create the service as CloudFormation would: its properties, its tags plus CloudFormation's own."""
    deployment = properties.get("DeploymentConfiguration", {})
    tags = {tag["Key"]: tag["Value"] for tag in properties.get("Tags", [])}
    tags.update({"aws:cloudformation:stack-name": "ecs-cluster-manager", "aws:cloudformation:logical-id": logical_id})
    ecs.create_service(
        cluster,
        properties.get("ServiceName", logical_id),
        # CloudFormation creates a service without DesiredCount at 1.
        desired_count=properties.get("DesiredCount", 1),
        tags=tags,
        placement_constraints=[
            {"type": c["Type"], **({"expression": c["Expression"]} if "Expression" in c else {})}
            for c in properties.get("PlacementConstraints", [])
        ],
        deployment_configuration={
            "minimumHealthyPercent": deployment.get("MinimumHealthyPercent", 100),
            "maximumPercent": deployment.get("MaximumPercent", 200),
        },
        scheduling_strategy=properties.get("SchedulingStrategy", "REPLICA"),
        launch_type=properties.get("LaunchType", "EC2"),
    )


@pytest.mark.parametrize("hosts", [1, 2, 10])
def test_stack_services_pass_check_at_any_host_count(template: dict[str, Any], ecs: LocalECS, hosts: int) -> None:
    """The stack's services, created in a local cluster of 1, 2 or 10 hosts and found with the manager's own
    MANAGED_TAG, get `ok` and no warning from `run.py check`: no deadlock, no CloudFormation warning, exit 0."""
    ecs.scheduler.enabled = True  # the services place their tasks, so coverage has hosts to report
    parameters: dict[str, Any] = _defaults(template)
    parameters |= {name: name for name in template["Resources"]}  # a Ref to a resource: its logical id will do
    parameters |= {"ClusterName": "prod", "AWS::StackName": "ecs-cluster-manager", "AWS::Region": ecs.region}
    conditions = _conditions(template, parameters)
    ecs.create_cluster("prod")
    ecs.add_hosts("prod", hosts)
    services = _resources(template, "AWS::ECS::Service")
    for logical_id, resource in services.items():
        _create_stack_service(
            ecs, "prod", logical_id, _resolve(_chosen(resource["Properties"], conditions), parameters)
        )
    manager_env = {name: _resolve(value, parameters) for name, value in _manager_environment(template).items()}

    env = ecs.env() | {"CLUSTER": "prod", "MANAGED_TAG": manager_env["MANAGED_TAG"]}
    result = subprocess.run(
        [sys.executable, RUN_PY, "check", "--json"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    findings = json.loads(result.stdout)["findings"]
    found = [(f["service"], f["severity"], f["code"]) for f in findings]
    assert ("ecs-cluster-manager-log-shipper", "info", "ok") in found, findings
    assert [f for f in found if f[1] != "info"] == [], findings


@pytest.mark.parametrize(("parameters", "dry_run"), [({}, "false"), ({"DryRun": "true"}, "true")])
def test_dry_run_parameter_sets_dry_run(template: dict[str, Any], parameters: dict[str, str], dry_run: str) -> None:
    """DryRun (default "false") is the manager's DRY_RUN: the README's deploy path runs the stack a week with
    "true" before going live."""
    assert template["Parameters"]["DryRun"]["AllowedValues"] == ["true", "false"]
    assert template["Parameters"]["DryRun"]["Default"] == "false"
    environment = _manager_environment(template, **parameters)
    assert environment["DRY_RUN"] == {"Ref": "DryRun"}
    assert _defaults(template, **parameters)["DryRun"] == dry_run
