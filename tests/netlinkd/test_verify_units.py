"""Admission's limits at their boundaries: request size, epoch length, time window, and the
clock the replay record uses (pure logic; found by bench/mutation.py); watch requests."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from trust_files import trusted_key

from netagent_api import helper_pb2, watch_message
from netlinkd import trust, verify
from netlinkd.errors import BadSignature, Malformed, Replay, Stale
from netlinkd.replay import ReplayGuard

EPOCH = bytes(range(16))
NOW_MS = 1_700_000_000_123


def _signed_of_size(size: int) -> bytes:
    """A SignedBatch serialized to exactly `size` bytes (field 1, a 3-byte length)."""
    raw = helper_pb2.SignedBatch(batch=b"x" * (size - 4)).SerializeToString()
    assert len(raw) == size
    return raw


def test_request_size_limit_is_exact() -> None:
    assert verify.MAX_REQUEST_BYTES == 1 << 20
    verify.parse_signed(_signed_of_size(verify.MAX_REQUEST_BYTES))
    with pytest.raises(Malformed, match="exceeds"):
        verify.parse_signed(_signed_of_size(verify.MAX_REQUEST_BYTES + 1))
    with pytest.raises(Malformed, match="not a SignedBatch"):
        verify.parse_signed(b"\xff\xff")


def test_epoch_is_exactly_16_bytes() -> None:
    assert verify.parse_batch(helper_pb2.Batch(epoch=EPOCH).SerializeToString()).epoch == EPOCH
    for size in (0, 15, 17):
        with pytest.raises(Malformed, match="16 bytes"):
            verify.parse_batch(helper_pb2.Batch(epoch=bytes(size)).SerializeToString())
    with pytest.raises(Malformed, match="not a Batch"):
        verify.parse_batch(b"\xff\xff")


@pytest.mark.parametrize("skew_ms", [0, 60_000, -60_000, 59_999])
def test_time_window_accepts_up_to_its_edge(skew_ms: int) -> None:
    verify.check_time(helper_pb2.Batch(unix_time_ms=NOW_MS + skew_ms), NOW_MS, 60)


@pytest.mark.parametrize("skew_ms", [60_001, -60_001, 120_000])
def test_time_window_refuses_past_its_edge(skew_ms: int) -> None:
    with pytest.raises(Stale, match=re.escape(f"{skew_ms / 1000:+.1f} s off")):
        verify.check_time(helper_pb2.Batch(unix_time_ms=NOW_MS + skew_ms), NOW_MS, 60)


def test_key_ids_are_checked_before_lookup(tmp_path: Path) -> None:
    _private, raw_public, trust_path = trusted_key(tmp_path)
    store = trust.TrustStore(str(trust_path))
    for bad in ("", "ABCDEF0123456789", "0" * 15, "0" * 17, "g" * 16):
        with pytest.raises(BadSignature, match="lowercase hex"):
            verify.check_key_id(bad)
    verify.check_key_id(trust.key_id_of(raw_public))
    with pytest.raises(BadSignature, match="not in the trust-key file"):
        verify.check_signature(helper_pb2.SignedBatch(key_id="0" * 16), store)


def test_admission_records_the_helpers_clock_in_seconds(tmp_path: Path) -> None:
    private, raw_public, trust_path = trusted_key(_dir(tmp_path / "keys"))
    state = _dir(tmp_path / "state")
    clock = [NOW_MS / 1000]
    verifier = verify.Verifier(trust.TrustStore(str(trust_path)), ReplayGuard(str(state), 60),
                               60, clock=lambda: clock[0])
    key_id = trust.key_id_of(raw_public)

    def submit(seq: int, stamp_ms: int) -> verify.Verified:
        data = helper_pb2.Batch(epoch=EPOCH, sequence=seq, unix_time_ms=stamp_ms,
                                owner="o").SerializeToString()
        return verifier.verify(helper_pb2.SignedBatch(
            batch=data, signature=private.sign(data), key_id=key_id).SerializeToString())

    verified = submit(1, NOW_MS + 59_000)
    assert (verified.batch.sequence, verified.signed.key_id) == (1, key_id)
    with pytest.raises(dataclasses.FrozenInstanceError):  # what was verified is what is run
        verified.batch = helper_pb2.Batch()  # type: ignore[misc]
    verifier.replay.flush()
    recorded = json.loads((state / "replay.json").read_text())
    assert recorded == {key_id: {EPOCH.hex(): [1, NOW_MS // 1000]}}
    with pytest.raises(Replay):
        submit(1, NOW_MS)
    with pytest.raises(Stale):
        submit(2, NOW_MS - 61_000)
    clock[0] += 100
    submit(2, NOW_MS + 100_000)
    verifier.replay.flush()
    recorded = json.loads((state / "replay.json").read_text())
    assert recorded[key_id][EPOCH.hex()] == [2, NOW_MS // 1000 + 100]


def _dir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def test_a_watch_request_is_signed_recent_and_used_once(tmp_path: Path) -> None:
    private, raw_public, trust_path = trusted_key(_dir(tmp_path / "keys"))
    clock = [NOW_MS / 1000]
    verifier = verify.Verifier(trust.TrustStore(str(trust_path)),
                               ReplayGuard(str(_dir(tmp_path / "state")), 60), 60,
                               clock=lambda: clock[0])
    key_id = trust.key_id_of(raw_public)

    def watch(stamp_ms: int, message: bytes | None = None, signer: Any = private,
              claimed: str = key_id) -> helper_pb2.WatchRequest:
        signed = watch_message(key_id, stamp_ms) if message is None else message
        return helper_pb2.WatchRequest(key_id=claimed, unix_time_ms=stamp_ms,
                                       signature=signer.sign(signed))

    verifier.check_watch(watch(NOW_MS + 60_000))
    verifier.check_watch(watch(NOW_MS - 60_000))
    with pytest.raises(Replay):  # the same request again opens no second stream
        verifier.check_watch(watch(NOW_MS - 60_000))
    for refused, error in [
        (helper_pb2.WatchRequest(), BadSignature),
        (helper_pb2.WatchRequest(key_id=key_id, unix_time_ms=NOW_MS), BadSignature),
        (watch(NOW_MS, signer=Ed25519PrivateKey.generate()), BadSignature),
        (watch(NOW_MS, claimed="0" * 16), BadSignature),
        (watch(NOW_MS, watch_message(key_id, NOW_MS + 1)), BadSignature),
        # a batch's signature (no domain prefix) is not a watch request's
        (watch(NOW_MS, helper_pb2.Batch(unix_time_ms=NOW_MS).SerializeToString()),
         BadSignature),
        (watch(NOW_MS + 60_001), Stale),
        (watch(NOW_MS - 60_001), Stale),
    ]:
        with pytest.raises(error):
            verifier.check_watch(refused)
    clock[0] += 121  # both used requests are past the window now: refused, and forgotten
    with pytest.raises(Stale):
        verifier.check_watch(watch(NOW_MS + 60_000))
    verifier.check_watch(watch(NOW_MS + 121_000))
    assert verifier._watches == {(key_id, NOW_MS + 121_000)}
