"""What `check` finds: the audit of the managed services, without changing anything.

Finds the services the daemon would manage (the same discovery code), then
reports each problem that would stop the daemon from keeping one task per host:
a missing or inactive service, a DAEMON or Fargate service, a malformed sizing
tag, a placement that lets tasks stack on one host, a deployment configuration
that deadlocks a rolling deployment, and a CloudFormation stack that may reset
desiredCount (unless the service's template says it leaves DesiredCount out).
Every managed service gets at least one line, `ok` when clean, and a
`coverage` line saying how many of its eligible hosts run its task, with the
hosts that lack it (EC2 id and ECS's placement failure), the hosts with more
than one task, the tasks on hosts that are not eligible and the tasks of an
older task definition.

check keeps no memory between runs, so "missing its task longer than
COVERAGE_GRACE" is read from ECS itself: a missing host is an error when the
service's unbroken run of placement-failure events (newer than its last
"steady state" event) began more than COVERAGE_GRACE ago; a missing host with
no such failure (ECS has not tried yet, or desiredCount is still below the
target) is a warning. Hosts beyond the target the sizing tags ask for
(`ecs-cluster-manager:max` 2 on 6 hosts leaves 4) are not missing.

The rules are pure functions over `ecs.Service` (`findings_for`); `collect`
reads the cluster; check.py prints. Exit 1 when any finding is an error, else 0.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from ecs_cluster_manager.aws.ecs import AccessDenied, Api, ClusterNotFound, EcsError, RequestRejected
from ecs_cluster_manager.aws.metadata import task_identity
from ecs_cluster_manager.config import Config
from ecs_cluster_manager.engine import coverage, readiness, room
from ecs_cluster_manager.engine.discovery import discover
from ecs_cluster_manager.model import manage, plan, sizing
from ecs_cluster_manager.model import room as choice
from ecs_cluster_manager.model.coverage import Coverage, CoveredHost
from ecs_cluster_manager.model.models import Service
from ecs_cluster_manager.model.names import name_of
from ecs_cluster_manager.model.reasons import Reason
from ecs_cluster_manager.observe.counting import usable_exactly
from ecs_cluster_manager.observe.filters import eligible_expression, host_filter_of

ERROR = "error"
WARNING = "warning"
INFO = "info"

# What ECS assumes when a service has no deploymentConfiguration.
DEFAULT_MINIMUM_HEALTHY_PERCENT = 100

# check reads no template (that would need cloudformation:GetTemplate, which the
# manager's policy does not grant), so a template that leaves DesiredCount out
# says so on the service with this tag, and the `cloudformation` warning goes away.
DESIRED_COUNT_OMITTED_TAG = sizing.TAG_PREFIX + "cloudformation-desired-count"
DESIRED_COUNT_OMITTED = "omitted"
LOGICAL_ID_TAG = "aws:cloudformation:logical-id"


@dataclass(frozen=True)
class Finding:
    """One problem (or the all-clear) for one service; service None means the cluster or the configuration."""

    service: str | None
    severity: str
    code: str
    message: str


def _tasks_kept_running(tasks: int, minimum_healthy_percent: int) -> int:
    # ECS rounds the minimum healthy task count up.
    return math.ceil(tasks * minimum_healthy_percent / 100)


def findings_for(service: Service, hosts: int | None = None) -> list[Finding]:
    """Every finding for one described service; `hosts` is its eligible host count when known.

    Returns an `ok` info finding when nothing else applies, so each service is listed.
    """
    name = service.name

    def finding(severity: str, code: str, message: str) -> Finding:
        return Finding(name, severity, code, message)

    # A service that breaks one of these rules makes the remaining ones meaningless (manage.py decides which).
    rule = manage.unmanageable(service)
    if rule is not None and rule.rule == manage.INACTIVE:
        return [
            finding(
                ERROR,
                rule.rule,
                f"service is {service.status}: it was deleted or is being deleted; "
                "remove it from SERVICES or recreate it",
            )
        ]
    if rule is not None and rule.rule == manage.DAEMON_STRATEGY:
        return [
            finding(
                ERROR,
                rule.rule,
                "schedulingStrategy is DAEMON: ECS already runs one task per host and desiredCount cannot be set; "
                "stop managing it, or recreate it as a REPLICA service with a distinctInstance constraint",
            )
        ]
    if rule is not None:
        return [
            finding(
                ERROR,
                rule.rule,
                f"{rule.runs_on}: its tasks never run on the cluster's container instances, so there is no host "
                "count to follow; stop managing it, or run it on EC2 (launchType EC2 or an Auto Scaling group "
                "capacity provider)",
            )
        ]

    findings: list[Finding] = []
    size: sizing.Sizing | None
    try:
        size = sizing.sizing(service.tags)
    except sizing.SizingError as error:
        size = None
        findings.append(
            finding(
                ERROR,
                "bad-sizing-tag",
                f"{error}: the daemon skips this service until the tag is fixed or removed "
                f"({sizing.TASKS_PER_HOST_TAG} >= 1, {sizing.MIN_TAG} and {sizing.MAX_TAG} >= 0, min <= max)",
            )
        )

    if size is not None and size.tasks_per_host == 1 and not service.distinct_instance:
        # An error, not a warning: one task per host is the whole promise, and without the
        # constraint ECS may put two of the tasks on one host and none on another.
        findings.append(
            finding(
                ERROR,
                "no-distinct-instance",
                "no distinctInstance placement constraint: with one task per host ECS may still place two "
                'tasks on the same host; add placementConstraints [{"type": "distinctInstance"}]',
            )
        )
    if size is not None and size.tasks_per_host > 1 and service.distinct_instance:
        findings.append(
            finding(
                ERROR,
                "tasks-per-host-conflict",
                f"{sizing.TASKS_PER_HOST_TAG}={size.tasks_per_host} with a distinctInstance constraint: ECS places "
                "at most one task per host, so the extra tasks can never be placed; remove the tag or the constraint",
            )
        )

    if service.distinct_instance and service.deployment_controller == "ECS":
        minimum = service.minimum_healthy_percent
        percent = DEFAULT_MINIMUM_HEALTHY_PERCENT if minimum is None else minimum
        shown = f"{percent}" if minimum is not None else f"{percent} (the default)"
        tasks = size.target(hosts) if size is not None and hosts is not None else service.desired_count
        if percent >= 100:
            findings.append(
                finding(
                    ERROR,
                    "deployment-deadlock",
                    f"distinctInstance with minimumHealthyPercent {shown}: every host already runs a task, so a "
                    "rolling deployment can neither start a new task nor stop an old one and never finishes; "
                    "set deploymentConfiguration minimumHealthyPercent below 100: 0 (with maximumPercent 100) "
                    "works for any number of hosts, 50 only from 2 hosts up",
                )
            )
        elif tasks > 0 and _tasks_kept_running(tasks, percent) >= tasks:
            findings.append(
                finding(
                    ERROR,
                    "deployment-deadlock",
                    f"distinctInstance with minimumHealthyPercent {shown} and {tasks} task(s): ECS rounds the "
                    f"healthy minimum up to all {tasks}, so a rolling deployment can stop no old task and never "
                    f"finishes; lower minimumHealthyPercent to at most {100 * (tasks - 1) // tasks} "
                    "(0 works for any number of hosts)",
                )
            )

    stack = service.tags.get(sizing.STACK_NAME_TAG)
    if stack and service.tags.get(DESIRED_COUNT_OMITTED_TAG) != DESIRED_COUNT_OMITTED:
        resource = service.tags.get(LOGICAL_ID_TAG)
        where = f"resource {resource} of stack {stack}" if resource else f"its resource in stack {stack}"
        findings.append(
            finding(
                WARNING,
                "cloudformation",
                f"managed by CloudFormation stack {stack}, and check cannot tell whether its template sets "
                "DesiredCount (if it does, every stack update resets desiredCount and waits for the service to "
                f"stabilise). Verify that {where} has no DesiredCount property "
                f"(aws cloudformation get-template --stack-name {stack}); if so, tag the service "
                f"{DESIRED_COUNT_OMITTED_TAG}={DESIRED_COUNT_OMITTED} in the template to say so, otherwise "
                "remove DesiredCount from the template",
            )
        )

    if hosts is not None and size is not None and hosts == 0:
        findings.append(
            finding(
                WARNING,
                "no-hosts",
                f"no eligible host (ACTIVE, agent connected{', memberOf' if service.member_of else ''}): "
                f"the daemon would set desiredCount to {size.target(0)}",
            )
        )

    if not findings:
        if hosts is not None and size is not None:
            target = size.target(hosts)
            change = "converged" if target == service.desired_count else f"the daemon would set {target}"
            detail = f"desiredCount {service.desired_count}, {hosts} eligible host(s): {change}"
        else:
            detail = f"desiredCount {service.desired_count}"
        findings.append(finding(INFO, "ok", detail))
    return findings


def skipped_finding(decision: plan.Decision) -> Finding:
    """The finding for a configured service that discovery could not describe."""
    if decision.code is Reason.MISSING:
        return Finding(
            decision.service,
            ERROR,
            "not-found",
            f"{decision.reason}: check the name in SERVICES and that CLUSTER is the cluster it runs in",
        )
    return Finding(decision.service, ERROR, "describe-failed", decision.reason)


def _eligible_hosts(
    api: Api, config: Config, services: Iterable[Service]
) -> tuple[dict[str, frozenset[str]], list[Finding]]:
    """Eligible host ARNs per service ARN, listed once per distinct filter expression.

    A filter ECS rejects (a memberOf expression it cannot parse) becomes an error
    finding for each service using it, not a failed check.
    """
    eligible: dict[str, frozenset[str]] = {}
    findings: list[Finding] = []
    by_filter: dict[tuple[str, ...], list[Service]] = {}
    for service in services:
        by_filter.setdefault(host_filter_of(service), []).append(service)
    for member_of, users in by_filter.items():
        expression = eligible_expression(member_of)
        try:
            # The daemon's own counting, with nothing held: the hosts a pass would size for now.
            hosts = usable_exactly(api, config.cluster, member_of)
        except RequestRejected as error:
            findings.extend(
                Finding(
                    service.name,
                    ERROR,
                    "host-filter",
                    f"ECS rejected the host filter {expression!r} built from its memberOf constraints: {error}",
                )
                for service in users
            )
            continue
        eligible.update((service.arn, hosts) for service in users)
    return eligible, findings


NAMED_HOSTS = 10  # hosts named in one line; the JSON document lists them all


def _named(hosts: Sequence[CoveredHost]) -> str:
    names = [host.ec2_instance_id or name_of(host.container_instance_arn) for host in hosts]
    more = f" and {len(names) - NAMED_HOSTS} more" if len(names) > NAMED_HOSTS else ""
    return ", ".join(names[:NAMED_HOSTS]) + more


def coverage_findings(
    service: Service, found: Coverage, now: float, grace: float, tasks_per_host: int = 1
) -> list[Finding]:
    """The coverage lines of one service: `covered/eligible`, then each kind of gap.

    A missing host is an error once the service's placement failures have gone
    on for longer than `grace` seconds (see the module docstring), else a warning.
    """
    name = service.name
    summary = f"{found.covered}/{found.eligible} eligible host(s) run a task"
    if found.wanted is not None and found.wanted < found.eligible:
        summary += f" ({found.wanted} wanted: the sizing tags ask for fewer tasks than hosts)"
    if found.pending:
        summary += f", {len(found.pending)} starting"
    try:
        target = sizing.sizing(service.tags).target(found.eligible)
    except sizing.SizingError:
        target = found.eligible * max(1, tasks_per_host)
    # Hosts ECS was not asked to cover yet (desiredCount below the target) are the daemon's to fix: info.
    unasked = service.desired_count < min(target, found.eligible * max(1, tasks_per_host))
    gaps = bool(found.extra or found.misplaced) or bool(found.missing and not unasked)
    findings = [Finding(name, WARNING if gaps else INFO, "coverage", summary)]
    if found.missing:
        since = service.placement_failure_since
        overdue = since is not None and now - since >= grace
        reason = f": {found.reason}" if found.reason else " (ECS reports no placement failure yet)"
        how_long = f" for {now - since:.0f}s" if since is not None else ""
        if not unasked or overdue:  # hosts ECS was not asked to cover yet: the `ok` line says what the daemon sets
            findings.append(
                Finding(
                    name,
                    ERROR if overdue else WARNING,
                    "missing-task",
                    f"{len(found.missing)} host(s) without a task{how_long} "
                    f"(COVERAGE_GRACE {grace:g}s): {_named(found.missing)}{reason}",
                )
            )
    if found.extra:
        advice = (
            '; add placementConstraints [{"type": "distinctInstance"}] so ECS places one task per host'
            if not service.distinct_instance
            else ""
        )
        findings.append(
            Finding(
                name,
                WARNING,
                "extra-tasks",
                f"{len(found.extra)} host(s) run more than {max(1, tasks_per_host)} task(s): "
                f"{_named(found.extra)}{advice}",
            )
        )
    if found.misplaced:
        findings.append(
            Finding(
                name,
                WARNING,
                "misplaced-tasks",
                f"{len(found.misplaced)} task(s) on hosts that are not eligible (draining, outside the filter, "
                f"agent lost): {_named(found.misplaced)}; the manager never stops them, ECS replaces them",
            )
        )
    if found.outdated:
        findings.append(
            Finding(
                name,
                INFO,
                "outdated-tasks",
                f"{len(found.outdated)} task(s) run an older task definition than the PRIMARY deployment's "
                f"({service.task_definition}): a deployment is in progress or stuck",
            )
        )
    return findings


def _needs_text(needs: choice.Needs) -> str:
    ports = f", ports {', '.join(sorted(needs.ports))}" if needs.ports else ""
    return f"{needs.cpu} CPU units, {needs.memory} MiB{ports}"


def make_room_findings(
    api: Api, config: Config, service: Service, found: Coverage, managed: Collection[str], now: float
) -> list[Finding]:
    """What the daemon would stop to make room for a make-room service's task on each host missing it too long.

    As the daemon does (engine/room.py), but dated by ECS's placement failures
    (check keeps no memory) and for every such host (at most NAMED_HOSTS), not
    MAKE_ROOM_MAX a pass. Reads each host; stops nothing.
    """
    if not choice.makes_room(service.tags) or not found.missing:
        return []
    since = service.placement_failure_since
    if since is None or now - since < config.coverage_grace:
        return []
    name = service.name

    def finding(severity: str, message: str) -> Finding:
        return Finding(name, severity, "make-room", message)

    if choice.resource_reason(service.placement_failure) is None:
        return [
            finding(
                WARNING,
                f"room is not made on {_named(found.missing)}: ECS's reason is not a lack of memory, CPU or ports "
                "(stopping tasks would not help); fix what it names",
            )
        ]
    findings: list[Finding] = []
    watch = choice.RoomWatch()
    for host in found.missing[:NAMED_HOSTS]:
        where = host.ec2_instance_id or name_of(host.container_instance_arn)
        try:
            planned = room.plan_host(api, config.cluster, service, host.container_instance_arn, managed, watch)
        except EcsError as error:
            findings.append(finding(WARNING, f"could not read host {where} to make room: {error}"))
            continue
        if planned is None:
            continue
        if planned.stop is None:
            findings.append(
                finding(
                    WARNING,
                    f"host {where} ({host.container_instance_arn}): no set of tasks of preemptible services "
                    f"(tag {choice.PREEMPTIBLE_TAG}=true) frees what the task needs ({_needs_text(planned.need)}); "
                    f"it has {planned.room.cpu} CPU units and {planned.room.memory} MiB left",
                )
            )
        elif not planned.stop:
            findings.append(finding(INFO, f"host {where} has the room now: ECS should place the task there"))
        else:
            tasks = ", ".join(f"{name_of(c.task_arn)} (service {c.service})" for c in planned.stop)
            findings.append(
                finding(
                    INFO,
                    f"host {where} ({host.container_instance_arn}): the daemon would stop {len(planned.stop)} "
                    f"task(s) to free {_needs_text(planned.need)} for its task ({found.reason}): {tasks}",
                )
            )
    return findings


def denied_finding(error: AccessDenied, doing: str) -> Finding:
    """An `access-denied` error naming the IAM action the credentials lack."""
    action = f"ecs:{error.operation}" if error.operation else "the action named above"
    return Finding(
        None,
        ERROR,
        "access-denied",
        f"{doing}: the credentials may not call {error.operation or 'it'}: grant {action} "
        f"(deploy/iam-policy.json has every action the manager needs): {error}",
    )


def collect(
    api: Api,
    config: Config,
    coverages: dict[str, Coverage] | None = None,
    host_reports: list[readiness.HostReport] | None = None,
) -> list[Finding]:
    """Read the cluster and return every finding, cluster-wide ones first. Makes no change.

    `coverages`, when given, receives each service's coverage by name; `host_reports`,
    with READY_ATTRIBUTE, each host's readiness.
    """
    identity = task_identity(os.environ)
    try:
        managed = discover(api, config, identity)
    except ClusterNotFound:
        return [
            Finding(
                None,
                ERROR,
                "cluster-not-found",
                f"cluster {config.cluster!r} not found in region {api.region}: check CLUSTER and AWS_REGION",
            )
        ]
    except AccessDenied as error:
        return [denied_finding(error, "could not describe the services")]
    except EcsError as error:
        return [Finding(None, ERROR, "api-error", f"could not describe the services: {error}")]

    findings: list[Finding] = []
    if not managed.services and not managed.skipped:
        # An error, as for the daemon (`--once` exits 1): a typo in the selection must not pass the audit.
        findings.append(
            Finding(
                None,
                ERROR,
                "no-services",
                f"no service of cluster {config.cluster} matches {config.selection}: the daemon would manage "
                "nothing; check the names, the regular expression (it must match the whole name) or the tag",
            )
        )
    findings.extend(skipped_finding(decision) for decision in managed.skipped)

    countable = [s for s in managed.services if manage.unmanageable(s) is None]
    try:
        eligible, filter_findings = _eligible_hosts(api, config, countable)
        ineligible: frozenset[str] = frozenset()
        if eligible:
            ineligible = frozenset(
                api.list_container_instances(config.cluster, "ACTIVE")
                + api.list_container_instances(config.cluster, "DRAINING")
            )
    except ClusterNotFound:
        return [
            *findings,
            Finding(None, ERROR, "cluster-not-found", f"cluster {config.cluster!r} not found in region {api.region}"),
        ]
    except AccessDenied as error:
        eligible, filter_findings = {}, [denied_finding(error, "could not count hosts")]
    except EcsError as error:
        # The services were read; report them without host counts rather than not at all.
        eligible, filter_findings = {}, [Finding(None, ERROR, "api-error", f"could not count hosts: {error}")]
    findings.extend(filter_findings)
    rejected = {f.service for f in filter_findings if f.code == "host-filter"}
    now = time.time()
    read: dict[str, Coverage] = {}
    for service in managed.services:
        hosts = eligible.get(service.arn)
        per_service = findings_for(service, len(hosts) if hosts is not None else None)
        if service.name in rejected:
            per_service = [f for f in per_service if f.code != "ok"]
        findings.extend(per_service)
        if hosts is None:
            continue
        try:
            size = sizing.sizing(service.tags)
        except sizing.SizingError:
            size = sizing.Sizing()
        try:
            found = coverage.read(
                api, config.cluster, service, hosts, ineligible=ineligible - hosts, tasks_per_host=size.tasks_per_host,
                now=now,
            )
        except EcsError as error:
            findings.append(Finding(service.name, ERROR, "coverage-failed", f"could not read its tasks: {error}"))
            continue
        read[service.name] = found
        if coverages is not None:
            coverages[service.name] = found
        findings.extend(coverage_findings(service, found, now, config.coverage_grace, size.tasks_per_host))
        findings.extend(make_room_findings(api, config, service, found, {s.name for s in managed.services}, now))
    if config.ready_attribute is not None and eligible:
        findings.extend(_readiness_findings(api, config, countable, eligible, read, now, host_reports))
    return findings


# check names each host when there are at most this many; beyond, the hosts not ready and a count of the others.
NAMED_READY_HOSTS = 50


def _readiness_findings(
    api: Api,
    config: Config,
    services: Sequence[Service],
    eligible: dict[str, frozenset[str]],
    read: dict[str, Coverage],
    now: float,
    out: list[readiness.HostReport] | None,
) -> list[Finding]:
    """Per host, ready or not and why (READY_ATTRIBUTE), and what the daemon would write: `ready` / `not-ready`."""
    try:
        reports = readiness.audit(api, config, services, eligible, read, now)
    except AccessDenied as error:
        return [denied_finding(error, f"could not read the hosts' {config.ready_attribute} attribute")]
    except EcsError as error:
        return [Finding(None, ERROR, "api-error", f"could not read the hosts' readiness: {error}")]
    if out is not None:
        out.extend(reports)
    findings: list[Finding] = []
    ready = [r for r in reports if r.ready]
    for report in reports:
        if report.ready and len(reports) > NAMED_READY_HOSTS:
            continue
        host = report.ec2_instance_id or name_of(report.container_instance_arn)
        has = "has" if report.attribute else "lacks"
        would = {"put": "; the daemon would put it", "delete": "; the daemon would delete it"}.get(
            report.would or "", ""
        )
        attribute = f"{has} {config.ready_attribute}{would}"
        if report.ready:
            findings.append(Finding(None, INFO, "ready", f"{host}: ready ({report.why}); {attribute}"))
        else:
            findings.append(Finding(None, WARNING, "not-ready", f"{host}: not ready: {report.why}; {attribute}"))
    if len(reports) > NAMED_READY_HOSTS:
        findings.append(Finding(None, INFO, "ready", f"{len(ready)} of {len(reports)} host(s) ready"))
    return findings


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(f.severity == ERROR for f in findings)
