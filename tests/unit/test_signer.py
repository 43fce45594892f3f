"""Signer: key files, key id, signatures over exact bytes, epoch and sequence."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from controller.ops import DeleteLink, NsRef
from controller.signer import (
    KeyFileExists,
    Observe,
    Signer,
    SigningKey,
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


def _private_file(tmp_path: Path, name: str, pem: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(pem)
    path.chmod(0o600)
    return str(path)


def test_a_key_signs_through_libsodium_as_cryptography_signs(tmp_path: Path) -> None:
    """keygen's file and `openssl genpkey`'s are read without `cryptography` (its library
    is 7.4 MiB of the controller's RSS); Ed25519 signatures are deterministic, so both
    libraries must give the same bytes."""
    openssl = subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519"],
                             capture_output=True, check=True).stdout
    private, _, _ = _keys(tmp_path)
    for path in (private, _private_file(tmp_path, "openssl.key", openssl)):
        loaded = load_signing_key(path)
        assert isinstance(loaded, SigningKey)
        reference = serialization.load_pem_private_key(Path(path).read_bytes(), None)
        assert isinstance(reference, Ed25519PrivateKey)
        assert loaded.sign(b"a batch") == reference.sign(b"a batch")
        assert Signer(loaded).key_id == Signer(reference).key_id


def test_other_key_files_are_still_read_or_refused_by_cryptography(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"secret"))
    with pytest.raises(SigningKeyError, match="PKCS#8"):
        load_signing_key(_private_file(tmp_path, "encrypted.key", encrypted))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    with pytest.raises(SigningKeyError, match="not an Ed25519 key"):
        load_signing_key(_private_file(tmp_path, "rsa.key", rsa_key))
    annotated = b"made by hand\n" + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())  # OpenSSL's PEM reader skips text before the key
    loaded = load_signing_key(_private_file(tmp_path, "annotated.key", annotated))
    assert loaded.sign(b"x") == key.sign(b"x")


def test_watch_requests_signed_in_one_millisecond_differ() -> None:
    """The helper takes each (key id, time) once: a stream reopened at once, or several
    opened together, would otherwise be refused as a replay."""
    signer = Signer(Ed25519PrivateKey.generate())
    times = [signer.watch_request().unix_time_ms for _ in range(200)]
    assert len(set(times)) == len(times)
    assert times == sorted(times)
