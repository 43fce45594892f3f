"""The helper's and the offline verifier's Ed25519 check (libsodium through PyNaCl) accepts
what the controller signs (OpenSSL through `cryptography`) and nothing else."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from netagent_audit.trustfile import PublicKey, parse_line

DATA = b"a signed batch"
# The identity point as a public key: with R = the identity and S = 0 the verification
# equation holds for any message. OpenSSL (`cryptography`) accepts that signature;
# libsodium refuses small-order keys.
IDENTITY = bytes([1]) + bytes(31)


def _trusted(raw: bytes) -> PublicKey:
    """The key as the helper reads it from its trust file."""
    key = parse_line(f"ed25519 {base64.b64encode(raw).decode()} test", "t:1")
    assert key is not None
    return key.public_key


def _signing_pair() -> tuple[Ed25519PrivateKey, bytes]:
    private = Ed25519PrivateKey.generate()
    return private, private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_a_signature_by_the_controllers_library_verifies() -> None:
    private, raw = _signing_pair()
    assert _trusted(raw).verifies(private.sign(DATA), DATA)


def test_anything_else_does_not_verify() -> None:
    private, raw = _signing_pair()
    signature = private.sign(DATA)
    key = _trusted(raw)
    assert not key.verifies(signature, DATA + b"\0")
    assert not key.verifies(bytes([signature[0] ^ 1]) + signature[1:], DATA)
    for wrong_length in (b"", signature[:63], signature + b"\0"):
        assert not key.verifies(wrong_length, DATA)
    other, _raw = _signing_pair()
    assert not key.verifies(other.sign(DATA), DATA)


def test_a_small_order_key_verifies_nothing() -> None:
    assert not _trusted(IDENTITY).verifies(IDENTITY + bytes(32), DATA)
