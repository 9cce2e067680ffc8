"""A local Amazon ECS API for the tests, `make demo`, `make sandbox` and `make bench`.

moto's server on 127.0.0.1 behind a layer that behaves like real ECS where moto
does not (paging, the 10-service limit, the cluster query language filter,
agent state, cluster counts, attributes, StopTask, a service scheduler,
container instance and task state-change events, fault hooks). It is not part of the product: the
`ecs_cluster_manager` package never imports it, and it is not in the image.
"""

from .server import ApiCall, ApiRequest, Fault, FaultHook, LocalECS, fault_on

__all__ = ["ApiCall", "ApiRequest", "Fault", "FaultHook", "LocalECS", "fault_on"]
