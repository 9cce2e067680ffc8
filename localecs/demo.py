"""The local ECS world behind `make demo`: no AWS account needed.

Starts the local ECS API (moto on 127.0.0.1 behind the layer that behaves like
ECS, publishing ECS container instance and task state-change events through
EventBridge to an SQS queue, as AWS does), creates a cluster with a few hosts
and some services, runs `ecs-cluster-manager check`, then the real daemon
(`ecs-cluster-manager`, pointed at the local API through AWS_ENDPOINT_URL, with
EVENTS_QUEUE_URL, READY_ATTRIBUTE, a short COVERAGE_GRACE and the INTERVAL
recommended with events)
while hosts come and go, and prints the services' desiredCount after each
change with the time it took. The local API places each service's tasks by
itself, each PENDING for a moment before it is RUNNING, as ECS does. It shows
the two ways the daemon's task gets its room: a new host takes the managed
services' tasks before an application task gated on the ready attribute, and
a host whose room an application task took (`check` names it missing, with
ECS's reason) gets it back when the manager stops one preemptible task there,
which ECS starts again on another host. Stops by itself after the scenario, or
on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from . import LocalECS
from .shell import manager_argv, manager_command

CLUSTER = "demo"
# With events, host and task changes start their own passes, and while a host misses its task the loop looks
# again every quarter of COVERAGE_GRACE: INTERVAL is only the safety net.
DEFAULT_INTERVAL = 300.0
START_AFTER = 0.5  # seconds a placed task is PENDING before it is RUNNING
COVERAGE_GRACE = 4.0  # seconds a host may miss its task before it counts as missing: short, for the demo
READY = "ecs-cluster-manager.ready"
SMALL_HOST_MEMORY = 3800  # MiB of the smaller instance type the batch group adds (the others: 7,482)
LOG_SHIPPER_MEMORY, BATCH_MEMORY = 256, 1800  # MiB each task reserves
MANAGED = {"ecs-cluster-manager:managed": "true"}
DISTINCT = [{"type": "distinctInstance"}]
ROLLING = {"minimumHealthyPercent": 50, "maximumPercent": 100}
GATE = {"type": "memberOf", "expression": f"attribute:{READY} == true"}
WEB = {"type": "memberOf", "expression": "attribute:role == web"}
BATCH = {"type": "memberOf", "expression": "attribute:role == batch"}

# name -> (how it is chosen, create_service keyword arguments); a "task_memory" is registered as its task definition.
SERVICES: dict[str, tuple[str, dict[str, object]]] = {
    "log-shipper": (
        "SERVICES, may make room",
        {
            "tags": {"ecs-cluster-manager:make-room": "true"},
            "placement_constraints": DISTINCT,
            "deployment_configuration": ROLLING,
            "task_memory": LOG_SHIPPER_MEMORY,
        },
    ),
    "node-agent": ("SERVICE_REGEX", {"placement_constraints": DISTINCT, "deployment_configuration": ROLLING}),
    "proxy": (
        "MANAGED_TAG, 2 per host",
        {"tags": {**MANAGED, "ecs-cluster-manager:tasks-per-host": "2"}, "deployment_configuration": ROLLING},
    ),
    "web-cache": (
        "MANAGED_TAG, memberOf role == web",
        {
            "tags": MANAGED,
            "placement_constraints": [*DISTINCT, {"type": "memberOf", "expression": "attribute:role == web"}],
            "deployment_configuration": ROLLING,
        },
    ),
    "legacy-agent": (
        "SERVICE_REGEX, deadlock-prone",
        {
            "placement_constraints": DISTINCT,
            "deployment_configuration": {"minimumHealthyPercent": 100, "maximumPercent": 200},
        },
    ),
    "billing-api": ("not managed", {"desired_count": 3}),
    "web-api": (
        "not managed, gated on the ready attribute, role == web",
        {"desired_count": 3, "placement_constraints": [*DISTINCT, WEB, GATE]},
    ),
    "batch-worker": (
        "not managed, preemptible, role == batch",
        {
            "desired_count": 4,
            "tags": {"ecs-cluster-manager:preemptible": "true"},
            "placement_constraints": [BATCH],
            "task_memory": BATCH_MEMORY,
        },
    ),
}
MANAGED_SERVICES = ("log-shipper", "node-agent", "proxy", "web-cache", "legacy-agent")


def say(message: str) -> None:
    print(f"\n=== sandbox: {message}", flush=True)


def show(local: LocalECS) -> None:
    counts = ", ".join(f"{name}={local.desired_count(CLUSTER, name)}" for name in SERVICES)
    print(f"=== desiredCount: {counts}", flush=True)


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def follow(local: LocalECS, service: str, count: int, started: float) -> None:
    """Wait until `service` is at `count`, then say how long the daemon took."""
    followed = wait_until(lambda: local.desired_count(CLUSTER, service) == count, 30)
    took = time.monotonic() - started
    time.sleep(0.5)  # let the same pass size the other services
    show(local)
    print(f"=== followed in {took:.1f}s" if followed else f"=== not followed after {took:.0f}s", flush=True)


def event_passes(metrics_port: int) -> int:
    """The passes events started so far, from the daemon's own /metrics (-1 when it cannot be read)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return -1
    found = re.search(r'^ecs_cluster_manager_passes_by_trigger_total\{trigger="event"\} ([\d.]+)$', text, re.M)
    return int(float(found.group(1))) if found else -1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def running_on(local: LocalECS, service: str, host: str) -> list[dict[str, object]]:
    """The service's RUNNING tasks on `host`."""
    return [
        t for t in local.tasks(CLUSTER, service) if t["containerInstanceArn"] == host and t["lastStatus"] == "RUNNING"
    ]


def started(local: LocalECS, service: str, host: str, since: float) -> float | None:
    """Seconds from `since` (time.time()) to the start of the service's RUNNING task on `host`, if it has one."""
    tasks = running_on(local, service, host)
    return min(float(str(t["startedAt"])) - since for t in tasks) if tasks else None


def marked_at(local: LocalECS, host: str, mark: int, since: float) -> float | None:
    """Seconds from `since` to the PutAttributes (after call `mark`) that set the ready attribute on `host`."""
    for call in local.calls_since(mark):
        for attribute in call.params.get("attributes") or [] if call.operation == "PutAttributes" else []:
            if attribute.get("targetId") == host and attribute.get("name") == READY:
                return call.at - since
    return None


def daemons_started(local: LocalECS, host: str, since: float, eligible: tuple[str, ...]) -> list[float] | None:
    """When each managed service the host is eligible for started its task there, or None while one has not."""
    times = [started(local, service, host, since) for service in eligible]
    return None if any(t is None for t in times) else [float(t) for t in times if t is not None]


def ready_host_step(local: LocalECS, host: str, mark: int, since: float, eligible: tuple[str, ...]) -> None:
    """Wait for web-api's task on the new host; say when the managed services' tasks, the attribute and it came."""
    wait_until(lambda: started(local, "web-api", host, since) is not None, 30)
    daemons = daemons_started(local, host, since, eligible) or []
    ready = marked_at(local, host, mark, since)
    gated = started(local, "web-api", host, since)
    if not daemons or ready is None or gated is None:
        print("=== the new host did not get every task and the attribute within 30 s", flush=True)
        return
    print(
        f"=== on the new host, from its registration: the {len(daemons)} managed services' tasks RUNNING at "
        f"{min(daemons):.1f}-{max(daemons):.1f}s, {READY}=true set at {ready:.1f}s, "
        f"web-api's task RUNNING at {gated:.1f}s",
        flush=True,
    )
    order = "after" if gated >= ready >= max(daemons) else "NOT after"
    print(f"=== web-api's task started {order} the daemons' tasks and the attribute", flush=True)


def stops_for_room(local: LocalECS, mark: int) -> list[tuple[float, str, str]]:
    """(time.time(), task, reason) of each StopTask the daemon sent after call `mark` to make room."""
    return [
        (call.at, str(call.params.get("task")), str(call.params.get("reason")))
        for call in local.calls_since(mark)
        if call.operation == "StopTask" and str(call.params.get("reason", "")).startswith("ecs-cluster-manager:")
    ]


def room_step(local: LocalECS, host: str, mark: int, since: float, interval: float) -> None:
    """Wait for the manager to make room on `host`; say what it stopped, where ECS started it again, and when."""
    if not wait_until(lambda: bool(stops_for_room(local, mark)), 2 * COVERAGE_GRACE + 15):
        print("=== no room was made within twice COVERAGE_GRACE + 15 s", flush=True)
        return
    wait_until(lambda: started(local, "log-shipper", host, since) is not None, 15)
    stops = stops_for_room(local, mark)
    stopped_at, task, reason = stops[0]
    moved: dict[str, object] | None = None

    def replaced() -> bool:
        """batch-worker's task started since the stop: the one ECS started in place of the stopped one."""
        nonlocal moved
        tasks = local.tasks(CLUSTER, "batch-worker")
        moved = next((t for t in tasks if float(str(t["startedAt"] or 0)) >= stopped_at), None)
        return moved is not None

    wait_until(replaced, 15)
    wait_until(lambda: marked_at(local, host, mark, since) is not None, 15)
    shipper = started(local, "log-shipper", host, since)
    ready = marked_at(local, host, mark, since)
    print(
        f"=== the manager stopped {len(stops)} batch-worker task{'s' if len(stops) > 1 else ''} there at "
        f"{stopped_at - since:.1f}s "
        f"(StopTask reason {reason!r}): task {task.rsplit('/', 1)[-1]}",
        flush=True,
    )
    if moved is not None:
        where = "another host" if moved["containerInstanceArn"] != host else "the SAME host"
        print(
            f"=== ECS started batch-worker's replacement on {where} at "
            f"{float(str(moved['startedAt'])) - since:.1f}s",
            flush=True,
        )
    if shipper is not None:
        print(f"=== log-shipper's task RUNNING on the small host at {shipper:.1f}s", flush=True)
    if ready is not None:
        print(f"=== {READY}=true set on it at {ready:.1f}s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localecs.demo", description=__doc__)
    parser.add_argument(
        "--interval", type=float, default=DEFAULT_INTERVAL, help="the daemon's INTERVAL in seconds (default 300)"
    )
    interval = parser.parse_args(argv).interval
    stop_requested = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    daemon: subprocess.Popen[bytes] | None = None
    with LocalECS(schedule=True, start_after=START_AFTER) as local:
        try:
            say(f"local ECS API on {local.endpoint_url}; cluster {CLUSTER!r} with 4 hosts (2 with role=web)")
            local.create_cluster(CLUSTER)
            hosts = local.add_hosts(CLUSTER, 2, attributes={"role": "web"})
            hosts += local.add_hosts(CLUSTER, 2, attributes={"role": "batch"})
            for name, (how, options) in SERVICES.items():
                settings = dict(options)
                memory = settings.pop("task_memory", None)
                if isinstance(memory, int):
                    settings["task_definition"] = local.register_task_definition(name, memory=memory)
                local.create_service(CLUSTER, name, **settings)  # type: ignore[arg-type]
                print(f"    service {name:13} {how}")
            show(local)

            queue_url = local.enable_events(CLUSTER, task_events=True)
            metrics_port = free_port()
            env = {
                **local.env(),
                "CLUSTER": CLUSTER,
                "SERVICES": "log-shipper",
                "SERVICE_REGEX": ".*-agent",
                "MANAGED_TAG": "ecs-cluster-manager:managed=true",
                "INTERVAL": str(interval),
                "SCALE_DOWN_AFTER": "2",
                "EVENTS_QUEUE_URL": queue_url,
                "READY_ATTRIBUTE": READY,
                "COVERAGE_GRACE": f"{COVERAGE_GRACE:g}",
                "HEARTBEAT_FILE": str(Path(os.environ.get("TMPDIR", "/tmp")) / "ecs-cluster-manager-demo.heartbeat"),
            }
            if sys.stdout.isatty():
                env["LOG_FORMAT"] = "console"

            say(f"{manager_command()} check   (audits the managed services, changes nothing)")
            print(
                "    legacy-agent is misconfigured on purpose (minimumHealthyPercent 100 with distinctInstance),\n"
                "    so the check below reports one error and ends with FAILED: that is what it is for.",
                flush=True,
            )
            checked = subprocess.run([*manager_argv(), "check"], env=env, check=False)
            say(
                f"check exited {checked.returncode}: the deliberate misconfiguration of legacy-agent was found "
                "(a rolling deploy would deadlock); the demo goes on"
            )

            say(
                f"starting the daemon: {manager_command()}  (INTERVAL={interval:g}s, SCALE_DOWN_AFTER=2, "
                f"EVENTS_QUEUE_URL={queue_url}, READY_ATTRIBUTE={READY}, COVERAGE_GRACE={COVERAGE_GRACE:g}s): "
                "host and task changes reach it as ECS events, in about a second; while a host misses its task "
                "it looks again every quarter of COVERAGE_GRACE"
            )
            daemon = subprocess.Popen(manager_argv(), env={**env, "METRICS_PORT": str(metrics_port)})
            began = time.monotonic()
            follow(local, "log-shipper", 4, began)
            wait_until(lambda: sum(1 for h in local.hosts(CLUSTER) if h["attributes"].get(READY) == "true") == 4, 30)
            wait_until(lambda: sum(1 for t in local.tasks(CLUSTER, "web-api") if t["lastStatus"] == "RUNNING") == 2, 30)
            print(
                f"=== {READY}=true on the 4 hosts after {time.monotonic() - began:.1f}s, once their managed "
                "services' tasks ran;\n    web-api (gated) then started on the 2 web hosts, its 3rd task waits for "
                "a third web host",
                flush=True,
            )

            say(
                "a new web host joins, for web-api's waiting task: every service follows, web-cache too; "
                "the managed services' tasks start there first, web-api's once the host is ready"
            )
            began = time.monotonic()
            mark = local.calls_recorded
            [web] = local.add_hosts(CLUSTER, 1, attributes={"role": "web"})
            registered = time.time()
            hosts.append(web)
            follow(local, "web-cache", 3, began)
            ready_host_step(local, web, mark, registered, MANAGED_SERVICES)

            say("a host's agent disconnects and reconnects, and tasks start on it: routine, so no pass and no change")
            before = event_passes(metrics_port)
            local.set_agent_connected(CLUSTER, hosts[3], False)
            local.set_agent_connected(CLUSTER, hosts[3], True)
            local.task_placed(CLUSTER, hosts[3])
            time.sleep(2.0)
            show(local)
            after = event_passes(metrics_port)
            print(
                f"=== passes started by those events: {after - before} (passes started by events so far: {after}, "
                "from the daemon's /metrics)",
                flush=True,
            )
            print(
                "    (an agent lost for good lowers the count only after SCALE_DOWN_AFTER=2 regular passes,\n"
                "    so its routine reconnects never stop a task)",
                flush=True,
            )

            say(
                f"a smaller batch host ({SMALL_HOST_MEMORY:,} MiB) joins as batch-worker scales out from 4 to 6 "
                "(no gate): ECS spreads both new tasks onto it, so log-shipper's task "
                f"({LOG_SHIPPER_MEMORY} MiB) has no room there"
            )
            began = time.monotonic()
            mark = local.calls_recorded
            # Both at once, as one scheduling run sees them: batch-worker's new tasks are placed before the
            # manager, reacting to the host's event, raises log-shipper's desiredCount.
            local.scheduler.enabled = False
            local.update_desired_count(CLUSTER, "batch-worker", 6)
            [small] = local.add_hosts(CLUSTER, 1, attributes={"role": "batch"}, memory=SMALL_HOST_MEMORY)
            registered = time.time()
            local.scheduler.enabled = True
            local.scheduler.changed()
            follow(local, "log-shipper", 6, began)
            coverage_check = {**env, "SERVICES": "log-shipper", "SERVICE_REGEX": "", "MANAGED_TAG": ""}
            say(f"{manager_command()} check   (SERVICES=log-shipper): the small host lacks its task, with ECS's reason")
            subprocess.run([*manager_argv(), "check"], env=coverage_check, check=False)
            say(
                f"once the host has missed its task for COVERAGE_GRACE ({COVERAGE_GRACE:g}s) the manager makes room: "
                "log-shipper may make room, batch-worker is preemptible"
            )
            room_step(local, small, mark, registered, interval)
            subprocess.run([*manager_argv(), "check"], env=coverage_check, check=False)
            hosts.append(small)

            say("a host is drained: removed on purpose, so the services shrink at once")
            started = time.monotonic()
            local.drain(CLUSTER, hosts[2])
            follow(local, "log-shipper", 5, started)

            say("a web host is deregistered: web-cache follows the web hosts (2 left)")
            started = time.monotonic()
            local.deregister(CLUSTER, hosts[0])
            follow(local, "web-cache", 2, started)

            say("stopping the daemon with SIGTERM, as ECS does")
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(timeout=10)
            say(f"daemon exited with {code}; billing-api (not managed) kept its 3 tasks throughout")
            return 0
        except KeyboardInterrupt:
            say("interrupted")
            return 0 if stop_requested else 130
        finally:
            if daemon is not None and daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    daemon.kill()


if __name__ == "__main__":
    sys.exit(main())
