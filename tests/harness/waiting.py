"""Polling for eventual state. Tests never assert on elapsed time; they wait for a state."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The awaited state did not appear before the deadline."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "",
    describe: Callable[[], object] | None = None,
) -> T:
    """Call `predicate` until it returns something truthy and return that value.

    On timeout raise `WaitTimeout` naming `what` and showing `describe()` (the state seen
    last), so a failing test says what it was waiting for and what it saw instead.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            seen = describe() if describe is not None else value
            label = what or getattr(predicate, "__name__", "condition")
            raise WaitTimeout(
                f"timed out after {timeout:g}s waiting for {label}; last seen: {seen!r}"
            )
        time.sleep(interval)
