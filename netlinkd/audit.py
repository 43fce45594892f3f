"""Hash-chained, fsync'd, append-only audit log of the helper (the writer).

The record format is `netagent_audit.records`. Any write or fsync failure raises
`AuditUnavailable`, and the caller must then refuse to touch the kernel (fail closed).

After each record is durable, its number and hash (the head) are written in place into
`<state dir>/audit-head.json`, into the slot not holding the last head (`Head`), so
truncating or rewriting the log alone is detected by `audit verify`. An intent's head is
made durable with the next record (after the batch acted): the file is never more than one
record behind. The head is also logged ("audit head n=N hash=H", to the journal under
systemd) at start, at each rotation and by `log_head`, which the server calls at a bounded
interval.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import threading
from datetime import UTC, datetime

from netagent_audit.chain import AuditLogCorrupt, last_line, last_record
from netagent_audit.records import (
    GENESIS_HASH,
    HEAD_SLOT,
    RESERVED_FIELDS,
    Head,
    canonical_json,
    record_hash,
    rfc3339_ms,
    rotated_path,
    rotated_record,
)
from netlinkd.errors import AuditUnavailable as _HelperAuditUnavailable

log = logging.getLogger(__name__)
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_KEEP_ROTATED = 16


class AuditUnavailable(_HelperAuditUnavailable):
    """The audit log cannot be written; nothing may be applied until it can."""


def fsync_dir(directory: str) -> None:
    fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _nonempty(path: str) -> bool:
    try:
        return os.path.getsize(path) > 0
    except OSError:
        return False


def replace_file(path: str, data: bytes, *, durable: bool = True) -> None:
    """Write `data` to `path`.tmp (0600), fsync it unless not `durable`, then rename it over
    `path` (not durable: survives a killed process, not a power loss)."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        with open(fd, "wb", closefd=False) as handle:
            handle.write(data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class AuditLog:
    """Append-only writer. Thread-safe; one process per log (enforced with flock)."""

    def __init__(
        self,
        path: str,
        *,
        head_path: str | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        keep_rotated: int = DEFAULT_KEEP_ROTATED,
    ) -> None:
        self.path = path
        self._head_path = head_path
        self._max_bytes = max_bytes
        self._keep_rotated = keep_rotated
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._head_pending = False
        self._head_fd: int | None = None  # opened when first written
        self._slot, self._slot_head = 0, Head(-1, "")  # the last head written, and where
        try:
            self._head = last_record(path) or Head(-1, GENESIS_HASH)
        except (AuditLogCorrupt, OSError) as exc:
            raise AuditUnavailable(
                f"cannot resume audit log {path}: {exc}; run 'netlinkd audit verify' and move "
                "the damaged file aside"
            ) from exc
        if head_path is not None:
            self._check_recorded_head(head_path)
        self._logged = Head(-2, "")
        self._fd, self._size = self._open()
        self.log_head()

    def _check_recorded_head(self, head_path: str) -> None:
        """Refuse to resume a log that does not reach the head recorded after its last write
        (truncated, rolled back or replaced): writing on would bury the evidence."""
        try:
            with open(head_path, "rb") as handle:
                recorded = Head.decode(handle.read(), head_path)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise AuditUnavailable(f"cannot read the audit head {head_path}: {exc}") from exc
        if recorded == self._head or (
            recorded.n == self._head.n - 1 and recorded.hash == self._last_prev()
        ):
            return  # a crash may leave the head one record behind, never more
        raise AuditUnavailable(
            f"{self.path} ends at record {self._head.n}, but the helper recorded record "
            f"{recorded.n} ({recorded.hash[:16]}...) in {head_path}: the log was truncated, "
            "rolled back or replaced. Run 'netlinkd audit verify', keep the evidence, then move "
            "the log and the head file aside to start a new chain"
        )

    def _last_prev(self) -> str:
        line = next((c for c in (self.path, rotated_path(self.path, 1)) if _nonempty(c)), None)
        if line is None:
            return ""
        value = json.loads(last_line(line) or b"{}")
        return str(value.get("prev", ""))

    @property
    def head(self) -> Head:
        return self._head

    def log_head(self) -> None:
        """Log the head if it moved since it was last logged (a copy outside the state dir)."""
        head = self._head
        if head != self._logged and head.n >= 0:
            self._logged = head
            log.info("audit head n=%d hash=%s (audit verify --expect-head %d:%s)",
                     head.n, head.hash, head.n, head.hash)

    def append(self, record: dict[str, object], *, head_now: bool = True) -> None:
        """Write one record and fsync it; raise AuditUnavailable if it is not durable. Its
        head is recorded at once, or with `head_now=False` at once without an fsync (a kill
        cannot leave the head behind) and durably before the next record."""
        for name in RESERVED_FIELDS:
            if name in record:
                raise AuditUnavailable(f"audit record must not set reserved field {name!r}")
        with self._lock:
            if self._fd is None:
                raise AuditUnavailable(f"audit log {self.path} is closed; restart the helper")
            self._record_head()
            encoded = self._encode(record, self._head)
            if self._size > 0 and self._size + len(encoded[0]) > self._max_bytes:
                self._rotate()
                encoded = self._encode(record, self._head)  # chained to the rotation's
            self._write(encoded, head_now)

    def close(self) -> None:
        with self._lock:
            self._poison()
        self.log_head()

    def _encode(self, record: dict[str, object], after: Head) -> tuple[bytes, Head]:
        full: dict[str, object] = dict(record)
        full["n"] = after.n + 1
        full["ts"] = rfc3339_ms(datetime.now(UTC))
        full["prev"] = after.hash
        try:
            digest = record_hash(full)
            full["hash"] = digest
            return canonical_json(full) + b"\n", Head(after.n + 1, digest)
        except (TypeError, ValueError) as exc:
            raise AuditUnavailable(f"audit record of kind {record.get('kind')!r}: {exc}") from exc

    def _write(self, encoded: tuple[bytes, Head], head_now: bool = True) -> None:
        assert self._fd is not None
        line, head = encoded
        try:
            written = os.write(self._fd, line)
            if written != len(line):
                detail = f"{os.strerror(errno.ENOSPC)} (wrote {written} of {len(line)} bytes)"
                raise OSError(errno.ENOSPC, detail)
        except OSError as exc:
            self._undo_partial_write()
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
        self._head, self._head_pending = head, True
        if head_now:
            self._record_head()
        elif self._head_path is not None:
            with contextlib.suppress(OSError):  # _record_head reports a head it cannot write
                self._put_head(durable=False)

    def _record_head(self) -> None:
        """The record is durable whatever happens here; a head that cannot be written only
        weakens truncation detection until the next write succeeds, so it is logged."""
        if self._head_path is None or not self._head_pending:
            return
        self._head_pending = False
        try:
            self._put_head(durable=True)  # never ahead of the log
        except OSError as exc:
            log.error("cannot record the audit head in %s: %s", self._head_path, exc.strerror)

    def _put_head(self, *, durable: bool) -> None:
        """Write the head in place into the slot not holding the last one written (a torn
        write leaves that one). A helper's first head makes the file anew, renamed into
        place, and opens it."""
        assert self._head_path is not None
        if self._head_fd is None:
            replace_file(self._head_path, self._head.encode(), durable=durable)
            if durable:  # else made again, durably, with the next record
                fsync_dir(os.path.dirname(self._head_path))
                self._head_fd = os.open(self._head_path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
            return
        if self._slot_head != self._head:  # not written already, without a sync
            os.pwrite(self._head_fd, self._head.encode(), (1 - self._slot) * HEAD_SLOT)
            self._slot, self._slot_head = 1 - self._slot, self._head
        if durable:
            os.fdatasync(self._head_fd)

    def _undo_partial_write(self) -> None:
        """Cut a torn line back off so the file stays a valid chain; else stop writing."""
        assert self._fd is not None
        try:
            if os.fstat(self._fd).st_size != self._size:
                os.ftruncate(self._fd, self._size)
                os.fsync(self._fd)
        except OSError:
            self._poison()

    def _poison(self) -> None:
        """Close the log and the head file: nothing more is written."""
        for fd in (self._fd, self._head_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._head_fd = None

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
        record = rotated_record(os.path.basename(rotated_path(self.path, 1)), self._head.hash)
        self._write(self._encode(record, self._head))
        self.log_head()

    def _shift_rotated(self) -> None:
        oldest = rotated_path(self.path, self._keep_rotated)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(oldest)
        for number in range(self._keep_rotated - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.rename(rotated_path(self.path, number), rotated_path(self.path, number + 1))
