"""How long the helper's netlink thread waits for the GIL while another thread parses.

The netlink thread gives the GIL up at every socket call (a dump is one `recv` per 32 KiB,
a pipelined look-up of 256 links about a dozen) and needs it back to go on; meanwhile the
link monitor parses the notifications the batch causes, pure Python that lets go of the
GIL only when the switch interval forces it. Per switch interval, alternating: one dump of
every link (with the group check's attributes) and 256 pipelined look-ups, with a thread
parsing link messages as the monitor does, and without (the reference).

Root; runs in a scratch network namespace (`unshare --net`) holding N veth pairs, gone
when the script ends.

    .venv/bin/python bench/gil_wait.py [--pairs 1000] [--rounds 10] [--intervals 0.005,0.0005]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netlinkd import rtnl


def timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return 1000 * (time.perf_counter() - start)


def parse_until(message: bytes, stop: threading.Event) -> None:
    """What the link monitor does while a batch runs: parse link messages, in Python."""
    while not stop.is_set():
        for _ in range(100):
            rtnl.parse_link(message)


def inner(pairs: int, rounds: int, intervals: list[float]) -> None:
    nl = rtnl.Rtnl.here()
    here = os.open("/proc/self/ns/net", os.O_RDONLY)
    for start in range(0, pairs, 256):
        requests = [rtnl.create_veth(rtnl.EndSpec(f"ga{i}", here), rtnl.EndSpec(f"gb{i}", here))
                    for i in range(start, min(pairs, start + 256))]
        assert all(reply.error is None for reply in nl.transact(requests))
    answers = list(nl._answers([rtnl.get_link(name="ga0")]))  # the link, then the ACK
    raw = next(message for _slot, kind, _flags, message in answers if kind == rtnl.RTM_NEWLINK)
    names = [f"ga{i}" for i in range(min(256, pairs))]
    def dump() -> object:
        return nl.links(rtnl.GROUP_ATTRS, keep=lambda link: link.group == 7)

    def look() -> object:
        return nl.transact([rtnl.get_link(name=name) for name in names])

    figures: dict[tuple[float, bool], tuple[list[float], list[float]]] = {}
    for _ in range(rounds):
        for interval in intervals:
            for busy in (False, True):
                sys.setswitchinterval(interval)
                stop = threading.Event()
                parser = threading.Thread(target=parse_until, args=(raw, stop))
                if busy:
                    parser.start()
                    time.sleep(0.01)
                dumps, looks = figures.setdefault((interval, busy), ([], []))
                dumps.append(timed(dump))
                looks.append(timed(look))
                stop.set()
                if busy:
                    parser.join()
    print(f"{2 * pairs} links, {rounds} rounds, load average {os.getloadavg()[0]:.1f}; "
          "median ms (min-max)")
    for (interval, busy), (dumps, looks) in figures.items():
        print(f"switch interval {1000 * interval:g} ms, {'a parsing thread' if busy else 'alone'}"
              f": dump {statistics.median(dumps):.1f} ({min(dumps):.1f}-{max(dumps):.1f}), "
              f"256 look-ups {statistics.median(looks):.1f} ({min(looks):.1f}-{max(looks):.1f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--intervals", default="0.005,0.0005")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    intervals = [float(value) for value in args.intervals.split(",")]
    if args.inner:
        inner(args.pairs, args.rounds, intervals)
        return 0
    return subprocess.run(["unshare", "--net", sys.executable, __file__, "--inner",
                           "--pairs", str(args.pairs), "--rounds", str(args.rounds),
                           "--intervals", args.intervals]).returncode


if __name__ == "__main__":
    sys.exit(main())
