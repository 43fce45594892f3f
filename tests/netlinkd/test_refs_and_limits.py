"""PID and path references, audit records of a batch, and policy-file limits."""

from __future__ import annotations

import base64
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nlkd_lib import (
    NETLINKD,
    Sandbox,
    Signer,
    create,
    delete,
    make_sandbox,
    named,
    new_key,
    own_sandbox,
    set_link,
    spec,
)

from netagent_api import helper_pb2
from netagent_audit.chain import verify_files
from netagent_audit.cli import chain_state


@pytest.fixture
def netns_process(helper: Sandbox) -> Iterator[int]:
    """A process in its own network namespace inside the helper's sandbox."""
    proc = subprocess.Popen(
        ["nsenter", "-t", str(helper.pid), "-m", "-n", "unshare", "--net", "sleep", "600"]
    )
    try:
        comm = f"/proc/{proc.pid}/comm"
        deadline = time.monotonic() + 30
        while Path(comm).read_text(encoding="ascii").strip() != "sleep":
            assert time.monotonic() < deadline, "the namespace process did not start"
            time.sleep(0.02)
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_pid_ref_creates_in_that_namespace(
    helper: Sandbox, signer: Signer, netns_process: int
) -> None:
    inode = os.stat(f"/proc/{netns_process}/ns/net").st_ino
    ref = helper_pb2.NamespaceRef(pid=netns_process, expect_inode=inode)
    reply = helper.submit(signer.sign(signer.batch([create(spec("pid-a", ref), spec("pid-b"))])))
    assert reply.ok, reply.error
    out = subprocess.run(["nsenter", "-t", str(netns_process), "-n", "ip", "-o", "link"],
                         capture_output=True, text=True, check=True).stdout
    assert "pid-a" in out
    observe = helper_pb2.ObserveRequest(netns=[ref])
    reply = helper.submit(signer.sign(signer.batch([], observe)))
    seen = {(o.name, o.netns.pid, o.netns_inode) for o in reply.observed}
    assert ("pid-a", netns_process, inode) in seen
    assert helper.submit(signer.sign(signer.batch([delete("pid-b")]))).ok


def test_path_ref_inside_allowed_dir(helper: Sandbox, signer: Signer) -> None:
    helper.run("ip", "netns", "add", "pth-ns")
    ref = helper_pb2.NamespaceRef(path="/var/run/netns/pth-ns")
    reply = helper.submit(signer.sign(signer.batch(
        [create(spec("pth-a", ref), spec("pth-b"))], helper_pb2.ObserveRequest(netns=[ref])
    )))
    assert reply.ok, reply.error
    assert helper.link("pth-a", "pth-ns") is not None
    assert any(o.name == "pth-a" and o.netns.path == ref.path for o in reply.observed)


def test_intent_is_audited_before_result(helper: Sandbox, signer: Signer) -> None:
    signed = signer.sign(signer.batch([create(spec("au-a", named("au-ns")), spec("au-b"))]))
    assert helper.submit(signed).ok
    records = helper.audit_records()
    intent, result = records[-2], records[-1]
    assert intent["kind"] == "intent" and result["kind"] == "result"
    assert base64.b64decode(str(intent["batch"])) == signed.batch
    assert base64.b64decode(str(intent["signature"])) == signed.signature
    assert intent["interfaces"] == ["au-a", "au-b"] and intent["owner"] == "t"
    assert result["verdict"] == "applied" and result["seq"] == intent["seq"]


def test_owned_link_limit_from_policy_file() -> None:
    with own_sandbox("max_owned_links = 4\nmax_ops_per_batch = 8\n") as (sandbox, signer):
        for i in range(2):
            op = create(spec(f"lim{i}a", named("lim-ns")), spec(f"lim{i}b", named("lim-ns")))
            assert sandbox.submit(signer.sign(signer.batch([op]))).ok
        op = create(spec("lim9a", named("lim-ns")), spec("lim9b", named("lim-ns")))
        reply = sandbox.submit(signer.sign(signer.batch([op])))
        assert reply.error_kind == helper_pb2.OWNED_LINK_LIMIT and "4 owned links" in reply.error
        assert sandbox.submit(signer.sign(signer.batch([delete("lim0a", named("lim-ns"))]))).ok
        assert sandbox.submit(signer.sign(signer.batch([op]))).ok
        too_many = [delete(f"x{i}") for i in range(9)]
        reply = sandbox.submit(signer.sign(signer.batch(too_many)))
        assert reply.error_kind == helper_pb2.POLICY_REFUSED
        sandbox.run("ip", "netns", "del", "lim-ns")  # its links go with it, unseen by the helper
        for i in range(2):
            op = create(spec(f"new{i}a", named("lim-ns2")), spec(f"new{i}b", named("lim-ns2")))
            reply = sandbox.submit(signer.sign(signer.batch([op])))
            assert reply.ok, f"links that vanished with their namespace still count: {reply.error}"


def test_the_owned_link_limit_counts_only_the_batch_owners_links() -> None:
    with own_sandbox("max_owned_links = 4\n") as (sandbox, signer):
        for i in range(2):  # another agent's 4 links, made first
            op = create(spec(f"ot{i}a", named("ow-ns")), spec(f"ot{i}b", named("ow-ns")))
            assert sandbox.submit(signer.sign(signer.batch([op], owner="other"))).ok
        for i in range(2):  # this agent's 4 are its own budget
            op = create(spec(f"me{i}a", named("ow-ns")), spec(f"me{i}b", named("ow-ns")))
            reply = sandbox.submit(signer.sign(signer.batch([op])))
            assert reply.ok, f"another owner's links counted: {reply.error}"
        op = create(spec("me9a", named("ow-ns")), spec("me9b", named("ow-ns")))
        reply = sandbox.submit(signer.sign(signer.batch([op])))
        assert reply.error_kind == helper_pb2.OWNED_LINK_LIMIT and reply.failed_index == 0
        assert "owner t (4 exist)" in reply.error, reply.error
        sandbox.run("ip", "netns", "del", "ow-ns")


def test_one_batch_over_the_owned_link_limit_blames_its_first_pair_over_it() -> None:
    """Four creates in one batch against a limit of 4: the third pair is the first over it
    (the fourth too, but the reply names the first); the pairs made before it are undone,
    with the namespace the batch made for them."""
    with own_sandbox("max_owned_links = 4\n") as (sandbox, signer):
        ops = [create(spec(f"bl{i}a", named("bl-ns")), spec(f"bl{i}b", named("bl-ns")))
               for i in range(4)]
        reply = sandbox.submit(signer.sign(signer.batch(ops)))
        assert (reply.error_kind, reply.failed_index) == (helper_pb2.OWNED_LINK_LIMIT, 2), reply
        assert "bl-ns" not in sandbox.netns_list()


def test_config_file_supplies_options() -> None:
    pair = new_key()
    sandbox = make_sandbox(pair)
    config = sandbox.root / "netagent.toml"
    config.write_text(
        f'[netlinkd]\ntrust_key = "{sandbox.trust}"\naudit_log = "{sandbox.audit}"\n'
        f'log_level = "DEBUG"\n\n[controller]\netcd = "ignored:1"\n'
    )
    signer = Signer(pair)
    try:
        sandbox.extra_args = ["--config", str(config)]
        sandbox.start()
        assert sandbox.submit(signer.sign(signer.batch([]))).ok
    finally:
        sandbox.stop()
        shutil.rmtree(sandbox.root, ignore_errors=True)


def test_audit_failure_fails_closed() -> None:
    pair = new_key()
    sandbox = make_sandbox(pair)
    auditfs = sandbox.root / "auditfs"
    auditfs.mkdir()
    sandbox.pre_script = f"mount -t tmpfs -o size=256k tmpfs {auditfs}"
    sandbox.audit_path = str(auditfs / "audit.log")
    signer = Signer(pair)
    try:
        sandbox.start()
        assert sandbox.submit(signer.sign(signer.batch([]))).ok
        sandbox.run("sh", "-c", f"dd if=/dev/zero of={auditfs}/fill bs=4k || true")
        for _ in range(40):  # the audit file's last page still has room for a few records
            if not sandbox.submit(signer.sign(signer.batch([]))).ok:
                break
        op = create(spec("af-a", named("af-ns")), spec("af-b"))
        reply = sandbox.submit(signer.sign(signer.batch([op])))
        assert reply.error_kind == helper_pb2.AUDIT_UNAVAILABLE, reply.error
        assert sandbox.link("af-b") is None and "af-ns" not in sandbox.netns_list()
    finally:
        sandbox.stop()
        shutil.rmtree(sandbox.root, ignore_errors=True)


def test_audit_log_verifies_with_the_audit_cli(helper: Sandbox, signer: Signer) -> None:
    assert helper.submit(signer.sign(signer.batch([]))).ok
    result = subprocess.run(
        [NETLINKD, "audit", "verify", "--audit-log", helper.audit, "--trust-key", helper.trust],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dead_process_namespace_is_not_pinned(helper: Sandbox, signer: Signer) -> None:
    proc = subprocess.Popen(
        ["nsenter", "-t", str(helper.pid), "-m", "-n", "unshare", "--net", "sleep", "600"]
    )
    try:
        deadline = time.monotonic() + 30
        while Path(f"/proc/{proc.pid}/comm").read_text(encoding="ascii").strip() != "sleep":
            assert time.monotonic() < deadline, "the namespace process did not start"
            time.sleep(0.02)
        ref = helper_pb2.NamespaceRef(pid=proc.pid)
        op = create(spec("dead-a", ref), spec("dead-b"))
        assert helper.submit(signer.sign(signer.batch([op]))).ok
    finally:
        proc.kill()
        proc.wait()
    assert helper.submit(signer.sign(signer.batch([]))).ok
    deadline = time.monotonic() + 60
    while helper.link("dead-b") is not None:
        assert time.monotonic() < deadline, "the helper still pins the dead namespace"
        time.sleep(0.1)


_LATE_IMPORTS = """
import sys
from netlinkd import cli, privileges

late: list[str] = []
drop = privileges.drop_privileges


def record(event: str, args: tuple[object, ...]) -> None:
    if event == "import":
        late.append(str(args[0]))


def drop_then_watch(keep: frozenset[str]) -> None:
    drop(keep)
    sys.addaudithook(record)


privileges.drop_privileges = drop_then_watch
try:
    code = cli.main(sys.argv[1:])
finally:
    with open(sys.argv[0] + ".late", "w", encoding="utf-8") as out:
        out.write("\\n".join(sorted(set(late))))
sys.exit(code)
"""


def test_nothing_is_imported_after_the_privilege_drop() -> None:
    pair = new_key()
    sandbox = make_sandbox(pair)
    wrapper = sandbox.root / "late_imports.py"
    wrapper.write_text(_LATE_IMPORTS)
    sandbox.program = f"{sys.executable} {wrapper}"
    signer = Signer(pair)
    ns = named("li-ns")
    try:
        sandbox.start()
        for ops in ([create(spec("li-a", ns, addresses=["10.77.0.1/24"], up=True), spec("li-b"))],
                    [set_link("li-a", ns, mtu=1400), delete("li-a", ns)]):
            reply = sandbox.submit(signer.sign(signer.batch(
                ops, helper_pb2.ObserveRequest(netns=[ns], scan_named=True)
            )))
            assert reply.ok, reply.error
        sandbox.submit_raw(b"\xff")
        assert sandbox.proc is not None
        sandbox.proc.send_signal(signal.SIGHUP)
        sandbox.stop()
        assert Path(f"{wrapper}.late").read_text() == ""
    finally:
        sandbox.stop()
        shutil.rmtree(sandbox.root, ignore_errors=True)


def test_byte_flips_in_a_live_helpers_log_are_caught_at_their_record(
    helper: Sandbox, signer: Signer, tmp_path: Path
) -> None:
    ns = named("tf-ns")
    for ops in ([create(spec("tf-a", ns, addresses=["10.78.0.1/24"]), spec("tf-b", ns))],
                [set_link("tf-a", ns, mtu=1300)], [delete("tf-a", ns)]):
        assert helper.submit(signer.sign(signer.batch(ops))).ok
    helper.submit_raw(b"\xff")
    original = Path(helper.audit).read_bytes().splitlines(keepends=True)
    copy = tmp_path / "audit.log"
    rng = random.Random(4)
    for index, line in enumerate(original):
        for offset in {0, rng.randrange(len(line)), len(line) - 1}:
            damaged = bytearray(line)
            damaged[offset] ^= 0x04
            copy.write_bytes(b"".join([*original[:index], damaged, *original[index + 1:]]))
            state = chain_state([helper.trust])
            failure = verify_files([str(copy)], state)
            assert failure is not None and failure.index == index, (index, offset, failure)


def test_a_named_namespace_is_made_like_ip_netns_add(helper: Sandbox, signer: Signer) -> None:
    """The run directory is a shared mount (other mount namespaces see the namespaces made
    in it), and the mount point is a mode-0 file, as `ip netns add` makes them."""
    ns = named("mk-ns")
    reply = helper.submit(signer.sign(signer.batch([create(spec("mk-a", ns), spec("mk-b"))])))
    assert reply.ok, reply.error
    where = helper.run("findmnt", "-n", "-o", "PROPAGATION", "/var/run/netns").stdout.split()
    assert where and where[-1] == "shared", where
    helper.run("umount", "/var/run/netns/mk-ns")
    try:
        assert helper.run("stat", "-c", "%a %F", "/var/run/netns/mk-ns").stdout.strip() == (
            "0 regular empty file")
    finally:
        helper.run("rm", "-f", "/var/run/netns/mk-ns")


def test_unmounted_named_namespace_is_gone_not_refused(helper: Sandbox, signer: Signer) -> None:
    """`ip netns add` makes the mount point with mode 0; once unmounted (deleted, or being
    deleted) the helper cannot open it without CAP_DAC_OVERRIDE. That is a namespace that is
    gone, not a policy verdict (found by tests/fuzz/fuzz_executor_live.py)."""
    helper.run("ip", "netns", "add", "um-ns")
    helper.run("umount", "/var/run/netns/um-ns")
    try:
        change = set_link("um-a", named("um-ns"), mtu=1400)
        reply = helper.submit(signer.sign(signer.batch([change])))
        assert not reply.ok and reply.error_kind == helper_pb2.NAMESPACE_GONE, reply
    finally:
        helper.run("rm", "-f", "/var/run/netns/um-ns")


def test_an_unreadable_file_that_is_not_empty_is_refused_not_gone(
    helper: Sandbox, signer: Signer
) -> None:
    """Only an empty file is what an unmounted namespace leaves: a mode-0 file with content
    the helper cannot open is a policy refusal."""
    helper.run("sh", "-c", "echo data > /var/run/netns/um-full && chmod 0 /var/run/netns/um-full")
    try:
        change = set_link("um-a", named("um-full"), mtu=1400)
        reply = helper.submit(signer.sign(signer.batch([change])))
        assert not reply.ok and reply.error_kind == helper_pb2.POLICY_REFUSED, reply
        assert "cannot open /var/run/netns/um-full as a namespace" in reply.error, reply.error
    finally:
        helper.run("rm", "-f", "/var/run/netns/um-full")
