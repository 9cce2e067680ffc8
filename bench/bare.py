"""The floor under the daemon: the calls of a converged pass through a bare boto3 client.

The same requests `reconcile.run_pass` makes when nothing needs changing and
the host count is read cheaply (no host filter: DescribeClusters, the DRAINING
listing and the disconnected listing, every page; then DescribeServices ten at
a time with tags) through one plain boto3 client, and nothing else: no retry
wrapper, no dataclasses, no planning, no logs. Its CPU time is what boto3 and
the HTTP stack cost for those calls; the daemon's own cost is the difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import boto3

AGENT_DISCONNECTED = "agentConnected == false"


def client() -> Any:
    """One ECS client for the process, configured from the environment."""
    return boto3.session.Session().client("ecs")


def _listed(ecs: Any, **params: Any) -> int:
    """How many container instances a listing returns, across every page."""
    listed = 0
    params["maxResults"] = 100
    while True:
        page = ecs.list_container_instances(**params)
        listed += len(page["containerInstanceArns"])
        if not page.get("nextToken"):
            return listed
        params["nextToken"] = page["nextToken"]


def run_pass(ecs: Any, cluster: str, services: Sequence[str]) -> tuple[int, ...]:
    """Read the host count cheaply and describe the services; returns the reading."""
    registered = ecs.describe_clusters(clusters=[cluster])["clusters"][0]["registeredContainerInstancesCount"]
    draining = _listed(ecs, cluster=cluster, status="DRAINING")
    disconnected = _listed(ecs, cluster=cluster, status="ACTIVE", filter=AGENT_DISCONNECTED)
    for start in range(0, len(services), 10):
        ecs.describe_services(cluster=cluster, services=list(services[start : start + 10]), include=["TAGS"])
    return registered, draining, disconnected
