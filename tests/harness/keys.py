"""Signing and trust keys for a test: `netagent-ctl keygen`, with a cryptography fallback
while that command is not available."""

from __future__ import annotations

import base64
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .paths import UNPRIVILEGED_UID, venv_tool


@dataclass(frozen=True)
class KeyPair:
    signing_key: Path
    """PKCS#8 PEM Ed25519 private key, owned by the controller's uid, mode 0600."""
    trust_key: Path
    """Trust file for the helper: `ed25519 <base64> comment`, root-owned, mode 0644."""


def make_keys(directory: Path, owner_uid: int = UNPRIVILEGED_UID) -> KeyPair:
    pair = KeyPair(directory / "signing.pem", directory / "trust.keys")
    result = subprocess.run(
        [venv_tool("netagent-ctl"), "keygen", "--signing-key", str(pair.signing_key),
         "--trust-key", str(pair.trust_key)],
        capture_output=True, check=False,
    )
    if result.returncode != 0 or not pair.trust_key.exists():
        _write_keys_directly(pair)
    os.chown(pair.signing_key, owner_uid, -1)
    os.chmod(pair.signing_key, 0o600)
    os.chown(pair.trust_key, 0, 0)
    os.chmod(pair.trust_key, 0o644)
    return pair


def _write_keys_directly(pair: KeyPair) -> None:
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    pair.signing_key.write_bytes(pem)
    pair.trust_key.write_text(f"ed25519 {base64.b64encode(raw).decode()} netagent-tests\n")
