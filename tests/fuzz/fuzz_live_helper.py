#!/usr/bin/env python3
"""Throw malformed, forged and replayed batches at a live helper, then check it still serves.

    fuzz_live_helper.py --socket /run/netagent/netlinkd.sock --signing-key signing.pem \
        --count 100000 [--seed N]

Every forged case must be refused with a typed error; a gRPC failure counts as a crash.
Exit 0 when nothing forged was accepted, nothing crashed and a valid batch is still applied.
Run it against a sandboxed helper: it submits correctly signed empty batches too.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time
from collections import Counter
from collections.abc import Callable

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from netagent_api import helper_pb2

SUBMIT = "/netagent.helper.v1.Netlinkd/Submit"
HELLO = "/netagent.helper.v1.Netlinkd/Hello"


class Forger:
    """Builds one malformed request per call; keeps one genuine signer for replays."""

    def __init__(self, key: Ed25519PrivateKey, rng: random.Random) -> None:
        self.key = key
        self.rng = rng
        raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = hashlib.sha256(raw).hexdigest()[:16]
        self.epoch = rng.randbytes(16)
        self.sequence = 0
        self.accepted_raw: bytes | None = None

    def batch(self, **fields: object) -> helper_pb2.Batch:
        self.sequence += 1
        values: dict[str, object] = {
            "epoch": self.epoch, "sequence": self.sequence,
            "unix_time_ms": int(time.time() * 1000), "owner": "fuzz",
        }
        values.update(fields)
        return helper_pb2.Batch(**values)  # type: ignore[arg-type]

    def envelope(self, data: bytes, signature: bytes | None = None, key_id: str = "") -> bytes:
        return helper_pb2.SignedBatch(
            batch=data,
            signature=self.key.sign(data) if signature is None else signature,
            key_id=key_id or self.key_id,
        ).SerializeToString()

    def flip(self, data: bytes) -> bytes:
        damaged = bytearray(data)
        if damaged:
            position = self.rng.randrange(len(damaged))
            damaged[position] ^= 1 << self.rng.randrange(8)
        return bytes(damaged)

    # -- cases -----------------------------------------------------------------------

    def random_bytes(self) -> bytes:
        return self.rng.randbytes(self.rng.randrange(0, 2048))

    def truncated(self) -> bytes:
        raw = self.envelope(self.batch().SerializeToString())
        return raw[: self.rng.randrange(len(raw))]

    def flipped_signature(self) -> bytes:
        data = self.batch().SerializeToString()
        return self.envelope(data, self.flip(self.key.sign(data)))

    def flipped_batch(self) -> bytes:
        data = self.batch(operations=[delete_op("fz0")]).SerializeToString()
        return self.envelope(self.flip(data), self.key.sign(data))

    def unknown_key(self) -> bytes:
        data = self.batch().SerializeToString()
        return self.envelope(data, key_id=self.rng.randbytes(8).hex())

    def signed_garbage(self) -> bytes:
        return self.envelope(self.rng.randbytes(self.rng.randrange(1, 512)))

    def stale(self) -> bytes:
        skew = self.rng.choice([-1, 1]) * self.rng.randrange(120_000, 10**12)
        return self.envelope(self.batch(unix_time_ms=int(time.time() * 1000) + skew)
                             .SerializeToString())

    def bad_epoch(self) -> bytes:
        epoch = self.rng.randbytes(self.rng.choice([0, 1, 15, 17, 64]))
        return self.envelope(self.batch(epoch=epoch).SerializeToString())

    def replay(self) -> bytes:
        return self.accepted_raw or self.random_bytes()

    def oversized(self) -> bytes:
        return self.envelope(b"\x0a" + b"\xff" * (1 << 20))


def delete_op(name: str) -> helper_pb2.Operation:
    return helper_pb2.Operation(delete_link=helper_pb2.DeleteLink(name=name))


class Client:
    def __init__(self, socket: str) -> None:
        self.channel = grpc.insecure_channel(
            f"unix:{socket}",
            options=[("grpc.max_send_message_length", 4 << 20)],
        )
        self.submit_raw: Callable[..., helper_pb2.BatchReply] = self.channel.unary_unary(
            SUBMIT, request_serializer=lambda raw: raw,
            response_deserializer=helper_pb2.BatchReply.FromString,
        )
        self.hello: Callable[..., helper_pb2.HelloReply] = self.channel.unary_unary(
            HELLO, request_serializer=helper_pb2.HelloRequest.SerializeToString,
            response_deserializer=helper_pb2.HelloReply.FromString,
        )


def accept_one_genuine(forger: Forger, client: Client) -> helper_pb2.BatchReply:
    raw = forger.envelope(forger.batch(operations=[delete_op("fz-absent")]).SerializeToString())
    reply = client.submit_raw(raw, timeout=30)
    if reply.ok:
        forger.accepted_raw = raw
    return reply


def run(forger: Forger, client: Client, count: int) -> tuple[Counter[str], Counter[str]]:
    cases: dict[str, Callable[[], bytes]] = {
        name: getattr(forger, name)
        for name in ("random_bytes", "truncated", "flipped_signature", "flipped_batch",
                     "unknown_key", "signed_garbage", "stale", "bad_epoch", "replay",
                     "oversized")
    }
    outcome: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    names = [name for name in cases if name != "oversized"]
    for number in range(count):
        name = "oversized" if number % 1000 == 999 else names[number % len(names)]
        try:
            reply = client.submit_raw(cases[name](), timeout=30)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                outcome["refused_by_grpc_size_limit"] += 1
            else:
                outcome[f"crash:{name}:{exc.code()}"] += 1
            continue
        if reply.ok:
            outcome[f"accepted:{name}"] += 1
        else:
            outcome["refused"] += 1
            kinds[helper_pb2.ErrorKind.Name(reply.error_kind)] += 1
    return outcome, kinds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--signing-key", required=True)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with open(args.signing_key, "rb") as handle:
        key = load_pem_private_key(handle.read(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        parser.error(f"{args.signing_key} is not an Ed25519 private key")
    forger, client = Forger(key, random.Random(args.seed)), Client(args.socket)
    first = accept_one_genuine(forger, client)
    started = time.monotonic()
    outcome, kinds = run(forger, client, args.count)
    elapsed = time.monotonic() - started
    last = accept_one_genuine(forger, client)
    print(f"sent {args.count} forged requests in {elapsed:.1f} s "
          f"({args.count / elapsed:.0f}/s)")
    for name, number in sorted(outcome.items()):
        print(f"  {name}: {number}")
    for name, number in sorted(kinds.items()):
        print(f"  refused as {name}: {number}")
    print(f"genuine batch before: ok={first.ok}, after: ok={last.ok} {last.error}")
    bad = [name for name in outcome if not name.startswith("refused")]
    return 0 if first.ok and last.ok and not bad else 1


if __name__ == "__main__":
    sys.exit(main())
