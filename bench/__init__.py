"""The benchmark behind `make bench`: API calls, time and memory of the daemon against the local ECS API.

`python -m bench` builds clusters of 10 to 5,000 hosts and 1 to 100 services in
LocalECS (moto behind the layer that enforces real ECS paging), then measures,
for this project's reconcile pass and for the original algorithm re-implemented
in `bench.original`, the API calls of a pass by operation (read from LocalECS's
call log), the wall and CPU time of a pass and the resident memory of the
process running the passes (`bench.driver`, a subprocess, so the moto server's
own work is not counted). It also times `python run.py` itself: start-up to the
first decision, host registration to the updated desiredCount, and resident
memory over 1,000 passes. With events (`bench.events`) it times registration to
desiredCount at INTERVAL=300 against polling at INTERVAL=30, and counts the ECS
and SQS calls of a compressed hour of a steady 1,000-host cluster in both modes.
The results go to stdout and `bench/results.md`.

This package imports nothing at import time, so `python -m bench.driver` starts
with only what the driver itself needs.
"""
