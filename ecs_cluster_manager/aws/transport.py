"""The one transport under every AWS call: clients, metering, the API budget, retries and error translation.

The gateways (ecs.Api for ECS, cloudformation.py, sqs.py) are thin: each call
they make goes through `Transport.call`, which

- refuses to start once a shutdown is requested;
- takes a token from the call's ECS throttling category (budget.py) before
  every attempt, waiting for it when the bucket is empty;
- retries throttling, 5xx answers, timeouts and dropped connections in one
  layer only: botocore makes a single HTTP attempt (`total_max_attempts` 1) and
  tenacity retries with capped exponential backoff and jitter, so the attempts
  per call are `attempts`, not a product of two retry layers;
- ends every call, retries included, within `call_timeout` seconds: an attempt
  that could not finish by then (connect plus read timeout) is not started;
- counts each HTTP attempt by operation and outcome, and by AWS service, so a
  pass can count its own calls apart from the events thread's SQS calls;
- translates botocore errors into the small exception types below.

This is the only module that imports boto3 or botocore.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import boto3
import botocore.config
import botocore.exceptions
import structlog
import tenacity

from ecs_cluster_manager.aws.budget import DEFAULT_SHARE, Budget, category_of
from ecs_cluster_manager.aws.errors import (
    AccessDenied,
    ClusterNotFound,
    CredentialsError,
    EcsError,
    RequestRejected,
    ShuttingDown,
    Throttled,
    TransientError,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")

DEFAULT_ATTEMPTS = 5  # HTTP attempts per call (throttling answers are quick); call_timeout bounds hung ones
DEFAULT_CALL_TIMEOUT = 30.0  # every call ends within this, retries included: ECS's default stop timeout

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
    """Turn a botocore error into one of the project's exception types, naming the operation."""
    if isinstance(error, EcsError):
        return error
    translated = _translate(error, operation)
    translated.operation = operation
    return translated


def _translate(error: BaseException, operation: str) -> EcsError:
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
        if code in THROTTLING_CODES:
            return Throttled(text)
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


class stop_unless_done_by(tenacity.stop.stop_base):  # noqa: N801 - named like tenacity's own stops
    """Stop unless the next attempt, after its wait, could end (`longest_attempt` seconds) within `deadline`."""

    def __init__(self, deadline: float, longest_attempt: float) -> None:
        self.deadline = deadline
        self.longest_attempt = longest_attempt

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        elapsed = retry_state.seconds_since_start or 0.0
        return elapsed + retry_state.upcoming_sleep + self.longest_attempt > self.deadline


class Transport:
    """One boto3 session, its clients, and the path every call takes (see the module docstring).

    Create one per process and keep it. `stop` is an event that, once set,
    ends waits (for a token or between retries) at once, so a SIGTERM is not
    held up. `budget` is the API budget; None (or api_budget=None) sends
    without one, as the manager did before it had one.
    """

    def __init__(
        self,
        region: str | None = None,
        profile: str | None = None,
        *,
        stop: threading.Event | None = None,
        attempts: int = DEFAULT_ATTEMPTS,
        max_backoff: float = 8.0,
        botocore_attempts: int = 1,
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        endpoint_url: str | None = None,
        budget: Budget | None = None,
    ) -> None:
        self.stop = stop or threading.Event()
        self.attempts = attempts
        self.max_backoff = max_backoff
        self.botocore_attempts = botocore_attempts
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.call_timeout = call_timeout
        self.budget = budget
        self.calls: Counter[tuple[str, str]] = Counter()  # (operation, outcome) per HTTP attempt
        self.calls_by_service: Counter[str] = Counter()  # AWS service (ecs, cloudformation, sqs) per HTTP attempt
        self.retries: Counter[str] = Counter()  # retries by operation
        self.throttled: Counter[str] = Counter()  # attempts ECS (or another service) throttled, by operation
        self.budget_waited: dict[str, float] = {}  # seconds waited for a token, by throttling category
        self._lock = threading.Lock()
        self.on_call: Callable[[str, str], None] | None = None
        # Per thread (its ident), the HTTP attempt it has on the wire: (operation, monotonic start). Each
        # thread's own, so the signal handler names the loop's call, not the events thread's long poll.
        self._in_flight: dict[int, tuple[str, float]] = {}
        # Per-call DEBUG events cost a few dict lookups per call, so they are only wired when DEBUG is on.
        self._debug = log.is_enabled_for(logging.DEBUG)
        self._page_numbers: dict[str, int] = {}
        try:
            session = boto3.session.Session(region_name=region, profile_name=profile)
        except botocore.exceptions.ProfileNotFound as error:
            raise CredentialsError(f"AWS_PROFILE / --profile: {error}") from None
        if not session.region_name:
            raise CredentialsError("AWS_REGION / --region: no AWS region configured")
        self._session = session
        self._endpoint_url = endpoint_url
        self._client_config = botocore.config.Config(
            retries={"mode": "standard", "total_max_attempts": botocore_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            user_agent_extra="ecs-cluster-manager",
        )

    @property
    def attempts_per_call(self) -> int:
        """HTTP attempts one call may make: tenacity's attempts times botocore's (1 unless set otherwise)."""
        return self.attempts * self.botocore_attempts

    def client(self, service: str, *, read_timeout: float | None = None) -> Any:
        """A boto3 client for `service`, metered by this transport.

        Raises CredentialsError naming the variable for a missing region or a
        malformed endpoint URL (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_<SERVICE>).
        """
        config = self._client_config
        if read_timeout is not None:
            config = config.merge(botocore.config.Config(read_timeout=read_timeout))
        try:
            client = self._session.client(service, config=config, endpoint_url=self._endpoint_url)
        except botocore.exceptions.NoRegionError:
            raise CredentialsError("AWS_REGION / --region: no AWS region configured") from None
        except ValueError as error:  # botocore's "Invalid endpoint: ..." for a malformed endpoint URL
            raise CredentialsError(f"AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_{service.upper()}: {error}") from None
        events = client.meta.events
        events.register(f"before-send.{service}.*", self._mark_sent)

        def count_response(**kwargs: Any) -> None:
            self._count_response(service, **kwargs)

        events.register(f"response-received.{service}.*", count_response)
        if self._debug:
            events.register(f"before-parameter-build.{service}.*", self._number_page)
        return client

    # -- metering ------------------------------------------------------------

    def total_calls(self, *services: str) -> int:
        """HTTP attempts so far, of the given AWS services (all when none is given)."""
        with self._lock:
            if not services:
                return sum(self.calls_by_service.values())
            return sum(self.calls_by_service[service] for service in services)

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
        with self._lock:
            self._in_flight[threading.get_ident()] = (kwargs.get("event_name", "").rsplit(".", 1)[-1], started)

    def in_flight(self, thread: int | None = None) -> tuple[str, float] | None:
        """The HTTP attempt `thread` (an ident; the calling thread's by default) has on the wire, if any."""
        with self._lock:
            return self._in_flight.get(threading.get_ident() if thread is None else thread)

    def _count_response(self, service: str, *, context: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
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
            self.calls_by_service[service] += 1
            if outcome == "throttled":
                self.throttled[operation] += 1
        if outcome == "throttled" and service == "ecs" and self.budget is not None:
            self.budget.throttled(operation)  # someone else spends the same bucket: slow down
        with self._lock:
            self._in_flight.pop(threading.get_ident(), None)
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

    # -- the call path -------------------------------------------------------

    def _sleep(self, seconds: float) -> None:
        """Back off between retries, waking at once when a shutdown is requested."""
        self.stop.wait(seconds)

    def _pay(self, service: str, operation: str) -> None:
        """Take the token an ECS request needs, waiting for it; raises ShuttingDown if a stop comes meanwhile."""
        if service != "ecs" or self.budget is None:
            return
        wait = self.budget.reserve(operation)
        if wait <= 0:
            return
        with self._lock:
            category = category_of(operation)
            self.budget_waited[category] = self.budget_waited.get(category, 0.0) + wait
        if self._wait_for_token(wait):
            raise ShuttingDown(f"{operation}: not sent, shutting down")

    def _wait_for_token(self, seconds: float) -> bool:
        """Wait for a reserved token; True when a shutdown was requested meanwhile."""
        return self.stop.wait(seconds)

    def call(
        self,
        service: str,
        operation: str,
        function: Callable[..., T],
        params: Mapping[str, Any],
        *,
        attempts: int | None = None,
    ) -> T:
        """One API call, paid for from the budget, with bounded retries of transient faults; errors translated."""
        if self.stop.is_set():  # ECS kills the task 30 s after SIGTERM: start nothing new
            raise ShuttingDown(f"{operation}: not sent, shutting down")
        longest_attempt = self.connect_timeout + self.read_timeout

        def before_sleep(state: tenacity.RetryCallState) -> None:
            with self._lock:
                self.retries[operation] += 1
            error = state.outcome.exception() if state.outcome else None
            log.warning(
                "api_retry",
                operation=operation,
                attempt=state.attempt_number,
                sleep=round(state.upcoming_sleep, 2),
                error=str(translate(error, operation)) if error else None,
            )

        def attempt() -> T:
            self._pay(service, operation)
            return function(**params)

        retrying = tenacity.Retrying(
            stop=(
                tenacity.stop_after_attempt(attempts or self.attempts)
                | tenacity.stop_when_event_set(self.stop)
                | stop_unless_done_by(self.call_timeout, longest_attempt)
            ),
            wait=tenacity.wait_exponential_jitter(multiplier=0.5, max=self.max_backoff),
            retry=tenacity.retry_if_exception(is_transient),
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise translate(error, operation) from None


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """`items` in batches of at most `size`: the API's limit per call."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Gateway:
    """A small per-service gateway on the transport: `_call` is one budgeted, retried, translated call."""

    service = ""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def _call(self, operation: str, function: Callable[..., T], /, **params: Any) -> T:
        """One API call with bounded retries of transient faults; errors come out translated."""
        return self.transport.call(self.service, operation, function, params)

    def _once(self, operation: str, function: Callable[..., T], /, **params: Any) -> T:
        """One attempt, no retry: for callers that back off on their own (the events source)."""
        return self.transport.call(self.service, operation, function, params, attempts=1)


__all__ = [
    "DEFAULT_SHARE",
    "AccessDenied",
    "ClusterNotFound",
    "CredentialsError",
    "EcsError",
    "Gateway",
    "RequestRejected",
    "ShuttingDown",
    "Throttled",
    "TransientError",
    "Transport",
    "is_transient",
    "translate",
]
