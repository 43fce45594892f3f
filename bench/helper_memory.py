"""The helper's memory (issue 16's "helper RSS with 1,000 pairs"), and what holds it.

Starts the whole stack as `bench/run` does (real etcd, netlinkd in the harness sandbox, the
controller), then reads the helper's /proc at three points: idle after the controller's
first batch, with N pairs converged, and after they were deleted again. For each point:
RSS (VmRSS, the target's measure), PSS and USS (private pages) for context, anonymous and
file-backed RSS, threads, and the mappings holding the most RSS (anonymous memory as one
row per kind: the heap, thread stacks, the rest).

    .venv/bin/python bench/helper_memory.py [--pairs 1000] [--json FILE]    (root)

`--other DIR --rounds N`: N rounds each of this checkout's helper and another one's,
alternating (DIR holds its `netlinkd` and `netagent_audit` packages, e.g. `git archive main
netlinkd netagent_audit | tar -x -C DIR`, put first on the helper's PYTHONPATH); the
controller is this checkout's in both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from kernel_watch import KernelWatch
from stack import Stack, make_pairs, smaps_rollup
from suite import NS_A, NS_B, TIMEOUT, gone_set, machine, ready_map

TOP_MAPPINGS = 12
QUIET_S = 2.0  # the helper returns free memory to the kernel 1 s after its last batch


def status_kib(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile (KiB) and Threads of /proc/<pid>/status."""
    wanted = ("VmRSS", "RssAnon", "RssFile", "Threads")
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _sep, value = line.partition(":")
        if key in wanted:
            found[key] = int(value.split()[0])
    return found


def stack_ranges(pid: int) -> set[str]:
    """The address ranges of the threads' stacks (the main one is [stack] in smaps)."""
    ranges: set[str] = set()
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            sp = int(Path(task, "syscall").read_text().split()[-2], 16)
        except (OSError, ValueError, IndexError):
            continue  # running, or not readable: its stack counts as anonymous
        for line in maps:
            low, high = (int(x, 16) for x in line.split()[0].split("-"))
            if low <= sp < high:
                ranges.add(line.split()[0])
    return ranges


def rss_by_mapping(pid: int) -> Counter[str]:
    """RSS (KiB) per mapped file; anonymous memory as [heap], [thread stacks], [anon]."""
    stacks = stack_ranges(pid)
    totals: Counter[str] = Counter()
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if not fields[0].endswith(":"):
            path = fields[5] if len(fields) > 5 else ""
            if fields[0] in stacks or path == "[stack]":
                name = "[thread stacks]"
            elif path.startswith("/"):
                name = path.rsplit("/", 1)[1]
            else:
                name = path or "[anon]"
        elif fields[0] == "Rss:":
            totals[name] += int(fields[1])
    return totals


def snapshot(pid: int) -> dict[str, Any]:
    rollup = smaps_rollup(pid)
    status = status_kib(pid)
    uss = rollup["Private_Clean"] + rollup["Private_Dirty"]
    return {
        "rss_mib": status["VmRSS"] / 1024, "pss_mib": rollup["Pss"], "uss_mib": uss,
        "anon_mib": status["RssAnon"] / 1024, "file_mib": status["RssFile"] / 1024,
        "threads": status["Threads"],
        "top_mappings_mib": {name: kib / 1024
                             for name, kib in rss_by_mapping(pid).most_common(TOP_MAPPINGS)},
    }


def show(points: dict[str, dict[str, Any]]) -> None:
    names = list(points)
    print(f"{'helper memory (MiB)':<28}" + "".join(f"{n:>16}" for n in names))
    for key in ("rss_mib", "pss_mib", "uss_mib", "anon_mib", "file_mib", "threads"):
        print(f"{key:<28}" + "".join(f"{points[n][key]:>16.1f}" for n in names))
    mappings = list(points[names[-2] if len(names) > 1 else names[0]]["top_mappings_mib"])
    for mapping in mappings:
        print(f"  {mapping[:26]:<26}" + "".join(
            f"{points[n]['top_mappings_mib'].get(mapping, 0.0):>16.1f}" for n in names))


def measure(pairs: int, helper_path: str | None = None) -> dict[str, dict[str, Any]]:
    links = 2 * pairs + 64
    stack = Stack([f"max_owned_links = {links}", "max_named_namespaces = 64"], [])
    points: dict[str, dict[str, Any]] = {}
    try:
        stack.start()
        if helper_path is not None:
            stack.sandbox.stop_helper()
            stack.sandbox.env["PYTHONPATH"] = helper_path
            stack.sandbox.start_helper()
        stack.add_namespaces(NS_A, NS_B)
        assert stack.controller is not None and stack.kv is not None
        start_records = len(stack.audit())
        stack.controller.start()
        stack.first_batch_after(start_records, 60)
        stack.wait_controller_idle(quiet=QUIET_S)
        pid = stack.sandbox.helper_pid
        points["idle"] = snapshot(pid)
        ends = make_pairs("m", pairs, NS_A, NS_B, 1)
        with KernelWatch({n: stack.ns_path(n) for n in (NS_A, NS_B)}) as watch:
            waiter = watch.expect(ready_map(ends, NS_A, NS_B), set())
            stack.kv.put_ends(ends)
            watch.wait(waiter, TIMEOUT)
            stack.wait_controller_idle(quiet=QUIET_S)
            points[f"{pairs} pairs"] = snapshot(pid)
            waiter = watch.expect({}, gone_set(ends, NS_A, NS_B))
            stack.kv.delete_prefix("m")
            watch.wait(waiter, TIMEOUT)
            stack.wait_controller_idle(quiet=QUIET_S)
            points["deleted"] = snapshot(pid)
    finally:
        stack.close()
    return points


def alternate(pairs: int, other: str, rounds: int) -> int:
    found: dict[str, list[tuple[float, float, float]]] = {"this checkout": [], other: []}
    for _round in range(rounds):
        for variant, path in (("this checkout", None), (other, other)):
            points = measure(pairs, path)
            rss = tuple(point["rss_mib"] for point in points.values())
            found[variant].append((rss[0], rss[1], rss[2]))
            print(f"{variant}: RSS idle / {pairs} pairs / deleted: "
                  f"{' / '.join(f'{x:.1f}' for x in rss)} MiB, "
                  f"{time.strftime('%H:%M:%S', time.gmtime())} UTC, load {os.getloadavg()[0]:.1f}",
                  flush=True)
    for variant, rows in found.items():
        print(f"{variant}: with {pairs} pairs median {statistics.median(r[1] for r in rows):.1f}"
              f" MiB (max {max(r[1] for r in rows):.1f}), deleted median "
              f"{statistics.median(r[2] for r in rows):.1f} (max {max(r[2] for r in rows):.1f})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--other", help="a directory holding another helper's packages")
    parser.add_argument("--rounds", type=int, default=1, help="per variant, with --other")
    args = parser.parse_args(argv)
    if args.other:
        return alternate(args.pairs, args.other, args.rounds)
    started = time.monotonic()
    points = measure(args.pairs)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": machine(), "pairs": args.pairs, "points": points,
             "wall_s": time.monotonic() - started}, indent=1, sort_keys=True))
    show(points)
    return 0


if __name__ == "__main__":
    sys.exit(main())
