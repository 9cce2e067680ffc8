"""The documents against the code: every variable, make target, flag and command they name exists.

DOCUMENTS are README.md, ToolUse.md, CHANGELOG.md and every docs/*.md. The checker reads
every command line of them (fenced code, with backslash continuations joined,
and inline code), finds the program of each
(`ecs-cluster-manager` / `run.py`, `python -m localecs`, `make`) and checks
its arguments against the real thing: the daemon's own configuration loader,
localecs's parser, `make help` and the makefiles' variables. Environment
variables named anywhere must be ones the manager reads (config.VARIABLES) or
boto3's `AWS_*` (or build arguments of the Dockerfile). test_the_checker_catches_what_does_not_exist proves the
checker fails on names that do not exist.

README and the docs pages are one set of documents: every relative link in
them names a file that exists (and, for a Markdown file, a heading it has), and
README links to every docs page.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from ecs_cluster_manager import config
from localecs.__main__ import _parser as localecs_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS_PAGES = tuple(sorted(f"docs/{page.name}" for page in (ROOT / "docs").glob("*.md")))
DOCUMENTS = ("README.md", "ToolUse.md", "CHANGELOG.md", *DOCS_PAGES)
# Read by the manager outside config.py: the ECS task metadata endpoint (ecs.task_identity).
OTHER_VARIABLES = frozenset({"ECS_CONTAINER_METADATA_URI_V4"})
# Placeholders of deploy/iam-policy*.json that README tells the reader to replace; checked to be in the files.
POLICY_PLACEHOLDERS = frozenset({"ACCOUNT_ID", "QUEUE_NAME", "TAG_KEY", "TAG_VALUE"})
# ECS's own names in capitals: a capacity provider, a deployment controller, a container instance status.
ECS_WORDS = frozenset({"FARGATE_SPOT", "CODE_DEPLOY", "REGISTRATION_FAILED"})
# A base environment for loading a documented daemon command line, which may rely on variables set before it.
BASE_ENV = {"CLUSTER": "prod", "SERVICES": "agent"}


@cache
def make_targets() -> frozenset[str]:
    """The targets `make help` lists."""
    output = subprocess.run(
        ["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
    ).stdout
    return frozenset(re.findall(r"^  ([A-Za-z0-9_.-]+)\s", output, re.MULTILINE))


@cache
def make_variables() -> frozenset[str]:
    """The variables the makefiles define (`NAME ?=`, `NAME :=`)."""
    names: set[str] = set()
    for path in (ROOT / "Makefile", *sorted((ROOT / "makelib").glob("*.mk"))):
        names |= set(re.findall(r"^([A-Z][A-Z0-9_]*)\s*[?:]?=", path.read_text(), re.MULTILINE))
    return frozenset(names)


@cache
def build_arguments() -> frozenset[str]:
    """The Dockerfile's build arguments (`ARG NAME`), set with `--build-arg NAME=value`."""
    return frozenset(re.findall(r"^ARG ([A-Z][A-Z0-9_]*)", (ROOT / "Dockerfile").read_text(), re.MULTILINE))


def is_known_variable(name: str) -> bool:
    return name in config.VARIABLES or name.startswith("AWS_") or name in OTHER_VARIABLES


def command_lines(text: str) -> Iterator[str]:
    """Every fenced code line (continuations joined, comments dropped) and every inline code span."""
    fenced = re.findall(r"^```[a-z]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    for block in fenced:
        for line in block.replace("\\\n", " ").splitlines():
            yield re.split(r"\s#\s|\s#$", line, maxsplit=1)[0]
    prose = re.sub(r"^```[a-z]*\n.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    yield from re.findall(r"`([^`\n]+)`", prose.replace("\n", " "))


def commands(line: str) -> Iterator[list[str]]:
    """The simple commands of a shell line, as words, without leading NAME=value assignments."""
    for part in re.split(r"\|\|?|&&|;", line):
        try:
            words = shlex.split(part)
        except ValueError:
            words = part.split()
        while words and re.fullmatch(r"[A-Z][A-Z0-9_]*=.*", words[0]):
            words.pop(0)
        words = [word for word in words if "$(" not in word]  # a make variable's value, in ToolUse's recipes
        if words:
            yield words


def _program(words: list[str]) -> tuple[str, list[str]] | None:
    """("daemon" | "localecs", arguments) when the command runs ecs-cluster-manager or python -m localecs."""
    first = Path(words[0]).name
    if first == "ecs-cluster-manager":
        return "daemon", words[1:]
    if re.fullmatch(r"python[0-9.]*", first) and len(words) > 1:
        if words[1] == "-m" and len(words) > 2 and words[2] in ("ecs_cluster_manager", "localecs"):
            return ("daemon" if words[2] == "ecs_cluster_manager" else "localecs"), words[3:]
        if Path(words[1]).name == "run.py":
            return "daemon", words[2:]
    return None


def daemon_problem(arguments: list[str]) -> str | None:
    """Why these arguments would not be accepted by the daemon's command line, or None."""
    if any(arg in ("--help", "-h", "--version") for arg in arguments):
        arguments = [arg for arg in arguments if arg not in ("--help", "-h", "--version")]
    try:
        config.load(arguments, BASE_ENV)
    except config.ConfigError as error:
        return str(error)
    return None


def localecs_problem(arguments: list[str]) -> str | None:
    if not arguments or arguments[0] in ("--help", "-h") or "|" in arguments:
        return None
    arguments = [arg for arg in arguments if arg not in ("--help", "-h")]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            localecs_parser().parse_args(arguments)
    except SystemExit:
        return stderr.getvalue().strip().splitlines()[-1]
    return None


def make_problems(arguments: list[str]) -> list[str]:
    problems = []
    targets = []
    for word in arguments:
        if word.startswith("-"):
            continue
        name, sep, value = word.partition("=")
        if sep:
            if not (name in make_variables() or is_known_variable(name)):
                problems.append(f"make variable {name} is not defined by the makefiles or read by the manager")
            if name == "ARGS" and value:
                for target in targets:
                    if target in ("run", "check", "docker-run"):
                        found = daemon_problem((["check"] if target == "check" else []) + shlex.split(value))
                    elif target == "sandbox":
                        found = localecs_problem(["serve", *shlex.split(value)])
                    else:
                        found = None
                    if found:
                        problems.append(f"make {target} ARGS={value!r}: {found}")
        elif re.fullmatch(r"[a-z][a-z0-9-]*", word):
            targets.append(word)
            if word not in make_targets():
                problems.append(f"make target {word!r} is not in `make help`")
    return problems


def problems_of(text: str) -> list[str]:
    """Everything the document names that the code does not have."""
    problems: list[str] = []
    for line in command_lines(text):
        for words in commands(line):
            program = _program(words)
            if program is not None:
                name, arguments = program
                found = daemon_problem(arguments) if name == "daemon" else localecs_problem(arguments)
                if found:
                    problems.append(f"{line.strip()!r}: {name}: {found}")
            if words[0] == "make":
                problems.extend(f"{line.strip()!r}: {found}" for found in make_problems(words[1:]))
    policies = "".join(path.read_text() for path in (ROOT / "deploy").glob("iam-policy*.json"))
    named = set(re.findall(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)`", text))  # inline, with an underscore
    named |= set(re.findall(r"(?<![\w$])([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*)=", text))  # NAME=value anywhere
    named |= set(re.findall(r"-e ([A-Z][A-Z0-9_]+)", text))  # docker run -e NAME
    for name in sorted(named):
        if is_known_variable(name) or name in make_variables() or name in build_arguments():
            continue
        if name in POLICY_PLACEHOLDERS and name in policies:
            continue
        if re.fullmatch(r"[A-Z]+_(COMPLETE|IN_PROGRESS|FAILED)", name):  # a CloudFormation stack status
            continue
        if name in ECS_WORDS:
            continue
        if name in ("KEY", "NAME"):  # placeholders: KEY=VALUE (MANAGED_TAG's form), `-e NAME` (docker run's)
            continue
        problems.append(f"variable {name} is not read by the manager (config.VARIABLES) nor AWS_*")
    return problems


def configuration_table(text: str) -> tuple[set[str], set[str]]:
    """The variables and flags of README's Configuration table."""
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    variables: set[str] = set()
    flags: set[str] = set()
    for line in section.splitlines():
        cells = line.split("|")
        if len(cells) > 3 and line.startswith("| "):
            variables |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[1]))
            flags |= set(re.findall(r"`(--[a-z-]+)`", cells[2]))
    return variables, flags


@pytest.mark.parametrize("document", DOCUMENTS)
def test_document_names_only_what_exists(document: str) -> None:
    """Every variable, make target, flag and command the document names exists in the code."""
    assert problems_of((ROOT / document).read_text()) == []


def test_configuration_table_is_the_configuration() -> None:
    """README's Configuration table lists every variable the manager reads and every flag, and nothing else."""
    variables, flags = configuration_table((ROOT / "README.md").read_text())
    assert {v for v in variables if not v.startswith("AWS_")} == set(config.VARIABLES)
    parser_flags = set(config.build_parser()._option_string_actions) - {"-h", "--help", "--version"}
    assert flags == parser_flags


def test_tooluse_docker_run_passes_every_variable() -> None:
    """ToolUse's docker-run row names every variable the manager reads (EVENTS_QUEUE_URL included)."""
    text = (ROOT / "ToolUse.md").read_text()
    [row] = [line for line in text.splitlines() if line.startswith("| `docker-run` |")]
    named = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("config.VARIABLES", 1)[1].split(")", 1)[0]))
    assert named == set(config.VARIABLES)


def test_make_bench_takes_the_same_time_everywhere() -> None:
    """docs/performance.md, ToolUse.md and `make help` give `make bench` the same duration, the one bench/results.md
    measured."""
    measured = re.search(r"`make bench` under \d+ minutes \| ([\d.]+) min", (ROOT / "bench/results.md").read_text())
    assert measured is not None
    minutes = round(float(measured.group(1)))
    performance = (ROOT / "docs/performance.md").read_text().split("# Performance", 1)[1]
    tooluse = [line for line in (ROOT / "ToolUse.md").read_text().splitlines() if line.startswith("| `bench` |")][0]
    help_line = subprocess.run(
        ["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
    ).stdout
    [help_bench] = [line for line in help_line.splitlines() if line.startswith("  bench ")]
    for where, text in (("docs/performance.md", performance), ("ToolUse.md", tooluse), ("make help", help_bench)):
        full_run = text.replace("\n", " ").split("--quick", 1)[0]  # what follows is the smaller matrix
        stated = {int(m) for m in re.findall(r"about (\d+) minutes", full_run)}
        assert stated == {minutes}, (where, stated, minutes)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("```sh\nFROBNICATE_LEVEL=3 .venv/bin/ecs-cluster-manager --once\n```\n", "FROBNICATE_LEVEL"),
        ("Set `SCALE_DOWN_AFTR` to 3.\n", "SCALE_DOWN_AFTR"),
        ("```sh\nmake sandboxx\n```\n", "make target 'sandboxx'"),
        ("Run `make lint test-slow`.\n", "make target 'test-slow'"),
        ("```sh\n.venv/bin/ecs-cluster-manager --intervall 5\n```\n", "--intervall"),
        ("Then `ecs-cluster-manager audit`.\n", "audit"),
        ("```sh\npython run.py check --interval 5\n```\n", "--interval"),
        ("```sh\n.venv/bin/python -m localecs drainn\n```\n", "localecs: "),
        ("```sh\nmake sandbox ARGS=--hostz\n```\n", "--hostz"),
    ],
)
def test_the_checker_catches_what_does_not_exist(line: str, expected: str) -> None:
    """A document naming a variable, make target, flag or command that does not exist fails the check."""
    found = problems_of(line)
    assert any(expected in problem for problem in found), found


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")  # [text](target), not an image


def prose(text: str) -> str:
    """The text without its fenced code blocks."""
    return re.sub(r"^```[a-z]*\n.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives the document's headings: lower case, punctuation dropped, spaces to hyphens."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose(text), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in found:
            n += 1
            anchor = f"{slug}-{n}"
        found.add(anchor)
    return found


def relative_links(document: Path) -> Iterator[tuple[str, Path, str]]:
    """(link as written, the file it names, its anchor or "") for every relative link of the document."""
    for target in LINK.findall(prose(document.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        yield target, (document.parent / path).resolve() if path else document, anchor


def link_problems(document: Path) -> list[str]:
    problems = []
    for target, path, anchor in relative_links(document):
        if not path.is_file():
            problems.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path.read_text()):
            problems.append(f"{target}: no heading with that anchor in {path.name}")
    return problems


@pytest.mark.parametrize("document", ("README.md", *DOCS_PAGES))
def test_relative_links_resolve(document: str) -> None:
    """Every relative link of README and of each docs page names an existing file, and a heading of it."""
    assert link_problems(ROOT / document) == []


def test_readme_links_every_docs_page() -> None:
    """Every page under docs/ is reachable from README by a link."""
    linked = {path for _, path, _ in relative_links(ROOT / "README.md")}
    assert DOCS_PAGES and {page for page in DOCS_PAGES if (ROOT / page).resolve() not in linked} == set()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("See [the page](docs/no-such-page.md).\n", "no such file"),
        ("See [health](docs/operations.md#no-such-heading).\n", "no heading"),
        ("See [below](#nowhere).\n", "no heading"),
    ],
)
def test_the_link_checker_catches_what_does_not_exist(tmp_path: Path, line: str, expected: str) -> None:
    """A link to a missing file or to a heading its file does not have fails the check."""
    document = tmp_path / "README.md"
    document.write_text("# Title\n\n" + line)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "operations.md").write_text("# Operations\n\n## Health\n")
    found = link_problems(document)
    assert any(expected in problem for problem in found), found
