"""What the helper refuses, and that a refusal changes nothing and is audited."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from nlkd_lib import (
    HELLO,
    NETLINKD,
    SUBMIT,
    KeyPair,
    Sandbox,
    Signer,
    add_address,
    create,
    del_address,
    delete,
    make_sandbox,
    named,
    new_key,
    own_sandbox,
    set_link,
    spec,
)

from netagent_api import helper_pb2
from netlinkd.front import MAX_QUEUED_BATCHES as MAX_CONCURRENT_RPCS

Kind = helper_pb2.ErrorKind
FUZZ_SCRIPT = Path(__file__).resolve().parents[1] / "fuzz" / "fuzz_live_helper.py"


def _refused(reply: helper_pb2.BatchReply, kind: int, helper: Sandbox) -> None:
    """Refused with `kind`, and the helper's last audit record names the same refusal."""
    assert not reply.ok
    assert reply.error_kind == kind, f"{Kind.Name(reply.error_kind)}: {reply.error}"
    assert reply.error
    last = helper.audit_records()[-1]
    assert last["kind"] in ("refused", "result") and last["verdict"] in ("refused", "failed")
    assert (last["error_kind"], last["error"]) == (Kind.Name(kind), reply.error)


def _last_refusal(helper: Sandbox) -> dict[str, object]:
    return [r for r in helper.audit_records() if r.get("kind") == "refused"][-1]


def test_bad_signature(helper: Sandbox, signer: Signer) -> None:
    signed = signer.sign(signer.batch([create(spec("bs-a", named("bs-ns")), spec("bs-b"))]))
    signed.signature = bytes([signed.signature[0] ^ 1]) + signed.signature[1:]
    _refused(helper.submit(signed), helper_pb2.BAD_SIGNATURE, helper)
    assert "bs-ns" not in helper.netns_list()
    record = _last_refusal(helper)
    assert record["error_kind"] == "BAD_SIGNATURE" and record["key_id"] == signer.key.key_id


def test_tampered_batch_bytes(helper: Sandbox, signer: Signer) -> None:
    signed = signer.sign(signer.batch([create(spec("tb-a"), spec("tb-b"))]))
    signed.batch = signed.batch.replace(b"tb-a", b"tb-z")
    _refused(helper.submit(signed), helper_pb2.BAD_SIGNATURE, helper)


def test_unknown_key(helper: Sandbox) -> None:
    stranger = Signer(new_key())
    _refused(helper.submit(stranger.sign(stranger.batch([]))), helper_pb2.BAD_SIGNATURE, helper)


def test_replay(helper: Sandbox, signer: Signer) -> None:
    signed = signer.sign(signer.batch([]))
    assert helper.submit(signed).ok
    _refused(helper.submit(signed), helper_pb2.REPLAY, helper)
    older = signer.sign(signer.batch([]))
    assert helper.submit(signer.sign(signer.batch([]))).ok
    _refused(helper.submit(older), helper_pb2.REPLAY, helper)


def test_stale_timestamp(helper: Sandbox, signer: Signer) -> None:
    past = int(time.time() * 1000) - 10 * 60 * 1000
    future = int(time.time() * 1000) + 10 * 60 * 1000
    _refused(helper.submit(signer.sign(signer.batch([], time_ms=past))), helper_pb2.STALE, helper)
    _refused(helper.submit(signer.sign(signer.batch([], time_ms=future))), helper_pb2.STALE, helper)


def test_garbage_and_oversize(helper: Sandbox) -> None:
    _refused(helper.submit_raw(b"\xff\xff\xff"), helper_pb2.MALFORMED, helper)
    _refused(helper.submit_raw(b"\x0a" + b"\x00" * (1 << 20)), helper_pb2.MALFORMED, helper)


def test_signed_garbage_is_malformed(helper: Sandbox, signer: Signer) -> None:
    _refused(helper.submit(signer.sign(b"\xff\xff\xff")), helper_pb2.MALFORMED, helper)


def test_loopback_is_never_managed(helper: Sandbox, signer: Signer) -> None:
    for op in (delete("lo"), set_link("lo", up=False), add_address("lo", "10.9.9.9/32")):
        _refused(helper.submit(signer.sign(signer.batch([op]))), helper_pb2.POLICY_REFUSED, helper)


@pytest.mark.parametrize("where", ["fl-ns", None])
def test_foreign_link_is_left_alone(helper: Sandbox, signer: Signer, where: str | None) -> None:
    """A link netagent did not make, in a named namespace or the helper's own (host) one."""
    ns = named(where) if where else None
    name = "fl-a" if where else "fl-host0"
    ip = ["ip", "-n", where] if where else ["ip"]
    if where:
        helper.run("ip", "netns", "add", where)
    helper.run(*ip, "link", "add", name, "type", "veth", "peer", "name", f"{name}p")
    helper.run(*ip, "addr", "add", "10.74.0.1/24", "dev", name)
    ops = [delete(name, ns), set_link(name, ns, mtu=1280), add_address(name, "10.74.1.1/24", ns),
           del_address(name, "10.74.0.1/24", ns), set_link(name, ns, up=True)]
    for op in ops:
        _refused(helper.submit(signer.sign(signer.batch([op]))), helper_pb2.POLICY_REFUSED, helper)
    for a, b in ((name, "fl-new"), ("fl-new", f"{name}p")):
        op = create(spec(a, ns), spec(b, ns))
        _refused(helper.submit(signer.sign(signer.batch([op]))), helper_pb2.CONFLICT, helper)
    link = helper.link(name, where)
    assert link is not None and link["mtu"] == 1500 and link.get("ifalias") is None
    assert [a["local"] for a in link["addr_info"] if a["family"] == "inet"] == ["10.74.0.1"]
    assert helper.link(f"{name}p", where) is not None and helper.link("fl-new", where) is None


def test_other_owners_link_is_left_alone(helper: Sandbox, signer: Signer) -> None:
    ns = named("oo-ns")
    assert helper.submit(signer.sign(signer.batch(
        [create(spec("oo-a", ns), spec("oo-b", ns))], owner="someone"
    ))).ok
    _refused(helper.submit(signer.sign(signer.batch([delete("oo-a", ns)]))),
             helper_pb2.POLICY_REFUSED, helper)
    assert helper.link("oo-a", "oo-ns") is not None


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "/var/run/netns/../../etc/passwd", "/run/netns/../../../etc/shadow",
     "relative/ns"],
)
def test_path_refs_outside_allowed_dirs(helper: Sandbox, signer: Signer, path: str) -> None:
    ref = helper_pb2.NamespaceRef(path=path)
    reply = helper.submit(signer.sign(signer.batch([create(spec("pr-a", ref), spec("pr-b"))])))
    _refused(reply, helper_pb2.POLICY_REFUSED, helper)
    assert helper.link("pr-b") is None


def test_symlink_out_of_the_dir(helper: Sandbox, signer: Signer) -> None:
    helper.run("ln", "-sf", "/etc/passwd", "/run/netns/sl-escape")
    try:
        ref = helper_pb2.NamespaceRef(path="/run/netns/sl-escape")
        reply = helper.submit(signer.sign(signer.batch([set_link("x1", ref, up=True)])))
        _refused(reply, helper_pb2.POLICY_REFUSED, helper)
    finally:
        helper.run("rm", "-f", "/run/netns/sl-escape")


@pytest.mark.parametrize("maker", [["mkfifo"], ["sh", "-c", "echo x >\"$0\""]])
def test_non_namespace_files_in_the_dir(helper: Sandbox, signer: Signer, maker: list[str]) -> None:
    name = f"odd-{maker[0]}"
    helper.run(*maker, f"/run/netns/{name}")
    try:
        for ref in (helper_pb2.NamespaceRef(path=f"/run/netns/{name}"), named(name)):
            reply = helper.submit(signer.sign(signer.batch([set_link("x1", ref, up=True)])))
            _refused(reply, helper_pb2.POLICY_REFUSED, helper)
    finally:
        helper.run("rm", "-f", f"/run/netns/{name}")


def test_empty_file_in_the_dir_is_a_namespace_that_is_gone(helper: Sandbox, signer: Signer) -> None:
    """A stopped container's SandboxKey: deleting from it is done, changing it is refused."""
    helper.run("touch", "/run/netns/odd-empty")
    try:
        for ref in (helper_pb2.NamespaceRef(path="/run/netns/odd-empty"), named("odd-empty")):
            reply = helper.submit(signer.sign(signer.batch([set_link("x1", ref, up=True)])))
            _refused(reply, helper_pb2.NAMESPACE_GONE, helper)
            assert "is an empty file, no longer a mounted namespace" in reply.error
            assert helper.submit(signer.sign(signer.batch([delete("x1", ref)]))).ok
        gone = [line for line in helper.log_text().splitlines() if "NAMESPACE_GONE" in line]
        assert gone and all(" level=info " in line for line in gone), gone  # expected: info
    finally:
        helper.run("rm", "-f", "/run/netns/odd-empty")


def test_unix_socket_in_the_dir(helper: Sandbox, signer: Signer) -> None:
    helper.run("python3", "-c",
               "import socket; socket.socket(socket.AF_UNIX).bind('/run/netns/odd-sock')")
    try:
        ref = helper_pb2.NamespaceRef(path="/run/netns/odd-sock")
        reply = helper.submit(signer.sign(signer.batch([set_link("x1", ref, up=True)])))
        _refused(reply, helper_pb2.POLICY_REFUSED, helper)
    finally:
        helper.run("rm", "-f", "/run/netns/odd-sock")


def _helper_fds(sandbox: Sandbox) -> int:
    with open(f"/proc/{sandbox.pid}/task/{sandbox.pid}/children") as handle:
        kids = handle.read().split()
    return len(os.listdir(f"/proc/{int(kids[0]) if kids else sandbox.pid}/fd"))


def _wait_for_closed_connections(helper: Sandbox, fds: int) -> None:
    """Each call's connection (3 fds in the helper: client, relay, gRPC) closes
    asynchronously: up to 5 s for the helper's fds to fall to `fds`."""
    deadline = time.monotonic() + 5
    while _helper_fds(helper) > fds and time.monotonic() < deadline:
        time.sleep(0.1)


def test_pid_ref_to_helpers_own_namespace(helper: Sandbox, signer: Signer) -> None:
    ref = helper_pb2.NamespaceRef(pid=helper.pid)
    reply = helper.submit(signer.sign(signer.batch([create(spec("pp-a", ref), spec("pp-b"))])))
    _refused(reply, helper_pb2.POLICY_REFUSED, helper)
    assert any(" level=warning " in line and "error_kind=POLICY_REFUSED" in line
               for line in helper.log_text().splitlines()), helper.log_text()
    before = _helper_fds(helper)
    for _ in range(20):
        reply = helper.submit(signer.sign(signer.batch([set_link("pp-a", ref, up=True)])))
        assert reply.error_kind == helper_pb2.POLICY_REFUSED
    _wait_for_closed_connections(helper, before + 2)
    assert _helper_fds(helper) <= before + 2, "each refusal left the namespace's fd open"


def test_expect_inode_mismatch(helper: Sandbox, signer: Signer) -> None:
    ns = named("ei-ns")
    assert helper.submit(signer.sign(signer.batch([create(spec("ei-a", ns), spec("ei-b"))]))).ok
    reply = helper.submit(signer.sign(signer.batch([set_link("ei-a", named("ei-ns", 1), up=True)])))
    _refused(reply, helper_pb2.NAMESPACE_GONE, helper)
    before = _helper_fds(helper)
    for _ in range(20):
        reply = helper.submit(signer.sign(signer.batch([set_link("ei-a", named("ei-ns", 1))])))
        assert reply.error_kind == helper_pb2.NAMESPACE_GONE
    _wait_for_closed_connections(helper, before + 2)
    assert _helper_fds(helper) <= before + 2, "each mismatch left the namespace's fd open"


def test_too_many_ops(helper: Sandbox, signer: Signer) -> None:
    ops = [delete(f"tm{i}") for i in range(257)]
    _refused(helper.submit(signer.sign(signer.batch(ops))), helper_pb2.POLICY_REFUSED, helper)


def test_bad_names(helper: Sandbox, signer: Signer) -> None:
    for name in ("x" * 16, "a/b", "a b", ""):
        op = create(spec(name, named("bn-ns")), spec("bn-b"))
        _refused(helper.submit(signer.sign(signer.batch([op]))), helper_pb2.POLICY_REFUSED, helper)
    op = create(spec("bn-a", named("../x")), spec("bn-b"))
    _refused(helper.submit(signer.sign(signer.batch([op]))), helper_pb2.POLICY_REFUSED, helper)
    assert "bn-ns" not in helper.netns_list()


def test_replay_refused_after_restart(key: object) -> None:
    pair = new_key()
    sandbox = make_sandbox(pair)
    signer = Signer(pair)
    try:
        sandbox.start()
        signed = signer.sign(signer.batch([]))
        assert sandbox.submit(signed).ok
        sandbox.stop()
        sandbox.start()
        _refused(sandbox.submit(signed), helper_pb2.REPLAY, sandbox)
        assert sandbox.submit(signer.sign(signer.batch([]))).ok
    finally:
        sandbox.stop()
        shutil.rmtree(sandbox.root, ignore_errors=True)


@pytest.mark.parametrize("damage", ["delete", "rollback"])
def test_replay_refused_after_restart_with_the_replay_state_deleted_or_rolled_back(
    damage: str,
) -> None:
    """The marks come back from the audit log's verified intents (issue 15, part 3)."""
    pair = new_key()
    sandbox = make_sandbox(pair)
    signer = Signer(pair)
    state = Path(sandbox.state) / "replay.json"
    try:
        sandbox.start()
        assert sandbox.submit(signer.sign(signer.batch([]))).ok
        sandbox.stop()  # replay.json is written at stop (or when the helper is idle)
        older = state.read_bytes()
        sandbox.start()
        signed = signer.sign(signer.batch([]))
        assert sandbox.submit(signed).ok
        sandbox.stop()
        if damage == "delete":
            state.unlink()
        else:
            state.write_bytes(older)
        sandbox.start()
        _refused(sandbox.submit(signed), helper_pb2.REPLAY, sandbox)
        assert sandbox.submit(signer.sign(signer.batch([]))).ok
    finally:
        sandbox.stop()
        shutil.rmtree(sandbox.root, ignore_errors=True)


def test_revoked_key_after_sighup(key: object) -> None:
    pair = new_key()
    sandbox = make_sandbox(pair)
    signer = Signer(pair)
    try:
        sandbox.start()
        assert sandbox.submit(signer.sign(signer.batch([]))).ok
        with open(sandbox.trust, "w", encoding="utf-8") as handle:
            handle.write("# all keys revoked\n")
        assert sandbox.proc is not None
        sandbox.proc.send_signal(1)
        deadline = time.monotonic() + 30
        reply = sandbox.submit(signer.sign(signer.batch([])))
        while reply.ok and time.monotonic() < deadline:
            time.sleep(0.1)
            reply = sandbox.submit(signer.sign(signer.batch([])))
        _refused(reply, helper_pb2.BAD_SIGNATURE, sandbox)
    finally:
        sandbox.stop()
        shutil.rmtree(sandbox.root, ignore_errors=True)


def test_unsafe_trust_file_refuses_to_start() -> None:
    pair = new_key()
    sandbox = make_sandbox(pair)
    try:
        os.chmod(sandbox.trust, 0o666)
        result = subprocess.run(
            [NETLINKD, "serve", "--socket", sandbox.socket, "--trust-key", sandbox.trust,
             "--audit-log", sandbox.audit, "--state-dir", sandbox.state],
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode != 0
        assert "writable by group or others" in result.stderr
        assert not os.path.exists(sandbox.socket)
    finally:
        shutil.rmtree(sandbox.root, ignore_errors=True)


def test_removing_one_of_two_keys_revokes_only_that_key() -> None:
    old, new = new_key(), new_key()
    sandbox = make_sandbox(old)
    with open(sandbox.trust, "a", encoding="utf-8") as handle:
        handle.write(new.trust_line("rotated-in"))
    old_signer, new_signer = Signer(old), Signer(new)
    try:
        sandbox.start()
        assert sandbox.submit(old_signer.sign(old_signer.batch([]))).ok
        assert sandbox.submit(new_signer.sign(new_signer.batch([]))).ok
        with open(sandbox.trust, "w", encoding="utf-8") as handle:
            handle.write(new.trust_line("only the new key"))
        assert sandbox.proc is not None
        sandbox.proc.send_signal(1)
        deadline = time.monotonic() + 30
        reply = sandbox.submit(old_signer.sign(old_signer.batch([])))
        while reply.ok and time.monotonic() < deadline:
            time.sleep(0.1)
            reply = sandbox.submit(old_signer.sign(old_signer.batch([])))
        _refused(reply, helper_pb2.BAD_SIGNATURE, sandbox)
        assert old.key_id in reply.error
        assert sandbox.submit(new_signer.sign(new_signer.batch([]))).ok
    finally:
        sandbox.stop()
        shutil.rmtree(sandbox.root, ignore_errors=True)


def _serve_fails(sandbox: Sandbox) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NETLINKD, "serve", "--socket", sandbox.socket, "--trust-key", sandbox.trust,
         "--audit-log", sandbox.audit, "--state-dir", sandbox.state, "--config", os.devnull],
        capture_output=True, text=True, timeout=60,
    )


def test_unsafe_trust_dir_or_state_dir_refuses_to_start() -> None:
    sandbox = make_sandbox(new_key())
    keys_dir = os.path.dirname(sandbox.trust)
    try:
        os.chmod(keys_dir, 0o777)
        result = _serve_fails(sandbox)
        assert result.returncode == 2 and f"{keys_dir} is writable by group" in result.stderr
        os.chmod(keys_dir, 0o700)
        os.makedirs(sandbox.state, mode=0o700)
        os.chmod(sandbox.state, 0o733)
        result = _serve_fails(sandbox)
        assert result.returncode == 2 and f"{sandbox.state} is writable by group" in result.stderr
        assert not os.path.exists(sandbox.socket)
    finally:
        shutil.rmtree(sandbox.root, ignore_errors=True)


@pytest.mark.parametrize("content", [b"{not json", b'{"k": {"e": {"seq": 1}}}', b"\xff\xfe"])
def test_corrupt_replay_state_refuses_to_start(content: bytes) -> None:
    sandbox = make_sandbox(new_key())
    try:
        os.makedirs(sandbox.state, mode=0o700)
        with open(os.path.join(sandbox.state, "replay.json"), "wb") as handle:
            handle.write(content)
        result = _serve_fails(sandbox)
        assert result.returncode == 2, result.stderr
        assert "cannot read replay state" in result.stderr and "Traceback" not in result.stderr
        assert not os.path.exists(sandbox.socket)
    finally:
        shutil.rmtree(sandbox.root, ignore_errors=True)


def test_request_above_the_grpc_limit_is_cut_off_and_the_helper_still_serves(
    helper: Sandbox, signer: Signer
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        helper.submit_raw(b"\x0a" + b"\x00" * (3 << 20))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert helper.submit(signer.sign(signer.batch([]))).ok


@pytest.mark.parametrize(
    ("op", "field"),
    [
        (create(spec("mm-a", mtu=65536), spec("mm-b")), "mtu"),
        (create(spec("mm-a", mtu=67), spec("mm-b")), "mtu"),
        (create(spec("mm-a", mac="01:00:5e:00:00:01"), spec("mm-b")), "unicast"),
        (create(spec("mm-a", mac="00:00:00:00:00:00"), spec("mm-b")), "unicast"),
        (set_link("mm-a", mtu=100000), "mtu"),
        (set_link("mm-a", mac="ff:ff:ff:ff:ff:ff"), "unicast"),
    ],
)
def test_mtu_and_mac_the_kernel_would_reject_are_refused_first(
    helper: Sandbox, signer: Signer, op: helper_pb2.Operation, field: str
) -> None:
    reply = helper.submit(signer.sign(signer.batch([op])))
    _refused(reply, helper_pb2.MALFORMED, helper)
    assert field in reply.error and helper.link("mm-a") is None


def test_named_namespaces_follow_the_allow_list() -> None:
    with own_sandbox('netns_dirs = ["/run/docker/netns"]\n') as (sandbox, signer):
        op = create(spec("na-a", named("na-ns")), spec("na-b"))
        reply = sandbox.submit(signer.sign(signer.batch([op])))
        _refused(reply, helper_pb2.POLICY_REFUSED, sandbox)
        assert "named namespaces" in reply.error and "na-ns" not in sandbox.netns_list()


def test_live_fuzz_script_short_budget(helper: Sandbox, key: KeyPair) -> None:
    """CI's budget of tests/fuzz/fuzz_live_helper.py (the 100k run is in docs/SECURITY.md)."""
    pem = Path(helper.root) / "fuzz-signing.pem"
    pem.write_bytes(key.private.private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    ))
    result = subprocess.run(
        [sys.executable, str(FUZZ_SCRIPT), "--socket", helper.socket, "--signing-key", str(pem),
         "--count", "400", "--seed", "7"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "accepted" not in result.stdout and "crash" not in result.stdout, result.stdout
    assert "genuine batch before: ok=True, after: ok=True" in result.stdout


def test_policy_file_limits_addresses_ops_and_pid_refs() -> None:
    limits = "allow_pid_refs = false\nmax_addresses_per_link = 2\nmax_ops_per_batch = 3\n"
    with own_sandbox(limits) as (sandbox, signer):
        pid_ref = helper_pb2.NamespaceRef(pid=os.getpid())
        reply = sandbox.submit(signer.sign(signer.batch([create(spec("pl-a", pid_ref),
                                                                spec("pl-b"))])))
        _refused(reply, helper_pb2.POLICY_REFUSED, sandbox)
        assert "PID namespace references are disabled" in reply.error
        three = ["10.79.0.1/24", "10.79.0.2/24", "10.79.0.3/24"]
        reply = sandbox.submit(signer.sign(signer.batch([
            create(spec("pl-a", addresses=three), spec("pl-b"))
        ])))
        _refused(reply, helper_pb2.POLICY_REFUSED, sandbox)
        assert "3 addresses exceed the limit of 2" in reply.error
        reply = sandbox.submit(signer.sign(signer.batch([delete(f"pl{i}") for i in range(4)])))
        _refused(reply, helper_pb2.POLICY_REFUSED, sandbox)
        assert "above the limit of 3" in reply.error
        assert sandbox.link("pl-a") is None and sandbox.link("pl-b") is None
        ok = create(spec("pl-a", addresses=three[:2]), spec("pl-b"))
        assert sandbox.submit(signer.sign(signer.batch([ok]))).ok


def test_policy_address_prefixes_refuse_addresses_outside_them() -> None:
    """A signed batch cannot put a route to 8.8.8.0/24 (or the gateway) on a managed link."""
    with own_sandbox('address_prefixes = ["10.79.0.0/16"]\n') as (sandbox, signer):
        hijack = create(spec("ap-a", addresses=["8.8.8.1/24"]), spec("ap-b"))
        reply = sandbox.submit(signer.sign(signer.batch([hijack])))
        _refused(reply, helper_pb2.POLICY_REFUSED, sandbox)
        assert "8.8.8.1/24 (8.8.8.0/24) is outside the allowed prefixes 10.79.0.0/16" in reply.error
        assert sandbox.link("ap-a") is None
        ok = create(spec("ap-a", addresses=["10.79.1.1/24"]), spec("ap-b"))
        assert sandbox.submit(signer.sign(signer.batch([ok]))).ok
        reply = sandbox.submit(signer.sign(signer.batch([add_address("ap-b", "192.0.2.1/32")])))
        _refused(reply, helper_pb2.POLICY_REFUSED, sandbox)
        assert sandbox.submit(signer.sign(signer.batch([add_address("ap-b", "10.79.2.1/24")]))).ok


def test_refusal_of_one_operation_names_its_index(helper: Sandbox, signer: Signer) -> None:
    """The controller sets the named operation aside and sends the rest; -1 means the batch."""
    good = create(spec("ix-a", named("ix-ns")), spec("ix-b", named("ix-ns")))
    outside = create(spec("ix-c", helper_pb2.NamespaceRef(path="/etc/passwd")), spec("ix-d"))
    reply = helper.submit(signer.sign(signer.batch([good, outside])))
    _refused(reply, helper_pb2.POLICY_REFUSED, helper)
    assert reply.failed_index == 1, reply.error
    helper.run("sh", "-c", "echo not-a-namespace > /run/netns/ix-plain")  # empty: GONE
    try:
        plain = helper_pb2.NamespaceRef(path="/run/netns/ix-plain")
        reply = helper.submit(signer.sign(signer.batch([good, set_link("ix-e", plain, up=True)])))
        observing = signer.batch([good], helper_pb2.ObserveRequest(netns=[plain]))
        observe_reply = helper.submit(signer.sign(observing))
    finally:
        helper.run("rm", "-f", "/run/netns/ix-plain")
    _refused(reply, helper_pb2.POLICY_REFUSED, helper)
    assert reply.failed_index == 1, reply.error
    _refused(observe_reply, helper_pb2.POLICY_REFUSED, helper)
    assert observe_reply.failed_index == -1, "the observe is no operation: " + observe_reply.error
    reply = helper.submit(signer.sign(signer.batch([delete(f"ix{i}") for i in range(257)])))
    assert (reply.ok, reply.failed_index) == (False, -1)
    assert "ix-ns" not in helper.netns_list()


def _unread_bytes(pid: int) -> int:
    listing = subprocess.run(["ss", "-xpnH"], capture_output=True, text=True, check=True)
    return sum(int(line.split()[2]) for line in listing.stdout.splitlines()
               if f"pid={pid}," in line)


def _wait_until_received(pid: int, payload: int) -> None:
    """Until the stopped helper's sockets hold at least every batch's bytes, then until
    nothing more arrives for 0.2 s: a loaded machine's client threads may send late."""
    deadline = time.monotonic() + 30
    last, steady_since = -1, time.monotonic()
    while True:
        unread = _unread_bytes(pid)
        if unread != last:
            last, steady_since = unread, time.monotonic()
        elif unread >= payload and time.monotonic() - steady_since >= 0.2:
            return
        assert time.monotonic() < deadline, f"{unread} of {payload} bytes arrived"
        time.sleep(0.02)


def test_requests_above_the_concurrency_cap_are_turned_away_and_the_rest_served(
    helper: Sandbox, signer: Signer
) -> None:
    """Batches run one at a time; more than MAX_CONCURRENT_RPCS waiting get RESOURCE_EXHAUSTED
    at once instead of queueing in the helper's memory. To make "waiting" certain, the
    helper is stopped (SIGSTOP) once a large first batch has logged its intent, the other
    batches are sent to it, and it is continued: they all arrive while the first runs."""
    ns = named("cc-ns")
    first_pairs = 250  # long enough to still run while the front reads every other request
    first = signer.sign(signer.batch([create(spec(f"cf{j}a", ns), spec(f"cf{j}b", ns))
                                      for j in range(first_pairs)]))
    others = [signer.sign(signer.batch([create(spec(f"cc{i}a", ns), spec(f"cc{i}b", ns))]))
              for i in range(3 * MAX_CONCURRENT_RPCS)]
    # The helper takes at most front.MAX_STREAMS_PER_CONNECTION calls per connection, so
    # the batches come over connections of their own, each connected before the stop.
    own_connection = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.insecure_channel(f"unix:{helper.socket}", options=own_connection)
                for _ in range(7)]
    stopped = False
    try:
        for channel in channels:
            hello = channel.unary_unary(HELLO,
                                        request_serializer=helper_pb2.HelloRequest.SerializeToString,
                                        response_deserializer=helper_pb2.HelloReply.FromString)
            hello(helper_pb2.HelloRequest(), timeout=10)
        calls = [channel.unary_unary(SUBMIT,
                                     request_serializer=helper_pb2.SignedBatch.SerializeToString,
                                     response_deserializer=helper_pb2.BatchReply.FromString)
                 for channel in channels]
        intents = len([r for r in helper.audit_records() if r.get("kind") == "intent"])
        first_call = calls[0].future(first, timeout=120)
        deadline = time.monotonic() + 30
        while len([r for r in helper.audit_records() if r.get("kind") == "intent"]) == intents:
            assert time.monotonic() < deadline and not first_call.done(), "no intent logged"
            time.sleep(0.001)
        os.kill(helper.pid, signal.SIGSTOP)
        stopped = True
        futures = [calls[1 + number % (len(calls) - 1)].future(batch, timeout=120)
                   for number, batch in enumerate(others)]
        _wait_until_received(helper.pid, sum(len(b.SerializeToString()) for b in others))
        os.kill(helper.pid, signal.SIGCONT)
        stopped = False
        assert first_call.result().ok
        outcomes: list[str] = []
        for future in futures:
            error = future.exception()
            if error is None:
                reply = future.result()
                # admitted out of signing order: an older sequence is a replay by then
                assert reply.ok or reply.error_kind == Kind.REPLAY, reply
                outcomes.append("ok" if reply.ok else "replay")
            else:
                assert isinstance(error, grpc.RpcError)
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
                outcomes.append("exhausted")
    finally:
        if stopped:
            os.kill(helper.pid, signal.SIGCONT)
        for channel in channels:
            channel.close()
    admitted = outcomes.count("ok") + outcomes.count("replay")
    assert admitted == MAX_CONCURRENT_RPCS - 1, outcomes  # with the first one running
    assert outcomes.count("ok") >= 1, outcomes
    assert outcomes.count("exhausted") == len(others) - (MAX_CONCURRENT_RPCS - 1), outcomes
    assert helper.submit(signer.sign(signer.batch([]))).ok
    created = {link["ifname"] for link in helper.links("cc-ns")} - {"lo"}
    applied_whole = 2 * first_pairs + 2 * outcomes.count("ok")
    assert len(created) == applied_whole, "each accepted batch applied whole"
    helper.run("ip", "netns", "del", "cc-ns")
