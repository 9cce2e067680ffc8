"""Planning: what each service's desiredCount should become, without any server."""

from __future__ import annotations

import pytest

from ecs_cluster_manager.model import manage, plan, sizing
from ecs_cluster_manager.model.models import HostCount, PlacementConstraint, Service


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
        (5, 3, plan.UPDATE, 3, "scale down: agent lost"),
        (2, 0, plan.UPDATE, 0, "scale down: agent lost"),
        (0, 0, plan.UNCHANGED, 0, "converged"),
    ],
)
def test_target_equals_hosts_without_damping(current: int, hosts: int, action: str, target: int, reason: str) -> None:
    """With no hold the target is the usable host count, up or down, at once."""
    decision = plan.decide(service(current), lost(hosts, max(hosts, current)), sizing.Sizing(), hold=0)
    assert (decision.action, decision.target, decision.reason) == (action, target, reason)
    assert decision.current == current and decision.hosts == hosts


def test_dry_run_never_writes() -> None:
    """A dry run reports what it would do with action dry-run, which is not a write."""
    decision = plan.decide(service(1), drained(4), sizing.Sizing(), dry_run=True)
    assert decision.action == plan.DRY_RUN and decision.target == 4
    assert not decision.writes


@pytest.mark.parametrize(
    ("tags", "hosts", "target"),
    [
        ({}, 4, 4),
        ({sizing.TASKS_PER_HOST_TAG: "2"}, 4, 8),
        ({sizing.MIN_TAG: "3"}, 1, 3),
        ({sizing.MAX_TAG: "5"}, 9, 5),
        ({sizing.TASKS_PER_HOST_TAG: "3", sizing.MIN_TAG: "2", sizing.MAX_TAG: "10"}, 4, 10),
        ({sizing.MIN_TAG: "0", sizing.MAX_TAG: "0"}, 4, 0),
        ({sizing.TASKS_PER_HOST_TAG: " 2 "}, 2, 4),
    ],
)
def test_sizing_tags(tags: dict[str, str], hosts: int, target: int) -> None:
    """Target = clamp(hosts x tasks-per-host, min, max) from the service's tags."""
    assert sizing.sizing(tags).target(hosts) == target


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({sizing.TASKS_PER_HOST_TAG: "two"}, "tasks-per-host"),
        ({sizing.TASKS_PER_HOST_TAG: "0"}, ">= 1"),
        ({sizing.MIN_TAG: "-1"}, ">= 0"),
        ({sizing.MAX_TAG: "1.5"}, "not a whole number"),
        ({sizing.MIN_TAG: "5", sizing.MAX_TAG: "2"}, "greater than"),
        ({sizing.MAX_TAG: ""}, "not a whole number"),
    ],
)
def test_malformed_sizing_tags_are_rejected(tags: dict[str, str], message: str) -> None:
    """A bad sizing tag raises SizingError naming the tag."""
    with pytest.raises(sizing.SizingError, match=message):
        sizing.sizing(tags)


GONE = "scale down: fewer ACTIVE hosts (drained or deregistered)"
OUT = "scale down: agent lost for 90s or more"


def held(n: int, seconds: int) -> str:
    return f"{n} agent(s) lost, scale down held ({seconds}s of 90s)"


# fmt: off
@pytest.mark.parametrize(
    ("current", "active", "usable", "held_hosts", "held_for", "action", "target", "reason"),
    [
        # A host drained or deregistered: lowered at once, whatever the hold.
        (4, 3, 3, 0, 0, plan.UPDATE, 3, GONE),
        (4, 0, 0, 0, 0, plan.UPDATE, 0, GONE),
        # An agent lost for 30 and 60 of 90 s: it still counts.
        (4, 4, 3, 1, 30, plan.UNCHANGED, 4, held(1, 30)),
        (4, 4, 3, 1, 60, plan.UNCHANGED, 4, held(1, 60)),
        # Lost for the whole hold: no longer held, lowered for.
        (4, 4, 3, 0, 0, plan.UPDATE, 3, OUT),
        # Two agents lost, one of them for the whole hold: lowered for that one only.
        (4, 4, 2, 1, 30, plan.UPDATE, 3, f"{OUT}; {held(1, 30)}"),
        # A drained host and a held agent at once: the drained one at once.
        (5, 4, 3, 1, 30, plan.UPDATE, 4, f"{GONE}; {held(1, 30)}"),
        # Every agent back: converged.
        (4, 4, 4, 0, 0, plan.UNCHANGED, 4, "converged"),
    ],
)
# fmt: on
def test_scale_down_by_cause(
    current: int, active: int, usable: int, held_hosts: int, held_for: int, action: str, target: int, reason: str
) -> None:
    """Drained or deregistered hosts lower desiredCount at once; a lost agent only once lost for the whole hold."""
    hosts = HostCount(active=active, usable=usable, held=held_hosts, held_for=held_for)
    decision = plan.decide(service(current), hosts, sizing.Sizing(), hold=90)
    assert (decision.action, decision.target, decision.reason) == (action, target, reason)
    assert decision.hosts == usable


def test_a_new_host_is_raised_for_while_another_is_held() -> None:
    """A held host counts for raises too: 6 usable, 1 held and a 7th host joining give 8, not 7 (issue item 1)."""
    decision = plan.decide(service(7), HostCount(active=8, usable=7, held=1, held_for=2), sizing.Sizing(), hold=5)
    assert (decision.action, decision.target) == (plan.UPDATE, 8)
    assert decision.reason.startswith("scale up")


def test_a_held_host_never_lowers() -> None:
    """While its hold runs, a lost agent's task stays: the target is usable plus held."""
    decision = plan.decide(service(6), HostCount(active=6, usable=5, held=1, held_for=2), sizing.Sizing(), hold=5)
    assert (decision.action, decision.target) == (plan.UNCHANGED, 6)


def test_sizing_applies_to_the_drained_and_the_held_counts() -> None:
    """With 2 tasks per host, a drained host removes 2 tasks at once; a held agent's 2 stay."""
    hosts = HostCount(active=3, usable=2, held=1, held_for=1)
    decision = plan.decide(service(8), hosts, sizing.Sizing(tasks_per_host=2), hold=60)
    assert (decision.action, decision.target) == (plan.UPDATE, 6)


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
    rule = manage.unmanageable(service(1, **overrides))
    assert rule is not None and fragment in rule.reason


def test_manageable_service() -> None:
    """An ACTIVE EC2 REPLICA service is manageable."""
    assert manage.unmanageable(service(1, launch_type="EC2")) is None
    assert manage.unmanageable(service(1)) is None


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
