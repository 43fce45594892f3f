"""Bulk create and delete of N veth pairs across two named namespaces, helper vs baselines.

Each pair: mtu 1400, one IPv4 address and UP on both ends. Three ways, same run, same
sandbox (tests.harness.HelperSandbox), interleaved over several rounds (medians printed):
  helper    signed batches of at most --max-ops operations (netlinkd's default 256), each
            pair one CreateVethPair, each deletion one DeleteLink, via the controller's
            Signer and HelperClient;
  ip-batch  `ip -n bench-a -batch` (link add ... peer ... netns bench-b, addr, up) and
            `ip -n bench-b -batch` (addr, up); deletion `ip -n bench-a -batch` of link del;
  pyroute2  one IPRoute per namespace, its socket opened by setns on a throwaway thread
            exactly like the helper (netlinkd.netns), veth created in place with both
            namespace fds, then address and up per end; no checks, no audit, no signing.

Usage (root): .venv/bin/python bench/bench_bulk.py [--pairs 200] [--rounds 3] [--max-ops 256]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from benchlib import (
    MTU,
    NS_A,
    NS_B,
    REPO,
    End,
    SignedClient,
    World,
    count_links,
    create_ops,
    delete_ops,
    ip_batch,
    ip_batch_create_files,
    ip_batch_delete_file,
    median,
    ms,
    pairs,
    ratio,
    require_pairs,
    sandboxed_helper,
    timed,
)

METHODS = ("helper", "ip-batch", "pyroute2")


def run_pyroute2(world: World, prefix: str, count: int) -> tuple[float, float]:
    """Run the worker below inside the sandbox; it times itself (sockets opened first)."""
    argv = [sys.executable, str(REPO / "bench" / "bench_bulk.py"), "--worker", prefix,
            str(count)]
    out = world.helper.run(*argv).stdout
    times = json.loads(out.strip().splitlines()[-1])
    return float(times["create"]), float(times["delete"])


def pyroute2_worker(prefix: str, count: int) -> None:
    """Inside the sandbox: create and delete the pairs with raw pyroute2; print seconds."""
    import ipaddress

    from pyroute2 import IPRoute

    from netlinkd.netns import netlink_socket_in, open_ns_file

    fd_a = open_ns_file(f"/run/netns/{NS_A}").fd
    fd_b = open_ns_file(f"/run/netns/{NS_B}").fd
    host = IPRoute()
    ipr = {NS_A: IPRoute(use_socket=netlink_socket_in(fd_a)),
           NS_B: IPRoute(use_socket=netlink_socket_in(fd_b))}
    ends = pairs(prefix, count)

    def configure(end: End) -> None:
        iface = ipaddress.ip_interface(end.address)
        index = ipr[end.netns].link_lookup(ifname=end.name)[0]
        ipr[end.netns].addr("add", index=index, address=str(iface.ip),
                            prefixlen=iface.network.prefixlen)
        ipr[end.netns].link("set", index=index, state="up")

    start = time.perf_counter()
    for a, b in ends:
        host.link("add", kind="veth", ifname=a.name, net_ns_fd=fd_a, mtu=MTU,
                  peer={"ifname": b.name, "net_ns_fd": fd_b, "mtu": MTU})
        configure(a)
        configure(b)
    create = time.perf_counter() - start
    start = time.perf_counter()
    for a, _b in ends:
        ipr[NS_A].link("del", index=ipr[NS_A].link_lookup(ifname=a.name)[0])
    delete = time.perf_counter() - start
    print(json.dumps({"create": create, "delete": delete}))


def require_gone(world: World, prefix: str) -> None:
    """Not timed: deletion removed both ends of every pair."""
    if count_links(world, NS_A, prefix) or count_links(world, NS_B, prefix):
        raise RuntimeError(f"{prefix}* links left behind after deletion")


def one_round(world: World, client: SignedClient, count: int, max_ops: int, rnd: int,
              samples: dict[str, list[tuple[float, float]]]) -> int:
    ends = pairs(f"h{rnd}x", count)
    create, batches = timed(lambda: client.submit_split(create_ops(ends), max_ops))
    require_pairs(world, f"h{rnd}x", count)
    delete, _ = timed(lambda: client.submit_split(delete_ops(ends), max_ops))
    samples["helper"].append((create, delete))

    ends = pairs(f"i{rnd}x", count)
    file_a, file_b = ip_batch_create_files(world.workdir, ends)
    create = ip_batch(world, (NS_A, file_a), (NS_B, file_b))
    require_pairs(world, f"i{rnd}x", count)
    delete = ip_batch(world, (NS_A, ip_batch_delete_file(world.workdir, ends)))
    samples["ip-batch"].append((create, delete))

    samples["pyroute2"].append(run_pyroute2(world, f"p{rnd}x", count))
    for prefix in (f"h{rnd}x", f"i{rnd}x", f"p{rnd}x"):
        require_gone(world, prefix)
    return batches


def empty_batch_cost(client: SignedClient, count: int = 20) -> float:
    return median([timed(lambda: client.submit([]))[0] for _ in range(count)])


def report(count: int, rounds: int, max_ops: int, batches: int, empty: float,
           samples: dict[str, list[tuple[float, float]]]) -> None:
    create = {m: median([c for c, _ in samples[m]]) for m in METHODS}
    delete = {m: median([d for _, d in samples[m]]) for m in METHODS}
    print(f"pairs {count}, rounds {rounds}, helper batches per create/delete: {batches} "
          f"(max {max_ops} ops per batch), helper empty batch {ms(empty)}")
    print(f"{'':10} {'create':>10} {'per pair':>10} {'delete':>10} {'per pair':>10}")
    for m in METHODS:
        print(f"{m:10} {ms(create[m]):>10} {ms(create[m] / count):>10} "
              f"{ms(delete[m]):>10} {ms(delete[m] / count):>10}")
    for base in ("ip-batch", "pyroute2"):
        print(f"ratio helper/{base}: create {ratio(create['helper'], create[base])}, "
              f"delete {ratio(delete['helper'], delete[base])}")
    print("samples (create, delete) s: "
          + "; ".join(f"{m} " + " ".join(f"({c:.3f},{d:.3f})" for c, d in samples[m])
                      for m in METHODS))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-ops", type=int, default=256,
                        help="ops per signed batch (raise the helper policy to match)")
    parser.add_argument("--worker", nargs=2, metavar=("PREFIX", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        pyroute2_worker(args.worker[0], int(args.worker[1]))
        return 0
    policy = [f"max_ops_per_batch = {max(args.max_ops, 256)}",
              f"max_owned_links = {max(1024, 2 * args.pairs + 16)}"]
    samples: dict[str, list[tuple[float, float]]] = {m: [] for m in METHODS}
    with sandboxed_helper(policy) as world:
        client = SignedClient(world)
        try:
            warm = pairs("w", 1)  # the helper's first batch opens its per-namespace sockets
            client.submit(create_ops(warm))
            client.submit(delete_ops(warm))
            empty = empty_batch_cost(client)
            batches = 0
            for rnd in range(args.rounds):
                batches = one_round(world, client, args.pairs, args.max_ops, rnd, samples)
        finally:
            client.close()
    report(args.pairs, args.rounds, args.max_ops, batches, empty, samples)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as err:
        sys.exit(f"{err}: {err.stderr}")
