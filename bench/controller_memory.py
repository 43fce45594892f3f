"""The controller's RSS with 10,000 interfaces (issue 16), repeated, and alternating with
other checkouts' controllers (before/after).

Root. The whole stack as in `bench/run` (real etcd, netlinkd in the harness sandbox, the
controller as uid 65534). Each round starts a fresh controller, puts PAIRS pairs in one
burst (etcd transactions of 128), waits until the kernel shows every end UP with its
addresses, every status is published CONFIGURED and UP, and the audit log has been quiet
for 0.5 s (as `bench/run`'s RSS phase does), reads the controller's RSS, then deletes the
pairs and stops the controller. `--at-idle` reads it at the first quiet moment instead,
before the statuses' publish (as both did before).

    bench/controller_memory.py --pairs 5000 --rounds 3 --other /tmp/main-controller

`--other DIR` (repeatable): a directory holding another `controller` package (e.g.
`git archive main controller | tar -x -C DIR`); rounds cycle through this checkout and
each DIR (put first on the controller's PYTHONPATH). `--tracemalloc DIR`: the
controller traces allocations (`PYTHONTRACEMALLOC=1`, through the `sitecustomize` this
script writes into DIR) and dumps a snapshot where the RSS is read; the largest sites by
line are printed. Traced rounds inflate RSS; do not compare their RSS figures.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

from kernel_watch import KernelWatch
from stack import Stack, make_pairs, rss_mib, smaps_rollup
from suite import NS_A, NS_B, TIMEOUT, gone_set, ready_map

from tests.harness import wait_until

SITECUSTOMIZE = '''\
import os, threading, time, tracemalloc

def _serve(directory):
    request = os.path.join(directory, "dump")
    while True:
        time.sleep(0.1)
        if os.path.exists(request):
            tracemalloc.take_snapshot().dump(os.path.join(directory, "snapshot.tmp"))
            os.rename(os.path.join(directory, "snapshot.tmp"),
                      os.path.join(directory, "snapshot"))
            os.unlink(request)

if os.environ.get("BENCH_TRACEMALLOC_DIR"):
    threading.Thread(target=_serve, args=(os.environ["BENCH_TRACEMALLOC_DIR"],),
                     daemon=True).start()
'''


def traced_snapshot(directory: Path) -> tracemalloc.Snapshot:
    (directory / "snapshot").unlink(missing_ok=True)
    (directory / "dump").write_text("")
    wait_until(lambda: (directory / "snapshot").exists(), timeout=120, interval=0.1,
               what="the controller's tracemalloc snapshot")
    return tracemalloc.Snapshot.load(str(directory / "snapshot"))


def show_snapshot(snapshot: tracemalloc.Snapshot, top: int) -> None:
    stats = snapshot.statistics("lineno")
    total = sum(s.size for s in stats)
    print(f"  traced {total / 2**20:.1f} MiB in {sum(s.count for s in stats)} blocks")
    for stat in stats[:top]:
        frame = stat.traceback[0]
        print(f"  {stat.size / 2**20:7.2f} MiB {stat.count:8d}  {frame.filename}:{frame.lineno}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2, help="per variant")
    parser.add_argument("--other", action="append", default=[],
                        help="a directory holding another controller package")
    parser.add_argument("--tracemalloc", help="a directory for the traced controller's files")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--stop-file", help="no round starts once this file exists")
    parser.add_argument("--at-idle", action="store_true",
                        help="read at the first quiet moment, not once the statuses are "
                             "published")
    args = parser.parse_args(argv)
    variants = ["this checkout", *args.other]
    for other in args.other:
        compileall.compile_dir(os.path.join(other, "controller"), quiet=1)
    trace_dir = Path(args.tracemalloc) if args.tracemalloc else None
    if trace_dir is not None:
        trace_dir.mkdir(parents=True, exist_ok=True)
        trace_dir.chmod(0o777)
        (trace_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
    stack = Stack([f"max_owned_links = {2 * args.pairs + 64}", "max_named_namespaces = 64"],
                  [])
    found: dict[str, list[float]] = {v: [] for v in variants}
    try:
        stack.start()
        assert stack.controller is not None and stack.notify is not None
        assert stack.kv is not None
        kv, controller = stack.kv, stack.controller
        stack.add_namespaces(NS_A, NS_B)
        state_dir = controller.state_dir
        ends = make_pairs("r", args.pairs, NS_A, NS_B, 1)
        with KernelWatch({n: stack.ns_path(n) for n in (NS_A, NS_B)}) as watch:
            for i in range(args.rounds * len(variants)):
                if args.stop_file and os.path.exists(args.stop_file):
                    break
                variant = variants[i % len(variants)]
                env = controller.extra_env
                path = [] if variant == variants[0] else [variant]
                controller.state_dir = state_dir if variant == variants[0] else None
                if trace_dir is not None:
                    path.append(str(trace_dir))
                    env["PYTHONTRACEMALLOC"] = "1"
                    env["BENCH_TRACEMALLOC_DIR"] = str(trace_dir)
                env.pop("PYTHONPATH", None)
                if path:
                    env["PYTHONPATH"] = os.pathsep.join(path)
                readies = stack.notify.count()
                controller.start()
                stack.notify.wait(readies, 60)
                stack.wait_controller_idle()
                waiter = watch.expect(ready_map(ends, NS_A, NS_B), set())
                started = time.monotonic()
                kv.put_ends(ends)
                watch.wait(waiter, TIMEOUT)
                up_s = time.monotonic() - started
                stack.wait_controller_idle()
                if not args.at_idle:
                    wait_until(lambda: kv.published_up() == 2 * args.pairs, timeout=TIMEOUT,
                               interval=0.5, what="every status CONFIGURED and UP")
                    stack.wait_controller_idle()
                rss = rss_mib(controller.pid)
                rollup = smaps_rollup(controller.pid)
                found[variant].append(rss)
                print(f"{variant}: RSS {rss:.1f} MiB (anonymous {rollup['Anonymous']:.1f}), "
                      f"{2 * args.pairs} interfaces UP after {up_s:.1f} s, load "
                      f"{os.getloadavg()[0]:.1f}", flush=True)
                if trace_dir is not None:
                    show_snapshot(traced_snapshot(trace_dir), args.top)
                waiter = watch.expect({}, gone_set(ends, NS_A, NS_B))
                kv.delete_prefix("r")
                watch.wait(waiter, TIMEOUT)
                stack.wait_controller_idle()
                controller.stop()
    finally:
        stack.close()
    for variant, values in found.items():
        if not values:
            continue
        print(f"{variant}: RSS median {statistics.median(values):.1f} MiB "
              f"(min {min(values):.1f}, max {max(values):.1f}; {len(values)} rounds)")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
