"""`python -m localecs`: a local ECS API kept running by hand, changed from another shell, converged by the daemon."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from daemon_helpers import ROOT, RUN_PY, decisions


def _localecs(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "localecs", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )


def test_serve_prints_exports_that_let_the_daemon_converge_by_hand(tmp_path: Path) -> None:
    """serve prints an `export` line; with it, add-host/drain/disconnect change the cluster and --once follows."""
    server = subprocess.Popen(
        [sys.executable, "-m", "localecs", "serve", "--hosts", "3", "--services", "agent,shipper"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert server.stdout is not None
        exports: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while not exports and time.monotonic() < deadline:
            line = server.stdout.readline()
            if line.startswith("export "):
                exports = dict(pair.split("=", 1) for pair in line.split()[1:])
        assert {"AWS_ENDPOINT_URL", "CLUSTER", "SERVICES"} <= exports.keys(), "no export line"
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", exports["AWS_ENDPOINT_URL"])
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(exports, AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
                   LOG_FORMAT="json", HEARTBEAT_FILE=str(tmp_path / "heartbeat"))

        def once() -> dict[str, int]:
            result = subprocess.run([sys.executable, RUN_PY, "--once"], env=env, capture_output=True, text=True,
                                    timeout=60, check=False)
            assert result.returncode == 0, result.stdout + result.stderr
            return {name: event["target"] for name, event in decisions(result.stdout).items()}

        assert once() == {"agent": 3, "shipper": 3}
        added = _localecs("add-host", "--count", "2", "--attribute", "role=web", env=env)
        assert added.returncode == 0 and added.stdout.count("added ") == 2, added.stderr
        assert once() == {"agent": 5, "shipper": 5}
        assert _localecs("drain", env=env).returncode == 0
        assert _localecs("disconnect", env=env).returncode == 0  # the newest ACTIVE host with an agent
        assert once() == {"agent": 3, "shipper": 3}
        hosts = _localecs("hosts", env=env).stdout.splitlines()
        assert len(hosts) == 5
        assert sum("DRAINING" in h for h in hosts) == 1 and sum("DISCONNECTED" in h for h in hosts) == 1
        assert sum("role=web" in h for h in hosts) == 2
        missing = _localecs("drain", "no-such-host", env=env)
        assert missing.returncode == 1 and "no host 'no-such-host'" in missing.stderr
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=20) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_control_commands_say_what_is_missing() -> None:
    """Without AWS_ENDPOINT_URL or CLUSTER a control command names what it needs, in one line, exit 2."""
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ENDPOINT_URL", "CLUSTER")}
    result = _localecs("drain", env=env)
    assert result.returncode == 2 and "AWS_ENDPOINT_URL" in result.stderr and len(result.stderr.splitlines()) == 1
    result = _localecs("drain", env={**env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert result.returncode == 2 and "CLUSTER" in result.stderr
    result = _localecs("drain", env={**env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "CLUSTER": "c"})
    assert result.returncode == 1 and "cannot reach the local ECS API" in result.stderr


def _serve_output(*args: str) -> list[str]:
    """The lines `python -m localecs serve ARGS` prints before it waits, and the server stopped again."""
    server = subprocess.Popen(
        [sys.executable, "-m", "localecs", "serve", *args], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    try:
        assert server.stdout is not None
        while not any(line.startswith("change the cluster") for line in lines):
            line = server.stdout.readline()
            assert line, "serve ended early: " + "".join(lines)
            lines.append(line.rstrip("\n"))
        return lines
    finally:
        server.kill()
        server.wait()


def test_serve_prints_commands_that_work_in_a_new_shell() -> None:
    """The daemon command serve prints runs in a new shell from the checkout, where the venv is not on PATH, and
    the export line sets the region the AWS CLI v1 reads too."""
    lines = _serve_output("--hosts", "2", "--events")
    [export] = [line for line in lines if line.startswith("export ")]
    command = lines[lines.index(export) + 1].split("#", 1)[0].strip()
    assert command.endswith("--once") and not command.startswith("ecs-cluster-manager"), command
    exports = dict(pair.split("=", 1) for pair in export.split()[1:])
    assert exports["AWS_DEFAULT_REGION"] == exports["AWS_REGION"]
    version_command = f"{command.removesuffix('--once')} --version"
    shell = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", version_command],
        cwd=ROOT, env={"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert shell.returncode == 0 and shell.stdout.startswith("ecs-cluster-manager "), shell.stdout + shell.stderr
    control = lines[-1].split(": ", 1)[1].split(" add-host", 1)[0]
    help_run = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", f"{control} --help"],
        cwd=ROOT, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60, check=False,
    )
    assert help_run.returncode == 0 and "add-host" in help_run.stdout, help_run.stderr


def test_sandbox_page_reads_the_queue_with_the_endpoint_and_a_region() -> None:
    """docs/sandbox.md's AWS CLI line for the sandbox's events queue passes the endpoint and the region, and every
    variable it uses is one the sandbox's export line sets."""
    page = (ROOT / "docs" / "sandbox.md").read_text()
    [line] = [part for part in page.replace("\\\n", " ").splitlines() if part.startswith("aws sqs receive-message")]
    assert '--endpoint-url "$AWS_ENDPOINT_URL"' in line and '--region "$AWS_REGION"' in line, line
    lines = _serve_output("--hosts", "1", "--events")
    [export] = [line for line in lines if line.startswith("export ")]
    exports = dict(pair.split("=", 1) for pair in export.split()[1:])
    assert set(re.findall(r"\$(\w+)", line)) <= exports.keys()
