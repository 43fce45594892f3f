"""`audit show` cannot be made to lie, and records cannot be dropped quietly (issue 15, part 2).

The attacker here can write the log file and recompute the whole chain (`rechain`
renumbers and rehashes). What stops it: intent fields are checked against the signed bytes,
and the helper's head (record number and hash) in its state dir, or a copy from the journal.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from seclib import BatchSigner, audit_cli, delete_op, head_path, intent_record, result_record
from test_audit_tamper import lines_of, rechain

from netagent_audit.records import HEAD_SLOT, Head
from netlinkd.audit import AuditLog, AuditUnavailable


def verify(log: Path, trust: Path, *extra: str) -> tuple[int, str]:
    result = audit_cli("verify", "--audit-log", str(log), "--trust-key", str(trust),
                       "--state-dir", str(head_path(log).parent), *extra)
    return result.returncode, result.stdout + result.stderr


def records_of(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in lines_of(log)]


def test_intact_log_reaches_the_helpers_head(built_log: Path, trust_file: Path) -> None:
    code, out = verify(built_log, trust_file)
    assert code == 0, out
    head = Head.decode(head_path(built_log).read_bytes(), "head")
    last = records_of(built_log)[-1]
    assert (head.n, head.hash) == (last["n"], last["hash"])
    assert f"head: {head.n}:{head.hash}" in out


def test_rewritten_intent_fails_verify_and_show_prints_the_signed_operations(
    built_log: Path, trust_file: Path
) -> None:
    """The issue's reproduction: ops rewritten to a harmless one, ts moved to 2025."""
    records = records_of(built_log)
    records[0]["ops"] = ["set_link harmless"]
    records[0]["interfaces"] = ["harmless"]
    built_log.write_bytes(rechain(records))
    code, out = verify(built_log, trust_file)
    assert code == 1 and "record 0: intent field 'ops' differs from the signed batch" in out
    shown = audit_cli("show", "--audit-log", str(built_log)).stdout.splitlines()
    assert "delete_link sec0" in shown[0] and "harmless" not in shown[0]
    records = records_of(built_log)
    records[0]["ops"], records[0]["interfaces"] = ["delete_link sec0"], ["sec0"]
    records[0]["ts"] = "2025-01-01T00:00:00.000Z"
    built_log.write_bytes(rechain(records))
    code, out = verify(built_log, trust_file)
    assert code == 1 and "record 0: intent ts 2025-01-01T00:00:00.000Z is" in out


def test_dropping_a_batch_and_rechaining_is_caught(built_log: Path, trust_file: Path) -> None:
    records = records_of(built_log)
    assert records[2]["kind"] == "intent" and records[3]["kind"] == "result"
    built_log.write_bytes(rechain(records[:2] + records[4:]))
    code, out = verify(built_log, trust_file)
    assert code == 1 and "record(s) were removed from the end" in out, out


def test_dropping_a_record_without_renumbering_is_caught_by_the_file_alone(
    built_log: Path, trust_file: Path
) -> None:
    records = records_of(built_log)
    del records[4]
    prev = "0" * 64
    from netagent_audit.records import canonical_json, record_hash

    out = b""
    for record in records:  # rehashed but not renumbered
        record["prev"] = prev
        record["hash"] = prev = record_hash(record)
        out += canonical_json(record) + b"\n"
    built_log.write_bytes(out)
    plain = audit_cli("verify", "--audit-log", str(built_log), "--trust-key", str(trust_file))
    assert plain.returncode == 1 and "record number 5 follows 3" in plain.stdout


@pytest.mark.parametrize("keep", [0, 10, 30])
def test_tail_truncation_and_empty_log_are_caught(
    built_log: Path, trust_file: Path, keep: int
) -> None:
    built_log.write_bytes(b"".join(lines_of(built_log)[:keep]))
    code, out = verify(built_log, trust_file)
    assert code == 1 and "record(s) were removed from the end" in out, out


def test_rewritten_result_is_caught(built_log: Path, trust_file: Path) -> None:
    records = records_of(built_log)
    last_result = max(i for i, r in enumerate(records) if r["kind"] == "result")
    was = records[last_result]["verdict"]
    records[last_result]["verdict"] = "applied" if was != "applied" else "failed"
    built_log.write_bytes(rechain(records))
    code, out = verify(built_log, trust_file)
    assert code == 1 and "is not the one the helper wrote (the chain was rewritten)" in out


def test_deleted_head_file_is_a_failure(built_log: Path, trust_file: Path) -> None:
    head_path(built_log).unlink()
    code, out = verify(built_log, trust_file)
    assert code == 2 and "head was deleted" in out


def test_journal_copy_catches_a_rollback_of_log_and_state_dir_together(
    built_log: Path, trust_file: Path, signer: BatchSigner, tmp_path: Path
) -> None:
    """An attacker with both: copies log and state dir, lets the helper write on, then puts
    the copies back. Only a head copied out of both (journal) shows it."""
    saved = tmp_path / "saved"
    saved.mkdir()
    shutil.copy(built_log, saved / "audit.log")
    shutil.copy(head_path(built_log), saved / "head")
    log = AuditLog(str(built_log), head_path=str(head_path(built_log)))
    try:
        signed = signer.sign(signer.batch(delete_op("later")))
        log.append(intent_record(signed))
        log.append(result_record(signed, "applied"))
        journal = log.head
    finally:
        log.close()
    shutil.copy(saved / "audit.log", built_log)
    shutil.copy(saved / "head", head_path(built_log))
    assert verify(built_log, trust_file)[0] == 0, "log and state dir agree: not visible there"
    code, out = verify(built_log, trust_file, "--expect-head", f"{journal.n}:{journal.hash}")
    assert code == 1 and f"--expect-head (record {journal.n})" in out


def test_helper_refuses_to_resume_a_log_behind_its_head(
    built_log: Path, trust_file: Path
) -> None:
    lines = lines_of(built_log)
    built_log.write_bytes(b"".join(lines[:-2]))
    with pytest.raises(AuditUnavailable, match="was truncated, rolled back or replaced"):
        AuditLog(str(built_log), head_path=str(head_path(built_log)))
    built_log.write_bytes(b"".join(lines[:-1]))  # a crash leaves the head one ahead? never:
    with pytest.raises(AuditUnavailable, match="truncated"):
        AuditLog(str(built_log), head_path=str(head_path(built_log)))
    built_log.write_bytes(b"".join(lines))
    AuditLog(str(built_log), head_path=str(head_path(built_log))).close()


def test_head_one_behind_the_log_is_a_crash_not_tampering(
    built_log: Path, trust_file: Path
) -> None:
    """The head is written after the record is durable: a crash in between leaves it one
    record behind. The helper resumes, and verify says what is not anchored."""
    records = records_of(built_log)
    behind = Head(int(str(records[-2]["n"])), str(records[-2]["hash"]))
    head_path(built_log).write_bytes(behind.encode())
    AuditLog(str(built_log), head_path=str(head_path(built_log))).close()
    head_path(built_log).write_bytes(behind.encode())
    code, out = verify(built_log, trust_file)
    assert code == 0 and "1 record(s) after the helper's recorded head" in out


def test_the_configured_state_dir_is_checked_for_the_configured_log(
    built_log: Path, trust_file: Path, tmp_path: Path
) -> None:
    """Without --state-dir, verify takes the head from the helper's config, but only for the
    log that config names (a copy of a log elsewhere is not compared with a live head)."""
    config = tmp_path / "netagent.toml"
    config.write_text(f'[netlinkd]\naudit_log = "{built_log}"\n'
                      f'state_dir = "{head_path(built_log).parent}"\n')
    built_log.write_bytes(b"".join(lines_of(built_log)[:-1]))
    base = ("verify", "--audit-log", str(built_log), "--trust-key", str(trust_file))
    checked = audit_cli(*base, "--config", str(config))
    assert checked.returncode == 1 and "removed from the end" in checked.stdout
    copy = tmp_path / "copy.log"
    shutil.copy(built_log, copy)
    elsewhere = audit_cli("verify", "--audit-log", str(copy), "--trust-key", str(trust_file),
                          "--config", str(config))
    assert elsewhere.returncode == 0 and "head was not checked" in elsewhere.stdout


def _records_behind(log: Path, count: int) -> Head:
    record = records_of(log)[-1 - count]
    return Head(int(str(record["n"])), str(record["hash"]))


def test_a_head_write_torn_by_a_crash_leaves_the_head_before_it(
    built_log: Path, trust_file: Path
) -> None:
    """The head is written in place into the slot not holding the last one. A crash at
    any byte of that write (what it leaves is the new bytes up to there, then the old ones
    or zeros) leaves the other slot: one record behind, which the helper resumes from and
    verify accepts."""
    path = head_path(built_log)
    whole = path.read_bytes()
    newest, before = _records_behind(built_log, 0), _records_behind(built_log, 1)
    slot = Head.slots(whole).index(newest)
    assert Head.slots(whole)[1 - slot] == before
    start, new = slot * HEAD_SLOT, newest.encode()
    old = _records_behind(built_log, 2).encode()  # what that slot held before the write
    torn_files = [whole[:start] + new[:cut] + tail[cut:] + whole[start + len(new):]
                  for cut in range(len(new)) for tail in (old, bytes(len(new)))]
    torn_files.append(whole[:start] + new.replace(b'"n":', b'"n":1') + whole[start + len(new):])
    for torn in torn_files:
        complete = torn[start:start + len(new)] == new  # the bytes left equal the new ones
        assert Head.decode(torn, "torn") == (newest if complete else before), torn
        path.write_bytes(torn)
        AuditLog(str(built_log), head_path=str(path)).close()
    for torn in (torn_files[0], torn_files[len(new)], torn_files[-1]):
        path.write_bytes(torn)
        code, out = verify(built_log, trust_file)
        assert code == 0 and "1 record(s) after the helper's recorded head" in out, out


def test_an_older_helpers_head_file_is_read_and_written_on(
    built_log: Path, trust_file: Path, signer: BatchSigner
) -> None:
    """Before the slots, the head file was one line without `check`, renamed into place:
    still read; a new helper's first head makes the file anew."""
    path = head_path(built_log)
    newest = _records_behind(built_log, 0)
    path.write_bytes(newest.encode(check=False))
    assert verify(built_log, trust_file)[0] == 0
    path.write_bytes(newest.encode(check=False).replace(b'"n"', b' "n"'))  # not canonical
    assert verify(built_log, trust_file)[0] == 2
    path.write_bytes(newest.encode(check=False))
    log = AuditLog(str(built_log), head_path=str(path))
    try:
        signed = signer.sign(signer.batch(delete_op("later")))
        log.append(intent_record(signed))  # the file made anew, renamed into place
        assert Head.slots(path.read_bytes()) == [log.head, None]
        log.append(result_record(signed, "applied"))
        assert Head.slots(path.read_bytes()) == [_records_behind(built_log, 1), log.head]
    finally:
        log.close()
    code, out = verify(built_log, trust_file)
    assert code == 0 and f"head: {log.head.n}:{log.head.hash}" in out, out


def test_a_head_file_deleted_while_the_helper_runs_stays_missing_until_it_restarts(
    built_log: Path, trust_file: Path, signer: BatchSigner
) -> None:
    """The helper writes the head in place through the descriptor it opened: a file
    deleted meanwhile is not made again behind the operator's back (verify says the head
    was deleted); a restarted helper's first head makes it anew."""
    path = head_path(built_log)
    log = AuditLog(str(built_log), head_path=str(path))
    try:
        log.append(result_record(signer.sign(signer.batch(delete_op("x"))), "applied"))
        path.unlink()
        log.append(result_record(signer.sign(signer.batch(delete_op("y"))), "applied"))
        assert not path.exists()
        code, out = verify(built_log, trust_file)
        assert code == 2 and "head was deleted" in out, out
    finally:
        log.close()
    log = AuditLog(str(built_log), head_path=str(path))
    try:
        log.append(result_record(signer.sign(signer.batch(delete_op("z"))), "applied"))
    finally:
        log.close()
    assert Head.decode(path.read_bytes(), "head") == log.head
    assert verify(built_log, trust_file)[0] == 0
