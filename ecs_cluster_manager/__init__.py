"""ecs-cluster-manager: keep one task per host running on Amazon ECS with REPLICA services.

A polling daemon that sets each managed service's desiredCount to the number of
usable container instances in its cluster.
"""

__version__ = "2.0.0"
