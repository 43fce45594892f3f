"""Pure-logic units of the helper: trust file, replay record, policy, config merging."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from trust_files import trusted_key

from netagent_api import helper_pb2
from netlinkd import audit, cli, netns, policy, server, trust, verify
from netlinkd.errors import PolicyRefused, Replay, Stale, StartupError
from netlinkd.executor import Outcome
from netlinkd.replay import ReplayGuard
from netlinkd.verify import Verifier, check_time

RAW = bytes(range(32))
LINE = f"ed25519 {base64.b64encode(RAW).decode()} ctl@host"


def test_trust_text_and_key_id() -> None:
    keys = trust.parse_trust_text(f"# comment\n\n{LINE}\n", "t")
    assert list(keys) == [hashlib.sha256(RAW).hexdigest()[:16]]
    assert keys[trust.key_id_of(RAW)].comment == "ctl@host"


@pytest.mark.parametrize("bad", ["rsa AAAA", "ed25519 !!!", "ed25519 " + "QUFB", "ed25519"])
def test_trust_text_errors_name_the_line(bad: str) -> None:
    with pytest.raises(trust.TrustFileError, match=r"t:2"):
        trust.parse_trust_text(f"{LINE}\n{bad}\n", "t")


def test_trust_file_writable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "trust.keys"
    path.write_text(LINE + "\n")
    tmp_path.chmod(0o700)
    path.chmod(0o600)
    assert len(trust.TrustStore(str(path)).key_ids()) == 1
    path.chmod(0o620)
    with pytest.raises(trust.TrustFileError, match="writable by group or others"):
        trust.load_trust_file(str(path))
    path.chmod(0o600)
    tmp_path.chmod(0o777)
    try:
        with pytest.raises(trust.TrustFileError, match="writable by group or others"):
            trust.load_trust_file(str(path))
    finally:
        tmp_path.chmod(0o700)


def test_reload_failure_trusts_nothing(tmp_path: Path) -> None:
    path = tmp_path / "trust.keys"
    path.write_text(LINE + "\n")
    path.chmod(0o600)
    store = trust.TrustStore(str(path))
    path.write_text("garbage\n")
    with pytest.raises(trust.TrustFileError):
        store.reload()
    assert store.key_ids() == []


def test_replay_guard_persists(tmp_path: Path) -> None:
    epoch = os.urandom(16)
    guard = ReplayGuard(str(tmp_path), window_s=60)
    guard.check_and_record("k", epoch, 5, now_s=1000)
    for seq in (5, 4):
        with pytest.raises(Replay, match="not above"):
            guard.check_and_record("k", epoch, seq, now_s=1000)
    guard.check_and_record("other", epoch, 1, now_s=1000)
    guard.flush()
    again = ReplayGuard(str(tmp_path), window_s=60)
    with pytest.raises(Replay):
        again.check_and_record("k", epoch, 5, now_s=1001)
    again.check_and_record("k", epoch, 6, now_s=1001)
    again.flush()
    assert oct((tmp_path / "replay.json").stat().st_mode & 0o777) == "0o600"


def test_replay_guard_prunes_old_epochs(tmp_path: Path) -> None:
    old, new = os.urandom(16), os.urandom(16)
    guard = ReplayGuard(str(tmp_path), window_s=60)
    guard.check_and_record("k", old, 9, now_s=1000)
    guard.check_and_record("k", new, 1, now_s=1121)
    guard.flush()
    assert old.hex() not in (tmp_path / "replay.json").read_text()


def test_time_window() -> None:
    batch = helper_pb2.Batch(unix_time_ms=100_000)
    check_time(batch, now_ms=160_000, window_s=60)
    with pytest.raises(Stale):
        check_time(batch, now_ms=160_001, window_s=60)
    with pytest.raises(Stale):
        check_time(batch, now_ms=39_999, window_s=60)


def test_canonical_ns_path(tmp_path: Path) -> None:
    allowed = tmp_path / "netns"
    allowed.mkdir()
    (allowed / "ns1").touch()
    (allowed / "escape").symlink_to("/etc/passwd")
    rules = policy.Policy(netns_dirs=(str(allowed),))
    assert policy.canonical_ns_path(rules, str(allowed / "ns1"), "w") == str(allowed / "ns1")
    for bad in (str(allowed / "escape"), f"{allowed}/../netns/../../x", "/etc/passwd", "ns1"):
        with pytest.raises(PolicyRefused):
            policy.canonical_ns_path(rules, bad, "w")


def test_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('max_ops_per_batch = 3\nnetns_dirs = ["/x"]\n')
    loaded = policy.load_policy(str(path))
    assert loaded.max_ops_per_batch == 3 and loaded.netns_dirs == ("/x",)
    path.write_text("max_opps = 3\n")
    with pytest.raises(StartupError, match="unknown key 'max_opps'"):
        policy.load_policy(str(path))
    path.write_text('allow_pid_refs = "yes"\n')
    with pytest.raises(StartupError, match="allow_pid_refs must be bool"):
        policy.load_policy(str(path))


def test_address_prefixes_limit_added_addresses(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('address_prefixes = ["10.20.0.0/16", "fd00:20::/48"]\n')
    limited = policy.load_policy(str(path))
    for allowed in ("10.20.1.1/24", "10.20.0.1/16", "fd00:20:0:1::1/64"):
        policy.check_address_allowed(limited, allowed, "op 0")
        policy.check_address_allowed(policy.Policy(), allowed, "op 0")
    for hijack in ("8.8.8.1/24", "10.20.0.1/8", "192.0.2.1/32", "2001:db8::1/64"):
        outside = re.escape("outside the allowed prefixes 10.20.0.0/16")
        with pytest.raises(PolicyRefused, match=outside):
            policy.check_address_allowed(limited, hijack, "op 0")
    add = helper_pb2.Operation(add_address=helper_pb2.AddAddress(name="x1", address="8.8.8.1/24"))
    with pytest.raises(PolicyRefused, match=re.escape("8.8.8.1/24")):
        policy.check_operation(limited, add, "op 0")
    remove = helper_pb2.DelAddress(name="x1", address="8.8.8.1/24")
    policy.check_operation(limited, helper_pb2.Operation(del_address=remove), "op 0")
    path.write_text('address_prefixes = ["10.20.0.1/16"]\n')
    host_bits = re.escape("address_prefixes: 10.20.0.1/16 has host bits set")
    with pytest.raises(StartupError, match=host_bits):
        policy.load_policy(str(path))


def _args(**given: str | None) -> argparse.Namespace:
    values = {key: None for key in cli.DEFAULTS} | {"config": None} | given
    return argparse.Namespace(**values)


def test_config_file_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "DEFAULT_CONFIG", str(tmp_path / "absent.toml"))
    config = tmp_path / "netagent.toml"
    config.write_text('[netlinkd]\nsocket = "/c.sock"\ntrust_key = "/c.keys"\naudit_log = "/a"\n')
    merged = cli.merge_options(_args(config=str(config), socket="/flag.sock"))
    assert (merged.socket, merged.trust_key, merged.state_dir) == (
        "/flag.sock", "/c.keys", "/var/lib/netagent"
    )
    config.write_text('[netlinkd]\nsockett = "/x"\n')
    with pytest.raises(StartupError, match="unknown key 'sockett'"):
        cli.merge_options(_args(config=str(config)))
    with pytest.raises(StartupError, match="--trust-key"):
        cli.merge_options(_args(config=None, socket="/s", audit_log="/a"))


def test_the_controller_user_is_a_name_or_a_uid_and_an_unknown_name_is_refused() -> None:
    assert server.resolve_user(None) is None
    assert server.resolve_user("61100") == 61100
    assert server.resolve_user("root") == 0
    with pytest.raises(StartupError, match="controller user 'no-such-user-x' is not a known"):
        server.resolve_user("no-such-user-x")


def test_named_namespaces_need_their_directory_on_the_allow_list() -> None:
    default = policy.Policy()
    assert policy.named_ns_path(default, "ns1", "w") == "/var/run/netns/ns1"
    docker_only = policy.Policy(netns_dirs=("/run/docker/netns",))
    with pytest.raises(PolicyRefused, match="named namespaces"):
        policy.named_ns_path(docker_only, "ns1", "w")
    with pytest.raises(PolicyRefused, match="one path component"):
        policy.named_ns_path(default, "../x", "w")


def test_reload_of_non_utf8_trust_file_trusts_nothing(tmp_path: Path) -> None:
    path = tmp_path / "trust.keys"
    path.write_text(LINE + "\n")
    path.chmod(0o600)
    store = trust.TrustStore(str(path))
    path.write_bytes(b"\xff\xfe" + LINE.encode())
    with pytest.raises(trust.TrustFileError, match="not UTF-8"):
        store.reload()
    assert store.key_ids() == []


class _ExplodingExecutor:
    """Fake seam: the real verifier, policy and audit log run; the executor raises."""

    def __init__(self, stage: str) -> None:
        self.stage = stage

    def execute(self, batch: helper_pb2.Batch, before_acting: Callable[[], None]) -> None:
        if self.stage == "preflight":  # opening the namespaces, before the intent
            raise RuntimeError("boom in preflight")
        before_acting()
        raise RuntimeError("boom in execute")


@pytest.mark.parametrize(("stage", "kinds"), [
    ("preflight", ["refused"]), ("execute", ["intent", "result"]),
])
def test_internal_error_is_a_clear_reply_and_an_audit_record(
    tmp_path: Path, stage: str, kinds: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    private, raw_public, trust_path = trusted_key(tmp_path)
    log = audit.AuditLog(str(tmp_path / "audit.log"))
    verifier = Verifier(trust.TrustStore(str(trust_path)), ReplayGuard(str(tmp_path), 60), 60)
    service = server.Service(
        verifier, policy.Policy(), _ExplodingExecutor(stage),  # type: ignore[arg-type]
        log, b"i" * 16, "test",
    )
    batch = helper_pb2.Batch(epoch=b"e" * 16, sequence=1, owner="t",
                             unix_time_ms=int(time.time() * 1000)).SerializeToString()
    signed = helper_pb2.SignedBatch(
        batch=batch, signature=private.sign(batch), key_id=trust.key_id_of(raw_public)
    )
    verified = service.screen(signed.SerializeToString())
    assert not isinstance(verified, tuple)
    with caplog.at_level(logging.INFO, logger="netlinkd"):
        reply = service.submit(verified, None)
    log.close()
    [logged] = [r for r in caplog.records if r.exc_info]
    assert logged.getMessage() == "internal error while handling a batch"
    assert logged.levelno == logging.ERROR and f"boom in {stage}" in str(logged.exc_info[1])
    assert not reply.ok and reply.error_kind == helper_pb2.KERNEL
    assert reply.failed_index == -1, "no operation's fault"
    assert f"internal helper error: RuntimeError: boom in {stage}" in reply.error
    records = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert [r["kind"] for r in records] == kinds
    assert records[-1]["error"] == reply.error and records[-1]["error_kind"] == "KERNEL"
    assert records[-1]["verdict"] == ("refused" if stage == "preflight" else "failed")


class _AppliedExecutor:
    """Fake seam: the batch is applied; with `close_log`, the audit log is closed before its
    result is written."""

    def __init__(self, log: audit.AuditLog, close_log: bool) -> None:
        self.log, self.close_log = log, close_log

    def execute(self, batch: helper_pb2.Batch, before_acting: Callable[[], None]) -> Outcome:
        before_acting()
        if self.close_log:
            self.log.close()
        return Outcome(True)


def _apply_one(tmp_path: Path, close_log: bool) -> None:
    private, raw_public, trust_path = trusted_key(tmp_path)
    log = audit.AuditLog(str(tmp_path / "audit.log"))
    verifier = Verifier(trust.TrustStore(str(trust_path)), ReplayGuard(str(tmp_path), 60), 60)
    service = server.Service(
        verifier, policy.Policy(), _AppliedExecutor(log, close_log),  # type: ignore[arg-type]
        log, b"i" * 16, "test",
    )
    batch = helper_pb2.Batch(epoch=b"e" * 16, sequence=7, owner="t",
                             unix_time_ms=int(time.time() * 1000)).SerializeToString()
    signed = helper_pb2.SignedBatch(
        batch=batch, signature=private.sign(batch), key_id=trust.key_id_of(raw_public)
    )
    verified = service.screen(signed.SerializeToString())
    assert not isinstance(verified, tuple)
    assert service.submit(verified, None).ok
    log.close()


def test_an_applied_batchs_result_record_carries_no_error(tmp_path: Path) -> None:
    _apply_one(tmp_path, close_log=False)
    result = json.loads((tmp_path / "audit.log").read_text().splitlines()[-1])
    assert {k: result[k] for k in ("kind", "verdict", "error_kind", "error", "failed_index")} == {
        "kind": "result", "verdict": "applied", "error_kind": "", "error": "", "failed_index": -1}


def test_a_result_record_the_audit_log_cannot_take_is_logged_as_critical(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="netlinkd"):
        _apply_one(tmp_path, close_log=True)
    lost = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert [r.getMessage().split(":")[0] for r in lost] == ["audit result record lost for seq 7"]
class _RecordingExecutor:
    """Fake seam: the real verifier, policy and audit log run; the executor only records."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def execute(self, batch: helper_pb2.Batch, before_acting: Callable[[], None]) -> Outcome:
        before_acting()
        self.batches.append(batch.sequence)
        return Outcome(True, -1, None, "applied")


@pytest.mark.parametrize("reload", ["none", "key kept", "key removed"])
def test_the_signature_is_checked_once_unless_the_trust_keys_were_reloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reload: str
) -> None:
    """The front's screen verifies the signature and hands the verified batch to the batch
    thread, which does not check it again, unless the trust keys were reloaded while it
    waited: then it is checked against the new keys (a removed key acts on nothing)."""
    private, raw_public, trust_path = trusted_key(tmp_path)
    log = audit.AuditLog(str(tmp_path / "audit.log"))
    store = trust.TrustStore(str(trust_path))
    executor = _RecordingExecutor()
    service = server.Service(Verifier(store, ReplayGuard(str(tmp_path), 60), 60),
                             policy.Policy(), executor, log, b"i" * 16, "test")  # type: ignore[arg-type]
    checks: list[str] = []
    real_check = verify.check_signature

    def counted(signed: helper_pb2.SignedBatch, keys: trust.TrustStore) -> None:
        checks.append(signed.key_id)
        real_check(signed, keys)

    monkeypatch.setattr(verify, "check_signature", counted)
    batch = helper_pb2.Batch(epoch=b"e" * 16, sequence=1, owner="t",
                             unix_time_ms=int(time.time() * 1000)).SerializeToString()
    signed = helper_pb2.SignedBatch(
        batch=batch, signature=private.sign(batch), key_id=trust.key_id_of(raw_public))
    verified = service.screen(signed.SerializeToString())
    assert not isinstance(verified, tuple)
    if reload == "key removed":
        trust_path.write_text("")
    if reload != "none":
        store.reload()
    reply = service.submit(verified, None)
    log.close()
    assert len(checks) == (1 if reload == "none" else 2)
    if reload == "key removed":
        assert not reply.ok and reply.error_kind == helper_pb2.BAD_SIGNATURE, reply
        assert executor.batches == []
    else:
        assert reply.ok, reply
        assert executor.batches == [1]


def test_a_batch_refused_after_its_signature_verified_is_recorded_by_its_signed_identity(
    tmp_path: Path,
) -> None:
    """A replay (refused once verified) is audited with the verified batch's key id, size,
    digest, epoch and sequence, which `audit show` prints for it."""
    private, raw_public, trust_path = trusted_key(tmp_path)
    log = audit.AuditLog(str(tmp_path / "audit.log"))
    service = server.Service(
        Verifier(trust.TrustStore(str(trust_path)), ReplayGuard(str(tmp_path), 60), 60),
        policy.Policy(), _RecordingExecutor(), log, b"i" * 16, "test")  # type: ignore[arg-type]
    batch = helper_pb2.Batch(epoch=b"e" * 16, sequence=3, owner="t",
                             unix_time_ms=int(time.time() * 1000)).SerializeToString()
    signed = helper_pb2.SignedBatch(
        batch=batch, signature=private.sign(batch), key_id=trust.key_id_of(raw_public))
    for _ in range(2):
        verified = service.screen(signed.SerializeToString())
        assert not isinstance(verified, tuple)
        reply = service.submit(verified, None)
    log.close()
    assert reply.error_kind == helper_pb2.REPLAY, reply
    refused = json.loads((tmp_path / "audit.log").read_text().splitlines()[-1])
    assert {k: refused[k] for k in ("kind", "key_id", "request_bytes", "batch_sha256", "epoch",
                                    "seq")} == {
        "kind": "refused", "key_id": signed.key_id, "request_bytes": signed.ByteSize(),
        "batch_sha256": hashlib.sha256(batch).hexdigest(), "epoch": (b"e" * 16).hex(), "seq": 3}


def test_socket_directory_is_set_up_only_when_it_is_netlinkd_s_own(tmp_path: Path) -> None:
    own = tmp_path / "run" / "netagent"
    server.prepare_socket_path(str(own / "netlinkd.sock"), 4321)
    info = own.stat()
    assert (info.st_mode & 0o7777, info.st_uid, info.st_gid) == (0o750, 0, 4321)
    own.chmod(0o2770)  # an older setgid directory, with only the socket in it: adjusted
    (own / "netlinkd.sock").touch()
    with pytest.raises(StartupError, match="exists and is not a socket"):
        server.prepare_socket_path(str(own / "netlinkd.sock"), 4321)
    assert own.stat().st_mode & 0o7777 == 0o750
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    (shared / "someone-else.pid").touch()
    with pytest.raises(StartupError, match="is not netlinkd's own"):
        server.prepare_socket_path(str(shared / "x.sock"), 4321)
    assert (shared.stat().st_mode & 0o7777, shared.stat().st_gid) == (0o755, 0)


def test_settle_resolves_each_namespace_a_batch_names_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch names a namespace once per link (512 times for 256 pairs); resolving a
    reference opens the namespace file, so the monitor takes each reference once."""
    from netlinkd import link_monitor

    monitor = link_monitor.LinkMonitor(policy.Policy(), b"instance")
    taken: list[str] = []
    monkeypatch.setattr(monitor, "_watch", lambda ref: taken.append(ref.name))
    a, b = helper_pb2.NamespaceRef(name="a"), helper_pb2.NamespaceRef(name="b")
    pairs = [helper_pb2.Operation(create_veth_pair=helper_pb2.CreateVethPair(
        a=helper_pb2.LinkSpec(name=f"a{i}", netns=a), b=helper_pb2.LinkSpec(name=f"b{i}", netns=b)))
        for i in range(256)]
    batch = helper_pb2.Batch(operations=pairs, observe=helper_pb2.ObserveRequest(
        netns=[a, helper_pb2.NamespaceRef(name="c")]))
    assert monitor._settle(batch, since=0) == []
    assert sorted(taken) == ["a", "b", "c"]


def test_no_run_directory_lists_no_named_namespaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(netns, "NETNS_RUN_DIR", str(tmp_path / "absent"))
    assert netns.list_named() == []


def test_a_batch_group_is_derived_alike_by_every_release() -> None:
    """Recovery derives the link group of an intent a previous helper may have written: the
    derivation is a stored format, pinned here."""
    from netlinkd.links import batch_group

    assert batch_group(bytes(range(16)), 7) == 2974622522
    assert batch_group(bytes(range(16)), 8) != 2974622522


def test_the_serving_helper_lets_a_waiting_thread_have_the_gil_within_half_a_millisecond(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The netlink thread waits for the GIL after every socket call; with the link monitor
    parsing a batch's notifications, Python's default 5 ms made each wait up to 5 ms."""
    from netlinkd import allocator

    seen: list[float] = []

    class Started:
        def run(self) -> None:
            seen.append(sys.getswitchinterval())

    monkeypatch.setattr(allocator, "use_one_arena", lambda: None)
    monkeypatch.setattr(server, "start_helper", lambda options, version: Started())
    before = sys.getswitchinterval()
    try:
        assert cli.serve(cli.merge_options(_args(socket="/s", trust_key="/k", audit_log="/a"))) == 0
    finally:
        sys.setswitchinterval(before)
    assert seen == [0.0005]
