#!/usr/bin/env python3
"""ecs-cluster-manager entry point from a checkout or the image: `python run.py [command] [flags]`.

The same as the installed `ecs-cluster-manager` command and `python -m
ecs_cluster_manager`; see ecs_cluster_manager/cli.py for the exit codes.
"""

from __future__ import annotations

import sys

# Imported by the manager at run time; missing ones mean the requirements are not installed.
RUNTIME_MODULES = frozenset({"boto3", "botocore", "structlog", "tenacity", "prometheus_client"})


def _run() -> int:
    try:
        from ecs_cluster_manager.cli import main

        return main()
    except ModuleNotFoundError as error:
        if error.name not in RUNTIME_MODULES:
            raise
        print(
            f"ecs-cluster-manager: error: Python module {error.name!r} is not installed for {sys.executable}; "
            "run `make venv` and use .venv/bin/python, or `pip install -r requirements.txt`, or `pip install .`",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(_run())
