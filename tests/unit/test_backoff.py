"""Jittered exponential backoff (pure)."""

from __future__ import annotations

import random

from controller.backoff import Backoff


def test_delays_grow_to_the_cap_with_jitter_and_reset_on_success() -> None:
    backoff = Backoff(base=0.2, cap=10.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(40)]
    assert all(0.05 <= d <= 10.0 for d in delays)
    assert max(delays[:3]) <= 0.8  # ceilings 0.2, 0.4, 0.8
    assert sum(delays[20:]) / 20 > 3.0  # near the cap the mean is cap / 2
    assert len({round(d, 6) for d in delays[20:]}) == 20  # jittered, not lockstep
    backoff.succeeded()
    assert backoff.next_delay() <= 0.2


def test_two_agents_do_not_retry_in_lockstep() -> None:
    first, second = Backoff(rng=random.Random(1)), Backoff(rng=random.Random(2))
    assert [first.next_delay() for _ in range(10)] != [second.next_delay() for _ in range(10)]
