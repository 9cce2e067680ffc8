"""The thin boto3 wrapper: the only code in the project that talks to AWS.

One client per process with botocore's `standard` retry mode, a bounded tenacity
retry on top for transient faults, complete paging, DescribeServices in batches
of ten, and botocore errors translated into the small exception types below.
Everything returned is a plain dataclass, never a raw response.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import boto3
import botocore.config
import botocore.exceptions
import structlog
import tenacity

from .models import (
    ContainerInstance,
    PlacementConstraint,
    QueueMessage,
    Service,
    ServiceFailure,
    ServiceLookup,
    Task,
    TaskIdentity,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")

LIST_CONTAINER_INSTANCES_PAGE = 100  # the API's maximum
LIST_SERVICES_PAGE = 100  # the API's maximum (its default is 10)
DESCRIBE_SERVICES_BATCH = 10  # the API's limit per call
LIST_TASKS_PAGE = 100  # the API's maximum
DESCRIBE_TASKS_BATCH = 100  # the API's limit per call
DESCRIBE_CONTAINER_INSTANCES_BATCH = 100  # the API's limit per call
# The start of ECS's service event for a task it could not place, and of the event that says all is placed.
PLACEMENT_FAILURE = "was unable to place a task"
STEADY_STATE = "has reached a steady state"
SQS_MAX_WAIT_SECONDS = 20  # SQS's longest long poll (ReceiveMessage WaitTimeSeconds)
DELETE_MESSAGE_BATCH = 10  # SQS's limit per DeleteMessageBatch
AGENT_CONNECTED = "agentConnected == true"
# Hosts of AWS's own endpoints: any other endpoint was configured (AWS_ENDPOINT_URL and the like).
AWS_ENDPOINT_SUFFIXES = (".amazonaws.com", ".amazonaws.com.cn", ".api.aws", ".c2s.ic.gov", ".sc2s.sgov.gov")

THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestThrottled",
    }
)
TRANSIENT_CODES = THROTTLING_CODES | {
    "ServerException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalFailure",
    "InternalError",
    "InternalServerError",
    "RequestTimeout",
    "RequestTimeoutException",
}


class EcsError(Exception):
    """An AWS call failed; the message says which call and why."""


class ShuttingDown(Exception):  # noqa: N818 - a state, not an error
    """A shutdown was requested, so no new request is sent; the pass ends where it is."""


class TransientError(EcsError):
    """Throttling, a 5xx answer, a timeout or a dropped connection that outlived the retries."""


class ClusterNotFound(EcsError):
    """The cluster does not exist (in this account and region)."""


class AccessDenied(EcsError):
    """The credentials in use may not make this call."""


class RequestRejected(EcsError):
    """The API refused the request itself (invalid parameter, unknown service, ...)."""


class CredentialsError(EcsError):
    """No usable credentials, profile or region: a configuration problem."""


def host_filter(member_of: Iterable[str] = ()) -> str:
    """The cluster query language filter for eligible hosts: agent connected and every memberOf expression."""
    parts = [AGENT_CONNECTED, *(f"({expression})" for expression in member_of)]
    return " and ".join(parts)


def is_transient(error: BaseException) -> bool:
    if isinstance(error, botocore.exceptions.ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0
        return code in TRANSIENT_CODES or status >= 500
    return isinstance(
        error,
        botocore.exceptions.ConnectionError | botocore.exceptions.HTTPClientError,
    )


def translate(error: BaseException, operation: str) -> EcsError:
    """Turn a botocore error into one of the project's exception types."""
    if isinstance(error, EcsError):
        return error
    if isinstance(error, botocore.exceptions.ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "") or str(error)
        text = f"{operation}: {code}: {message}"
        if code == "ClusterNotFoundException":
            return ClusterNotFound(text)
        if code in {"AccessDeniedException", "AccessDenied", "UnauthorizedOperation", "UnrecognizedClientException"}:
            return AccessDenied(text)
        if code in {"ExpiredTokenException", "InvalidClientTokenId", "InvalidSignatureException"}:
            return CredentialsError(text)
        if is_transient(error):
            return TransientError(text)
        return RequestRejected(text)
    if isinstance(error, botocore.exceptions.NoCredentialsError | botocore.exceptions.NoRegionError):
        return CredentialsError(f"{operation}: {error}")
    if is_transient(error):
        return TransientError(f"{operation}: {type(error).__name__}: {error}")
    if isinstance(error, botocore.exceptions.BotoCoreError):
        return EcsError(f"{operation}: {type(error).__name__}: {error}")
    return EcsError(f"{operation}: {error}")


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Api:
    """The AWS calls the manager makes, with retries, paging and batching.

    Create one per process and keep it: the boto3 client inside is reused.
    `stop` is an event that, once set, ends waits between retries at once so a
    SIGTERM is not held up by a backoff.
    """

    def __init__(
        self,
        region: str | None = None,
        profile: str | None = None,
        *,
        stop: threading.Event | None = None,
        attempts: int = 4,
        max_backoff: float = 8.0,
        botocore_attempts: int = 2,
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
        endpoint_url: str | None = None,
    ) -> None:
        self.stop = stop or threading.Event()
        self.attempts = attempts
        self.max_backoff = max_backoff
        self.calls: Counter[tuple[str, str]] = Counter()  # (operation, outcome) per HTTP attempt
        self.retries: Counter[str] = Counter()  # tenacity retries by operation
        self._lock = threading.Lock()
        self.on_call: Callable[[str, str], None] | None = None
        # The HTTP attempt on the wire, if any: (operation, monotonic start). Read by the signal handler.
        self.in_flight: tuple[str, float] | None = None
        self.read_timeout = read_timeout
        self.botocore_attempts = botocore_attempts
        # Per-call DEBUG events cost a few dict lookups per call, so they are only wired when DEBUG is on.
        self._debug = log.is_enabled_for(logging.DEBUG)
        self._page_numbers: dict[str, int] = {}
        try:
            session = boto3.session.Session(region_name=region, profile_name=profile)
        except botocore.exceptions.ProfileNotFound as error:
            raise CredentialsError(f"AWS_PROFILE / --profile: {error}") from None
        if not session.region_name:
            raise CredentialsError("AWS_REGION / --region: no AWS region configured")
        client_config = botocore.config.Config(
            retries={"mode": "standard", "total_max_attempts": botocore_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            user_agent_extra="ecs-cluster-manager",
        )
        try:
            self._ecs = session.client("ecs", config=client_config, endpoint_url=endpoint_url)
        except botocore.exceptions.NoRegionError:
            raise CredentialsError("AWS_REGION / --region: no AWS region configured") from None
        except ValueError as error:  # botocore's "Invalid endpoint: ..." for a malformed AWS_ENDPOINT_URL(_ECS)
            raise CredentialsError(f"AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_ECS: {error}") from None
        self._session = session
        self._client_config = client_config
        self._endpoint_url = endpoint_url
        self._cloudformation: Any = None
        self._sqs: Any = None
        self._register_hooks(self._ecs, "ecs")

    def _register_hooks(self, client: Any, service: str) -> None:
        events = client.meta.events
        events.register(f"before-send.{service}.*", self._mark_sent)
        events.register(f"response-received.{service}.*", self._count_response)
        if self._debug:
            events.register(f"before-parameter-build.{service}.*", self._number_page)

    @property
    def region(self) -> str:
        return str(self._ecs.meta.region_name)

    @property
    def endpoint(self) -> str:
        """The ECS endpoint URL the client sends to."""
        return str(self._ecs.meta.endpoint_url)

    @property
    def custom_endpoint(self) -> str | None:
        """The ECS endpoint URL when it is not one of AWS's own (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_ECS, ...)."""
        host = (urllib.parse.urlsplit(self.endpoint).hostname or "").lower()
        return None if host.endswith(AWS_ENDPOINT_SUFFIXES) else self.endpoint

    def _number_page(self, *, params: Mapping[str, Any], context: dict[str, Any], **kwargs: Any) -> None:
        """DEBUG only: number the pages of a listing (1 for a call without a nextToken)."""
        operation = kwargs.get("event_name", "").rsplit(".", 1)[-1]
        if not operation.startswith("List"):
            return
        page = self._page_numbers.get(operation, 0) + 1 if params.get("nextToken") or params.get("NextToken") else 1
        self._page_numbers[operation] = page
        context["ecm_page"] = page

    def _mark_sent(self, *, request: Any, **kwargs: Any) -> None:
        """Note the attempt going on the wire: its start time (for DEBUG) and what a shutdown waits for."""
        started = time.monotonic()
        context = getattr(request, "context", None)
        if isinstance(context, dict):
            context["ecm_sent"] = started
        self.in_flight = (kwargs.get("event_name", "").rsplit(".", 1)[-1], started)

    @property
    def total_calls(self) -> int:
        with self._lock:
            return sum(self.calls.values())

    def _count_response(self, *, context: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Count each HTTP attempt by operation and outcome (ok, throttled, error, unreachable)."""
        response = kwargs.get("response_dict") or {}
        parsed = kwargs.get("parsed_response") or {}
        exception = kwargs.get("exception")
        operation = (context or {}).get("operation_name") or kwargs.get("event_name", "").rsplit(".", 1)[-1]
        status = response.get("status_code", 0) or 0
        code = (parsed.get("Error") or {}).get("Code", "") if isinstance(parsed, Mapping) else ""
        if exception is not None and not response:
            outcome = "unreachable"
        elif code in THROTTLING_CODES:
            outcome = "throttled"
        elif 200 <= status < 300:
            outcome = "ok"
        else:
            outcome = "error"
        with self._lock:
            self.calls[(operation, outcome)] += 1
        self.in_flight = None
        if self._debug:
            sent = (context or {}).get("ecm_sent")
            log.debug(
                "api_call",
                operation=operation,
                duration=round(time.monotonic() - sent, 3) if sent is not None else None,
                outcome=outcome,
                status=status or None,
                error=code or (type(exception).__name__ if exception is not None else None),
                page=(context or {}).get("ecm_page"),
            )
        if self.on_call is not None:
            self.on_call(operation, outcome)

    def _sleep(self, seconds: float) -> None:
        """Back off between retries, waking at once when a shutdown is requested."""
        self.stop.wait(seconds)

    def _call(self, operation: str, function: Callable[..., T], /, **params: Any) -> T:
        """One API call with bounded retries of transient faults; errors come out translated."""
        return self._attempt(operation, function, self.attempts, params)

    def _once(self, operation: str, function: Callable[..., T], /, **params: Any) -> T:
        """One call with botocore's retries only: the events source backs off on its own."""
        return self._attempt(operation, function, 1, params)

    def _attempt(self, operation: str, function: Callable[..., T], attempts: int, params: Mapping[str, Any]) -> T:
        if self.stop.is_set():  # ECS kills the task 30 s after SIGTERM: start nothing new
            raise ShuttingDown(f"{operation}: not sent, shutting down")

        def before_sleep(state: tenacity.RetryCallState) -> None:
            self.retries[operation] += 1
            error = state.outcome.exception() if state.outcome else None
            log.warning(
                "api_retry",
                operation=operation,
                attempt=state.attempt_number,
                sleep=round(state.upcoming_sleep, 2),
                error=str(translate(error, operation)) if error else None,
            )

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(attempts) | tenacity.stop_when_event_set(self.stop),
            wait=tenacity.wait_exponential_jitter(multiplier=0.5, max=self.max_backoff),
            retry=tenacity.retry_if_exception(is_transient),
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(function, **params)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise translate(error, operation) from None

    # -- reads -------------------------------------------------------------

    def _pages(self, operation: str, function: Callable[..., Any], key: str, **params: Any) -> list[str]:
        """Every item of a paged listing; raises on any failed page, so a partial list is never returned."""
        items: list[str] = []
        seen_tokens: set[str] = set()
        while True:
            page = self._call(operation, function, **params)
            items.extend(page.get(key, []))
            token = page.get("nextToken")
            if not token:
                return items
            if token in seen_tokens:  # a server that loops would otherwise keep us here forever
                raise EcsError(f"{operation}: the same nextToken came back twice")
            seen_tokens.add(token)
            params["nextToken"] = token

    def list_container_instances(
        self, cluster: str, status: str = "ACTIVE", filter_expression: str | None = None
    ) -> list[str]:
        """The ARNs of the container instances with this status matching the filter, across every page."""
        params: dict[str, Any] = {"cluster": cluster, "status": status, "maxResults": LIST_CONTAINER_INSTANCES_PAGE}
        if filter_expression:
            params["filter"] = filter_expression
        return self._pages(
            "ListContainerInstances", self._ecs.list_container_instances, "containerInstanceArns", **params
        )

    def count_hosts(self, cluster: str, filter_expression: str = AGENT_CONNECTED) -> int:
        """Count ACTIVE container instances matching the filter, across every page (never a partial count)."""
        return len(self.list_container_instances(cluster, "ACTIVE", filter_expression))

    def registered_count(self, cluster: str) -> int:
        """DescribeClusters' registeredContainerInstancesCount: ACTIVE and DRAINING instances, in one call."""
        page = self._call("DescribeClusters", self._ecs.describe_clusters, clusters=[cluster])
        clusters = page.get("clusters") or []
        if not clusters or clusters[0].get("status") == "INACTIVE":
            raise ClusterNotFound(f"DescribeClusters: cluster {cluster!r} not found")
        return int(clusters[0].get("registeredContainerInstancesCount", 0))

    def list_services(self, cluster: str) -> list[str]:
        """Every service ARN of the cluster, across every page."""
        return self._pages(
            "ListServices", self._ecs.list_services, "serviceArns", cluster=cluster, maxResults=LIST_SERVICES_PAGE
        )

    def describe_services(self, cluster: str, services: Sequence[str]) -> ServiceLookup:
        """Describe services (names or ARNs) with their tags, ten per call."""
        found: list[Service] = []
        failures: list[ServiceFailure] = []
        for batch in _chunks(list(services), DESCRIBE_SERVICES_BATCH):
            page = self._call(
                "DescribeServices", self._ecs.describe_services, cluster=cluster, services=list(batch), include=["TAGS"]
            )
            found.extend(_service(raw) for raw in page.get("services", []))
            failures.extend(
                ServiceFailure(service=f.get("arn", "?"), reason=f.get("reason", "UNKNOWN"), detail=f.get("detail"))
                for f in page.get("failures", [])
            )
        return ServiceLookup(tuple(found), tuple(failures))

    def list_tasks(self, cluster: str, service_name: str) -> list[str]:
        """The ARNs of the service's tasks whose desired status is RUNNING, across every page."""
        return self._pages(
            "ListTasks",
            self._ecs.list_tasks,
            "taskArns",
            cluster=cluster,
            serviceName=service_name,
            desiredStatus="RUNNING",
            maxResults=LIST_TASKS_PAGE,
        )

    def describe_tasks(self, cluster: str, arns: Sequence[str]) -> list[Task]:
        """Describe tasks, 100 per call; a task ECS no longer knows is left out (it stopped meanwhile)."""
        tasks: list[Task] = []
        for batch in _chunks(list(arns), DESCRIBE_TASKS_BATCH):
            page = self._call("DescribeTasks", self._ecs.describe_tasks, cluster=cluster, tasks=list(batch))
            tasks.extend(_task(raw) for raw in page.get("tasks", []))
        return tasks

    def describe_container_instances(self, cluster: str, arns: Sequence[str]) -> list[ContainerInstance]:
        """Describe container instances, 100 per call; one ECS no longer knows is left out."""
        instances: list[ContainerInstance] = []
        for batch in _chunks(list(arns), DESCRIBE_CONTAINER_INSTANCES_BATCH):
            page = self._call(
                "DescribeContainerInstances",
                self._ecs.describe_container_instances,
                cluster=cluster,
                containerInstances=list(batch),
            )
            instances.extend(
                ContainerInstance(
                    arn=raw["containerInstanceArn"],
                    ec2_instance_id=raw.get("ec2InstanceId"),
                    status=raw.get("status", "UNKNOWN"),
                    agent_connected=bool(raw.get("agentConnected", False)),
                    version=int(raw.get("version", 0)),
                )
                for raw in page.get("containerInstances", [])
                if "containerInstanceArn" in raw
            )
        return instances

    def stack_status(self, stack_name: str) -> str | None:
        """The status of a CloudFormation stack, or None when it does not exist."""
        if self._cloudformation is None:
            try:
                self._cloudformation = self._session.client(
                    "cloudformation", config=self._client_config, endpoint_url=self._endpoint_url
                )
            except ValueError as error:  # a malformed AWS_ENDPOINT_URL_CLOUDFORMATION: skip, do not crash the pass
                raise EcsError(f"DescribeStacks: {error}") from None
            self._register_hooks(self._cloudformation, "cloudformation")
        try:
            page = self._call("DescribeStacks", self._cloudformation.describe_stacks, StackName=stack_name)
        except RequestRejected as error:
            if "does not exist" in str(error):
                return None
            raise
        stacks = page.get("Stacks", [])
        return str(stacks[0]["StackStatus"]) if stacks else None

    def has_instance(self, cluster: str, filter_expression: str, ec2_instance_id: str) -> bool:
        """Whether one ACTIVE container instance (by EC2 instance id) matches a filter: one call, any cluster size."""
        expression = f"({filter_expression}) and ec2InstanceId == {ec2_instance_id}"
        return bool(self.list_container_instances(cluster, "ACTIVE", expression))

    # -- the events queue ----------------------------------------------------

    def prepare_events(self) -> None:
        """Create the SQS client now, so a malformed AWS_ENDPOINT_URL(_SQS) is a start-up error."""
        self._sqs_client()

    def _sqs_client(self) -> Any:
        if self._sqs is None:
            # The read timeout must outlast the longest long poll, or every quiet poll ends in a timeout.
            config = self._client_config.merge(botocore.config.Config(read_timeout=SQS_MAX_WAIT_SECONDS + 10))
            try:
                self._sqs = self._session.client("sqs", config=config, endpoint_url=self._endpoint_url)
            except ValueError as error:  # a malformed AWS_ENDPOINT_URL_SQS
                raise CredentialsError(f"AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_SQS: {error}") from None
            self._register_hooks(self._sqs, "sqs")
        return self._sqs

    def receive_messages(
        self, queue_url: str, wait_seconds: int = SQS_MAX_WAIT_SECONDS, max_messages: int = 10
    ) -> list[QueueMessage]:
        """Long-poll the queue: returns as soon as messages are there, or empty after `wait_seconds`."""
        sqs = self._sqs_client()
        page = self._once(
            "ReceiveMessage",
            sqs.receive_message,
            QueueUrl=queue_url,
            WaitTimeSeconds=wait_seconds,
            MaxNumberOfMessages=max_messages,
        )
        return [
            QueueMessage(m.get("MessageId", "?"), m["ReceiptHandle"], m.get("Body", ""))
            for m in page.get("Messages", [])
            if "ReceiptHandle" in m
        ]

    def delete_messages(self, queue_url: str, messages: Sequence[QueueMessage]) -> dict[str, str]:
        """Delete messages, ten per call; returns the ones SQS did not delete (message id -> reason)."""
        sqs = self._sqs_client()
        failed: dict[str, str] = {}
        for batch in _chunks(list(messages), DELETE_MESSAGE_BATCH):
            by_entry = {str(index): message for index, message in enumerate(batch)}
            page = self._call(
                "DeleteMessageBatch",
                sqs.delete_message_batch,
                QueueUrl=queue_url,
                Entries=[{"Id": key, "ReceiptHandle": m.receipt_handle} for key, m in by_entry.items()],
            )
            # HTTP 200 still reports failures entry by entry.
            for failure in page.get("Failed", []):
                message = by_entry.get(str(failure.get("Id")))
                failed[message.message_id if message else "?"] = str(failure.get("Message") or failure.get("Code"))
        return failed

    # -- writes ------------------------------------------------------------

    def set_desired_count(self, cluster: str, service: str, desired_count: int) -> None:
        """UpdateService with only desiredCount, which starts no new deployment."""
        self._call(
            "UpdateService", self._ecs.update_service, cluster=cluster, service=service, desiredCount=desired_count
        )


def _service(raw: Mapping[str, Any]) -> Service:
    deployment = raw.get("deploymentConfiguration") or {}
    primary: Mapping[str, Any] = next((d for d in raw.get("deployments") or [] if d.get("status") == "PRIMARY"), {})
    failures = _placement_failures(raw.get("events") or [])
    tags = {t["key"]: t.get("value", "") for t in raw.get("tags") or [] if "key" in t}
    return Service(
        arn=raw["serviceArn"],
        name=raw.get("serviceName") or raw["serviceArn"].rsplit("/", 1)[-1],
        cluster_arn=raw.get("clusterArn", ""),
        status=raw.get("status", "UNKNOWN"),
        desired_count=int(raw.get("desiredCount", 0)),
        running_count=int(raw.get("runningCount", 0)),
        pending_count=int(raw.get("pendingCount", 0)),
        scheduling_strategy=raw.get("schedulingStrategy") or "REPLICA",
        launch_type=raw.get("launchType"),
        capacity_providers=tuple(s.get("capacityProvider", "") for s in raw.get("capacityProviderStrategy") or []),
        placement_constraints=tuple(
            PlacementConstraint(c.get("type", ""), c.get("expression")) for c in raw.get("placementConstraints") or []
        ),
        minimum_healthy_percent=deployment.get("minimumHealthyPercent"),
        maximum_percent=deployment.get("maximumPercent"),
        deployment_controller=(raw.get("deploymentController") or {}).get("type", "ECS"),
        tags=tags,
        task_definition=primary.get("taskDefinition") or raw.get("taskDefinition"),
        placement_failure=failures[0][1] if failures else None,
        placement_failure_since=failures[-1][0] if failures else None,
    )


def _unix(value: Any) -> float | None:
    """A timestamp from botocore (a datetime) or a raw answer (epoch seconds) as Unix time."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    timestamp = getattr(value, "timestamp", None)
    return float(timestamp()) if callable(timestamp) else None


def _placement_failures(events: Iterable[Mapping[str, Any]]) -> list[tuple[float | None, str]]:
    """The current run of placement failures, newest first: the failure events newer than the newest steady state."""
    failures: list[tuple[float | None, str]] = []
    for event in events:  # ECS lists them newest first
        message = str(event.get("message") or "")
        if STEADY_STATE in message:
            break
        if PLACEMENT_FAILURE in message:
            failures.append((_unix(event.get("createdAt")), message))
    return failures


def _task(raw: Mapping[str, Any]) -> Task:
    return Task(
        arn=raw.get("taskArn", "?"),
        container_instance_arn=raw.get("containerInstanceArn"),
        last_status=raw.get("lastStatus", "UNKNOWN"),
        task_definition_arn=raw.get("taskDefinitionArn", ""),
        desired_status=raw.get("desiredStatus", "RUNNING"),
        started_at=_unix(raw.get("startedAt")),
        created_at=_unix(raw.get("createdAt")),
    )


def task_identity(environ: Mapping[str, str], timeout: float = 2.0) -> TaskIdentity | None:
    """Read the ECS task metadata endpoint (v4) when this process runs as an ECS task."""
    base = environ.get("ECS_CONTAINER_METADATA_URI_V4")
    if not base:
        return None
    try:
        with urllib.request.urlopen(f"{base}/task", timeout=timeout) as response:  # noqa: S310 - the agent's own URL
            document = json.load(response)
    except (OSError, ValueError) as error:
        log.warning("task_metadata_unavailable", error=str(error))
        return None
    return TaskIdentity(
        cluster=document.get("Cluster"), service_name=document.get("ServiceName"), task_arn=document.get("TaskARN")
    )
