"""`make demo`: the sandbox scenario runs the real daemon and the services follow the host count."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from daemon_helpers import ROOT


def test_sandbox_scenario_shows_services_following_hosts() -> None:
    """The demo's daemon (events on, INTERVAL=300) sizes every managed service within seconds of each host
    change, starts no pass for a routine agent reconnect, shows a host too full for its task as missing in
    check until room is made, and exits 0 on SIGTERM."""
    result = subprocess.run(
        [sys.executable, "-m", "localecs.demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    snapshots = re.findall(r"=== desiredCount: (.*)", result.stdout)
    counts = [dict(pair.split("=") for pair in line.split(", ")) for line in snapshots]
    assert counts[0]["log-shipper"] == "0"
    assert counts[1] == {
        "log-shipper": "4",
        "node-agent": "4",
        "proxy": "8",
        "web-cache": "2",
        "legacy-agent": "4",
        "billing-api": "3",
    }
    assert counts[2]["web-cache"] == "3" and counts[2]["log-shipper"] == "5"
    # An agent that disconnects and reconnects, and a task placed, change nothing and start no pass.
    assert counts[3] == counts[2]
    assert "=== passes started by those events: 0" in result.stdout
    # A host too full for any task: sized for, listed by check as missing with ECS's reason, then covered.
    assert counts[4]["log-shipper"] == "6"
    full_check, room_check = result.stdout.split("room is made on that host")
    assert "5/6 eligible host(s) run a task" in full_check and "insufficient memory" in full_check
    assert "6/6 eligible host(s) run a task" in room_check.split("a host is drained")[0]
    assert counts[5]["log-shipper"] == "5" and counts[5]["proxy"] == "10"  # a drained host: at once
    # Each change was followed through its event, in seconds, not INTERVAL (300 s).
    took = [float(seconds) for seconds in re.findall(r"=== followed in ([\d.]+)s", result.stdout)]
    assert len(took) == 5 and max(took) < 5, took
    assert counts[-1] == {
        "log-shipper": "4",
        "node-agent": "4",
        "proxy": "8",
        "web-cache": "2",
        "legacy-agent": "4",
        "billing-api": "3",
    }
    assert "deployment-deadlock" in result.stdout  # `check` flags legacy-agent
    # The check's FAILED line is announced and explained as the deliberate misconfiguration it is.
    failed = result.stdout.index("FAILED: cluster demo")
    assert "legacy-agent is misconfigured on purpose" in result.stdout[:failed]
    assert "the deliberate misconfiguration of legacy-agent was found" in result.stdout[failed:]
    assert "daemon exited with 0" in result.stdout
    # It prints the command README leads with, as a new shell in the checkout can run it, and runs that one.
    [program] = set(re.findall(r"=== sandbox: (\S+) check ", result.stdout))
    assert Path(program).name == "ecs-cluster-manager" and (ROOT / program).exists(), program
    assert f"starting the daemon: {program} " in result.stdout
