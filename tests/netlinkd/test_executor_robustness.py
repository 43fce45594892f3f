"""The executor under stress and odd failures: rollback never deletes a stranger, descriptors
stay bounded, and an unexpected exception never leaves marks, files or a wrong verdict.

Real-kernel tests run either a sandboxed helper (nlkd_lib) or the Executor itself in a
scratch mount + network namespace (`_scratch_executor`); names here start with `rb`.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nlkd_lib import (
    Sandbox,
    Signer,
    add_address,
    create,
    delete,
    make_sandbox,
    named,
    new_key,
    spec,
)

from netagent_api import helper_pb2
from netlinkd import links, netns
from netlinkd.errors import KernelError, PolicyRefused
from netlinkd.rtnl import Rtnl

# --- a real Executor in a scratch namespace ----------------------------------------------

_PRELUDE = """
import json, sys
from pyroute2 import IPRoute
from netagent_api import helper_pb2
from netlinkd import executor, group_delete, links
from netlinkd.errors import LinkNotFound
from netlinkd.policy import Policy
from netlinkd.rtnl import Rtnl
H = helper_pb2
def ns(): return H.NamespaceRef()
def spec(n): return H.LinkSpec(name=n, netns=ns())
def create(a, b): return H.Operation(create_veth_pair=H.CreateVethPair(a=spec(a), b=spec(b)))
def delete(n): return H.Operation(delete_link=H.DeleteLink(name=n, netns=ns()))
def up(n): return H.Operation(set_link=H.SetLink(name=n, netns=ns(), up=True))
def addr(n): return H.Operation(add_address=H.AddAddress(name=n, netns=ns(), address="10.9.9.9/24"))
def batch(ops, observe=False):
    b = H.Batch(owner="t", operations=ops)
    if observe:
        b.observe.CopyFrom(H.ObserveRequest())
    return b
def report(x, out):
    ipr = Rtnl.here()
    out["links"] = {l.name: [l.alias, l.group] for l in links.dump_links(ipr, "here")}
    out.update(ok=x.ok, verdict=x.verdict, index=x.failed_index,
               kind=x.error.kind_name if x.error else "", error=str(x.error or ""),
               observed=len(x.observed))
    print(json.dumps(out))
ex = executor.Executor(Policy())
run_batch = ex.execute
ex.execute = lambda b: run_batch(b, lambda: None)  # no audit intent before acting here
out = {}
"""


def _scratch_executor(body: str) -> dict[str, object]:
    """Run PRELUDE + body (which ends with report(outcome, out)) in a fresh mount + network
    namespace whose /run/netns is a private tmpfs; everything vanishes with the process."""
    script = _PRELUDE + textwrap.dedent(body)
    shell = 'mkdir -p /run/netns && mount -t tmpfs tmpfs /run/netns && exec "$0" -c "$1"'
    done = subprocess.run(
        ["unshare", "--mount", "--net", "--propagation", "slave", "sh", "-c", shell,
         sys.executable, script],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    result["stderr"] = done.stderr  # the executor's log: Python's last-resort handler
    return result


def test_rollback_deletes_the_created_ifindex_not_a_stranger_with_its_name() -> None:
    """create rbx/rby, delete rbx, a stranger creates rbx, a later op fails: the undo of the
    create must not delete the stranger's rbx (it used to look the name up and delete it)."""
    result = _scratch_executor("""
        real = executor._BatchRun._add_address
        def hooked(self, op, undo):
            IPRoute().link("add", ifname="rbx", kind="veth", peer={"ifname": "rbxp"})
            return real(self, op, undo)
        executor._BatchRun._add_address = hooked
        report(ex.execute(batch([create("rbx", "rby"), delete("rbx"), addr("rbnope")])), out)
    """)
    assert result["ok"] is False and result["index"] == 2
    links_now = result["links"]
    assert isinstance(links_now, dict)
    assert "rbx" in links_now and "rbxp" in links_now, result  # the stranger survives
    assert links_now["rbx"] == ["", 0]
    assert result["verdict"] == "failed"
    assert "not undone: delete rbx" in str(result["error"])


def test_a_stranger_taking_a_deleted_links_name_mid_batch_is_not_changed() -> None:
    """create rsx/rsy, delete rsx, a stranger creates rsx, set rsx up: the up-front check saw
    only this batch's rsx, so the set's own ownership check is what refuses the stranger's."""
    result = _scratch_executor("""
        real = executor._BatchRun._set_link
        def hooked(self, op, undo):
            IPRoute().link("add", ifname="rsx", kind="veth", peer={"ifname": "rsxp"})
            return real(self, op, undo)
        executor._BatchRun._set_link = hooked
        outcome = ex.execute(batch([create("rsx", "rsy"), delete("rsx"), up("rsx")]))
        out["up"] = IPRoute().get_links(ifname="rsx")[0]["flags"] & 1
        report(outcome, out)
    """)
    assert (result["ok"], result["index"], result["kind"]) == (False, 2, "POLICY_REFUSED"), result
    assert "link rsx in " in str(result["error"]) and "is not owned by" in str(result["error"])
    assert result["links"]["rsx"] == ["", 0] and result["up"] == 0, result  # type: ignore[index]


def test_rollback_still_deletes_what_it_created() -> None:
    result = _scratch_executor("""
        report(ex.execute(batch([create("rba", "rbb"), up("rba"), addr("rbnope")])), out)
    """)
    assert (result["ok"], result["verdict"], result["index"]) == (False, "rolled_back", 2)
    assert not {"rba", "rbb"} & set(result["links"])  # type: ignore[arg-type]


_PIPELINED = """
        def made(a, b, mtu=0, addresses=()):
            op = create(a, b)
            op.create_veth_pair.a.mtu = mtu
            op.create_veth_pair.a.addresses.extend(addresses)
            return op
"""


def test_pipelined_creates_blame_the_first_failing_pair_and_undo_every_pair() -> None:
    """Creates of a batch go in one sendmsg; the pair the kernel refused (MTU below the
    minimum) is the failed operation, and the pairs before and after it are undone."""
    result = _scratch_executor(_PIPELINED + """
        ops = [made("rp0a", "rp0b"), made("rp1a", "rp1b", mtu=60), made("rp2a", "rp2b")]
        report(ex.execute(batch(ops)), out)
    """)
    assert (result["ok"], result["verdict"], result["index"], result["kind"]) == (
        False, "rolled_back", 1, "KERNEL"), result
    assert "operation 1 (create_veth_pair)" in str(result["error"]), result["error"]
    assert not {name for name in result["links"] if name.startswith("rp")}  # type: ignore[union-attr]


def test_pipelined_configure_blames_its_pair() -> None:
    """The third pair's second address add fails (already there): operation 2 failed, and
    all three pairs, already made and partly configured, are gone."""
    result = _scratch_executor(_PIPELINED + """
        ops = [made("rq0a", "rq0b", addresses=["10.8.0.1/24"]), made("rq1a", "rq1b"),
               made("rq2a", "rq2b", addresses=["10.8.2.1/24", "10.8.2.1/24"])]
        report(ex.execute(batch(ops)), out)
    """)
    assert (result["ok"], result["verdict"], result["index"], result["kind"]) == (
        False, "rolled_back", 2, "CONFLICT"), result
    assert "add 10.8.2.1/24 to rq2a" in str(result["error"]), result["error"]
    assert not {name for name in result["links"] if name.startswith("rq")}  # type: ignore[union-attr]


def test_a_batch_of_creates_sends_them_in_one_sendmsg() -> None:
    """Four writes for a run of creates in one namespace (the pre-check's look-ups, the
    creates, the look-ups of the new ends, their configuration), not five per pair. A first
    batch has counted the owned links already."""
    result = _scratch_executor(_PIPELINED + """
        assert ex.execute(batch([made("rswa", "rswb")])).ok
        import socket
        real_send, real_sendmsg = socket.socket.send, socket.socket.sendmsg
        out["writes"] = 0
        def send(self, *args):
            out["writes"] += 1
            return real_send(self, *args)
        def sendmsg(self, *args):
            out["writes"] += 1
            return real_sendmsg(self, *args)
        socket.socket.send, socket.socket.sendmsg = send, sendmsg
        ops = [made(f"rs{i}a", f"rs{i}b", addresses=["10.7.0.1/24"]) for i in range(20)]
        outcome = ex.execute(batch(ops))
        out["batch_writes"] = out["writes"]
        report(outcome, out)
    """)
    assert result["ok"], result
    assert result["batch_writes"] == 4, result["batch_writes"]


def test_failed_look_up_right_after_the_create_still_rolls_the_pair_back() -> None:
    """The undo is in place before the first look-up: an unowned pair is never left over."""
    result = _scratch_executor("""
        from pyroute2.netlink.exceptions import NetlinkError
        real = links.find_links
        def flaky(ipr, names, where):  # the pre-check's look-up, then the one after the create
            if "rbx" in names:
                out["look_ups"] = out.get("look_ups", 0) + 1
                if out["look_ups"] == 2:
                    raise executor.KernelError(f"look up {names} in {where}: ENOBUFS")
            return real(ipr, names, where)
        executor.links.find_links = flaky
        report(ex.execute(batch([create("rbx", "rby")])), out)
    """)
    assert (result["ok"], result["verdict"], result["kind"]) == (False, "rolled_back", "KERNEL"), (
        result["error"])
    assert "ENOBUFS" in str(result["error"]), result["error"]
    assert not {"rbx", "rby"} & set(result["links"])  # type: ignore[arg-type]


def test_exception_in_a_group_delete_unmarks_and_reports_the_delete() -> None:
    """A non-HelperError while deleting the marked group: the links are unmarked, the reply
    is a KERNEL error for that DeleteLink, not an internal error with marks left behind."""
    result = _scratch_executor("""
        assert ex.execute(batch([create("rbc", "rbd"), create("rbe", "rbf")])).ok
        def boom(self, marked):
            raise RuntimeError("boom in group delete")
        group_delete.GroupDelete._delete_group = boom
        report(ex.execute(batch([delete("rbc"), up("rbe")])), out)
    """)
    assert (result["ok"], result["index"], result["kind"]) == (False, 0, "KERNEL"), result
    assert "boom in group delete" in str(result["error"])
    links_now = result["links"]
    assert isinstance(links_now, dict)
    assert links_now["rbc"][1] == 0 and links_now["rbd"][1] == 0  # unmarked


def test_a_rollback_step_that_fails_makes_the_verdict_failed_not_rolled_back() -> None:
    result = _scratch_executor("""
        def refused(self, created):
            raise RuntimeError("undo refused")
        executor._BatchRun._delete_created = refused
        report(ex.execute(batch([create("rua", "rub"), addr("runope")])), out)
    """)
    assert (result["ok"], result["index"], result["verdict"]) == (False, 1, "failed"), result
    assert "rollback incomplete (delete rua: undo refused)" in str(result["error"])
    assert "rollback step failed: delete rua: undo refused" in str(result["stderr"])


def test_exception_in_observe_keeps_the_applied_verdict() -> None:
    result = _scratch_executor("""
        def boom(self, request):
            raise RuntimeError("boom in observe")
        executor._BatchRun.observe = boom
        report(ex.execute(batch([create("rbg", "rbh")], observe=True)), out)
    """)
    assert (result["ok"], result["verdict"], result["kind"]) == (False, "applied", "KERNEL")
    assert "operations applied, observe failed: RuntimeError: boom in observe" in str(
        result["error"]
    )
    assert "rbg" in result["links"]  # type: ignore[operator]
    assert "observe after the operations failed: boom in observe" in str(result["stderr"])


def test_a_scan_of_named_namespaces_observes_none_when_the_policy_allows_none() -> None:
    """The named namespaces a scan finds were not checked with the batch: each is checked
    against the policy when opened, the first one too."""
    result = _scratch_executor("""
        there = H.NamespaceRef(name="obs-n1")
        pair = H.CreateVethPair(a=H.LinkSpec(name="obsa", netns=there),
                                b=H.LinkSpec(name="obsb", netns=there))
        made = ex.execute(batch([H.Operation(create_veth_pair=pair)]))
        out["made"] = made.ok
        strict = executor.Executor(Policy(netns_dirs=("/run/docker/netns",)))
        scan = H.Batch(owner="t")
        scan.observe.scan_named = True
        out["seen"] = sorted(l.name for l in strict.execute(scan, lambda: None).observed)
        allowed = H.Batch(owner="t")
        allowed.observe.scan_named = True
        out["seen_allowed"] = sorted(l.name for l in ex.execute(allowed).observed)
        report(made, out)
    """)
    assert result["made"] is True, result
    assert result["seen_allowed"] == ["obsa", "obsb"], result
    assert result["seen"] == [], result


def test_a_recount_mid_batch_counts_the_pairs_reserved_but_not_created_yet() -> None:
    """The running count is too high when links vanished with their namespace unseen: a
    batch then recounts, and adds what it reserved but did not create yet (two links a
    pair). Four pairs fit a limit of 8 once the 6 counted links are found gone."""
    result = _scratch_executor("""
        ex8 = executor.Executor(Policy(max_owned_links=8))
        ex8.owned_count["t"] = 6  # as after 3 pairs whose namespace went away
        made = ex8.execute(batch([create(f"pn{i}a", f"pn{i}b") for i in range(4)]),
                           lambda: None)
        report(made, out)
    """)
    assert (result["ok"], result["error"]) == (True, ""), result
    assert {f"pn{i}{end}" for i in range(4) for end in "ab"} <= set(result["links"]), result


def test_out_of_descriptors_fails_the_observe_instead_of_skipping() -> None:
    result = _scratch_executor("""
        from netlinkd import netns
        from netlinkd.errors import KernelError
        ex.execute(batch([H.Operation(create_veth_pair=H.CreateVethPair(
            a=spec("rbi"), b=H.LinkSpec(name="rbj", netns=H.NamespaceRef(name="rbns"))))]))
        real = netns.open_ref
        def emfile(policy, ref, host, dir_checked=False):
            if ref.WhichOneof("kind") == "name":
                raise KernelError("cannot open /run/netns/rbns: Too many open files; retry")
            return real(policy, ref, host, dir_checked)
        netns.open_ref = emfile
        b = batch([up("rbi")])
        b.observe.CopyFrom(H.ObserveRequest(scan_named=True))
        report(ex.execute(b), out)
    """)
    assert (result["ok"], result["verdict"], result["kind"]) == (False, "applied", "KERNEL")
    assert "observe failed" in str(result["error"]) and "Too many open files" in str(
        result["error"]
    )


# --- units ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "kind"), [
    (errno.EMFILE, KernelError), (errno.ENFILE, KernelError), (errno.ENOMEM, KernelError),
    (errno.EACCES, PolicyRefused), (errno.ELOOP, PolicyRefused), (errno.ENOTDIR, PolicyRefused),
])
def test_open_errors_out_of_resources_are_kernel_errors(
    monkeypatch: pytest.MonkeyPatch, code: int, kind: type[Exception]
) -> None:
    def failing_open(path: str, flags: int, mode: int = 0o777) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(netns.os, "open", failing_open)
    with pytest.raises(kind) as raised:
        netns.open_ns_file("/run/netns/rb-any")
    assert type(raised.value) is kind


def test_create_named_removes_its_file_whatever_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A thread that cannot start raises RuntimeError, not OSError: the empty file goes."""

    def no_thread(work: object) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(netns, "NETNS_RUN_DIR", str(tmp_path))
    monkeypatch.setattr(netns, "_make_run_dir_shared", lambda: None)
    monkeypatch.setattr(netns, "on_namespace_thread", no_thread)
    with pytest.raises(KernelError, match="can't start new thread"):
        netns.create_named("rb-ns")
    assert not (tmp_path / "rb-ns").exists()


@pytest.fixture
def holders() -> Iterator[list[netns.NsHandle]]:
    """Three scratch network namespaces, each held by an `unshare --net sleep`."""
    procs: list[subprocess.Popen[bytes]] = []
    handles: list[netns.NsHandle] = []
    try:
        own = os.stat("/proc/self/ns/net").st_ino
        for _ in range(3):
            proc = subprocess.Popen(["unshare", "--net", "sleep", "300"])
            procs.append(proc)
            path = f"/proc/{proc.pid}/ns/net"
            deadline = time.monotonic() + 10
            while os.stat(path).st_ino == own:
                assert time.monotonic() < deadline
                time.sleep(0.005)
            handles.append(netns.open_ns_file(path, follow=True))
        yield handles
    finally:
        for handle in handles:
            handle.close()
        for proc in procs:
            proc.kill()
            proc.wait()


def _where() -> tuple[threading.Thread, int]:
    """The calling thread and its network namespace's inode."""
    return threading.current_thread(), os.stat("/proc/thread-self/ns/net").st_ino


def test_sockets_are_made_on_one_thread_that_goes_home_after_each(
    holders: list[netns.NsHandle],
) -> None:
    """No thread is left in a namespace it switched to (it would keep it alive)."""
    own = os.stat("/proc/self/ns/net").st_ino
    threads = set()
    for handle in holders:
        netns.netlink_socket_in(handle.fd).close()
        thread, inode = netns.on_namespace_thread(_where)
        threads.add(thread)
        assert inode == own
    assert len(threads) == 1 and threading.current_thread() not in threads


def test_a_namespace_thread_that_cannot_go_home_quits(
    monkeypatch: pytest.MonkeyPatch, holders: list[netns.NsHandle]
) -> None:
    class NoWayBack:
        def setns(self, fd: int, kind: int) -> int:
            return -1

    first, _ = netns.on_namespace_thread(_where)
    real = netns._libc
    monkeypatch.setattr(netns, "_libc", NoWayBack())
    assert netns.on_namespace_thread(_where)[0] is first  # did its job, then quit
    monkeypatch.setattr(netns, "_libc", real)
    first.join(10)
    assert not first.is_alive()
    netns.netlink_socket_in(holders[0].fd).close()
    thread, inode = netns.on_namespace_thread(_where)
    assert thread is not first and inode == os.stat("/proc/self/ns/net").st_ino


def _closed(ipr: Rtnl) -> bool:
    return bool(ipr.fileno() < 0)


def test_socket_cache_is_bounded_and_never_closes_a_pinned_socket(
    holders: list[netns.NsHandle],
) -> None:
    cache = netns.SocketCache(netns.host_handle(), limit=2)
    try:
        first = [cache.get(h) for h in holders[:2]]
        cache.release()
        assert len(cache) == 2
        cache.get(holders[2])
        cache.release()
        assert len(cache) == 2
        assert _closed(first[0]) and not _closed(first[1])  # least recently used went first
        pinned = [cache.get(h) for h in holders]
        assert len(cache) == 3  # all in use by the batch: none closed
        assert not any(_closed(ipr) for ipr in pinned)
        links.dump_links(pinned[0], "scratch")
        cache.release()
        assert len(cache) == 2 and _closed(pinned[0]) and not _closed(pinned[2])
    finally:
        cache.close()


def test_scans_leave_the_socket_cache_as_it_was(holders: list[netns.NsHandle]) -> None:
    """Observing or counting many namespaces must not evict the sockets batches use."""
    cache = netns.SocketCache(netns.host_handle(), limit=2)
    try:
        kept = cache.get(holders[0])
        cache.release()
        with cache.scanning(holders[1]) as ipr:
            links.dump_links(ipr, "scratch")  # room left: cached, but first to go
        with cache.scanning(holders[2]) as temporary:
            links.dump_links(temporary, "scratch")
        assert _closed(temporary) and len(cache) == 2 and not _closed(kept)
        with cache.scanning(holders[0]) as again:
            assert again is kept
        cache.get(holders[2])
        cache.release()
        assert not _closed(kept) and len(cache) == 2  # the scanned entry went, not `kept`
    finally:
        cache.close()


# --- a sandboxed helper with a low descriptor limit ----------------------------------------


def _helper_fds(sandbox: Sandbox) -> int:
    with open(f"/proc/{sandbox.pid}/task/{sandbox.pid}/children") as handle:
        kids = handle.read().split()
    pid = int(kids[0]) if kids else sandbox.pid
    return len(os.listdir(f"/proc/{pid}/fd"))


def _low_limit_sandbox(pre: str) -> tuple[Sandbox, Signer]:
    pair = new_key()
    sandbox = make_sandbox(pair)
    sandbox.pre_script = f"ulimit -n 512 && {pre}"
    return sandbox, Signer(pair)


def test_max_size_batch_and_many_namespaces_under_a_low_fd_limit() -> None:
    """ulimit -n 512: a 256-op batch used to need 4 fds per create (EMFILE at op ~120); 300
    named namespaces made every create fail (counting opened them all, POLICY_REFUSED)."""
    sandbox, signer = _low_limit_sandbox(
        "for i in $(seq 1 300); do ip netns add rbo$i || exit 1; done"
    )
    try:
        sandbox.start()
        ops = [create(spec(f"rbm{i}a"), spec(f"rbm{i}b")) for i in range(256)]
        reply = sandbox.submit(signer.sign(signer.batch(ops)))
        assert reply.ok, reply.error
        reply = sandbox.submit(signer.sign(signer.batch([delete(f"rbm{i}a") for i in range(256)])))
        assert reply.ok, reply.error
        # The owned-link count opens all 300 namespaces, an observe scans them all.
        scan = helper_pb2.ObserveRequest(scan_named=True)
        for i in range(3):
            pair = create(spec(f"rbk{i}a"), spec(f"rbk{i}b", named(f"rbo{100 * i + 5}")))
            reply = sandbox.submit(signer.sign(signer.batch([pair], scan)))
            assert reply.ok, f"{helper_pb2.ErrorKind.Name(reply.error_kind)}: {reply.error}"
            assert {o.name for o in reply.observed} >= {f"rbk{i}a", f"rbk{i}b"}
        # Sockets are kept for at most MAX_CACHED_NAMESPACES namespaces (about 4 fds each).
        assert _helper_fds(sandbox) < netns.MAX_CACHED_NAMESPACES * 4 + 100
        assert sandbox.audit_records()[-1]["verdict"] == "applied"
    finally:
        sandbox.stop()
        shutil.rmtree(sandbox.root, ignore_errors=True)


def test_a_stranger_racing_for_a_deleted_name_survives_the_rollback() -> None:
    """The reviewer's race: a third party recreates `rbx` right after the batch deletes it;
    the batch then fails and rolls back. The stranger's rbx must survive."""
    pair = new_key()
    sandbox = make_sandbox(pair)
    signer = Signer(pair)
    try:
        sandbox.start()
        third = subprocess.Popen([
            "nsenter", "-t", str(sandbox.pid), "-n", "timeout", "30", "sh", "-c",
            "until ip link show rbx >/dev/null 2>&1; do :; done; "
            "until ip link add rbx type veth peer name rbxp 2>/dev/null; do :; done",
        ])
        ops = [create(spec("rbx"), spec("rby"))]
        ops += [create(spec(f"rbp{i}a"), spec(f"rbp{i}b")) for i in range(120)]
        ops += [delete("rbx")]
        ops += [create(spec(f"rbq{i}a"), spec(f"rbq{i}b")) for i in range(120)]
        ops += [add_address("rbnope", "10.9.9.9/24")]
        reply = sandbox.submit(signer.sign(signer.batch(ops)))
        assert not reply.ok
        third.wait(timeout=40)
        if third.returncode == 0:  # the stranger won the race: it must still be there
            assert sandbox.link("rbx") is not None and sandbox.link("rbxp") is not None
        assert sandbox.link("rby") is None and sandbox.link("rbp0a") is None
    finally:
        sandbox.stop()
        shutil.rmtree(sandbox.root, ignore_errors=True)


def test_expect_inode_is_checked_on_every_use_of_a_namespace() -> None:
    """Namespaces are opened once per batch; a later op with a wrong expect_inode still
    fails as NAMESPACE_GONE."""
    result = _scratch_executor("""
        import os
        ops = [H.Operation(create_veth_pair=H.CreateVethPair(
            a=spec("rbs"), b=H.LinkSpec(name="rbt", netns=H.NamespaceRef(name="rbns2"))))]
        assert ex.execute(batch(ops)).ok
        inode = os.stat("/run/netns/rbns2").st_ino
        good = H.NamespaceRef(name="rbns2", expect_inode=inode)
        bad = H.NamespaceRef(name="rbns2", expect_inode=inode + 1)
        ops = [H.Operation(set_link=H.SetLink(name="rbt", netns=good, up=True)),
               H.Operation(set_link=H.SetLink(name="rbt", netns=bad, mtu=1400))]
        report(ex.execute(batch(ops)), out)
    """)
    assert (result["ok"], result["index"], result["kind"]) == (False, 1, "NAMESPACE_GONE")
    assert "expected" in str(result["error"])

