"""The project's own AWS errors: what every gateway raises, whichever service answered. No AWS code."""

from __future__ import annotations


class AwsError(Exception):
    """An AWS call failed; the message says which call and why. `operation` is the call, when known."""

    operation: str | None = None


class ShuttingDown(Exception):  # noqa: N818 - a state, not an error
    """A shutdown was requested, so no new request is sent; the pass ends where it is."""


class TransientError(AwsError):
    """Throttling, a 5xx answer, a timeout or a dropped connection that outlived the retries."""


class Throttled(TransientError):
    """The API throttled the call through every retry: the budget was spent by someone else too."""


class ClusterNotFound(AwsError):
    """The cluster does not exist (in this account and region)."""


class AccessDenied(AwsError):
    """The credentials in use may not make this call."""


class RequestRejected(AwsError):
    """The API refused the request itself (invalid parameter, unknown service, ...)."""


class CredentialsError(AwsError):
    """No usable credentials, profile or region: a configuration problem."""




# The name every AWS error had before the CloudFormation and SQS gateways joined ECS: tests and callers use it.
EcsError = AwsError
