"""Shared fixtures and session hooks.

- One local ECS API for the whole session, emptied for each test that asks for it.
- A session-wide record of every AWS operation the code under test sent to any
  LocalECS of this process (`daemon_operations`), printed at the end of the run
  and checked against deploy/iam-policy.json by tests/test_iam_coverage.py.
  The daemon's requests are told apart from the tests' own plain clients by the
  User-Agent suffix `ecs-cluster-manager` that transport.py sets.
- Tests marked `after_all` run after every other test, so that check sees the
  operations of the whole suite.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import pytest

from localecs import ApiCall, LocalECS

# transport.py's botocore `user_agent_extra`: the last token of each of the daemon's User-Agent headers.
DAEMON_USER_AGENT = "ecs-cluster-manager"
AFTER_ALL = "after_all"


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


def pytest_sessionstart(session: pytest.Session) -> None:
    """Record every call logged by any LocalECS of this process, whatever a test later clears."""
    LocalECS._record = _recording  # type: ignore[method-assign]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    LocalECS._record = _ORIGINAL_RECORD  # type: ignore[method-assign]


def pytest_runtest_setup(item: pytest.Item) -> None:
    _RECORDER.current_test = item.nodeid


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Move tests marked after_all to the end, keeping the order within each group."""
    later = [item for item in items if item.get_closest_marker(AFTER_ALL)]
    if later:
        items[:] = [item for item in items if not item.get_closest_marker(AFTER_ALL)] + later


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List the AWS operations the code under test made in this run."""
    lines = _RECORDER.lines()
    if lines:
        terminalreporter.section("AWS operations made by the daemon (User-Agent ecs-cluster-manager)")
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
