"""Configuration: every variable and flag, its default, and a one-line error for bad input."""

from __future__ import annotations

import inspect
import re

import pytest

from ecs_cluster_manager import config

BASE = {"CLUSTER": "prod", "SERVICES": "agent"}
ARN = "arn:aws:ecs:us-east-1:123456789012:service/prod/agent"


def load(argv: list[str] | None = None, **env: str) -> config.Config:
    return config.load(argv or [], env)


def test_defaults() -> None:
    """Only CLUSTER and SERVICES are needed; everything else has a default."""
    c = load(**BASE)
    assert c.cluster == "prod" and c.services == ("agent",)
    assert c.interval == 30.0 and not c.once and not c.dry_run
    assert c.scale_down_after == 2 and c.cloudformation_guard and c.metrics_port is None
    assert c.log_level == "INFO" and c.log_format is None and c.command == "run"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a b", ("a", "b")),
        ("a,b", ("a", "b")),
        (" a ,\n\tb,, c ", ("a", "b", "c")),
        ("a a,a", ("a",)),
        (f"agent {ARN}", ("agent", ARN)),
    ],
)
def test_services_split_on_whitespace_and_commas(raw: str, expected: tuple[str, ...]) -> None:
    """SERVICES splits on any run of whitespace and commas and drops exact repeats."""
    assert load(CLUSTER="prod", SERVICES=raw).services == expected


def test_flags_win_over_environment() -> None:
    """A flag overrides its variable."""
    c = load(
        ["--cluster", "other", "--services", "x", "--interval", "5", "--region", "eu-west-1", "--log-level", "debug"],
        CLUSTER="prod",
        SERVICES="agent",
        INTERVAL="9",
        AWS_REGION="us-east-1",
        LOG_LEVEL="ERROR",
    )
    assert (c.cluster, c.services, c.interval, c.region, c.log_level) == ("other", ("x",), 5.0, "eu-west-1", "DEBUG")


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_dry_run_variable(value: str) -> None:
    """DRY_RUN accepts 1/true/yes."""
    assert load(DRY_RUN=value, **BASE).dry_run


@pytest.mark.parametrize("flag", ["--dry-run", "--noop"])
def test_dry_run_flags(flag: str) -> None:
    """--dry-run and its alias --noop set dry_run."""
    assert load([flag], **BASE).dry_run


def test_region_falls_back_to_default_region() -> None:
    """AWS_DEFAULT_REGION is used when AWS_REGION is not set."""
    assert load(AWS_DEFAULT_REGION="eu-central-1", **BASE).region == "eu-central-1"


def test_discovery_settings() -> None:
    """SERVICE_REGEX and MANAGED_TAG alone are enough to name the managed services."""
    c = load(CLUSTER="prod", SERVICE_REGEX="agent-.*", MANAGED_TAG="role=daemon")
    assert c.services == () and c.service_regex is not None and c.service_regex.pattern == "agent-.*"
    assert c.managed_tag == config.ManagedTag("role", "daemon")
    assert load(CLUSTER="prod", MANAGED_TAG="managed").managed_tag == config.ManagedTag("managed", None)


@pytest.mark.parametrize(
    ("argv", "env", "names"),
    [
        ([], {"SERVICES": "a"}, "CLUSTER"),
        ([], {"CLUSTER": "", "SERVICES": "a"}, "CLUSTER"),
        ([], {"CLUSTER": "   ", "SERVICES": "a"}, "CLUSTER"),
        ([], {"CLUSTER": "bad name!", "SERVICES": "a"}, "CLUSTER"),
        ([], {"CLUSTER": "prod"}, "SERVICES"),
        ([], {"CLUSTER": "prod", "SERVICES": ""}, "SERVICES"),
        ([], {"CLUSTER": "prod", "SERVICES": " , ,"}, "SERVICES"),
        ([], {"CLUSTER": "prod", "SERVICES": "ok bad/name"}, "SERVICES"),
        ([], {"CLUSTER": "prod", "SERVICES": "arn:aws:ecs:us-east-1:123456789012:service/other/agent"}, "SERVICES"),
        (["--services", ""], {"CLUSTER": "prod"}, "--services"),
        ([], {**BASE, "INTERVAL": "0"}, "INTERVAL"),
        ([], {**BASE, "INTERVAL": "-1"}, "INTERVAL"),
        ([], {**BASE, "INTERVAL": "1e309"}, "INTERVAL"),
        ([], {**BASE, "INTERVAL": "nan"}, "INTERVAL"),
        ([], {**BASE, "INTERVAL": "abc"}, "INTERVAL"),
        ([], {**BASE, "INTERVAL": ""}, "INTERVAL"),
        (["--interval", "0"], BASE, "--interval"),
        ([], {**BASE, "DRY_RUN": "maybe"}, "DRY_RUN"),
        ([], {**BASE, "LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ([], {**BASE, "LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ([], {**BASE, "AWS_REGION": "mars"}, "AWS_REGION"),
        ([], {**BASE, "SERVICE_REGEX": "("}, "SERVICE_REGEX"),
        ([], {**BASE, "MANAGED_TAG": "=x"}, "MANAGED_TAG"),
        ([], {**BASE, "MANAGED_TAG": "k="}, "MANAGED_TAG"),
        ([], {**BASE, "MANAGED_TAG": "a b=c"}, "MANAGED_TAG"),
        ([], {**BASE, "SCALE_DOWN_AFTER": "0"}, "SCALE_DOWN_AFTER"),
        ([], {**BASE, "SCALE_DOWN_AFTER": "two"}, "SCALE_DOWN_AFTER"),
        ([], {**BASE, "METRICS_PORT": "70000"}, "METRICS_PORT"),
        ([], {**BASE, "METRICS_PORT": "http"}, "METRICS_PORT"),
        ([], {**BASE, "CLOUDFORMATION_GUARD": "sometimes"}, "CLOUDFORMATION_GUARD"),
        (["--bogus"], BASE, "--bogus"),
        (["frobnicate"], BASE, "frobnicate"),
    ],
)
def test_bad_input_names_the_setting(argv: list[str], env: dict[str, str], names: str) -> None:
    """Each bad value raises ConfigError with one line naming the variable or flag."""
    with pytest.raises(config.ConfigError) as caught:
        config.load(argv, env)
    message = str(caught.value)
    assert names in message
    assert "\n" not in message


def test_variables_names_every_setting_load_reads() -> None:
    """config.VARIABLES (cleared by the local ECS API for its subprocesses) names each non-AWS variable load() reads."""
    source = inspect.getsource(config.load)
    read: set[str] = set()
    for names in re.findall(r'pick\(args\.\w+, "--[\w-]+", ([^)]*)\)', source):
        read |= set(re.findall(r'"(\w+)"', names))
    read |= set(re.findall(r'env\["(\w+)"\]', source))
    read |= set(re.findall(r'env\.get\("(\w+)"', source))
    read |= set(re.findall(r'"(\w+)" in env', source))
    assert {name for name in read if not name.startswith("AWS_")} == set(config.VARIABLES)


@pytest.mark.parametrize("name", ["DRY_RUN", "CLOUDFORMATION_GUARD"])
def test_boolean_error_lists_every_word_accepted(name: str) -> None:
    """A bad DRY_RUN or CLOUDFORMATION_GUARD names every word that is accepted (on and off too), and each works."""
    with pytest.raises(config.ConfigError) as caught:
        load(**{**BASE, name: "maybe"})
    listed = set(re.split(r"[/ ]", str(caught.value).split("expected ", 1)[1].split(",", 1)[0]))
    assert set(config.TRUE_WORDS) | set(config.FALSE_WORDS) <= listed
    for word in config.TRUE_WORDS:
        assert config.parse_bool(word, name) is True
    for word in config.FALSE_WORDS:
        assert config.parse_bool(word, name) is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--once", "--intervall", "5"], "--intervall: unknown flag (did you mean --interval?)"),
        (["--clutser", "sandbox"], "--clutser: unknown flag (did you mean --cluster?)"),
        (["check", "--interval", "5"], "--interval: does not apply to the check command"),
        (["check", "--dry-run"], "--dry-run: does not apply to the check command"),
    ],
)
def test_mistyped_or_misplaced_flag_is_named(argv: list[str], message: str) -> None:
    """A mistyped flag is named (not its value taken for a command), and so is a flag check does not read."""
    with pytest.raises(config.ConfigError) as caught:
        load(argv, **BASE)
    assert message in str(caught.value)


def test_check_takes_its_own_flags_and_unique_prefixes() -> None:
    """check accepts the selection, region, log and --json flags; a unique prefix of a flag still works."""
    c = load(["check", "--json", "--cluster", "other", "--managed-tag", "k=v", "--reg", "eu-west-1"], **BASE)
    assert (c.command, c.json_output, c.cluster, c.region) == ("check", True, "other", "eu-west-1")
    assert load(["--interv", "5"], **BASE).interval == 5.0
def test_api_budget_defaults_to_half_and_accepts_a_share() -> None:
    """API_BUDGET is half of each ECS bucket by default; --api-budget wins over the variable."""
    assert load(**BASE).api_budget == 0.5
    assert load(API_BUDGET="1", **BASE).api_budget == 1.0
    assert load(["--api-budget", "0.1"], API_BUDGET="1", **BASE).api_budget == 0.1


@pytest.mark.parametrize(
    ("argv", "env", "name"),
    [
        ([], {"API_BUDGET": "0"}, "API_BUDGET"),
        ([], {"API_BUDGET": "1.01"}, "API_BUDGET"),
        ([], {"API_BUDGET": "half"}, "API_BUDGET"),
        ([], {"API_BUDGET": ""}, "API_BUDGET"),
        (["--api-budget", "-1"], {}, "--api-budget"),
    ],
)
def test_a_bad_api_budget_is_one_line_naming_it(argv: list[str], env: dict[str, str], name: str) -> None:
    """A share outside (0, 1] is refused with one line that names the variable or the flag."""
    with pytest.raises(config.ConfigError) as raised:
        load(argv, **env, **BASE)
    message = str(raised.value)
    assert message.startswith(f"{name}: ") and "\n" not in message and "> 0 and <= 1" in message


@pytest.mark.parametrize("value", ["", "   ", "\t"])
def test_blank_resync_counts_as_unset(value: str) -> None:
    """RESYNC="" (or blank) is the default resync, as the README says of blank variables; a typo is still refused."""
    assert load(RESYNC=value, **BASE).resync == config.DEFAULT_RESYNC
    assert load(RESYNC="60", **BASE).resync == 60.0
    with pytest.raises(config.ConfigError, match="^RESYNC: "):
        load(RESYNC="abc", **BASE)
