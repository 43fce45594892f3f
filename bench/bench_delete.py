"""Deleting N pairs (issue 16's "delete 1,000 pairs <= 2x `ip link del group`"), alone.

The delete phase of `bench/run` without the rest: the whole stack (real etcd, netlinkd in
the harness sandbox, the controller); per round, N pairs are put and converged, the same N
pairs are made with `ip -batch` and deleted with one `ip link del group` (the baseline),
then netagent's pairs are deleted with one etcd delete_prefix, timed until the kernel
announced every end gone. Prints per round the wall time and CPU of both and their ratios,
and the helper's own CPU. With --py-spy FILE, py-spy (on PATH, or --py-spy-bin) samples
the helper during netagent's deletions only and writes a flame graph or speedscope file.

    .venv/bin/python bench/bench_delete.py [--pairs 1000] [--rounds 3] [--json FILE]
        [--py-spy FILE [--py-spy-format raw] [--py-spy-args=--gil]]         (root)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import baselines
from benchlib import bulk_stack
from kernel_watch import KernelWatch
from stack import Stack
from suite import IP_A, IP_B, NS_A, NS_B, Suite, gone_set, machine, ready_map


def _user_system(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _round(suite: Suite, stack: Stack, count: int, number: int,
           spy: list[str] | None) -> dict[str, Any]:
    ends = suite._pairs(f"d{number}_", count, NS_A, NS_B)
    ip_ends = suite._pairs(f"e{number}_", count, IP_A, IP_B)
    figures: dict[str, Any] = {}
    paths = {n: stack.ns_path(n) for n in (NS_A, NS_B, IP_A, IP_B)}
    with KernelWatch(paths) as watch:
        suite._timed_until(watch, lambda: suite.kv.put_ends(ends),
                           ready=ready_map(ends, NS_A, NS_B))
        stack.wait_controller_idle()
        suite._timed_until(watch, lambda: baselines.ip_create(stack, ip_ends),
                           ready=ready_map(ip_ends, IP_A, IP_B))
        figures["ip_del_group_s"] = suite._timed_until(
            watch, lambda: baselines.ip_delete_group(stack, IP_A),
            gone=gone_set(ip_ends, IP_A, IP_B), cpu=figures, key="ip_del_group")
        time.sleep(1.5)  # the helper's trim after the create, off the figure
        start_records = len(stack.audit())
        helper_before = _user_system(stack.sandbox.helper_pid)
        sampler = None if spy is None else subprocess.Popen(spy)
        try:
            figures["delete_s"] = suite._timed_until(
                watch, lambda: suite.kv.delete_prefix(f"d{number}_"),
                gone=gone_set(ends, NS_A, NS_B), cpu=figures, key="delete")
        finally:
            if sampler is not None:
                sampler.send_signal(2)  # py-spy writes its file on SIGINT
                sampler.wait(60)
        user, system = _user_system(stack.sandbox.helper_pid)
        figures["helper_user_s"] = user - helper_before[0]
        figures["helper_system_s"] = system - helper_before[1]
        figures["helper_cpu_s"] = figures["helper_user_s"] + figures["helper_system_s"]
        figures["delete_batches"] = stack.batches_since(start_records)
    figures["wall_ratio"] = figures["delete_s"] / figures["ip_del_group_s"]
    figures["cpu_ratio"] = figures["delete_cpu_s"] / figures["ip_del_group_cpu_s"]
    figures["helper_cpu_ratio"] = figures["helper_cpu_s"] / figures["ip_del_group_cpu_s"]
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--py-spy", help="sample the helper while it deletes; write here")
    parser.add_argument("--py-spy-format", default="flamegraph",
                        help="flamegraph (SVG), speedscope or raw")
    parser.add_argument("--py-spy-bin", default="py-spy")
    parser.add_argument("--perf", help="instead: `perf record -g` the helper; write here")
    parser.add_argument("--py-spy-args", default="",
                        help="more py-spy record options, e.g. '--gil' (only the GIL holder)")
    args = parser.parse_args(argv)
    rounds: list[dict[str, Any]] = []
    stack, suite = bulk_stack(args.pairs)
    try:
        for number in range(args.rounds):
            spy = None
            if args.py_spy:
                out = Path(args.py_spy)
                out = out.with_name(f"{out.stem}.{number}{out.suffix}")
                spy = [args.py_spy_bin, "record", "--pid", str(stack.sandbox.helper_pid),
                       "--format", args.py_spy_format, "--output", str(out), "--threads",
                       "--nonblocking", "--rate", "250", *args.py_spy_args.split()]
            if args.perf:
                spy = ["perf", "record", "-q", "-g", "-p", str(stack.sandbox.helper_pid),
                       "-o", f"{args.perf}.{number}"]
            rounds.append(_round(suite, stack, args.pairs, number, spy))
            figures = rounds[-1]
            print(f"round {number}: delete {figures['delete_s']:.2f} s vs ip link del group "
                  f"{figures['ip_del_group_s']:.2f} s (x{figures['wall_ratio']:.2f}); CPU "
                  f"{figures['delete_cpu_s']:.2f} s (helper {figures['helper_cpu_s']:.2f}: user "
                  f"{figures['helper_user_s']:.2f}, system {figures['helper_system_s']:.2f}) vs "
                  f"{figures['ip_del_group_cpu_s']:.2f} s (x{figures['cpu_ratio']:.2f}, helper "
                  f"x{figures['helper_cpu_ratio']:.2f}); {figures['delete_batches']} batches",
                  flush=True)
    finally:
        stack.close()
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": machine(), "pairs": args.pairs, "rounds": rounds}, indent=1,
            sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
