"""Who this process is when it runs as an ECS task: the task metadata endpoint (v4), read once at start-up."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping

import structlog

from ecs_cluster_manager.model.models import TaskIdentity

log = structlog.get_logger(__name__)


def task_identity(environ: Mapping[str, str], timeout: float = 2.0) -> TaskIdentity | None:
    """Read the ECS task metadata endpoint (v4) when this process runs as an ECS task."""
    base = environ.get("ECS_CONTAINER_METADATA_URI_V4")
    if not base:
        return None
    try:
        with urllib.request.urlopen(f"{base}/task", timeout=timeout) as response:  # noqa: S310 - the agent's own URL
            document = json.load(response)
    except (OSError, ValueError) as error:
        log.warning("task_metadata_unavailable", error=str(error))
        return None
    return TaskIdentity(
        cluster=document.get("Cluster"), service_name=document.get("ServiceName"), task_arn=document.get("TaskARN")
    )
