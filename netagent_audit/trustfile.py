"""The trust-key file format, shared by the helper and the offline verifier.

One key per line, `ed25519 <base64 of 32 raw bytes> [comment]`; `#` starts a comment.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

KEY_ID_CHARS = 16
SIGNATURE_BYTES = 64
_KEY_ID = re.compile(f"[0-9a-f]{{{KEY_ID_CHARS}}}")


class TrustFormatError(ValueError):
    """A line of a trust-key file is not a key."""


class PublicKey:
    """An Ed25519 public key (RFC 8032), checked by libsodium through PyNaCl, PyCA's binding.
    In the helper it maps about 1 MiB where `cryptography`'s library maps 7 (issue 16);
    libsodium also refuses small-order keys and non-canonical signatures."""

    def __init__(self, raw: bytes) -> None:
        self._key = VerifyKey(raw)

    def verifies(self, signature: bytes, data: bytes) -> bool:
        if len(signature) != SIGNATURE_BYTES:
            return False
        try:
            self._key.verify(data, signature)
        except BadSignatureError:
            return False
        return True


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
    if len(raw) != 32:
        raise TrustFormatError(f"{where}: key must be 32 raw bytes, got {len(raw)}")
    comment = parts[2] if len(parts) == 3 else ""
    return TrustedKey(key_id_of(raw), PublicKey(raw), comment)


def parse_trust_text(text: str, source: str) -> dict[str, TrustedKey]:
    keys: dict[str, TrustedKey] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        key = parse_line(line, f"{source}:{number}")
        if key is not None:
            keys[key.key_id] = key
    return keys
