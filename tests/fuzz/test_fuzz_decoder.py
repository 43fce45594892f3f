"""Property tests over the helper's admission path (`netlinkd.verify.Verifier`).

Nothing forged, damaged or replayed is ever accepted, and the only exceptions that come out
are the typed refusals of `netlinkd.errors`. Real trust file, real replay state on disk.
CI budget: 200 examples per property.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netagent_api import helper_pb2
from netlinkd.errors import BadSignature, HelperError, Malformed, Replay, Stale
from netlinkd.replay import ReplayGuard
from netlinkd.trust import TrustStore
from netlinkd.verify import Verifier

WINDOW_S = 60
FUZZ = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@dataclass
class World:
    key: Ed25519PrivateKey
    key_id: str
    verifier: Verifier
    epoch: bytes
    sequence: int = 0

    def batch(self, **fields: object) -> helper_pb2.Batch:
        self.sequence += 1
        values: dict[str, object] = {
            "epoch": self.epoch, "sequence": self.sequence,
            "unix_time_ms": int(time.time() * 1000), "owner": "fuzz",
        }
        values.update(fields)
        return helper_pb2.Batch(**values)  # type: ignore[arg-type]

    def signed(self, data: bytes, signature: bytes | None = None) -> bytes:
        envelope = helper_pb2.SignedBatch(
            batch=data, signature=self.key.sign(data) if signature is None else signature,
            key_id=self.key_id,
        )
        return envelope.SerializeToString()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("fuzz")
    root.chmod(0o700)
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    trust = root / "trust.keys"
    trust.write_text(f"ed25519 {base64.b64encode(raw).decode()} fuzz\n")
    trust.chmod(0o644)
    state = Path(root / "state")
    state.mkdir(mode=0o700)
    verifier = Verifier(TrustStore(str(trust)), ReplayGuard(str(state), WINDOW_S), WINDOW_S)
    return World(key, hashlib.sha256(raw).hexdigest()[:16], verifier, os.urandom(16))


def refused(world: World, raw: bytes) -> HelperError:
    """Submit `raw`; it must be refused with a typed error, never accepted or crash."""
    try:
        world.verifier.verify(raw)
    except HelperError as exc:
        return exc
    pytest.fail(f"accepted a request that must be refused: {raw[:80]!r}")


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_are_refused(world: World, raw: bytes) -> None:
    assert isinstance(refused(world, raw), Malformed | BadSignature)


@FUZZ
@given(st.binary(max_size=2048), st.binary(max_size=128), st.text(max_size=40))
def test_random_envelopes_are_refused(
    world: World, batch: bytes, signature: bytes, key_id: str
) -> None:
    raw = helper_pb2.SignedBatch(batch=batch, signature=signature, key_id=key_id)
    assert isinstance(refused(world, raw.SerializeToString()), BadSignature)


@FUZZ
@given(st.binary(max_size=2048))
def test_signed_garbage_is_malformed_or_stale(world: World, garbage: bytes) -> None:
    assert isinstance(refused(world, world.signed(garbage)), Malformed | Stale)


@FUZZ
@given(st.integers(min_value=0, max_value=64 * 8 - 1))
def test_any_signature_bit_flip_is_refused(world: World, bit: int) -> None:
    data = world.batch().SerializeToString()
    signature = bytearray(world.key.sign(data))
    signature[bit // 8] ^= 1 << (bit % 8)
    assert isinstance(refused(world, world.signed(data, bytes(signature))), BadSignature)


@FUZZ
@given(st.data())
def test_any_batch_bit_flip_is_refused(world: World, data: st.DataObject) -> None:
    original = world.batch(owner="fuzz-owner").SerializeToString()
    bit = data.draw(st.integers(min_value=0, max_value=len(original) * 8 - 1))
    damaged = bytearray(original)
    damaged[bit // 8] ^= 1 << (bit % 8)
    raw = world.signed(bytes(damaged), world.key.sign(original))
    assert isinstance(refused(world, raw), BadSignature)


@FUZZ
@given(st.integers(min_value=0, max_value=3))
def test_replays_and_older_sequences_are_refused(world: World, back: int) -> None:
    raw = world.signed(world.batch().SerializeToString())
    world.verifier.verify(raw)
    assert isinstance(refused(world, raw), Replay)
    older = world.batch(sequence=max(world.sequence - 1 - back, 0))
    assert isinstance(refused(world, world.signed(older.SerializeToString())), Replay)


@FUZZ
@given(
    st.binary(max_size=40),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=0, max_value=2**64 - 1),
)
def test_signed_batches_with_odd_fields_are_accepted_only_when_valid(
    world: World, epoch: bytes, unix_time_ms: int, sequence: int
) -> None:
    batch = world.batch(epoch=epoch, unix_time_ms=unix_time_ms, sequence=sequence)
    fresh_epoch = len(epoch) == 16
    in_window = abs(unix_time_ms - time.time() * 1000) <= WINDOW_S * 1000 - 1000
    try:
        world.verifier.verify(world.signed(batch.SerializeToString()))
    except (Malformed, Stale, Replay) as exc:
        assert not (fresh_epoch and in_window) or isinstance(exc, Replay), exc
        return
    assert fresh_epoch and abs(unix_time_ms - time.time() * 1000) <= WINDOW_S * 1000
