"""Bounds on what unverified input can write to the audit log, and audit/state edge cases.

- a refused request's claimed key id, epoch and error text are bounded in the record and reply;
- `audit verify --include-rotated` names a rotated file missing from the middle;
- a replay record with out-of-range numbers is a clean start-up error;
- shutdown waits for a running batch before closing the audit log;
- the trust-key file is never read through a symlink.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from nlkd_lib import NETLINKD, own_sandbox
from trust_files import trusted_key

from netagent_api import helper_pb2
from netagent_audit import chain, records
from netagent_audit import cli as audit_cli
from netlinkd import audit, cli, policy, server, trust
from netlinkd.errors import BadSignature, StartupError
from netlinkd.executor import Outcome
from netlinkd.replay import ReplayGuard
from netlinkd.verify import Verified, Verifier, check_signature

HUGE = 512 * 1024
PER_REFUSAL_LIMIT = 2048
REPLY_ERROR_LIMIT = 300


# --- 1. refusals of unverified input are bounded ----------------------------------------


def _audit_verify(audit_log: str, trust_key: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NETLINKD, "audit", "verify", "--audit-log", audit_log, "--trust-key", trust_key, *extra],
        capture_output=True, text=True, timeout=60,
    )


def test_huge_key_id_and_epoch_cost_a_bounded_record_and_reply() -> None:
    with own_sandbox() as (sandbox, signer):
        good_batch = signer.batch([])
        huge_epoch = helper_pb2.Batch(
            epoch=b"\xff" * HUGE, sequence=7, unix_time_ms=int(time.time() * 1000), owner="t"
        ).SerializeToString()
        def unsigned(batch: bytes, key_id: str) -> helper_pb2.SignedBatch:
            return helper_pb2.SignedBatch(batch=batch, signature=b"s" * 64, key_id=key_id)

        # label, request, expected key_id_chars in the refused record. The signed batch of
        # a request refused before its signature verified is never parsed: no epoch, no seq.
        requests: list[tuple[str, helper_pb2.SignedBatch, int | None]] = [
            ("control chars", unsigned(good_batch, "\x01" * HUGE), HUGE),
            ("quotes", unsigned(good_batch, '"\\' * (HUGE // 2)), HUGE),
            ("astral", unsigned(good_batch, "\U0001f600" * (HUGE // 4)), HUGE // 4),
            ("long hex", unsigned(good_batch, "ab" * (HUGE // 2)), HUGE),
            ("huge epoch, unsigned", unsigned(huge_epoch, signer.key.key_id), None),
            ("huge epoch, signed", signer.sign(huge_epoch), None),
            ("huge both", unsigned(huge_epoch, "x" * (HUGE // 2)), HUGE // 2),
        ]
        for label, signed, key_id_chars in requests:
            before = os.path.getsize(sandbox.audit)
            reply = sandbox.submit(signed)
            growth = os.path.getsize(sandbox.audit) - before
            assert not reply.ok, label
            assert reply.error_kind in (helper_pb2.BAD_SIGNATURE, helper_pb2.MALFORMED), label
            assert 0 < growth < PER_REFUSAL_LIMIT, (label, growth)
            assert len(reply.error) < REPLY_ERROR_LIMIT, (label, reply.error[:200])
            record = sandbox.audit_records()[-1]
            assert record["kind"] == "refused" and record["error"] == reply.error, label
            assert record.get("key_id_chars") == key_id_chars, label
            assert record["key_id"] == ("" if key_id_chars else signer.key.key_id), label
            assert len(str(record.get("key_id_sha256", "0" * 16))) == 16, label
            assert (record["epoch"], record["seq"]) == ("", 0), label
        # the helper still serves, and the log is an intact chain
        assert sandbox.submit(signer.sign(signer.batch([]))).ok
        result = _audit_verify(sandbox.audit, sandbox.trust)
        assert result.returncode == 0, result.stdout + result.stderr


class _NoLookup:
    """A trust store that must not be consulted."""

    def get(self, key_id: str) -> None:
        raise AssertionError(f"looked up a malformed key id of {len(key_id)} characters")


@pytest.mark.parametrize("key_id", [
    "", "x" * HUGE, "0123456789ABCDEF", "0123456789abcde", "0123456789abcdef0",
    "0123456789abcdef\n", " 0123456789abcdef", "".join(map(chr, range(0x660, 0x66A))) + "abcdef",
])
def test_malformed_key_id_is_refused_before_lookup(key_id: str) -> None:
    signed = helper_pb2.SignedBatch(batch=b"b", signature=b"s", key_id=key_id)
    with pytest.raises(BadSignature) as caught:
        check_signature(signed, _NoLookup())  # type: ignore[arg-type]
    assert len(str(caught.value)) < 120 and f"got {len(key_id)} characters" in str(caught.value)


@pytest.mark.parametrize("text", [
    "\x01" * HUGE, '"\\' * HUGE, "\U0001f600" * HUGE, "é" * HUGE, "a" * HUGE,
    "a" * 1000 + "\U0001f600" * 100, "\x00" * 200,
])
def test_bounded_text_fits_its_json_budget(text: str) -> None:
    bounded = server.bounded_text(text)
    assert len(json.dumps(bounded, ensure_ascii=True)) - 2 <= server.MAX_ERROR_JSON_BYTES
    assert bounded.isprintable() and bounded.endswith("characters cut]")


def test_bounded_text_says_how_many_characters_it_cut() -> None:
    bounded = server.bounded_text("é" * HUGE)
    kept = len(bounded) - len(bounded.lstrip("é"))
    assert 0 < kept < HUGE and bounded == "é" * kept + f" [{HUGE - kept} characters cut]"


def test_bounded_text_keeps_ordinary_messages() -> None:
    text = "batch seq 3 is +75.0 s off the helper clock (window ±60 s); check clocks and resend"
    assert server.bounded_text(text) == text
    assert server.bounded_text("a" * 900) == "a" * 900


def test_claimed_facts_keep_only_bounded_values_and_never_parse_the_batch() -> None:
    epoch = bytes(range(16))
    batch = helper_pb2.Batch(epoch=epoch, sequence=5).SerializeToString()
    good = helper_pb2.SignedBatch(batch=batch, key_id="0123456789abcdef").SerializeToString()
    facts = server.claimed_facts(good)
    assert (facts["key_id"], facts["epoch"], facts["seq"]) == ("0123456789abcdef", "", 0)
    assert facts["batch_sha256"] == hashlib.sha256(batch).hexdigest()
    assert "key_id_chars" not in facts
    bad = helper_pb2.SignedBatch(batch=b"\xff" * 100, key_id="K" * 1000).SerializeToString()
    facts = server.claimed_facts(bad)
    assert (facts["key_id"], facts["key_id_chars"], facts["epoch"]) == ("", 1000, "")
    assert len(records.canonical_json(facts)) < 300
    garbage = server.claimed_facts(b"\xff\xff\xff")
    assert garbage["batch_sha256"] == hashlib.sha256(b"\xff\xff\xff").hexdigest()


# --- 2. a rotated file missing from the middle ------------------------------------------


def _rotated_log(tmp_path: Path, files: int = 6) -> tuple[str, str]:
    path = str(tmp_path / "audit.log")
    log = audit.AuditLog(path, max_bytes=400)
    number = 0
    while not os.path.exists(records.rotated_path(path, files)):
        log.append({"kind": "refused", "verdict": "refused", "error": f"e{number}"})
        number += 1
    log.close()
    trust_file = tmp_path / "trust.keys"
    trust_file.write_text("")
    return path, str(trust_file)


def _verify(path: str, trust_key: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(["audit", "verify", "--audit-log", path, "--trust-key", trust_key,
                     "--include-rotated"])
    return code, capsys.readouterr().out


@pytest.mark.parametrize("gone", [[2], [1], [3, 4], [1, 5]])
def test_missing_rotated_file_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], gone: list[int]
) -> None:
    path, trust_key = _rotated_log(tmp_path)
    assert _verify(path, trust_key, capsys)[0] == audit_cli.EXIT_OK
    for number in gone:
        os.unlink(records.rotated_path(path, number))
    code, out = _verify(path, trust_key, capsys)
    assert code == audit_cli.EXIT_TAMPERED
    named = ", ".join(records.rotated_path(path, n) for n in gone)
    assert f"missing rotated file(s): {named}" in out
    assert "prev mismatch" not in out  # each part on either side of a gap still chains


def test_oldest_rotated_files_may_go(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, trust_key = _rotated_log(tmp_path)
    for number in (6, 5):
        os.unlink(records.rotated_path(path, number))
    code, out = _verify(path, trust_key, capsys)
    assert code == audit_cli.EXIT_OK, out


def test_chain_is_still_checked_on_both_sides_of_a_gap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, trust_key = _rotated_log(tmp_path)
    os.unlink(records.rotated_path(path, 3))
    older = Path(records.rotated_path(path, 5))
    lines = older.read_bytes().splitlines(keepends=True)
    older.write_bytes(b"".join(lines[:-2] + lines[-1:]))  # a record deleted before the gap
    code, out = _verify(path, trust_key, capsys)
    assert code == audit_cli.EXIT_TAMPERED
    assert f"{older}: record {len(lines) - 2}: prev mismatch" in out
    assert f"missing rotated file(s): {records.rotated_path(path, 3)}" in out


def test_rotated_numbers_ignore_other_names(tmp_path: Path) -> None:
    path, _ = _rotated_log(tmp_path, files=2)
    for name in ("audit.log.0", "audit.log.01", "audit.log.7.tmp", "audit.log.x", "audit.log.٣"):
        (tmp_path / name).write_text("junk\n")
    assert chain.rotated_numbers(path) == [1, 2]
    assert chain.missing_rotated(path) == []


# --- 3. out-of-range numbers in the replay record ---------------------------------------


@pytest.mark.parametrize("entry", [
    "[1e400, 1]", "[1, 1e400]", "[-1e400, 1]", "[1.5, 1]", "[-1, 1]", "[18446744073709551616, 1]",
    "[true, 1]", "[NaN, 1]", "[Infinity, 1]", "[1]", "[1, 2, 3]", '"1"', "null",
])
def test_out_of_range_replay_entry_is_a_clean_startup_error(tmp_path: Path, entry: str) -> None:
    (tmp_path / "replay.json").write_text('{"k": {"e": ' + entry + "}}")
    with pytest.raises(StartupError, match="cannot read replay state") as caught:
        ReplayGuard(str(tmp_path), 60)
    assert "two integers" in str(caught.value) or "JSON" in str(caught.value)


def test_largest_replay_values_still_load(tmp_path: Path) -> None:
    top = (1 << 64) - 1
    (tmp_path / "replay.json").write_text(json.dumps({"k": {"e": [top, top]}}))
    ReplayGuard(str(tmp_path), 60)


# --- 4. shutdown waits for a running batch ----------------------------------------------


class _SlowExecutor:
    """Fake seam: `execute` blocks until released; `close` is recorded."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.closed_while_running = False
        self.running = False

    def execute(self, batch: helper_pb2.Batch, before_acting: Callable[[], None]) -> Outcome:
        before_acting()
        self.running = True
        self.entered.set()
        self.release.wait(30)
        self.running = False
        return Outcome(True)

    def close(self) -> None:
        self.closed_while_running = self.closed_while_running or self.running


def _service(tmp_path: Path, executor: _SlowExecutor) -> tuple[server.Service, Any, Any]:
    private, raw_public, trust_path = trusted_key(tmp_path)
    store = trust.TrustStore(str(trust_path))
    log = audit.AuditLog(str(tmp_path / "audit.log"))
    verifier = Verifier(store, ReplayGuard(str(tmp_path), 60), 60)
    service = server.Service(
        verifier, policy.Policy(), executor,  # type: ignore[arg-type]
        log, b"i" * 16, "test",
    )
    sequence = iter(range(1, 100))

    def signed() -> Verified:  # as the front's screen hands it over
        batch = helper_pb2.Batch(epoch=b"e" * 16, sequence=next(sequence), owner="t",
                                 unix_time_ms=int(time.time() * 1000)).SerializeToString()
        return verifier.authenticate(helper_pb2.SignedBatch(
            batch=batch, signature=private.sign(batch), key_id=trust.key_id_of(raw_public)
        ).SerializeToString())

    return service, store, signed


def _kinds(tmp_path: Path) -> list[str]:
    lines = (tmp_path / "audit.log").read_text().splitlines()
    return [json.loads(line)["kind"] for line in lines]


def test_shutdown_waits_for_the_running_batch_before_closing_the_log(tmp_path: Path) -> None:
    executor = _SlowExecutor()
    service, store, signed = _service(tmp_path, executor)
    helper = server.Helper(
        service, store, str(tmp_path / "none.sock"), 0, str(tmp_path / "inner.sock"))
    replies: list[helper_pb2.BatchReply] = []
    batch = threading.Thread(target=lambda: replies.append(service.submit(signed(), None)))
    batch.start()
    assert executor.entered.wait(10)
    stopper = threading.Thread(target=helper.close)
    stopper.start()
    time.sleep(0.3)
    assert stopper.is_alive(), "shutdown did not wait for the running batch"
    executor.release.set()
    batch.join(10)
    stopper.join(10)
    assert not stopper.is_alive() and replies and replies[0].ok
    assert not executor.closed_while_running
    assert _kinds(tmp_path) == ["intent", "result"]
    # after shutdown: refused without touching the (closed) log
    late = service.submit(signed(), None)
    assert not late.ok and late.error_kind == helper_pb2.AUDIT_UNAVAILABLE
    assert "stopping" in late.error and _kinds(tmp_path) == ["intent", "result"]
    result = chain.verify_files(
        [str(tmp_path / "audit.log")], audit_cli.chain_state([store.path])
    )
    assert result is None


def test_shutdown_wait_is_bounded_and_closes_nothing_under_a_stuck_batch(tmp_path: Path) -> None:
    executor = _SlowExecutor()
    service, _, signed = _service(tmp_path, executor)
    batch = threading.Thread(target=service.submit, args=(signed(), None))
    batch.start()
    assert executor.entered.wait(10)
    started = time.monotonic()
    assert service.close(0.2) is False
    assert time.monotonic() - started < 5
    queued = threading.Thread(target=service.submit, args=(signed(), None))
    queued.start()  # queued behind the stuck batch: must not run once stopping
    executor.release.set()
    batch.join(10)
    queued.join(10)
    assert _kinds(tmp_path) == ["intent", "result"]
    assert service.close(5) is True
    assert not executor.closed_while_running


# --- 5. the trust-key file is never read through a symlink ------------------------------


def test_trust_file_symlink_is_refused(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    real = tmp_path / "real.keys"
    real.write_text(f"ed25519 {base64.b64encode(bytes(range(32))).decode()} t\n")
    real.chmod(0o600)
    link = tmp_path / "trust.keys"
    link.symlink_to(real)
    assert len(trust.TrustStore(str(real)).key_ids()) == 1
    with pytest.raises(trust.TrustFileError, match="is a symlink"):
        trust.TrustStore(str(link))
    store = trust.TrustStore(str(real))
    real.unlink()
    real.symlink_to(tmp_path / "elsewhere.keys")
    with pytest.raises(trust.TrustFileError, match="is a symlink"):
        store.reload()
    assert store.key_ids() == []
