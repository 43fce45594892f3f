"""Churn at the size of issue 12: 100 pairs, then 2,000 random changes (MTU, enabled,
addresses, MAC, delete and re-create) put into etcd as fast as it takes them; measured:
seconds from the last change until the kernel equals the final config exactly and every
status is CONFIGURED (tests/faults/churn.py; the CI-sized check is tests/faults/test_churn.py).
The reference in the same run: the same number of keys put once with no churn.

Usage (root): .venv/bin/python bench/bench_churn.py [--pairs 100] [--changes 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from benchlib import World, ms, ratio, sandboxed_helper

from tests.faults.churn import churn, converge_seconds, put_pairs
from tests.faults.faultlib import Desired
from tests.harness import ControllerProcess, EtcdKV, EtcdServer, new_label


def one_run(world: World, etcd: EtcdServer, pairs: int, changes: int,
            seed: int) -> dict[str, float]:
    kv = EtcdKV(etcd, new_label())
    desired = Desired(world.helper, kv)
    controller = ControllerProcess(world.workdir, etcd=etcd.endpoint, label=kv.label,
                                   socket=world.helper.socket,
                                   signing_key=world.keys.signing_key)
    rng = random.Random(seed)
    try:
        controller.start()
        started = time.monotonic()
        put_pairs(desired, pairs, rng)
        put_done = time.monotonic()
        initial = converge_seconds(desired, put_done, timeout=300)
        churn_started = time.monotonic()
        last = churn(desired, pairs, changes, rng)
        converged = converge_seconds(desired, last, timeout=300)
        for name in list(desired.configs):
            desired.delete(name)
        desired.wait_converged(timeout=300)
    except Exception:
        print(controller.log_text()[-4000:], file=sys.stderr)
        raise
    finally:
        controller.stop()
    return {"initial_put": put_done - started, "initial": initial,
            "churn_put": last - churn_started, "converged": converged}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--changes", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    etcd = EtcdServer()
    results = []
    try:
        etcd.start()
        with sandboxed_helper([f"max_owned_links = {max(1024, 4 * args.pairs)}"]) as world:
            for run in range(args.runs):
                results.append(one_run(world, etcd, args.pairs, args.changes, 1000 + run))
    finally:
        etcd.stop()
    for run, r in enumerate(results):
        print(f"run {run}: {args.pairs} pairs put in {ms(r['initial_put'])}, converged "
              f"{ms(r['initial'])} after; {args.changes} changes put in {ms(r['churn_put'])}, "
              f"converged {ms(r['converged'])} after the last one "
              f"(ratio to the initial put's {ratio(r['converged'], r['initial'])})")
    worst = max(r["converged"] for r in results)
    print(f"worst: converged {ms(worst)} after the last change (issue 12 asks for 3 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
