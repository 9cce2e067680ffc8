"""AWS Lambda entry point: one reconcile pass per relevant EventBridge event.

Configured by the same environment variables as the daemon (CLUSTER, SERVICES,
SERVICE_REGEX, MANAGED_TAG, DRY_RUN, ...). Two kinds of event start a pass:
an "ECS Container Instance State Change" for the configured cluster (a host came,
went, drained or lost its agent) and a "Scheduled Event" (the safety net that
catches anything an event missed). Anything else is ignored with a reason.

The configuration, the logging set-up and the ECS client are made once per
Lambda container and reused by warm invocations. A pass has no scale-down
memory between invocations, so it acts at once, as `run.py --once` does.

A warm container also keeps the host store of its last pass (hosts.py, with no
hold, listed exactly on every pass: the same code that counts for the daemon
and `check`): an event that changes neither the status nor the agent of an
instance it knows (a task placed or stopped, a duplicate, an older version)
starts no pass. A cold container knows no instance and runs the pass.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from ecs_cluster_manager import config as settings
from ecs_cluster_manager.aws.ecs import Api
from ecs_cluster_manager.engine.passes import run_pass
from ecs_cluster_manager.model.holds import hold_seconds
from ecs_cluster_manager.model.names import name_of
from ecs_cluster_manager.observe import events
from ecs_cluster_manager.observe.memory import Memory
from ecs_cluster_manager.ops import logs

log = structlog.get_logger(__name__)

CONTAINER_INSTANCE_STATE_CHANGE = "ECS Container Instance State Change"
SCHEDULED_EVENT = "Scheduled Event"


@dataclass(frozen=True)
class _Runtime:
    config: settings.Config
    api: Api
    memory: Memory


_runtime: _Runtime | None = None


def reset() -> None:
    """Forget the cached configuration and client, so the next invocation reads the environment again."""
    global _runtime
    _runtime = None


def _get_runtime() -> _Runtime:
    """The per-container configuration and client, built on the first invocation.

    A ConfigError (or a CredentialsError from the client) propagates: Lambda
    reports it as the invocation's error, with the message naming the variable.
    Nothing is cached on failure, so a fixed environment works on the next call.
    """
    global _runtime
    if _runtime is None:
        # One pass per invocation and no loop to run the next one: like --once, a pass sends every write,
        # each waiting for its token of the API budget, instead of deferring some.
        config = dataclasses.replace(settings.load([], os.environ), once=True)
        # CloudWatch Logs stores lines as they are: JSON keeps them queryable with Logs Insights.
        logs.configure(config.log_level, "json")
        # A pass here keeps no scale-down hold and lists every filter, so every agent change can change a decision.
        memory = Memory(hold=hold_seconds(config.scale_down_after, config.interval, once=config.once), resync=0.0)
        api = Api(config.region, config.profile, api_budget=config.api_budget)
        _runtime = _Runtime(config=config, api=api, memory=memory)
        log.info("lambda_start", cluster=config.cluster, region=_runtime.api.region, dry_run=config.dry_run)
        if config.ready_attribute is not None:
            log.warning(
                "ready_attribute_ignored",
                attribute=config.ready_attribute,
                message="READY_ATTRIBUTE is kept by the daemon's loop only: the Lambda handler neither puts nor "
                "deletes it",
            )
    return _runtime


def relevance(event: Mapping[str, Any], config: settings.Config) -> str | None:
    """None when the event should start a pass, else why it is ignored."""
    detail_type = event.get("detail-type")
    if detail_type == SCHEDULED_EVENT:
        return None
    if detail_type == CONTAINER_INSTANCE_STATE_CHANGE:
        detail = event.get("detail")
        cluster_arn = detail.get("clusterArn") if isinstance(detail, Mapping) else None
        if not isinstance(cluster_arn, str) or not cluster_arn:
            return "event has no detail.clusterArn"
        if name_of(cluster_arn) != config.cluster_name:
            return f"event is for cluster {name_of(cluster_arn)!r}, not {config.cluster_name!r}"
        return None
    if detail_type is None:
        return "event has no detail-type"
    return f"unsupported detail-type {detail_type!r}"


def handler(event: Mapping[str, Any], context: object) -> dict[str, Any]:
    """Run one pass for a relevant event; return the pass summary, or {"ignored": true, "reason": ...}."""
    runtime = _get_runtime()
    if not isinstance(event, Mapping):
        event = {}
    reason = relevance(event, runtime.config)
    if reason is None and event.get("detail-type") == CONTAINER_INSTANCE_STATE_CHANGE:
        try:
            change = events.parse_document(dict(event))
        except events.MalformedEvent as error:
            change = events.Ignored(f"malformed event: {error}")
        if isinstance(change, events.Ignored):
            reason = change.reason
        elif isinstance(change, events.InstanceChange):
            reason = _relevance(runtime.memory, change)
        else:  # a task event under the container instance detail-type: the Lambda handler keeps no readiness
            reason = events.TASK_NO_CHANGE
    if reason is not None:
        log.info("event_ignored", cluster=runtime.config.cluster, detail_type=event.get("detail-type"), reason=reason)
        return {"ignored": True, "reason": reason}
    log.info(
        "event",
        cluster=runtime.config.cluster,
        detail_type=event.get("detail-type"),
        event_id=event.get("id"),
        request_id=getattr(context, "aws_request_id", None),
    )
    report = run_pass(runtime.api, runtime.config, runtime.memory)
    return report.summary()


def _relevance(memory: Memory, change: events.InstanceChange) -> str | None:
    """Take the change into the warm store: None when it can change a decision (always, in a cold container)."""
    cold = memory.store.cold
    reason = memory.store.observe_event(dataclasses.replace(change, arrived=time.monotonic()))
    return None if cold else reason
