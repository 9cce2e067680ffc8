"""Settings of one ecs-cluster-manager process, read once from the environment and argv.

Every default and every validation lives here. A command-line flag wins over its
environment variable. Bad input raises ConfigError with a one-line message that
names the variable or flag, which the entry points print and turn into exit 2.
"""

from __future__ import annotations

import argparse
import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ecs_cluster_manager import __version__
from ecs_cluster_manager.aws.budget import DEFAULT_SHARE as DEFAULT_API_BUDGET
from ecs_cluster_manager.model.names import name_of

DEFAULT_INTERVAL = 30.0
DEFAULT_SCALE_DOWN_AFTER = 2
DEFAULT_RESYNC = 300.0
DEFAULT_COVERAGE_GRACE = 120.0  # seconds for ECS to place a host's task before it counts as missing
DEFAULT_MAKE_ROOM_MAX = 1  # hosts a pass may stop preemptible tasks on, to make room for a daemon's task
DEFAULT_METRICS_ADDR = "0.0.0.0"  # noqa: S104 - the metrics port is opt-in and meant to be scraped
DEFAULT_HEARTBEAT_FILE = "/tmp/ecs-cluster-manager.heartbeat"  # noqa: S108
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("json", "console")
COMMANDS = ("run", "check", "healthcheck")
# Every environment variable the manager reads itself; boto3 reads AWS_REGION, AWS_PROFILE and the rest.
VARIABLES = (
    "CLUSTER",
    "SERVICES",
    "SERVICE_REGEX",
    "MANAGED_TAG",
    "INTERVAL",
    "DRY_RUN",
    "SCALE_DOWN_AFTER",
    "CLOUDFORMATION_GUARD",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "METRICS_PORT",
    "METRICS_ADDR",
    "HEARTBEAT_FILE",
    "EVENTS_QUEUE_URL",
    "RESYNC",
    "API_BUDGET",
    "COVERAGE_GRACE",
    "READY_ATTRIBUTE",
    "MAKE_ROOM_MAX",
)
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")  # and the empty value
# What `check` reads besides the command; any other flag is refused there rather than ignored.
CHECK_OPTIONS = frozenset(
    {"cluster", "services", "service_regex", "managed_tag", "region", "profile", "log_level", "log_format"}
    | {"json_output", "help", "version", "api_budget", "coverage_grace", "ready_attribute", "make_room_max"}
)

# Service names: letters, digits, hyphens and underscores, up to 255 (ECS's own rule).
_SERVICE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_SERVICE_ARN = re.compile(r"^arn:aws[a-z-]*:ecs:[a-z0-9-]+:\d{12}:service/(?:[A-Za-z0-9_-]+/)?[A-Za-z0-9_-]{1,255}$")
# https://sqs.REGION.amazonaws.com/ACCOUNT/NAME, or any endpoint's http(s)://HOST[:PORT]/ACCOUNT/NAME.
_QUEUE_URL = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?/\d{12}/[A-Za-z0-9_-]{1,80}(\.fifo)?$")
# A custom container-instance attribute's name, as ECS accepts it: 1 to 128 of these characters.
_ATTRIBUTE_NAME = re.compile(r"^[A-Za-z0-9_./\\-]{1,128}$")
_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_CLUSTER_ARN = re.compile(r"^arn:aws[a-z-]*:ecs:[a-z0-9-]+:\d{12}:cluster/[A-Za-z0-9_-]{1,255}$")


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the variable or flag."""


@dataclass(frozen=True)
class ManagedTag:
    """A tag that marks services as managed: KEY alone, or KEY=VALUE."""

    key: str
    value: str | None = None

    def matches(self, tags: Mapping[str, str]) -> bool:
        if self.key not in tags:
            return False
        return self.value is None or tags[self.key] == self.value

    def __str__(self) -> str:
        return self.key if self.value is None else f"{self.key}={self.value}"


@dataclass(frozen=True)
class Config:
    """Everything a run of the daemon, `check` or `healthcheck` needs to know."""

    cluster: str
    services: tuple[str, ...] = ()
    service_regex: re.Pattern[str] | None = None
    managed_tag: ManagedTag | None = None
    interval: float = DEFAULT_INTERVAL
    once: bool = False
    dry_run: bool = False
    region: str | None = None
    profile: str | None = None
    log_level: str = "INFO"
    log_format: str | None = None  # None: console on a terminal, JSON otherwise
    scale_down_after: int = DEFAULT_SCALE_DOWN_AFTER
    cloudformation_guard: bool = True
    metrics_port: int | None = None
    metrics_addr: str = DEFAULT_METRICS_ADDR
    heartbeat_file: str = DEFAULT_HEARTBEAT_FILE
    events_queue_url: str | None = None
    resync: float = DEFAULT_RESYNC
    api_budget: float = DEFAULT_API_BUDGET  # the share of each ECS throttling bucket the manager may spend
    coverage_grace: float = DEFAULT_COVERAGE_GRACE
    # The container-instance attribute kept `true` on hosts whose daemons run (None: off).
    ready_attribute: str | None = None
    make_room_max: int = DEFAULT_MAKE_ROOM_MAX  # hosts a pass may make room on (0: none)
    command: str = "run"
    json_output: bool = False

    @property
    def discovery(self) -> bool:
        """True when services are found by regex or tag, which needs ListServices."""
        return self.service_regex is not None or self.managed_tag is not None

    @property
    def cluster_name(self) -> str:
        return name_of(self.cluster)

    @property
    def selection(self) -> str:
        """The service selection as set, for messages: `SERVICES='a b' SERVICE_REGEX='log-.*'`."""
        parts = []
        if self.services:
            parts.append(f"SERVICES={' '.join(self.services)!r}")
        if self.service_regex is not None:
            parts.append(f"SERVICE_REGEX={self.service_regex.pattern!r}")
        if self.managed_tag is not None:
            parts.append(f"MANAGED_TAG={str(self.managed_tag)!r}")
        return " ".join(parts)


class _Parser(argparse.ArgumentParser):
    """argparse that raises ConfigError instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ecs-cluster-manager",
        description="Keep each managed ECS service's desiredCount equal to the usable hosts of its cluster.",
        epilog="Also run as `python run.py` or `python -m ecs_cluster_manager`. Every flag has the variable "
        "in parentheses; a flag wins over its variable.",
    )
    parser.add_argument("--version", action="version", version=f"ecs-cluster-manager {__version__}")
    parser.add_argument(
        "command",
        nargs="?",
        choices=COMMANDS,
        default="run",
        help="run (default): the daemon; check: audit the managed services; healthcheck: 0 when the loop is healthy",
    )
    parser.add_argument("--cluster", help="cluster name or ARN (CLUSTER)")
    parser.add_argument("--services", help="service names or ARNs, separated by spaces and/or commas (SERVICES)")
    parser.add_argument("--service-regex", help="manage every service whose whole name matches (SERVICE_REGEX)")
    parser.add_argument("--managed-tag", help="manage every service with tag KEY or KEY=VALUE (MANAGED_TAG)")
    parser.add_argument("--interval", help=f"seconds between passes, > 0 (INTERVAL, default {DEFAULT_INTERVAL:g})")
    parser.add_argument("--once", action="store_true", default=None, help="run one pass, then exit")
    parser.add_argument(
        "--dry-run",
        "--noop",
        dest="dry_run",
        action="store_true",
        default=None,
        help="decide and log, never write (DRY_RUN)",
    )
    parser.add_argument("--region", help="AWS region (AWS_REGION, AWS_DEFAULT_REGION)")
    parser.add_argument("--profile", help="AWS shared-config profile (AWS_PROFILE)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (LOG_LEVEL, default INFO)")
    parser.add_argument("--log-format", help="json or console (LOG_FORMAT, default console on a terminal, else json)")
    parser.add_argument(
        "--scale-down-after",
        help="lower for a host whose agent has been lost SCALE_DOWN_AFTER x INTERVAL seconds without a break; "
        f"drained hosts lower at once (SCALE_DOWN_AFTER, default {DEFAULT_SCALE_DOWN_AFTER})",
    )
    parser.add_argument(
        "--resync",
        help="longest time in seconds before every host filter is listed again in full, > 0 "
        f"(RESYNC, default {DEFAULT_RESYNC:g})",
    )
    parser.add_argument(
        "--no-cloudformation-guard",
        dest="cloudformation_guard",
        action="store_false",
        default=None,
        help="also update services whose CloudFormation stack is being updated (CLOUDFORMATION_GUARD=0)",
    )
    parser.add_argument("--metrics-port", help="serve /metrics and /healthz on this port (METRICS_PORT, default off)")
    parser.add_argument(
        "--metrics-addr", help=f"bind address of the metrics server (METRICS_ADDR, default {DEFAULT_METRICS_ADDR})"
    )
    parser.add_argument(
        "--heartbeat-file",
        help=f"file touched after each successful regular pass (HEARTBEAT_FILE, default {DEFAULT_HEARTBEAT_FILE})",
    )
    parser.add_argument(
        "--events-queue-url",
        help="SQS queue URL of this cluster's ECS container instance state-change events: react to host "
        "changes in about a second (EVENTS_QUEUE_URL, default off)",
    )
    parser.add_argument(
        "--api-budget",
        help="share of each ECS API throttling bucket the manager may spend, > 0 and <= 1 "
        f"(API_BUDGET, default {DEFAULT_API_BUDGET:g})",
    )
    parser.add_argument(
        "--coverage-grace",
        help="seconds a host may lack its task before coverage_gap is logged and check fails, >= 0 "
        f"(COVERAGE_GRACE, default {DEFAULT_COVERAGE_GRACE:g})",
    )
    parser.add_argument(
        "--ready-attribute",
        help="container-instance attribute kept with the value true on each host whose managed services' tasks "
        "run, for application services to require with memberOf (READY_ATTRIBUTE, default off)",
    )
    parser.add_argument(
        "--make-room-max",
        help="hosts a pass may stop preemptible tasks on to make room for a make-room service's task, >= 0 "
        f"(MAKE_ROOM_MAX, default {DEFAULT_MAKE_ROOM_MAX})",
    )
    parser.add_argument("--json", dest="json_output", action="store_true", default=None, help="check: print JSON")
    return parser


def split_services(raw: str) -> tuple[str, ...]:
    """Split on any run of whitespace and/or commas, dropping empties and exact repeats."""
    seen: dict[str, None] = {}
    for part in re.split(r"[\s,]+", raw):
        if part:
            seen.setdefault(part, None)
    return tuple(seen)


def parse_bool(raw: str, name: str) -> bool:
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS or not word:
        return False
    raise ConfigError(f"{name}: expected {'/'.join(TRUE_WORDS)} or {'/'.join(FALSE_WORDS)}, got {raw!r}")


def parse_interval(raw: str, name: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}: expected a number of seconds > 0, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}: expected a finite number of seconds > 0, got {raw!r}")
    return value


def parse_share(raw: str, name: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}: expected a share of each ECS API bucket, > 0 and <= 1, got {raw!r}") from None
    if not math.isfinite(value) or not 0 < value <= 1:
        raise ConfigError(f"{name}: expected a share of each ECS API bucket, > 0 and <= 1, got {raw!r}")
    return value


def parse_seconds(raw: str, name: str) -> float:
    """A number of seconds >= 0 (0: at once)."""
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}: expected a number of seconds >= 0, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name}: expected a finite number of seconds >= 0, got {raw!r}")
    return value


def parse_int(raw: str, name: str, *, minimum: int, maximum: int | None = None) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}: expected a whole number, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise ConfigError(f"{name}: expected a whole number {bound}, got {raw!r}")
    return value


def parse_regex(raw: str, name: str) -> re.Pattern[str]:
    if not raw.strip():
        raise ConfigError(f"{name}: empty regular expression")
    try:
        return re.compile(raw.strip())
    except re.error as error:
        raise ConfigError(f"{name}: invalid regular expression {raw!r}: {error}") from None


def parse_managed_tag(raw: str, name: str) -> ManagedTag:
    text = raw.strip()
    key, sep, value = text.partition("=")
    key = key.strip()
    if not key or (sep and not value.strip()) or any(ch.isspace() for ch in key):
        raise ConfigError(f"{name}: expected KEY or KEY=VALUE with a non-empty key and value, got {raw!r}")
    return ManagedTag(key, value.strip() if sep else None)


def _check_cluster(raw: str, name: str) -> str:
    cluster = raw.strip()
    if not cluster:
        raise ConfigError(f"{name}: required (cluster name or ARN)")
    if not (_CLUSTER_NAME.match(cluster) or _CLUSTER_ARN.match(cluster)):
        raise ConfigError(f"{name}: not a cluster name or ARN: {raw!r}")
    return cluster


def _check_services(raw: str, name: str) -> tuple[str, ...]:
    services = split_services(raw)
    for service in services:
        if not (_SERVICE_NAME.match(service) or _SERVICE_ARN.match(service)):
            raise ConfigError(f"{name}: not a service name or ARN: {service!r}")
    return services


def _given_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[tuple[str, argparse.Action]]:
    """Each flag in argv with the option it stands for; ConfigError naming a flag that is none of them.

    Runs before argparse, which would otherwise take the value after a mistyped
    flag (`--intervall 5`) for the command and report `invalid choice: '5'`.
    """
    options = parser._option_string_actions
    given = []
    for arg in argv:
        if arg == "--":
            break
        if not arg.startswith("--"):
            continue
        flag = arg.split("=", 1)[0]
        matches = [option for option in options if option.startswith(flag)]  # argparse takes unique prefixes
        if flag in options:
            given.append((flag, options[flag]))
        elif len({options[option].dest for option in matches}) == 1:
            given.append((flag, options[matches[0]]))
        elif matches:
            raise ConfigError(f"{flag}: ambiguous flag, could be {', '.join(sorted(matches))}")
        else:
            close = difflib.get_close_matches(flag, list(options), n=1, cutoff=0.75)
            raise ConfigError(f"{flag}: unknown flag" + (f" (did you mean {close[0]}?)" if close else ""))
    return given


def load(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Build the Config from argv (without the program name) and the environment."""
    import os
    import sys

    env = dict(os.environ if environ is None else environ)
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    given = _given_flags(parser, arguments)
    args = parser.parse_args(arguments)

    def pick(flag_value: str | None, flag: str, *variables: str) -> tuple[str | None, str]:
        """The flag's value if given, else the first set variable; with the name to blame."""
        if flag_value is not None:
            if not flag_value.strip():
                raise ConfigError(f"{flag}: empty value")
            return flag_value, flag
        for variable in variables:
            if variable in env:
                return env[variable], variable
        return None, " / ".join((*variables, flag)) if variables else flag

    command = args.command
    if args.json_output and command != "check":
        raise ConfigError(f"--json: only the check command prints JSON, not {command!r}")
    if command == "check":
        for flag, action in given:
            if action.dest not in CHECK_OPTIONS:
                raise ConfigError(f"{flag}: does not apply to the check command, which reads and changes nothing")

    raw, name = pick(args.cluster, "--cluster", "CLUSTER")
    if raw is None:
        if command == "healthcheck":
            raw, name = "unknown", "CLUSTER"
        else:
            raise ConfigError("CLUSTER / --cluster: required (cluster name or ARN)")
    cluster = _check_cluster(raw, name)

    raw, name = pick(args.services, "--services", "SERVICES")
    services = _check_services(raw, name) if raw is not None else ()
    for service in services:
        parts = service.split(":", 5)[-1].split("/")
        if service.startswith("arn:") and len(parts) == 3 and parts[1] != name_of(cluster):
            raise ConfigError(f"{name}: service {service!r} belongs to cluster {parts[1]!r}, not {cluster!r}")
    if raw is not None and not services and args.services is not None:
        raise ConfigError("--services: no service names given")

    raw, name = pick(args.service_regex, "--service-regex", "SERVICE_REGEX")
    service_regex = parse_regex(raw, name) if raw is not None and raw.strip() else None

    raw, name = pick(args.managed_tag, "--managed-tag", "MANAGED_TAG")
    managed_tag = parse_managed_tag(raw, name) if raw is not None and raw.strip() else None

    if not services and service_regex is None and managed_tag is None and command != "healthcheck":
        raise ConfigError("SERVICES / --services: no services to manage (set SERVICES, SERVICE_REGEX or MANAGED_TAG)")

    raw, name = pick(args.interval, "--interval", "INTERVAL")
    interval = parse_interval(raw, name) if raw is not None else DEFAULT_INTERVAL

    once = bool(args.once)

    if args.dry_run:
        dry_run = True
    else:
        dry_run = parse_bool(env["DRY_RUN"], "DRY_RUN") if "DRY_RUN" in env else False

    raw, name = pick(args.region, "--region", "AWS_REGION", "AWS_DEFAULT_REGION")
    region = raw.strip() if raw is not None and raw.strip() else None
    if region is not None and not re.fullmatch(r"[a-z]{2}(-[a-z0-9]+)+-\d+", region):
        raise ConfigError(f"{name}: not an AWS region: {raw!r}")

    raw, name = pick(args.profile, "--profile", "AWS_PROFILE")
    profile = raw.strip() if raw is not None and raw.strip() else None
    if raw is not None and profile is None:  # boto3 would read the blank AWS_PROFILE itself and fail
        raise ConfigError(f"{name}: empty profile name (unset it to use the default credentials)")

    raw, name = pick(args.log_level, "--log-level", "LOG_LEVEL")
    log_level = (raw or "INFO").strip().upper() or "INFO"
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"{name}: expected one of {', '.join(LOG_LEVELS)}, got {raw!r}")

    raw, name = pick(args.log_format, "--log-format", "LOG_FORMAT")
    log_format = raw.strip().lower() if raw is not None and raw.strip() else None
    if log_format is not None and log_format not in LOG_FORMATS:
        raise ConfigError(f"{name}: expected json or console, got {raw!r}")

    raw, name = pick(args.scale_down_after, "--scale-down-after", "SCALE_DOWN_AFTER")
    scale_down_after = parse_int(raw, name, minimum=1) if raw is not None else DEFAULT_SCALE_DOWN_AFTER

    if args.cloudformation_guard is False:
        guard = False
    else:
        guard = (
            parse_bool(env["CLOUDFORMATION_GUARD"], "CLOUDFORMATION_GUARD")
            if env.get("CLOUDFORMATION_GUARD", "").strip()
            else True
        )

    raw, name = pick(args.metrics_port, "--metrics-port", "METRICS_PORT")
    metrics_port = parse_int(raw, name, minimum=1, maximum=65535) if raw is not None and raw.strip() else None

    raw, name = pick(args.metrics_addr, "--metrics-addr", "METRICS_ADDR")
    metrics_addr = raw.strip() if raw is not None and raw.strip() else DEFAULT_METRICS_ADDR

    raw, name = pick(args.heartbeat_file, "--heartbeat-file", "HEARTBEAT_FILE")
    heartbeat_file = raw.strip() if raw is not None and raw.strip() else DEFAULT_HEARTBEAT_FILE

    raw, name = pick(args.events_queue_url, "--events-queue-url", "EVENTS_QUEUE_URL")
    events_queue_url = raw.strip() if raw is not None and raw.strip() else None
    if events_queue_url is not None and not _QUEUE_URL.match(events_queue_url):
        raise ConfigError(
            f"{name}: not an SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT_ID/QUEUE_NAME): {raw!r}"
        )

    raw, name = pick(args.resync, "--resync", "RESYNC")
    resync = parse_interval(raw, name) if raw is not None and raw.strip() else DEFAULT_RESYNC
    raw, name = pick(args.api_budget, "--api-budget", "API_BUDGET")
    api_budget = parse_share(raw, name) if raw is not None else DEFAULT_API_BUDGET
    raw, name = pick(args.coverage_grace, "--coverage-grace", "COVERAGE_GRACE")
    coverage_grace = parse_seconds(raw, name) if raw is not None and raw.strip() else DEFAULT_COVERAGE_GRACE
    raw, name = pick(args.ready_attribute, "--ready-attribute", "READY_ATTRIBUTE")
    ready_attribute = raw.strip() if raw is not None and raw.strip() else None
    if ready_attribute is not None and not _ATTRIBUTE_NAME.match(ready_attribute):
        raise ConfigError(
            f"{name}: not a container-instance attribute name (1 to 128 letters, digits, "
            f"hyphens, underscores, periods, slashes or backslashes): {raw!r}"
        )
    raw, name = pick(args.make_room_max, "--make-room-max", "MAKE_ROOM_MAX")
    make_room_max = parse_int(raw, name, minimum=0) if raw is not None and raw.strip() else DEFAULT_MAKE_ROOM_MAX

    return Config(
        cluster=cluster,
        services=services,
        service_regex=service_regex,
        managed_tag=managed_tag,
        interval=interval,
        once=once,
        dry_run=dry_run,
        region=region,
        profile=profile,
        log_level=log_level,
        log_format=log_format,
        scale_down_after=scale_down_after,
        cloudformation_guard=guard,
        metrics_port=metrics_port,
        metrics_addr=metrics_addr,
        heartbeat_file=heartbeat_file,
        events_queue_url=events_queue_url,
        resync=resync,
        api_budget=api_budget,
        coverage_grace=coverage_grace,
        ready_attribute=ready_attribute,
        make_room_max=make_room_max,
        command=command,
        json_output=bool(args.json_output),
    )
