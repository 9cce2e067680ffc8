"""Decide what each managed service's desiredCount should be: pure functions, no I/O.

Given a service as observed and the number of hosts it may run on, return one
Decision (update, unchanged, dry-run or skip) with the current and target counts
and the reason, as a code (reasons.py) and in words. How long each lost agent has been lost comes in with the host
count, so the caller owns all state and these functions stay pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from ecs_cluster_manager.model.models import HostCount, Service
from ecs_cluster_manager.model.reasons import Reason
from ecs_cluster_manager.model.sizing import Sizing

UPDATE = "update"
UNCHANGED = "unchanged"
DRY_RUN = "dry-run"
SKIP = "skip"


@dataclass(frozen=True)
class Decision:
    """What to do with one service in one pass, and why: `code` for what reads it, `reason` in words (logged)."""

    service: str
    service_arn: str | None
    action: str
    current: int | None
    target: int | None
    hosts: int | None
    reason: str
    code: Reason
    error: bool = False

    @property
    def writes(self) -> bool:
        return self.action == UPDATE


def skip(
    service: str,
    reason: str,
    code: Reason,
    *,
    arn: str | None = None,
    current: int | None = None,
    error: bool = True,
) -> Decision:
    """A decision to leave a service alone; error marks the service as not handled."""
    return Decision(service, arn, SKIP, current, None, None, reason, code, error)


def seconds(value: float) -> str:
    """A duration for a reason: 0.9s, 12s, 300s."""
    return f"{value:.1f}s" if value < 10 and value != int(value) else f"{value:.0f}s"


def decide(
    service: Service,
    hosts: HostCount,
    size: Sizing,
    *,
    dry_run: bool = False,
    hold: float = 0.0,
) -> Decision:
    """Decide one service's desiredCount.

    The target is the hosts that count, sized: the usable ones and those whose
    agent has been lost for less than `hold` seconds (`hosts.held`), which
    routinely come back. It is the same for raises and lowers: a new host is
    raised for at once, whatever is held. A host drained or deregistered stops
    counting at once (its task only stays PENDING); a lost agent stops counting
    once it has been lost for the whole hold.
    """
    current = service.desired_count
    target = size.target(hosts.counted)

    def decision(action: str, reason: str, code: Reason) -> Decision:
        return Decision(service.name, service.arn, action, current, target, hosts.usable, reason, code)

    held = ""
    if hosts.held:
        held = f"{hosts.held} agent(s) lost, scale down held ({seconds(hosts.held_for)} of {seconds(hold)})"
    write = DRY_RUN if dry_run else UPDATE
    if target == current:
        return decision(UNCHANGED, held or "converged", Reason.HELD if held else Reason.CONVERGED)
    if target > current:
        return decision(write, "scale up" + (f"; {held}" if held else ""), Reason.SCALE_UP)
    if target < size.target(hosts.active):
        code = Reason.SCALE_DOWN_AGENT_LOST
        reason = f"scale down: agent lost for {seconds(hold)} or more" if hold > 0 else "scale down: agent lost"
    else:
        code = Reason.SCALE_DOWN_FEWER_ACTIVE
        reason = "scale down: fewer ACTIVE hosts (drained or deregistered)"
    return decision(write, reason + (f"; {held}" if held else ""), code)
