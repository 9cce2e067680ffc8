"""Why a decision is what it is, as a code: what metrics, `check` and exit codes read instead of the words.

Each Decision carries one of these and its `reason`, the words logged (the
`reason` field of the `decision` event); nothing reads the words to learn the code.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # A service the pass sized.
    CONVERGED = "converged"
    HELD = "held"  # converged, with lost agents still held
    SCALE_UP = "scale_up"
    SCALE_DOWN_AGENT_LOST = "scale_down_agent_lost"
    SCALE_DOWN_FEWER_ACTIVE = "scale_down_fewer_active"
    # A service the pass left alone: the `reason` label of service_skips_total.
    MISSING = "missing"
    DESCRIBE_FAILED = "describe_failed"
    INACTIVE = "inactive"
    BAD_TAG = "bad_tag"
    CLOUDFORMATION = "cloudformation"
    HOST_COUNT_FAILED = "host_count_failed"
    UPDATE_FAILED = "update_failed"
    UNMANAGEABLE = "unmanageable"
    SHUTTING_DOWN = "shutting_down"
    DEFERRED = "deferred"


SKIP_REASONS = frozenset(
    {
        Reason.MISSING,
        Reason.DESCRIBE_FAILED,
        Reason.INACTIVE,
        Reason.BAD_TAG,
        Reason.CLOUDFORMATION,
        Reason.HOST_COUNT_FAILED,
        Reason.UPDATE_FAILED,
        Reason.UNMANAGEABLE,
        Reason.SHUTTING_DOWN,
        Reason.DEFERRED,
    }
)
