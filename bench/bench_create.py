"""Latency of creating ONE veth pair in two named namespaces: helper vs a shell of `ip`.

Each pair: mtu 1400, one IPv4 address and UP on both ends. Runs netlinkd in the test
harness sandbox (tests.harness.HelperSandbox). Samples, each a fresh pair:
  helper        one signed batch with one CreateVethPair, end to end (Ed25519 signing,
                gRPC over the Unix socket, verify, replay record, policy, audit intent and
                result with fsync, netlink), the controller's Signer and HelperClient;
  helper empty  an empty signed batch: the helper's fixed cost without netlink;
  ip            nsenter + sh + `ip link add ... netns A ... peer ... netns B` + 2 `addr add`
                + 2 `link set up`;
  process       nsenter + sh + true: the process start-up part of the ip column.

--present K first creates K other pairs (bulk, not timed): the helper's cost per batch
grows with the number of links it owns (it counts them before every create).

Usage (root): .venv/bin/python bench/bench_create.py [--pairs 100] [--present 0]
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

from benchlib import (
    DEFAULT_MAX_OPS,
    MTU,
    NS_A,
    NS_B,
    SignedClient,
    World,
    create_ops,
    delete_ops,
    median,
    ms,
    pairs,
    ratio,
    require_pairs,
    sandboxed_helper,
    timed,
)


def p90(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, int(len(ordered) * 0.9) - 1)]


def bench_helper(world: World, client: SignedClient, count: int) -> list[float]:
    ends = pairs("h", count)
    samples = [timed(partial(client.submit, create_ops([pair])))[0] for pair in ends]
    require_pairs(world, "h", count)
    client.submit(delete_ops(ends))
    return samples


def bench_empty(client: SignedClient, count: int) -> list[float]:
    return [timed(lambda: client.submit([]))[0] for _ in range(count)]


def bench_ip(world: World, count: int) -> list[float]:
    samples = []
    ends = pairs("i", count)
    for a, b in ends:
        script = (
            f"ip link add {a.name} netns {NS_A} mtu {MTU} type veth peer name {b.name}"
            f" netns {NS_B} mtu {MTU} && ip -n {NS_A} addr add {a.address} dev {a.name}"
            f" && ip -n {NS_B} addr add {b.address} dev {b.name}"
            f" && ip -n {NS_A} link set {a.name} up && ip -n {NS_B} link set {b.name} up"
        )
        samples.append(timed(partial(world.helper.run, "sh", "-c", script))[0])
    require_pairs(world, "i", count)
    world.helper.run("sh", "-c", " && ".join(f"ip -n {NS_A} link del {a.name}" for a, _ in ends))
    return samples


def bench_process(world: World, count: int) -> list[float]:
    return [timed(lambda: world.helper.run("sh", "-c", "true"))[0] for _ in range(count)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--present", type=int, default=0)
    args = parser.parse_args()
    count = args.pairs
    policy = [f"max_owned_links = {max(1024, 2 * (args.present + count) + 16)}"]
    with sandboxed_helper(policy) as world:
        client = SignedClient(world)
        try:
            bench_helper(world, client, 1)  # warm-up: per-namespace sockets
            client.submit_split(create_ops(pairs("x", args.present)), DEFAULT_MAX_OPS)
            empty = bench_empty(client, count)
            helper = bench_helper(world, client, count)
            ip = bench_ip(world, count)
            process = bench_process(world, count)
        finally:
            client.close()
    print(f"pairs {count}, one pair per sample, {args.present} other pairs present; "
          "median / p90")
    for name, samples in (("helper", helper), ("helper empty", empty), ("ip", ip),
                          ("process", process)):
        print(f"{name:13} {ms(median(samples)):>9} {ms(p90(samples)):>9}")
    print(f"ratio helper/ip (median): {ratio(median(helper), median(ip))}")
    print("ratio without fixed costs, (helper - helper empty)/(ip - process): "
          f"{ratio(median(helper) - median(empty), median(ip) - median(process))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
