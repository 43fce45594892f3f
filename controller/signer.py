"""Ed25519 signing of helper batches: key loading, key generation, epoch and sequence.

The signature covers the exact serialized `Batch` bytes carried in `SignedBatch.batch`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import socket
import stat
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import nacl.signing

from controller import wire
from controller.ops import NsRef, Op
from netagent_api import helper_pb2, watch_message

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# PKCS#8 (RFC 5208, RFC 8410) of an Ed25519 key without its public key, before the 32-byte
# seed: what `keygen`, `cryptography` and `openssl genpkey` write
_PKCS8_ED25519 = bytes.fromhex("302e020100300506032b657004220420")
_PEM = (b"-----BEGIN PRIVATE KEY-----", b"-----END PRIVATE KEY-----")


class SigningKey:
    """An Ed25519 private key, signing through libsodium (PyNaCl): `cryptography`'s Rust
    library alone was 7.4 MiB of the controller's RSS (issue 16)."""

    def __init__(self, seed: bytes) -> None:
        self._key = nacl.signing.SigningKey(seed)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data).signature

    def public_raw(self) -> bytes:
        return bytes(self._key.verify_key)


Key: TypeAlias = "SigningKey | Ed25519PrivateKey"


class SigningKeyError(Exception):
    """The signing key file is missing, unreadable, too open or not an Ed25519 key."""


class KeyFileExists(Exception):
    """keygen refused to overwrite an existing file."""


def key_id(public_raw: bytes) -> str:
    """The first 16 hex digits of SHA-256 over the 32 raw public-key bytes."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def public_raw(key: Key) -> bytes:
    if isinstance(key, SigningKey):
        return key.public_raw()
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def _seed_of(data: bytes) -> bytes | None:
    """The seed of an unencrypted PKCS#8 PEM Ed25519 key in its common form; None for any
    other content (`cryptography` then decides)."""
    lines = data.strip().splitlines()
    if len(lines) < 3 or (lines[0].strip(), lines[-1].strip()) != _PEM:
        return None
    try:
        der = base64.b64decode(b"".join(lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(der) != len(_PKCS8_ED25519) + 32 or not der.startswith(_PKCS8_ED25519):
        return None
    return der[len(_PKCS8_ED25519):]


def load_signing_key(path: str) -> SigningKey:
    """Load a PKCS#8 PEM Ed25519 key: mode 0600 or stricter, owned by this process's uid."""
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise SigningKeyError(
                    f"signing key {path} is accessible by group or others "
                    f"(mode {stat.S_IMODE(info.st_mode):04o}); fix it with: chmod 600 {path}"
                )
            if info.st_uid != os.geteuid():
                raise SigningKeyError(
                    f"signing key {path} is owned by uid {info.st_uid}, not by the "
                    f"controller's uid {os.geteuid()}; fix it with: chown {os.geteuid()} {path}"
                )
            data = handle.read()
    except OSError as err:
        raise SigningKeyError(f"cannot read signing key {path}: {err.strerror}") from None
    seed = _seed_of(data)
    if seed is not None:
        return SigningKey(seed)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as err:
        raise SigningKeyError(
            f"signing key {path} is not an unencrypted PKCS#8 PEM key: {err}"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"signing key {path} is not an Ed25519 key")
    return SigningKey(key.private_bytes_raw())


def trust_line(key: Key, comment: str) -> str:
    return f"ed25519 {base64.b64encode(public_raw(key)).decode()} {comment}\n"


def _write_new(path: str, data: bytes, mode: int, force: bool) -> None:
    """Write `data` to `path` created with `mode`; O_EXCL unless `force`."""
    if force:
        tmp = f"{path}.tmp-{os.getpid()}"
        _write_new(tmp, data, mode, force=False)
        os.replace(tmp, path)
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise KeyFileExists(f"{path} exists; remove it or pass --force to overwrite") from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def generate_keypair(signing_key_path: str, trust_key_path: str, force: bool = False) -> str:
    """Write a new private key (0600) and its trust line (0644). Returns the key id."""
    if not force:
        for path in (signing_key_path, trust_key_path):
            if os.path.lexists(path):
                raise KeyFileExists(f"{path} exists; remove it or pass --force to overwrite")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_new(signing_key_path, pem, 0o600, force)
    line = trust_line(key, f"netagent-controller@{socket.gethostname()}")
    _write_new(trust_key_path, line.encode(), 0o644, force)
    return key_id(public_raw(key))


@dataclass(frozen=True)
class Observe:
    """What the helper should report after the operations."""

    netns: tuple[NsRef, ...] = ()
    scan_named: bool = False


class Signer:
    """Signs batches; one random epoch per instance, strictly increasing sequence."""

    def __init__(self, key: Key) -> None:
        self._key = key
        self.key_id = key_id(public_raw(key))
        self.epoch = os.urandom(16)
        self._sequence = 0
        self._watch_ms = 0
        self._lock = threading.Lock()

    @property
    def last_sequence(self) -> int:
        """The sequence number of the batch signed last (0 before the first)."""
        return self._sequence

    def _next(self) -> int:
        with self._lock:
            self._sequence += 1
            return self._sequence

    def sign(
        self, ops: Iterable[Op], observe: Observe | None, owner: str
    ) -> helper_pb2.SignedBatch:
        batch = helper_pb2.Batch(
            epoch=self.epoch,
            sequence=self._next(),
            unix_time_ms=time.time_ns() // 1_000_000,
            owner=owner,
            operations=[wire.op_to_proto(op) for op in ops],
        )
        if observe is not None:
            batch.observe.CopyFrom(
                helper_pb2.ObserveRequest(
                    netns=[wire.ns_to_proto(ref) for ref in observe.netns],
                    scan_named=observe.scan_named,
                )
            )
        raw = batch.SerializeToString()
        return helper_pb2.SignedBatch(
            batch=raw, signature=self._key.sign(raw), key_id=self.key_id
        )

    def watch_request(self) -> helper_pb2.WatchRequest:
        """A `WatchLinks` request: the helper serves the link stream only to a trusted key,
        and each (key id, time) once, so no two requests share a millisecond."""
        with self._lock:
            now_ms = self._watch_ms = max(time.time_ns() // 1_000_000, self._watch_ms + 1)
        return helper_pb2.WatchRequest(
            key_id=self.key_id, unix_time_ms=now_ms,
            signature=self._key.sign(watch_message(self.key_id, now_ms)))
