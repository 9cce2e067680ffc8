"""Find and describe the managed services: SERVICES, SERVICE_REGEX and MANAGED_TAG, deduplicated by ARN."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from ecs_cluster_manager.aws.gateway import PassGateway
from ecs_cluster_manager.config import Config
from ecs_cluster_manager.model import plan
from ecs_cluster_manager.model.models import Service, TaskIdentity
from ecs_cluster_manager.model.names import name_of
from ecs_cluster_manager.model.reasons import Reason

log = structlog.get_logger(__name__)

def _is_self(service: Service, identity: TaskIdentity | None) -> bool:
    if identity is None or not identity.service_name:
        return False
    if identity.service_name != service.name:
        return False
    return identity.cluster is None or name_of(identity.cluster) == name_of(service.cluster_arn)


@dataclass(frozen=True)
class Managed:
    """The managed services as observed, plus the references that could not be used."""

    services: list[Service]
    skipped: list[plan.Decision]


def discover(api: PassGateway, config: Config, identity: TaskIdentity | None) -> Managed:
    """Find and describe the managed services: SERVICES, SERVICE_REGEX and MANAGED_TAG, deduplicated by ARN.

    Raises EcsError when a listing or a description fails.
    """
    explicit = list(config.services)
    candidates: list[str] = []
    if config.discovery:
        listed = api.list_services(config.cluster)
        by_name = {name_of(arn): arn for arn in listed}
        # An explicit name that the listing knows is described by its ARN, once.
        explicit = [by_name.get(ref, ref) for ref in explicit]
        if config.managed_tag is not None:
            candidates = listed  # tags only come with DescribeServices
        elif config.service_regex is not None:
            candidates = [arn for arn in listed if config.service_regex.fullmatch(name_of(arn))]
    references = list(dict.fromkeys([*explicit, *candidates]))
    lookup = api.describe_services(config.cluster, references) if references else None

    wanted = set(explicit) | {name_of(ref) for ref in explicit}
    services: dict[str, Service] = {}
    skipped: list[plan.Decision] = []
    returned: set[str] = set()
    for service in lookup.services if lookup else ():
        returned |= {service.arn, service.name}
        named = service.arn in wanted or service.name in wanted
        discovered = service.status == "ACTIVE" and (
            (config.service_regex is not None and config.service_regex.fullmatch(service.name) is not None)
            or (config.managed_tag is not None and config.managed_tag.matches(service.tags))
        )
        if not (named or discovered) or service.arn in services:
            continue
        if _is_self(service, identity):
            log.info("skip_self", cluster=config.cluster, service=service.name)
            continue
        services[service.arn] = service
    for failure in lookup.failures if lookup else ():
        returned |= {failure.service, name_of(failure.service)}
        if failure.service in wanted or name_of(failure.service) in wanted:
            if failure.reason == "MISSING":
                reason, code = "service not found in this cluster", Reason.MISSING
            else:
                reason, code = f"DescribeServices: {failure.reason}", Reason.DESCRIBE_FAILED
            skipped.append(plan.skip(name_of(failure.service), reason, code, arn=failure.service))
    # An explicit reference that came back neither as a service nor as a failure.
    for ref in explicit:
        if ref not in returned:
            arn = ref if "/" in ref else None
            skipped.append(plan.skip(name_of(ref), "service not found in this cluster", Reason.MISSING, arn=arn))
    return Managed(list(services.values()), skipped)
