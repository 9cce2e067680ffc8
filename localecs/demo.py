"""The local ECS world behind `make demo`: no AWS account needed.

Starts the local ECS API (moto on 127.0.0.1 behind the layer that behaves like
ECS, publishing ECS container instance state-change events through EventBridge
to an SQS queue, as AWS does), creates a cluster with a few hosts and some
services, runs `ecs-cluster-manager check`, then the real daemon (`ecs-cluster-manager`, pointed at
the local API through AWS_ENDPOINT_URL, with EVENTS_QUEUE_URL and a long
INTERVAL) while hosts come and go, and prints the services' desiredCount after
each change with the time it took. The local API places each service's tasks,
so a host too full to take its task shows in `check` as missing, with ECS's
reason, until room is made. Stops by itself after the scenario, or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import LocalECS
from .shell import manager_argv, manager_command

CLUSTER = "demo"
DEFAULT_INTERVAL = 300.0  # with events, INTERVAL is only the safety net
HOST_MEMORY = 7482  # MiB a local host registers: all of it taken leaves no room for any task
MANAGED = {"ecs-cluster-manager:managed": "true"}
DISTINCT = [{"type": "distinctInstance"}]
ROLLING = {"minimumHealthyPercent": 50, "maximumPercent": 100}

# name -> (how it is chosen, create_service keyword arguments)
SERVICES: dict[str, tuple[str, dict[str, object]]] = {
    "log-shipper": ("SERVICES", {"placement_constraints": DISTINCT, "deployment_configuration": ROLLING}),
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
}


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


def passes_started(local: LocalECS) -> int:
    """Every pass describes the managed services: the DescribeServices calls count the passes."""
    return local.count("DescribeServices")


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
    with LocalECS(schedule=True) as local:
        try:
            say(f"local ECS API on {local.endpoint_url}; cluster {CLUSTER!r} with 4 hosts (2 with role=web)")
            local.create_cluster(CLUSTER)
            hosts = local.add_hosts(CLUSTER, 2, attributes={"role": "web"})
            hosts += local.add_hosts(CLUSTER, 2, attributes={"role": "batch"})
            for name, (how, options) in SERVICES.items():
                local.create_service(CLUSTER, name, **options)  # type: ignore[arg-type]
                print(f"    service {name:13} managed by: {how}")
            show(local)

            queue_url = local.enable_events(CLUSTER)
            env = {
                **local.env(),
                "CLUSTER": CLUSTER,
                "SERVICES": "log-shipper",
                "SERVICE_REGEX": ".*-agent",
                "MANAGED_TAG": "ecs-cluster-manager:managed=true",
                "INTERVAL": str(interval),
                "SCALE_DOWN_AFTER": "2",
                "EVENTS_QUEUE_URL": queue_url,
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
                f"EVENTS_QUEUE_URL={queue_url}): host changes reach it as ECS events, in about a second"
            )
            daemon = subprocess.Popen(manager_argv(), env=env)
            follow(local, "log-shipper", 4, time.monotonic())

            say("a new web host joins: every service follows, web-cache too")
            started = time.monotonic()
            hosts += local.add_hosts(CLUSTER, 1, attributes={"role": "web"})
            follow(local, "web-cache", 3, started)

            say("a host's agent disconnects and reconnects, and tasks start on it: routine, so no pass and no change")
            before = passes_started(local)
            local.set_agent_connected(CLUSTER, hosts[3], False)
            local.set_agent_connected(CLUSTER, hosts[3], True)
            local.task_placed(CLUSTER, hosts[3])
            time.sleep(2.0)
            show(local)
            print(f"=== passes started by those events: {passes_started(local) - before}", flush=True)
            print(
                "    (an agent lost for good lowers the count only after SCALE_DOWN_AFTER=2 regular passes,\n"
                "    so its routine reconnects never stop a task)",
                flush=True,
            )

            say("a new host joins, but tasks already there took all its memory: no service task fits on it")
            started = time.monotonic()
            full = local.add_hosts(CLUSTER, 1, attributes={"role": "batch"}, reserved_memory=HOST_MEMORY)[0]
            follow(local, "log-shipper", 6, started)
            coverage_check = {**env, "SERVICES": "log-shipper", "SERVICE_REGEX": "", "MANAGED_TAG": ""}
            say(f"{manager_command()} check   (SERVICES=log-shipper): the full host lacks its task, with ECS's reason")
            subprocess.run([*manager_argv(), "check"], env=coverage_check, check=False)
            say("room is made on that host (its other tasks stop): ECS places log-shipper there")
            local.task_stopped(CLUSTER, full, memory=HOST_MEMORY)
            subprocess.run([*manager_argv(), "check"], env=coverage_check, check=False)
            hosts.append(full)

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
