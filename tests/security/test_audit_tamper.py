"""The audit chain detects every change, deletion, insertion and reordering of records."""

from __future__ import annotations

import base64
import json
import random
import stat
from pathlib import Path

import pytest
from seclib import BatchSigner, audit_cli, delete_op, intent_record, result_record

from netagent_audit.chain import Failure, log_files, verify_files
from netagent_audit.cli import chain_state
from netagent_audit.records import GENESIS_HASH, canonical_json, record_hash
from netlinkd.audit import AuditLog

FLIP_MASKS = (0x01, 0x20, 0x80)


def check(path: Path, trust: Path, include_rotated: bool = False) -> Failure | None:
    state = chain_state([str(trust)])
    return verify_files(log_files(str(path), include_rotated), state)


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def rechain(records: list[dict[str, object]]) -> bytes:
    """What an attacker with write access can do: renumber and recompute every hash."""
    prev = GENESIS_HASH
    out = b""
    for number, record in enumerate(records):
        record = {k: v for k, v in record.items() if k != "hash"}
        record["prev"] = prev
        record["n"] = number
        record["hash"] = prev = record_hash(record)
        out += canonical_json(record) + b"\n"
    return out


def test_fresh_log_is_private_and_starts_at_genesis(built_log: Path, trust_file: Path) -> None:
    assert stat.S_IMODE(built_log.stat().st_mode) == 0o600
    first = json.loads(lines_of(built_log)[0])
    assert first["prev"] == GENESIS_HASH
    assert first["ts"].endswith("Z") and len(first["ts"]) == len("2026-01-01T00:00:00.000Z")
    assert check(built_log, trust_file) is None


def test_cli_verify_reports_count_range_and_last_hash(built_log: Path, trust_file: Path) -> None:
    result = audit_cli("verify", "--audit-log", str(built_log), "--trust-key", str(trust_file))
    last = json.loads(lines_of(built_log)[-1])["hash"]
    assert result.returncode == 0, result.stdout + result.stderr
    first_ts, last_ts = (json.loads(lines_of(built_log)[i])["ts"] for i in (0, -1))
    assert f"OK: {len(lines_of(built_log))} records, {first_ts} .. {last_ts}" in result.stdout
    assert f"last hash: {last}" in result.stdout


def test_reopen_continues_the_chain(built_log: Path, trust_file: Path, signer: BatchSigner) -> None:
    before = json.loads(lines_of(built_log)[-1])["hash"]
    log = AuditLog(str(built_log))
    try:
        log.append(result_record(signer.sign(signer.batch()), "applied"))
    finally:
        log.close()
    assert json.loads(lines_of(built_log)[-1])["prev"] == before
    assert check(built_log, trust_file) is None


def test_every_single_byte_flip_is_caught_at_its_record(built_log: Path, trust_file: Path) -> None:
    original = lines_of(built_log)
    rng = random.Random(1234)
    tried = 0
    for index, line in enumerate(original):
        offsets = {0, len(line) // 2, len(line) - 2, len(line) - 1, rng.randrange(len(line))}
        for offset in sorted(offsets):
            for mask in FLIP_MASKS:
                damaged = bytearray(line)
                damaged[offset] ^= mask
                built_log.write_bytes(b"".join([*original[:index], damaged, *original[index + 1:]]))
                failure = check(built_log, trust_file)
                assert failure is not None, f"flip {mask:#x} at record {index} offset {offset}"
                assert failure.index == index, (index, offset, mask, failure)
                tried += 1
    assert tried > 5 * len(original)


def test_cli_names_the_bad_record(built_log: Path, trust_file: Path) -> None:
    original = lines_of(built_log)
    damaged = original[7].replace(b'"seq":', b'"seq":9', 1)
    built_log.write_bytes(b"".join([*original[:7], damaged, *original[8:]]))
    result = audit_cli("verify", "--audit-log", str(built_log), "--trust-key", str(trust_file))
    assert result.returncode == 1
    assert "record 7: hash mismatch" in result.stdout


@pytest.mark.parametrize("index", [0, 1, 10, -2])
def test_deleting_a_record_is_caught(built_log: Path, trust_file: Path, index: int) -> None:
    original = lines_of(built_log)
    position = index % len(original)
    built_log.write_bytes(b"".join(original[:position] + original[position + 1 :]))
    failure = check(built_log, trust_file)
    assert failure is not None and failure.index == position
    assert "prev mismatch" in failure.reason


@pytest.mark.parametrize("index", [0, 5, 20])
def test_inserting_a_copy_is_caught(built_log: Path, trust_file: Path, index: int) -> None:
    original = lines_of(built_log)
    head, tail = original[: index + 1], original[index + 1 :]
    built_log.write_bytes(b"".join([*head, original[index], *tail]))
    failure = check(built_log, trust_file)
    assert failure is not None and failure.index == index + 1


@pytest.mark.parametrize("index", [0, 3, 30])
def test_swapping_neighbours_is_caught(built_log: Path, trust_file: Path, index: int) -> None:
    lines = lines_of(built_log)
    lines[index], lines[index + 1] = lines[index + 1], lines[index]
    built_log.write_bytes(b"".join(lines))
    failure = check(built_log, trust_file)
    assert failure is not None and failure.index == index


def test_rewritten_chain_with_forged_intent_fails_signature(
    built_log: Path, trust_file: Path, signer: BatchSigner
) -> None:
    records = [json.loads(line) for line in lines_of(built_log)]
    forged = helper_pb2_batch_with_owner(records[2], "attacker")
    records[2]["batch"] = base64.b64encode(forged).decode()
    built_log.write_bytes(rechain(records))
    failure = check(built_log, trust_file)
    assert failure is not None and failure.index == 2
    assert "bad signature" in failure.reason


def helper_pb2_batch_with_owner(record: dict[str, object], owner: str) -> bytes:
    from netagent_api import helper_pb2

    batch = helper_pb2.Batch.FromString(base64.b64decode(str(record["batch"])))
    batch.owner = owner
    return batch.SerializeToString()


def test_rewritten_chain_with_replayed_intent_is_caught(built_log: Path, trust_file: Path) -> None:
    records = [json.loads(line) for line in lines_of(built_log)]
    records.insert(9, dict(records[0]))
    built_log.write_bytes(rechain(records))
    failure = check(built_log, trust_file)
    assert failure is not None and failure.index == 9
    assert "replayed" in failure.reason


@pytest.mark.parametrize(
    ("field", "lie"),
    [("seq", 999), ("epoch", "00" * 16), ("owner", "someone"), ("signed_ms", 1),
     ("ops", ["set_link harmless"]), ("interfaces", ["harmless"])],
)
def test_intent_claims_must_match_the_signed_batch(
    built_log: Path, trust_file: Path, field: str, lie: object
) -> None:
    records = [json.loads(line) for line in lines_of(built_log)]
    records[2][field] = lie  # records[2] is the second batch's intent
    built_log.write_bytes(rechain(records))
    failure = check(built_log, trust_file)
    assert failure is not None and failure.index == 2
    assert f"intent field {field!r} differs from the signed batch" in failure.reason


def test_unknown_key_is_a_failure(built_log: Path, tmp_path: Path) -> None:
    other = BatchSigner().write_trust(tmp_path / "other.keys")
    failure = check(built_log, other)
    assert failure is not None and failure.index == 0 and "not in the trust-key" in failure.reason


def test_tail_truncation_is_caught_by_an_operator_anchor(built_log: Path, trust_file: Path) -> None:
    lines = lines_of(built_log)
    anchor = json.loads(lines[-1])["hash"]
    built_log.write_bytes(b"".join(lines[:-3]))
    plain = audit_cli("verify", "--audit-log", str(built_log), "--trust-key", str(trust_file))
    assert plain.returncode == 0, "the file alone (no state dir, no anchor) cannot tell"
    anchored = audit_cli(
        "verify", "--audit-log", str(built_log), "--trust-key", str(trust_file),
        "--expect-last-hash", anchor,
    )
    assert anchored.returncode == 1 and "truncated" in anchored.stdout


def test_anchor_inside_a_grown_log_is_accepted(
    built_log: Path, trust_file: Path, signer: BatchSigner
) -> None:
    anchor = json.loads(lines_of(built_log)[-1])["hash"]
    log = AuditLog(str(built_log))
    try:
        signed = signer.sign(signer.batch(delete_op("grown")))
        log.append(intent_record(signed))
    finally:
        log.close()
    result = audit_cli(
        "verify", "--audit-log", str(built_log), "--trust-key", str(trust_file),
        "--expect-last-hash", anchor,
    )
    assert result.returncode == 0, result.stdout


def test_torn_last_line_is_reported_and_blocks_reopen(built_log: Path, trust_file: Path) -> None:
    data = built_log.read_bytes()
    built_log.write_bytes(data + b'{"kind":"intent","ha')
    failure = check(built_log, trust_file)
    assert failure is not None and failure.index == len(lines_of(built_log)) - 1
    from netlinkd.audit import AuditUnavailable

    with pytest.raises(AuditUnavailable, match="incomplete line"):
        AuditLog(str(built_log))


def test_missing_log_is_a_usage_error(tmp_path: Path, trust_file: Path) -> None:
    missing = str(tmp_path / "nope")
    result = audit_cli("verify", "--audit-log", missing, "--trust-key", str(trust_file))
    assert result.returncode == 2 and "cannot check" in result.stderr
