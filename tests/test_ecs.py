"""The boto3 wrapper: exact request parameters, paging, batching, retries and error translation.

botocore's Stubber checks each call's parameters exactly, which moto cannot:
moto ignores `filter`, never pages and accepts any number of services.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from botocore.stub import Stubber

from ecs_cluster_manager.aws import ecs
from ecs_cluster_manager.model import models
from ecs_cluster_manager.observe.filters import AGENT_CONNECTED, eligible_expression

CLUSTER = "prod"


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> ecs.Api:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return ecs.Api("us-east-1", max_backoff=0.01)


@pytest.fixture
def stub(api: ecs.Api) -> Iterator[Stubber]:
    with Stubber(api._ecs) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def arns(start: int, count: int) -> list[str]:
    return [f"arn:aws:ecs:us-east-1:123456789012:container-instance/prod/{i:032x}" for i in range(start, start + count)]


def test_listing_hosts_follows_every_page_with_the_agent_filter(api: ecs.Api, stub: Stubber) -> None:
    """Hosts are counted over all pages, asking for ACTIVE instances with agentConnected == true, 100 a page."""
    expected = {"cluster": CLUSTER, "status": "ACTIVE", "filter": "agentConnected == true", "maxResults": 100}
    stub.add_response("list_container_instances", {"containerInstanceArns": arns(0, 100), "nextToken": "t1"}, expected)
    stub.add_response(
        "list_container_instances",
        {"containerInstanceArns": arns(100, 100), "nextToken": "t2"},
        {**expected, "nextToken": "t1"},
    )
    stub.add_response(
        "list_container_instances", {"containerInstanceArns": arns(200, 50)}, {**expected, "nextToken": "t2"}
    )
    assert len(api.list_container_instances(CLUSTER, "ACTIVE", AGENT_CONNECTED)) == 250


def test_listing_hosts_with_member_of_expression(api: ecs.Api, stub: Stubber) -> None:
    """A memberOf expression is ANDed with the agent filter and evaluated by ECS."""
    expression = eligible_expression(["attribute:role == web", "attribute:ecs.os-type == linux"])
    assert expression == "agentConnected == true and (attribute:role == web) and (attribute:ecs.os-type == linux)"
    stub.add_response(
        "list_container_instances",
        {"containerInstanceArns": arns(0, 3)},
        {"cluster": CLUSTER, "status": "ACTIVE", "filter": expression, "maxResults": 100},
    )
    assert len(api.list_container_instances(CLUSTER, "ACTIVE", expression)) == 3


def test_a_failed_page_fails_the_whole_count(api: ecs.Api, stub: Stubber) -> None:
    """When page 2 fails for good, no partial count comes back."""
    stub.add_response("list_container_instances", {"containerInstanceArns": arns(0, 100), "nextToken": "t1"})
    for _ in range(api.attempts):
        stub.add_client_error("list_container_instances", "ServerException", "boom", http_status_code=500)
    with pytest.raises(ecs.TransientError, match="ListContainerInstances"):
        len(api.list_container_instances(CLUSTER, "ACTIVE", AGENT_CONNECTED))


def test_transient_errors_are_retried(api: ecs.Api, stub: Stubber) -> None:
    """Throttling is retried by tenacity and the call then succeeds."""
    stub.add_client_error("list_container_instances", "ThrottlingException", "Rate exceeded", http_status_code=400)
    stub.add_client_error("list_container_instances", "ThrottlingException", "Rate exceeded", http_status_code=400)
    stub.add_response("list_container_instances", {"containerInstanceArns": arns(0, 2)})
    assert len(api.list_container_instances(CLUSTER, "ACTIVE", AGENT_CONNECTED)) == 2
    assert api.retries["ListContainerInstances"] == 2


def test_permanent_errors_are_not_retried(api: ecs.Api, stub: Stubber) -> None:
    """A rejected request fails at once and comes out as the project's own type."""
    stub.add_client_error("list_container_instances", "ClusterNotFoundException", "Cluster not found.")
    with pytest.raises(ecs.ClusterNotFound):
        len(api.list_container_instances(CLUSTER, "ACTIVE", AGENT_CONNECTED))
    stub.add_client_error("update_service", "AccessDeniedException", "no")
    with pytest.raises(ecs.AccessDenied):
        api.set_desired_count(CLUSTER, "agent", 3)
    assert not api.retries


def test_no_request_starts_once_shutting_down(api: ecs.Api, stub: Stubber) -> None:
    """Once the stop event is set no new request is sent, so SIGTERM is not held up by the reads left."""
    api.stop.set()
    with pytest.raises(ecs.ShuttingDown):
        len(api.list_container_instances(CLUSTER, "ACTIVE", AGENT_CONNECTED))


def test_retries_end_when_shutting_down(api: ecs.Api, stub: Stubber) -> None:
    """A stop requested during a call ends its retries: the fault comes out without a second attempt."""

    def stop_after_first_attempt(**_: object) -> None:
        api.stop.set()

    api._ecs.meta.events.register("after-call.ecs.ListContainerInstances", stop_after_first_attempt)
    stub.add_client_error("list_container_instances", "ThrottlingException", "Rate exceeded", http_status_code=400)
    with pytest.raises(ecs.TransientError):
        len(api.list_container_instances(CLUSTER, "ACTIVE", AGENT_CONNECTED))
    assert not api.retries


def test_describe_services_in_batches_of_ten_with_tags(api: ecs.Api, stub: Stubber) -> None:
    """23 services take 3 DescribeServices calls of at most 10, each asking for tags."""
    names = [f"svc{i}" for i in range(23)]
    for start in range(0, 23, 10):
        batch = names[start : start + 10]
        stub.add_response(
            "describe_services",
            {
                "services": [
                    {
                        "serviceArn": f"arn:aws:ecs:us-east-1:123456789012:service/prod/{n}",
                        "serviceName": n,
                        "status": "ACTIVE",
                        "desiredCount": 1,
                        "tags": [{"key": "team", "value": "sre"}],
                        "placementConstraints": [{"type": "distinctInstance"}],
                        "deploymentConfiguration": {"minimumHealthyPercent": 50, "maximumPercent": 100},
                    }
                    for n in batch
                    if n != "svc22"
                ],
                "failures": [{"arn": "svc22", "reason": "MISSING"}] if "svc22" in batch else [],
            },
            {"cluster": CLUSTER, "services": batch, "include": ["TAGS"]},
        )
    lookup = api.describe_services(CLUSTER, names)
    assert len(lookup.services) == 22
    assert lookup.failures == (models.ServiceFailure("svc22", "MISSING"),)
    first = lookup.services[0]
    assert first.tags == {"team": "sre"} and first.distinct_instance and first.minimum_healthy_percent == 50


def test_list_services_pages(api: ecs.Api, stub: Stubber) -> None:
    """ListServices asks for 100 a page and follows nextToken."""
    stub.add_response(
        "list_services", {"serviceArns": ["a"], "nextToken": "n"}, {"cluster": CLUSTER, "maxResults": 100}
    )
    stub.add_response(
        "list_services", {"serviceArns": ["b"]}, {"cluster": CLUSTER, "maxResults": 100, "nextToken": "n"}
    )
    assert api.list_services(CLUSTER) == ["a", "b"]


def test_update_changes_only_desired_count(api: ecs.Api, stub: Stubber) -> None:
    """UpdateService is sent with cluster, service and desiredCount only (no new deployment)."""
    stub.add_response("update_service", {"service": {}}, {"cluster": CLUSTER, "service": "agent", "desiredCount": 7})
    api.set_desired_count(CLUSTER, "agent", 7)


def test_a_looping_next_token_is_an_error(api: ecs.Api, stub: Stubber) -> None:
    """A server that hands back the same token twice cannot keep the pass forever."""
    stub.add_response("list_container_instances", {"containerInstanceArns": [], "nextToken": "same"})
    stub.add_response("list_container_instances", {"containerInstanceArns": [], "nextToken": "same"})
    with pytest.raises(ecs.EcsError, match="nextToken"):
        len(api.list_container_instances(CLUSTER, "ACTIVE", AGENT_CONNECTED))


def test_missing_profile_is_a_credentials_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown AWS profile is reported naming AWS_PROFILE."""
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(ecs.CredentialsError, match="AWS_PROFILE"):
        ecs.Api("us-east-1", "no-such-profile")
