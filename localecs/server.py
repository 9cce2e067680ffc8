"""A local Amazon ECS API for tests, the demo sandbox and benchmarks.

moto's server runs in this process (werkzeug, 127.0.0.1, a free port by
default) behind a WSGI layer that adds what real ECS enforces and moto does not:

- ListContainerInstances: ``maxResults`` 1-100 (default 100), opaque
  ``nextToken`` paging, the ``filter`` evaluated with the cluster query
  language, ClusterNotFoundException for an unknown cluster (moto returns []).
- ListServices: ``maxResults`` 1-100 (default 10), ``nextToken`` paging, and
  only ACTIVE and DRAINING services (moto lists deleted ones too).
- DescribeServices: at most 10 services a call.
- DescribeContainerInstances: at most 100 container instances a call.
- DescribeClusters: ``registeredContainerInstancesCount`` counts the ACTIVE
  and DRAINING instances registered now (moto never lowers it on deregister).
- ListTasks: the ``serviceName`` filter (moto ignores it; a service's tasks
  have the group ``service:NAME``), ``maxResults`` 1-100 and paging.
- DescribeTasks: at most 100 tasks a call, answered without moving moto's
  task state manager on (ECS tasks do not change because they are read).
- CreateService keeps placementConstraints, placementStrategy,
  deploymentConfiguration and capacityProviderStrategy (moto drops them);
  UpdateService with a new taskDefinition starts a new PRIMARY deployment.
- PutAttributes and DeleteAttributes: a target is a container instance's full
  ARN (with or without ``targetType``) or its id with ``targetType``
  ``container-instance`` (moto refuses the ARN with targetType and takes the
  id without it); at most 10 attributes a call and 10 custom attributes a
  host; an unknown target is TargetNotFoundException and nothing of the call
  is applied; DeleteAttributes removes by name (moto only when the value given
  equals the attribute's). DescribeContainerInstances leaves out a missing
  value rather than writing null.
- ListAttributes: filters by name, or by name and value (moto compares the
  value whenever a name is given), refuses a value without a name, and pages
  (``maxResults`` 1-100, default 100, ``nextToken``).
- With ``schedule=True``, services place their tasks on the hosts
  (scheduler.py): one per eligible host with room, placement failures as
  service events, tasks leaving drained and deregistered hosts.
- StopTask: the task is STOPPED with the request's ``reason`` as its
  stoppedReason (a service's task is then started again where one fits); an
  unknown task is InvalidParameterException (moto fails with a server error)
  and a stopped task stays as it is (moto frees its resources again).

With ``enable_events(cluster)``, every change of a container instance also
publishes ECS's "Container Instance State Change" event through EventBridge
to an SQS queue (events.py); with ``task_events=True``, the rule also takes
the "ECS Task State Change" events of tasks started and stopped.

The layer also records every API call (``calls``) and lets a test inject
throttling, server errors and latency (``fault_hook``, ``Fault``,
``fault_on``). Calls made by the world-building helpers of ``LocalECS`` itself
are neither recorded nor faulted, so the log shows only what the code under
test did.

moto, flask and werkzeug come with the development requirements only, so they
are imported when a LocalECS starts, never at import time; nothing else in the
package imports this module.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import datetime
import hashlib
import io
import json
import os
import re
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl

import boto3
from botocore.config import Config

from ecs_cluster_manager.config import VARIABLES

from .events import WATCHED_OPERATIONS, InstanceEvents
from .querylang import Expr, QuerySyntaxError, parse
from .scheduler import Scheduler, rotate_deployments

if TYPE_CHECKING:
    from types import TracebackType

    from werkzeug.serving import BaseWSGIServer

__all__ = ["ApiCall", "ApiRequest", "Fault", "FaultHook", "LocalECS", "fault_on"]

_ECS_TARGET_PREFIX = "AmazonEC2ContainerServiceV20141113"
_JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
# Marks requests made by LocalECS's own helpers: not logged, never faulted.
_HARNESS_HEADER = "X-LocalECS-Harness"
_HARNESS_ENVIRON_KEY = "HTTP_X_LOCALECS_HARNESS"
_DUMMY_CREDENTIAL = "testing"
# Where `python -m localecs add-host|drain|...` reaches a running server (not an AWS API).
CONTROL_PATH = "/localecs/"
# No AMI by that id exists, which moto accepts unless MOTO_ENABLE_AMI_VALIDATION
# is set; the instance then has no platform and ECS reports ecs.os-type linux.
_HOST_IMAGE_ID = "ami-0e1c5ca1e0000000a"
# add_hosts creates and registers hosts in batches, each under the moto lock,
# so requests from a running daemon are served between batches.
_HOST_BATCH = 250
_MAX_PAGE = 100
_DESCRIBE_CONTAINER_INSTANCES_LIMIT = 100
_DESCRIBE_TASKS_LIMIT = 100
_TASK_STATUSES = ("RUNNING", "PENDING", "STOPPED")
# CreateService parameters moto drops (it keeps them from UpdateService): request key -> moto attribute.
_KEPT_ON_CREATE = {
    "placementConstraints": "placement_constraints",
    "placementStrategy": "placement_strategy",
    "deploymentConfiguration": "deployment_configuration",
    "capacityProviderStrategy": "capacity_provider_strategy",
}
# botocore's model (ecs service-2.json), PutAttributes' `attributes`: "You can specify up to 10 custom
# attributes for each resource. You can specify up to 10 attributes in a single call." DeleteAttributes':
# "You can specify up to 10 attributes for each request."
_ATTRIBUTES_PER_CALL = 10
_CUSTOM_ATTRIBUTES_PER_RESOURCE = 10
_TARGET_TYPE = "container-instance"  # the only TargetType in the model
# The model's rules for an Attribute's name and value (1-128 characters; a value neither starts nor ends with a space).
_ATTRIBUTE_NAME_RE = re.compile(r"[A-Za-z0-9_/\\.-]{1,128}")
_ATTRIBUTE_VALUE_RE = re.compile(r"[A-Za-z0-9_.@/\\: -]{1,128}")
_CREDENTIAL_SCOPE_RE = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")


# ---------------------------------------------------------------------------
# Call log and fault injection


@dataclass(frozen=True)
class ApiRequest:
    """What a fault hook sees of a request."""

    service: str  # signing name: "ecs", "cloudformation", "ec2", ...
    operation: str  # "ListContainerInstances"
    params: dict[str, Any]  # JSON body, or the query form as a flat dict


@dataclass(frozen=True)
class ApiCall:
    """One API request as the local ECS answered it."""

    service: str
    operation: str
    params: dict[str, Any]
    status: int  # HTTP status returned to the client
    fault: str | None  # kind of the injected fault ("throttle", "error", "delay"), else None
    # The request's User-Agent header: tells the daemon's calls (suffix
    # "ecs-cluster-manager") from a test's own plain clients. Not compared.
    user_agent: str = field(default="", compare=False)
    at: float = field(default=0.0, compare=False)  # time.time() when it was answered


@dataclass(frozen=True)
class Fault:
    """A failure to inject instead of (or, for ``delay``, before) the real answer.

    Build one with ``Fault.throttle()``, ``Fault.error()`` or ``Fault.delay()``.
    An empty ``code`` means the service's usual code for the kind: for ECS
    ``ThrottlingException`` and ``ServerException``, for EC2
    ``RequestLimitExceeded`` and ``InternalError``, for other query-protocol
    services ``Throttling`` and ``InternalFailure``.
    """

    kind: Literal["throttle", "error", "delay"]
    status: int = 400
    code: str = ""
    message: str = ""
    seconds: float = 0.0

    @classmethod
    def throttle(cls, message: str = "Rate exceeded") -> Fault:
        """HTTP 400 with the service's throttling error (botocore retries it)."""
        return cls("throttle", 400, "", message)

    @classmethod
    def error(cls, status: int = 500, code: str = "", message: str = "Service unavailable") -> Fault:
        """An error reply: by default a 500 server error; any status and code may be given."""
        return cls("error", status, code, message)

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Answer normally, ``seconds`` late."""
        return cls("delay", 200, "", "", seconds)


FaultHook = Callable[[ApiRequest], Fault | None]


def fault_on(
    operation: str,
    fault: Fault,
    *,
    times: int | None = None,
    service: str = "ecs",
) -> FaultHook:
    """A fault hook that injects ``fault`` into calls of one operation.

    ``times`` limits how many calls are faulted (None: every call), which is
    how a test lets a retry succeed.
    """
    remaining = times
    lock = threading.Lock()

    def hook(request: ApiRequest) -> Fault | None:
        nonlocal remaining
        if request.service != service or request.operation != operation:
            return None
        with lock:
            if remaining is not None:
                if remaining <= 0:
                    return None
                remaining -= 1
        return fault

    return hook


# ---------------------------------------------------------------------------
# Replies


class _ApiError(Exception):
    """An error reply in the ECS (JSON protocol) form."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass
class _Reply:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)


def _json_reply(payload: Mapping[str, Any]) -> _Reply:
    headers = [("Content-Type", _JSON_CONTENT_TYPE), ("x-amzn-RequestId", str(uuid.uuid4()))]
    return _Reply(200, json.dumps(payload).encode(), headers)


def _json_error(code: str, message: str, status: int = 400) -> _Reply:
    # botocore's JSON parser reads the code from "__type" and the text from "message".
    body = json.dumps({"__type": code, "message": message}).encode()
    headers = [
        ("Content-Type", _JSON_CONTENT_TYPE),
        ("x-amzn-ErrorType", code),
        ("x-amzn-RequestId", str(uuid.uuid4())),
    ]
    return _Reply(status, body, headers)


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _query_error(service: str, code: str, message: str, status: int) -> _Reply:
    request_id = str(uuid.uuid4())
    if service == "ec2":
        # EC2's own error document, which botocore's ec2 parser expects.
        body = (
            f"<Response><Errors><Error><Code>{code}</Code><Message>{_xml_escape(message)}</Message>"
            f"</Error></Errors><RequestID>{request_id}</RequestID></Response>"
        )
    else:
        error_type = "Sender" if status < 500 else "Receiver"
        body = (
            f"<ErrorResponse><Error><Type>{error_type}</Type><Code>{code}</Code>"
            f"<Message>{_xml_escape(message)}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        )
    return _Reply(status, body.encode(), [("Content-Type", "text/xml")])


def _fault_reply(fault: Fault, service: str, json_protocol: bool) -> _Reply:
    throttle = fault.kind == "throttle"
    if json_protocol:
        code = fault.code or ("ThrottlingException" if throttle else "ServerException")
        return _json_error(code, fault.message, fault.status)
    if service == "ec2":
        default = "RequestLimitExceeded" if throttle else "InternalError"
    else:
        default = "Throttling" if throttle else "InternalFailure"
    return _query_error(service, fault.code or default, fault.message, fault.status)


# ---------------------------------------------------------------------------
# Paging


def _page_size(params: Mapping[str, Any], default: int) -> int:
    value = params.get("maxResults")
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_PAGE:
        raise _ApiError(
            "InvalidParameterException",
            f"maxResults must be an integer between 1 and {_MAX_PAGE}, not {value!r}.",
        )
    return value


def _token_scope(*parts: Any) -> str:
    """A digest of the request parameters a token belongs to."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _read_token(token: Any, scope: str) -> str | None:
    """The ARN a page starts after, or None for the first page."""
    if token is None:
        return None
    try:
        decoded = json.loads(base64.urlsafe_b64decode(str(token).encode()))
        after, token_scope = decoded["after"], decoded["scope"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise _ApiError("InvalidParameterException", "Invalid nextToken.") from None
    if token_scope != scope or not isinstance(after, str):
        # Real ECS refuses a token replayed with other request parameters.
        raise _ApiError(
            "InvalidParameterException",
            "The nextToken does not match the other parameters of the request.",
        )
    return after


def _page(
    arns: list[str],
    after: str | None,
    limit: int,
    scope: str,
    keep: Callable[[str], bool] | None = None,
) -> tuple[list[str], str | None]:
    """One page of the sorted ARNs that ``keep`` accepts and, if more follow, the next token.

    The token names the last ARN returned rather than an offset, so hosts that
    register or leave between pages shift nothing already seen. ``keep`` runs
    only as far as the page (plus one, to know whether another page exists).
    """
    start = 0 if after is None else bisect.bisect_right(arns, after)
    page: list[str] = []
    more = False
    for arn in arns[start:]:
        if keep is not None and not keep(arn):
            continue
        if len(page) == limit:
            more = True
            break
        page.append(arn)
    if not more:
        return page, None
    payload = json.dumps({"after": page[-1], "scope": scope}).encode()
    return page, base64.urlsafe_b64encode(payload).decode()


def _with_token(result: dict[str, Any], token: str | None) -> dict[str, Any]:
    if token is not None:
        result["nextToken"] = token
    return result


# ---------------------------------------------------------------------------
# The WSGI layer


def _credential_scope(environ: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(access key, region, signing name) from a SigV4 Authorization header."""
    match = _CREDENTIAL_SCOPE_RE.search(environ.get("HTTP_AUTHORIZATION", ""))
    if match is None:
        return None, None, None
    return match.group(1), match.group(2), match.group(3)


class _EnforcingApp:
    """WSGI middleware: log, fault, enforce, then hand the request to moto."""

    def __init__(self, owner: LocalECS, moto_app: Any) -> None:
        self.owner = owner
        self.moto_app = moto_app
        self.handlers: dict[str, Callable[[dict[str, Any], dict[str, Any]], _Reply]] = {
            "ListContainerInstances": self.list_container_instances,
            "ListServices": self.list_services,
            "DescribeServices": self.describe_services,
            "DescribeContainerInstances": self.describe_container_instances,
            "DescribeClusters": self.describe_clusters,
            "ListTasks": self.list_tasks,
            "DescribeTasks": self.describe_tasks,
            "CreateService": self.create_service,
            "UpdateService": self.update_service,
            "PutAttributes": self.put_attributes,
            "DeleteAttributes": self.delete_attributes,
            "ListAttributes": self.list_attributes,
            "StopTask": self.stop_task,
        }

    # -- plumbing ----------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = self._read_body(environ)
        if environ.get("PATH_INFO", "").startswith("/moto-api"):
            self.owner.scheduler.changed()
            return self._respond(start_response, self.forward(environ, body))
        if environ.get("PATH_INFO", "").startswith(CONTROL_PATH):
            from .control import handle

            status, payload = handle(self.owner, environ.get("PATH_INFO", "")[len(CONTROL_PATH) :], body)
            reply = _Reply(status, json.dumps(payload).encode(), [("Content-Type", "application/json")])
            return self._respond(start_response, reply)

        target = environ.get("HTTP_X_AMZ_TARGET")
        service, operation, params = self._identify(environ, body, target)
        harness = environ.get(_HARNESS_ENVIRON_KEY) == "1"
        hook = None if harness else self.owner.fault_hook
        fault = hook(ApiRequest(service, operation, params)) if hook is not None else None

        if fault is not None and fault.kind == "delay":
            # Sleep outside the moto lock so other requests go on meanwhile.
            time.sleep(fault.seconds)
        reads = operation.startswith(("Describe", "List"))
        if service == "ecs" and reads and self.owner.scheduler.enabled and (fault is None or fault.kind == "delay"):
            # Lazy scheduling: place and stop tasks before a read shows them (a no-op when nothing changed).
            backend = self.ecs_backend(environ)
            with self.owner._moto_lock:
                self.owner.scheduler.run(backend, str(params.get("cluster") or "default"))
            self.owner.scheduler.publish_events()
        if fault is not None and fault.kind != "delay":
            reply = _fault_reply(fault, service, json_protocol=target is not None)
        elif service == "ecs" and operation in self.handlers:
            try:
                reply = self.handlers[operation](environ, params)
            except _ApiError as error:
                reply = _json_error(error.code, error.message, error.status)
        elif service == "sqs" and operation == "ReceiveMessage" and target is not None:
            reply = self.receive_message(environ, params)
        elif service == "ecs" and operation in WATCHED_OPERATIONS and self.owner.events.active:
            reply = self.owner.events.forward_api_call(self, environ, body, operation, params)
        else:
            reply = self.forward(environ, body)
        if service == "ecs" and not reads:
            self.owner.scheduler.changed()

        if not harness:
            user_agent = str(environ.get("HTTP_USER_AGENT", ""))
            self.owner._record(
                ApiCall(
                    service, operation, params, reply.status, fault.kind if fault else None, user_agent, time.time()
                )
            )
        return self._respond(start_response, reply)

    @staticmethod
    def _read_body(environ: dict[str, Any]) -> bytes:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        environ["wsgi.input"] = io.BytesIO(body)
        return body

    @staticmethod
    def _identify(environ: Mapping[str, Any], body: bytes, target: str | None) -> tuple[str, str, dict[str, Any]]:
        _, _, signing_name = _credential_scope(environ)
        if target is not None:
            prefix, _, operation = target.partition(".")
            service = signing_name or ("ecs" if prefix == _ECS_TARGET_PREFIX else prefix)
            try:
                params = json.loads(body) if body else {}
            except ValueError:
                params = {}
            return service, operation, params if isinstance(params, dict) else {}
        content_type = environ.get("CONTENT_TYPE", "")
        form = body.decode("utf-8", "replace") if content_type.startswith("application/x-www-form-urlencoded") else ""
        query = dict(parse_qsl(form or environ.get("QUERY_STRING", ""), keep_blank_values=True))
        operation = query.get("Action") or f"{environ.get('REQUEST_METHOD', 'GET')} {environ.get('PATH_INFO', '/')}"
        return signing_name or "unknown", operation, query

    def forward(self, environ: dict[str, Any], body: bytes) -> _Reply:
        """Let moto answer the request, with ``body`` as its body."""
        from werkzeug.test import run_wsgi_app

        inner = dict(environ)
        inner["wsgi.input"] = io.BytesIO(body)
        inner["CONTENT_LENGTH"] = str(len(body))
        # moto's backends are plain dicts and lists: one request at a time.
        with self.owner._moto_lock:
            app_iter, status, headers = run_wsgi_app(self.moto_app, inner, buffered=True)
            try:
                data = b"".join(app_iter)
            finally:
                close = getattr(app_iter, "close", None)
                if close is not None:
                    close()
        return _Reply(int(status.split()[0]), data, headers.to_wsgi_list())

    def forward_json(self, environ: dict[str, Any], params: Mapping[str, Any]) -> _Reply:
        return self.forward(environ, json.dumps(params).encode())

    @staticmethod
    def _respond(start_response: Callable[..., Any], reply: _Reply) -> list[bytes]:
        skip = {"content-length", "transfer-encoding"}
        headers = [(name, value) for name, value in reply.headers if name.lower() not in skip]
        headers.append(("Content-Length", str(len(reply.body))))
        try:
            reason = HTTPStatus(reply.status).phrase
        except ValueError:
            reason = "Unknown"
        start_response(f"{reply.status} {reason}", headers)
        return [reply.body]

    def ecs_backend(self, environ: Mapping[str, Any]) -> Any:
        """The moto ECS backend the request is answered from (moto's own account rules)."""
        from moto.ecs.models import ecs_backends
        from moto.iam.models import get_account_id_from

        access_key, region, _ = _credential_scope(environ)
        account = (
            os.environ.get("MOTO_ACCOUNT_ID")
            or environ.get("HTTP_X_MOTO_ACCOUNT_ID")
            or get_account_id_from(access_key or "")
        )
        return ecs_backends[account][region or self.owner.region]

    # -- enforced operations -------------------------------------------------

    def list_container_instances(self, environ: dict[str, Any], params: dict[str, Any]) -> _Reply:
        limit = _page_size(params, self.owner.list_instances_page)
        expression = params.get("filter")
        query: Expr | None = None
        if expression is not None:
            try:
                query = parse(expression)
            except QuerySyntaxError as error:
                raise _ApiError("InvalidParameterException", f"Invalid filter: {error}") from None
        cluster = str(params.get("cluster") or "default").split("/")[-1]
        backend = self.ecs_backend(environ)
        with self.owner._moto_lock:
            if cluster not in backend.clusters:
                raise _ApiError("ClusterNotFoundException", "Cluster not found.")
        scope = _token_scope("ListContainerInstances", cluster, params.get("status"), expression)
        after = _read_token(params.get("nextToken"), scope)

        inner = {k: v for k, v in params.items() if k not in ("filter", "maxResults", "nextToken")}
        reply = self.forward_json(environ, inner)
        if reply.status != 200:
            return reply
        arns = sorted(json.loads(reply.body).get("containerInstanceArns", []))
        if query is None:
            page, token = _page(arns, after, limit, scope)
        else:
            with self.owner._moto_lock:
                page, token = _page(arns, after, limit, scope, self._query_predicate(backend, cluster, query))
        return _json_reply(_with_token({"containerInstanceArns": page}, token))

    @staticmethod
    def _query_predicate(backend: Any, cluster: str, query: Expr) -> Callable[[str], bool]:
        """Whether the container instance with an ARN satisfies the query; call with the moto lock held."""
        instances = backend.container_instances.get(cluster, {})
        groups: dict[str, list[str]] = {}
        if "task:group" in query.subjects:
            for task in backend.tasks.get(cluster, {}).values():
                if task.container_instance_arn and "STOPPED" not in (task.desired_status, task.last_status):
                    groups.setdefault(task.container_instance_arn, []).append(task.group)

        def keep(arn: str) -> bool:
            instance = instances.get(arn.split("/")[-1])
            return instance is not None and query.evaluate(_instance_fields(instance, groups.get(arn, [])))

        return keep

    def list_services(self, environ: dict[str, Any], params: dict[str, Any]) -> _Reply:
        limit = _page_size(params, self.owner.list_services_page)
        cluster = str(params.get("cluster") or "default").split("/")[-1]
        scope = _token_scope("ListServices", cluster, params.get("launchType"), params.get("schedulingStrategy"))
        after = _read_token(params.get("nextToken"), scope)
        inner = {k: v for k, v in params.items() if k not in ("maxResults", "nextToken")}
        reply = self.forward_json(environ, inner)
        if reply.status != 200:
            return reply
        backend = self.ecs_backend(environ)
        with self.owner._moto_lock:
            status = {service.arn: service.status for service in backend.services.values()}
        # Deleted services stay in moto as INACTIVE; ECS lists only live ones.
        arns = sorted(
            arn
            for arn in json.loads(reply.body).get("serviceArns", [])
            if status.get(arn, "ACTIVE") in ("ACTIVE", "DRAINING")
        )
        page, token = _page(arns, after, limit, scope)
        return _json_reply(_with_token({"serviceArns": page}, token))

    def describe_services(self, environ: dict[str, Any], params: dict[str, Any]) -> _Reply:
        services = params.get("services") or []
        limit = self.owner.describe_services_limit
        if len(services) > limit:
            raise _ApiError(
                "InvalidParameterException",
                f"A maximum of {limit} services can be described at a time; {len(services)} were given.",
            )
        return self.forward_json(environ, params)

    def receive_message(self, environ: dict[str, Any], params: dict[str, Any]) -> _Reply:
        """SQS's long poll without holding the moto lock: moto would block every other request meanwhile.

        Asks moto with no wait, and again every 20 ms until a message is there
        or WaitTimeSeconds has passed, as SQS itself returns as soon as one arrives.
        """
        wait = params.get("WaitTimeSeconds") or 0
        deadline = time.monotonic() + (wait if isinstance(wait, int | float) and not isinstance(wait, bool) else 0)
        if isinstance(wait, int) and not isinstance(wait, bool) and 0 <= wait <= 20:
            params = {**params, "WaitTimeSeconds": 0}
        while True:
            reply = self.forward_json(environ, params)
            if reply.status != 200 or json.loads(reply.body or b"{}").get("Messages") or time.monotonic() >= deadline:
                return reply
            time.sleep(0.02)

    def describe_clusters(self, environ: dict[str, Any], params: dict[str, Any]) -> _Reply:
        """moto's answer with the counts ECS gives: registeredContainerInstancesCount is ACTIVE plus DRAINING.

        moto never lowers it when an instance is deregistered; ECS counts the
        instances registered now.
        """
        reply = self.forward_json(environ, params)
        if reply.status != 200:
            return reply
        answer = json.loads(reply.body)
        backend = self.ecs_backend(environ)
        with self.owner._moto_lock:
            for cluster in answer.get("clusters", []):
                instances = backend.container_instances.get(cluster.get("clusterName", ""), {}).values()
                cluster["registeredContainerInstancesCount"] = sum(
                    1 for instance in instances if instance.status in ("ACTIVE", "DRAINING")
                )
        return _json_reply(answer)

    def list_tasks(self, environ: dict[str, Any], params: dict[str, Any]) -> _Reply:
        """ListTasks as ECS answers it: the filters moto ignores (serviceName), maxResults and nextToken paging."""
        limit = _page_size(params, _MAX_PAGE)
        cluster = str(params.get("cluster") or "default").split("/")[-1]
        desired = params.get("desiredStatus") or "RUNNING"
        if desired not in _TASK_STATUSES:
            raise _ApiError("InvalidParameterException", f"desiredStatus must be one of {_TASK_STATUSES}: {desired}")
        service_name = params.get("serviceName")
        group = f"service:{str(service_name).split('/')[-1]}" if service_name else None
        instance = str(params.get("containerInstance") or "").split("/")[-1] or None
        family = params.get("family")
        started_by = params.get("startedBy")
        scope = _token_scope("ListTasks", cluster, desired, service_name, instance, family, started_by)
        after = _read_token(params.get("nextToken"), scope)
        backend = self.ecs_backend(environ)
        with self.owner._moto_lock:
            if cluster not in backend.clusters:
                raise _ApiError("ClusterNotFoundException", "Cluster not found.")
            if group is not None and f"{cluster}:{group.split(':', 1)[1]}" not in backend.services:
                raise _ApiError("ServiceNotFoundException", "Service not found.")
            arns = sorted(
                task.task_arn
                for task in backend.tasks.get(cluster, {}).values()
                if task.desired_status == desired
                and (group is None or task.group == group)
                and (instance is None or (task.container_instance_arn or "").endswith(f"/{instance}"))
                and (family is None or task.task_definition_arn.split("/")[-1].split(":")[0] == family)
                and (started_by is None or task.started_by == started_by)
            )
        page, token = _page(arns, after, limit, scope)
        return _json_reply(_with_token({"taskArns": page}, token))

    def describe_tasks(self, environ: dict[str, Any], params: dict[str, Any]) -> _Reply:
        """DescribeTasks with ECS's limit of 100, answered without moving the task state on (ECS does not)."""
        wanted = params.get("tasks") or []
        if not wanted:
            raise _ApiError("InvalidParameterException", "Tasks cannot be empty.")
        if len(wanted) > _DESCRIBE_TASKS_LIMIT:
            raise _ApiError(
                "InvalidParameterException",
                f"A maximum of {_DESCRIBE_TASKS_LIMIT} tasks can be described at a time; {len(wanted)} were given.",
            )
        cluster = str(params.get("cluster") or "default").split("/")[-1]
        backend = self.ecs_backend(environ)
        found: list[dict[str, Any]] = []
        failures: list[dict[str, str]] = []
        with self.owner._moto_lock:
            if cluster not in backend.clusters:
                raise _ApiError("ClusterNotFoundException", "Cluster not found.")
            by_id = {task.task_arn.split("/")[-1]: task for task in backend.tasks.get(cluster, {}).values()}
            for reference in wanted:
                task = by_id.get(str(reference).split("/")[-1])
                if task is None:
                    failures.append({"arn": str(reference), "reason": "MISSING"})
                else:
                    found.append(_task_json(task))
        return _json_reply({"tasks": found, "failures": failures})

    def stop_task(self, environ: dict[str, Any], params: dict[str, Any]) -> _Reply:
        """StopTask as ECS answers it: the task is STOPPED with the request's reason as its stoppedReason.

        An unknown task is an InvalidParameterException (moto fails with a
        server error), and stopping a stopped task changes nothing (moto gives
        its CPU and memory back to the host a second time). The scheduler
        replaces a service's task at its next run; with events enabled the
        host's and (with task events) the task's state-change events are
        published.
        """
        reference = str(params.get("task") or "").split("/")[-1]
        if not reference:
            raise _ApiError("InvalidParameterException", "task is required.")
        pending = []
        events = self.owner.events
        with self.owner._moto_lock:
            backend = self.ecs_backend(environ)
            cluster = str(params.get("cluster") or "default").split("/")[-1]
            if cluster not in backend.clusters:
                raise _ApiError("ClusterNotFoundException", "Cluster not found.")
            task = next((t for t in backend.tasks.get(cluster, {}).values() if t.task_arn.endswith(f"/{reference}")),
                        None)
            if task is None:
                raise _ApiError("InvalidParameterException", "The referenced task was not found.")
            if "STOPPED" not in (task.last_status, task.desired_status):
                instance = backend.container_instances.get(cluster, {}).get(
                    (task.container_instance_arn or "").split("/")[-1]
                )
                if instance is not None or not task.container_instance_arn:
                    backend.stop_task(cluster, task.task_arn, params.get("reason"))
                else:  # its host is deregistered: moto's stop_task would fail looking it up
                    task.last_status = task.desired_status = "STOPPED"
                    task.stopped_reason = params.get("reason")
                task.stop_code = "UserInitiated"
                task.stopped_at = datetime.datetime.now(datetime.UTC)
                if instance is not None and events.active:
                    pending.append(events.capture(instance, str(backend.clusters[cluster].arn)))
                if events.task_events_active:
                    pending.append(events.capture_task(task))
            answer = {"task": _task_json(task)}
        events.publish(pending)
        return _json_reply(answer)

    def create_service(self, environ: dict[str, Any], params: dict[str, Any]) -> _Reply:
        """moto's CreateService, keeping what it drops: placement constraints and strategy, deployment
        configuration, capacity provider strategy (ECS returns and keeps them)."""
        reply = self.forward_json(environ, params)
        if reply.status != 200:
            return reply
        answer = json.loads(reply.body)
        arn = answer.get("service", {}).get("serviceArn")
        backend = self.ecs_backend(environ)
        with self.owner._moto_lock:
            service = next((s for s in backend.services.values() if s.arn == arn), None)
            if service is None:
                return reply
            for key, attribute in _KEPT_ON_CREATE.items():
                if params.get(key) is not None:
                    setattr(service, attribute, params[key])
                    answer["service"][key] = params[key]
        return _json_reply(answer)

    def update_service(self, environ: dict[str, Any], params: dict[str, Any]) -> _Reply:
        """moto's UpdateService; a new taskDefinition also starts a new PRIMARY deployment, as in ECS."""
        reply = self.forward_json(environ, params)
        if reply.status != 200 or not params.get("taskDefinition"):
            return reply
        answer = json.loads(reply.body)
        arn = answer.get("service", {}).get("serviceArn")
        backend = self.ecs_backend(environ)
        with self.owner._moto_lock:
            service = next((s for s in backend.services.values() if s.arn == arn), None)
            if service is None:
                return reply
            rotate_deployments(backend, service)
            answer["service"]["taskDefinition"] = service.task_definition
        return _json_reply(answer)

    def describe_container_instances(self, environ: dict[str, Any], params: dict[str, Any]) -> _Reply:
        instances = params.get("containerInstances") or []
        if len(instances) > _DESCRIBE_CONTAINER_INSTANCES_LIMIT:
            raise _ApiError(
                "InvalidParameterException",
                f"A maximum of {_DESCRIBE_CONTAINER_INSTANCES_LIMIT} container instances can be "
                f"described at a time; {len(instances)} were given.",
            )
        reply = self.forward_json(environ, params)
        if reply.status != 200:
            return reply
        # ECS gives each instance its `version` (the events' detail.version) and its agent's state.
        answer = json.loads(reply.body)
        for described in answer.get("containerInstances", []):
            arn = str(described.get("containerInstanceArn", ""))
            described["version"] = self.owner.events.version(arn)
            described["agentConnected"] = bool(described.get("agentConnected", True))
            # moto writes an attribute without a value as "value": null; ECS leaves the key out.
            described["attributes"] = [
                {k: v for k, v in item.items() if v is not None} for item in described.get("attributes") or []
            ]
        return _json_reply(answer)

    # -- attributes (moto's PutAttributes, DeleteAttributes and ListAttributes differ from ECS) ---------

    def _attribute_cluster(self, environ: dict[str, Any], params: Mapping[str, Any]) -> tuple[Any, str]:
        """The backend and the name of the request's cluster ("default" when none is given); call with the lock."""
        backend = self.ecs_backend(environ)
        cluster = str(params.get("cluster") or "default").split("/")[-1]
        if cluster not in backend.clusters:
            raise _ApiError("ClusterNotFoundException", "Cluster not found.")
        return backend, cluster

    @staticmethod
    def _attribute_list(params: Mapping[str, Any]) -> list[dict[str, Any]]:
        attributes = params.get("attributes")
        if not isinstance(attributes, list) or not attributes:
            raise _ApiError("InvalidParameterException", "Attributes cannot be empty.")
        if len(attributes) > _ATTRIBUTES_PER_CALL:
            raise _ApiError(
                "InvalidParameterException",
                f"A maximum of {_ATTRIBUTES_PER_CALL} attributes can be given in a call; {len(attributes)} were given.",
            )
        return [dict(item) if isinstance(item, dict) else {} for item in attributes]

    @staticmethod
    def _attribute_target(backend: Any, cluster: str, attribute: Mapping[str, Any]) -> Any:
        """The container instance an attribute's targetId names: its full ARN, or its id with targetType.

        As the model documents targetType: "This parameter is required if you
        use the short form ID for a resource instead of the full ARN." moto
        takes an id without targetType, and refuses a full ARN with it.
        """
        target_id = attribute.get("targetId")
        target_type = attribute.get("targetType")
        if target_type is not None and target_type != _TARGET_TYPE:
            raise _ApiError("InvalidParameterException", f"targetType must be {_TARGET_TYPE}, not {target_type!r}.")
        if not target_id or not isinstance(target_id, str):
            raise _ApiError("InvalidParameterException", "targetId is required for each attribute.")
        is_arn = target_id.startswith("arn:")
        if not is_arn and target_type is None:
            raise _ApiError(
                "InvalidParameterException",
                f"targetType is required when targetId is a short form ID: {target_id!r}.",
            )
        instance = backend.container_instances.get(cluster, {}).get(target_id.rsplit("/", 1)[-1])
        if instance is None or (is_arn and instance.container_instance_arn != target_id):
            raise _ApiError("TargetNotFoundException", f"Could not find {target_id}.")
        return instance

    def put_attributes(self, environ: dict[str, Any], params: dict[str, Any]) -> _Reply:
        """PutAttributes as ECS answers it: every target and attribute is checked before any is set."""
        attributes = self._attribute_list(params)
        with self.owner._moto_lock:
            backend, cluster = self._attribute_cluster(environ, params)
            changes: list[tuple[Any, str, str | None]] = []
            for attribute in attributes:
                name, value = attribute.get("name"), attribute.get("value")
                if not isinstance(name, str) or not _ATTRIBUTE_NAME_RE.fullmatch(name):
                    raise _ApiError("InvalidParameterException", f"Invalid attribute name: {name!r}.")
                if value is not None and (
                    not isinstance(value, str) or not _ATTRIBUTE_VALUE_RE.fullmatch(value) or value != value.strip()
                ):
                    raise _ApiError("InvalidParameterException", f"Invalid value for attribute {name}: {value!r}.")
                changes.append((self._attribute_target(backend, cluster, attribute), name, value))
            for instance in {id(instance): instance for instance, _, _ in changes}.values():
                custom = {name for name in instance.attributes if not name.startswith("ecs.")}
                custom |= {name for target, name, _ in changes if target is instance and not name.startswith("ecs.")}
                if len(custom) > _CUSTOM_ATTRIBUTES_PER_RESOURCE:
                    raise _ApiError(
                        "AttributeLimitExceededException",
                        f"{instance.container_instance_arn} would have {len(custom)} custom attributes; "
                        f"at most {_CUSTOM_ATTRIBUTES_PER_RESOURCE} are allowed.",
                    )
            for instance, name, value in changes:
                instance.attributes[name] = value
        return _json_reply({"attributes": params["attributes"]})

    def delete_attributes(self, environ: dict[str, Any], params: dict[str, Any]) -> _Reply:
        """DeleteAttributes as ECS answers it: an attribute goes by name, whatever its value.

        The model: "For custom attributes, specify the attribute name and
        target ID, but don't specify the value." moto deletes an attribute
        only when the value given equals the attribute's, so a delete without
        a value leaves an attribute that has one.
        """
        attributes = self._attribute_list(params)
        with self.owner._moto_lock:
            backend, cluster = self._attribute_cluster(environ, params)
            targets = [(self._attribute_target(backend, cluster, a), str(a.get("name") or "")) for a in attributes]
            for instance, name in targets:
                instance.attributes.pop(name, None)
        return _json_reply({"attributes": params["attributes"]})

    def list_attributes(self, environ: dict[str, Any], params: dict[str, Any]) -> _Reply:
        """ListAttributes as ECS answers it: filtered by name, or by name and value; maxResults and nextToken.

        moto compares the value to attributeValue whenever a name is given (so
        a name alone finds only attributes without a value), ignores a value
        without a name, and never pages.
        """
        limit = _page_size(params, _MAX_PAGE)
        target_type = params.get("targetType")
        if target_type != _TARGET_TYPE:
            raise _ApiError("InvalidParameterException", f"targetType must be {_TARGET_TYPE}, not {target_type!r}.")
        name, value = params.get("attributeName"), params.get("attributeValue")
        if value is not None and name is None:
            # The model: "You must also specify an attribute name to use this parameter."
            raise _ApiError("InvalidParameterException", "attributeValue requires attributeName.")
        with self.owner._moto_lock:
            backend, cluster = self._attribute_cluster(environ, params)
            scope = _token_scope("ListAttributes", cluster, target_type, name, value)
            after = _read_token(params.get("nextToken"), scope)
            found: dict[str, dict[str, Any]] = {}
            for instance in backend.container_instances.get(cluster, {}).values():
                for key, current in dict(instance.attributes).items():
                    if (name is not None and key != name) or (value is not None and current != value):
                        continue
                    item = {"name": key, "targetId": instance.container_instance_arn, "targetType": _TARGET_TYPE}
                    if current is not None:
                        item["value"] = current
                    found[f"{instance.container_instance_arn}\n{key}"] = item
        page, token = _page(sorted(found), after, limit, scope)
        return _json_reply(_with_token({"attributes": [found[key] for key in page]}, token))


def _instance_fields(instance: Any, task_groups: list[str]) -> dict[str, Any]:
    """A moto ContainerInstance in the shape the query evaluator reads."""
    return {
        "agentConnected": instance.agent_connected,
        "versionInfo": dict(instance.version_info),
        "attributes": dict(instance.attributes),
        "ec2InstanceId": instance.ec2_instance_id,
        "registeredAt": instance.registered_at,
        "runningTasksCount": instance.running_tasks_count,
        "taskGroups": task_groups,
    }


def _epoch(value: Any) -> float | None:
    timestamp = getattr(value, "timestamp", None)
    return float(timestamp()) if callable(timestamp) else None


def _task_json(task: Any) -> dict[str, Any]:
    """A moto Task in DescribeTasks' shape (the fields the project and its tests read)."""
    document: dict[str, Any] = {
        "taskArn": task.task_arn,
        "clusterArn": task.cluster_arn,
        "taskDefinitionArn": task.task_definition_arn,
        "lastStatus": task.last_status,
        "desiredStatus": task.desired_status,
        "group": task.group,
        "startedBy": task.started_by,
        "launchType": task.launch_type or "EC2",
        "containers": [],
        "tags": list(task.tags or []),
    }
    if task.container_instance_arn:
        document["containerInstanceArn"] = task.container_instance_arn
    started = _epoch(getattr(task, "started_at", None))
    if started is not None:
        document["startedAt"] = started
    created = _epoch(getattr(task, "created_at", None))
    if created is not None or started is not None:
        document["createdAt"] = created if created is not None else started
    if task.stopped_reason:
        document["stoppedReason"] = task.stopped_reason
    stopped = _epoch(getattr(task, "stopped_at", None))
    if stopped is not None:
        document["stoppedAt"] = stopped
    if getattr(task, "stop_code", None):
        document["stopCode"] = task.stop_code
    return document


def _mark_harness(request: Any, **_: Any) -> None:
    request.headers[_HARNESS_HEADER] = "1"


# ---------------------------------------------------------------------------
# LocalECS


class LocalECS:
    """moto's server plus the enforcing layer, on a local port, with world-building helpers.

    Use as a context manager or call ``start()`` and ``stop()``. ``reset()``
    empties every moto backend of this process (moto keeps them in globals),
    the call log and the fault hook.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        region: str = "us-east-1",
        *,
        list_instances_page: int = 100,
        describe_services_limit: int = 10,
        list_services_page: int = 10,
        default_amis: bool = False,
        schedule: bool = False,
        start_after: float | None = None,
    ) -> None:
        """Configure, without starting.

        ``default_amis=False`` sets MOTO_EC2_LOAD_DEFAULT_AMIS=false for this
        process while the server runs (unless already set): moto matches each
        new EC2 instance against its ~1,300 default AMIs, which makes
        ``add_hosts`` several times slower, and nothing here needs them.

        ``schedule=True`` makes services place their tasks (scheduler.py);
        off by default, services have no tasks, as in moto. ``reset()`` puts
        it back to this value. ``start_after`` (seconds, with ``schedule``)
        also places tasks from a background thread as soon as something
        changes, each PENDING that long before it is RUNNING, as ECS does
        without being asked; by default tasks are placed at the next read of
        the cluster, RUNNING at once.
        """
        self.host = host
        self.port = port
        self.region = region
        self.list_instances_page = list_instances_page
        self.describe_services_limit = describe_services_limit
        self.list_services_page = list_services_page
        self.default_amis = default_amis
        self.fault_hook: FaultHook | None = None
        self.account_id = ""
        self._calls: list[ApiCall] = []
        self._calls_lock = threading.Lock()
        # Held around every request moto answers and every in-process change
        # to its backends; re-entrant so a handler may forward while holding it.
        self._moto_lock = threading.RLock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._endpoint_url: str | None = None
        # True when start() set MOTO_EC2_LOAD_DEFAULT_AMIS, so stop() removes it.
        self._set_amis_setting = False
        self._clients: dict[str, Any] = {}
        self._zones: list[str] | None = None
        # ECS state-change events to SQS, off until enable_events().
        self.events = InstanceEvents(self)
        self._schedule = schedule
        self.scheduler = Scheduler(self, enabled=schedule)
        self.start_after = start_after

    # -- lifecycle -----------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        """``http://HOST:PORT`` of the running server."""
        if self._endpoint_url is None:
            raise RuntimeError("LocalECS is not started")
        return self._endpoint_url

    def start(self) -> LocalECS:
        """Start serving in a daemon thread; return self."""
        if self._server is not None:
            return self
        from moto.server import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        if not self.default_amis and "MOTO_EC2_LOAD_DEFAULT_AMIS" not in os.environ:
            self._set_amis_setting = True
            os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"

        moto_app = DomainDispatcherApplication(create_backend_app)
        app = _EnforcingApp(self, moto_app)
        self._server = make_server(self.host, self.port, app, threaded=True, request_handler=_request_handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="localecs", daemon=True)
        self._thread.start()
        self._endpoint_url = f"http://{self.host}:{self._server.server_port}"
        identity = self._admin_client("sts").get_caller_identity()
        self.account_id = identity["Account"]
        if self.start_after is not None:
            self.scheduler.start_background(self.start_after)
        return self

    def stop(self) -> None:
        """Stop the server and wait for its thread."""
        self.scheduler.stop_background()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None
        self._endpoint_url = None
        self._clients.clear()
        if self._set_amis_setting:
            os.environ.pop("MOTO_EC2_LOAD_DEFAULT_AMIS", None)
            self._set_amis_setting = False

    def __enter__(self) -> LocalECS:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def reset(self) -> None:
        """Empty moto's state, the call log, the fault hook and the event subscriptions."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
        self.fault_hook = None
        self.events.clear()
        self.scheduler.reset(self._schedule)
        self.clear_calls()

    # -- call log ------------------------------------------------------------

    def _record(self, call: ApiCall) -> None:
        with self._calls_lock:
            self._calls.append(call)

    @property
    def calls(self) -> list[ApiCall]:
        """A copy of the calls made so far (helpers' own calls excluded)."""
        with self._calls_lock:
            return list(self._calls)

    def calls_since(self, start: int) -> list[ApiCall]:
        """The calls recorded from index `start` on (``len(calls)`` taken earlier), without copying the rest."""
        with self._calls_lock:
            return self._calls[start:]

    @property
    def calls_recorded(self) -> int:
        """How many calls the log holds: an index for calls_since()."""
        with self._calls_lock:
            return len(self._calls)

    def clear_calls(self) -> None:
        """Forget the calls recorded so far."""
        with self._calls_lock:
            self._calls.clear()

    def count(self, operation: str, service: str = "ecs") -> int:
        """How many calls of one operation were made."""
        with self._calls_lock:
            return sum(1 for call in self._calls if call.operation == operation and call.service == service)

    # -- clients and environment ----------------------------------------------

    def client(self, service: str = "ecs", *, config: Config | None = None) -> Any:
        """A plain boto3 client for the local endpoint (its calls are logged and can be faulted)."""
        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=_DUMMY_CREDENTIAL,
            aws_secret_access_key=_DUMMY_CREDENTIAL,
            config=config,
        )

    def _admin_client(self, service: str) -> Any:
        """A cached client for the helpers, marked so the layer neither logs nor faults it."""
        client = self._clients.get(service)
        if client is None:
            client = self.client(service, config=Config(retries={"mode": "standard", "max_attempts": 3}))
            client.meta.events.register("before-sign", _mark_harness)
            self._clients[service] = client
        return client

    def env(self) -> dict[str, str]:
        """The environment for a subprocess that should talk to this local ECS.

        A copy of this process's environment without any AWS_* setting (no
        profile, no real credentials, no other endpoint), without the manager's
        own settings (config.VARIABLES) or the ECS task metadata endpoint, plus
        the endpoint, region and dummy credentials. The AWS config and
        credentials files are pointed at the null device so nothing from the
        home directory leaks in.
        """
        dropped = set(VARIABLES) | {"ECS_CONTAINER_METADATA_URI_V4"}
        environment = {
            key: value for key, value in os.environ.items() if not key.startswith("AWS_") and key not in dropped
        }
        environment.update(
            {
                "AWS_ENDPOINT_URL": self.endpoint_url,
                "AWS_REGION": self.region,
                "AWS_DEFAULT_REGION": self.region,
                "AWS_ACCESS_KEY_ID": _DUMMY_CREDENTIAL,
                "AWS_SECRET_ACCESS_KEY": _DUMMY_CREDENTIAL,
                "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "AWS_EC2_METADATA_DISABLED": "true",
            }
        )
        return environment

    # -- in-process backends -----------------------------------------------------

    def _backends(self) -> tuple[Any, Any]:
        from moto.ec2.models import ec2_backends
        from moto.ecs.models import ecs_backends

        return ecs_backends[self.account_id][self.region], ec2_backends[self.account_id][self.region]

    def _container_instance(self, cluster: str, container_instance_arn: str) -> Any:
        ecs_backend, _ = self._backends()
        instances = ecs_backend.container_instances.get(cluster.split("/")[-1], {})
        instance = instances.get(container_instance_arn.split("/")[-1])
        if instance is None:
            raise LookupError(f"no container instance {container_instance_arn} in cluster {cluster}")
        return instance

    def _availability_zones(self) -> list[str]:
        if self._zones is None:
            zones = self._admin_client("ec2").describe_availability_zones()["AvailabilityZones"]
            self._zones = sorted(zone["ZoneName"] for zone in zones)[:3]
        return self._zones

    # -- world building --------------------------------------------------------

    def create_cluster(self, name: str) -> str:
        """Create a cluster; return its ARN."""
        return str(self._admin_client("ecs").create_cluster(clusterName=name)["cluster"]["clusterArn"])

    def add_hosts(
        self,
        cluster: str,
        count: int,
        *,
        attributes: dict[str, str] | None = None,
        instance_type: str = "t3.medium",
        availability_zones: list[str] | None = None,
        reserved_memory: int = 0,
        memory: int | None = None,
        cpu: int | None = None,
    ) -> list[str]:
        """Launch ``count`` EC2 instances and register them with the cluster; return their ARNs.

        ``reserved_memory`` MiB of each host are taken from the start, as by
        tasks placed there before any service's (``task_stopped`` frees them).
        ``memory`` (MiB) and ``cpu`` (units) register a host of another size
        than moto's one (7,482 MiB, 4,096 units), as a smaller or larger
        instance type of a mixed group would.

        Hosts are spread over ``availability_zones`` (default: the region's
        first three). Like real ECS, each carries the ``ecs.instance-type``,
        ``ecs.availability-zone``, ``ecs.os-type`` and ``ecs.ami-id``
        attributes; ``attributes`` adds custom ones.

        This goes to moto's backends in this process, not through the API:
        RunInstances over HTTP spends ~4 s per 1,000 hosts serialising its XML
        answer and RegisterContainerInstance ~7 ms a call, while in process
        5,000 hosts take about 10 s (moto finds an EC2 instance by scanning
        them all, so the cost grows with the square of the count).
        """
        if count < 0:
            raise ValueError("count must not be negative")
        cluster_name = cluster.split("/")[-1]
        zones = availability_zones or self._availability_zones()
        per_zone = [count // len(zones) + (1 if index < count % len(zones) else 0) for index in range(len(zones))]
        ecs_backend, ec2_backend = self._backends()
        arns: list[str] = []
        for zone, zone_count in zip(zones, per_zone, strict=True):
            for start in range(0, zone_count, _HOST_BATCH):
                batch = min(_HOST_BATCH, zone_count - start)
                events = []
                with self._moto_lock:
                    if cluster_name not in ecs_backend.clusters:
                        raise LookupError(f"no cluster {cluster!r}")
                    reservation = ec2_backend.run_instances(
                        _HOST_IMAGE_ID, batch, None, [], **_run_instances_arguments(self.region, zone, instance_type)
                    )
                    for ec2_instance in reservation.instances:
                        registered = ecs_backend.register_container_instance(cluster_name, ec2_instance.id)
                        registered.attributes.update(attributes or {})
                        _resize(registered, memory, cpu)
                        if reserved_memory:
                            ecs_backend.update_container_instance_resources(
                                registered, {"CPU": 0, "MEMORY": reserved_memory, "PORTS": []}
                            )
                        arns.append(registered.container_instance_arn)
                        if self.events.active:
                            cluster_arn = ecs_backend.clusters[cluster_name].arn
                            events.append(self.events.capture(registered, cluster_arn))
                self.events.publish(events)
                self.scheduler.changed()
        return arns

    def hosts(self, cluster: str) -> list[dict[str, Any]]:
        """Every registered container instance of the cluster, oldest first: ARN, EC2 id, status, agent, attributes."""
        ecs_backend, _ = self._backends()
        with self._moto_lock:
            instances = list(ecs_backend.container_instances.get(cluster.split("/")[-1], {}).values())
            return [
                {
                    "containerInstanceArn": instance.container_instance_arn,
                    "ec2InstanceId": instance.ec2_instance_id,
                    "status": instance.status,
                    "agentConnected": bool(instance.agent_connected),
                    "attributes": {
                        name: value for name, value in dict(instance.attributes).items() if not name.startswith("ecs.")
                    },
                }
                for instance in sorted(instances, key=lambda instance: instance.registered_at)
            ]

    def set_agent_connected(self, cluster: str, container_instance_arn: str, connected: bool) -> None:
        """Mark a host's ECS agent connected or disconnected (ECS has no API for it).

        With events enabled, each connect and disconnect is an event, as in
        ECS (where agents reconnect several times an hour); setting the state
        a host already has is not.
        """
        events = []
        with self._moto_lock:
            instance = self._container_instance(cluster, container_instance_arn)
            changed = bool(instance.agent_connected) != connected
            instance.agent_connected = connected
            if changed and self.events.active:
                events.append(self.events.capture(instance, self._cluster_arn(cluster)))
            elif changed:
                self.events.bump(container_instance_arn)  # the version moves with or without a rule
            self.scheduler.changed()
        self.events.publish(events)

    def task_placed(self, cluster: str, container_instance_arn: str, *, cpu: int = 128, memory: int = 32) -> None:
        """Take a task's CPU and memory from a host's remainingResources, as a placement does.

        No task is created; the host's runningTasksCount goes up by one. With
        events enabled this publishes the event ECS sends for every placement
        (status and agent unchanged), which a consumer must not mistake for a
        change in the number of usable hosts.
        """
        self._task_resources(cluster, container_instance_arn, cpu, memory, stopped=False)

    def task_stopped(self, cluster: str, container_instance_arn: str, *, cpu: int = 128, memory: int = 32) -> None:
        """Give a task's CPU and memory back to a host, as a task stopping does (the reverse of task_placed)."""
        self._task_resources(cluster, container_instance_arn, cpu, memory, stopped=True)

    def _task_resources(
        self, cluster: str, container_instance_arn: str, cpu: int, memory: int, *, stopped: bool
    ) -> None:
        ecs_backend, _ = self._backends()
        events = []
        with self._moto_lock:
            instance = self._container_instance(cluster, container_instance_arn)
            ecs_backend.update_container_instance_resources(
                instance, {"CPU": cpu, "MEMORY": memory, "PORTS": []}, removing=stopped
            )
            if self.events.active:
                events.append(self.events.capture(instance, self._cluster_arn(cluster)))
            self.scheduler.changed()
        self.events.publish(events)

    def _cluster_arn(self, cluster: str) -> str:
        ecs_backend, _ = self._backends()
        return str(ecs_backend.clusters[cluster.split("/")[-1]].arn)

    # -- ECS state-change events -------------------------------------------------

    def enable_events(self, cluster: str, *, task_events: bool = False) -> str:
        """Deliver the cluster's "ECS Container Instance State Change" events to an SQS queue; return its URL.

        Creates (or finds) the queue and an EventBridge rule with ECS's event
        pattern for the cluster, targeting it. From then on every change of a
        container instance (in any cluster; the rule picks this one's) is
        published with PutEvents. With ``task_events`` the rule also takes
        "ECS Task State Change" events, which are then published for every
        task the scheduler starts and every task that stops (events.py).
        Idempotent; reset() undoes it.
        """
        return self.events.enable(cluster, task_events=task_events)

    def disable_events(self, cluster: str) -> None:
        """Delete the cluster's rule and queue; with no cluster left, nothing is published."""
        self.events.disable(cluster)

    def last_event(self, container_instance_arn: str) -> dict[str, Any] | None:
        """The last event document published for a host, as its queue delivered it (None if none)."""
        return self.events.last_event(container_instance_arn)

    def send_raw_event(self, queue_url: str, body: str | Mapping[str, Any]) -> str:
        """Put any message body on a queue (a mapping as JSON): duplicates, stale versions, garbage.

        Returns the SQS MessageId. The call is the harness's own: not logged.
        """
        return self.events.send_raw(queue_url, body)

    def set_attributes(self, cluster: str, container_instance_arn: str, attributes: Mapping[str, str]) -> None:
        """Set custom attributes on one host (PutAttributes)."""
        self._admin_client("ecs").put_attributes(
            cluster=cluster,
            attributes=[
                {"name": name, "value": value, "targetId": container_instance_arn} for name, value in attributes.items()
            ],
        )

    def drain(self, cluster: str, container_instance_arn: str) -> None:
        """Set a host DRAINING."""
        self._admin_client("ecs").update_container_instances_state(
            cluster=cluster, containerInstances=[container_instance_arn], status="DRAINING"
        )

    def activate(self, cluster: str, container_instance_arn: str) -> None:
        """Set a host ACTIVE again."""
        self._admin_client("ecs").update_container_instances_state(
            cluster=cluster, containerInstances=[container_instance_arn], status="ACTIVE"
        )

    def deregister(self, cluster: str, container_instance_arn: str) -> None:
        """Deregister a host, running tasks or not (moto then forgets it entirely)."""
        self._admin_client("ecs").deregister_container_instance(
            cluster=cluster, containerInstance=container_instance_arn, force=True
        )

    def create_service(
        self,
        cluster: str,
        name: str,
        *,
        desired_count: int = 0,
        tags: dict[str, str] | None = None,
        placement_constraints: list[dict[str, Any]] | None = None,
        placement_strategy: list[dict[str, Any]] | None = None,
        deployment_configuration: dict[str, Any] | None = None,
        scheduling_strategy: str = "REPLICA",
        launch_type: str = "EC2",
        task_definition: str | None = None,
    ) -> str:
        """Create a service running a small task definition (or `task_definition`); return its ARN.

        The layer keeps the placement constraints, placement strategy and
        deployment configuration that moto's CreateService drops. Like every
        moto UpdateService, the desiredCount sets runningCount here (unless
        scheduling is on, where the tasks placed do).
        """
        ecs = self._admin_client("ecs")
        request: dict[str, Any] = {
            "cluster": cluster,
            "serviceName": name,
            "taskDefinition": task_definition or self._task_definition(),
            "desiredCount": desired_count,
            "schedulingStrategy": scheduling_strategy,
            "launchType": launch_type,
        }
        if tags:
            request["tags"] = [{"key": key, "value": value} for key, value in tags.items()]
        if placement_constraints is not None:
            request["placementConstraints"] = placement_constraints
        if placement_strategy is not None:
            request["placementStrategy"] = placement_strategy
        if deployment_configuration is not None:
            request["deploymentConfiguration"] = deployment_configuration
        arn = str(ecs.create_service(**request)["service"]["serviceArn"])
        if placement_constraints is not None or placement_strategy is not None or deployment_configuration is not None:
            # As before the layer kept them: moto's UpdateService makes runningCount the desiredCount.
            ecs.update_service(cluster=cluster, service=name, desiredCount=desired_count)
        return arn

    def register_task_definition(self, family: str, *, memory: int = 32, cpu: int = 0) -> str:
        """Register a one-container task definition reserving `memory` MiB and `cpu` units; return its ARN."""
        container: dict[str, Any] = {
            "name": "main",
            "image": "public.ecr.aws/docker/library/busybox",
            "memory": memory,
            "command": ["sleep", "3600"],
        }
        if cpu:
            container["cpu"] = cpu
        registered = self._admin_client("ecs").register_task_definition(
            family=family, containerDefinitions=[container]
        )
        return str(registered["taskDefinition"]["taskDefinitionArn"])

    def update_task_definition(self, cluster: str, service: str, task_definition: str) -> None:
        """Deploy another task definition to a service (UpdateService), as a release does."""
        self._admin_client("ecs").update_service(cluster=cluster, service=service, taskDefinition=task_definition)

    def tasks(self, cluster: str, service: str) -> list[dict[str, Any]]:
        """The service's tasks whose desired status is RUNNING: task ARN, host ARN, status, task definition, and
        startedAt (seconds since the epoch; None while PENDING)."""
        ecs_backend, _ = self._backends()
        with self._moto_lock:
            self.scheduler.run(ecs_backend, cluster)
        self.scheduler.publish_events()
        with self._moto_lock:
            return [
                {
                    "taskArn": task.task_arn,
                    "containerInstanceArn": task.container_instance_arn,
                    "lastStatus": task.last_status,
                    "taskDefinitionArn": task.task_definition_arn,
                    "startedAt": _epoch(getattr(task, "started_at", None)),
                }
                for task in ecs_backend.tasks.get(cluster.split("/")[-1], {}).values()
                if task.group == f"service:{service}" and task.desired_status == "RUNNING"
            ]

    def _task_definition(self) -> str:
        family = "localecs-sleep"
        ecs = self._admin_client("ecs")
        try:
            found = ecs.describe_task_definition(taskDefinition=family)
            return str(found["taskDefinition"]["taskDefinitionArn"])
        except ecs.exceptions.ClientException:
            pass
        registered = ecs.register_task_definition(
            family=family,
            containerDefinitions=[
                {
                    "name": "sleep",
                    "image": "public.ecr.aws/docker/library/busybox",
                    "memory": 32,
                    "command": ["sleep", "3600"],
                }
            ],
        )
        return str(registered["taskDefinition"]["taskDefinitionArn"])

    def update_desired_count(self, cluster: str, service: str, desired_count: int) -> None:
        """Set a service's desiredCount, as an operator or another tool would."""
        self._admin_client("ecs").update_service(cluster=cluster, service=service, desiredCount=desired_count)

    def add_service_event(self, cluster: str, service: str, message: str) -> None:
        """Put an event on top of a service's events (newest first), as ECS's service scheduler writes one.

        For the reasons the local scheduler never gives on its own (a missing attribute for a host the
        service's own constraints allow); its next run with a placement failure adds its own on top.
        """
        ecs_backend, _ = self._backends()
        with self._moto_lock:
            found = ecs_backend.services[f"{cluster.split('/')[-1]}:{service}"]
            found.events.insert(
                0, {"id": str(uuid.uuid4()), "createdAt": datetime.datetime.now(datetime.UTC), "message": message}
            )

    def delete_service(self, cluster: str, name: str) -> None:
        """Delete a service even if it still has a desired count (moto keeps it as INACTIVE)."""
        self._admin_client("ecs").delete_service(cluster=cluster, service=name, force=True)

    def desired_count(self, cluster: str, service: str) -> int:
        """The service's desiredCount as DescribeServices reports it."""
        answer = self._admin_client("ecs").describe_services(cluster=cluster, services=[service])
        if not answer["services"]:
            raise LookupError(f"no service {service!r} in cluster {cluster!r}: {answer['failures']}")
        return int(answer["services"][0]["desiredCount"])


def _resize(instance: Any, memory: int | None, cpu: int | None) -> None:
    """Register another amount of memory or CPU for a fresh container instance (registered and remaining alike)."""
    sizes = {"MEMORY": memory, "CPU": cpu}
    for resources in (instance.registered_resources, instance.remaining_resources):
        for resource in resources:
            size = sizes.get(resource.get("name"))
            if size is not None:
                resource["integerValue"] = size


def _run_instances_arguments(region: str, zone: str, instance_type: str) -> dict[str, Any]:
    """The keyword arguments moto 5.2's RunInstances handler passes to its backend."""
    return {
        "instance_type": instance_type,
        "is_instance_type_default": False,
        "placement": zone,
        "placement_hostid": None,
        "region_name": region,
        "subnet_id": None,
        "key_name": None,
        "security_group_ids": [],
        "nics": [],
        "private_ip": None,
        "associate_public_ip": None,
        "tags": {},
        "ebs_optimized": False,
        "disable_api_stop": False,
        "instance_market_options": {},
        "instance_initiated_shutdown_behavior": None,
        "launch_template": {},
        "hibernation_options": {},
        "iam_instance_profile_name": None,
        "iam_instance_profile_arn": None,
        "monitoring_state": "disabled",
        "ipv6_address_count": None,
        "metadata_options": {},
        "client_token": str(uuid.uuid4()),
    }


def _request_handler() -> type:
    """moto's request handler without werkzeug's line per request on stderr."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    class QuietRequestHandler(MotoRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass

    return QuietRequestHandler
