"""Trusted Ed25519 public keys: file format, file safety, reload on SIGHUP.

Format: one key per line, `ed25519 <base64 of 32 raw bytes> [comment]`; `#` starts a comment.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import os
import re
import stat
import threading
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from netlinkd.errors import StartupError


class TrustFileError(StartupError):
    """The trust-key file is unsafe or unreadable."""


@dataclass(frozen=True)
class TrustedKey:
    key_id: str
    public_key: Ed25519PublicKey
    comment: str


KEY_ID_CHARS = 16
_KEY_ID = re.compile(f"[0-9a-f]{{{KEY_ID_CHARS}}}")


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
        raise TrustFileError(f"{where}: expected 'ed25519 <base64 key> [comment]'")
    try:
        raw = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TrustFileError(f"{where}: key is not valid base64") from exc
    if len(raw) != 32:
        raise TrustFileError(f"{where}: key must be 32 raw bytes, got {len(raw)}")
    comment = parts[2] if len(parts) == 3 else ""
    return TrustedKey(key_id_of(raw), Ed25519PublicKey.from_public_bytes(raw), comment)


def parse_trust_text(text: str, source: str) -> dict[str, TrustedKey]:
    keys: dict[str, TrustedKey] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        key = parse_line(line, f"{source}:{number}")
        if key is not None:
            keys[key.key_id] = key
    return keys


def check_not_writable_by_others(path: str, info: os.stat_result | None = None) -> None:
    """Refuse a file or directory that group/other can write or that a stranger owns."""
    info = info or os.stat(path)
    if info.st_uid not in (0, os.getuid()):
        raise TrustFileError(f"{path} is owned by uid {info.st_uid}; chown it to root")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise TrustFileError(f"{path} is writable by group or others; chmod go-w {path}")


def load_trust_file(path: str) -> dict[str, TrustedKey]:
    """Check the directory, then open the file once, never through a symlink, and check it.

    O_NOFOLLOW refuses a symlink at the configured path itself (ELOOP); the type, owner and
    mode checks then run on the descriptor that is read.
    """
    try:
        check_not_writable_by_others(os.path.dirname(os.path.abspath(path)))
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        with open(fd, encoding="utf-8") as handle:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise TrustFileError(f"trust-key file {path} is not a regular file")
            check_not_writable_by_others(path, info)
            text = handle.read()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TrustFileError(
                f"trust-key file {path} is a symlink; point --trust-key at the file itself"
            ) from exc
        raise TrustFileError(f"cannot read trust-key file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise TrustFileError(f"trust-key file {path} is not UTF-8 text: {exc}") from exc
    return parse_trust_text(text, path)


class TrustStore:
    """The current set of trusted keys; `reload()` swaps it atomically."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._keys = load_trust_file(path)

    def reload(self) -> int:
        """Re-read the file. On error trust nothing (fail closed) and re-raise."""
        try:
            keys = load_trust_file(self.path)
        except TrustFileError:
            with self._lock:
                self._keys = {}
            raise
        with self._lock:
            self._keys = keys
        return len(keys)

    def get(self, key_id: str) -> Ed25519PublicKey | None:
        with self._lock:
            found = self._keys.get(key_id)
        return None if found is None else found.public_key

    def key_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._keys)
