"""Rotation keeps one chain across files; a full or read-only file system fails closed."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from seclib import PYTHON, BatchSigner, audit_cli, result_record, write_batches

from netagent_audit.chain import log_files, verify_files
from netagent_audit.cli import chain_state
from netlinkd.audit import AuditLog, AuditUnavailable

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a private tmpfs")


def rotated_log(path: Path, signer: BatchSigner, keep: int = 16) -> None:
    log = AuditLog(str(path), max_bytes=3000, keep_rotated=keep)
    try:
        write_batches(log, signer, 24)
    finally:
        log.close()


def first_record(path: Path) -> dict[str, object]:
    value: dict[str, object] = json.loads(path.read_bytes().splitlines()[0])
    return value


def test_rotation_chains_across_files(
    audit_path: Path, signer: BatchSigner, trust_file: Path
) -> None:
    rotated_log(audit_path, signer)
    files = [Path(p) for p in log_files(str(audit_path), include_rotated=True)]
    assert len(files) >= 4
    for older, newer in itertools.pairwise(files):
        head = first_record(newer)
        last_hash = json.loads(older.read_bytes().splitlines()[-1])["hash"]
        assert head["kind"] == "rotated"
        assert head["prev"] == head["previous_last_hash"] == last_hash
        assert os.stat(newer).st_size <= 3000
    result = audit_cli(
        "verify", "--audit-log", str(audit_path), "--trust-key", str(trust_file),
        "--include-rotated",
    )
    assert result.returncode == 0, result.stdout
    alone = audit_cli("verify", "--audit-log", str(audit_path), "--trust-key", str(trust_file))
    assert alone.returncode == 0, "the current file verifies on its own from its rotated record"


def test_missing_middle_file_is_caught(
    audit_path: Path, signer: BatchSigner, trust_file: Path
) -> None:
    rotated_log(audit_path, signer)
    files = log_files(str(audit_path), include_rotated=True)
    os.rename(files[1], files[1] + ".hidden")
    os.rename(files[0], files[1])
    state = chain_state([str(trust_file)])
    failure = verify_files(log_files(str(audit_path), include_rotated=True), state)
    assert failure is not None and failure.index == 0 and "prev mismatch" in failure.reason


def test_oldest_files_are_dropped_and_rest_still_verifies(
    audit_path: Path, signer: BatchSigner, trust_file: Path
) -> None:
    rotated_log(audit_path, signer, keep=2)
    assert sorted(p.name for p in audit_path.parent.glob("audit.log*")) == [
        "audit.log", "audit.log.1", "audit.log.2",
    ]
    state = chain_state([str(trust_file)])
    assert verify_files(log_files(str(audit_path), include_rotated=True), state) is None


def test_reopen_after_crash_between_rename_and_create(
    audit_path: Path, signer: BatchSigner, trust_file: Path
) -> None:
    rotated_log(audit_path, signer)
    os.rename(audit_path, str(audit_path) + ".1.tmp")
    files = log_files(str(audit_path) + ".1.tmp", include_rotated=False)
    last = json.loads(Path(files[0]).read_bytes().splitlines()[-1])["hash"]
    os.replace(str(audit_path) + ".1", str(audit_path) + ".1.old")
    os.rename(str(audit_path) + ".1.tmp", str(audit_path) + ".1")
    log = AuditLog(str(audit_path))
    try:
        log.append(result_record(signer.sign(signer.batch()), "applied"))
    finally:
        log.close()
    assert first_record(audit_path)["prev"] == last


def test_second_writer_is_refused(audit_path: Path) -> None:
    log = AuditLog(str(audit_path))
    try:
        with pytest.raises(AuditUnavailable, match="another process"):
            AuditLog(str(audit_path))
    finally:
        log.close()


def test_append_after_close_fails_closed(audit_path: Path) -> None:
    log = AuditLog(str(audit_path))
    log.close()
    with pytest.raises(AuditUnavailable, match="closed"):
        log.append({"kind": "result"})


def test_reserved_fields_are_refused(audit_path: Path) -> None:
    log = AuditLog(str(audit_path))
    try:
        with pytest.raises(AuditUnavailable, match="'prev'"):
            log.append({"kind": "result", "prev": "0" * 64})
    finally:
        log.close()


_FULL_DISK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from netlinkd.audit import AuditLog, AuditUnavailable
    from netagent_audit.chain import ChainState, log_files, verify_files
    path, max_bytes = sys.argv[1], int(sys.argv[2])
    log = AuditLog(path, max_bytes=max_bytes)
    appended, errors = 0, []
    while len(errors) < 2:
        try:
            log.append({"kind": "result", "verdict": "applied", "pad": "x" * 900})
            appended += 1
        except AuditUnavailable as exc:
            errors.append(str(exc))
    log.close()
    broken = verify_files(log_files(path, True), ChainState(keys=lambda key_id: None))
    print(json.dumps({"appended": appended, "errors": errors, "broken": str(broken or "")}))
    """
)


def run_in_private_tmpfs(directory: Path, script: str, *args: str, ro: bool = False) -> str:
    """Run `script` with a 16 KiB tmpfs mounted on `directory` in a private mount namespace."""
    remount = f" && mount -o remount,ro {directory}" if ro else ""
    prepare = f"mount -t tmpfs -o size=16k,mode=0700 netagent-audit-test {directory}{remount}"
    command = f'{prepare} && code="$1" && shift && exec "$0" -c "$code" "$@"'
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", command,
         PYTHON, script, *args],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@ROOT_ONLY
@pytest.mark.parametrize("max_bytes", [64 * 1024 * 1024, 4000])
def test_full_disk_fails_closed_and_keeps_chain(tmp_path: Path, max_bytes: int) -> None:
    mount_point = tmp_path / "full"
    mount_point.mkdir()
    output = run_in_private_tmpfs(
        mount_point, _FULL_DISK_SCRIPT, str(mount_point / "audit.log"), str(max_bytes)
    )
    report = json.loads(output)
    assert report["appended"] >= 3
    assert all("No space left" in error for error in report["errors"]), report
    assert report["broken"] == "", "records written before the failure must still verify"


_READ_ONLY_SCRIPT = textwrap.dedent(
    """
    import sys
    from netlinkd.audit import AuditLog, AuditUnavailable
    try:
        AuditLog(sys.argv[1])
    except AuditUnavailable as exc:
        print(exc)
    """
)


@ROOT_ONLY
def test_read_only_file_system_fails_closed(tmp_path: Path) -> None:
    mount_point = tmp_path / "ro"
    mount_point.mkdir()
    output = run_in_private_tmpfs(
        mount_point, _READ_ONLY_SCRIPT, str(mount_point / "audit.log"), ro=True
    )
    assert "Read-only file system" in output
