"""Shared fixtures and session hooks.

- One local ECS API for the whole session, emptied for each test that asks for it.
- A session-wide record of every AWS operation the code under test sent to any
  LocalECS of this process (`daemon_operations`), printed at the end of the run
  and checked against deploy/iam-policy.json by tests/test_iam_coverage.py.
  The daemon's requests are told apart from the tests' own plain clients by the
  User-Agent suffix `ecs-cluster-manager` that transport.py sets.
- Tests marked `after_all` run after every other test, so that check sees the
  operations of the whole suite. In one process they are moved to the end of the
  run. `make test` runs the others in parallel (pytest-xdist), so it runs the
  suite in two invocations: `--defer-after-all=PATH` leaves the after_all tests
  out and writes the record of the whole run (every worker's, merged) and the
  after_all tests it left out to PATH; `--after-all-from=PATH` then runs exactly
  those tests, starting from that record. A worker never runs an after_all test
  on its own partial record: it fails instead.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localecs import ApiCall, LocalECS

# transport.py's botocore `user_agent_extra`: the last token of each of the daemon's User-Agent headers.
DAEMON_USER_AGENT = "ecs-cluster-manager"
AFTER_ALL = "after_all"
SLOW = "slow"
LONG = "long"
DEFER_OPTION = "--defer-after-all"
FROM_OPTION = "--after-all-from"
# The key of a worker's record in the `workeroutput` pytest-xdist hands to the controller.
WORKER_RECORD = "daemon_operations"


class OperationRecorder:
    """Counts (service, operation) pairs of the daemon's requests, with the first test that made each."""

    @staticmethod
    def is_daemon_call(call: ApiCall) -> bool:
        """True when the request came from the code under test (transport.py's clients), not a test's own client."""
        return DAEMON_USER_AGENT in call.user_agent.split()

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.first_seen: dict[tuple[str, str], str] = {}
        self.current_test = ""
        self._lock = threading.Lock()  # LocalECS records from its server threads

    def observe(self, call: ApiCall) -> None:
        """Take in one call as LocalECS logged it; calls not made by the daemon are ignored."""
        if not self.is_daemon_call(call):
            return
        key = (call.service, call.operation)
        with self._lock:
            self.counts[key] += 1
            self.first_seen.setdefault(key, self.current_test)

    def dump(self) -> list[list[Any]]:
        """The record as plain lists, [service, operation, count, first test], to send or save."""
        with self._lock:
            return [[*key, count, self.first_seen[key]] for key, count in sorted(self.counts.items())]

    def merge(self, rows: list[list[Any]]) -> None:
        """Add a record that `dump` made (another worker's, or an earlier invocation's)."""
        with self._lock:
            for service, operation, count, first in rows:
                key = (service, operation)
                self.counts[key] += count
                self.first_seen.setdefault(key, first)

    @property
    def operations(self) -> set[tuple[str, str]]:
        """Every (service, operation) recorded so far."""
        with self._lock:
            return set(self.counts)

    def lines(self) -> list[str]:
        """One readable line per recorded operation: service:Operation, count, first test."""
        with self._lock:
            return [
                f"{service}:{operation}  x{count}  (first: {self.first_seen[(service, operation)]})"
                for (service, operation), count in sorted(self.counts.items())
            ]


_RECORDER = OperationRecorder()
_ORIGINAL_RECORD = LocalECS._record


def _recording(self: LocalECS, call: ApiCall) -> None:
    _RECORDER.observe(call)
    _ORIGINAL_RECORD(self, call)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("after_all", "tests marked after_all, which need the record of the whole run")
    group.addoption(
        DEFER_OPTION,
        metavar="PATH",
        help="leave out the tests marked after_all; write the daemon's AWS operations of this run (all workers) "
        f"and the after_all tests left out to PATH, for {FROM_OPTION}",
    )
    group.addoption(
        FROM_OPTION,
        metavar="PATH",
        help=f"run only the after_all tests that {DEFER_OPTION}=PATH left out, starting from its record",
    )


# The after_all tests this invocation left out (--defer-after-all) or was told to run (--after-all-from).
_DEFERRED: list[str] = []
_EXPECTED: list[str] = []
_BROKEN_RECORD: list[str] = []  # why the record of the whole run is not complete, if it is not


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption(DEFER_OPTION) and config.getoption(FROM_OPTION):
        raise pytest.UsageError(f"{DEFER_OPTION} and {FROM_OPTION} are two halves of a run: give one")
    source = config.getoption(FROM_OPTION)
    if source:
        try:
            saved = json.loads(Path(source).read_text())
        except (OSError, ValueError) as error:
            raise pytest.UsageError(
                f"{FROM_OPTION}={source}: no record of the run before it ({error}); "
                f"run the other tests with {DEFER_OPTION}={source} first"
            ) from None
        _RECORDER.merge(saved["operations"])
        _EXPECTED[:] = saved["deferred"]
        _BROKEN_RECORD.extend(saved["broken"])


def pytest_sessionstart(session: pytest.Session) -> None:
    """Record every call logged by any LocalECS of this process, whatever a test later clears."""
    LocalECS._record = _recording  # type: ignore[method-assign]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object | None) -> None:
    """pytest-xdist, on the controller: take in the record of a worker that has finished."""
    output = getattr(node, "workeroutput", None)
    if error is not None or output is None or WORKER_RECORD not in output:
        _BROKEN_RECORD.append(f"worker {node.gateway.id} went down without its record ({error})")
        return
    _RECORDER.merge(output[WORKER_RECORD]["operations"])
    _DEFERRED.extend(nodeid for nodeid in output[WORKER_RECORD]["deferred"] if nodeid not in _DEFERRED)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    LocalECS._record = _ORIGINAL_RECORD  # type: ignore[method-assign]
    config = session.config
    if _is_worker(config):
        config.workeroutput[WORKER_RECORD] = {"operations": _RECORDER.dump(), "deferred": _DEFERRED}  # type: ignore[attr-defined]
        return
    target = config.getoption(DEFER_OPTION)
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        record = {"operations": _RECORDER.dump(), "deferred": _DEFERRED, "broken": _BROKEN_RECORD}
        Path(target).write_text(json.dumps(record, indent=1) + "\n")
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        # No test in one half is no failure when the other half has them: every selected test was left out for
        # --after-all-from, or the run before left none out (its selection had no after_all test).
        if (target and _DEFERRED) or (config.getoption(FROM_OPTION) and not _EXPECTED):
            session.exitstatus = pytest.ExitCode.OK


def pytest_runtest_setup(item: pytest.Item) -> None:
    _RECORDER.current_test = item.nodeid
    if item.get_closest_marker(AFTER_ALL):
        if _is_worker(item.config):
            pytest.fail(
                "an after_all test needs the record of the whole run, and a pytest-xdist worker has only its own: "
                f"run the others with {DEFER_OPTION}=PATH, then this one with {FROM_OPTION}=PATH (`make test` does)",
                pytrace=False,
            )
        if _BROKEN_RECORD:
            pytest.fail("the record of the run before is incomplete: " + "; ".join(_BROKEN_RECORD), pytrace=False)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Move tests marked after_all to the end, keeping the order within each group; or, with --defer-after-all
    and --after-all-from, leave them out, or run only them. Runs after -k and -m have deselected. On a
    pytest-xdist worker (every worker collects the same order) tests marked slow come first."""
    later = [item for item in items if item.get_closest_marker(AFTER_ALL)]
    others = [item for item in items if not item.get_closest_marker(AFTER_ALL)]
    if _is_worker(config):
        # In parallel the longest tests go first, so they never end the run alone: the short ones fill in around them.
        others.sort(key=lambda item: (item.get_closest_marker(SLOW) is None, item.get_closest_marker(LONG) is None))
    if config.getoption(DEFER_OPTION):
        _DEFERRED[:] = [item.nodeid for item in later]
        if later:
            config.hook.pytest_deselected(items=later)
        items[:] = others
    elif config.getoption(FROM_OPTION):
        selected = [item.nodeid for item in later]
        if selected != _EXPECTED:
            differ = sorted(set(selected) ^ set(_EXPECTED))[:3]
            raise pytest.UsageError(
                f"{FROM_OPTION}: this selection has {len(selected)} after_all tests, the run before left out "
                f"{len(_EXPECTED)} (differing: {differ}): give both halves the same arguments"
            )
        if others:
            config.hook.pytest_deselected(items=others)
        items[:] = later
    else:
        items[:] = others + later


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List the AWS operations the code under test made in this run (with --after-all-from, the run before too)."""
    lines = _RECORDER.lines()
    if lines:
        title = "AWS operations made by the daemon (User-Agent ecs-cluster-manager)"
        if terminalreporter.config.getoption(DEFER_OPTION):
            title += f", saved for the after_all tests in {terminalreporter.config.getoption(DEFER_OPTION)}"
        terminalreporter.section(title)
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def daemon_operations() -> OperationRecorder:
    """The session-wide record of the daemon's AWS operations."""
    return _RECORDER


@pytest.fixture(scope="session")
def local_ecs() -> Iterator[LocalECS]:
    """A started LocalECS shared by the session."""
    with LocalECS() as local:
        yield local


@pytest.fixture
def ecs(local_ecs: LocalECS) -> Iterator[LocalECS]:
    """The shared LocalECS with no moto state, no recorded calls and no fault hook."""
    local_ecs.reset()
    yield local_ecs
