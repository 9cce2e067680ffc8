"""The API budget: token buckets per ECS throttling category, on an injected clock (no real sleeping)."""

from __future__ import annotations

import pytest

from ecs_cluster_manager.aws import budget
from ecs_cluster_manager.aws.budget import Budget, TokenBucket, shortfall


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_categories_are_the_documented_buckets() -> None:
    """The four categories carry AWS's documented burst and refill rate, and each operation maps to one."""
    table = {c.name: (c.burst, c.rate) for c in budget.CATEGORIES}
    assert table == {
        budget.CLUSTER_READS: (50, 20.0),
        budget.CLUSTER_RESOURCE_READS: (100, 20.0),
        budget.SERVICE_READS: (100, 20.0),
        budget.SERVICE_MODIFY: (50, 5.0),
    }
    assert budget.category_of("UpdateService") == budget.SERVICE_MODIFY
    assert budget.category_of("DescribeTasks") == budget.CLUSTER_RESOURCE_READS
    assert budget.category_of("ListServices") == budget.SERVICE_READS
    assert budget.category_of("DescribeClusters") == budget.CLUSTER_READS
    assert budget.category_of("SomethingNew") == budget.CLUSTER_READS  # paced, never unbudgeted


def test_a_full_bucket_pays_its_burst_then_paces_at_its_rate() -> None:
    """Burst tokens are free; after them each reservation waits 1/rate more than the one before."""
    clock = Clock()
    bucket = TokenBucket(25, 2.5, clock)
    assert [bucket.reserve() for _ in range(25)] == [0.0] * 25
    waits = [bucket.reserve() for _ in range(3)]
    assert waits == pytest.approx([0.4, 0.8, 1.2])
    clock.advance(1.2)
    assert bucket.tokens() == pytest.approx(0.0)
    clock.advance(100)
    assert bucket.tokens() == 25  # never more than the burst


def test_ready_in_says_when_n_tokens_are_there_without_taking_them() -> None:
    """ready_in counts toward at most the capacity and reserves nothing."""
    clock = Clock()
    bucket = TokenBucket(25, 2.5, clock)
    for _ in range(25):
        bucket.reserve()
    assert bucket.ready_in(5) == pytest.approx(2.0)
    assert bucket.ready_in(1000) == pytest.approx(10.0)  # capped at the burst
    assert bucket.tokens() == pytest.approx(0.0)


def test_a_throttle_halves_the_rate_and_it_recovers() -> None:
    """ThrottlingException: the bucket is spent, its rate halves (down to a sixteenth) and doubles back later."""
    clock = Clock()
    bucket = TokenBucket(50, 10.0, clock)
    bucket.throttled()
    assert bucket.current_rate == 5.0 and bucket.tokens() == 0.0 and bucket.capacity == 25.0
    assert bucket.reserve() == pytest.approx(0.2)
    for _ in range(10):
        bucket.throttled()
    assert bucket.scale == budget.MIN_SCALE
    clock.advance(budget.RECOVER_AFTER)
    bucket.tokens()
    assert bucket.scale == 2 * budget.MIN_SCALE
    clock.advance(10 * budget.RECOVER_AFTER)
    bucket.tokens()
    assert bucket.scale == 1.0 and bucket.current_rate == 10.0


@pytest.mark.parametrize(("share", "burst", "rate"), [(0.5, 25, 2.5), (1.0, 50, 5.0), (0.1, 5, 0.5)])
def test_the_share_scales_every_bucket(share: float, burst: float, rate: float) -> None:
    """API_BUDGET is the share of each documented bucket: 0.5 leaves the other half to the account."""
    clock = Clock()
    spend = Budget(share, clock)
    writes = spend.buckets[budget.SERVICE_MODIFY]
    assert (writes.burst, writes.rate) == pytest.approx((burst, rate))
    assert spend.available(budget.SERVICE_MODIFY) == burst
    assert spend.buckets[budget.SERVICE_READS].rate == pytest.approx(20 * share)


@pytest.mark.parametrize("share", [0, -0.1, 1.5])
def test_a_share_outside_zero_to_one_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="share"):
        Budget(share)


def test_reservations_replayed_through_the_same_buckets_are_never_short() -> None:
    """Calls sent when Budget says so fit the documented buckets at the same share: the replay finds none short."""
    clock = Clock()
    spend = Budget(0.5, clock)
    sent: list[tuple[float, str]] = []
    for index in range(400):
        operation = ("UpdateService", "DescribeServices", "ListContainerInstances", "DescribeClusters")[index % 4]
        wait = spend.reserve(operation)
        sent.append((clock.now + wait, operation))
        clock.advance(0.01)
    assert shortfall(sent, 0.5) == dict.fromkeys(shortfall([], 0.5), 0)
    # The same calls all at once would have been short in every category.
    at_once = [(0.0, operation) for _, operation in sent]
    assert all(short > 0 for short in shortfall(at_once, 0.5).values())


def test_shortfall_counts_calls_beyond_burst_and_rate() -> None:
    """60 UpdateService calls in one second against 50 burst: 10 short at full size, 35 at half."""
    calls = [(i / 60, "UpdateService") for i in range(60)]
    assert shortfall(calls, 1.0)[budget.SERVICE_MODIFY] == 60 - 50 - 4  # 4 more refilled within the second
    assert shortfall(calls, 0.5)[budget.SERVICE_MODIFY] == 60 - 25 - 2
