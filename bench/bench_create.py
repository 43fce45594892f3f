"""Rough cost of creating one veth pair in two named namespaces: helper vs `ip link add`.

Runs a real helper in a scratch namespace (see tests/netlinkd/nlkd_lib.py). Root only.
Usage: .venv/bin/python bench/bench_create.py [pairs]
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "netlinkd"))

from nlkd_lib import Sandbox, Signer, create, delete, make_sandbox, named, new_key, spec


def _ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[int(len(ordered) * 0.9) - 1]
    return f"median {statistics.median(ordered) * 1000:.2f} ms, p90 {p90 * 1000:.2f} ms"


def bench_helper(sandbox: Sandbox, signer: Signer, pairs: int) -> list[float]:
    samples = []
    for i in range(pairs):
        op = create(
            spec(f"bh{i}a", named("bench-a"), mtu=1400, up=True, addresses=[f"10.80.{i}.1/24"]),
            spec(f"bh{i}b", named("bench-b"), mtu=1400, up=True, addresses=[f"10.80.{i}.2/24"]),
        )
        start = time.perf_counter()
        reply = sandbox.submit(signer.sign(signer.batch([op])))
        samples.append(time.perf_counter() - start)
        assert reply.ok, reply.error
    for i in range(pairs):
        assert sandbox.submit(signer.sign(signer.batch([delete(f"bh{i}a", named("bench-a"))]))).ok
    return samples


def bench_empty(sandbox: Sandbox, signer: Signer, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        assert sandbox.submit(signer.sign(signer.batch([]))).ok
        samples.append(time.perf_counter() - start)
    return samples


def bench_ip(sandbox: Sandbox, pairs: int) -> list[float]:
    samples = []
    for i in range(pairs):
        script = (
            f"ip link add bi{i}a netns bench-a mtu 1400 type veth peer name bi{i}b netns bench-b"
            f" mtu 1400 && ip -n bench-a addr add 10.81.{i}.1/24 dev bi{i}a"
            f" && ip -n bench-b addr add 10.81.{i}.2/24 dev bi{i}b"
            f" && ip -n bench-a link set bi{i}a up && ip -n bench-b link set bi{i}b up"
        )
        start = time.perf_counter()
        sandbox.run("sh", "-c", script)
        samples.append(time.perf_counter() - start)
    return samples


def main() -> int:
    pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    key = new_key()
    sandbox = make_sandbox(key)
    try:
        sandbox.start()
        signer = Signer(key)
        sandbox.run("ip", "netns", "add", "bench-a")
        sandbox.run("ip", "netns", "add", "bench-b")
        empty = bench_empty(sandbox, signer, pairs)
        helper = bench_helper(sandbox, signer, pairs)
        iproute = bench_ip(sandbox, pairs)
        probe = bench_ip_probe(sandbox)
    finally:
        sandbox.stop()
        shutil.rmtree(sandbox.root, ignore_errors=True)
    print(f"pairs: {pairs}")
    print(f"helper (sign + gRPC + verify + audit fsync + netlink, one batch): {_ms(helper)}")
    print(f"helper, empty batch (all fixed costs, no netlink): {_ms(empty)}")
    print(f"ip (nsenter + sh + 5 ip commands): {_ms(iproute)}")
    print(f"nsenter + sh + true (process overhead of the ip column): {_ms(probe)}")
    return 0


def bench_ip_probe(sandbox: Sandbox) -> list[float]:
    samples = []
    for _ in range(20):
        start = time.perf_counter()
        subprocess.run(["nsenter", "-t", str(sandbox.pid), "-m", "-n", "sh", "-c", "true"],
                       check=True)
        samples.append(time.perf_counter() - start)
    return samples


if __name__ == "__main__":
    sys.exit(main())
