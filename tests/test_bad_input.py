"""Bad input to every variable and flag of `python run.py --once`, run as a subprocess against the local ECS API.

Four tables:

- START-UP ERRORS: exit 2 with exactly one stderr line that names the variable
  or flag, no traceback, and no UpdateService.
- PER-SERVICE ERRORS: exit 1; the service is logged as a `decision` event with
  action skip at level error, and the other services are still updated.
- ACCEPTED ON PURPOSE: duplicates are deduplicated, whitespace around values is
  trimmed, and so on; the test checks the accepted behaviour.
- EMPTY VARIABLES: what `NAME=""` means for each variable. An empty (or blank)
  variable counts as unset, except CLUSTER (required), INTERVAL and
  SCALE_DOWN_AFTER (a number is expected) and AWS_PROFILE (boto3 would read the
  empty value itself), which are start-up errors. A flag given an empty value is
  always a start-up error.

test_every_variable_and_flag_has_a_row keeps the tables complete: a new flag of
run.py, or a new variable in README's Configuration table, fails it until a row
covers it.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from daemon_helpers import RUN_PY, daemon_env, decisions, events
from ecs_cluster_manager import config as settings
from localecs import LocalECS

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = "prod"
HOSTS = 3
GOOD = ("a", "b")
DISTINCT = [{"type": "distinctInstance"}]
OTHER_CLUSTER_ARN = "arn:aws:ecs:us-east-1:123456789012:service/other/elsewhere"
STACK_TAG = "aws:cloudformation:stack-name"
BASE = {"CLUSTER": CLUSTER, "SERVICES": "a b"}
FREE_PORT = "{free_port}"  # replaced by a port nothing listens on when the row runs


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run(
    local: LocalECS, argv: list[str], env: dict[str, str | None], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """`python run.py --once ARGV` with BASE plus `env` (None removes a variable) and the heartbeat in tmp_path."""
    environment = daemon_env(local)  # without any manager setting or AWS_PROFILE from the caller
    environment["HEARTBEAT_FILE"] = str(tmp_path / "heartbeat")
    environment.update(BASE)
    port = str(_free_port())
    for name, value in env.items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value.replace(FREE_PORT, port)
    argv = [arg.replace(FREE_PORT, port) for arg in argv]
    return subprocess.run(
        [sys.executable, RUN_PY, "--once", *argv],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def build_world(local: LocalECS) -> LocalECS:
    """3 hosts in cluster prod, services a and b at 0, and a service `elsewhere` in cluster other."""
    local.reset()
    local.create_cluster(CLUSTER)
    local.add_hosts(CLUSTER, HOSTS)
    for name in GOOD:
        local.create_service(CLUSTER, name, placement_constraints=DISTINCT)
    local.create_cluster("other")
    local.create_service("other", "elsewhere")
    local.clear_calls()
    return local


@pytest.fixture
def world(local_ecs: LocalECS) -> LocalECS:
    """A freshly built world."""
    return build_world(local_ecs)


@pytest.fixture
def untouched_world(local_ecs: LocalECS) -> LocalECS:
    """The world for rows that must stop at start-up: rebuilt only if missing or changed, which saves a reset a row."""
    try:
        intact = [local_ecs.desired_count(CLUSTER, name) for name in GOOD] == [0, 0]
    except (LookupError, ClientError):
        intact = False
    if not intact:
        build_world(local_ecs)
    local_ecs.fault_hook = None  # reset() clears it, but this fixture may skip the reset
    local_ecs.clear_calls()
    return local_ecs


def assert_startup_error(result: subprocess.CompletedProcess[str], local: LocalECS, names: str) -> None:
    """Exit 2, one stderr line `ecs-cluster-manager: error: ...` naming the setting, no traceback, no write."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ecs-cluster-manager: error: "), lines[0]
    assert names in lines[0], lines[0]
    assert local.count("UpdateService") == 0


def assert_updated(local: LocalECS, result: subprocess.CompletedProcess[str], *names: str, count: int = HOSTS) -> None:
    """The services were updated to `count` in this pass."""
    assert {name: local.desired_count(CLUSTER, name) for name in names} == dict.fromkeys(names, count)
    found = decisions(result.stdout)
    assert {name: found[name]["action"] for name in names} == dict.fromkeys(names, "update"), result.stdout


# -- START-UP ERRORS ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartupRow:
    """A bad setting that must stop the daemon at start-up, and the name its error line must contain."""

    id: str
    argv: list[str]
    env: dict[str, str | None]
    names: str


def _value_flags() -> list[str]:
    """Every flag of run.py that takes a value."""
    return sorted(
        option
        for action in settings.build_parser()._actions
        if action.option_strings and action.nargs is None and action.const is None
        for option in action.option_strings
    )


def _switch_flags() -> list[str]:
    """Every flag of run.py that takes no value (store_true / store_false), help excluded."""
    return sorted(
        option
        for action in settings.build_parser()._actions
        if action.option_strings and action.nargs == 0 and action.dest != "help"
        for option in action.option_strings
    )


STARTUP = [
    # CLUSTER / --cluster
    StartupRow("cluster-unset", [], {"CLUSTER": None}, "CLUSTER"),
    StartupRow("cluster-blank", [], {"CLUSTER": "  \t "}, "CLUSTER"),
    StartupRow("cluster-syntax", [], {"CLUSTER": "bad name!"}, "CLUSTER"),
    StartupRow("cluster-arn-syntax", [], {"CLUSTER": "arn:aws:ecs:us-east-1:12:cluster/prod"}, "CLUSTER"),
    StartupRow("cluster-unknown", [], {"CLUSTER": "no-such-cluster"}, "CLUSTER"),
    StartupRow("cluster-flag-syntax", ["--cluster", "a/b"], {}, "--cluster"),
    StartupRow("cluster-flag-unknown", ["--cluster", "no-such-cluster"], {}, "CLUSTER"),
    StartupRow("cluster-flag-no-value", ["--cluster"], {}, "--cluster"),
    # SERVICES / --services
    StartupRow("services-unset", [], {"SERVICES": None}, "SERVICES"),
    StartupRow("services-separators-only", [], {"SERVICES": " ,, \n"}, "SERVICES"),
    StartupRow("services-syntax", [], {"SERVICES": "a bad/name"}, "SERVICES"),
    StartupRow("services-other-cluster-arn", [], {"SERVICES": f"a {OTHER_CLUSTER_ARN}"}, "SERVICES"),
    StartupRow("services-flag-separators-only", ["--services", " , "], {}, "--services"),
    StartupRow("services-flag-syntax", ["--services", "a b!c"], {}, "--services"),
    StartupRow("services-flag-other-cluster-arn", ["--services", OTHER_CLUSTER_ARN], {}, "--services"),
    # SERVICE_REGEX / --service-regex
    StartupRow("regex-unbalanced", [], {"SERVICE_REGEX": "("}, "SERVICE_REGEX"),
    StartupRow("regex-bad-class", [], {"SERVICE_REGEX": "[a-"}, "SERVICE_REGEX"),
    StartupRow("regex-bad-repeat", [], {"SERVICE_REGEX": "a{2,1}"}, "SERVICE_REGEX"),
    StartupRow("regex-blank-alone", [], {"SERVICES": None, "SERVICE_REGEX": "   "}, "SERVICES"),
    StartupRow("regex-flag-unbalanced", ["--service-regex", "(?P<x"], {}, "--service-regex"),
    # MANAGED_TAG / --managed-tag
    StartupRow("tag-no-key", [], {"MANAGED_TAG": "=x"}, "MANAGED_TAG"),
    StartupRow("tag-no-value", [], {"MANAGED_TAG": "k="}, "MANAGED_TAG"),
    StartupRow("tag-space-in-key", [], {"MANAGED_TAG": "a b=c"}, "MANAGED_TAG"),
    StartupRow("tag-only-equals", [], {"MANAGED_TAG": " = "}, "MANAGED_TAG"),
    StartupRow("tag-flag-no-key", ["--managed-tag", "=x"], {}, "--managed-tag"),
    # INTERVAL / --interval
    *(StartupRow(f"interval-{v}", [], {"INTERVAL": v}, "INTERVAL") for v in ("0", "-1", "1e309", "abc", "nan", "inf")),
    StartupRow("interval-minus-zero", [], {"INTERVAL": "-0"}, "INTERVAL"),
    StartupRow("interval-hex", [], {"INTERVAL": "0x10"}, "INTERVAL"),
    *(StartupRow(f"interval-flag-{v}", ["--interval", v], {}, "--interval") for v in ("0", "-1", "1e309", "abc")),
    # DRY_RUN / --dry-run / --noop
    StartupRow("dry-run-maybe", [], {"DRY_RUN": "maybe"}, "DRY_RUN"),
    StartupRow("dry-run-2", [], {"DRY_RUN": "2"}, "DRY_RUN"),
    # SCALE_DOWN_AFTER / --scale-down-after
    *(
        StartupRow(f"scale-down-{v}", [], {"SCALE_DOWN_AFTER": v}, "SCALE_DOWN_AFTER")
        for v in ("0", "-1", "two", "1.5")
    ),
    *(StartupRow(f"scale-down-flag-{v}", ["--scale-down-after", v], {}, "--scale-down-after") for v in ("0", "x")),
    # RESYNC / --resync
    *(StartupRow(f"resync-{v}", [], {"RESYNC": v}, "RESYNC") for v in ("0", "-1", "abc", "inf", "nan")),
    *(StartupRow(f"resync-flag-{v}", ["--resync", v], {}, "--resync") for v in ("0", "x")),
    # LOG_LEVEL / --log-level, LOG_FORMAT / --log-format
    StartupRow("log-level-loud", [], {"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
    StartupRow("log-level-critical", [], {"LOG_LEVEL": "CRITICAL"}, "LOG_LEVEL"),
    StartupRow("log-level-flag", ["--log-level", "verbose"], {}, "--log-level"),
    StartupRow("log-format-xml", [], {"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    StartupRow("log-format-flag", ["--log-format", "text"], {}, "--log-format"),
    # AWS_REGION / AWS_DEFAULT_REGION / --region
    StartupRow("region-mars", [], {"AWS_REGION": "mars"}, "AWS_REGION"),
    StartupRow("region-underscores", [], {"AWS_REGION": "us_east_1"}, "AWS_REGION"),
    StartupRow("region-none", [], {"AWS_REGION": "", "AWS_DEFAULT_REGION": ""}, "AWS_REGION"),
    StartupRow("default-region-mars", [], {"AWS_REGION": None, "AWS_DEFAULT_REGION": "mars"}, "AWS_DEFAULT_REGION"),
    StartupRow("region-flag-mars", ["--region", "mars"], {}, "--region"),
    # The cluster exists, but not in that region: named as a CLUSTER problem with the region in the line.
    StartupRow("region-without-the-cluster", ["--region", "eu-west-1"], {}, "CLUSTER"),
    # AWS_PROFILE / --profile (the subprocess has no AWS config file, so no profile exists)
    StartupRow("profile-unknown", [], {"AWS_PROFILE": "nope"}, "AWS_PROFILE"),
    StartupRow("profile-flag-unknown", ["--profile", "nope"], {}, "--profile"),
    # METRICS_PORT / --metrics-port, METRICS_ADDR / --metrics-addr
    *(StartupRow(f"metrics-port-{v}", [], {"METRICS_PORT": v}, "METRICS_PORT") for v in ("0", "70000", "http", "-1")),
    StartupRow("metrics-port-flag", ["--metrics-port", "65536"], {}, "--metrics-port"),
    # 192.0.2.1 is TEST-NET-1: never an address of this machine.
    StartupRow("metrics-addr-foreign", [], {"METRICS_PORT": FREE_PORT, "METRICS_ADDR": "192.0.2.1"}, "METRICS_ADDR"),
    StartupRow(
        "metrics-addr-flag-foreign", ["--metrics-addr", "192.0.2.1", "--metrics-port", FREE_PORT], {}, "METRICS_ADDR"
    ),
    # EVENTS_QUEUE_URL / --events-queue-url: a queue URL, not an ARN or a name
    StartupRow("events-queue-arn", [], {"EVENTS_QUEUE_URL": "arn:aws:sqs:us-east-1:1:q"}, "EVENTS_QUEUE_URL"),
    StartupRow("events-queue-name", [], {"EVENTS_QUEUE_URL": "ecm-events"}, "EVENTS_QUEUE_URL"),
    StartupRow("events-queue-flag-scheme", ["--events-queue-url", "sqs://123456789012/q"], {}, "--events-queue-url"),
    # API_BUDGET / --api-budget: a share of each ECS API bucket, > 0 and <= 1
    *(
        StartupRow(f"api-budget-{v}", [], {"API_BUDGET": v}, "API_BUDGET")
        for v in ("0", "-0.5", "1.5", "half", "nan", "inf", "50%")
    ),
    *(StartupRow(f"api-budget-flag-{v}", ["--api-budget", v], {}, "--api-budget") for v in ("0", "2", "x")),
    # COVERAGE_GRACE / --coverage-grace: seconds >= 0
    *(
        StartupRow(f"coverage-grace-{v}", [], {"COVERAGE_GRACE": v}, "COVERAGE_GRACE")
        for v in ("-1", "abc", "nan", "inf", "2m")
    ),
    StartupRow("coverage-grace-flag", ["--coverage-grace", "-5"], {}, "--coverage-grace"),
    # MAKE_ROOM_MAX / --make-room-max: a whole number >= 0
    *(StartupRow(f"make-room-max-{v}", [], {"MAKE_ROOM_MAX": v}, "MAKE_ROOM_MAX") for v in ("-1", "abc", "1.5")),
    StartupRow("make-room-max-flag", ["--make-room-max", "-2"], {}, "--make-room-max"),
    # READY_ATTRIBUTE / --ready-attribute: a container-instance attribute name
    *(
        StartupRow(f"ready-attribute-{i}", [], {"READY_ATTRIBUTE": v}, "READY_ATTRIBUTE")
        for i, v in enumerate(("has space", "x" * 129, "ready=true"))
    ),
    StartupRow("ready-attribute-flag", ["--ready-attribute", "no good"], {}, "--ready-attribute"),
    # CLOUDFORMATION_GUARD / --no-cloudformation-guard
    StartupRow("guard-sometimes", [], {"CLOUDFORMATION_GUARD": "sometimes"}, "CLOUDFORMATION_GUARD"),
    # An unknown flag; an unknown command.
    StartupRow("unknown-flag", ["--frobnicate"], {}, "--frobnicate"),
    # A mistyped flag with a value: the flag is named, not the value taken for a command.
    StartupRow("mistyped-flag-with-value", ["--intervall", "5"], {}, "--intervall: unknown flag (did you mean --in"),
    StartupRow("mistyped-cluster-flag", ["--clutser", CLUSTER], {}, "--clutser: unknown flag (did you mean --cluster"),
    StartupRow("ambiguous-flag-prefix", ["--metrics", "9100"], {}, "--metrics: ambiguous flag"),
    StartupRow("json-is-for-check-only", ["--json"], {}, "--json"),
    StartupRow("unknown-command", ["frobnicate"], {}, "frobnicate"),
    # Every flag that takes a value, given an empty one.
    *(StartupRow(f"flag{flag}-empty", [flag, ""], {}, flag) for flag in _value_flags()),
    StartupRow("flag--interval-blank", ["--interval", "  "], {}, "--interval"),
]

# Flags that take no value, given one. These prove only that argparse refuses the value, so they do not
# count as covering the flag: SWITCHES below shows what each one does.
SWITCH_WITH_VALUE = [StartupRow(f"switch{flag}-with-value", [f"{flag}=yes"], {}, flag) for flag in _switch_flags()]

# boto3 rejects a malformed endpoint URL with a ValueError; it must come out as a configuration error.
STARTUP_ENDPOINT = [
    StartupRow("endpoint-url-not-a-url", [], {"AWS_ENDPOINT_URL": "notaurl"}, "AWS_ENDPOINT_URL"),
    StartupRow("endpoint-url-ecs-not-a-url", [], {"AWS_ENDPOINT_URL_ECS": "notaurl"}, "AWS_ENDPOINT_URL"),
    StartupRow(
        "endpoint-url-sqs-not-a-url",
        [],
        {"AWS_ENDPOINT_URL_SQS": "notaurl", "EVENTS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/q"},
        "AWS_ENDPOINT_URL_SQS",
    ),
]


@pytest.mark.parametrize(
    "row",
    [
        *STARTUP,
        *SWITCH_WITH_VALUE,
        *STARTUP_ENDPOINT,
    ],
    ids=lambda row: row.id,
)
def test_startup_error(untouched_world: LocalECS, tmp_path: Path, row: StartupRow) -> None:
    """A bad value stops the daemon before its first write: exit 2, one stderr line naming the setting, no traceback."""
    result = run(untouched_world, row.argv, row.env, tmp_path)
    assert_startup_error(result, untouched_world, row.names)


TAKEN_PORT = "{taken_port}"  # replaced by a port another socket listens on
PORT_IN_USE = [
    StartupRow("metrics-port-in-use", [], {"METRICS_PORT": TAKEN_PORT, "METRICS_ADDR": "127.0.0.1"}, "METRICS_PORT"),
    StartupRow(
        "metrics-port-flag-in-use", ["--metrics-port", TAKEN_PORT, "--metrics-addr", "127.0.0.1"], {}, "METRICS_PORT"
    ),
]


@pytest.mark.parametrize("row", PORT_IN_USE, ids=lambda row: row.id)
def test_metrics_port_in_use(untouched_world: LocalECS, tmp_path: Path, row: StartupRow) -> None:
    """A METRICS_PORT (or --metrics-port) another process listens on stops the daemon at start-up with one line."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        argv = [arg.replace(TAKEN_PORT, port) for arg in row.argv]
        env = {name: None if value is None else value.replace(TAKEN_PORT, port) for name, value in row.env.items()}
        result = run(untouched_world, argv, env, tmp_path)
    assert_startup_error(result, untouched_world, row.names)
    assert "already in use" in result.stderr


# -- PER-SERVICE ERRORS -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceRow:
    """A service that cannot be handled, how it is made and chosen, and what its skip reason must say."""

    id: str
    bad: str
    reason: str
    create: Callable[[LocalECS], Any] | None = None
    env: dict[str, str | None] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)


def _tagged(tags: dict[str, str]) -> Callable[[LocalECS], Any]:
    return lambda local: local.create_service(
        CLUSTER, "bad", desired_count=1, tags=tags, placement_constraints=DISTINCT
    )


def _deleted(local: LocalECS) -> None:
    local.create_service(CLUSTER, "bad", desired_count=1)
    local.delete_service(CLUSTER, "bad")


TPH, MIN, MAX = "ecs-cluster-manager:tasks-per-host", "ecs-cluster-manager:min", "ecs-cluster-manager:max"
WITH_BAD = {"SERVICES": "a bad b"}

PER_SERVICE = [
    ServiceRow("unknown-service", "nope", "not found", env={"SERVICES": "a nope b"}),
    ServiceRow("unknown-service-flag", "nope", "not found", argv=["--services", "a nope b"]),
    ServiceRow("service-of-another-cluster-by-name", "elsewhere", "not found", env={"SERVICES": "a elsewhere b"}),
    ServiceRow("deleted-service", "bad", "INACTIVE", _deleted, WITH_BAD),
    ServiceRow("tasks-per-host-not-a-number", "bad", TPH, _tagged({TPH: "lots"}), WITH_BAD),
    ServiceRow("tasks-per-host-decimal", "bad", TPH, _tagged({TPH: "1.5"}), WITH_BAD),
    ServiceRow("tasks-per-host-zero", "bad", TPH, _tagged({TPH: "0"}), WITH_BAD),
    ServiceRow("min-not-a-number", "bad", MIN, _tagged({MIN: "few"}), WITH_BAD),
    ServiceRow("min-negative", "bad", MIN, _tagged({MIN: "-1"}), WITH_BAD),
    ServiceRow("max-not-a-number", "bad", MAX, _tagged({MAX: "many"}), WITH_BAD),
    ServiceRow("max-empty", "bad", MAX, _tagged({MAX: ""}), WITH_BAD),
    ServiceRow("min-above-max", "bad", "greater than", _tagged({MIN: "5", MAX: "2"}), WITH_BAD),
    ServiceRow(
        "daemon-service",
        "bad",
        "DAEMON",
        lambda local: local.create_service(CLUSTER, "bad", scheduling_strategy="DAEMON"),
        WITH_BAD,
    ),
    ServiceRow(
        "fargate-service",
        "bad",
        "FARGATE",
        lambda local: local.create_service(CLUSTER, "bad", desired_count=1, launch_type="FARGATE"),
        WITH_BAD,
    ),
    ServiceRow(
        "bad-tag-found-by-managed-tag",
        "bad",
        TPH,
        _tagged({"managed": "yes", TPH: "x"}),
        {"MANAGED_TAG": "managed"},
    ),
    ServiceRow(
        "daemon-service-found-by-regex",
        "node-daemon",
        "DAEMON",
        lambda local: local.create_service(CLUSTER, "node-daemon", scheduling_strategy="DAEMON"),
        {"SERVICE_REGEX": "node-.*"},
    ),
]


# The CloudFormation client is made on first use: a malformed endpoint skips the stack's services only.
PER_SERVICE_ENDPOINT = [
    ServiceRow(
        "cloudformation-endpoint-not-a-url",
        "bad",
        "cloudformation",
        _tagged({STACK_TAG: "some-stack"}),
        {**WITH_BAD, "AWS_ENDPOINT_URL_CLOUDFORMATION": "notaurl"},
    ),
]


@pytest.mark.parametrize(
    "row",
    [
        *PER_SERVICE,
        *PER_SERVICE_ENDPOINT,
    ],
    ids=lambda row: row.id,
)
def test_per_service_error(world: LocalECS, tmp_path: Path, row: ServiceRow) -> None:
    """One unusable service exits 1 and is logged as a skip at level error; a and b are still updated."""
    if row.create is not None:
        row.create(world)
    before = _desired_or_none(world, row.bad)
    world.clear_calls()
    result = run(world, row.argv, row.env, tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert not [e for e in events(result.stdout) if e.get("event") == "pass_failed"]
    decision = decisions(result.stdout)[row.bad]
    assert (decision["action"], decision["level"]) == ("skip", "error")
    assert row.reason in decision["reason"], decision["reason"]
    assert _desired_or_none(world, row.bad) == before
    assert_updated(world, result, *GOOD)


def _desired_or_none(local: LocalECS, name: str) -> int | None:
    try:
        return local.desired_count(CLUSTER, name)
    except LookupError:
        return None


# -- ACCEPTED ON PURPOSE ------------------------------------------------------------------------------


def _arn(local: LocalECS, name: str) -> str:
    return str(local.client().describe_services(cluster=CLUSTER, services=[name])["services"][0]["serviceArn"])


def _cluster_arn(local: LocalECS) -> str:
    return f"arn:aws:ecs:{local.region}:{local.account_id}:cluster/{CLUSTER}"


@dataclass(frozen=True)
class AcceptedRow:
    """An input taken on purpose, and what the daemon must then have done (besides exiting 0)."""

    id: str
    argv: list[str]
    env: Callable[[LocalECS], dict[str, str | None]]
    updates: int = 2  # UpdateService calls: a and b once each
    described: list[list[str]] | None = None  # the services of each DescribeServices call, when it matters


ACCEPTED = [
    AcceptedRow("services-duplicated", [], lambda _: {"SERVICES": "a a,a b,b\tb"}, described=[["a", "b"]]),
    AcceptedRow("services-flag-duplicated", ["--services", "a,a b a"], lambda _: {}, described=[["a", "b"]]),
    AcceptedRow("services-name-and-arn", [], lambda local: {"SERVICES": f"a {_arn(local, 'a')} b"}),
    AcceptedRow("services-and-regex-overlap", [], lambda _: {"SERVICES": "a b", "SERVICE_REGEX": "a|b"}),
    AcceptedRow(
        "whitespace-around-every-value",
        [],
        lambda local: {
            "CLUSTER": f" {CLUSTER}\n",
            "SERVICES": "\t a ,\n b  ",
            "INTERVAL": " 5 ",
            "DRY_RUN": " no ",
            "SCALE_DOWN_AFTER": " 3 ",
            "CLOUDFORMATION_GUARD": " on ",
            "LOG_LEVEL": " info ",
            "LOG_FORMAT": " JSON ",
            "AWS_REGION": f" {local.region} ",
            "METRICS_PORT": f" {FREE_PORT} ",
            "METRICS_ADDR": " 127.0.0.1 ",
        },
    ),
    AcceptedRow(
        "whitespace-around-flag-values",
        ["--cluster", f" {CLUSTER} ", "--services", " a , b ", "--interval", " 5 ", "--log-level", " INFO "],
        lambda _: {"CLUSTER": None, "SERVICES": None},
    ),
    AcceptedRow("cluster-given-by-arn", [], lambda local: {"CLUSTER": _cluster_arn(local)}),
    AcceptedRow("flag-wins-over-a-bad-variable", ["--interval", "5"], lambda _: {"INTERVAL": "abc"}),
]


@pytest.mark.parametrize("row", ACCEPTED, ids=lambda row: row.id)
def test_accepted_input(world: LocalECS, tmp_path: Path, row: AcceptedRow) -> None:
    """Inputs accepted on purpose (duplicates, surrounding whitespace, ARNs) manage each service once and exit 0."""
    result = run(world, row.argv, row.env(world), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    assert world.count("UpdateService") == row.updates
    assert_updated(world, result, *GOOD)
    if row.described is not None:
        described = [call.params["services"] for call in world.calls if call.operation == "DescribeServices"]
        assert described == row.described


DIRECTORY = "{directory}"  # replaced by the test's temporary directory
UNWRITABLE_HEARTBEAT: list[tuple[list[str], dict[str, str | None]]] = [
    ([], {"HEARTBEAT_FILE": DIRECTORY}),
    (["--heartbeat-file", DIRECTORY], {}),
]


def test_unwritable_heartbeat_file_is_a_warning(world: LocalECS, tmp_path: Path) -> None:
    """A HEARTBEAT_FILE that cannot be written (here a directory) is logged as a warning; the pass still acts."""
    for argv, env in UNWRITABLE_HEARTBEAT:
        build_world(world)
        argv = [arg.replace(DIRECTORY, str(tmp_path)) for arg in argv]
        env = {name: None if value is None else value.replace(DIRECTORY, str(tmp_path)) for name, value in env.items()}
        result = run(world, argv, env, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert_updated(world, result, *GOOD)
        warned = [e for e in events(result.stdout) if e.get("event") == "heartbeat_not_written"]
        assert warned and warned[0]["level"] == "warning"


def test_healthcheck_with_a_directory_as_heartbeat_file_is_unhealthy(tmp_path: Path) -> None:
    """`run.py healthcheck` with HEARTBEAT_FILE naming a directory (never written by the daemon) exits 1."""
    result = subprocess.run(
        [sys.executable, RUN_PY, "healthcheck"],
        env={"PATH": "/usr/bin:/bin", "HEARTBEAT_FILE": str(tmp_path), "INTERVAL": "30"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr


# -- SWITCHES -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SwitchRow:
    """A flag that takes no value, and a check that it did what it says."""

    argv: list[str]
    check: Callable[[LocalECS, subprocess.CompletedProcess[str]], None]
    env: dict[str, str | None] = field(default_factory=dict)
    code: int = 0


def _wrote_nothing(local: LocalECS, result: subprocess.CompletedProcess[str]) -> None:
    assert local.count("UpdateService") == 0
    assert {name: found["action"] for name, found in decisions(result.stdout).items()} == dict.fromkeys(GOOD, "dry-run")


def _one_pass(local: LocalECS, result: subprocess.CompletedProcess[str]) -> None:
    assert [e["event"] for e in events(result.stdout)].count("pass") == 1
    assert_updated(local, result, *GOOD)


def _no_stack_read(local: LocalECS, result: subprocess.CompletedProcess[str]) -> None:
    assert local.count("DescribeStacks", service="cloudformation") == 0
    assert_updated(local, result, *GOOD, "stacked")


def _printed_version(local: LocalECS, result: subprocess.CompletedProcess[str]) -> None:
    from ecs_cluster_manager import __version__

    assert result.stdout.strip() == f"ecs-cluster-manager {__version__}"
    assert local.calls == []


SWITCHES = [
    SwitchRow(["--once"], _one_pass),
    SwitchRow(["--dry-run"], _wrote_nothing),
    SwitchRow(["--noop"], _wrote_nothing),
    SwitchRow(["--no-cloudformation-guard"], _no_stack_read, {"SERVICES": "a b stacked"}),
    SwitchRow(["--version"], _printed_version),
]


@pytest.mark.parametrize("row", SWITCHES, ids=lambda row: row.argv[0])
def test_switch(world: LocalECS, tmp_path: Path, row: SwitchRow) -> None:
    """Each flag that takes no value does what README says it does."""
    world.create_service(CLUSTER, "stacked", tags={STACK_TAG: "no-such-stack"}, placement_constraints=DISTINCT)
    world.clear_calls()
    result = run(world, row.argv, row.env, tmp_path)
    assert result.returncode == row.code, result.stdout + result.stderr
    row.check(world, result)


def _flags_check_does_not_use() -> list[list[str]]:
    """Each flag `check` does not read, as argv (with a value when it takes one)."""
    argv = []
    for action in settings.build_parser()._actions:
        if not action.option_strings or action.dest in settings.CHECK_OPTIONS:
            continue
        for option in action.option_strings:
            argv.append([option] if action.nargs == 0 else [option, "5"])
    return argv


@pytest.mark.parametrize("flag", _flags_check_does_not_use(), ids=lambda argv: argv[0])
def test_check_refuses_flags_it_does_not_use(untouched_world: LocalECS, tmp_path: Path, flag: list[str]) -> None:
    """`check --interval 5` (or any flag check does not read) is exit 2 naming the flag, not silently ignored."""
    environment = {**daemon_env(untouched_world), **BASE, "HEARTBEAT_FILE": str(tmp_path / "heartbeat")}
    result = subprocess.run(
        [sys.executable, RUN_PY, "check", *flag],
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert_startup_error(result, untouched_world, f"{flag[0]}: does not apply to the check command")
    assert untouched_world.calls == []


def test_healthcheck_rejects_json(tmp_path: Path) -> None:
    """`run.py healthcheck --json` is a configuration error naming --json, not a silently ignored flag."""
    result = subprocess.run(
        [sys.executable, RUN_PY, "healthcheck", "--json"],
        env={"PATH": "/usr/bin:/bin", "HEARTBEAT_FILE": str(tmp_path / "hb"), "INTERVAL": "30"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("ecs-cluster-manager: error: --json"), line


# -- EMPTY VARIABLES ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmptyRow:
    """`NAME=""` (with `also` set), and either the name the start-up error must carry or a check of the default."""

    variable: str
    error: str | None = None
    also: dict[str, str | None] = field(default_factory=dict)
    check: Callable[[LocalECS, subprocess.CompletedProcess[str]], None] | None = None


def _acts_on_a_and_b(local: LocalECS, result: subprocess.CompletedProcess[str]) -> None:
    assert_updated(local, result, *GOOD)


def _no_listing(local: LocalECS, result: subprocess.CompletedProcess[str]) -> None:
    assert_updated(local, result, *GOOD)
    assert local.count("ListServices") == 0


def _info_events(local: LocalECS, result: subprocess.CompletedProcess[str]) -> None:
    assert_updated(local, result, *GOOD)
    assert {e["level"] for e in events(result.stdout) if e.get("event") == "decision"} == {"info"}


def _json_lines(local: LocalECS, result: subprocess.CompletedProcess[str]) -> None:
    assert_updated(local, result, *GOOD)
    assert all(json.loads(line) for line in result.stdout.splitlines())  # not a terminal: JSON


def _no_metrics_server(local: LocalECS, result: subprocess.CompletedProcess[str]) -> None:
    assert_updated(local, result, *GOOD)
    assert not [e for e in events(result.stdout) if e.get("event") == "metrics_listening"]


def _only_the_regex(local: LocalECS, result: subprocess.CompletedProcess[str]) -> None:
    assert_updated(local, result, "a")
    assert local.desired_count(CLUSTER, "b") == 0


def _guard_on(local: LocalECS, result: subprocess.CompletedProcess[str]) -> None:
    assert_updated(local, result, *GOOD)
    assert local.count("DescribeStacks", service="cloudformation") == 1


def _default_heartbeat(local: LocalECS, result: subprocess.CompletedProcess[str]) -> None:
    assert_updated(local, result, *GOOD)
    assert Path(settings.DEFAULT_HEARTBEAT_FILE).exists()  # the test removed it first


def _default_metrics_addr(local: LocalECS, result: subprocess.CompletedProcess[str]) -> None:
    assert_updated(local, result, *GOOD)
    [listening] = [e for e in events(result.stdout) if e.get("event") == "metrics_listening"]
    assert listening["addr"] == settings.DEFAULT_METRICS_ADDR


EMPTY = [
    EmptyRow("CLUSTER", error="CLUSTER"),
    EmptyRow("SERVICES", also={"SERVICE_REGEX": "a"}, check=_only_the_regex),
    EmptyRow("SERVICE_REGEX", check=_no_listing),
    EmptyRow("MANAGED_TAG", check=_no_listing),
    EmptyRow("INTERVAL", error="INTERVAL"),
    EmptyRow("DRY_RUN", check=_acts_on_a_and_b),
    EmptyRow("SCALE_DOWN_AFTER", error="SCALE_DOWN_AFTER"),
    EmptyRow("RESYNC", check=_acts_on_a_and_b),  # the default resync
    EmptyRow("CLOUDFORMATION_GUARD", also={"SERVICES": "a b stacked"}, check=_guard_on),
    EmptyRow("LOG_LEVEL", check=_info_events),
    EmptyRow("LOG_FORMAT", check=_json_lines),
    EmptyRow("AWS_REGION", check=_acts_on_a_and_b),  # AWS_DEFAULT_REGION still names the region
    EmptyRow("AWS_DEFAULT_REGION", check=_acts_on_a_and_b),
    EmptyRow("AWS_PROFILE", error="AWS_PROFILE"),
    EmptyRow("METRICS_PORT", check=_no_metrics_server),
    EmptyRow("METRICS_ADDR", also={"METRICS_PORT": FREE_PORT}, check=_default_metrics_addr),
    EmptyRow("HEARTBEAT_FILE", check=_default_heartbeat),
    EmptyRow("EVENTS_QUEUE_URL", check=_acts_on_a_and_b),  # no events source; the pass acts as without it
    EmptyRow("API_BUDGET", error="API_BUDGET"),
    EmptyRow("COVERAGE_GRACE", check=_acts_on_a_and_b),  # the default grace
    EmptyRow("MAKE_ROOM_MAX", check=_acts_on_a_and_b),  # the default, 1
    EmptyRow("READY_ATTRIBUTE", check=_acts_on_a_and_b),  # no attribute kept
    # AWS_ENDPOINT_URL="" is boto3's business and would mean the real AWS endpoint: never run here.
]


@pytest.mark.parametrize("row", EMPTY, ids=lambda row: row.variable)
def test_empty_variable(world: LocalECS, tmp_path: Path, row: EmptyRow) -> None:
    """An empty variable is either a start-up error naming it or the same as leaving it unset (checked per row)."""
    if row.variable == "CLOUDFORMATION_GUARD":
        world.create_service(CLUSTER, "stacked", tags={STACK_TAG: "no-such-stack"}, placement_constraints=DISTINCT)
        world.clear_calls()
    if row.variable == "HEARTBEAT_FILE":
        Path(settings.DEFAULT_HEARTBEAT_FILE).unlink(missing_ok=True)  # as the daemon itself does at start-up
    result = run(world, [], {**row.also, row.variable: ""}, tmp_path)
    if row.error is not None:
        assert_startup_error(result, world, row.error)
        return
    assert row.check is not None
    assert result.returncode == 0, result.stdout + result.stderr
    row.check(world, result)


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_cloudformation_guard_keeps_the_guard_on(value: str) -> None:
    """CLOUDFORMATION_GUARD="" keeps the guard on (its default), while 0 turns it off."""
    assert settings.load([], {**BASE, "CLOUDFORMATION_GUARD": value}).cloudformation_guard
    assert not settings.load([], {**BASE, "CLOUDFORMATION_GUARD": "0"}).cloudformation_guard


# -- completeness -------------------------------------------------------------------------------------


def _readme_settings() -> tuple[set[str], set[str]]:
    """The variables and flags of README's Configuration table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    variables: set[str] = set()
    flags: set[str] = set()
    for line in section.splitlines():
        cells = line.split("|")
        if len(cells) < 4 or not line.startswith("| "):
            continue
        variables |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[1]))
        flags |= set(re.findall(r"`(--[a-z-]+)`", cells[2]))
    return variables, flags


def _covered() -> tuple[set[str], set[str]]:
    """The variables set and the flags passed by the rows of every table (nothing listed by hand)."""
    variables: set[str] = {row.variable for row in EMPTY}
    flags: set[str] = set()
    settings_rows: list[tuple[list[str], dict[str, str | None]]] = [
        *((row.argv, row.env) for row in [*STARTUP, *STARTUP_ENDPOINT, *PORT_IN_USE]),
        *((row.argv, row.env) for row in [*PER_SERVICE, *PER_SERVICE_ENDPOINT]),
        *((row.argv, {}) for row in ACCEPTED),
        *((row.argv, row.env) for row in SWITCHES),
        *UNWRITABLE_HEARTBEAT,
    ]
    for argv, env in settings_rows:
        variables |= {name for name, value in env.items() if value is not None}
        flags |= {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}
    return variables, flags


def test_every_variable_and_flag_has_a_row() -> None:
    """Every variable in README's Configuration table and every flag of run.py is exercised by some row."""
    readme_variables, readme_flags = _readme_settings()
    parser_flags = {option for action in settings.build_parser()._actions for option in action.option_strings}
    parser_flags -= {"-h", "--help"}
    assert {"CLUSTER", "INTERVAL", "AWS_PROFILE"} <= readme_variables and "--interval" in readme_flags
    variables, flags = _covered()
    assert readme_variables - variables == set()
    assert (readme_flags | parser_flags) - flags == set()
