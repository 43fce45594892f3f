"""Admission of a raw Submit request: size, key id, signature, parse, time window, replay;
and of a WatchRequest: key id, signature, time window, once.

The signature is checked over the exact `batch` bytes received; only then are they parsed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from netagent_api import helper_pb2, watch_message
from netlinkd.errors import BadSignature, Malformed, Replay, Stale
from netlinkd.replay import ReplayGuard
from netlinkd.trust import KEY_ID_CHARS, TrustStore, is_key_id

MAX_REQUEST_BYTES = 1 << 20
EPOCH_BYTES = 16


@dataclass(frozen=True)
class Verified:
    """A request whose signature verified, with the trust keys' generation it was checked in."""

    signed: helper_pb2.SignedBatch
    batch: helper_pb2.Batch
    generation: int


def parse_signed(raw: bytes) -> helper_pb2.SignedBatch:
    if len(raw) > MAX_REQUEST_BYTES:
        raise Malformed(f"request of {len(raw)} bytes exceeds {MAX_REQUEST_BYTES}; split it")
    try:
        return helper_pb2.SignedBatch.FromString(raw)
    except DecodeError as exc:
        raise Malformed(f"request is not a SignedBatch: {exc}") from exc


def check_key_id(key_id: str) -> None:
    """Refuse a key id that no trust file can hold, before it is looked up or echoed.

    The claim is unauthenticated: the error text only gives its length, never its content.
    """
    if not is_key_id(key_id):
        raise BadSignature(
            f"key id is not {KEY_ID_CHARS} lowercase hex digits (got {len(key_id)} "
            "characters); check the controller's signing key"
        )


def check_signature(signed: helper_pb2.SignedBatch, trust: TrustStore) -> None:
    check_key_id(signed.key_id)
    key = trust.get(signed.key_id)
    if key is None:
        raise BadSignature(f"key id {signed.key_id} is not in the trust-key file")
    if not key.verifies(signed.signature, signed.batch):
        raise BadSignature(f"signature by key {signed.key_id} does not verify")


def parse_batch(data: bytes) -> helper_pb2.Batch:
    try:
        batch = helper_pb2.Batch.FromString(data)
    except DecodeError as exc:
        raise Malformed(f"signed payload is not a Batch: {exc}") from exc
    if len(batch.epoch) != EPOCH_BYTES:
        raise Malformed(f"batch epoch must be {EPOCH_BYTES} bytes, got {len(batch.epoch)}")
    return batch


def check_time(batch: helper_pb2.Batch, now_ms: int, window_s: int) -> None:
    skew_ms = batch.unix_time_ms - now_ms
    if abs(skew_ms) > window_s * 1000:
        raise Stale(
            f"batch seq {batch.sequence} is {skew_ms / 1000:+.1f} s off the helper clock "
            f"(window ±{window_s} s); check clocks and resend"
        )


class Verifier:
    def __init__(
        self,
        trust: TrustStore,
        replay: ReplayGuard,
        window_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.trust = trust
        self.replay = replay
        self._window_s = window_s
        self._clock = clock
        self._watches: set[tuple[str, int]] = set()  # (key id, time) within the window

    def verify(self, raw: bytes) -> Verified:
        verified = self.authenticate(raw)
        self.admit(verified)
        return verified

    def authenticate(self, raw: bytes) -> Verified:
        """Size, key id, signature; only then is the signed batch parsed."""
        signed, generation = parse_signed(raw), self.trust.generation
        check_signature(signed, self.trust)
        return Verified(signed, parse_batch(signed.batch), generation)

    def admit(self, verified: Verified) -> None:
        """The signature again if the trust keys were reloaded since it was checked; time
        window and replay (recorded in memory; see `netlinkd.replay`)."""
        signed, batch = verified.signed, verified.batch
        if verified.generation != self.trust.generation:
            check_signature(signed, self.trust)
        now = self._clock()
        check_time(batch, int(now * 1000), self._window_s)
        # the helper's clock, never the batch's own (possibly future) time
        self.replay.check_and_record(signed.key_id, batch.epoch, batch.sequence, int(now))

    def check_watch(self, request: helper_pb2.WatchRequest) -> None:
        """Signed by a trusted key, within the time window, and each (key id, time) once:
        a copied request opens no second stream."""
        message = watch_message(request.key_id, request.unix_time_ms)
        check_signature(helper_pb2.SignedBatch(
            batch=message, signature=request.signature, key_id=request.key_id), self.trust)
        now_ms = int(self._clock() * 1000)
        check_time(helper_pb2.Batch(unix_time_ms=request.unix_time_ms), now_ms, self._window_s)
        self._watches = {w for w in self._watches if w[1] >= now_ms - self._window_s * 1000}
        if (request.key_id, request.unix_time_ms) in self._watches:
            raise Replay("this watch request was used already; sign a new one")
        self._watches.add((request.key_id, request.unix_time_ms))
