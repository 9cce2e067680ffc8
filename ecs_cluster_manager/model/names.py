"""ECS references: a name or an ARN, whose last path segment is the name. Pure."""

from __future__ import annotations


def name_of(reference: str) -> str:
    """The name in a reference: "web" and "arn:aws:ecs:region:account:service/cluster/web" both give "web"."""
    return reference.rsplit("/", 1)[-1]
