"""Trusted Ed25519 public keys: file safety, reload on SIGHUP.

The file format is `netagent_audit.trustfile`, shared with the offline verifier.
"""

from __future__ import annotations

import errno
import os
import stat
import threading

from netagent_audit import trustfile
from netagent_audit.trustfile import KEY_ID_CHARS, PublicKey, TrustedKey, is_key_id, key_id_of
from netlinkd.errors import StartupError

__all__ = ["KEY_ID_CHARS", "TrustFileError", "TrustStore", "TrustedKey", "is_key_id", "key_id_of"]


class TrustFileError(StartupError):
    """The trust-key file is unsafe or unreadable."""


def parse_trust_text(text: str, source: str) -> dict[str, TrustedKey]:
    try:
        return trustfile.parse_trust_text(text, source)
    except trustfile.TrustFormatError as exc:
        raise TrustFileError(str(exc)) from exc


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
        self.generation = 0  # of the key set: a signature checked before a reload is rechecked

    def reload(self) -> int:
        """Re-read the file. On error trust nothing (fail closed) and re-raise."""
        keys: dict[str, TrustedKey] = {}
        try:
            keys = load_trust_file(self.path)
        finally:
            with self._lock:
                self._keys, self.generation = keys, self.generation + 1
        return len(keys)

    def get(self, key_id: str) -> PublicKey | None:
        with self._lock:
            found = self._keys.get(key_id)
        return None if found is None else found.public_key

    def key_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._keys)
