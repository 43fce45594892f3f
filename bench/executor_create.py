"""CPU of the executor alone creating N veth pairs (no gRPC, audit or link monitor), and
the netlink requests it sends per pair, against `ip -batch` doing the same in place.

Runs in a scratch mount + network namespace (unshare) with a private /run/netns holding
two named namespaces; each pair: both ends with MAC, MTU 1400, an IPv4 and an IPv6
address (DAD off), UP; batches of 256 CreateVethPairs. Another checkout's netlinkd can be
measured with PYTHONPATH=<its root> (the executor under test is printed).

Usage (root): .venv/bin/python bench/executor_create.py [--pairs 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from netagent_api import helper_pb2

SHELL = 'mkdir -p /run/netns && mount -t tmpfs tmpfs /run/netns && exec "$0" "$1" --inner "$2"'


def ops(pairs: int) -> list[helper_pb2.Operation]:
    made = []
    for i in range(pairs):
        a, b = (helper_pb2.LinkSpec(
            name=f"x{'ab'[side]}{i}", netns=helper_pb2.NamespaceRef(name=ns),
            mac=f"02:aa:{side:02x}:{i >> 8:02x}:{i & 255:02x}:01", mtu=1400, up=True,
            addresses=[f"10.{side}.{i >> 8}.{i & 255}/16", f"fd0{side}::{i:x}/64"])
            for side, ns in ((0, "xa"), (1, "xb")))
        made.append(helper_pb2.Operation(create_veth_pair=helper_pb2.CreateVethPair(a=a, b=b)))
    return made


def inner(pairs: int) -> dict[str, object]:
    import socket
    import struct

    from netlinkd import executor
    from netlinkd.policy import Policy

    for ns in ("xa", "xb"):
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                        "net.ipv6.conf.default.accept_dad=0"], check=True)
    ex = executor.Executor(Policy(max_owned_links=4 * pairs))
    counts = {"sendmsg": 0, "requests": 0}
    real_sendmsg = socket.socket.sendmsg

    def sendmsg(self: socket.socket, buffers: list[bytes], *args: object) -> int:
        counts["sendmsg"] += 1
        headers = [struct.unpack_from("=HH", b, 4) for b in buffers]
        counts["requests"] += sum(1 for kind, flags in headers  # a dump: RTM_GET* with NLM_F_DUMP
                                  if kind >= 16 and not (kind % 4 == 2 and flags & 0x300))
        return real_sendmsg(self, buffers, *args)  # type: ignore[arg-type]

    socket.socket.sendmsg = sendmsg  # type: ignore[method-assign,assignment]
    every = ops(pairs)
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for first in range(0, pairs, 256):
        outcome = ex.execute(helper_pb2.Batch(owner="x", operations=every[first:first + 256]),
                             lambda: None)
        assert outcome.ok, outcome.error
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    ex.close()
    return {"executor": executor.__file__, "wall_s": wall,
            "user_s": after.ru_utime - before.ru_utime, "sys_s": after.ru_stime - before.ru_stime,
            "requests_per_pair": counts["requests"] / pairs, "sendmsg": counts["sendmsg"]}


def ip_batch(pairs: int) -> dict[str, float]:
    """The same pairs with `ip -batch` in place, in the same kind of scratch namespace."""
    lines_a, lines_b = [], []
    for i in range(pairs):
        a, b = f"ya{i}", f"yb{i}"
        lines_a += [f"link add {a} address 02:aa:00:{i >> 8:02x}:{i & 255:02x}:01 mtu 1400 "
                    f"type veth peer name {b} address 02:aa:01:{i >> 8:02x}:{i & 255:02x}:01 "
                    f"mtu 1400 netns xb",
                    f"addr add 10.0.{i >> 8}.{i & 255}/16 dev {a}",
                    f"addr add fd00::{i:x}/64 dev {a}", f"link set {a} up"]
        lines_b += [f"addr add 10.1.{i >> 8}.{i & 255}/16 dev {b}",
                    f"addr add fd01::{i:x}/64 dev {b}", f"link set {b} up"]
    script = ("ip netns add xa && ip netns add xb && "
              "ip netns exec xa sysctl -qw net.ipv6.conf.default.accept_dad=0 && "
              "ip netns exec xb sysctl -qw net.ipv6.conf.default.accept_dad=0 && "
              "exec python3 -c \"import resource,subprocess,sys,time;"
              "t=time.perf_counter();"
              "subprocess.run(['ip','-n','xa','-batch',sys.argv[1]],check=True);"
              "subprocess.run(['ip','-n','xb','-batch',sys.argv[2]],check=True);"
              "w=time.perf_counter()-t;r=resource.getrusage(resource.RUSAGE_CHILDREN);"
              "print(w,r.ru_utime,r.ru_stime)\" \"$0\" \"$1\"")
    shell = 'mkdir -p /run/netns && mount -t tmpfs tmpfs /run/netns && ' + script
    with tempfile.TemporaryDirectory() as scratch:
        files = [os.path.join(scratch, name) for name in ("a", "b")]
        for path, lines in zip(files, (lines_a, lines_b), strict=True):
            with open(path, "w") as out:
                out.write("\n".join(lines) + "\n")
        done = subprocess.run(["unshare", "--mount", "--net", "--propagation", "slave", "sh",
                               "-c", shell, *files], capture_output=True, text=True, check=True)
    wall, user, sys_ = (float(x) for x in done.stdout.split())
    return {"wall_s": wall, "user_s": user, "sys_s": sys_}


def outer(pairs: int) -> dict[str, object]:
    done = subprocess.run(["unshare", "--mount", "--net", "--propagation", "slave", "sh", "-c",
                           SHELL, sys.executable, __file__, str(pairs)],
                          capture_output=True, text=True, env=os.environ)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inner", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        print(json.dumps(inner(args.inner)))
        return 0
    for rnd in range(args.rounds):
        ex, ip = outer(args.pairs), ip_batch(args.pairs)
        ex_cpu = float(ex["user_s"]) + float(ex["sys_s"])  # type: ignore[arg-type]
        ip_cpu = ip["user_s"] + ip["sys_s"]
        print(f"round {rnd}: executor {ex_cpu:.2f} s CPU (user {ex['user_s']:.2f}, sys "
              f"{ex['sys_s']:.2f}), wall {ex['wall_s']:.2f} s, {ex['requests_per_pair']:.1f} "
              f"requests per pair (dumps not counted) in {ex['sendmsg']} sendmsg | ip -batch "
              f"{ip_cpu:.2f} s CPU, "
              f"wall {ip['wall_s']:.2f} s | CPU {ex_cpu / ip_cpu:.2f}x ({ex['executor']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
