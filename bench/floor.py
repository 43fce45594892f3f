"""The kernel's own floor for each benchmark of `bench/run`: the same pairs (MAC, MTU, IPv4 +
IPv6, UP, DAD off) made by raw pipelined rtnetlink (netlinkd.rtnl, no checks, no audit, no
RPC), which is what a C program pipelining its requests would also pay the kernel. Printed:
wall seconds and this process's CPU split into user (the encoding, Python's share) and
system (the kernel's share, the true floor).

  latency   one pair: create, look both ends up, configure each end (4 sendmsg)
  create N  all creates in one pipeline, one dump per side for the ifindexes, then all
            addresses and UPs of each side in one pipeline
  delete N  one RTM_DELLINK naming the group the pairs were born in; and the same pairs
            in groups of 256 (one batch of netlinkd deletes at most that many), one
            RTM_DELLINK per group

Usage (root): .venv/bin/python bench/floor.py [--sizes 100,1000,3000] [--samples 50]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

from benchlib import REPO  # noqa: F401  (puts the repository on sys.path)
from stack import MTU, End, make_pairs

from netlinkd import rtnl
from netlinkd.netns import netlink_socket_in

GROUP = 77
CHUNK = 256  # netlinkd's max_ops_per_batch: a batch deletes at most this many pairs


@dataclass
class Side:
    nl: rtnl.Rtnl
    fd: int


@contextmanager
def scratch_namespaces(count: int) -> Iterator[list[Side]]:
    """`count` fresh network namespaces (IPv6 DAD off), gone with their holder processes."""
    script = ("echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad && "
              "echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad && echo ready && "
              "exec sleep 3600")
    holders = [subprocess.Popen(["unshare", "--net", "sh", "-c", script],
                                stdout=subprocess.PIPE) for _ in range(count)]
    sides: list[Side] = []
    try:
        for holder in holders:
            assert holder.stdout is not None and holder.stdout.readline().strip() == b"ready"
            fd = os.open(f"/proc/{holder.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            sides.append(Side(rtnl.Rtnl(netlink_socket_in(fd)), fd))
        yield sides
    finally:
        for side in sides:
            side.nl.close()
            os.close(side.fd)
        for holder in holders:
            holder.kill()
            holder.wait()


def _checked(replies: list[rtnl.Reply]) -> None:
    errors = [r.error for r in replies if r.error is not None]
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, e.g. {errors[0]}")


def _configure(end: End, index: int) -> list[rtnl.Request]:
    return [rtnl.add_address(index, end.v4), rtnl.add_address(index, end.v6),
            rtnl.set_link(index, up=True)]


def create(a: Side, b: Side, ends: list[tuple[End, End]], chunk: int = 0) -> None:
    """With `chunk`, each run of `chunk` pairs is born in a group of its own (GROUP + n)."""

    def group(i: int) -> int:
        return GROUP + (i // chunk if chunk else 0)

    _checked(a.nl.transact([
        rtnl.create_veth(rtnl.EndSpec(x.name, a.fd, x.mac, MTU, group(i)),
                         rtnl.EndSpec(y.name, b.fd, y.mac, MTU, group(i)))
        for i, (x, y) in enumerate(ends)]))
    for side, pick in ((a, 0), (b, 1)):
        indexes = {link.name: link.index for link in side.nl.links()}
        _checked(side.nl.transact([request for pair in ends for request in
                                   _configure(pair[pick], indexes[pair[pick].name])]))


def create_one(a: Side, b: Side, pair: tuple[End, End]) -> None:
    x, y = pair
    a.nl.request(rtnl.create_veth(rtnl.EndSpec(x.name, a.fd, x.mac, MTU, GROUP),
                                  rtnl.EndSpec(y.name, b.fd, y.mac, MTU, GROUP)))
    for side, end in ((a, x), (b, y)):
        index = side.nl.request(rtnl.get_link(name=end.name))[0].index
        _checked(side.nl.transact(_configure(end, index)))


def delete_group(a: Side, groups: int = 1) -> None:
    for n in range(groups):
        _checked(a.nl.transact([rtnl.delete_group(GROUP + n)]))


def measured(work: Callable[[], None]) -> dict[str, float]:
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    work()
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    return {"wall_s": wall, "user_s": after.ru_utime - before.ru_utime,
            "sys_s": after.ru_stime - before.ru_stime}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,3000")
    parser.add_argument("--samples", type=int, default=50)
    args = parser.parse_args()
    results: dict[str, object] = {}
    latencies: list[float] = []
    with scratch_namespaces(2) as (a, b):
        for pair in make_pairs("f", args.samples, "a", "b", 7):
            latencies.append(measured(partial(create_one, a, b, pair))["wall_s"])
    results["latency_p50_s"] = statistics.median(latencies)
    results["latency_p99_s"] = sorted(latencies)[round(0.99 * (len(latencies) - 1))]
    for count in (int(s) for s in args.sizes.split(",")):
        with scratch_namespaces(2) as (a, b):
            ends = make_pairs("f", count, "a", "b", 7)
            results[f"create_{count}"] = measured(partial(create, a, b, ends))
            results[f"delete_{count}"] = measured(partial(delete_group, a))
        with scratch_namespaces(2) as (a, b):  # the same, deleted in groups of CHUNK pairs
            create(a, b, ends, CHUNK)
            groups = (count + CHUNK - 1) // CHUNK
            results[f"delete_{count}_in_groups_of_{CHUNK}"] = measured(
                partial(delete_group, a, groups))
    for key, value in results.items():
        print(f"{key}: {json.dumps(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
