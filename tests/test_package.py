"""The product installs alone: a wheel with only `ecs_cluster_manager`, a console script, no test code.

The wheel is built from this checkout (`pip wheel --no-deps`) and installed into
a fresh virtual environment holding only the runtime requirements; the
`ecs-cluster-manager` command it provides then converges a cluster of the local
ECS API. The pure decisions import without boto3 or botocore.
"""

from __future__ import annotations

import fcntl
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import ecs_cluster_manager
from daemon_helpers import ROOT, daemon_env, decisions, events
from localecs import LocalECS

PIP = ["-m", "pip", "--disable-pip-version-check"]
LAYERS = ("model", "aws", "observe", "engine", "ops")  # the subpackages, each a layer


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(the built wheel, a fresh venv with requirements.txt and that wheel installed).

    Built once per run: pytest-xdist's workers share this run's temporary root, and the first to get here
    builds while the others wait on the lock (a venv is tens of seconds of CPU)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = tmp_path_factory.getbasetemp().parent / "package"
        shared.mkdir(exist_ok=True)
        with open(shared / "build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (shared / "built").exists():
                _build(shared)
                (shared / "built").touch()
        yield _built(shared)
        return
    root = tmp_path_factory.mktemp("package")
    _build(root)
    yield _built(root)


def _built(root: Path) -> tuple[Path, Path]:
    (wheel,) = (root / "wheels").glob("ecs_cluster_manager-*.whl")
    return wheel, root / "venv"


def _build(root: Path) -> None:
    """Build the wheel from a copy of the sources into root/wheels, and install it into a new root/venv."""
    # Built from a copy of what the build reads, so setuptools' build/ and *.egg-info stay out of the checkout.
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "ecs_cluster_manager", source / "ecs_cluster_manager",
                    ignore=shutil.ignore_patterns("__pycache__"))
    wheels = root / "wheels"
    subprocess.run(
        [sys.executable, *PIP, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(source)],
        check=True,
        timeout=600,
        cwd=str(root),
    )
    (wheel,) = wheels.glob("ecs_cluster_manager-*.whl")
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = str(env_dir / "bin" / "python")
    subprocess.run([python, *PIP, "install", "--quiet", "-r", str(ROOT / "requirements.txt")], check=True, timeout=600)
    subprocess.run([python, *PIP, "install", "--quiet", "--no-deps", str(wheel)], check=True, timeout=600)


def _clean_env(env: dict[str, str]) -> dict[str, str]:
    """No PYTHONPATH: the installed package, not this checkout, must be what runs."""
    env.pop("PYTHONPATH", None)
    return env


def test_wheel_holds_the_product_only(installed: tuple[Path, Path]) -> None:
    """Every file in the wheel is the package or its metadata: no tests, local API, demo or benchmark."""
    wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    code = [name for name in names if ".dist-info/" not in name]
    assert code and all(name.startswith("ecs_cluster_manager/") for name in code), code
    # Every subpackage (each layer) is in the wheel, with every module of the checkout.
    source = {str(path.relative_to(ROOT)) for path in (ROOT / "ecs_cluster_manager").rglob("*.py")}
    assert source <= set(code), sorted(source - set(code))
    assert {name.split("/")[1] for name in code if name.count("/") == 2} >= set(LAYERS)
    assert not any(re.search(r"localecs|querylang|sandbox|demo|bench|tests?/|conftest", name) for name in code)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert f"Version: {ecs_cluster_manager.__version__}" in metadata
    required = set(re.findall(r"^Requires-Dist: (\S+==\S+)", metadata, re.MULTILINE))
    pins = {line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line}
    assert required == pins  # one source of the pins


def test_installed_command_prints_the_version(installed: tuple[Path, Path]) -> None:
    """`ecs-cluster-manager --version` prints the package version, from outside the checkout."""
    _, env_dir = installed
    result = subprocess.run(
        [str(env_dir / "bin" / "ecs-cluster-manager"), "--version"],
        capture_output=True, text=True, timeout=60, check=False, cwd=str(env_dir), env=_clean_env(dict(os.environ)),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ecs-cluster-manager {ecs_cluster_manager.__version__}"


@pytest.mark.long
def test_installed_command_converges_a_cluster(installed: tuple[Path, Path], ecs: LocalECS, tmp_path: Path) -> None:
    """`ecs-cluster-manager --once` and `python -m ecs_cluster_manager --once` from the wheel size a service."""
    _, env_dir = installed
    ecs.create_cluster("pkg")
    ecs.add_hosts("pkg", 3)
    ecs.create_service("pkg", "agent", placement_constraints=[{"type": "distinctInstance"}])
    env = _clean_env(daemon_env(ecs, tmp_path, CLUSTER="pkg", SERVICES="agent"))
    for command in ([str(env_dir / "bin" / "ecs-cluster-manager")], [str(env_dir / "bin" / "python"), "-m",
                                                                     "ecs_cluster_manager"]):
        ecs.update_desired_count("pkg", "agent", 0)
        result = subprocess.run(
            [*command, "--once"], env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert decisions(result.stdout)["agent"]["target"] == 3
        [start] = [e for e in events(result.stdout) if e.get("event") == "start"]
        assert start["version"] == ecs_cluster_manager.__version__
        assert ecs.desired_count("pkg", "agent") == 3


def test_every_module_imports_without_the_test_dependencies(installed: tuple[Path, Path]) -> None:
    """Each module of the installed package imports where only requirements.txt is installed (no moto)."""
    _, env_dir = installed
    modules = sorted(
        info.name
        for info in pkgutil.walk_packages([str(ROOT / "ecs_cluster_manager")], prefix="ecs_cluster_manager.")
        if not info.name.endswith("__main__")
    )
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n" \
             "assert 'moto' not in sys.modules\nprint('ok', len(sys.argv) - 1)"
    result = subprocess.run(
        [str(env_dir / "bin" / "python"), "-c", script, *modules],
        capture_output=True, text=True, timeout=120, check=False, cwd=str(env_dir), env=_clean_env(dict(os.environ)),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ok {len(modules)}"
    assert "ecs_cluster_manager.lambda_handler" in modules and "ecs_cluster_manager.model.plan" in modules


def test_the_product_never_imports_the_local_api() -> None:
    """No module of ecs_cluster_manager imports moto or localecs, at the top or inside a function."""
    pattern = re.compile(r"^\s*(from|import)\s+(moto|localecs|werkzeug|flask)\b", re.MULTILINE)
    offenders = [path.name for path in (ROOT / "ecs_cluster_manager").rglob("*.py") if pattern.search(path.read_text())]
    assert offenders == []


def test_plan_decides_with_boto3_and_botocore_blocked() -> None:
    """plan.py (and the models it reads) import no AWS code: a decision runs with boto3 and botocore unimportable."""
    script = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("boto3", "botocore"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
from ecs_cluster_manager.model import plan
from ecs_cluster_manager.model import sizing
from ecs_cluster_manager.model.models import HostCount, Service
service = Service(arn="arn:aws:ecs:us-east-1:123456789012:service/c/s", name="s", cluster_arn="c",
                  status="ACTIVE", desired_count=1)
decision = plan.decide(service, HostCount(active=4, usable=4), sizing.Sizing())
print(decision.action, decision.target)
assert not any(m.split(".")[0] in ("boto3", "botocore") for m in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False,
                            cwd=str(ROOT))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["update", "4"]


def test_version_is_the_same_everywhere() -> None:
    """pyproject reads the package's version; the README and the example stack's image tag name the same one."""
    version = ecs_cluster_manager.__version__
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" in project["dynamic"]
    assert f"ecs-cluster-manager:{version}" in (ROOT / "deploy" / "cloudformation.yaml").read_text()
    assert version in (ROOT / "README.md").read_text()


def test_run_py_without_the_requirements_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    """`python3 run.py` with a Python that lacks the requirements says so in one line, exit 2, no traceback."""
    bare = tmp_path / "bare"
    venv.EnvBuilder(with_pip=False, clear=True).create(bare)
    python = str(bare / "bin" / "python")
    probe = subprocess.run([python, "-c", "import boto3"], capture_output=True, text=True, check=False)
    assert probe.returncode != 0, "the bare venv must not see boto3"
    env = _clean_env({key: value for key, value in os.environ.items() if not key.startswith("AWS_")})
    env.update(CLUSTER="prod", SERVICES="a", AWS_REGION="us-east-1")
    result = subprocess.run(
        [python, str(ROOT / "run.py"), "--once"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("ecs-cluster-manager: error: Python module "), line
    assert "is not installed" in line and "make venv" in line, line
