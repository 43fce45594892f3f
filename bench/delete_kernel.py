"""The kernel's side of deleting N pairs in groups of 256, as the helper does, against one
`ip link del group`: wall and system CPU of each way, and of each step.

Per round and way, in two fresh scratch namespaces (`bench/floor.py`), N pairs as
`bench/run` makes them (MAC, MTU, IPv4 + IPv6, UP, DAD off), then deleted:

  one       born in one group, one RTM_DELLINK of the group (`ip link del group`)
  marks     born in group 0; per 256: the links moved to a group (one sendmsg), then
            the group deleted (the helper before 39e2ec6)
  downmark  the same, each mark also setting the link down (the helper since 39e2ec6)
  alldown   every link set down first (256 per sendmsg), then marked and deleted per 256

Ways alternate within a round. Printed per run: wall and system seconds, and per step
(m: marks, d: group delete) wall/system milliseconds.

    .venv/bin/python bench/delete_kernel.py [--pairs 1000] [--rounds 3]
        [--ways one,marks,downmark,alldown]                                    (root)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Callable

import floor
from floor import Side, _checked, scratch_namespaces
from stack import make_pairs

from netlinkd import rtnl

CHUNK = 256
MARKS = 1000  # the groups marked links go to: MARKS + n


class Way:
    def __init__(self, a: Side, indexes: list[int]) -> None:
        self.a = a
        self.chunks = [indexes[k:k + CHUNK] for k in range(0, len(indexes), CHUNK)]
        self.steps: list[str] = []

    def step(self, what: str, requests: list[rtnl.Request]) -> None:
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        _checked(self.a.nl.transact(requests))
        wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
        system = after.ru_stime - before.ru_stime
        self.steps.append(f"{what} {1000 * wall:.0f}/{1000 * system:.0f}")

    def groups(self, down: bool) -> None:
        for n, chunk in enumerate(self.chunks):
            self.step("m", [rtnl.set_link(i, group=MARKS + n, up=False if down else None)
                            for i in chunk])
            self.step("d", [rtnl.delete_group(MARKS + n)])


WAYS: dict[str, Callable[[Way], None]] = {
    "one": lambda way: way.step("d", [rtnl.delete_group(floor.GROUP)]),
    "marks": lambda way: way.groups(down=False),
    "downmark": lambda way: way.groups(down=True),
    "alldown": lambda way: ([way.step("down", [rtnl.set_link(i, up=False) for i in chunk])
                             for chunk in way.chunks], way.groups(down=True)),
}


def run(name: str, count: int) -> dict[str, object]:
    with scratch_namespaces(2) as (a, b):
        ends = make_pairs("k", count, "a", "b", 7)
        born = floor.GROUP
        floor.GROUP = born if name == "one" else 0
        try:
            floor.create(a, b, ends)
        finally:
            floor.GROUP = born
        index = {link.name: link.index for link in a.nl.links()}
        way = Way(a, [index[x.name] for x, _ in ends])
        time.sleep(0.5)
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        WAYS[name](way)
        wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
        left = len(a.nl.links()) - 1
    return {"way": name, "wall_s": round(wall, 3),
            "sys_s": round(after.ru_stime - before.ru_stime, 3), "left": left,
            "load": round(os.getloadavg()[0], 1), "steps": " ".join(way.steps)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ways", default="one,marks,downmark,alldown")
    args = parser.parse_args()
    for number in range(args.rounds):
        for name in args.ways.split(","):
            print(json.dumps({"round": number, **run(name, args.pairs)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
