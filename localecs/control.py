"""The control surface of a running local ECS API: change the cluster while a daemon watches it.

`python -m localecs add-host|drain|activate|deregister|disconnect|connect|hosts`
POST a small JSON document to CONTROL_PATH on the server; `handle` carries it
out with the LocalECS world-building helpers, which do what ECS (or the EC2
host and its agent) would do. Not an AWS API: nothing in the product calls it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import LocalECS

ACTIONS = ("hosts", "add-host", "drain", "activate", "deregister", "disconnect", "connect")


class ControlError(ValueError):
    """The request cannot be carried out; the message says why."""


def _pick_host(local: LocalECS, cluster: str, host: str | None, action: str) -> dict[str, Any]:
    """The host named by ARN, container instance id or EC2 id; by default the newest one it applies to."""
    hosts = local.hosts(cluster)
    if host:
        for candidate in hosts:
            arn = candidate["containerInstanceArn"]
            if host in (arn, arn.rsplit("/", 1)[-1], candidate["ec2InstanceId"]):
                return candidate
        raise ControlError(f"no host {host!r} in cluster {cluster!r} (`python -m localecs hosts` lists them)")
    wanted = {
        "drain": lambda h: h["status"] == "ACTIVE",
        "activate": lambda h: h["status"] == "DRAINING",
        "disconnect": lambda h: h["agentConnected"] and h["status"] == "ACTIVE",
        "connect": lambda h: not h["agentConnected"],
        "deregister": lambda h: True,
    }[action]
    for candidate in reversed(hosts):
        if wanted(candidate):
            return candidate
    raise ControlError(f"no host in cluster {cluster!r} to {action}")


def handle(local: LocalECS, action: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """Carry out one control request; returns the HTTP status and a JSON answer."""
    try:
        request = json.loads(body or b"{}")
        if not isinstance(request, dict):
            raise ControlError("the request body must be a JSON object")
        if action not in ACTIONS:
            raise ControlError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
        cluster = str(request.get("cluster") or "")
        if not cluster:
            raise ControlError("cluster: required")
        if action == "hosts":
            return 200, {"hosts": local.hosts(cluster)}
        if action == "add-host":
            count = int(request.get("count", 1))
            attributes = {str(k): str(v) for k, v in (request.get("attributes") or {}).items()}
            try:
                arns = local.add_hosts(cluster, count, attributes=attributes)
            except LookupError as error:
                raise ControlError(str(error)) from None
            return 200, {"added": arns}
        host = _pick_host(local, cluster, request.get("host"), action)
        arn = host["containerInstanceArn"]
        if action == "drain":
            local.drain(cluster, arn)
        elif action == "activate":
            local.activate(cluster, arn)
        elif action == "deregister":
            local.deregister(cluster, arn)
        else:
            local.set_agent_connected(cluster, arn, action == "connect")
        return 200, {action: arn, "ec2InstanceId": host["ec2InstanceId"]}
    except (ControlError, ValueError, TypeError) as error:
        return 400, {"error": str(error)}
