"""Planning: what each service's desiredCount should become, without any server."""

from __future__ import annotations

import pytest

from ecs_cluster_manager import plan
from ecs_cluster_manager.models import PlacementConstraint, Service


def service(desired: int = 0, **overrides: object) -> Service:
    fields: dict[str, object] = {
        "arn": "arn:aws:ecs:us-east-1:123456789012:service/c/agent",
        "name": "agent",
        "cluster_arn": "arn:aws:ecs:us-east-1:123456789012:cluster/c",
        "status": "ACTIVE",
        "desired_count": desired,
    }
    fields.update(overrides)
    return Service(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("current", "hosts", "action", "target", "reason"),
    [
        (0, 3, plan.UPDATE, 3, "scale up"),
        (3, 3, plan.UNCHANGED, 3, "converged"),
        (5, 3, plan.UPDATE, 3, "scale down"),
        (2, 0, plan.UPDATE, 0, "scale down"),
        (0, 0, plan.UNCHANGED, 0, "converged"),
    ],
)
def test_target_equals_hosts_without_damping(current: int, hosts: int, action: str, target: int, reason: str) -> None:
    """With scale_down_after=1 the target is the host count, up or down, at once."""
    decision, pending = plan.decide(service(current), hosts, plan.Sizing(), scale_down_after=1)
    assert (decision.action, decision.target, decision.reason) == (action, target, reason)
    assert decision.current == current and decision.hosts == hosts
    assert pending is None


def test_dry_run_never_writes() -> None:
    """A dry run reports what it would do with action dry-run, which is not a write."""
    decision, _ = plan.decide(service(1), 4, plan.Sizing(), dry_run=True)
    assert decision.action == plan.DRY_RUN and decision.target == 4
    assert not decision.writes


@pytest.mark.parametrize(
    ("tags", "hosts", "target"),
    [
        ({}, 4, 4),
        ({plan.TASKS_PER_HOST_TAG: "2"}, 4, 8),
        ({plan.MIN_TAG: "3"}, 1, 3),
        ({plan.MAX_TAG: "5"}, 9, 5),
        ({plan.TASKS_PER_HOST_TAG: "3", plan.MIN_TAG: "2", plan.MAX_TAG: "10"}, 4, 10),
        ({plan.MIN_TAG: "0", plan.MAX_TAG: "0"}, 4, 0),
        ({plan.TASKS_PER_HOST_TAG: " 2 "}, 2, 4),
    ],
)
def test_sizing_tags(tags: dict[str, str], hosts: int, target: int) -> None:
    """Target = clamp(hosts x tasks-per-host, min, max) from the service's tags."""
    assert plan.sizing(tags).target(hosts) == target


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({plan.TASKS_PER_HOST_TAG: "two"}, "tasks-per-host"),
        ({plan.TASKS_PER_HOST_TAG: "0"}, ">= 1"),
        ({plan.MIN_TAG: "-1"}, ">= 0"),
        ({plan.MAX_TAG: "1.5"}, "not a whole number"),
        ({plan.MIN_TAG: "5", plan.MAX_TAG: "2"}, "greater than"),
        ({plan.MAX_TAG: ""}, "not a whole number"),
    ],
)
def test_malformed_sizing_tags_are_rejected(tags: dict[str, str], message: str) -> None:
    """A bad sizing tag raises SizingError naming the tag."""
    with pytest.raises(plan.SizingError, match=message):
        plan.sizing(tags)


def test_scale_down_waits_for_consecutive_passes() -> None:
    """A lower target must be seen scale_down_after passes in a row; one dip lowers nothing."""
    svc = service(5)
    first, pending = plan.decide(svc, 4, plan.Sizing(), scale_down_after=2)
    assert first.action == plan.UNCHANGED and "held (1/2" in first.reason
    assert pending == plan.Pending(4, 1)

    # The host came back: the streak is forgotten.
    back, pending = plan.decide(svc, 5, plan.Sizing(), scale_down_after=2, pending=pending)
    assert back.action == plan.UNCHANGED and pending is None

    first, pending = plan.decide(svc, 4, plan.Sizing(), scale_down_after=2)
    second, pending = plan.decide(svc, 3, plan.Sizing(), scale_down_after=2, pending=pending)
    # Lowered, but only to the highest target of the streak.
    assert (second.action, second.target) == (plan.UPDATE, 4)
    assert pending is None


def test_scale_up_is_immediate_even_with_damping() -> None:
    """Raising the count never waits."""
    decision, pending = plan.decide(service(2), 6, plan.Sizing(), scale_down_after=5, pending=plan.Pending(1, 4))
    assert (decision.action, decision.target) == (plan.UPDATE, 6) and pending is None


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"status": "INACTIVE"}, "INACTIVE"),
        ({"scheduling_strategy": "DAEMON"}, "DAEMON"),
        ({"launch_type": "FARGATE"}, "FARGATE"),
        ({"capacity_providers": ("FARGATE_SPOT",)}, "FARGATE_SPOT"),
    ],
)
def test_unmanageable_services(overrides: dict[str, object], fragment: str) -> None:
    """Inactive, DAEMON and Fargate services are not sized to the host count."""
    reason = plan.unmanageable(service(1, **overrides))
    assert reason is not None and fragment in reason


def test_manageable_service() -> None:
    """An ACTIVE EC2 REPLICA service is manageable."""
    assert plan.unmanageable(service(1, launch_type="EC2")) is None
    assert plan.unmanageable(service(1)) is None


def test_member_of_expressions_are_collected() -> None:
    """Only memberOf constraints feed the host filter; distinctInstance is recognised."""
    svc = service(
        1,
        placement_constraints=(
            PlacementConstraint("distinctInstance"),
            PlacementConstraint("memberOf", "attribute:role == web"),
        ),
    )
    assert svc.member_of == ("attribute:role == web",)
    assert svc.distinct_instance
