"""The audit writer's durability, call by call: a new log's directory entry, each record
before its head, a rotation's renames before the next record (pure logic with the real
file system; found by bench/mutation.py)."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
from pathlib import Path

import pytest

from netagent_audit.records import HEAD_SLOT, Head
from netlinkd import audit
from netlinkd.audit import AuditLog
from tests.harness.durability import DurabilitySpy, open_fds

RECORD: dict[str, object] = {"kind": "refused", "error": "x" * 100}


def _log(tmp_path: Path, **options: int) -> tuple[AuditLog, Path, Path]:
    path, head = tmp_path / "audit.log", tmp_path / "audit-head.json"
    return AuditLog(str(path), head_path=str(head), **options), path, head


def test_a_new_log_then_each_record_then_its_head_are_made_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The head file is made whole by a helper's first head (renamed into place, its
    directory entry fsync'd); then each head goes in place into the slot not holding the
    last one, fdatasync'd."""
    spy = DurabilitySpy(monkeypatch)
    log, path, head = _log(tmp_path)
    try:
        assert spy.take() == [f"fsync {tmp_path}"]  # the new file's directory entry
        log.append(RECORD)
        assert spy.take() == [f"fsync {path}", f"fsync {head}.tmp",
                              f"rename {head}.tmp {head}", f"fsync {tmp_path}"]
        assert Head.decode(head.read_bytes(), str(head)) == log.head == Head(0, log.head.hash)
        heads = [log.head]
        for _ in range(3):
            log.append(RECORD)
            assert spy.take() == [f"fsync {path}", f"fdatasync {head}"]
            heads.append(log.head)
            slots = Head.slots(head.read_bytes())
            assert slots[log.head.n % 2] == log.head and slots[1 - log.head.n % 2] == heads[-2]
        assert head.stat().st_size == HEAD_SLOT + len(heads[1].encode())
    finally:
        log.close()
    reopened = AuditLog(str(path), head_path=str(head))
    reopened.append(RECORD)  # a new helper's first head makes the file anew
    assert Head.slots(head.read_bytes()) == [reopened.head, None]
    first = reopened.head
    reopened.append(RECORD)
    reopened.close()
    assert Head.slots(head.read_bytes()) == [first, reopened.head]
    assert spy.take() == [f"fsync {path}", f"fsync {head}.tmp", f"rename {head}.tmp {head}",
                          f"fsync {tmp_path}", f"fsync {path}", f"fdatasync {head}"]


def test_a_head_left_for_later_is_recorded_before_the_next_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An intent (`head_now=False`): one fsync before the batch acts. Its head is written at
    once without an fsync, so a helper killed while the batch runs leaves a head naming the
    intent (only a power loss can leave it one behind); it is made durable before the next
    record, and a helper killed in between resumes."""
    log, path, head = _log(tmp_path)
    spy = DurabilitySpy(monkeypatch)
    log.append(RECORD)
    spy.take()
    log.append(RECORD, head_now=False)
    assert spy.take() == [f"fsync {path}"]
    assert Head.decode(head.read_bytes(), str(head)) == log.head == Head(1, log.head.hash)
    disk = tmp_path / "killed"  # what a restart after a kill here finds on disk
    disk.mkdir()
    shutil.copy(path, disk / path.name)
    shutil.copy(head, disk / head.name)
    resumed = AuditLog(str(disk / path.name), head_path=str(disk / head.name))
    assert resumed.head == log.head
    resumed.close()
    spy.take()
    log.append(RECORD)
    assert spy.take() == [f"fdatasync {head}", f"fsync {path}", f"fdatasync {head}"]
    assert Head.decode(head.read_bytes(), str(head)) == log.head == Head(2, log.head.hash)
    log.close()


def test_rotation_makes_its_renames_durable_before_the_next_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, path, head = _log(tmp_path, max_bytes=600, keep_rotated=2)
    spy = DurabilitySpy(monkeypatch)
    try:
        for _ in range(4):
            log.append(RECORD)
        events = spy.take()
    finally:
        log.close()
    writes = [i for i, event in enumerate(events) if event == f"fsync {path}"]
    assert len(writes) > 4, "the rotation records too"
    assert all(events[i + 1] in (f"fdatasync {head}", f"fsync {head}.tmp") for i in writes), \
        "every record's head, the rotation record's too, is durable before the next record"
    first = events.index(f"rename {path} {path}.1")
    assert f"fsync {tmp_path}" in events[first:events.index(f"fsync {path}", first)]
    assert f"rename {path}.1 {path}.2" in events  # the older file shifted first
    assert not (tmp_path / "audit.log.3").exists()  # keep_rotated = 2


def test_the_head_file_is_never_written_through_a_symlink(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    log, _path, head = _log(tmp_path)
    try:
        Path(f"{head}.tmp").symlink_to(victim)
        with caplog.at_level(logging.ERROR, logger=audit.__name__):
            log.append(RECORD)
        assert victim.read_text() == "untouched"
        assert "cannot record the audit head" in caplog.text
    finally:
        log.close()


def test_head_is_logged_when_it_moved_and_descriptors_are_closed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fds = open_fds()
    with caplog.at_level(logging.INFO, logger=audit.__name__):
        log, path, _head = _log(tmp_path)
        assert "audit head" not in caplog.text  # an empty log has no head to copy out
        log.append(RECORD)
        log.log_head()
        log.log_head()  # unchanged: not logged twice
        log.close()
    copies = [r.getMessage() for r in caplog.records if "audit head" in r.getMessage()]
    assert copies == [f"audit head n=0 hash={log.head.hash} "
                      f"(audit verify --expect-head 0:{log.head.hash})"]
    assert open_fds() == fds
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=audit.__name__):
        resumed = AuditLog(str(path))
        assert [r.getMessage() for r in caplog.records] == copies  # copied out at start
        resumed.close()


def test_a_log_named_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    spy = DurabilitySpy(monkeypatch)
    AuditLog("audit.log").close()
    assert spy.take() == [f"fsync {tmp_path}"]


def _grown_to(path: Path, size: int) -> None:
    """The log padded (sparsely) in front of its last record to `size` bytes: resuming reads
    only the last record, so the writer takes it for a log of that size."""
    last = b"\n" + path.read_bytes()
    path.write_bytes(b"")
    with path.open("r+b") as handle:
        handle.seek(size - len(last))
        handle.write(last)


@pytest.mark.parametrize("over", [0, 1])
def test_the_default_rotation_is_at_64_mib_keeping_16_files(tmp_path: Path, over: int) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(str(path))
    log.append(RECORD)
    record_bytes = len(log._encode(RECORD, log.head)[0])
    log.close()
    for number in range(1, 17):
        Path(f"{path}.{number}").write_text(f"{number}\n")
    _grown_to(path, 64 * 1024 * 1024 - record_bytes + over)
    log = AuditLog(str(path))
    try:
        log.append(RECORD)
    finally:
        log.close()
    if over:  # the log became .1, and .15 became .16
        assert Path(f"{path}.1").stat().st_size > 64 * 1024 * 1024 - record_bytes
    else:
        assert Path(f"{path}.1").read_text() == "1\n"
    assert Path(f"{path}.16").read_text() == ("15\n" if over else "16\n")
    assert not Path(f"{path}.17").exists()


@pytest.mark.parametrize("new_file_created", [True, False])
def test_resume_after_a_crash_in_rotation_with_the_head_one_record_behind(
    tmp_path: Path, new_file_created: bool
) -> None:
    log, path, head = _log(tmp_path)
    log.append(RECORD)
    one_behind = head.read_bytes()
    log.append(RECORD)  # then a crash before its head was written...
    last = log.head
    log.close()
    head.write_bytes(one_behind)
    path.rename(f"{path}.1")  # ...and, on the next append, one right after the rotation's rename
    if new_file_created:
        path.touch()
    resumed = AuditLog(str(path), head_path=str(head))
    try:
        assert resumed.head == last
    finally:
        resumed.close()


def test_a_head_one_record_behind_must_name_that_records_hash(tmp_path: Path) -> None:
    log, path, head = _log(tmp_path)
    for _ in range(2):
        log.append(RECORD)
    log.close()
    head.write_bytes(Head(0, "f" * 64).encode())
    with pytest.raises(audit.AuditUnavailable, match=re.escape(
            f"ends at record 1, but the helper recorded record 0 ({'f' * 16}...) in {head}")):
        AuditLog(str(path), head_path=str(head))


def test_a_record_larger_than_max_bytes_starts_a_new_log_without_rotating(tmp_path: Path) -> None:
    log, path, _head = _log(tmp_path, max_bytes=10)
    try:
        log.append(RECORD)
        assert not Path(f"{path}.1").exists()  # an empty log is never rotated
        log.append(RECORD)
        assert Path(f"{path}.1").exists()
    finally:
        log.close()


def test_closing_copies_the_last_head_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log, _path, _head = _log(tmp_path)
    with caplog.at_level(logging.INFO, logger=audit.__name__):
        log.append(RECORD)
        log.close()
    assert f"audit head n=0 hash={log.head.hash}" in caplog.text


def test_a_torn_write_is_cut_off_durably_and_the_log_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, path, _head = _log(tmp_path)
    try:
        log.append(RECORD)
        size = path.stat().st_size
        real_write = os.write
        monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[:10]))
        spy = DurabilitySpy(monkeypatch)
        with pytest.raises(audit.AuditUnavailable, match="No space left"):
            log.append(RECORD)
        assert path.stat().st_size == size
        assert spy.take() == [f"fsync {path}"]  # the cut is durable
        monkeypatch.setattr(os, "write", real_write)
        log.append(RECORD)
        assert log.head.n == 1
    finally:
        log.close()


def _failing(name: str) -> object:
    def fail(*_args: object) -> None:
        raise OSError(errno.EIO, f"{name} failed")
    return fail


@pytest.mark.parametrize(("torn", "failing"), [(False, "fsync"), (True, "ftruncate")])
def test_a_log_that_cannot_be_made_whole_is_closed_for_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, torn: bool, failing: str
) -> None:
    fds = open_fds()
    log, _path, _head = _log(tmp_path)
    log.append(RECORD)
    with monkeypatch.context() as broken:
        if torn:
            real_write = os.write
            broken.setattr(os, "write", lambda fd, data: real_write(fd, data[:10]))
        broken.setattr(os, failing, _failing(failing))
        with pytest.raises(audit.AuditUnavailable):
            log.append(RECORD)
    assert open_fds() == fds  # the descriptor is closed
    with pytest.raises(audit.AuditUnavailable, match="is closed; restart the helper"):
        log.append(RECORD)
    log.close()


def test_rotation_names_the_previous_file_copies_the_head_and_leaks_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fds = open_fds()
    log, path, _head = _log(tmp_path, max_bytes=600, keep_rotated=3)
    Path(f"{path}.3").write_text("an operator deleted .2, this one is the oldest\n")
    try:
        with caplog.at_level(logging.INFO, logger=audit.__name__):
            while not Path(f"{path}.1").exists():
                log.append(RECORD)
            rotated = json.loads(path.read_bytes().splitlines()[0])
            assert rotated["kind"] == "rotated"
            assert rotated["previous_file"] == "audit.log.1"
            assert f"audit head n={rotated['n']} " in caplog.text  # before any close
    finally:
        log.close()
    assert not Path(f"{path}.3").exists()  # the oldest goes even with a gap below it
    assert open_fds() == fds


def test_a_second_writer_is_refused_and_leaks_nothing(tmp_path: Path) -> None:
    log, path, _head = _log(tmp_path)
    fds = open_fds()
    try:
        refusal = re.escape(f"cannot use audit log {path}: another process is writing it") + "$"
        with pytest.raises(audit.AuditUnavailable, match=refusal):
            AuditLog(str(path))
        assert open_fds() == fds
    finally:
        log.close()


def test_a_log_that_cannot_rotate_is_closed_for_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, _path, _head = _log(tmp_path, max_bytes=600)
    log.append(RECORD)
    with monkeypatch.context() as broken:
        broken.setattr(os, "rename", _failing("rename"))
        with pytest.raises(audit.AuditUnavailable, match="cannot rotate"):
            while True:
                log.append(RECORD)
    with pytest.raises(audit.AuditUnavailable, match="is closed; restart the helper"):
        log.append(RECORD)
    log.close()


def test_a_record_is_encoded_once_unless_it_opens_a_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Canonical JSON and hash of a record (about 40 us for an intent) are made once per
    append, not once to size it and again to write it; again only after a rotation, whose
    record the new one chains to."""
    encoded: list[object] = []
    encode = AuditLog._encode

    def counting(log: AuditLog, record: dict[str, object], after: Head) -> tuple[bytes, Head]:
        encoded.append(record["kind"])
        return encode(log, record, after)

    monkeypatch.setattr(AuditLog, "_encode", counting)
    log, path, _head = _log(tmp_path, max_bytes=2000)
    per_append = []
    try:
        for _ in range(12):
            log.append(RECORD)
            per_append.append(encoded[:])
            encoded.clear()
    finally:
        log.close()
    assert Path(f"{path}.1").exists()
    once, rotating = ["refused"], ["refused", "rotated", "refused"]
    assert per_append.count(once) > per_append.count(rotating) > 0
    assert all(encodings in (once, rotating) for encodings in per_append)
