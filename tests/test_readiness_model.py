"""Model-based test of READY_ATTRIBUTE: tasks come and go, hosts join and drain, task events are late or lost.

hypothesis's stateful testing drives an in-memory cluster (tests/fakes.py) and
the manager's passes on a clock the test owns. Each start and stop of the
daemon service's task is also an ECS Task State Change event, delivered late,
out of order, twice, or never, and taken in as the loop takes it in (then an
event pass). After every step the model checks:

- the attribute was put only on a host that ran the service's task at that moment;
- after a regular pass, no DRAINING host has it, and none whose task has been
  gone for twice COVERAGE_GRACE since the first regular pass that could see it
  gone (the grace, plus the coverage reading's own cadence of a quarter of it,
  plus a pass);
- after a regular pass, once the cluster has not changed for RESYNC, every
  ACTIVE host that runs the task has it.
"""

from __future__ import annotations

import os
from dataclasses import replace

from fakes import ACCOUNT, FakeClock, FakeEcs, FakeHost
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ecs_cluster_manager.config import load
from ecs_cluster_manager.engine.passes import run_pass
from ecs_cluster_manager.model.models import Task
from ecs_cluster_manager.observe.memory import Memory
from ecs_cluster_manager.observe.readiness import TaskChange

ATTRIBUTE = "ecs-cluster-manager.ready"
GRACE = 8.0
RESYNC = 12.0
SERVICE = "agent"


class Checked(FakeEcs):
    """The in-memory gateway, recording a put on a host that does not run the service's task."""

    def __init__(self) -> None:
        super().__init__()
        self.violations: list[str] = []

    def put_attributes(self, cluster: str, name: str, value: str, arns: list[str]) -> None:  # type: ignore[override]
        running = {t.container_instance_arn for t in self.tasks.get(SERVICE, []) if t.last_status == "RUNNING"}
        self.violations += [f"put on {arn}, which runs no {SERVICE} task" for arn in arns if arn not in running]
        super().put_attributes(cluster, name, value, arns)


class ReadinessModel(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.fake = Checked()
        self.fake.add_service(SERVICE, 0)
        self.fake.tasks[SERVICE] = []
        for _ in range(2):
            self.fake.add_host()
        self.clock = FakeClock()
        self.memory = Memory(hold=0.0, resync=RESYNC, interval=1.0, clock=self.clock)
        self.config = load(
            [],
            {
                "CLUSTER": "prod",
                "SERVICES": SERVICE,
                "READY_ATTRIBUTE": ATTRIBUTE,
                "COVERAGE_GRACE": str(GRACE),
                "RESYNC": str(RESYNC),
            },
        )
        self.pending: list[TaskChange] = []  # task events not delivered yet
        self.versions: dict[str, int] = {}
        self.gone_since: dict[str, float] = {}  # host -> since when it has had no task (while ACTIVE)
        self.seen_gone: dict[str, float] = {}  # host -> the first regular pass after it lost its task
        self.changed_at = self.clock()
        self.task_number = 0

    # -- the cluster --------------------------------------------------------------------------

    def _active(self) -> list[FakeHost]:
        return [h for h in self.fake.hosts.values() if h.status == "ACTIVE"]

    def _running(self) -> set[str]:
        return {t.container_instance_arn or "" for t in self.fake.tasks[SERVICE] if t.last_status == "RUNNING"}

    def _event(self, task: Task, status: str) -> None:
        version = self.versions.get(task.arn, 0) + 1
        self.versions[task.arn] = version
        cluster = f"{ACCOUNT}:cluster/prod"
        desired = "STOPPED" if status == "STOPPED" else "RUNNING"
        change = TaskChange(task.arn, cluster, f"service:{SERVICE}", task.container_instance_arn, status, desired,
                            version)
        self.pending.append(change)

    def _changed(self) -> None:
        self.changed_at = self.clock()

    @rule()
    def add_host(self) -> None:
        host = self.fake.add_host()
        self.gone_since[host.arn] = self.clock()
        self._changed()

    @rule(data=st.data())
    def start_task(self, data: st.DataObject) -> None:
        free = [h for h in self._active() if h.arn not in self._running()]
        if not free:
            return
        host = data.draw(st.sampled_from(free))
        self.task_number += 1
        task = Task(f"{ACCOUNT}:task/prod/t{self.task_number}", host.arn, "RUNNING", "td:1", version=1)
        self.fake.tasks[SERVICE].append(task)
        self._event(task, "RUNNING")  # its version 1, as the reading has it
        self.gone_since.pop(host.arn, None)
        self._changed()

    @rule(data=st.data())
    def stop_task(self, data: st.DataObject) -> None:
        if not self.fake.tasks[SERVICE]:
            return
        task = data.draw(st.sampled_from(self.fake.tasks[SERVICE]))
        self.fake.tasks[SERVICE].remove(task)
        self._event(task, "STOPPED")
        self.gone_since.setdefault(task.container_instance_arn or "", self.clock())
        self._changed()

    @rule(data=st.data())
    def drain(self, data: st.DataObject) -> None:
        active = self._active()
        if len(active) <= 1:
            return
        host = data.draw(st.sampled_from(active))
        host.status = "DRAINING"
        host.version += 1
        for task in [t for t in self.fake.tasks[SERVICE] if t.container_instance_arn == host.arn]:
            self.fake.tasks[SERVICE].remove(task)
            self._event(task, "STOPPED")
        self.gone_since.pop(host.arn, None)
        self._changed()

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, GRACE, 2 * GRACE]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    # -- the events, late, reordered, twice or never ------------------------------------------

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data(), keep=st.booleans())
    def deliver(self, data: st.DataObject, keep: bool) -> None:
        """One waiting event, any of them, as the loop takes it in; `keep` leaves it waiting (a copy comes later)."""
        index = data.draw(st.integers(0, len(self.pending) - 1))
        change = self.pending[index] if keep else self.pending.pop(index)
        if self.memory.ready.observe_task(replace(change, arrived=self.clock())):
            run_pass(self.fake, self.config, self.memory, changes=[change], now=self.clock())

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data())
    def lose(self, data: st.DataObject) -> None:
        self.pending.pop(data.draw(st.integers(0, len(self.pending) - 1)))

    # -- passes -------------------------------------------------------------------------------

    @rule()
    def regular_pass(self) -> None:
        self.clock.advance(1.0)
        run_pass(self.fake, self.config, self.memory, now=self.clock())
        now = self.clock()
        for arn in self.gone_since:
            self.seen_gone.setdefault(arn, now)
        self.seen_gone = {arn: at for arn, at in self.seen_gone.items() if arn in self.gone_since}
        marked = {arn for arn, attributes in self.fake.attributes.items() if attributes.get(ATTRIBUTE) == "true"}
        for arn in marked:
            host = self.fake.hosts[arn]
            assert host.status == "ACTIVE", f"{arn} is {host.status} and still has {ATTRIBUTE}"
            since = self.seen_gone.get(arn)
            assert since is None or now - since < 2 * GRACE, f"{arn} has been seen without a task for {now - since}s"
        if now - self.changed_at >= RESYNC:
            lacking = {h.arn for h in self._active() if h.arn in self._running()} - marked
            assert not lacking, f"running the task for {now - self.changed_at}s without {ATTRIBUTE}: {lacking}"

    @invariant()
    def never_put_where_the_task_does_not_run(self) -> None:
        assert self.fake.violations == []


def test_readiness_model() -> None:
    ReadinessModel.TestCase.settings = settings(
        max_examples=60,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        phases=[Phase.explicit, Phase.reuse, Phase.generate] if os.environ.get("MODEL_NO_SHRINK") else list(Phase),
    )
    ReadinessModel.TestCase().runTest()
