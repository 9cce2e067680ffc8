"""The deployment examples: deploy/iam-policy.json and deploy/cloudformation.yaml."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint
from cfnlint.data import AdditionalSpecs
from cfnlint.decode.cfn_yaml import loads as load_template
from cfnlint.helpers import load_resource

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "deploy" / "iam-policy.json"
TEMPLATE = ROOT / "deploy" / "cloudformation.yaml"

ECS_PY = ROOT / "ecs_cluster_manager" / "ecs.py"

# How the template's Fn::Sub variables read in the documented policy's placeholders.
SUBSTITUTIONS = {
    "${AWS::Partition}": "aws",
    "${AWS::Region}": "REGION",
    "${AWS::AccountId}": "ACCOUNT_ID",
    "${ClusterName}": "CLUSTER",
}


@pytest.fixture(scope="module")
def policy() -> dict[str, Any]:
    return json.loads(POLICY.read_text())


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE.read_text(), str(TEMPLATE))


def actions_used() -> set[str]:
    """Every AWS call in ecs.py (the only module that talks to AWS), as the IAM action that allows it."""
    calls = re.findall(r'_(?:call|pages)\(\s*"(\w+)",\s*self\._(ecs|cloudformation)\.', ECS_PY.read_text())
    return {f"{service}:{operation}" for operation, service in calls}


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def _plain(value: Any) -> Any:
    """The template value with each Fn::Sub string written with the policy file's placeholders."""
    if isinstance(value, dict):
        if set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
            text = value["Fn::Sub"]
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


def test_policy_is_a_valid_document_with_named_statements(policy: dict[str, Any]) -> None:
    """The policy is IAM JSON: version 2012-10-17, and each statement an Allow with a unique alphanumeric Sid."""
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
    assert "ecs:ListContainerInstances" in used and "ecs:UpdateService" in used  # the scan still finds the calls
    assert sorted(granted) == sorted(used)


def test_policy_scopes_each_action_as_tightly_as_iam_allows(policy: dict[str, Any]) -> None:
    """Actions with a resource type name this cluster's ARNs; ListServices, having none, is held by ecs:cluster."""
    service_map = load_resource(AdditionalSpecs, "Policies.json")
    cluster_arn = "arn:aws:ecs:REGION:ACCOUNT_ID:cluster/CLUSTER"
    for statement in policy["Statement"]:
        for action in _actions(statement):
            service, name = action.split(":")
            resource_types = service_map[service]["Actions"][name.lower()].get("Resources", [])
            if resource_types:
                assert statement["Resource"] != "*", f"{action} could be scoped to a resource"
            else:
                assert statement["Resource"] == "*"
                assert statement["Condition"] == {"ArnEquals": {"ecs:cluster": cluster_arn}}
    by_action = {action: statement for statement in policy["Statement"] for action in _actions(statement)}
    assert by_action["ecs:ListContainerInstances"]["Resource"] == cluster_arn
    assert by_action["ecs:UpdateService"]["Resource"] == "arn:aws:ecs:REGION:ACCOUNT_ID:service/CLUSTER/*"


def test_stack_inline_policy_is_the_documented_policy(policy: dict[str, Any], template: dict[str, Any]) -> None:
    """The manager's task role in the stack carries the same statements as deploy/iam-policy.json."""
    task_role_name = _resources(template, "AWS::ECS::TaskDefinition")["ManagerTaskDefinition"]["Properties"][
        "TaskRoleArn"
    ]["Fn::GetAtt"][0]
    role = template["Resources"][task_role_name]["Properties"]
    [inline] = role["Policies"]
    assert _plain(inline["PolicyDocument"]["Statement"]) == policy["Statement"]


def test_managed_service_is_sized_by_the_manager_only(template: dict[str, Any]) -> None:
    """The managed service has no DesiredCount, distinctInstance, minimum healthy below 100 and the managed tag."""
    service = _resources(template, "AWS::ECS::Service")["ShipperService"]["Properties"]
    assert "DesiredCount" not in service
    assert service.get("SchedulingStrategy", "REPLICA") == "REPLICA"
    assert {"Type": "distinctInstance"} in service["PlacementConstraints"]
    deployment = service["DeploymentConfiguration"]
    assert deployment["MinimumHealthyPercent"] < 100
    assert deployment["MaximumPercent"] <= 100
    assert {"Key": {"Ref": "ManagedTagKey"}, "Value": {"Ref": "ManagedTagValue"}} in service["Tags"]


def test_manager_finds_the_managed_service_by_its_tag(template: dict[str, Any]) -> None:
    """The manager's MANAGED_TAG is built from the same parameters as the managed service's tag, and it logs JSON."""
    [container] = template["Resources"]["ManagerTaskDefinition"]["Properties"]["ContainerDefinitions"]
    environment = {item["Name"]: item["Value"] for item in container["Environment"]}
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
