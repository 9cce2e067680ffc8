"""`python -m ecs_cluster_manager`: the same as the `ecs-cluster-manager` command and `python run.py`."""

import sys

from ecs_cluster_manager.cli import main

sys.exit(main())
