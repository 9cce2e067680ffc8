"""The local ECS world behind `make demo`: no AWS account needed.

Starts the local ECS API (moto on 127.0.0.1 behind the layer that behaves like
ECS), creates a cluster with a few hosts and some services, runs `run.py check`,
then the real daemon (`python run.py`, pointed at the local API through
AWS_ENDPOINT_URL) while hosts come and go, and prints the services' desiredCount
after each change. Stops by itself after the scenario, or on Ctrl-C.
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

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = "demo"
DEFAULT_INTERVAL = 2.0
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


def one_pass(local: LocalECS, interval: float) -> None:
    """Return once the daemon has counted hosts in one more pass (its passes are INTERVAL apart)."""
    seen = local.count("ListContainerInstances")
    wait_until(lambda: local.count("ListContainerInstances") > seen, interval * 3 + 10)
    time.sleep(min(0.3, interval / 3))  # let that pass finish its other listings and writes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localecs.demo", description=__doc__)
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL, help="the daemon's INTERVAL in seconds")
    interval = parser.parse_args(argv).interval
    stop_requested = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    daemon: subprocess.Popen[bytes] | None = None
    with LocalECS() as local:
        try:
            say(f"local ECS API on {local.endpoint_url}; cluster {CLUSTER!r} with 4 hosts (2 with role=web)")
            local.create_cluster(CLUSTER)
            hosts = local.add_hosts(CLUSTER, 2, attributes={"role": "web"})
            hosts += local.add_hosts(CLUSTER, 2, attributes={"role": "batch"})
            for name, (how, options) in SERVICES.items():
                local.create_service(CLUSTER, name, **options)  # type: ignore[arg-type]
                print(f"    service {name:13} managed by: {how}")
            show(local)

            env = {
                **local.env(),
                "CLUSTER": CLUSTER,
                "SERVICES": "log-shipper",
                "SERVICE_REGEX": ".*-agent",
                "MANAGED_TAG": "ecs-cluster-manager:managed=true",
                "INTERVAL": str(interval),
                "SCALE_DOWN_AFTER": "2",
                "HEARTBEAT_FILE": str(Path(os.environ.get("TMPDIR", "/tmp")) / "ecs-cluster-manager-demo.heartbeat"),
            }
            if sys.stdout.isatty():
                env["LOG_FORMAT"] = "console"

            say("python run.py check   (audits the managed services, changes nothing)")
            print(
                "    legacy-agent is misconfigured on purpose (minimumHealthyPercent 100 with distinctInstance),\n"
                "    so the check below reports one error and ends with FAILED: that is what it is for.",
                flush=True,
            )
            checked = subprocess.run([sys.executable, str(ROOT / "run.py"), "check"], env=env, check=False)
            say(
                f"check exited {checked.returncode}: the deliberate misconfiguration of legacy-agent was found "
                "(a rolling deploy would deadlock); the demo goes on"
            )

            say(f"starting the daemon: python run.py  (INTERVAL={interval:g}s, SCALE_DOWN_AFTER=2)")
            daemon = subprocess.Popen([sys.executable, str(ROOT / "run.py")], env=env)
            wait_until(lambda: local.desired_count(CLUSTER, "log-shipper") == 4, 15)
            time.sleep(0.5)
            show(local)

            say("a new web host joins: every service follows, web-cache too")
            hosts += local.add_hosts(CLUSTER, 1, attributes={"role": "web"})
            wait_until(lambda: local.desired_count(CLUSTER, "web-cache") == 3, 15)
            time.sleep(0.5)
            show(local)

            say("a host is drained for one pass, then back: damping keeps every task (scale down held 1/2)")
            local.drain(CLUSTER, hosts[3])
            one_pass(local, interval)
            local.activate(CLUSTER, hosts[3])
            one_pass(local, interval)
            show(local)

            say("a host's agent disconnects for one pass: the same")
            local.set_agent_connected(CLUSTER, hosts[3], False)
            one_pass(local, interval)
            local.set_agent_connected(CLUSTER, hosts[3], True)
            one_pass(local, interval)
            show(local)

            say("a host is drained for good: the services shrink after 2 passes")
            local.drain(CLUSTER, hosts[2])
            wait_until(lambda: local.desired_count(CLUSTER, "log-shipper") == 4, 20)
            time.sleep(0.5)
            show(local)

            say("a web host is deregistered: web-cache follows the web hosts (2 left)")
            local.deregister(CLUSTER, hosts[0])
            wait_until(lambda: local.desired_count(CLUSTER, "web-cache") == 2, 20)
            time.sleep(0.5)
            show(local)

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
