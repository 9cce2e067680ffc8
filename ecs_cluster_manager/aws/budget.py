"""The API budget: one client-side token bucket per ECS throttling category.

ECS throttles each account and region with token buckets that every caller
shares (the console, CloudFormation, CI pipelines). The manager keeps a share of
each bucket (API_BUDGET, half by default) and takes a token from its category's
bucket before every ECS request, so it cannot empty a bucket the rest of the
account needs, however many services or events it handles.

A ThrottlingException means someone else is spending the same bucket: the
category's bucket then shrinks to half its rate and burst (down to an eighth),
and grows back by doubling every RECOVER_AFTER seconds without another one, as
botocore's adaptive retry mode slows down when it is throttled.

Pure: no I/O and no sleeping; the clock is injected, so the tests need no real time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

CLUSTER_READS = "cluster_reads"
CLUSTER_RESOURCE_READS = "cluster_resource_reads"
SERVICE_READS = "service_reads"
SERVICE_MODIFY = "service_modify"

DEFAULT_SHARE = 0.5
RECOVER_AFTER = 5.0  # seconds without a throttle before a shrunk bucket doubles again
MIN_SCALE = 1 / 8  # a throttled bucket never shrinks below this fraction of its budgeted rate


@dataclass(frozen=True)
class Category:
    """One of ECS's throttling categories, as documented (burst and refill per second for the whole account)."""

    name: str
    burst: int
    rate: float
    operations: tuple[str, ...]


# AWS's "Request throttling for the Amazon ECS API" table, for the operations the manager may call.
CATEGORIES = (
    Category(CLUSTER_READS, 50, 20.0, ("DescribeClusters",)),
    Category(
        CLUSTER_RESOURCE_READS,
        100,
        20.0,
        ("ListContainerInstances", "DescribeContainerInstances", "ListTasks", "DescribeTasks", "ListAttributes"),
    ),
    Category(SERVICE_READS, 100, 20.0, ("DescribeServices", "ListServices")),
    # The table names no category for the attribute writes and StopTask: they share the service-modify bucket.
    Category(
        SERVICE_MODIFY,
        50,
        5.0,
        ("UpdateService", "CreateService", "DeleteService", "PutAttributes", "DeleteAttributes", "StopTask"),
    ),
)
CATEGORY_OF = {operation: category.name for category in CATEGORIES for operation in category.operations}


def category_of(operation: str) -> str:
    """The throttling category of an ECS operation; one outside the table is paced as a cluster read."""
    return CATEGORY_OF.get(operation, CLUSTER_READS)


class TokenBucket:
    """A token bucket of `burst` tokens refilled at `rate` per second, that callers may overdraw by reserving.

    `reserve` takes a token at once and says how long the caller must wait
    before sending: callers that arrive together are spaced 1/rate apart, in
    the order they reserved. Thread-safe.
    """

    def __init__(self, burst: float, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if burst <= 0 or rate <= 0:
            raise ValueError("burst and rate must be > 0")
        self.burst = float(burst)
        self.rate = float(rate)
        self.clock = clock
        self.scale = 1.0  # below 1 after a throttle
        self._tokens = self.burst
        self._updated = clock()
        self._scaled_at = self._updated  # when the scale last changed
        self._lock = threading.Lock()

    @property
    def capacity(self) -> float:
        return max(1.0, self.burst * self.scale)

    @property
    def current_rate(self) -> float:
        return self.rate * self.scale

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.capacity, self._tokens + elapsed * self.current_rate)
        self._updated = now
        while self.scale < 1.0 and now - self._scaled_at >= RECOVER_AFTER:
            self.scale = min(1.0, self.scale * 2)
            self._scaled_at += RECOVER_AFTER

    def tokens(self) -> float:
        """Tokens in the bucket now (negative while reservations wait)."""
        with self._lock:
            self._refill(self.clock())
            return self._tokens

    def reserve(self) -> float:
        """Take one token; returns the seconds to wait before the request may be sent (0 when one was there)."""
        with self._lock:
            self._refill(self.clock())
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.current_rate

    def ready_in(self, tokens: float = 1.0) -> float:
        """Seconds until `tokens` (at most the capacity) are in the bucket, reserving none."""
        with self._lock:
            self._refill(self.clock())
            wanted = min(tokens, self.capacity)
            return max(0.0, (wanted - self._tokens) / self.current_rate)

    def throttled(self) -> None:
        """ECS throttled a request of this category anyway: halve the rate and burst, and spend what is left."""
        with self._lock:
            now = self.clock()
            self._refill(now)
            self.scale = max(MIN_SCALE, self.scale / 2)
            self._scaled_at = now
            self._tokens = min(self._tokens, 0.0)


class Budget:
    """The manager's share of every ECS throttling category: one TokenBucket per category."""

    def __init__(
        self,
        share: float = DEFAULT_SHARE,
        clock: Callable[[], float] = time.monotonic,
        categories: Iterable[Category] = CATEGORIES,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be > 0 and <= 1, not {share!r}")
        self.share = share
        self.buckets = {c.name: TokenBucket(c.burst * share, c.rate * share, clock) for c in categories}

    def bucket(self, operation: str) -> TokenBucket:
        return self.buckets[category_of(operation)]

    def reserve(self, operation: str) -> float:
        """Take the token an ECS request needs; returns the seconds to wait before sending it."""
        return self.bucket(operation).reserve()

    def throttled(self, operation: str) -> None:
        self.bucket(operation).throttled()

    def available(self, category: str) -> int:
        """Whole tokens the category's bucket can pay now without waiting."""
        return max(0, int(self.buckets[category].tokens() + 1e-9))

    def ready_in(self, category: str, tokens: float = 1.0) -> float:
        """Seconds until the category's bucket can pay `tokens` (at most its capacity) without waiting."""
        return self.buckets[category].ready_in(tokens)


def shortfall(calls: Iterable[tuple[float, str]], share: float = 1.0, *, slack: float = 0.0) -> dict[str, int]:
    """Replay (time, ECS operation) calls through the documented buckets at `share` of their size.

    Returns, per category, how many calls found less than one token (ECS would
    have throttled them; they take none). `slack` (in tokens) forgives the
    jitter between a token being taken and the request arriving.
    """
    ordered = sorted(calls)
    start = ordered[0][0] if ordered else 0.0
    now = [start]
    buckets = {c.name: TokenBucket(c.burst * share, c.rate * share, lambda: now[0]) for c in CATEGORIES}
    short = {c.name: 0 for c in CATEGORIES}
    for at, operation in ordered:
        now[0] = at
        bucket = buckets[category_of(operation)]
        if bucket.tokens() < 1.0 - slack - 1e-9:  # 1e-9: floating-point sums of refills
            short[category_of(operation)] += 1
        else:
            bucket.reserve()
    return short
