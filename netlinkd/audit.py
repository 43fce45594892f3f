"""Hash-chained, fsync'd, append-only audit log of the helper.

One canonical JSON object per line. Each record carries `ts` (RFC 3339 UTC, milliseconds),
`prev` (the `hash` of the record before it, across rotations) and `hash` (SHA-256 hex over the
canonical JSON of the record without `hash`). Any write or fsync failure raises
`AuditUnavailable`, and the caller must then refuse to touch the kernel (fail closed).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from netlinkd.errors import AuditUnavailable as _HelperAuditUnavailable

GENESIS_HASH = "0" * 64
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_KEEP_ROTATED = 16
RESERVED_FIELDS = ("ts", "prev", "hash")
_TAIL_CHUNK = 64 * 1024


class AuditUnavailable(_HelperAuditUnavailable):
    """The audit log cannot be written; nothing may be applied until it can."""


class AuditLogCorrupt(Exception):
    """An existing audit file cannot be read back as a chain (see `netlinkd audit verify`)."""


def canonical_json(record: dict[str, object]) -> bytes:
    """The exact bytes that are hashed and stored: sorted keys, no spaces, ASCII only."""
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def record_hash(record: dict[str, object]) -> str:
    body = {key: value for key, value in record.items() if key != "hash"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def rfc3339_ms(moment: datetime) -> str:
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def utc_now() -> datetime:
    return datetime.now(UTC)


def rotated_path(path: str, number: int) -> str:
    return f"{path}.{number}"


def fsync_dir(directory: str) -> None:
    fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def iter_lines(path: str) -> Iterator[bytes]:
    """Yield every line of `path` as raw bytes, the final one possibly without a newline."""
    with open(path, "rb") as handle:
        yield from handle


def last_line(path: str) -> bytes | None:
    """The last complete line of a file (without its newline), or None when the file is empty.

    Raises AuditLogCorrupt when the file does not end with a newline (a torn write).
    """
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return None
        chunk = b""
        position = size
        while True:
            step = min(_TAIL_CHUNK, position)
            position -= step
            handle.seek(position)
            chunk = handle.read(step) + chunk
            if not chunk.endswith(b"\n"):
                raise AuditLogCorrupt(f"{path} ends with an incomplete line (torn write)")
            start = chunk.rfind(b"\n", 0, len(chunk) - 1)
            if start >= 0 or position == 0:
                return chunk[start + 1 : -1]


def hash_of_line(line: bytes, path: str) -> str:
    try:
        value = json.loads(line)
    except ValueError as exc:
        raise AuditLogCorrupt(f"{path}: last record is not JSON: {exc}") from exc
    found = value.get("hash") if isinstance(value, dict) else None
    if not isinstance(found, str) or len(found) != 64:
        raise AuditLogCorrupt(f"{path}: last record has no valid 'hash' field")
    return found


def recover_last_hash(path: str) -> str:
    """The hash to chain from: the current file's last record, else the newest rotated file's."""
    for candidate in (path, rotated_path(path, 1)):
        try:
            line = last_line(candidate)
        except FileNotFoundError:
            continue
        if line is not None:
            return hash_of_line(line, candidate)
    return GENESIS_HASH


class AuditLog:
    """Append-only writer. Thread-safe; one process per log (enforced with flock)."""

    def __init__(
        self,
        path: str,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        keep_rotated: int = DEFAULT_KEEP_ROTATED,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.path = path
        self._max_bytes = max_bytes
        self._keep_rotated = keep_rotated
        self._clock = clock
        self._lock = threading.Lock()
        self._fd: int | None = None
        try:
            self._last_hash = recover_last_hash(path)
        except (AuditLogCorrupt, OSError) as exc:
            raise AuditUnavailable(
                f"cannot resume audit log {path}: {exc}; run 'netlinkd audit verify' and move "
                "the damaged file aside"
            ) from exc
        self._fd, self._size = self._open()

    @property
    def last_hash(self) -> str:
        return self._last_hash

    def append(self, record: dict[str, object]) -> None:
        """Write one record and fsync it; raise AuditUnavailable if it is not durable."""
        for field in RESERVED_FIELDS:
            if field in record:
                raise AuditUnavailable(f"audit record must not set reserved field {field!r}")
        with self._lock:
            if self._fd is None:
                raise AuditUnavailable(f"audit log {self.path} is closed; restart the helper")
            if self._size > 0 and self._size + self._estimate(record) > self._max_bytes:
                self._rotate()
            self._write(record)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _estimate(self, record: dict[str, object]) -> int:
        return len(self._encode(record, GENESIS_HASH)[0])

    def _encode(self, record: dict[str, object], prev: str) -> tuple[bytes, str]:
        full: dict[str, object] = dict(record)
        full["ts"] = rfc3339_ms(self._clock())
        full["prev"] = prev
        try:
            digest = record_hash(full)
            full["hash"] = digest
            return canonical_json(full) + b"\n", digest
        except (TypeError, ValueError) as exc:
            raise AuditUnavailable(f"audit record of kind {record.get('kind')!r}: {exc}") from exc

    def _write(self, record: dict[str, object]) -> None:
        assert self._fd is not None
        line, digest = self._encode(record, self._last_hash)
        try:
            written = os.write(self._fd, line)
            if written != len(line):
                detail = f"{os.strerror(errno.ENOSPC)} (wrote {written} of {len(line)} bytes)"
                raise OSError(errno.ENOSPC, detail)
        except OSError as exc:
            self._undo_partial_write(exc)
            raise AuditUnavailable(
                f"cannot write audit log {self.path}: {exc.strerror or exc}; free space or "
                "fix the file system, nothing was applied"
            ) from exc
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._poison()
            raise AuditUnavailable(
                f"cannot fsync audit log {self.path}: {exc.strerror}; restart the helper "
                "after fixing the file system"
            ) from exc
        self._size += len(line)
        self._last_hash = digest

    def _undo_partial_write(self, cause: OSError) -> None:
        """Cut a torn line back off so the file stays a valid chain; else stop writing."""
        assert self._fd is not None
        try:
            if os.fstat(self._fd).st_size != self._size:
                os.ftruncate(self._fd, self._size)
                os.fsync(self._fd)
        except OSError:
            self._poison()

    def _poison(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _open(self) -> tuple[int, int]:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            existed = os.path.exists(self.path)
            fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise AuditUnavailable(
                f"cannot open audit log {self.path}: {exc.strerror}; check the directory"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not existed:
                fsync_dir(os.path.dirname(self.path))
            return fd, os.fstat(fd).st_size
        except OSError as exc:
            os.close(fd)
            reason = (
                "another process is writing it"
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
                else exc.strerror
            )
            raise AuditUnavailable(f"cannot use audit log {self.path}: {reason}") from exc

    def _rotate(self) -> None:
        """Shift `<path>.N` to `.N+1`, rename the log to `.1`, start a new file chained to it."""
        assert self._fd is not None
        try:
            self._shift_rotated()
            os.rename(self.path, rotated_path(self.path, 1))
            os.close(self._fd)
            self._fd = None
            self._fd, self._size = self._open()
            fsync_dir(os.path.dirname(self.path))
        except OSError as exc:
            self._poison()
            raise AuditUnavailable(
                f"cannot rotate audit log {self.path}: {exc.strerror}; check the directory"
            ) from exc
        self._write(
            {
                "kind": "rotated",
                "previous_file": os.path.basename(rotated_path(self.path, 1)),
                "previous_last_hash": self._last_hash,
            }
        )

    def _shift_rotated(self) -> None:
        oldest = rotated_path(self.path, self._keep_rotated)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(oldest)
        for number in range(self._keep_rotated - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.rename(rotated_path(self.path, number), rotated_path(self.path, number + 1))
