"""Pure-core cost of removing N unconfigured pairs: `reconcile.plan` + `observed.apply`.

No root, no kernel: 2N observed links (N pairs across two named namespaces) and no desired
config, so the plan is N DeleteLinks. The baseline, in the same process, is one linear pass
over the same links (indexing them by link id). A ratio that stays flat as N grows means
planning is linear.

Usage: .venv/bin/python bench/bench_plan.py [--pairs 500 1000 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller import observed, reconcile
from controller.ops import NsRef, ObservedLink


def _links(pairs: int) -> list[ObservedLink]:
    a, b = NsRef.named("bench-a"), NsRef.named("bench-b")
    links: list[ObservedLink] = []
    for i in range(pairs):
        links.append(ObservedLink(name=f"x{i}", netns=a, ifindex=2 * i + 1, mac="", mtu=1500,
                                  up=True, addresses=(), peer=f"y{i}"))
        links.append(ObservedLink(name=f"y{i}", netns=b, ifindex=2 * i + 2, mac="", mtu=1500,
                                  up=True, addresses=(), peer=f"x{i}"))
    return links


def _median_ms(run: Callable[[], object], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def _plan_and_apply(links: list[ObservedLink]) -> None:
    plan = reconcile.plan({}, lambda ns: reconcile.Availability(None), links)
    assert len(plan.ops) == len(links) // 2
    assert observed.apply(links, plan.ops) == ()


def _index(links: list[ObservedLink]) -> None:
    {observed.link_id(link.name, link.netns): link for link in links}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"{'pairs':>6} {'plan+apply ms':>14} {'baseline ms':>12} {'ratio':>7}")
    for pairs in args.pairs:
        links = _links(pairs)
        core = _median_ms(partial(_plan_and_apply, links), args.rounds)
        base = _median_ms(partial(_index, links), args.rounds)
        print(f"{pairs:>6} {core:>14.1f} {base:>12.2f} {core / base:>6.1f}x")


if __name__ == "__main__":
    main()
