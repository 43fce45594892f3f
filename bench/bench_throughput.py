"""Creating and deleting N pairs through the whole stack, repeated, optionally alternating
with another checkout's controller and helper (before/after in one run).

Root. The stack of `bench/run` (real etcd, netlinkd in the harness sandbox, the controller
as uid 65534). Per round: N pairs put in etcd until every end is UP with its addresses
(against `ip -batch` making the same pairs), then deleted with one etcd delete_prefix
until every end is gone (against one `ip link del group`). Per figure: wall time, the CPU
of helper, controller and etcd, and each thread's CPU of the helper and the controller
(`/proc/<pid>/task`, the busiest first), and in the JSON when each helper batch's intent and
result were logged (`create_batches_ms`, `delete_batches_ms`).

    bench/bench_throughput.py --pairs 1000 --rounds 2 --other /tmp/main-tree

`--other DIR`: a directory holding other `controller` and `netlinkd` packages (e.g.
`git archive main controller netlinkd | tar -x -C DIR`); rounds alternate between them
(put first on both processes' PYTHONPATH, both restarted) and this checkout's.
`--py-spy DIR`: py-spy samples the helper and the controller during each create and
delete and writes collapsed stacks there (py-spy on PATH or in the venv).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import baselines
from benchlib import REPO, bulk_stack
from kernel_watch import KernelWatch
from stack import Stack, wall
from suite import IP_A, IP_B, NS_A, NS_B, Suite, gone_set, machine, ready_map


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of `pid` so far."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return found


def _threads_since(before: dict[int, float], now: dict[int, float]) -> dict[str, float]:
    """Thread id -> CPU seconds spent, the busiest first (py-spy names the thread ids)."""
    spent = sorted(((now[t] - before.get(t, 0.0), t) for t in now), reverse=True)
    return {str(tid): round(s, 2) for s, tid in spent if s >= 0.01}


class Spy:
    """py-spy on one process while a phase runs (collapsed stacks, one file per phase)."""

    def __init__(self, out: Path | None, extra: list[str]) -> None:
        self.out = out
        self.extra = extra
        binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.binary = binary
        self._running: list[subprocess.Popen[bytes]] = []

    def start(self, pids: dict[str, int], phase: str) -> None:
        if self.out is None:
            return
        for name, pid in pids.items():
            self._running.append(subprocess.Popen(
                [self.binary, "record", "--pid", str(pid), "--format", "raw", "--threads",
                 "--nonblocking", "--rate", "200", "--output",
                 str(self.out / f"{phase}.{name}.txt"), *self.extra],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def stop(self) -> None:
        for proc in self._running:
            proc.send_signal(2)  # py-spy writes its file on SIGINT
        for proc in self._running:
            proc.wait(60)
        self._running.clear()


def _phase(suite: Suite, stack: Stack, spy: Spy, phase: str, figures: dict[str, Any],
           key: str, watch: KernelWatch, act: Any, **expect: Any) -> None:
    pids = {"helper": stack.sandbox.helper_pid, "controller": suite._controller_pid()}
    before = {name: thread_cpu(pid) for name, pid in pids.items()}
    spy.start(pids, phase)
    records, started = len(stack.audit()), time.time()
    try:
        figures[f"{key}_s"] = suite._timed_until(watch, act, cpu=figures, key=key, **expect)
    finally:
        spy.stop()
    figures[f"{key}_batches_ms"] = [  # each helper batch's intent and result, ms after act()
        [r["kind"], r.get("seq"), len(r.get("ops") or ()), round(1000 * (wall(r["ts"]) - started))]
        for r in stack.audit()[records:] if r.get("kind") in ("intent", "result")]
    for name, pid in pids.items():
        figures[f"{key}_{name}_threads_s"] = _threads_since(before[name], thread_cpu(pid))


def one_round(suite: Suite, stack: Stack, count: int, number: int, spy: Spy,
              variant: str) -> dict[str, Any]:
    ends = suite._pairs(f"d{number}_", count, NS_A, NS_B)
    ip_ends = suite._pairs(f"e{number}_", count, IP_A, IP_B)
    figures: dict[str, Any] = {"variant": variant, "load_start": os.getloadavg()[0]}
    paths = {n: stack.ns_path(n) for n in (NS_A, NS_B, IP_A, IP_B)}
    with KernelWatch(paths) as watch:
        records = len(stack.audit())
        _phase(suite, stack, spy, f"{number}.create", figures, "create", watch,
               lambda: suite.kv.put_ends(ends), ready=ready_map(ends, NS_A, NS_B))
        figures["create_batches"] = stack.batches_since(records)
        figures["ip_batch_create_s"] = suite._timed_until(
            watch, lambda: baselines.ip_create(stack, ip_ends),
            ready=ready_map(ip_ends, IP_A, IP_B), cpu=figures, key="ip_batch_create")
        figures["ip_del_group_s"] = suite._timed_until(
            watch, lambda: baselines.ip_delete_group(stack, IP_A),
            gone=gone_set(ip_ends, IP_A, IP_B), cpu=figures, key="ip_del_group")
        time.sleep(1.5)  # the helper's trim after the create, off the figure
        records = len(stack.audit())
        _phase(suite, stack, spy, f"{number}.delete", figures, "delete", watch,
               lambda: suite.kv.delete_prefix(f"d{number}_"), gone=gone_set(ends, NS_A, NS_B))
        figures["delete_batches"] = stack.batches_since(records)
    for what, base in (("create", "ip_batch_create"), ("delete", "ip_del_group")):
        figures[f"{what}_wall_ratio"] = figures[f"{what}_s"] / figures[f"{base}_s"]
        figures[f"{what}_cpu_ratio"] = figures[f"{what}_cpu_s"] / figures[f"{base}_cpu_s"]
    figures["load_end"] = os.getloadavg()[0]
    return figures


def switch(stack: Stack, variant: str | None) -> None:
    """Both processes restarted, with `variant`'s packages first on their path (or none)."""
    assert stack.controller is not None and stack.notify is not None
    env = {"PYTHONPATH": variant} if variant else {}
    stack.controller.stop()
    stack.sandbox.env.pop("PYTHONPATH", None)
    stack.sandbox.env.update(env)
    stack.sandbox.restart()
    stack.controller.extra_env.pop("PYTHONPATH", None)
    stack.controller.extra_env.update(env)
    readies = stack.notify.count()
    stack.controller.start()
    stack.notify.wait(readies, 60)
    stack.wait_controller_idle()


def show(figures: dict[str, Any], number: int) -> None:
    f = figures
    for what, base, name in (("create", "ip_batch_create", "ip -batch"),
                             ("delete", "ip_del_group", "ip link del group")):
        spent = f[f"{what}_cpu_by_process_s"]
        print(f"round {number} [{f['variant']}] {what}: {f[f'{what}_s']:.2f} s vs {name} "
              f"{f[f'{base}_s']:.2f} s (x{f[f'{what}_wall_ratio']:.2f}); CPU "
              f"{f[f'{what}_cpu_s']:.2f} s (helper {spent['helper']:.2f}, controller "
              f"{spent['controller']:.2f}, etcd {spent['etcd']:.2f}) vs "
              f"{f[f'{base}_cpu_s']:.2f} s (x{f[f'{what}_cpu_ratio']:.2f}); "
              f"{f[f'{what}_batches']} batches; threads: helper "
              f"{f[f'{what}_helper_threads_s']}, controller "
              f"{f[f'{what}_controller_threads_s']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2, help="per variant")
    parser.add_argument("--other", help="a directory holding other controller and netlinkd")
    parser.add_argument("--py-spy", help="a directory for py-spy's collapsed stacks")
    parser.add_argument("--py-spy-args", default="",
                        help="more py-spy record options, e.g. '--gil' (only the GIL holder)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    variants: list[str | None] = [None] + ([args.other] if args.other else [])
    if args.other:
        for package in ("controller", "netlinkd"):
            compileall.compile_dir(os.path.join(args.other, package), quiet=1)
    spy_dir = Path(args.py_spy) if args.py_spy else None
    if spy_dir is not None:
        spy_dir.mkdir(parents=True, exist_ok=True)
    spy = Spy(spy_dir, args.py_spy_args.split())
    rounds: list[dict[str, Any]] = []
    stack, suite = bulk_stack(args.pairs)
    try:
        for number in range(args.rounds * len(variants)):
            variant = variants[number % len(variants)]
            if len(variants) > 1:
                switch(stack, variant)
            rounds.append(one_round(suite, stack, args.pairs, number, spy,
                                    variant or "this checkout"))
            show(rounds[-1], number)
    finally:
        stack.close()
    for variant in variants:
        name = variant or "this checkout"
        mine = [r for r in rounds if r["variant"] == name]
        med = statistics.median
        print(f"{name}: median create x{med(r['create_wall_ratio'] for r in mine):.2f}"
              f" (CPU x{med(r['create_cpu_ratio'] for r in mine):.2f}), delete "
              f"x{med(r['delete_wall_ratio'] for r in mine):.2f} (CPU "
              f"x{med(r['delete_cpu_ratio'] for r in mine):.2f})")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": machine(), "pairs": args.pairs, "repo": str(REPO), "rounds": rounds},
            indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
