"""The daemon as it was before the API budget, for the storm's comparison: `python -m bench.unbudgeted`.

The same `run.py` with every ecs.Api built without a budget (api_budget=None):
no token taken before a call, so every pass writes every update it decides.
"""

from __future__ import annotations

import sys
from typing import Any

from ecs_cluster_manager import cli
from ecs_cluster_manager.aws import ecs


class Unbudgeted(ecs.Api):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["api_budget"] = None
        super().__init__(*args, **kwargs)


if __name__ == "__main__":
    ecs.Api = Unbudgeted  # type: ignore[misc]  # cli.main imports Api from ecs when it runs
    sys.exit(cli.main([]))
