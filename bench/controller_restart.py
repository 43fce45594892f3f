"""A controller restart's resync, repeated: `bench/run`'s restart figure with more samples,
and optionally alternating with another checkout's controller (before/after).

Root. The whole stack as in `bench/run` (real etcd, netlinkd in the harness sandbox, the
controller as uid 65534); PAIRS pairs are made and converged once, then the controller is
restarted RESTARTS times per variant. For each restart: its first batch, that batch's
result, and READY=1 (its first listing planned against the kernel and its statuses
published), from its start; and the controller's CPU seconds at READY=1.

    bench/controller_restart.py --pairs 1000 --restarts 4 --other /tmp/main-controller

`--other DIR`: a directory holding another `controller` package (e.g. `git archive main
controller | tar -x -C DIR`); restarts alternate between it (put first on the
controller's PYTHONPATH) and this checkout's. The other one gets no `--state-dir` (an
older controller has no such option) unless `--other-state-dir` (both then share the
stack's, so they must record the same format); this checkout's gets the stack's.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import sys
import time
from collections.abc import Sequence

from stack import Stack, cpu_seconds, make_pairs

from tests.harness import wait_until

NS_A, NS_B = "bench-a", "bench-b"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--restarts", type=int, default=4, help="per variant")
    parser.add_argument("--other", help="a directory holding another controller package")
    parser.add_argument("--other-state-dir", action="store_true",
                        help="give the other controller --state-dir too")
    args = parser.parse_args(argv)
    variants = ["this checkout"] + ([args.other] if args.other else [])
    if args.other:
        compileall.compile_dir(os.path.join(args.other, "controller"), quiet=1)
    stack = Stack([f"max_owned_links = {2 * args.pairs + 64}", "max_named_namespaces = 64"], [])
    found: dict[str, list[tuple[float, float, float, float]]] = {v: [] for v in variants}
    try:
        stack.start()
        assert stack.controller is not None and stack.notify is not None
        assert stack.kv is not None
        kv = stack.kv
        stack.add_namespaces(NS_A, NS_B)
        stack.controller.start()
        stack.notify.wait(0, 60)
        kv.put_ends(make_pairs("t", args.pairs, NS_A, NS_B, 0))
        wait_until(lambda: kv.published_up() == 2 * args.pairs, timeout=600,
                   interval=0.2, what="every status CONFIGURED and UP")
        stack.wait_controller_idle()
        state_dir = stack.controller.state_dir
        for i in range(args.restarts * len(variants)):
            variant = variants[i % len(variants)]
            env = stack.controller.extra_env
            env.pop("PYTHONPATH", None)
            stack.controller.state_dir = state_dir
            if variant != variants[0]:
                env["PYTHONPATH"] = variant
                stack.controller.state_dir = state_dir if args.other_state_dir else None
            stack.controller.stop()
            records, readies = len(stack.audit()), stack.notify.count()
            started = time.time()
            stack.controller.start()
            ready = stack.notify.wait(readies, 60)
            cpu = cpu_seconds(stack.controller.pid)
            intent, result, _n = stack.first_batch_after(records, 60)
            time.sleep(0.5)
            stack.wait_controller_idle()
            changing = stack.changing_batches_since(records)
            row = (intent - started, result - started, ready - started, cpu)
            found[variant].append(row)
            print(f"{variant}: first batch {row[0] * 1000:.0f} ms, its result "
                  f"{row[1] * 1000:.0f} ms, READY=1 {row[2] * 1000:.0f} ms, controller CPU "
                  f"{row[3] * 1000:.0f} ms, kernel-changing batches {changing}", flush=True)
    finally:
        stack.close()
    for variant, rows in found.items():
        ready_ms = [r[2] * 1000 for r in rows]
        cpu_ms = [r[3] * 1000 for r in rows]
        print(f"{variant}: READY=1 median {statistics.median(ready_ms):.0f} ms "
              f"(min {min(ready_ms):.0f}), controller CPU median "
              f"{statistics.median(cpu_ms):.0f} ms (min {min(cpu_ms):.0f})")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
