"""The original algorithm (the 2017 tool), re-implemented as the benchmark's baseline.

Each pass opens a new boto3 session and ECS client, optionally lists the
cluster's services (50 a page) to match a regular expression, then for each
service makes one DescribeServices (its desiredCount) and one DescribeClusters
(``registeredContainerInstancesCount``, which also counts DRAINING hosts), and
an UpdateService when the two differ. Each step prints a line, as the original
did; the driver sends those lines to the null device.

Only boto3 is imported, so the process measuring it carries no more than the
original did.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TextIO

import boto3

LIST_SERVICES_PAGE = 50  # the original's PaginationConfig PageSize


def run_pass(cluster: str, services: Sequence[str], service_regex: str | None, out: TextIO) -> int:
    """One pass of the original loop; returns how many services it updated."""
    session = boto3.session.Session()
    ecs = session.client("ecs")
    names = set(services)
    if service_regex:
        paginator = ecs.get_paginator("list_services")
        for page in paginator.paginate(cluster=cluster, PaginationConfig={"PageSize": LIST_SERVICES_PAGE}):
            names.update(arn for arn in page["serviceArns"] if re.findall(service_regex, arn))
    print(f"Services {names}", file=out)
    updated = 0
    for service in names:
        print(f"Adjusting {service}", file=out)
        described = ecs.describe_services(cluster=cluster, services=[service])
        if not described["services"]:
            print(f"SKIP: Service '{service}' not found in cluster '{cluster}'", file=out)
            continue
        desired = described["services"][0]["desiredCount"]
        hosts = ecs.describe_clusters(clusters=[cluster])["clusters"][0]["registeredContainerInstancesCount"]
        if desired != hosts:
            print(f"Adjusting cluster '{cluster}' to run {hosts} tasks of service '{service}'", file=out)
            response = ecs.update_service(cluster=cluster, service=service, desiredCount=hosts)
            print(response, file=out)
            updated += 1
        else:
            print(f"SKIP: Cluster {cluster} has {desired} desired tasks for {hosts} registered instances.", file=out)
    return updated
