"""What one pass saw and did: the report the loop, the Lambda handler, the health check and the metrics read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ecs_cluster_manager.model import plan
from ecs_cluster_manager.model.coverage import Coverage
from ecs_cluster_manager.model.readiness import Readiness
from ecs_cluster_manager.model.room import Preemption


@dataclass
class PassReport:
    """What one pass saw and did."""

    cluster: str
    started_at: float
    duration: float = 0.0
    api_calls: int = 0
    hosts: dict[str, int] = field(default_factory=dict)  # filter expression -> eligible (usable) hosts
    active_hosts: dict[str, int] = field(default_factory=dict)  # filter expression -> ACTIVE hosts, agent or not
    counting: dict[str, str] = field(default_factory=dict)  # filter expression -> "exact", "cheap" or "event"
    trigger: str = "interval"  # what started the pass: "interval", or "event" (state-change events)
    event_time: float | None = None  # the oldest event of an event pass (Unix time)
    write_times: list[float] = field(default_factory=list)  # Unix time of each UpdateService that succeeded
    deferred: int = 0  # writes the API budget could not pay for now: the next pass decides them again
    decisions: list[plan.Decision] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # faults that stopped the whole pass
    cluster_missing: bool = False
    credentials_failed: bool = False  # no usable credentials (none found, expired, invalid)
    managed: int | None = None  # services the selection found and the pass handled; None when unknown
    stopped: bool = False  # a shutdown ended the pass early: some reads or updates were not made
    coverage: dict[str, Coverage] = field(default_factory=dict)  # service name -> coverage read in this pass
    coverage_errors: dict[str, str] = field(default_factory=dict)  # service name -> why its coverage read failed
    preempted: list[Preemption] = field(default_factory=list)  # tasks stopped to make room for a daemon's task
    room_errors: dict[str, str] = field(default_factory=dict)  # make-room service name -> why room was not made
    readiness: Readiness | None = None  # READY_ATTRIBUTE: the hosts ready and not, as this pass decided
    hosts_marked: int | None = None  # READY_ATTRIBUTE: hosts with the attribute after this pass
    readiness_error: str | None = None  # why the attribute was not kept in this pass

    @property
    def observed(self) -> bool:
        """The pass read everything it needed: the health check's idea of success."""
        return not self.errors and not self.stopped

    @property
    def ok(self) -> bool:
        """Every managed service was handled."""
        return not self.errors and not any(d.error for d in self.decisions)

    def count(self, action: str) -> int:
        return sum(1 for d in self.decisions if d.action == action)

    @property
    def failed_services(self) -> int:
        return sum(1 for d in self.decisions if d.error)

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary (the Lambda handler returns it)."""
        return {
            "cluster": self.cluster,
            "ok": self.ok,
            "duration": round(self.duration, 3),
            "api_calls": self.api_calls,
            "hosts": dict(self.hosts),
            "active_hosts": dict(self.active_hosts),
            "updated": self.count(plan.UPDATE),
            "unchanged": self.count(plan.UNCHANGED),
            "dry_run": self.count(plan.DRY_RUN),
            "skipped": self.count(plan.SKIP),
            "failed_services": self.failed_services,
            "deferred": self.deferred,
            "errors": list(self.errors),
            "decisions": [
                {
                    "service": d.service,
                    "action": d.action,
                    "current": d.current,
                    "target": d.target,
                    "hosts": d.hosts,
                    "reason": d.reason,
                }
                for d in self.decisions
            ],
        }
