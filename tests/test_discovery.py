"""Which services are managed and how many tasks each gets, end to end through `python run.py --once`.

Covers SERVICE_REGEX and MANAGED_TAG discovery, the union with SERVICES, the
manager's own service, memberOf-constrained host sets (evaluated by the local
ECS API, as ECS would), the sizing tags, and the CloudFormation guard.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from daemon_helpers import Daemon, decisions, events, run_once
from localecs import LocalECS

if TYPE_CHECKING:
    from conftest import OperationRecorder

CLUSTER = "prod"
DISTINCT = [{"type": "distinctInstance"}]
WEB_ONLY = [*DISTINCT, {"type": "memberOf", "expression": "attribute:role == web"}]


@pytest.fixture
def cluster(ecs: LocalECS) -> LocalECS:
    """4 hosts, 2 of them with role=web."""
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, 2, attributes={"role": "web"})
    ecs.add_hosts(CLUSTER, 2, attributes={"role": "batch"})
    return ecs


def desired(local: LocalECS, *names: str) -> dict[str, int]:
    return {name: local.desired_count(CLUSTER, name) for name in names}


def test_regex_matches_whole_names_only(cluster: LocalECS) -> None:
    """SERVICE_REGEX must match the whole service name; every match is managed, others are left alone."""
    for name in ("node-agent", "log-agent", "agent-old", "web"):
        cluster.create_service(CLUSTER, name, placement_constraints=DISTINCT)
    cluster.clear_calls()
    result = run_once(cluster, CLUSTER=CLUSTER, SERVICE_REGEX=".*-agent")
    assert result.returncode == 0, result.stdout + result.stderr
    assert desired(cluster, "node-agent", "log-agent", "agent-old", "web") == {
        "node-agent": 4,
        "log-agent": 4,
        "agent-old": 0,
        "web": 0,
    }
    assert cluster.count("ListServices") == 1
    assert set(decisions(result.stdout)) == {"node-agent", "log-agent"}


def test_regex_discovery_pages_through_many_services(cluster: LocalECS) -> None:
    """With 130 services ListServices is followed across pages and DescribeServices stays at 10 per call."""
    for i in range(130):
        cluster.create_service(CLUSTER, f"svc-{i:03d}", placement_constraints=DISTINCT)
    cluster.clear_calls()
    result = run_once(cluster, CLUSTER=CLUSTER, SERVICE_REGEX=r"svc-\d*[05]")
    assert result.returncode == 0, result.stderr
    managed = [f"svc-{i:03d}" for i in range(130) if i % 5 == 0]
    assert all(cluster.desired_count(CLUSTER, name) == 4 for name in managed)
    assert cluster.desired_count(CLUSTER, "svc-001") == 0
    assert cluster.count("ListServices") == 2  # 100 + 30
    assert cluster.count("DescribeServices") == 3  # 26 services, 10 a call
    assert cluster.count("UpdateService") == len(managed)


@pytest.mark.parametrize(
    ("tag", "expected"), [("managed", {"a": 4, "b": 4, "c": 0}), ("managed=yes", {"a": 4, "b": 0, "c": 0})]
)
def test_managed_tag_key_or_key_value(cluster: LocalECS, tag: str, expected: dict[str, int]) -> None:
    """MANAGED_TAG KEY takes every service with the key, KEY=VALUE only that value; no per-service tag calls."""
    cluster.create_service(CLUSTER, "a", tags={"managed": "yes"}, placement_constraints=DISTINCT)
    cluster.create_service(CLUSTER, "b", tags={"managed": "no"}, placement_constraints=DISTINCT)
    cluster.create_service(CLUSTER, "c", tags={"team": "x"}, placement_constraints=DISTINCT)
    cluster.clear_calls()
    result = run_once(cluster, CLUSTER=CLUSTER, MANAGED_TAG=tag)
    assert result.returncode == 0, result.stderr
    assert desired(cluster, "a", "b", "c") == expected
    assert cluster.count("ListTagsForResource") == 0
    assert all(call.params.get("include") == ["TAGS"] for call in cluster.calls if call.operation == "DescribeServices")


def test_union_is_deduplicated_by_arn(cluster: LocalECS) -> None:
    """A service chosen by SERVICES, SERVICE_REGEX and MANAGED_TAG at once is described and updated once."""
    cluster.create_service(CLUSTER, "edge-agent", tags={"managed": "true"}, placement_constraints=DISTINCT)
    cluster.create_service(CLUSTER, "other", placement_constraints=DISTINCT)
    cluster.clear_calls()
    result = run_once(
        cluster, CLUSTER=CLUSTER, SERVICES="edge-agent other", SERVICE_REGEX="edge-.*", MANAGED_TAG="managed=true"
    )
    assert result.returncode == 0, result.stderr
    assert cluster.count("UpdateService") == 2
    assert cluster.count("DescribeServices") == 1
    assert desired(cluster, "edge-agent", "other") == {"edge-agent": 4, "other": 4}


@pytest.fixture
def task_metadata() -> Iterator[str]:
    """A stand-in for the agent's task metadata endpoint (v4): this task belongs to service 'manager-agent'."""
    document = {"Cluster": f"arn:aws:ecs:us-east-1:123456789012:cluster/{CLUSTER}", "ServiceName": "manager-agent"}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            body = json.dumps(document).encode() if self.path.endswith("/task") else b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v4/container"
    server.shutdown()
    server.server_close()


def test_never_manages_its_own_service(cluster: LocalECS, task_metadata: str) -> None:
    """When the task metadata endpoint names the manager's own service, a regex that matches it leaves it alone."""
    cluster.create_service(CLUSTER, "manager-agent", desired_count=1)
    cluster.create_service(CLUSTER, "log-agent", placement_constraints=DISTINCT)
    result = run_once(cluster, CLUSTER=CLUSTER, SERVICE_REGEX=".*-agent", ECS_CONTAINER_METADATA_URI_V4=task_metadata)
    assert result.returncode == 0, result.stderr
    assert desired(cluster, "manager-agent", "log-agent") == {"manager-agent": 1, "log-agent": 4}
    assert "manager-agent" not in decisions(result.stdout)


def test_member_of_sizes_to_the_matching_hosts(cluster: LocalECS, daemon_operations: OperationRecorder) -> None:
    """A memberOf service is sized to the hosts it selects; services with one expression share a listing."""
    cluster.create_service(CLUSTER, "web-cache", placement_constraints=WEB_ONLY)
    cluster.create_service(CLUSTER, "web-proxy", placement_constraints=WEB_ONLY)
    cluster.create_service(CLUSTER, "everywhere", placement_constraints=DISTINCT)
    cluster.clear_calls()
    result = run_once(cluster, CLUSTER=CLUSTER, SERVICES="web-cache web-proxy everywhere")
    assert result.returncode == 0, result.stderr
    assert desired(cluster, "web-cache", "web-proxy", "everywhere") == {"web-cache": 2, "web-proxy": 2, "everywhere": 4}
    # One exact count per distinct filter: its ACTIVE hosts, and those with a disconnected agent.
    listings = [c for c in cluster.calls if c.operation == "ListContainerInstances"]
    active = sorted(
        str(c.params.get("filter"))
        for c in listings
        if "agentConnected" not in str(c.params.get("filter"))
        and c.params.get("status") == "ACTIVE"
        and c.params.get("cluster") == CLUSTER
        and daemon_operations.is_daemon_call(c)
    )
    retried = [e for e in events(result.stdout) if e.get("event") == "api_retry"]  # a retry repeats a listing
    every = [(c.params.get("cluster"), c.params.get("filter"), c.user_agent.split()[-1:]) for c in listings]
    assert active == ["(attribute:role == web)", "None"], (retried, every)


def test_member_of_excludes_disconnected_hosts(cluster: LocalECS) -> None:
    """The memberOf filter is combined with agentConnected == true."""
    hosts = cluster.client().list_container_instances(cluster=CLUSTER, filter="attribute:role == web")
    cluster.set_agent_connected(CLUSTER, hosts["containerInstanceArns"][0], False)
    cluster.create_service(CLUSTER, "web-cache", placement_constraints=WEB_ONLY)
    assert run_once(cluster, CLUSTER=CLUSTER, SERVICES="web-cache").returncode == 0
    assert desired(cluster, "web-cache") == {"web-cache": 1}


def test_sizing_tags_and_a_bad_tag(cluster: LocalECS) -> None:
    """tasks-per-host, min and max shape the target; a malformed tag skips only that service."""
    cluster.create_service(CLUSTER, "double", tags={"ecs-cluster-manager:tasks-per-host": "2"})
    cluster.create_service(CLUSTER, "floor", tags={"ecs-cluster-manager:min": "6"}, placement_constraints=DISTINCT)
    cluster.create_service(CLUSTER, "cap", tags={"ecs-cluster-manager:max": "3"}, placement_constraints=DISTINCT)
    cluster.create_service(
        CLUSTER,
        "broken",
        desired_count=1,
        tags={"ecs-cluster-manager:tasks-per-host": "lots"},
        placement_constraints=DISTINCT,
    )
    result = run_once(cluster, CLUSTER=CLUSTER, SERVICES="double floor cap broken")
    assert result.returncode == 1  # one service could not be handled
    assert desired(cluster, "double", "floor", "cap", "broken") == {"double": 8, "floor": 6, "cap": 3, "broken": 1}
    broken = decisions(result.stdout)["broken"]
    assert broken["action"] == "skip" and "tasks-per-host" in broken["reason"] and broken["level"] == "error"


def _stack(local: LocalECS, name: str, status: str) -> None:
    """A CloudFormation stack in the given status (moto's stack operations finish at once, so set it directly)."""
    from moto.cloudformation.models import cloudformation_backends

    template = {"Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}}}
    stacks = local.client("cloudformation").list_stacks()["StackSummaries"]
    if not any(summary["StackName"] == name for summary in stacks):
        local.client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(template))
    for backend in cloudformation_backends.values():
        for stack in backend[local.region].stacks.values():
            if stack.name == name:
                stack.status = status


def test_cloudformation_guard(cluster: LocalECS) -> None:
    """A service whose stack is *_IN_PROGRESS is skipped (one DescribeStacks per stack); others are sized."""
    _stack(cluster, "busy", "UPDATE_IN_PROGRESS")
    _stack(cluster, "calm", "UPDATE_COMPLETE")
    stack_tag = "aws:cloudformation:stack-name"
    cluster.create_service(CLUSTER, "busy-1", tags={stack_tag: "busy"}, placement_constraints=DISTINCT)
    cluster.create_service(CLUSTER, "busy-2", tags={stack_tag: "busy"}, placement_constraints=DISTINCT)
    cluster.create_service(CLUSTER, "calm-1", tags={stack_tag: "calm"}, placement_constraints=DISTINCT)
    cluster.create_service(CLUSTER, "plain", placement_constraints=DISTINCT)
    cluster.clear_calls()
    result = run_once(cluster, CLUSTER=CLUSTER, SERVICES="busy-1 busy-2 calm-1 plain")
    assert result.returncode == 0, result.stdout + result.stderr  # waiting for a stack is not a failure
    assert desired(cluster, "busy-1", "busy-2", "calm-1", "plain") == {
        "busy-1": 0,
        "busy-2": 0,
        "calm-1": 4,
        "plain": 4,
    }
    assert cluster.count("DescribeStacks", service="cloudformation") == 2
    skipped = decisions(result.stdout)["busy-1"]
    assert skipped["action"] == "skip" and "busy" in skipped["reason"] and "UPDATE_IN_PROGRESS" in skipped["reason"]

    off = run_once(cluster, "--no-cloudformation-guard", CLUSTER=CLUSTER, SERVICES="busy-1 busy-2")
    assert off.returncode == 0
    assert desired(cluster, "busy-1", "busy-2") == {"busy-1": 4, "busy-2": 4}


IN_PROGRESS = [
    "CREATE_IN_PROGRESS",
    "UPDATE_IN_PROGRESS",
    "DELETE_IN_PROGRESS",
    "ROLLBACK_IN_PROGRESS",
    "UPDATE_ROLLBACK_IN_PROGRESS",
    "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS",
    "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS",
    "REVIEW_IN_PROGRESS",
    "IMPORT_IN_PROGRESS",
    "IMPORT_ROLLBACK_IN_PROGRESS",
]
SETTLED = ["CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE", "ROLLBACK_COMPLETE", "IMPORT_COMPLETE"]


@pytest.mark.parametrize("status", IN_PROGRESS + SETTLED)
def test_cloudformation_guard_skips_every_in_progress_status(cluster: LocalECS, status: str) -> None:
    """Every *_IN_PROGRESS stack status leaves the service alone; a settled status lets it be sized."""
    _stack(cluster, "stack", status)
    cluster.create_service(
        CLUSTER, "stacked", tags={"aws:cloudformation:stack-name": "stack"}, placement_constraints=DISTINCT
    )
    result = run_once(cluster, CLUSTER=CLUSTER, SERVICES="stacked")
    assert result.returncode == 0, result.stdout + result.stderr
    decision = decisions(result.stdout)["stacked"]
    if status in IN_PROGRESS:
        assert (decision["action"], desired(cluster, "stacked")) == ("skip", {"stacked": 0})
        assert status in decision["reason"]
    else:
        assert (decision["action"], desired(cluster, "stacked")) == ("update", {"stacked": 4})


def test_a_service_is_sized_again_once_its_stack_completes(cluster: LocalECS, tmp_path: Path) -> None:
    """In the loop, a service skipped while its stack updates is sized at the first pass after the update ends."""
    _stack(cluster, "stack", "UPDATE_IN_PROGRESS")
    cluster.create_service(
        CLUSTER, "stacked", tags={"aws:cloudformation:stack-name": "stack"}, placement_constraints=DISTINCT
    )
    with Daemon(
        cluster, CLUSTER=CLUSTER, SERVICES="stacked", INTERVAL="0.2", HEARTBEAT_FILE=str(tmp_path / "hb")
    ) as daemon:
        assert daemon.wait_passes(3)
        assert desired(cluster, "stacked") == {"stacked": 0}
        _stack(cluster, "stack", "UPDATE_COMPLETE")
        assert daemon.wait_for(lambda: desired(cluster, "stacked") == {"stacked": 4})
        assert daemon.stop() == 0
