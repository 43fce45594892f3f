"""Signer: key files, key id, signatures over exact bytes, epoch and sequence."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from controller.ops import DeleteLink, NsRef
from controller.signer import (
    KeyFileExists,
    Observe,
    Signer,
    SigningKeyError,
    generate_keypair,
    load_signing_key,
)
from netagent_api import helper_pb2


def _keys(tmp_path: Path) -> tuple[str, str, str]:
    private, trust = str(tmp_path / "c.key"), str(tmp_path / "trust.keys")
    return private, trust, generate_keypair(private, trust)


def test_keygen_modes_and_trust_line(tmp_path: Path) -> None:
    private, trust, key_id = _keys(tmp_path)
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    kind, b64, comment = Path(trust).read_text().split()
    raw = base64.b64decode(b64)
    assert kind == "ed25519" and len(raw) == 32
    assert comment.startswith("netagent-controller@")
    assert key_id == hashlib.sha256(raw).hexdigest()[:16]


def test_keygen_refuses_overwrite_unless_forced(tmp_path: Path) -> None:
    private, trust, first = _keys(tmp_path)
    with pytest.raises(KeyFileExists, match="--force"):
        generate_keypair(private, trust)
    assert generate_keypair(private, trust, force=True) != first
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600


def test_group_readable_key_is_refused(tmp_path: Path) -> None:
    private, _, _ = _keys(tmp_path)
    os.chmod(private, 0o640)
    with pytest.raises(SigningKeyError, match="chmod 600"):
        load_signing_key(private)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_key_owned_by_another_uid_is_refused(tmp_path: Path) -> None:
    private, _, _ = _keys(tmp_path)
    os.chown(private, 65534, -1)
    with pytest.raises(SigningKeyError, match="owned by uid 65534"):
        load_signing_key(private)
    os.chown(private, os.geteuid(), -1)
    load_signing_key(private)


def test_garbage_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(b"not a key")
    path.chmod(0o600)
    with pytest.raises(SigningKeyError, match="PKCS#8"):
        load_signing_key(str(path))


def test_signature_epoch_sequence(tmp_path: Path) -> None:
    private, trust, key_id = _keys(tmp_path)
    raw = base64.b64decode(Path(trust).read_text().split()[1])
    public = Ed25519PublicKey.from_public_bytes(raw)
    signer = Signer(load_signing_key(private))
    ops = [DeleteLink("veth1", NsRef.named("ns1"))]
    first = signer.sign(ops, Observe((NsRef.named("ns1"),), scan_named=True), "vpp1")
    second = signer.sign([], None, "vpp1")
    public.verify(first.signature, first.batch)
    assert first.key_id == key_id
    a, b = helper_pb2.Batch.FromString(first.batch), helper_pb2.Batch.FromString(second.batch)
    assert a.epoch == b.epoch and len(a.epoch) == 16
    assert b.sequence > a.sequence
    assert a.owner == "vpp1" and len(a.operations) == 1 and a.observe.scan_named
    assert not b.HasField("observe")
    assert Signer(load_signing_key(private)).epoch != signer.epoch
    with pytest.raises(InvalidSignature):
        public.verify(first.signature, first.batch + b"\x00")
