"""bench.ready, the readiness figure of `make bench`: its trials time the chain registration -> desiredCount ->
task RUNNING -> ready attribute from the local API, with the real daemon, and its section replaces itself in place."""

from __future__ import annotations

import tempfile

from bench import ready
from bench.events import EVENTS, heartbeat_dir
from bench.measure import daemon_env
from localecs import LocalECS


def test_events_trials_time_each_step_in_order_and_count_the_daemons_calls() -> None:
    """Two registrations with events: desiredCount first, the task RUNNING start_after later, the attribute after it,
    within seconds; the daemon's calls include one UpdateService and one PutAttributes a trial; the rendered row and
    its section, put twice into a document, appear once."""
    with tempfile.TemporaryDirectory() as workdir, LocalECS(schedule=True, start_after=0.3) as local:
        ready._cluster(local, "bench-ready", 3)
        queue_url = local.enable_events("bench-ready", task_events=True)
        env = daemon_env(
            local, "bench-ready", [ready.SERVICE], heartbeat_dir(workdir, "bench-ready"),
            INTERVAL="300", EVENTS_QUEUE_URL=queue_url, READY_ATTRIBUTE=ready.ATTRIBUTE,
        )
        figure = ready.Figure(EVENTS, 300.0, 3, offset=0.2)
        ready.trials(local, "bench-ready", env, figure, 2, 1, lambda _message: None)
    assert len(figure.trials) == 2
    for trial in figure.trials:
        assert 0 < trial.desired < trial.running < trial.ready < 5, trial
        assert trial.running - trial.desired >= 0.3 - 0.05, trial
        assert trial.ecs["UpdateService"] == 1 and trial.ecs["PutAttributes"] == 1, trial
        assert trial.sqs["ReceiveMessage"] >= 1, trial
    section = ready.render([figure])
    assert "| events | 300 | 3 | 2 |" in section
    document = ready.replace_section(ready.replace_section("# Results\n", section), section)
    assert document.count(ready.BEGIN) == 1 and document.startswith("# Results")
