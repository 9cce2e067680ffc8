"""Tests for the local ECS API: what it enforces beyond moto, its call log and its faults.

Every check goes through a plain boto3 client, as the daemon's would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from localecs import ApiCall, Fault, LocalECS, fault_on

CLUSTER = "test-cluster"
# botocore's "max_attempts" counts retries, so {"max_attempts": 1} still makes two
# attempts; "total_max_attempts" counts them all.
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})


def error_code(caught: pytest.ExceptionInfo[ClientError]) -> str:
    return str(caught.value.response["Error"]["Code"])


def list_all(client: Any, **params: Any) -> list[list[str]]:
    """Every page of ListContainerInstances, following nextToken."""
    pages = []
    while True:
        answer = client.list_container_instances(cluster=CLUSTER, **params)
        pages.append(answer["containerInstanceArns"])
        if "nextToken" not in answer:
            return pages
        params["nextToken"] = answer["nextToken"]


@pytest.fixture
def cluster(ecs: LocalECS) -> LocalECS:
    """A clean local ECS with one empty cluster."""
    ecs.create_cluster(CLUSTER)
    return ecs


# -- ListContainerInstances ---------------------------------------------------


def test_250_hosts_page_as_100_100_50(cluster: LocalECS) -> None:
    """ListContainerInstances pages 250 hosts as 100, 100, 50 and returns each host once."""
    hosts = cluster.add_hosts(CLUSTER, 250)
    pages = list_all(cluster.client())
    assert [len(page) for page in pages] == [100, 100, 50]
    assert sorted(arn for page in pages for arn in page) == sorted(hosts)


def test_max_results_sets_the_page_size(cluster: LocalECS) -> None:
    """maxResults=40 pages 90 hosts as 40, 40, 10."""
    cluster.add_hosts(CLUSTER, 90)
    assert [len(page) for page in list_all(cluster.client(), maxResults=40)] == [40, 40, 10]


def test_exactly_one_full_page_has_no_next_token(cluster: LocalECS) -> None:
    """When the hosts fill the page exactly, no nextToken promises an empty page."""
    cluster.add_hosts(CLUSTER, 100)
    answer = cluster.client().list_container_instances(cluster=CLUSTER)
    assert len(answer["containerInstanceArns"]) == 100 and "nextToken" not in answer


@pytest.mark.parametrize("max_results", [0, 101])
def test_max_results_out_of_range_is_rejected(cluster: LocalECS, max_results: int) -> None:
    """maxResults outside 1..100 is an InvalidParameterException, as in ECS."""
    with pytest.raises(ClientError) as caught:
        cluster.client().list_container_instances(cluster=CLUSTER, maxResults=max_results)
    assert error_code(caught) == "InvalidParameterException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_next_token_is_bound_to_its_request(cluster: LocalECS) -> None:
    """A token replayed with another filter or status, or a forged one, is rejected."""
    cluster.add_hosts(CLUSTER, 120)
    client = cluster.client()
    token = client.list_container_instances(cluster=CLUSTER)["nextToken"]
    for other in ({"filter": "agentConnected == true"}, {"status": "ACTIVE"}):
        with pytest.raises(ClientError) as caught:
            client.list_container_instances(cluster=CLUSTER, nextToken=token, **other)
        assert error_code(caught) == "InvalidParameterException"
    with pytest.raises(ClientError) as caught:
        client.list_container_instances(cluster=CLUSTER, nextToken="not-a-token")
    assert error_code(caught) == "InvalidParameterException"


def test_paging_survives_hosts_leaving_between_pages(cluster: LocalECS) -> None:
    """A host deregistered between pages does not make the next page skip or repeat hosts."""
    hosts = cluster.add_hosts(CLUSTER, 150)
    client = cluster.client()
    first = client.list_container_instances(cluster=CLUSTER)
    cluster.deregister(CLUSTER, first["containerInstanceArns"][0])
    second = client.list_container_instances(cluster=CLUSTER, nextToken=first["nextToken"])
    seen = first["containerInstanceArns"] + second["containerInstanceArns"]
    assert len(seen) == len(set(seen)) == 150
    assert set(seen) == set(hosts)


def test_filter_agent_connected_excludes_disconnected_hosts(cluster: LocalECS) -> None:
    """`agentConnected == true` leaves out hosts whose agent is disconnected."""
    hosts = cluster.add_hosts(CLUSTER, 5)
    cluster.set_agent_connected(CLUSTER, hosts[1], False)
    cluster.set_agent_connected(CLUSTER, hosts[3], False)
    client = cluster.client()
    connected = client.list_container_instances(cluster=CLUSTER, filter="agentConnected == true")
    assert sorted(connected["containerInstanceArns"]) == sorted([hosts[0], hosts[2], hosts[4]])
    described = client.describe_container_instances(cluster=CLUSTER, containerInstances=[hosts[1]])
    assert described["containerInstances"][0]["agentConnected"] is False


def test_filter_on_instance_type_and_custom_attribute(cluster: LocalECS) -> None:
    """Attribute filters see the ecs.* attributes of the EC2 instance and custom attributes."""
    web = cluster.add_hosts(CLUSTER, 3, attributes={"role": "web"})
    batch = cluster.add_hosts(CLUSTER, 2, attributes={"role": "batch"}, instance_type="m5.large")
    client = cluster.client()

    def arns(expression: str) -> list[str]:
        return sorted(client.list_container_instances(cluster=CLUSTER, filter=expression)["containerInstanceArns"])

    assert arns("attribute:ecs.instance-type =~ t3.*") == sorted(web)
    assert arns("attribute:role == web") == sorted(web)
    assert arns("attribute:role == batch and attribute:ecs.instance-type == m5.large") == sorted(batch)
    assert arns("attribute:ecs.os-type == linux") == sorted(web + batch)


def test_filter_applies_before_paging(cluster: LocalECS) -> None:
    """With a filter, pages hold only matching hosts, and every match arrives once."""
    web = cluster.add_hosts(CLUSTER, 130, attributes={"role": "web"})
    cluster.add_hosts(CLUSTER, 70, attributes={"role": "batch"})
    pages = list_all(cluster.client(), filter="attribute:role == web")
    assert [len(page) for page in pages] == [100, 30]
    assert sorted(arn for page in pages for arn in page) == sorted(web)


def test_filter_on_task_group(cluster: LocalECS) -> None:
    """`task:group` selects hosts by the groups of the tasks running on them."""
    cluster.add_hosts(CLUSTER, 3)
    cluster.create_service(CLUSTER, "web")  # registers the task definition
    client = cluster.client()
    task_definition = client.describe_services(cluster=CLUSTER, services=["web"])["services"][0]["taskDefinition"]
    task = client.run_task(cluster=CLUSTER, taskDefinition=task_definition, group="service:web")["tasks"][0]
    listed = client.list_container_instances(cluster=CLUSTER, filter="task:group == service:web")
    assert listed["containerInstanceArns"] == [task["containerInstanceArn"]]
    others = client.list_container_instances(cluster=CLUSTER, filter="not(task:group == service:web)")
    assert len(others["containerInstanceArns"]) == 2


def test_bad_filter_is_rejected(cluster: LocalECS) -> None:
    """An expression the query language cannot parse is an InvalidParameterException."""
    cluster.add_hosts(CLUSTER, 1)
    with pytest.raises(ClientError) as caught:
        cluster.client().list_container_instances(cluster=CLUSTER, filter="agentConnected ==")
    assert error_code(caught) == "InvalidParameterException"
    assert "filter" in caught.value.response["Error"]["Message"]


def test_status_filter_and_default_include_draining(cluster: LocalECS) -> None:
    """Without status, DRAINING hosts are listed (as in ECS); status=ACTIVE leaves them out."""
    hosts = cluster.add_hosts(CLUSTER, 3)
    cluster.drain(CLUSTER, hosts[0])
    client = cluster.client()
    assert len(client.list_container_instances(cluster=CLUSTER)["containerInstanceArns"]) == 3
    active = client.list_container_instances(cluster=CLUSTER, status="ACTIVE")["containerInstanceArns"]
    assert sorted(active) == sorted(hosts[1:])
    cluster.activate(CLUSTER, hosts[0])
    assert len(client.list_container_instances(cluster=CLUSTER, status="ACTIVE")["containerInstanceArns"]) == 3


def test_unknown_cluster_is_cluster_not_found(ecs: LocalECS) -> None:
    """ListContainerInstances and DescribeServices on a missing cluster raise ClusterNotFoundException."""
    client = ecs.client()
    with pytest.raises(ClientError) as caught:
        client.list_container_instances(cluster="no-such-cluster")
    assert error_code(caught) == "ClusterNotFoundException"
    with pytest.raises(client.exceptions.ClusterNotFoundException):
        client.describe_services(cluster="no-such-cluster", services=["a"])


def test_describe_container_instances_takes_at_most_100(cluster: LocalECS) -> None:
    """DescribeContainerInstances accepts 100 instances and rejects 101."""
    hosts = cluster.add_hosts(CLUSTER, 101)
    client = cluster.client()
    described = client.describe_container_instances(cluster=CLUSTER, containerInstances=hosts[:100])
    assert len(described["containerInstances"]) == 100
    with pytest.raises(ClientError) as caught:
        client.describe_container_instances(cluster=CLUSTER, containerInstances=hosts)
    assert error_code(caught) == "InvalidParameterException"


def test_hosts_carry_the_attributes_of_real_ecs(cluster: LocalECS) -> None:
    """Registered hosts have ecs.instance-type, ecs.availability-zone and ecs.os-type, spread over zones."""
    hosts = cluster.add_hosts(CLUSTER, 3, instance_type="c5.xlarge", attributes={"team": "a"})
    described = cluster.client().describe_container_instances(cluster=CLUSTER, containerInstances=hosts)
    zones = set()
    for instance in described["containerInstances"]:
        attributes = {item["name"]: item.get("value") for item in instance["attributes"]}
        assert attributes["ecs.instance-type"] == "c5.xlarge"
        assert attributes["ecs.os-type"] == "linux"
        assert attributes["team"] == "a"
        assert instance["ec2InstanceId"].startswith("i-")
        zones.add(attributes["ecs.availability-zone"])
    assert len(zones) == 3


# -- services -----------------------------------------------------------------


def test_describe_services_takes_at_most_10(cluster: LocalECS) -> None:
    """DescribeServices with 10 services succeeds and with 11 is an InvalidParameterException."""
    names = [f"svc-{index:02}" for index in range(11)]
    for name in names:
        cluster.create_service(CLUSTER, name)
    client = cluster.client()
    assert len(client.describe_services(cluster=CLUSTER, services=names[:10])["services"]) == 10
    with pytest.raises(ClientError) as caught:
        client.describe_services(cluster=CLUSTER, services=names)
    assert error_code(caught) == "InvalidParameterException"


def test_list_services_pages_by_10_and_omits_deleted(cluster: LocalECS) -> None:
    """ListServices returns 10 per page by default, follows nextToken and leaves out deleted services."""
    for index in range(25):
        cluster.create_service(CLUSTER, f"svc-{index:02}")
    cluster.delete_service(CLUSTER, "svc-03")
    cluster.delete_service(CLUSTER, "svc-17")
    client = cluster.client()
    pages, params = [], {}
    while True:
        answer = client.list_services(cluster=CLUSTER, **params)
        pages.append(answer["serviceArns"])
        if "nextToken" not in answer:
            break
        params = {"nextToken": answer["nextToken"]}
    assert [len(page) for page in pages] == [10, 10, 3]
    names = sorted(arn.rsplit("/", 1)[-1] for page in pages for arn in page)
    assert names == [f"svc-{index:02}" for index in range(25) if index not in (3, 17)]
    with pytest.raises(ClientError) as caught:
        client.list_services(cluster=CLUSTER, maxResults=101)
    assert error_code(caught) == "InvalidParameterException"


def test_create_service_stores_what_moto_drops(cluster: LocalECS) -> None:
    """Placement constraints and deployment configuration survive create_service and show in DescribeServices."""
    constraints = [{"type": "distinctInstance"}, {"type": "memberOf", "expression": "attribute:role == web"}]
    deployment = {"maximumPercent": 100, "minimumHealthyPercent": 50}
    arn = cluster.create_service(
        CLUSTER,
        "web",
        desired_count=2,
        tags={"ecs-cluster-manager:managed": "true"},
        placement_constraints=constraints,
        deployment_configuration=deployment,
    )
    described = cluster.client().describe_services(cluster=CLUSTER, services=["web"], include=["TAGS"])
    service = described["services"][0]
    assert service["serviceArn"] == arn
    assert service["placementConstraints"] == constraints
    assert service["deploymentConfiguration"] == deployment
    assert service["desiredCount"] == 2 == cluster.desired_count(CLUSTER, "web")
    assert service["tags"] == [{"key": "ecs-cluster-manager:managed", "value": "true"}]
    assert service["schedulingStrategy"] == "REPLICA" and service["launchType"] == "EC2"


# -- faults ---------------------------------------------------------------------


def test_throttle_fault_reaches_boto3_as_throttling_exception(cluster: LocalECS) -> None:
    """An injected throttle is a ThrottlingException "Rate exceeded" to a client without retries."""
    cluster.fault_hook = fault_on("ListContainerInstances", Fault.throttle())
    with pytest.raises(ClientError) as caught:
        cluster.client(config=NO_RETRIES).list_container_instances(cluster=CLUSTER)
    assert error_code(caught) == "ThrottlingException"
    assert caught.value.response["Error"]["Message"] == "Rate exceeded"
    assert cluster.calls == [ApiCall("ecs", "ListContainerInstances", {"cluster": CLUSTER}, 400, "throttle")]


def test_limited_fault_lets_boto3_retries_succeed(cluster: LocalECS) -> None:
    """One throttle then success: a standard retry gets through, and the log shows both attempts."""
    cluster.fault_hook = fault_on("ListServices", Fault.throttle(), times=1)
    client = cluster.client(config=Config(retries={"total_max_attempts": 2, "mode": "standard"}))
    answer = client.list_services(cluster=CLUSTER)
    assert answer["ResponseMetadata"]["RetryAttempts"] == 1
    assert [(call.status, call.fault) for call in cluster.calls] == [(400, "throttle"), (200, None)]


def test_server_error_fault(cluster: LocalECS) -> None:
    """Fault.error gives a 5xx ServerException to an ECS client."""
    cluster.fault_hook = fault_on("DescribeServices", Fault.error(503))
    with pytest.raises(ClientError) as caught:
        cluster.client(config=NO_RETRIES).describe_services(cluster=CLUSTER, services=["a"])
    assert error_code(caught) == "ServerException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503


def test_query_protocol_faults_use_the_service_error_codes(ecs: LocalECS) -> None:
    """EC2 and CloudFormation clients see their own throttling codes in their own XML forms."""
    ecs.fault_hook = lambda request: Fault.throttle() if request.service in ("ec2", "cloudformation") else None
    with pytest.raises(ClientError) as caught:
        ecs.client("ec2", config=NO_RETRIES).describe_instances()
    assert error_code(caught) == "RequestLimitExceeded"
    with pytest.raises(ClientError) as caught:
        ecs.client("cloudformation", config=NO_RETRIES).describe_stacks(StackName="s")
    assert error_code(caught) == "Throttling"
    assert [(call.service, call.operation, call.fault) for call in ecs.calls] == [
        ("ec2", "DescribeInstances", "throttle"),
        ("cloudformation", "DescribeStacks", "throttle"),
    ]
    assert ecs.calls[1].params["StackName"] == "s"


def test_delay_fault_answers_late_but_normally(cluster: LocalECS) -> None:
    """Fault.delay holds the answer back, then answers as usual."""
    cluster.fault_hook = fault_on("DescribeClusters", Fault.delay(0.3))
    started = time.monotonic()
    answer = cluster.client().describe_clusters(clusters=[CLUSTER])
    assert time.monotonic() - started >= 0.3
    assert answer["clusters"][0]["clusterName"] == CLUSTER
    assert cluster.calls[-1].fault == "delay" and cluster.calls[-1].status == 200


def test_helpers_are_never_faulted_or_logged(cluster: LocalECS) -> None:
    """World-building goes on under a fault hook that fails everything, and leaves the log empty."""
    cluster.fault_hook = lambda request: Fault.error(500)
    hosts = cluster.add_hosts(CLUSTER, 2)
    cluster.create_service(CLUSTER, "web", desired_count=1, placement_constraints=[{"type": "distinctInstance"}])
    cluster.drain(CLUSTER, hosts[0])
    assert cluster.desired_count(CLUSTER, "web") == 1
    assert cluster.calls == []


# -- call log, reset, environment ------------------------------------------------


def test_call_log_counts_operations(cluster: LocalECS) -> None:
    """Every client call is logged with its parameters and status; count() tallies by operation."""
    cluster.add_hosts(CLUSTER, 120)
    cluster.clear_calls()
    client = cluster.client()
    list_all(client)
    client.describe_clusters(clusters=[CLUSTER])
    with pytest.raises(ClientError):
        client.list_container_instances(cluster=CLUSTER, maxResults=0)
    cluster.client("ec2").describe_instances()

    assert cluster.count("ListContainerInstances") == 3
    assert cluster.count("DescribeClusters") == 1
    assert cluster.count("DescribeInstances") == 0
    assert cluster.count("DescribeInstances", service="ec2") == 1
    statuses = [call.status for call in cluster.calls if call.operation == "ListContainerInstances"]
    assert statuses == [200, 200, 400]
    assert "nextToken" in cluster.calls[1].params
    cluster.clear_calls()
    assert cluster.calls == [] and cluster.count("DescribeClusters") == 0


def test_reset_empties_state_log_and_hook(cluster: LocalECS) -> None:
    """reset() forgets clusters, recorded calls and the fault hook."""
    cluster.client().list_clusters()
    cluster.fault_hook = lambda request: Fault.throttle()
    cluster.reset()
    assert cluster.calls == [] and cluster.fault_hook is None
    assert cluster.client().list_clusters()["clusterArns"] == []
    assert [call.operation for call in cluster.calls] == ["ListClusters"]  # no /moto-api/ entry


def test_env_points_a_subprocess_at_the_local_api(cluster: LocalECS, monkeypatch: pytest.MonkeyPatch) -> None:
    """env() sets endpoint, region and dummy credentials, drops AWS_PROFILE, and boto3 in a child uses it."""
    monkeypatch.setenv("AWS_PROFILE", "production")
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECS", "https://ecs.example.invalid")
    environment = cluster.env()
    assert "AWS_PROFILE" not in environment and "AWS_ENDPOINT_URL_ECS" not in environment
    assert environment["AWS_ENDPOINT_URL"] == cluster.endpoint_url
    assert environment["AWS_REGION"] == environment["AWS_DEFAULT_REGION"] == cluster.region
    assert environment["AWS_ACCESS_KEY_ID"] == environment["AWS_SECRET_ACCESS_KEY"] == "testing"
    child = "import boto3, json; print(json.dumps(boto3.client('ecs').list_clusters()['clusterArns']))"
    result = subprocess.run(
        [sys.executable, "-c", child], env=environment, capture_output=True, text=True, timeout=60, check=True
    )
    assert [arn.rsplit("/", 1)[-1] for arn in json.loads(result.stdout)] == [CLUSTER]
    assert cluster.count("ListClusters") == 1


def test_second_instance_has_its_own_limits_and_stops() -> None:
    """A second LocalECS runs beside the shared one with its own limits, and stop() closes its port."""
    with LocalECS(describe_services_limit=2) as local:
        assert local.endpoint_url.startswith("http://127.0.0.1:")
        local.create_cluster(CLUSTER)
        with pytest.raises(ClientError) as caught:
            local.client().describe_services(cluster=CLUSTER, services=["a", "b", "c"])
        assert error_code(caught) == "InvalidParameterException"
        url = local.endpoint_url
    with pytest.raises(RuntimeError):
        _ = local.endpoint_url
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)


@pytest.mark.slow
def test_5000_hosts_are_built_and_listed_quickly(cluster: LocalECS) -> None:
    """ECS's largest cluster, 5,000 hosts, is built in well under a minute and lists in 50 pages."""
    started = time.monotonic()
    hosts = cluster.add_hosts(CLUSTER, 5000)
    built = time.monotonic() - started
    pages = list_all(cluster.client(), filter="agentConnected == true")
    assert [len(page) for page in pages] == [100] * 50
    assert len({arn for page in pages for arn in page}) == len(hosts) == 5000
    assert built < 60, f"add_hosts(5000) took {built:.1f}s"
