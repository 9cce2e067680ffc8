"""Planning: what each service's desiredCount should become, without any server."""

from __future__ import annotations

import pytest

from ecs_cluster_manager import plan
from ecs_cluster_manager.models import HostCount, PlacementConstraint, Service


def lost(usable: int, active: int) -> HostCount:
    """Hosts of which `active - usable` are ACTIVE with their agent lost."""
    return HostCount(active=active, usable=usable)


def drained(hosts: int) -> HostCount:
    """Hosts all usable: any drop from a higher count was a host drained or deregistered."""
    return HostCount(active=hosts, usable=hosts)


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
        (5, 3, plan.UPDATE, 3, "scale down: agent lost, held 1/1 passes"),
        (2, 0, plan.UPDATE, 0, "scale down: agent lost, held 1/1 passes"),
        (0, 0, plan.UNCHANGED, 0, "converged"),
    ],
)
def test_target_equals_hosts_without_damping(current: int, hosts: int, action: str, target: int, reason: str) -> None:
    """With scale_down_after=1 the target is the host count, up or down, at once."""
    decision, pending = plan.decide(
        service(current), lost(hosts, max(hosts, current)), plan.Sizing(), scale_down_after=1
    )
    assert (decision.action, decision.target, decision.reason) == (action, target, reason)
    assert decision.current == current and decision.hosts == hosts
    assert pending is None


def test_dry_run_never_writes() -> None:
    """A dry run reports what it would do with action dry-run, which is not a write."""
    decision, _ = plan.decide(service(1), drained(4), plan.Sizing(), dry_run=True)
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
    first, pending = plan.decide(svc, lost(4, 5), plan.Sizing(), scale_down_after=2)
    assert first.action == plan.UNCHANGED and "held (1/2" in first.reason
    assert pending == plan.Pending(lost=1, passes=1)

    # The host came back: the streak is forgotten.
    back, pending = plan.decide(svc, lost(5, 5), plan.Sizing(), scale_down_after=2, pending=pending)
    assert back.action == plan.UNCHANGED and pending is None

    first, pending = plan.decide(svc, lost(4, 5), plan.Sizing(), scale_down_after=2)
    second, pending = plan.decide(svc, lost(3, 5), plan.Sizing(), scale_down_after=2, pending=pending)
    # Lowered, but only to the highest target of the streak.
    assert (second.action, second.target) == (plan.UPDATE, 4)
    assert pending is None


def test_scale_up_is_immediate_even_with_damping() -> None:
    """Raising the count never waits."""
    decision, pending = plan.decide(
        service(2), lost(6, 6), plan.Sizing(), scale_down_after=5, pending=plan.Pending(5, 4)
    )
    assert (decision.action, decision.target) == (plan.UPDATE, 6) and pending is None


# fmt: off
@pytest.mark.parametrize(
    ("current", "active", "usable", "pending", "action", "target", "reason", "hold"),
    [
        # A host drained or deregistered: lowered at once, whatever SCALE_DOWN_AFTER says.
        (4, 3, 3, None, plan.UPDATE, 3, "scale down: drained", None),
        (4, 0, 0, None, plan.UPDATE, 0, "scale down: drained", None),
        # An agent lost: held until seen in 3 passes, then lowered.
        (4, 4, 3, None, plan.UNCHANGED, 3, "agent lost, scale down held (1/3 passes)", plan.Pending(1, 1)),
        (4, 4, 3, plan.Pending(1, 1), plan.UNCHANGED, 3, "agent lost, scale down held (2/3 passes)",
         plan.Pending(1, 2)),
        (4, 4, 3, plan.Pending(1, 2), plan.UPDATE, 3, "scale down: agent lost, held 3/3 passes", None),
        # Two agents lost now, one for the whole streak: only the one lost all along is stopped for.
        (4, 4, 2, plan.Pending(1, 2), plan.UPDATE, 3, "scale down: agent lost, held 3/3 passes", None),
        # Both at once: the drained host at once, the lost agent held.
        (5, 4, 3, None, plan.UPDATE, 4, "scale down: drained; agent lost, scale down held (1/3 passes)",
         plan.Pending(1, 1)),
        # The agent came back within the hold: converged, the hold forgotten.
        (4, 4, 4, plan.Pending(1, 2), plan.UNCHANGED, 4, "converged", None),
        # A host drained while an agent's hold runs: the drained one goes at once, the hold keeps counting.
        (4, 3, 2, plan.Pending(1, 1), plan.UPDATE, 3, "scale down: drained; agent lost, scale down held (2/3 passes)",
         plan.Pending(1, 2)),
    ],
)
# fmt: on
def test_scale_down_by_cause(
    current: int,
    active: int,
    usable: int,
    pending: plan.Pending | None,
    action: str,
    target: int,
    reason: str,
    hold: plan.Pending | None,
) -> None:
    """Drained or deregistered hosts lower desiredCount at once; lost agents only after SCALE_DOWN_AFTER passes."""
    decision, kept = plan.decide(
        service(current), lost(usable, active), plan.Sizing(), scale_down_after=3, pending=pending
    )
    assert (decision.action, decision.target, decision.reason) == (action, target, reason)
    assert decision.hosts == usable
    assert kept == hold


def test_a_pass_that_does_not_count_neither_starts_nor_advances_a_hold() -> None:
    """count_pass=False (an event pass) keeps the hold where the regular passes left it."""
    svc = service(4)
    first, kept = plan.decide(svc, lost(3, 4), plan.Sizing(), scale_down_after=2, count_pass=False)
    assert first.action == plan.UNCHANGED and kept == plan.Pending(1, 0)
    second, kept = plan.decide(svc, lost(3, 4), plan.Sizing(), scale_down_after=2, pending=kept, count_pass=False)
    assert second.action == plan.UNCHANGED and kept == plan.Pending(1, 0)
    third, kept = plan.decide(svc, lost(3, 4), plan.Sizing(), scale_down_after=2, pending=kept)
    assert third.action == plan.UNCHANGED and kept == plan.Pending(1, 1)
    fourth, kept = plan.decide(svc, lost(3, 4), plan.Sizing(), scale_down_after=2, pending=kept)
    assert (fourth.action, fourth.target) == (plan.UPDATE, 3) and kept is None


def test_sizing_applies_to_the_drained_and_the_usable_counts() -> None:
    """With 2 tasks per host, a drained host removes 2 tasks at once; a lost agent's 2 wait."""
    size = plan.Sizing(tasks_per_host=2)
    decision, kept = plan.decide(service(8), lost(2, 3), size, scale_down_after=2)
    assert (decision.action, decision.target) == (plan.UPDATE, 6) and kept == plan.Pending(2, 1)


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
