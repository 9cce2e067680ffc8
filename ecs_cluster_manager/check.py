"""`run.py check`: print the audit of the managed services (engine/audit.py) as a table or JSON.

Exit 1 when any finding is an error, else 0. Makes no change.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, TextIO

from ecs_cluster_manager.aws.ecs import Api
from ecs_cluster_manager.config import Config
from ecs_cluster_manager.engine.audit import ERROR, WARNING, Finding, collect, has_errors
from ecs_cluster_manager.engine.readiness import HostReport
from ecs_cluster_manager.model.coverage import Coverage
from ecs_cluster_manager.model.exits import EXIT_FAILED, EXIT_OK
from ecs_cluster_manager.ops import logs


def as_json(
    cluster: str,
    findings: Sequence[Finding],
    coverages: dict[str, Coverage] | None = None,
    hosts: Sequence[HostReport] | None = None,
) -> str:
    document: dict[str, Any] = {
        "cluster": cluster,
        "ok": not has_errors(findings),
        "findings": [asdict(f) for f in findings],
        "coverage": {name: found.as_json() for name, found in (coverages or {}).items()},
    }
    if hosts is not None:
        document["readiness"] = [host.as_json() for host in hosts]
    return json.dumps(document, indent=2)


def as_table(cluster: str, findings: Sequence[Finding]) -> str:
    """Aligned columns, one finding per line, then a one-line summary."""
    header = ("SERVICE", "SEVERITY", "CODE", "MESSAGE")
    rows = [(f.service or "-", f.severity, f.code, f.message) for f in findings]
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(3)]
    lines = [
        "  ".join([*(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)), row[3]]).rstrip()
        for row in (header, *rows)
    ]
    errors = sum(1 for f in findings if f.severity == ERROR)
    warnings = sum(1 for f in findings if f.severity == WARNING)
    services = len({f.service for f in findings if f.service is not None})
    verdict = "FAILED" if errors else "OK"
    lines.append("")
    lines.append(f"{verdict}: cluster {cluster}, {services} service(s), {errors} error(s), {warnings} warning(s)")
    return "\n".join(lines)


def main(api: Api, config: Config, out: TextIO | None = None) -> int:
    """Print the findings as a table (or JSON with --json); exit 1 when any is an error."""
    out = out or sys.stdout
    # stdout carries the report (JSON must stay parseable), so log lines such as API retries go to stderr.
    logs.configure(config.log_level, config.log_format, stream=sys.stderr)
    coverages: dict[str, Coverage] = {}
    hosts: list[HostReport] = []
    findings = collect(api, config, coverages, hosts)
    text = (
        as_json(config.cluster, findings, coverages, hosts if config.ready_attribute else None)
        if config.json_output
        else as_table(config.cluster, findings)
    )
    try:
        print(text, file=out)
        out.flush()
    except BrokenPipeError:
        # The reader went away (`check --json | head -3`): it has what it wanted. Point stdout at the null
        # device so the interpreter's own flush at exit raises nothing either.
        if out is sys.stdout:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_FAILED if has_errors(findings) else EXIT_OK
