"""Ed25519 signing of helper batches: key loading, key generation, epoch and sequence.

The signature covers the exact serialized `Batch` bytes carried in `SignedBatch.batch`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import stat
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller import wire
from controller.ops import NsRef, Op
from netagent_api import helper_pb2, watch_message


class SigningKeyError(Exception):
    """The signing key file is missing, unreadable, too open or not an Ed25519 key."""


class KeyFileExists(Exception):
    """keygen refused to overwrite an existing file."""


def key_id(public_raw: bytes) -> str:
    """The first 16 hex digits of SHA-256 over the 32 raw public-key bytes."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def public_raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def load_signing_key(path: str) -> Ed25519PrivateKey:
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
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as err:
        raise SigningKeyError(
            f"signing key {path} is not an unencrypted PKCS#8 PEM key: {err}"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"signing key {path} is not an Ed25519 key")
    return key


def trust_line(key: Ed25519PrivateKey, comment: str) -> str:
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

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.key_id = key_id(public_raw(key))
        self.epoch = os.urandom(16)
        self._sequence = 0
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
        """A `WatchLinks` request: the helper serves the link stream only to a trusted key."""
        now_ms = time.time_ns() // 1_000_000
        return helper_pb2.WatchRequest(
            key_id=self.key_id, unix_time_ms=now_ms,
            signature=self._key.sign(watch_message(self.key_id, now_ms)))
