"""Readiness in parts: the pure rule (model/readiness.py), the state (observe/readiness.py), task events, a pass."""

from __future__ import annotations

import json

import pytest
from fakes import FakeClock, FakeEcs

from ecs_cluster_manager.config import load
from ecs_cluster_manager.engine.passes import run_pass
from ecs_cluster_manager.model.coverage import compute
from ecs_cluster_manager.model.models import Task
from ecs_cluster_manager.model.readiness import HostState, ServiceHosts, decide
from ecs_cluster_manager.observe import events
from ecs_cluster_manager.observe.memory import Memory
from ecs_cluster_manager.observe.readiness import ReadyWatch, TaskChange

UP = HostState("ACTIVE", True)
ATTRIBUTE = "ecs-cluster-manager.ready"


@pytest.mark.parametrize(
    ("hosts", "services", "marked", "ready", "put", "delete"),
    [
        # Every service a host is eligible for runs there: ready, put.
        ({"h1": UP}, [ServiceHosts("a", frozenset({"h1"}), frozenset({"h1"}))], set(), {"h1"}, ("h1",), ()),
        # Already marked: nothing to write.
        ({"h1": UP}, [ServiceHosts("a", frozenset({"h1"}), frozenset({"h1"}))], {"h1"}, {"h1"}, (), ()),
        # One of two services lacks its task: not ready, not put.
        (
            {"h1": UP},
            [ServiceHosts("a", frozenset({"h1"}), frozenset({"h1"})), ServiceHosts("b", frozenset({"h1"}))],
            set(), set(), (), (),
        ),
        # A host in no service's filter: nothing to wait for.
        ({"h1": UP}, [ServiceHosts("a", frozenset())], set(), {"h1"}, ("h1",), ()),
        # A service never read: its hosts are not ready (readiness is proven, not assumed).
        ({"h1": UP}, [ServiceHosts("a", frozenset({"h1"}), read=False)], set(), set(), (), ()),
        # Beyond the target of the sizing tags: no task wanted there, ready.
        ({"h1": UP}, [ServiceHosts("a", frozenset({"h1"}), unwanted=frozenset({"h1"}))], set(), {"h1"}, ("h1",), ()),
        # Marked, task missing for less than the grace: kept.
        (
            {"h1": UP}, [ServiceHosts("a", frozenset({"h1"}), missing_since={"h1": 95.0})], {"h1"}, set(), (), (),
        ),
        # Marked, task missing for the grace: deleted.
        (
            {"h1": UP}, [ServiceHosts("a", frozenset({"h1"}), missing_since={"h1": 90.0})], {"h1"}, set(), (), ("h1",),
        ),
        # Draining: deleted at once; not ready.
        ({"h1": HostState("DRAINING", True)}, [ServiceHosts("a", frozenset())], {"h1"}, set(), (), ("h1",)),
        # A lost agent: not ready, but the attribute stays (ECS places nothing there anyway).
        (
            {"h1": HostState("ACTIVE", False)}, [ServiceHosts("a", frozenset(), frozenset({"h1"}))], {"h1"},
            set(), (), (),
        ),
        # A marked host the store does not know: left alone.
        ({}, [ServiceHosts("a", frozenset())], {"h9"}, set(), (), ()),
    ],
)
def test_the_readiness_rule(
    hosts: dict[str, HostState],
    services: list[ServiceHosts],
    marked: set[str],
    ready: set[str],
    put: tuple[str, ...],
    delete: tuple[str, ...],
) -> None:
    decided = decide(hosts, services, marked, now=100.0, grace=10.0)
    assert decided.ready == ready
    assert decided.put == put
    assert decided.delete == delete


def test_a_host_not_ready_says_which_services_it_waits_for() -> None:
    services = [
        ServiceHosts("a", frozenset({"h1"}), frozenset({"h1"})),
        ServiceHosts("b", frozenset({"h1"})),
        ServiceHosts("c", frozenset({"h1"}), read=False),
    ]
    (host,) = decide({"h1": UP}, services, set(), now=0.0, grace=10.0).not_ready
    assert host.waiting_for == ("b", "c")
    assert host.why == "no RUNNING task of b; tasks of c not read yet"


def task(arn: str, host: str, status: str = "RUNNING", version: int | None = 1) -> Task:
    return Task(arn, host, status, "td:1", version=version)


def change(arn: str, host: str, status: str, version: int, service: str = "agent") -> TaskChange:
    return TaskChange(arn, "arn:aws:ecs:us-east-1:123456789012:cluster/c", f"service:{service}", host, status,
                      "STOPPED" if status == "STOPPED" else "RUNNING", version)


def test_a_task_event_newer_than_the_reading_makes_its_host_run_the_task() -> None:
    watch = ReadyWatch()
    tasks = [task("t1", "h1"), task("t2", "h2", "PENDING")]
    watch.read(compute("agent", {"h1", "h2"}, tasks), tasks, {"h1", "h2"})
    assert watch.running("agent") == {"h1"}
    # An event saying RUNNING is a hint: the task is read before its host counts as running it.
    assert watch.observe_task(change("t2", "h2", "RUNNING", 2)) is True
    assert watch.running("agent") == {"h1"} and watch.unconfirmed == {"t2": "agent"}
    assert watch.observe_task(change("t2", "h2", "RUNNING", 2)) is False  # a copy
    watch.confirm([task("t2", "h2", version=2)])
    assert watch.running("agent") == {"h1", "h2"} and watch.unconfirmed == {}
    # An older event of the same task changes nothing.
    assert watch.observe_task(change("t2", "h2", "PENDING", 1)) is False
    assert watch.running("agent") == {"h1", "h2"}
    # The task stops: its host no longer runs it.
    assert watch.observe_task(change("t1", "h1", "STOPPED", 2)) is False
    assert watch.running("agent") == {"h2"}


def test_a_late_running_event_of_a_task_that_stopped_since_makes_no_host_ready() -> None:
    """The model's first find: a RUNNING event delivered after its task stopped (the STOPPED event lost) and its
    host drained: the event pass reads the task, finds it gone, and puts nothing."""
    fake = FakeEcs()
    fake.add_host()
    h2 = fake.add_host()
    fake.add_service("agent", 0)
    fake.tasks["agent"] = []
    clock = FakeClock()
    memory = Memory(hold=0.0, resync=12.0, interval=1.0, clock=clock)
    config = load([], {"CLUSTER": "prod", "SERVICES": "agent", "READY_ATTRIBUTE": ATTRIBUTE})
    run_pass(fake, config, memory, now=clock())
    started = fake.run_task("agent", h2)
    fake.tasks["agent"].remove(started)  # it stopped, and the host drained; neither event has come
    h2.status = "DRAINING"
    late = change(started.arn, h2.arn, "RUNNING", 1)
    assert memory.ready.observe_task(late) is True
    run_pass(fake, config, memory, changes=[late], now=clock())
    assert fake.attribute_writes == []


def test_task_events_of_services_never_read_are_not_kept() -> None:
    watch = ReadyWatch()
    assert watch.observe_task(change("t1", "h1", "RUNNING", 1, service="other")) is False
    assert watch.tasks == {}


def test_task_state_change_events_are_parsed_and_kept_apart_from_instance_versions() -> None:
    document = {
        "source": "aws.ecs",
        "detail-type": "ECS Task State Change",
        "time": "2026-12-03T10:00:00Z",
        "detail": {
            "taskArn": "arn:aws:ecs:us-east-1:123456789012:task/c/t1",
            "clusterArn": "arn:aws:ecs:us-east-1:123456789012:cluster/c",
            "group": "service:agent",
            "containerInstanceArn": "arn:aws:ecs:us-east-1:123456789012:container-instance/c/h1",
            "lastStatus": "RUNNING",
            "desiredStatus": "RUNNING",
            "version": 3,
        },
    }
    parsed = events.parse(json.dumps(document))
    assert isinstance(parsed, TaskChange)
    assert parsed.service == "agent" and parsed.version == 3 and parsed.time is not None
    batch = {**document, "detail": {**document["detail"], "group": "family:batch"}}
    assert events.parse(json.dumps(batch)) == events.Ignored(events.NOT_A_SERVICE_TASK)
    broken = {**document, "detail": {k: v for k, v in document["detail"].items() if k != "version"}}
    with pytest.raises(events.MalformedEvent, match="version"):
        events.parse(json.dumps(broken))
    seen = events.Seen()
    assert seen.check(parsed) is None
    assert seen.check(parsed) == "duplicate"


def test_a_pass_puts_the_attribute_on_ready_hosts_only_and_deletes_after_the_grace() -> None:
    """Against the in-memory gateway: the writes a pass makes as tasks come and go."""
    fake = FakeEcs()
    h1, h2 = fake.add_host(), fake.add_host()
    fake.add_service("agent", 0)
    clock = FakeClock()
    memory = Memory(hold=0.0, resync=300.0, interval=1.0, clock=clock)
    config = load([], {"CLUSTER": "prod", "SERVICES": "agent", "READY_ATTRIBUTE": ATTRIBUTE, "COVERAGE_GRACE": "10"})
    report = run_pass(fake, config, memory, now=clock())
    assert fake.desired_count("agent") == 2
    assert report.readiness is not None and report.readiness.ready == frozenset()
    assert fake.attribute_writes == []
    fake.run_task("agent", h1)
    clock.advance(1)
    run_pass(fake, config, memory, now=clock())
    assert fake.attribute_writes == [("PutAttributes", ATTRIBUTE, (h1.arn,))]
    fake.run_task("agent", h2)
    clock.advance(1)
    report = run_pass(fake, config, memory, now=clock())
    assert fake.attribute_writes[-1] == ("PutAttributes", ATTRIBUTE, (h2.arn,))
    assert report.hosts_marked == 2
    # Converged: no write.
    clock.advance(1)
    run_pass(fake, config, memory, now=clock())
    assert len(fake.attribute_writes) == 2
    # h1's task stops and stays gone: deleted once the grace has passed, not before.
    fake.tasks["agent"] = [t for t in fake.tasks["agent"] if t.container_instance_arn != h1.arn]
    for _ in range(4):
        clock.advance(2.5)
        run_pass(fake, config, memory, now=clock())
    assert len(fake.attribute_writes) == 2
    clock.advance(8)
    run_pass(fake, config, memory, now=clock())
    assert fake.attribute_writes[-1] == ("DeleteAttributes", ATTRIBUTE, (h1.arn,))
    assert fake.attributes[h1.arn] == {}


def test_a_failed_attribute_read_writes_nothing() -> None:
    fake = FakeEcs()
    host = fake.add_host()
    fake.add_service("agent", 1)
    fake.run_task("agent", host)

    def refuse(cluster: str, name: str, value: str | None = None) -> list[str]:
        from ecs_cluster_manager.aws.errors import TransientError

        raise TransientError("ListAttributes: ServerException: down")

    fake.list_attributes = refuse  # type: ignore[method-assign]
    clock = FakeClock()
    memory = Memory(hold=0.0, resync=300.0, interval=1.0, clock=clock)
    config = load([], {"CLUSTER": "prod", "SERVICES": "agent", "READY_ATTRIBUTE": ATTRIBUTE})
    report = run_pass(fake, config, memory, now=clock())
    assert report.readiness_error is not None and "ListAttributes" in report.readiness_error
    assert fake.attribute_writes == []
