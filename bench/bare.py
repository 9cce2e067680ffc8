"""The floor under the daemon: the calls of a converged pass through a bare boto3 client.

The same requests `reconcile.run_pass` makes when nothing needs changing (every
ListContainerInstances page with the host filter, DescribeServices ten at a
time with tags) through one plain boto3 client, and nothing else: no retry
wrapper, no dataclasses, no planning, no logs. Its CPU time is what boto3 and
the HTTP stack cost for those calls; the daemon's own cost is the difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import boto3

AGENT_CONNECTED = "agentConnected == true"


def client() -> Any:
    """One ECS client for the process, configured from the environment."""
    return boto3.session.Session().client("ecs")


def run_pass(ecs: Any, cluster: str, services: Sequence[str]) -> int:
    """Count the usable hosts and describe the services; returns the host count."""
    hosts = 0
    params: dict[str, Any] = {"cluster": cluster, "status": "ACTIVE", "filter": AGENT_CONNECTED, "maxResults": 100}
    while True:
        page = ecs.list_container_instances(**params)
        hosts += len(page["containerInstanceArns"])
        if not page.get("nextToken"):
            break
        params["nextToken"] = page["nextToken"]
    for start in range(0, len(services), 10):
        ecs.describe_services(cluster=cluster, services=list(services[start : start + 10]), include=["TAGS"])
    return hosts
