"""`python -m localecs`: keep a local ECS API running and change its cluster by hand.

    python -m localecs serve [--port N] [--hosts 3] [--services a,b] [--cluster sandbox] [--events]
                             [--task-events] [--start-after SECONDS]
        start the API, create the cluster, its hosts and services (one task per
        host: distinctInstance), print the `export ...` line for the daemon,
        and stay up until Ctrl-C. With --events, the cluster's "ECS Container
        Instance State Change" events go through EventBridge to an SQS queue,
        whose URL the export line gives as EVENTS_QUEUE_URL; --task-events adds
        its "ECS Task State Change" events (for READY_ATTRIBUTE). With
        --start-after, tasks are placed as soon as something changes, each
        PENDING that many seconds before it is RUNNING, as in ECS; without it,
        at the next read of the cluster, RUNNING at once.
    python -m localecs add-host [--count N] [--attribute KEY=VALUE ...]
    python -m localecs drain|activate|deregister|disconnect|connect [HOST]
        change the cluster of a running server: HOST is a container instance
        ARN or id or an EC2 instance id; without it, the newest host it applies to.
    python -m localecs hosts
        list the hosts with their status and agent state.

The change commands find the server and cluster through AWS_ENDPOINT_URL and
CLUSTER (the exports `serve` prints), or --endpoint and --cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from .server import CONTROL_PATH, LocalECS
from .shell import manager_command, python_command

DEFAULT_CLUSTER = "sandbox"
DEFAULT_SERVICES = "log-shipper,node-agent"
ONE_PER_HOST = [{"type": "distinctInstance"}]
# minimumHealthyPercent 0 / maximumPercent 100: the deployment that works for a one-task-per-host service.
DEPLOYMENT = {"minimumHealthyPercent": 0, "maximumPercent": 100}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m localecs",
        description="A local Amazon ECS API (moto behind a layer that behaves like ECS) and its controls.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 2)[2],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="start the API with a cluster and stay up until Ctrl-C")
    serve.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--cluster", default=DEFAULT_CLUSTER, help=f"cluster name (default {DEFAULT_CLUSTER})")
    serve.add_argument("--hosts", type=int, default=3, help="container instances to register (default 3)")
    serve.add_argument(
        "--services", default=DEFAULT_SERVICES, help=f"services to create, comma-separated (default {DEFAULT_SERVICES})"
    )
    serve.add_argument("--region", default="us-east-1", help="region (default us-east-1)")
    serve.add_argument(
        "--no-schedule",
        dest="schedule",
        action="store_false",
        help="services place no tasks (as in moto); by default each places one per host it may run on",
    )
    serve.add_argument(
        "--events",
        action="store_true",
        help="send the cluster's container instance state-change events to an SQS queue (EVENTS_QUEUE_URL)",
    )
    serve.add_argument(
        "--task-events",
        action="store_true",
        help="with --events, the cluster's task state-change events too (as READY_ATTRIBUTE's rule takes them)",
    )
    serve.add_argument(
        "--start-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="place tasks as soon as something changes, each PENDING this long before it is RUNNING, as ECS does "
        "(default: at the next read, RUNNING at once)",
    )

    def control(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--endpoint", help="the server's URL (default AWS_ENDPOINT_URL)")
        sub.add_argument("--cluster", help="cluster name (default CLUSTER)")
        return sub

    add = control("add-host", "register new hosts")
    add.add_argument("--count", type=int, default=1, help="how many (default 1)")
    add.add_argument("--attribute", action="append", default=[], metavar="KEY=VALUE", help="a custom attribute")
    for name, help_text in (
        ("drain", "set a host DRAINING"),
        ("activate", "set a DRAINING host ACTIVE again"),
        ("deregister", "deregister a host"),
        ("disconnect", "disconnect a host's ECS agent"),
        ("connect", "reconnect a host's ECS agent"),
    ):
        control(name, help_text).add_argument("host", nargs="?", help="ARN, id or EC2 instance id (default: newest)")
    control("hosts", "list the hosts")
    return parser


def serve(args: argparse.Namespace) -> int:
    services = [name for name in args.services.replace(" ", ",").split(",") if name]
    if args.hosts < 0:
        print("python -m localecs serve: --hosts must be >= 0", file=sys.stderr)
        return 2
    if args.start_after is not None and args.start_after < 0:
        print("python -m localecs serve: --start-after must be >= 0", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        local = LocalECS(
            host=args.host, port=args.port, region=args.region, schedule=args.schedule, start_after=args.start_after
        ).start()
    except OSError as error:
        reason = error.strerror or error
        print(f"python -m localecs serve: --port {args.port}: cannot listen: {reason}", file=sys.stderr)
        return 2
    try:
        local.create_cluster(args.cluster)
        local.add_hosts(args.cluster, args.hosts)
        for name in services:
            local.create_service(
                args.cluster, name, placement_constraints=ONE_PER_HOST, deployment_configuration=DEPLOYMENT
            )
        exports = {
            "AWS_ENDPOINT_URL": local.endpoint_url,
            "AWS_REGION": local.region,
            "AWS_DEFAULT_REGION": local.region,  # what the AWS CLI v1 reads
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "CLUSTER": args.cluster,
            "SERVICES": ",".join(services),
        }
        if args.events:
            # After the first hosts: the queue holds only what changes once the daemon may be watching.
            exports["EVENTS_QUEUE_URL"] = local.enable_events(args.cluster, task_events=args.task_events)
        print(f"local ECS API on {local.endpoint_url}: cluster {args.cluster!r}, {args.hosts} host(s), "
              f"service(s) {', '.join(services) or '(none)'} at desiredCount 0", flush=True)
        print("in another shell, paste this and run the daemon (unset AWS_PROFILE if you have one):\n", flush=True)
        print("export " + " ".join(f"{key}={value}" for key, value in exports.items()), flush=True)
        print(f"{manager_command()} --once\n", flush=True)
        print(f"change the cluster meanwhile: {python_command()} -m localecs add-host | drain | "
              "deregister | disconnect | connect | hosts   (Ctrl-C stops the server)", flush=True)
        stop.wait()
        print("\nlocal ECS API stopped", flush=True)
        return 0
    finally:
        local.stop()


def control(args: argparse.Namespace) -> int:
    prog = f"python -m localecs {args.command}"
    endpoint = args.endpoint or os.environ.get("AWS_ENDPOINT_URL")
    cluster = args.cluster or os.environ.get("CLUSTER")
    if not endpoint:
        print(f"{prog}: --endpoint / AWS_ENDPOINT_URL: required (the URL `python -m localecs serve` printed)",
              file=sys.stderr)
        return 2
    if not cluster:
        print(f"{prog}: --cluster / CLUSTER: required", file=sys.stderr)
        return 2
    request: dict[str, Any] = {"cluster": cluster}
    if args.command == "add-host":
        attributes = {}
        for item in args.attribute:
            key, sep, value = item.partition("=")
            if not sep or not key:
                print(f"{prog}: --attribute: expected KEY=VALUE, got {item!r}", file=sys.stderr)
                return 2
            attributes[key] = value
        request.update(count=args.count, attributes=attributes)
    elif args.command != "hosts":
        request["host"] = args.host
    url = endpoint.rstrip("/") + CONTROL_PATH + args.command
    data = json.dumps(request).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST"), timeout=60) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as error:
        try:
            message = str(json.load(error).get("error", error.reason))
        except ValueError:
            message = str(error.reason)
        print(f"{prog}: {message}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        print(f"{prog}: cannot reach the local ECS API at {endpoint}: {reason}", file=sys.stderr)
        return 1
    if args.command == "hosts":
        for host in answer["hosts"]:
            agent = "connected" if host["agentConnected"] else "DISCONNECTED"
            labels = " ".join(f"{k}={v}" for k, v in host["attributes"].items())
            print(f"{host['containerInstanceArn'].rsplit('/', 1)[-1]}  {host['ec2InstanceId']}  "
                  f"{host['status']:<9} agent {agent:<12} {labels}".rstrip())
    elif args.command == "add-host":
        for arn in answer["added"]:
            print(f"added {arn}")
    else:
        print(f"{args.command}: {answer[args.command]} ({answer['ec2InstanceId']})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    return control(args)


if __name__ == "__main__":
    sys.exit(main())
