"""The container and ECR make targets, run with `make -n` (or DOCKER=echo / AWS=echo), so no Docker or AWS is needed."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from ecs_cluster_manager import __version__, config

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"

# What boto3 itself reads, besides the manager's own config.VARIABLES, that docker-run passes on.
# AWS_PROFILE is left out on purpose: the image has no ~/.aws to read a profile from.
AWS_VARIABLES = {
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_ECS",
    "AWS_ENDPOINT_URL_SQS",
}


def make(*args: str, **environment: str) -> str:
    """`make --no-print-directory ARGS` in the checkout; returns stdout, fails the test on a non-zero exit."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MAKE")}
    for name in (*config.VARIABLES, *AWS_VARIABLES, "TAG", "REGISTRY", "IMAGE", "DOCKER", "AWS", "PLATFORMS"):
        env.pop(name, None)
    env.update(environment)
    result = subprocess.run(
        ["make", "--no-print-directory", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # An empty variable leaves two spaces in a command; one is enough to compare.
    return "\n".join(" ".join(line.split()) for line in result.stdout.splitlines())


def docker_run_env_names(command: str) -> list[str]:
    words = shlex.split(command)
    return [words[i + 1] for i, word in enumerate(words[:-1]) if word == "-e"]


def test_docker_run_passes_every_variable_the_manager_reads() -> None:
    """`make docker-run` passes -e NAME for exactly config.VARIABLES plus the AWS_* variables boto3 reads."""
    command = make("-n", "docker-run", "DOCKER=docker")
    names = docker_run_env_names(command)
    assert len(names) == len(set(names)), names
    assert set(names) == set(config.VARIABLES) | AWS_VARIABLES


def test_dry_run_and_other_settings_reach_the_container() -> None:
    """Settings set in the environment (DRY_RUN=1, MANAGED_TAG, INTERVAL, ...) reach `docker run`'s environment."""
    settings = {name: f"value-of-{name}" for name in config.VARIABLES if name != "DRY_RUN"}
    # DOCKER="sh -c env": the recipe's `docker run ...` prints the environment `docker run -e NAME` would read.
    # DRY_RUN is given on make's command line, the others in the environment: both reach the container.
    output = make("docker-run", "DOCKER=sh -c env", "DRY_RUN=1", **settings)
    seen = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    for name, value in (settings | {"DRY_RUN": "1"}).items():
        assert seen.get(name) == value, name
    # ... and `docker run` is told to pass each of them on.
    names = docker_run_env_names(make("docker-run", "DOCKER=echo", "DRY_RUN=1", **settings))
    assert set(config.VARIABLES) <= set(names)


def test_tag_defaults_to_the_package_version() -> None:
    """TAG defaults to ecs_cluster_manager.__version__ (the package's one version), not git describe."""
    command = make("-n", "docker-build", "DOCKER=docker").strip()
    assert command.endswith(f"-t ecs-cluster-manager:{__version__} .")
    assert f"ecs-cluster-manager:{__version__}" in make("-n", "docker-push", "DOCKER=docker")
    assert f"image: ecs-cluster-manager:{__version__}" in make("info")
    assert "-t ecs-cluster-manager:9.9.9 ." in make("-n", "docker-build", "TAG=9.9.9")


def test_image_builds_with_docker_or_podman() -> None:
    """`make image` is docker-build; with podman it builds Docker's image format, the one that keeps HEALTHCHECK."""
    assert make("-n", "image", "DOCKER=docker").strip() == f"docker build -t ecs-cluster-manager:{__version__} ."
    podman = make("-n", "image", "DOCKER=podman").strip()
    assert podman == f"podman build --format docker -t ecs-cluster-manager:{__version__} ."


def test_ecr_repo_creates_the_repository_once() -> None:
    """`make ecr-repo` creates the ECR repository IMAGE in REGISTRY's region only when it does not exist yet."""
    command = make("-n", "ecr-repo", f"REGISTRY={REGISTRY}", "AWS=aws")
    assert "aws ecr describe-repositories --region eu-west-1 --repository-names ecs-cluster-manager" in command
    assert "aws ecr create-repository --region eu-west-1 --repository-name ecs-cluster-manager" in command


def test_ecr_login_pipes_the_password_to_docker_login() -> None:
    """`make ecr-login` is `aws ecr get-login-password | docker login --password-stdin REGISTRY`."""
    command = make("-n", "ecr-login", f"REGISTRY={REGISTRY}", "AWS=aws", "DOCKER=docker")
    assert re.search(
        rf"aws ecr get-login-password --region eu-west-1 \| docker login --username AWS --password-stdin {REGISTRY}",
        command,
    )


def test_ecr_push_logs_in_then_builds_both_architectures_and_pushes() -> None:
    """`make ecr-push` logs in, then builds linux/amd64 and linux/arm64 with buildx and pushes REGISTRY/IMAGE:TAG."""
    lines = make("-n", "ecr-push", f"REGISTRY={REGISTRY}", "AWS=aws", "DOCKER=docker").splitlines()
    assert "get-login-password" in lines[0]
    build = next(line for line in lines if "buildx" in line)
    assert (
        f"docker buildx build --platform linux/amd64,linux/arm64 -t {REGISTRY}/ecs-cluster-manager:{__version__} "
        "--push ." in build
    )
    one = make("-n", "ecr-push", f"REGISTRY={REGISTRY}", "PLATFORMS=linux/arm64", "TAG=x")
    assert f"--platform linux/arm64 -t {REGISTRY}/ecs-cluster-manager:x --push ." in one


@pytest.mark.parametrize("target", ["ecr-repo", "ecr-login", "ecr-push"])
def test_ecr_targets_need_an_ecr_registry(target: str) -> None:
    """Without REGISTRY=ACCOUNT.dkr.ecr.REGION.amazonaws.com the ECR targets stop with a message, running nothing."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MAKE")}
    env.pop("REGISTRY", None)
    result = subprocess.run(
        ["make", "--no-print-directory", target, "AWS=false", "DOCKER=false"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode != 0
    assert "REGISTRY" in result.stderr and "dkr.ecr" in result.stderr


def test_help_and_tooluse_list_every_container_target() -> None:
    """`make help` shows each container, lock and ECR target with a description, and ToolUse.md documents each."""
    help_text = make("help")
    tooluse = (ROOT / "ToolUse.md").read_text()
    for target in ("image", "image-test", "docker-build", "docker-push", "docker-tag-latest", "docker-run", "lock",
                   "ecr-repo", "ecr-login", "ecr-push"):
        assert re.search(rf"^{re.escape(target)} \S", help_text, re.MULTILINE), target
        assert f"| `{target}` |" in tooluse, target
