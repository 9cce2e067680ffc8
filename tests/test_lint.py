"""The code stays ruff-clean, mypy-clean and layered, so `make test` (and CI) catch what `make lint` would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_ruff_is_clean() -> None:
    """ruff finds nothing in run.py, the package, the local ECS API, the tests and the benchmark."""
    paths = [p for p in ("run.py", "ecs_cluster_manager", "localecs", "tests", "bench") if (ROOT / p).exists()]
    result = subprocess.run([str(BIN / "ruff"), "check", *paths], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    """mypy (settings in pyproject.toml) finds no type error in run.py, the package and the local ECS API."""
    result = subprocess.run([str(BIN / "mypy")], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_layers_hold() -> None:
    """lint-imports (.importlinter) finds no upward import, no boto3 outside aws/, no impure model, no cycle."""
    result = subprocess.run([str(BIN / "lint-imports")], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
