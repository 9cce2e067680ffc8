"""Building the image from the Dockerfile and running it with podman, for tests/test_image.py.

The base is the official Python image unless PYTHON_IMAGE says otherwise; the
tests pass a stand-in built from Debian's packages (tests/image/python-base.sh),
imported once and kept, its tarball cached under ~/.cache/ecs-cluster-manager.
The build's pip reads this machine's pip configuration files and the local
files and directories they name, mounted read-only into the build only.
"""

from __future__ import annotations

import configparser
import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
BASE_SCRIPT = ROOT / "tests" / "image" / "python-base.sh"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ecs-cluster-manager"

PODMAN = shutil.which("podman")
# crun cannot run containers on some hosts (cgroups in hybrid mode): runc can, where it is installed.
# runc needs explicit limits.
RUNTIME = ["--runtime", "runc"] if shutil.which("runc") else []
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
# What the official image sets besides its files; the stand-in gets the same.
BASE_CONFIG = ["ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin", "ENV LANG=C.UTF-8",
               'CMD ["python3"]']
# Where the build's pip looks for configuration files, as root: global ones, then the user's.
PIP_GLOBAL_CONFIGS = [Path("/etc/xdg/pip/pip.conf"), Path("/etc/pip.conf")]
PIP_USER_CONFIGS = {Path.home() / ".config/pip/pip.conf": Path("/root/.config/pip/pip.conf"),
                    Path.home() / ".pip/pip.conf": Path("/root/.pip/pip.conf")}
# Options whose values are package index URLs: a local ("simple") index links to its files beside it.
PIP_INDEX_OPTIONS = {"index-url", "extra-index-url"}


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`podman ARGS` with the runtime that works here; fails with podman's stderr when check and non-zero."""
    assert PODMAN, "podman is not installed"
    result = subprocess.run([PODMAN, *RUNTIME, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return result


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """Hold an exclusive lock shared by every test process of this user (pytest-xdist workers build once)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def python_base() -> str:
    """The stand-in base image, named after the recipe's hash: built and imported the first time only."""
    recipe = hashlib.sha256(BASE_SCRIPT.read_bytes()).hexdigest()[:12]
    name = f"localhost/ecs-cluster-manager-python-base:{recipe}"
    with _locked("python-base"):
        if podman("image", "exists", name, check=False).returncode == 0:
            return name
        tarball = CACHE / f"python-base-{recipe}.tar"
        if not tarball.exists():
            subprocess.run(["sh", str(BASE_SCRIPT), str(tarball)], check=True, timeout=900)
        changes = [word for change in BASE_CONFIG for word in ("--change", change)]
        podman("import", *changes, str(tarball), name, timeout=300)
    return name


def _named_paths(config_file: Path) -> set[Path]:
    """The existing local files and directories a pip configuration file names."""
    parser = configparser.RawConfigParser()
    parser.read(config_file)
    paths = set()
    for section in parser.sections():
        for option, value in parser.items(section):
            for word in value.split():
                url = urlparse(word)
                if url.scheme == "file":
                    path = Path(url.path)
                    paths.add(path.parent if option in PIP_INDEX_OPTIONS else path)
                elif word.startswith("/"):
                    paths.add(Path(word))
    return {path for path in paths if path.exists()}


def pip_config_mounts() -> list[str]:
    """`-v SOURCE:TARGET:ro` for each pip configuration file of this machine and each local path it names."""
    configs = {path: path for path in PIP_GLOBAL_CONFIGS if path.is_file()}
    configs |= {path: target for path, target in PIP_USER_CONFIGS.items() if path.is_file()}
    named: set[Path] = set()
    for path in configs:
        named |= _named_paths(path)
    mounts = [f"{source}:{target}:ro" for source, target in sorted(configs.items())]
    mounts += [f"{path}:{path}:ro" for path in sorted(named)]
    return [word for mount in mounts for word in ("-v", mount)]


def build_image(tag: str, base: str, dockerfile: Path | None = None) -> None:
    """Build the Dockerfile (or another one, with the same context) into TAG, FROM base."""
    dockerfile_args = ["-f", str(dockerfile)] if dockerfile else []
    # --format docker keeps HEALTHCHECK (the OCI image format has no place for it); chroot isolation
    # needs no cgroups or network namespace for the RUN steps.
    podman("build", "--quiet", "--format", "docker", "--isolation", "chroot", "--build-arg", f"PYTHON_IMAGE={base}",
           *pip_config_mounts(), *dockerfile_args, "-t", tag, str(ROOT), timeout=900)


def run_args(name: str, environment: dict[str, str], extra: Sequence[str] = ()) -> list[str]:
    """The `podman run` arguments for a container NAME that reaches the local API on 127.0.0.1."""
    env = [word for key, value in sorted(environment.items()) for word in ("-e", f"{key}={value}")]
    return ["run", "--name", name, "--network", "host", *LIMITS, *env, *extra]


def remove_container(name: str) -> None:
    """Remove the container, running or not, and forget it if it is gone already."""
    podman("rm", "--force", "--time", "0", name, check=False, timeout=60)
