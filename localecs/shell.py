"""Commands as a user types them in a new shell in the checkout, where the venv is not activated.

`make sandbox` and `make demo` print the daemon's command; a bare
`ecs-cluster-manager` is only on PATH in a shell that activated the venv, so
they print (and the demo runs) the venv's own `.venv/bin/ecs-cluster-manager`.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def here(path: Path) -> str:
    """`path` relative to the working directory when it is below it (`.venv/bin/...`), else absolute."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path.absolute())


def manager_argv() -> list[str]:
    """The daemon's command: this environment's `ecs-cluster-manager`, or the checkout's run.py without it."""
    program = Path(sys.executable).parent / "ecs-cluster-manager"
    if program.exists():
        return [str(program.absolute())]
    return [str(Path(sys.executable).absolute()), str(ROOT / "run.py")]


def manager_command() -> str:
    """manager_argv() as printed for the user: `.venv/bin/ecs-cluster-manager` from the checkout."""
    return " ".join(here(Path(part)) for part in manager_argv())


def python_command() -> str:
    """This environment's python, as printed for the user: `.venv/bin/python` from the checkout."""
    return here(Path(sys.executable))
