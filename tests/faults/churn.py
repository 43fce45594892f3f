"""Churn: random changes to many pairs put into etcd as fast as it takes them.

Shared by the CI test (tests/faults/test_churn.py, small) and the benchmark
(bench/bench_churn.py, 100 pairs and 2,000 changes, as in issue 12). Each change is one
of: MTU, enabled, addresses (from a few in one /24, so a subnet's primary is often
deleted while another address of it stays), MAC, or the pair deleted and later created
again. The final etcd state is kept in a `Desired`, so the kernel can be checked against it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from tests.faults.faultlib import Desired, veth_end

NAMESPACES = ("churn1", "churn2")


def end_names(index: int) -> tuple[str, str]:
    return f"ch{index}a", f"ch{index}b"


def pair_configs(index: int, rng: random.Random) -> tuple[dict[str, Any], dict[str, Any]]:
    a, b = end_names(index)
    return (veth_end(a, b, 2 * index, netns=NAMESPACES[0], addresses=_addresses(index, rng)),
            veth_end(b, a, 2 * index + 1, netns=NAMESPACES[1], addresses=_addresses(index, rng)))


def _addresses(index: int, rng: random.Random) -> tuple[str, ...]:
    """Up to three of four addresses in the pair's own /24 (and sometimes none)."""
    hosts = rng.sample(range(1, 5), rng.randint(0, 3))
    return tuple(f"10.{80 + index // 250}.{index % 250}.{host}/24" for host in hosts)


def put_pairs(desired: Desired, count: int, rng: random.Random) -> None:
    for index in range(count):
        a, b = pair_configs(index, rng)
        desired.put(a["name"], a)
        desired.put(b["name"], b)


def _change(desired: Desired, index: int, rng: random.Random, gone: set[int]) -> str:
    a, b = end_names(index)
    if index in gone:
        gone.discard(index)
        first, second = pair_configs(index, rng)
        desired.put(a, first)
        desired.put(b, second)
        return "create"
    kind = rng.choice(("mtu", "enabled", "addresses", "addresses", "mac", "delete"))
    if kind == "delete":
        gone.add(index)
        desired.delete(a)
        desired.delete(b)
        return kind
    name = rng.choice((a, b))
    config = dict(desired.configs[name])
    if kind == "mtu":
        config["mtu"] = rng.choice((1280, 1400, 1500, 9000))
    elif kind == "enabled":
        config["enabled"] = not config["enabled"]
    elif kind == "addresses":
        config["ip_addresses"] = list(_addresses(index, rng))
    else:
        config["phys_address"] = ":".join(
            ["02", *(f"{rng.randrange(256):02x}" for _ in range(5))])
    desired.put(name, config)
    return kind


def churn(desired: Desired, pairs: int, changes: int, rng: random.Random) -> float:
    """Put `changes` random changes as fast as etcd takes them; return when the last was put
    (time.monotonic()). Deleted pairs still deleted at the end stay deleted."""
    gone: set[int] = set()
    for _ in range(changes):
        _change(desired, rng.randrange(pairs), rng, gone)
    return time.monotonic()


def converge_seconds(desired: Desired, since: float, timeout: float = 60.0,
                     extra: Callable[[], list[str]] = list) -> float:
    """Seconds from `since` until the kernel and every status equal the config."""
    deadline = time.monotonic() + timeout
    while True:
        problems = desired.problems() + extra()
        now = time.monotonic()
        if not problems:
            return now - since
        if now > deadline:
            raise AssertionError(f"not converged {now - since:.1f} s after the last change: "
                                 f"{problems[:10]}")
        time.sleep(0.05)
