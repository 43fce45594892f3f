"""The trust-key file format, shared by the helper and the offline verifier.

One key per line, `ed25519 <base64 of 32 raw bytes> [comment]`; `#` starts a comment.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from nacl._sodium import ffi, lib  # type: ignore[import-not-found]

KEY_ID_CHARS = 16
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
_KEY_ID = re.compile(f"[0-9a-f]{{{KEY_ID_CHARS}}}")


class TrustFormatError(ValueError):
    """A line of a trust-key file is not a key."""


def _sodium_init() -> None:
    if lib.sodium_init() == -1:
        raise RuntimeError("libsodium could not be initialized")


class PublicKey:
    """An Ed25519 public key (RFC 8032), checked by libsodium's `crypto_sign_open`, called
    as `nacl.signing.VerifyKey.verify` calls it, through PyNaCl's compiled module: the
    public API imports all 14 of PyNaCl's binding modules (0.8 MiB in the helper) for this
    one function. libsodium refuses small-order keys and non-canonical signatures."""

    def __init__(self, raw: bytes) -> None:
        if len(raw) != PUBLIC_KEY_BYTES:
            raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes")
        ffi.init_once(_sodium_init, "libsodium")
        self._raw = raw

    def verifies(self, signature: bytes, data: bytes) -> bool:
        if len(signature) != SIGNATURE_BYTES:
            return False
        signed = signature + data
        message = ffi.new("unsigned char[]", len(signed))
        length = ffi.new("unsigned long long *")
        return bool(lib.crypto_sign_open(message, length, signed, len(signed), self._raw) == 0)


@dataclass(frozen=True)
class TrustedKey:
    key_id: str
    public_key: PublicKey
    comment: str


def key_id_of(raw: bytes) -> str:
    """First 16 hex digits of SHA-256 over the 32 raw public-key bytes."""
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_CHARS]


def is_key_id(text: str) -> bool:
    """True for a string shaped like `key_id_of`'s output: 16 lowercase hex digits."""
    return _KEY_ID.fullmatch(text) is not None


def parse_line(line: str, where: str) -> TrustedKey | None:
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    parts = text.split(None, 2)
    if len(parts) < 2 or parts[0] != "ed25519":
        raise TrustFormatError(f"{where}: expected 'ed25519 <base64 key> [comment]'")
    try:
        raw = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TrustFormatError(f"{where}: key is not valid base64") from exc
    if len(raw) != PUBLIC_KEY_BYTES:
        raise TrustFormatError(f"{where}: key must be {PUBLIC_KEY_BYTES} raw bytes, got {len(raw)}")
    comment = parts[2] if len(parts) == 3 else ""
    return TrustedKey(key_id_of(raw), PublicKey(raw), comment)


def parse_trust_text(text: str, source: str) -> dict[str, TrustedKey]:
    keys: dict[str, TrustedKey] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        key = parse_line(line, f"{source}:{number}")
        if key is not None:
            keys[key.key_id] = key
    return keys
