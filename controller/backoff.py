"""Jittered exponential backoff for reconnect loops. Pure: the caller sleeps.

"Full jitter": the n-th consecutive failure waits a random time in [0, min(cap, base * 2^n)],
so a fleet that lost etcd at the same instant does not come back in lockstep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base: float = 0.2
    cap: float = 10.0
    floor: float = 0.05
    """Never retry sooner than this (a zero draw would spin)."""
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def next_delay(self) -> float:
        """Seconds to wait after one more consecutive failure."""
        ceiling = min(self.cap, self.base * (2 ** min(self.failures, 30)))
        self.failures += 1
        return max(self.floor, self.rng.uniform(0, ceiling))

    def succeeded(self) -> None:
        self.failures = 0
