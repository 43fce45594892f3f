"""What the helper's per-uid connection front costs: `Hello` round trips through the
public socket (accepted, counted by uid, relayed) against the same helper's inner gRPC
socket (`<state dir>/grpc.sock`), in the same run, interleaved. Root; prints p50/p99 in µs.

    .venv/bin/python bench/relay_latency.py [CALLS] [ROUNDS]
"""

from __future__ import annotations

import os
import sys
import time

import grpc

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "netlinkd"))
from nlkd_lib import HELLO, own_sandbox

from netagent_api import helper_pb2


def round_trips(path: str, calls: int) -> tuple[float, float]:
    options = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.insecure_channel(f"unix:{path}", options=options) as channel:
        hello = channel.unary_unary(
            HELLO, request_serializer=helper_pb2.HelloRequest.SerializeToString,
            response_deserializer=helper_pb2.HelloReply.FromString,
        )
        for _ in range(200):
            hello(helper_pb2.HelloRequest())
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            hello(helper_pb2.HelloRequest())
            times.append(time.perf_counter() - started)
    times.sort()
    return times[len(times) // 2] * 1e6, times[int(len(times) * 0.99)] * 1e6


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with own_sandbox() as (helper, _):
        inner = os.path.join(helper.state, "grpc.sock")
        for number in range(rounds):
            relay, direct = round_trips(helper.socket, calls), round_trips(inner, calls)
            print(f"round {number}: relayed p50 {relay[0]:.0f} p99 {relay[1]:.0f} us; "
                  f"inner socket p50 {direct[0]:.0f} p99 {direct[1]:.0f} us; "
                  f"p50 ratio {relay[0] / direct[0]:.3f}")


if __name__ == "__main__":
    main()
