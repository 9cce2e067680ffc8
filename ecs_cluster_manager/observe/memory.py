"""What the loop carries from one pass to the next: the host store, its counting, the gap watch, the pacing."""

from __future__ import annotations

import time
from collections.abc import Callable

from ecs_cluster_manager.config import Config
from ecs_cluster_manager.model.holds import hold_seconds
from ecs_cluster_manager.model.room import RoomWatch
from ecs_cluster_manager.observe.counting import RESYNC, Counting
from ecs_cluster_manager.observe.gaps import GapWatch
from ecs_cluster_manager.observe.hosts import HostStore
from ecs_cluster_manager.observe.readiness import ReadyWatch


class Memory:
    """What the loop carries from one pass to the next: the host store and how it is kept up to date.

    `hold`: how long a lost agent keeps counting, in seconds (SCALE_DOWN_AFTER x
    INTERVAL in the daemon; 0 acts at once). `resync`: the longest a filter goes
    without an exact listing (0: every pass lists, as a memoryless pass does).
    """

    def __init__(
        self,
        *,
        hold: float = 0.0,
        resync: float = RESYNC,
        interval: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = HostStore(hold, clock)
        self.counting = Counting(self.store, resync=resync, interval=interval)
        # (service ARN, check code) of each misconfiguration already logged, so each is logged once, not every pass.
        self.misconfigured: set[tuple[str, str]] = set()
        # Service ARN -> monotonic time since which a write it wants has been deferred: the longest-waiting go first.
        self.waiting_since: dict[str, float] = {}
        self.coverage = GapWatch()  # hosts missing their task, and since when
        self.ready = ReadyWatch()  # READY_ATTRIBUTE: the tasks each host runs, and the hosts with the attribute
        self.logged: dict[str, tuple[object, ...]] = {}  # service -> its last decision, as logged
        self.room = RoomWatch()  # where room was made for a daemon's task, and when

    def forget_unmanaged(self, managed: set[str]) -> None:
        """Keep the misconfigurations logged only for the services managed now (by ARN): memory stays bounded."""
        self.misconfigured = {key for key in self.misconfigured if key[0] in managed}

    @classmethod
    def for_config(cls, config: Config, *, clock: Callable[[], float] = time.monotonic) -> Memory:
        """The daemon's memory: a lost agent is held for SCALE_DOWN_AFTER x INTERVAL seconds."""
        return cls(
            hold=hold_seconds(config.scale_down_after, config.interval, once=config.once),
            resync=config.resync,
            interval=config.interval,
            clock=clock,
        )
