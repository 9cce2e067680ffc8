"""The hold rule: how long a lost agent keeps counting, and when it stops. Pure: every time comes in.

A host whose agent is lost routinely comes back, so it keeps counting (the
service is not lowered for it) for SCALE_DOWN_AFTER x INTERVAL seconds. A pass
with no loop after it (--once, `check`, the Lambda handler) holds nothing: no
later pass would ever lower the service. A host never seen usable since it
became ACTIVE was never counted, so it is not held either.
"""

from __future__ import annotations


def hold_seconds(scale_down_after: int, interval: float, *, once: bool = False) -> float:
    """How long a lost agent keeps counting, in seconds (0: not at all)."""
    return 0.0 if once else scale_down_after * interval


def lost_for_good(lost_since: float | None, now: float, hold: float, *, holdable: bool = True) -> bool:
    """Whether a host whose agent is lost (since `lost_since`, on the caller's clock) has stopped counting at `now`."""
    if not holdable:
        return True
    return lost_since is not None and now - lost_since >= hold
