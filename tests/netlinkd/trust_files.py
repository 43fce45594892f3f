"""A fresh Ed25519 key and a trust file that trusts it, as the helper requires it."""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def trusted_key(directory: Path) -> tuple[Ed25519PrivateKey, bytes, Path]:
    """(private key, raw public key, trust file): the file 0600 in `directory`, now 0700."""
    private = Ed25519PrivateKey.generate()
    raw_public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    trust_path = directory / "trust.keys"
    trust_path.write_text(f"ed25519 {base64.b64encode(raw_public).decode()} t\n")
    trust_path.chmod(0o600)
    directory.chmod(0o700)
    return private, raw_public, trust_path
