"""The local API's attributes: PutAttributes, DeleteAttributes and ListAttributes as ECS answers them,
and placement by attributes put through the API. Every check goes through a plain boto3 client."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from localecs import LocalECS

CLUSTER = "attributes"
READY = "ecs-cluster-manager.ready"
READY_CONSTRAINT = [{"type": "memberOf", "expression": f"attribute:{READY} == true"}]


def error_code(caught: pytest.ExceptionInfo[ClientError]) -> str:
    return str(caught.value.response["Error"]["Code"])


def custom_attributes(local: LocalECS, host: str) -> dict[str, Any]:
    """A host's attributes as DescribeContainerInstances returns them, without the ecs.* ones."""
    [described] = local.client().describe_container_instances(cluster=CLUSTER, containerInstances=[host])[
        "containerInstances"
    ]
    return {a["name"]: a.get("value") for a in described["attributes"] if not a["name"].startswith("ecs.")}


def list_every_page(local: LocalECS, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page of ListAttributes for the cluster's container instances, following nextToken."""
    client = local.client()
    pages = []
    while True:
        answer = client.list_attributes(cluster=CLUSTER, targetType="container-instance", **params)
        pages.append(answer["attributes"])
        if not answer.get("nextToken"):
            return pages
        params["nextToken"] = answer["nextToken"]


@pytest.fixture
def hosts(ecs: LocalECS) -> list[str]:
    """A clean local ECS with one cluster of three hosts; their ARNs."""
    ecs.create_cluster(CLUSTER)
    return ecs.add_hosts(CLUSTER, 3)


def short_id(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def test_put_and_delete_take_a_full_arn_with_or_without_target_type_and_an_id_with_it(
    ecs: LocalECS, hosts: list[str]
) -> None:
    """A full ARN (with or without targetType) and a short id with targetType name the host; DescribeContainerInstances
    shows the attribute; DeleteAttributes without a value removes it (moto keeps it unless the value matches)."""
    client = ecs.client()
    targets = [
        {"targetId": hosts[0]},
        {"targetId": hosts[1], "targetType": "container-instance"},
        {"targetId": short_id(hosts[2]), "targetType": "container-instance"},
    ]
    for target in targets:
        client.put_attributes(cluster=CLUSTER, attributes=[{"name": READY, "value": "true", **target}])
    assert [custom_attributes(ecs, host) for host in hosts] == [{READY: "true"}] * 3
    for target in targets:
        client.delete_attributes(cluster=CLUSTER, attributes=[{"name": READY, **target}])
    assert [custom_attributes(ecs, host) for host in hosts] == [{}] * 3


def test_a_short_id_without_target_type_is_rejected(ecs: LocalECS, hosts: list[str]) -> None:
    """The model: targetType "is required if you use the short form ID"; moto accepts an id without it."""
    client = ecs.client()
    for call in (client.put_attributes, client.delete_attributes):
        with pytest.raises(ClientError) as caught:
            call(cluster=CLUSTER, attributes=[{"name": READY, "value": "true", "targetId": short_id(hosts[0])}])
        assert error_code(caught) == "InvalidParameterException"
    assert custom_attributes(ecs, hosts[0]) == {}


def test_an_unknown_target_is_target_not_found(ecs: LocalECS, hosts: list[str]) -> None:
    """An id or ARN of no host of the cluster is a TargetNotFoundException, and nothing of the call is applied."""
    ecs.create_cluster("elsewhere")
    [other] = ecs.add_hosts("elsewhere", 1)
    client = ecs.client()
    unknown = [
        {"targetId": "0123456789abcdef0123456789abcdef", "targetType": "container-instance"},
        {"targetId": hosts[0].replace(short_id(hosts[0]), "0123456789abcdef0123456789abcdef")},
        {"targetId": other},
    ]
    for target in unknown:
        for call in (client.put_attributes, client.delete_attributes):
            with pytest.raises(ClientError) as caught:
                call(cluster=CLUSTER, attributes=[{"name": "a", "value": "1", "targetId": hosts[1]},
                                                  {"name": READY, "value": "true", **target}])
            assert error_code(caught) == "TargetNotFoundException", target
    assert custom_attributes(ecs, hosts[1]) == {}


def test_at_most_10_attributes_a_call(ecs: LocalECS, hosts: list[str]) -> None:
    """10 attributes in one PutAttributes are set; 11 are an InvalidParameterException, for DeleteAttributes too."""
    client = ecs.client()
    ten = [{"name": f"label-{i}", "value": str(i), "targetId": hosts[i % 3]} for i in range(10)]
    client.put_attributes(cluster=CLUSTER, attributes=ten)
    eleven = [*ten, {"name": "label-10", "value": "10", "targetId": hosts[0]}]
    for call in (client.put_attributes, client.delete_attributes):
        with pytest.raises(ClientError) as caught:
            call(cluster=CLUSTER, attributes=eleven)
        assert error_code(caught) == "InvalidParameterException"
    assert sum(len(custom_attributes(ecs, host)) for host in hosts) == 10


def test_at_most_10_custom_attributes_a_host(ecs: LocalECS, hosts: list[str]) -> None:
    """An 11th custom attribute on one host is an AttributeLimitExceededException; replacing a value is not."""
    client = ecs.client()
    client.put_attributes(
        cluster=CLUSTER, attributes=[{"name": f"label-{i}", "value": "x", "targetId": hosts[0]} for i in range(10)]
    )
    client.put_attributes(cluster=CLUSTER, attributes=[{"name": "label-0", "value": "y", "targetId": hosts[0]}])
    with pytest.raises(ClientError) as caught:
        client.put_attributes(cluster=CLUSTER, attributes=[{"name": "label-10", "value": "x", "targetId": hosts[0]}])
    assert error_code(caught) == "AttributeLimitExceededException"
    assert len(custom_attributes(ecs, hosts[0])) == 10 and custom_attributes(ecs, hosts[0])["label-0"] == "y"


def test_list_attributes_filters_by_name_and_by_name_and_value(ecs: LocalECS, hosts: list[str]) -> None:
    """A name alone lists every host with it, whatever its value (moto lists only value-less ones); a name and a
    value list those equal; a value without a name is refused, as the model says."""
    client = ecs.client()
    client.put_attributes(
        cluster=CLUSTER,
        attributes=[
            {"name": READY, "value": "true", "targetId": hosts[0]},
            {"name": READY, "value": "false", "targetId": hosts[1]},
            {"name": "flag", "targetId": hosts[2]},
        ],
    )

    def listed(**params: Any) -> list[tuple[str, str, Any]]:
        return sorted((a["targetId"], a["name"], a.get("value")) for page in list_every_page(ecs, **params)
                      for a in page)

    assert listed(attributeName=READY) == sorted([(hosts[0], READY, "true"), (hosts[1], READY, "false")])
    assert listed(attributeName=READY, attributeValue="true") == [(hosts[0], READY, "true")]
    assert listed(attributeName="flag") == [(hosts[2], "flag", None)]
    assert listed(attributeName="ecs.os-type", attributeValue="linux") == sorted(
        (host, "ecs.os-type", "linux") for host in hosts
    )
    everything = listed()
    assert (hosts[1], READY, "false") in everything and len(everything) > 3
    assert {a["targetType"] for page in list_every_page(ecs) for a in page} == {"container-instance"}
    with pytest.raises(ClientError) as caught:
        client.list_attributes(cluster=CLUSTER, targetType="container-instance", attributeValue="true")
    assert error_code(caught) == "InvalidParameterException"


def test_list_attributes_pages(ecs: LocalECS) -> None:
    """ListAttributes returns 100 a page by default, maxResults pages smaller, and every attribute arrives once."""
    ecs.create_cluster(CLUSTER)
    hosts = ecs.add_hosts(CLUSTER, 130, attributes={READY: "true"})
    pages = list_every_page(ecs, attributeName=READY)
    assert [len(page) for page in pages] == [100, 30]
    assert sorted(a["targetId"] for page in pages for a in page) == sorted(hosts)
    assert [len(page) for page in list_every_page(ecs, attributeName=READY, maxResults=50)] == [50, 50, 30]
    client = ecs.client()
    token = client.list_attributes(cluster=CLUSTER, targetType="container-instance", attributeName=READY,
                                   maxResults=10)["nextToken"]
    with pytest.raises(ClientError) as caught:
        client.list_attributes(cluster=CLUSTER, targetType="container-instance", attributeName="other",
                               nextToken=token)
    assert error_code(caught) == "InvalidParameterException"
    for bad in (0, 101):
        with pytest.raises(ClientError) as caught:
            client.list_attributes(cluster=CLUSTER, targetType="container-instance", maxResults=bad)
        assert error_code(caught) == "InvalidParameterException"


def test_attribute_calls_on_an_unknown_cluster_are_cluster_not_found(ecs: LocalECS) -> None:
    """PutAttributes, DeleteAttributes and ListAttributes on a missing cluster raise ClusterNotFoundException."""
    client = ecs.client()
    attribute = [{"name": READY, "value": "true", "targetId": "abc", "targetType": "container-instance"}]
    for call in (
        lambda: client.put_attributes(cluster="missing", attributes=attribute),
        lambda: client.delete_attributes(cluster="missing", attributes=attribute),
        lambda: client.list_attributes(cluster="missing", targetType="container-instance"),
    ):
        with pytest.raises(ClientError) as caught:
            call()
        assert error_code(caught) == "ClusterNotFoundException"


# -- placement by attributes ------------------------------------------------------


def test_a_ready_constraint_places_only_on_hosts_with_the_attribute_true(ecs: LocalECS, hosts: list[str]) -> None:
    """memberOf(attribute:ecs-cluster-manager.ready == true) places on hosts PutAttributes marked true, and on a host
    as soon as it is marked; a deleted attribute stops new placements there but never stops a running task."""
    ecs.scheduler.enabled = True
    client = ecs.client()
    client.put_attributes(
        cluster=CLUSTER,
        attributes=[
            {"name": READY, "value": "true", "targetId": hosts[0]},
            {"name": READY, "value": "false", "targetId": hosts[1]},
        ],
    )
    ecs.create_service(
        CLUSTER, "daemon", desired_count=3, placement_constraints=[{"type": "distinctInstance"}, *READY_CONSTRAINT]
    )
    assert [t["containerInstanceArn"] for t in ecs.tasks(CLUSTER, "daemon")] == [hosts[0]]
    client.put_attributes(
        cluster=CLUSTER,
        attributes=[
            {"name": READY, "value": "true", "targetId": short_id(hosts[2]), "targetType": "container-instance"}
        ],
    )
    placed = ecs.tasks(CLUSTER, "daemon")
    assert sorted(t["containerInstanceArn"] for t in placed) == sorted([hosts[0], hosts[2]])
    client.delete_attributes(cluster=CLUSTER, attributes=[{"name": READY, "targetId": hosts[0]}])
    client.put_attributes(cluster=CLUSTER, attributes=[{"name": READY, "value": "false", "targetId": hosts[2]}])
    assert sorted(t["taskArn"] for t in ecs.tasks(CLUSTER, "daemon")) == sorted(t["taskArn"] for t in placed)
    # Its task stopped, the host without the attribute takes no new one.
    task_on_first = next(t["taskArn"] for t in placed if t["containerInstanceArn"] == hosts[0])
    client.stop_task(cluster=CLUSTER, task=task_on_first, reason="make room")
    assert [t["containerInstanceArn"] for t in ecs.tasks(CLUSTER, "daemon")] == [hosts[2]]
    service = client.describe_services(cluster=CLUSTER, services=["daemon"])["services"][0]
    assert "is missing an attribute required by your task" in service["events"][0]["message"]
