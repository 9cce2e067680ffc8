"""The events mode of `python run.py`: registration latency, and API calls per hour of a steady cluster.

Latency: a host is registered (`add_hosts` returns, its state-change event is
on the queue by then) and the time is taken when the daemon's `decision` log
line for the raised desiredCount is read from its stdout. The daemon logs it
after UpdateService has returned, so the figure is the time to the new
desiredCount plus the pipe's delay; each trial ends by checking desiredCount
through the API. Nothing polls the API while waiting, so trials can run
alongside other work without loading the local API.

Calls per hour: one hour of a steady cluster compressed SCALE times (INTERVAL
and RESYNC too, so passes per hour, exact listings per hour and the hold of a
lost agent, SCALE_DOWN_AFTER x INTERVAL seconds, keep their meaning), with the
same scripted workload in both modes: agents that disconnect and come back,
tasks placed and stopped, hosts that arrive, and hosts that are drained and then
deregistered. The daemon's calls are counted from LocalECS's call log (its
User-Agent ends in `ecs-cluster-manager`). Each run also says whether it
converged (desiredCount at the end equal to the hosts that count: the usable
ones plus those whose agent has been lost for less than the hold), and how many
times the daemon lowered desiredCount and then raised it again, from its
`decision` log lines.
"""

from __future__ import annotations

import json
import math
import os
import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from ecs_cluster_manager.config import DEFAULT_RESYNC, DEFAULT_SCALE_DOWN_AFTER
from localecs import ApiCall, LocalECS

from .measure import BACKGROUND_APP_ID, Progress, daemon

DAEMON_USER_AGENT = "ecs-cluster-manager"  # ecs.py's user_agent_extra

EVENTS, POLLING = "events", "polling"


def is_daemon_call(call: ApiCall) -> bool:
    return DAEMON_USER_AGENT in call.user_agent.split()


def is_background_call(call: ApiCall) -> bool:
    return f"app/{BACKGROUND_APP_ID}" in call.user_agent.split()


def p95(values: Sequence[float]) -> float:
    """The nearest-rank 95th percentile (the 19th of 20)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)] if ordered else math.nan


class LogReader:
    """Reads a daemon's JSON log lines in a thread, each with the time.perf_counter() it was read at."""

    def __init__(self, stream: IO[str]) -> None:
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.closed = False
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), name="daemon-log", daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            read_at = time.perf_counter()
            if not line.startswith("{"):
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._condition:
                self.events.append((read_at, event))
                self._condition.notify_all()
        with self._condition:
            self.closed = True
            self._condition.notify_all()

    def mark(self) -> int:
        with self._condition:
            return len(self.events)

    def wait(
        self, predicate: Callable[[dict[str, Any]], bool], since: int, timeout: float
    ) -> tuple[float, dict[str, Any]] | None:
        """The first event from index `since` on that satisfies `predicate`, waiting up to `timeout`."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while True:
                for read_at, event in self.events[since:]:
                    if predicate(event):
                        return read_at, event
                since = len(self.events)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.closed:
                    return None
                self._condition.wait(remaining)

    def passes(self, since: int = 0, until: int | None = None) -> list[dict[str, Any]]:
        return self.named("pass", since, until)

    def named(self, name: str, since: int = 0, until: int | None = None) -> list[dict[str, Any]]:
        """The log events called `name` (`pass`, `decision`, ...) read from index `since` to `until`."""
        with self._condition:
            return [event for _, event in self.events[since:until] if event.get("event") == name]


# ---------------------------------------------------------------------------
# Registration to desiredCount


@dataclass(frozen=True)
class Latency:
    """Seconds from host registrations to the raised desiredCount, for one mode, interval and cluster size."""

    mode: str
    interval: float
    hosts: int  # the cluster's size when the trials began
    seconds: list[float]
    offset: float  # each registration waited a random 0..offset s after the previous trial
    note: str = ""
    trigger: Counter[str] = field(default_factory=Counter)  # the passes that made the updates, by trigger

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else math.nan

    @property
    def p95(self) -> float:
        return p95(self.seconds)


def _converge(local: LocalECS, cluster: str, service: str, hosts: int, reader: LogReader, events: bool) -> None:
    deadline = time.monotonic() + 120
    while local.desired_count(cluster, service) != hosts:
        if time.monotonic() > deadline or reader.closed:
            raise RuntimeError(f"the daemon did not bring {service} to {hosts}")
        time.sleep(0.1)
    if events and reader.wait(lambda e: e.get("event") == "events_start", 0, 60) is None:
        raise RuntimeError("the daemon did not start its events source")


def registration_latency(
    local: LocalECS,
    cluster: str,
    service: str,
    env: Mapping[str, str],
    trials: int,
    progress: Progress,
    *,
    mode: str,
    interval: float,
    offset: float,
    seed: int,
    note: str = "",
) -> Latency:
    """Run `python run.py` with `env` and register one host per trial; see the module's docstring."""
    rng = random.Random(seed)
    hosts = len(local.hosts(cluster))
    start_hosts = hosts
    seconds: list[float] = []
    triggers: Counter[str] = Counter()
    with daemon(env) as process:
        assert process.stdout is not None
        reader = LogReader(process.stdout)
        _converge(local, cluster, service, hosts, reader, mode == EVENTS)
        for trial in range(trials):
            time.sleep(rng.uniform(0.0, offset))
            since = reader.mark()
            local.add_hosts(cluster, 1)
            registered = time.perf_counter()
            hosts += 1
            expected = hosts

            def raised(event: dict[str, Any]) -> bool:
                return (
                    event.get("event") == "decision"
                    and event.get("service") == service
                    and event.get("action") == "update"
                    and event.get("target") == expected  # noqa: B023
                )

            found = reader.wait(raised, since, interval * 2 + 15)
            if found is None:
                raise RuntimeError(f"{mode}: desiredCount of {cluster}/{service} did not reach {expected}")
            seconds.append(max(0.0, found[0] - registered))
            actual = local.desired_count(cluster, service)
            if actual < expected:
                raise RuntimeError(f"{mode}: the daemon logged {expected} but desiredCount is {actual}")
            done = reader.wait(lambda e: e.get("event") == "pass", since, 10)
            if done is not None:
                triggers[str(done[1].get("trigger"))] += 1
            progress(f"{mode} INTERVAL={interval:g} H={start_hosts}: {trial + 1}/{trials}: {seconds[-1] * 1000:.0f} ms")
    return Latency(mode, interval, start_hosts, seconds, offset, note, triggers)


class Background:
    """Polling-latency trials on several small clusters at once, in threads, while the caller does other work."""

    def __init__(self, jobs: Sequence[Callable[[], Latency]]) -> None:
        self.results: list[Latency] = []
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(job,), daemon=True) for job in jobs]
        self.started = time.monotonic()
        for thread in self._threads:
            thread.start()

    def _run(self, job: Callable[[], Latency]) -> None:
        try:
            result = job()
        except BaseException as error:  # re-raised by join()
            with self._lock:
                self.errors.append(error)
            return
        with self._lock:
            self.results.append(result)

    def join(self) -> list[Latency]:
        for thread in self._threads:
            thread.join()
        if self.errors:
            raise RuntimeError(f"background latency trials failed: {self.errors[0]!r}") from self.errors[0]
        return self.results


def merge(parts: Sequence[Latency], note: str) -> Latency:
    """One Latency of several clusters' trials (same mode, interval and size)."""
    first = parts[0]
    triggers: Counter[str] = Counter()
    for part in parts:
        triggers.update(part.trigger)
    return Latency(
        first.mode,
        first.interval,
        first.hosts,
        [s for part in parts for s in part.seconds],
        first.offset,
        note,
        triggers,
    )


# ---------------------------------------------------------------------------
# API calls per hour of a steady cluster


@dataclass(frozen=True)
class Workload:
    """What happens to the cluster in one (real) hour; the same for both modes."""

    reconnects_per_host: float = 3.0  # agent disconnect + reconnect pairs per host per hour
    disconnected_for: tuple[float, float] = (5.0, 30.0)  # seconds an agent stays away (uniform)
    placements: int = 60  # tasks placed (and stopped again later) per hour
    task_runs_for: tuple[float, float] = (60.0, 600.0)
    arrivals: int = 6  # hosts registered per hour
    departures: int = 6  # hosts drained, then deregistered, per hour
    drain_for: float = 120.0  # seconds from DRAINING to deregistered


@dataclass
class Steady:
    """One mode's compressed hour(s): calls, passes and what the workload did."""

    mode: str
    interval: float  # the INTERVAL it stands for (real seconds)
    scale: float
    hours: float  # simulated hours
    hosts: int
    ecs: Counter[str] = field(default_factory=Counter)
    sqs: Counter[str] = field(default_factory=Counter)
    passes: Counter[str] = field(default_factory=Counter)  # by trigger
    pass_calls: Counter[str] = field(default_factory=Counter)  # the passes' own api_calls, by trigger
    counted: Counter[str] = field(default_factory=Counter)  # passes by how they counted: exact, cheap or event
    actions: Counter[str] = field(default_factory=Counter)
    published: int = 0  # state-change events published (events mode)
    late: float = 0.0  # the most the workload fell behind its schedule (run seconds)
    final_desired: int = 0
    final_usable: int = 0  # ACTIVE hosts with a connected agent at the end
    final_held: int = 0  # ACTIVE hosts whose agent had been lost for less than the hold at the end
    lowers: Counter[str] = field(default_factory=Counter)  # writes lowering desiredCount, by cause
    raises: int = 0  # writes raising desiredCount
    pairs: Counter[str] = field(default_factory=Counter)  # a lower followed by a raise, by the lower's cause

    def per_hour(self, count: float) -> float:
        return count / self.hours

    @property
    def final_counted(self) -> int:
        """The hosts desiredCount should equal at the end: the usable ones and the held ones."""
        return self.final_usable + self.final_held

    @property
    def converged(self) -> bool:
        return self.final_desired == self.final_counted

    @property
    def ecs_total(self) -> int:
        return sum(self.ecs.values())

    @property
    def sqs_total(self) -> int:
        return sum(self.sqs.values())


Action = tuple[float, str, int]  # (simulated seconds, what, which host of the plan's list)


def schedule(workload: Workload, hosts: int, hours: float, seed: int) -> list[Action]:
    """The workload's actions over `hours`, in order; host indices refer to the cluster's hosts at the start.

    The hosts that depart are kept apart from those whose agents reconnect or take tasks.
    """
    rng = random.Random(seed)
    span = 3600.0 * hours
    departures = round(workload.departures * hours)
    stable = hosts - departures
    actions: list[Action] = []
    for _ in range(round(workload.reconnects_per_host * hosts * hours)):
        host = rng.randrange(stable)
        start = rng.uniform(0.0, span - workload.disconnected_for[1])
        actions.append((start, "disconnect", host))
        actions.append((start + rng.uniform(*workload.disconnected_for), "reconnect", host))
    for _ in range(round(workload.placements * hours)):
        host = rng.randrange(stable)
        start = rng.uniform(0.0, span - workload.task_runs_for[1])
        actions.append((start, "task_placed", host))
        actions.append((start + rng.uniform(*workload.task_runs_for), "task_stopped", host))
    arrivals = round(workload.arrivals * hours)
    for index in range(arrivals):
        actions.append((span * (index + rng.random()) / arrivals, "register", -1))
    for index in range(departures):
        start = (span - workload.drain_for) * (index + rng.random()) / departures
        actions.append((start, "drain", stable + index))
        actions.append((start + workload.drain_for, "deregister", stable + index))
    return sorted(actions)


# Why a write lowered desiredCount (from the decision's reason).
AGENT_LOST, DEPARTED = "agent lost", "drained or deregistered"


def writes(decisions: Sequence[dict[str, Any]], service: str) -> tuple[Counter[str], int, Counter[str]]:
    """Lowers by cause, raises, and lower-then-raise pairs (a lower whose next write raises), by the lower's cause."""
    lowers: Counter[str] = Counter()
    pairs: Counter[str] = Counter()
    raises = 0
    lowered: str | None = None  # the cause of the last write when it was a lower
    for decision in decisions:
        if decision.get("service") != service or decision.get("action") != "update":
            continue
        current, target = decision.get("current"), decision.get("target")
        if not isinstance(current, int) or not isinstance(target, int) or target == current:
            continue
        if target < current:
            lowered = AGENT_LOST if "agent lost" in str(decision.get("reason", "")) else DEPARTED
            lowers[lowered] += 1
            continue
        raises += 1
        if lowered is not None:
            pairs[lowered] += 1
        lowered = None
    return lowers, raises, pairs


def _act(local: LocalECS, cluster: str, arns: Sequence[str], what: str, host: int) -> None:
    if what == "register":
        local.add_hosts(cluster, 1)
    elif what in ("disconnect", "reconnect"):
        local.set_agent_connected(cluster, arns[host], what == "reconnect")
    elif what == "task_placed":
        local.task_placed(cluster, arns[host])
    elif what == "task_stopped":
        local.task_stopped(cluster, arns[host])
    elif what == "drain":
        local.drain(cluster, arns[host])
    elif what == "deregister":
        local.deregister(cluster, arns[host])
    else:
        raise ValueError(what)


def steady(
    local: LocalECS,
    cluster: str,
    service: str,
    env: Mapping[str, str],
    progress: Progress,
    *,
    mode: str,
    interval: float,
    scale: float,
    hours: float,
    workload: Workload,
    seed: int,
    queue_url: str | None = None,
) -> Steady:
    """Run the daemon (INTERVAL = interval/scale) through `hours` of `workload` compressed `scale` times."""
    hosts = [h for h in local.hosts(cluster) if h["status"] == "ACTIVE"]
    arns = [h["containerInstanceArn"] for h in hosts]
    result = Steady(mode, interval, scale, hours, len(arns))
    actions = schedule(workload, len(arns), hours, seed)
    settings = dict(env, INTERVAL=f"{interval / scale:g}", RESYNC=f"{DEFAULT_RESYNC / scale:g}")
    hold = DEFAULT_SCALE_DOWN_AFTER * interval / scale  # run seconds a lost agent keeps counting
    lost_since: dict[str, float] = {}  # run clock: the hosts whose agent the workload has disconnected, since when
    if queue_url is not None:
        settings["EVENTS_QUEUE_URL"] = queue_url
    with daemon(settings) as process:
        assert process.stdout is not None
        reader = LogReader(process.stdout)
        _converge(local, cluster, service, len(arns), reader, queue_url is not None)
        time.sleep(0.2)
        published_before = local.events.published
        local.clear_calls()
        since = reader.mark()
        started = time.monotonic()
        for at, what, host in actions:
            due = started + at / scale
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                result.late = max(result.late, -delay)
            _act(local, cluster, arns, what, host)
            result.actions[what] += 1
            if what == "disconnect":
                lost_since.setdefault(arns[host], time.monotonic())
            elif what == "reconnect":
                lost_since.pop(arns[host], None)
        remaining = started + 3600.0 * hours / scale - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
        calls = [c for c in local.calls if is_daemon_call(c) and not is_background_call(c)]
        # Per hour of what actually ran: if the workload fell behind, the window is longer than planned.
        result.hours = (time.monotonic() - started) * scale / 3600.0
        until = reader.mark()
        result.published = local.events.published - published_before
        # Every change has been made: let the daemon act on the last ones, then compare with the hosts that
        # count: the usable ones, and those whose agent has been lost for less than the hold (none once the last
        # reconnect is in, as every loss of the workload is shorter than the hold).
        time.sleep(max(2.0, 2 * interval / scale))
        result.final_desired = local.desired_count(cluster, service)
        now = time.monotonic()
        for found in local.hosts(cluster):
            if found["status"] != "ACTIVE":
                continue
            if found["agentConnected"]:
                result.final_usable += 1
            elif now - lost_since.get(found["containerInstanceArn"], now - hold) < hold:
                result.final_held += 1
        decisions = reader.named("decision", since)
    result.lowers, result.raises, result.pairs = writes(decisions, service)
    for call in calls:
        (result.ecs if call.service == "ecs" else result.sqs)[call.operation] += 1
    for event in reader.passes(since, until):
        trigger = str(event.get("trigger"))
        result.passes[trigger] += 1
        result.pass_calls[trigger] += int(event.get("api_calls", 0))
        how = set(dict(event.get("counting") or {}).values())  # per host filter: exact, cheap or event
        result.counted[next((kind for kind in ("exact", "cheap", "event") if kind in how), "none")] += 1
    progress(
        f"steady {mode} INTERVAL={interval:g} (run at {interval / scale:g}): "
        f"per hour {result.per_hour(result.ecs_total):.0f} "
        f"ECS calls ({dict(result.ecs)}), {result.per_hour(result.sqs_total):.0f} SQS calls, passes "
        f"{dict(result.passes)} counting {dict(result.counted)}, events published {result.published}, "
        f"late by at most {result.late:.2f} s, "
        f"desiredCount {result.final_desired} for {result.final_usable} usable + {result.final_held} held hosts "
        f"({'converged' if result.converged else 'NOT converged'}), lowers {dict(result.lowers)}, "
        f"raises {result.raises}, lower-then-raise pairs {dict(result.pairs)}"
    )
    return result


def background_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` marked so that the daemon's calls are left out of every other measurement's count."""
    return dict(env, AWS_SDK_UA_APP_ID=BACKGROUND_APP_ID)


def heartbeat_dir(root: str, name: str) -> str:
    path = os.path.join(root, name)
    os.makedirs(path, exist_ok=True)
    return path


__all__ = [
    "EVENTS",
    "POLLING",
    "Background",
    "Latency",
    "LogReader",
    "Steady",
    "Workload",
    "background_env",
    "heartbeat_dir",
    "is_background_call",
    "is_daemon_call",
    "merge",
    "p95",
    "registration_latency",
    "schedule",
    "steady",
    "writes",
]
