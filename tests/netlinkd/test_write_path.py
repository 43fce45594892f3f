"""One batch's write path, call by call, with the real verifier, replay guard, audit log and
executor (issue 16): the audit intent is the only fsync before the kernel is touched, the
rest follows after, and each namespace the batch names is opened once."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from trust_files import trusted_key

from netagent_api import helper_pb2
from netlinkd import audit, executor, front, netns, policy, rtnl, server, trust
from netlinkd.errors import Replay
from netlinkd.replay import STATE_FILE, ReplayGuard
from netlinkd.verify import Verified, Verifier
from tests.harness.durability import DurabilitySpy

pytestmark = pytest.mark.root
ACT = "the kernel is touched"


@pytest.fixture
def named_ns() -> Iterator[str]:
    name = f"nawp-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[server.Service, Callable[..., Verified]]]:
    private, raw_public, trust_path = trusted_key(tmp_path)
    (tmp_path / "state").mkdir()
    log = audit.AuditLog(str(tmp_path / "audit.log"), head_path=str(tmp_path / "head.json"))
    verifier = Verifier(trust.TrustStore(str(trust_path)),
                        ReplayGuard(str(tmp_path / "state"), 60), 60)
    runner = executor.Executor(policy.Policy())
    sequence = iter(range(1, 100))

    def signed(*ops: helper_pb2.Operation) -> Verified:  # as the front's screen hands it over
        batch = helper_pb2.Batch(epoch=b"w" * 16, sequence=next(sequence), owner="wp",
                                 unix_time_ms=int(time.time() * 1000), operations=ops)
        data = batch.SerializeToString()
        return verifier.authenticate(helper_pb2.SignedBatch(
            batch=data, signature=private.sign(data), key_id=trust.key_id_of(raw_public)
        ).SerializeToString())

    service = server.Service(verifier, policy.Policy(), runner, log, b"i" * 16, "test")
    try:
        yield service, signed
    finally:
        if not service._stopping:
            service.close(10)


def _delete(name: str, ns: str) -> helper_pb2.Operation:
    return helper_pb2.Operation(delete_link=helper_pb2.DeleteLink(
        name=name, netns=helper_pb2.NamespaceRef(name=ns)))


def test_the_audit_intent_is_the_only_fsync_before_acting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, named_ns: str,
    service: tuple[server.Service, Callable[..., Verified]],
) -> None:
    """Before: the replay record (file and directory) and the intent's head file were
    fsync'd before acting too, then the head was renamed into place before acting. Now the
    intent's head is written in place before acting (no sync: a kill cannot leave it
    behind) and made durable after the batch; the replay record follows the helper's idle
    time. The very first head makes the file: renamed into place, made durable after."""
    helper, signed = service
    spy = DurabilitySpy(monkeypatch)
    apply_all = executor._BatchRun.apply_all

    def acting(run: executor._BatchRun, ops: list[helper_pb2.Operation]) -> executor.Outcome:
        spy.events.append(ACT)
        return apply_all(run, ops)

    monkeypatch.setattr(executor._BatchRun, "apply_all", acting)
    log, head = tmp_path / "audit.log", tmp_path / "head.json"
    state = tmp_path / "state"
    for first in (True, False):
        reply = helper.submit(signed(_delete("nawp-none", named_ns)), None)
        assert reply.ok, reply.error
        events = spy.take()
        made = [f"fsync {head}.tmp", f"rename {head}.tmp {head}", f"fsync {tmp_path}"]
        assert events[:events.index(ACT)] == [f"fsync {log}",  # the intent; its head:
                                              *([f"rename {head}.tmp {head}"] if first else [])]
        assert events[events.index(ACT) + 1:] == [
            *(made if first else [f"fdatasync {head}"]),  # the intent's head
            f"fsync {log}", f"fdatasync {head}",  # the result and its head
        ]
    assert not (state / STATE_FILE).exists()
    helper.verifier.replay.flush()  # what the helper does once no batch came for a second
    assert spy.take() == [f"fsync {state}/{STATE_FILE}.tmp",
                          f"rename {state}/{STATE_FILE}.tmp {state}/{STATE_FILE}",
                          f"fsync {state}"]


def test_each_namespace_is_opened_once_per_batch(
    monkeypatch: pytest.MonkeyPatch, named_ns: str,
    service: tuple[server.Service, Callable[..., Verified]],
) -> None:
    helper, signed = service
    opened: list[str] = []
    open_ns_file = netns.open_ns_file

    def counting(path: str, *, follow: bool = False) -> netns.NsHandle:
        opened.append(path)
        return open_ns_file(path, follow=follow)

    monkeypatch.setattr(netns, "open_ns_file", counting)
    reply = helper.submit(signed(_delete("nawp-a", named_ns), _delete("nawp-b", named_ns)), None)
    assert reply.ok, reply.error
    assert opened == [os.path.join(netns.NETNS_RUN_DIR, named_ns)]


def test_the_named_directory_is_resolved_once_per_batch(
    monkeypatch: pytest.MonkeyPatch, named_ns: str,
    service: tuple[server.Service, Callable[..., Verified]],
) -> None:
    """Whether /var/run/netns is on the allow-list (spelled otherwise there: as spelled, it
    costs nothing) costs a realpath of it and of each allowed directory: done once by the
    batch's policy check, not again per reference (operations, observe) nor when the
    batch opens the namespace."""
    helper, signed = service
    spelled = dataclasses.replace(helper.policy, netns_dirs=("/var/run/./netns", "/run/netns"))
    monkeypatch.setattr(helper, "policy", spelled)
    monkeypatch.setattr(helper.executor, "policy", spelled)
    resolved: list[str] = []
    realpath = os.path.realpath

    def counting(path: str) -> str:
        resolved.append(path)
        return realpath(path)

    monkeypatch.setattr(os.path, "realpath", counting)
    verified = signed(_delete("nawp-a", named_ns), _delete("nawp-b", named_ns))
    verified.batch.observe.netns.add(name=named_ns)
    reply = helper.submit(verified, None)
    assert reply.ok, reply.error
    assert sorted(resolved) == sorted([netns.NETNS_RUN_DIR, *helper.policy.netns_dirs])


def test_a_batch_refused_once_admitted_uses_up_its_sequence_durably(
    tmp_path: Path, service: tuple[server.Service, Callable[..., Verified]],
) -> None:
    """No intent records a refused batch, so its replay mark is written before the reply:
    after a restart that finds nothing of it in the log, it is still a replay."""
    helper, signed = service
    refused = signed(_delete("lo", "nawp-any"))  # the policy refuses `lo`, after admission
    reply = helper.submit(refused, None)
    assert reply.error_kind == helper_pb2.POLICY_REFUSED, reply
    restarted = ReplayGuard(str(tmp_path / "state"), 60)  # the log holds no intent of it
    envelope, batch = refused.signed, refused.batch
    with pytest.raises(Replay):
        restarted.check_and_record(envelope.key_id, batch.epoch, batch.sequence,
                                   int(time.time()))


def test_the_netlink_thread_runs_the_whole_batch(
    monkeypatch: pytest.MonkeyPatch, named_ns: str,
    service: tuple[server.Service, Callable[..., Verified]],
) -> None:
    """The front hands a signed batch to the executor's netlink thread, which runs it from
    admission to reply: no second hand-off (that thread calling `Executor.run` waited for
    itself)."""
    helper, signed = service
    assert front.Front(helper)._batches is helper.executor.pool
    acted_on: list[int] = []
    apply_all = executor._BatchRun.apply_all

    def acting(run: executor._BatchRun, ops: list[helper_pb2.Operation]) -> executor.Outcome:
        acted_on.append(threading.get_ident())
        return apply_all(run, ops)

    monkeypatch.setattr(executor._BatchRun, "apply_all", acting)
    submitted_on: list[int] = []

    def submit(verified: Verified) -> helper_pb2.BatchReply:
        submitted_on.append(threading.get_ident())
        return helper.submit(verified, None)

    reply = helper.executor.pool.submit(submit, signed(_delete("nawp-x", named_ns))).result(30)
    assert reply.ok, reply.error
    assert acted_on == submitted_on


def test_closing_while_a_batch_waits_for_the_netlink_thread_refuses_it(
    named_ns: str, service: tuple[server.Service, Callable[..., Verified]],
) -> None:
    """close() takes the batch lock, then waits for the netlink thread to close the
    executor; a batch queued on that thread is refused as "stopping", never run, and
    does not wait for the lock (which would wait for close, which waits for it)."""
    helper, signed = service
    busy, go_on = threading.Event(), threading.Event()
    helper.executor.pool.submit(lambda: (busy.set(), go_on.wait(30)))
    assert busy.wait(10)
    queued = helper.executor.pool.submit(helper.submit, signed(_delete("nawp-y", named_ns)), None)
    closed: list[bool] = []
    closer = threading.Thread(target=lambda: closed.append(helper.close(10)))
    closer.start()
    deadline = time.monotonic() + 10
    while not helper._lock.locked() and time.monotonic() < deadline:
        time.sleep(0.01)
    go_on.set()
    reply = queued.result(30)
    closer.join(30)
    assert closed == [True]
    assert not reply.ok and reply.error_kind == helper_pb2.AUDIT_UNAVAILABLE
    assert "stopping" in reply.error


def test_the_pre_check_reads_while_the_intent_is_fsynced_and_nothing_changes_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, named_ns: str,
    service: tuple[server.Service, Callable[..., Verified]],
) -> None:
    """The pre-check's look-ups only read, so they run while the intent is fsync'd (before,
    after it: one wait after the other on a pair's path); no request that changes anything
    is sent until that fsync has returned."""
    helper, signed = service
    log_path = str(tmp_path / "audit.log")
    looked_up, durable = threading.Event(), threading.Event()
    overlapped: list[bool] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        first = os.readlink(f"/proc/self/fd/{fd}") == log_path and not durable.is_set()
        if first:  # the intent: waits a while for the look-ups to run meanwhile
            overlapped.append(looked_up.wait(5))
        real_fsync(fd)
        if first:
            durable.set()

    sent: list[tuple[int, bool]] = []
    answers = rtnl.Rtnl._answers

    def spying(nl: rtnl.Rtnl, requests: Sequence[rtnl.Request]) -> Iterator[Any]:
        sent.extend((request.kind, durable.is_set()) for request in requests)
        yield from answers(nl, requests)
        if any(request.kind == rtnl.RTM_GETLINK for request in requests):
            looked_up.set()

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(rtnl.Rtnl, "_answers", spying)
    ref = helper_pb2.NamespaceRef(name=named_ns)
    pair = helper_pb2.CreateVethPair(
        a=helper_pb2.LinkSpec(name="nawp-a", netns=ref, up=True, addresses=["10.9.8.1/30"]),
        b=helper_pb2.LinkSpec(name="nawp-b", netns=ref, up=True))
    reply = helper.submit(signed(helper_pb2.Operation(create_veth_pair=pair)), None)
    assert reply.ok, reply.error
    assert overlapped == [True]
    before = {kind for kind, after_intent in sent if not after_intent}
    assert before == {rtnl.RTM_GETLINK}
    assert rtnl.RTM_NEWLINK in {kind for kind, after_intent in sent if after_intent}


def test_the_socket_cache_is_swept_after_the_batch_not_before(
    monkeypatch: pytest.MonkeyPatch, named_ns: str,
    service: tuple[server.Service, Callable[..., Verified]],
) -> None:
    """The sweep stats the path of every cached namespace (64 at most): once per batch,
    after it, so not between a put and its change."""
    helper, signed = service
    events: list[str] = []
    apply_all, sweep = executor._BatchRun.apply_all, netns.SocketCache.sweep

    def acting(run: executor._BatchRun, ops: list[helper_pb2.Operation]) -> executor.Outcome:
        events.append(ACT)
        return apply_all(run, ops)

    def sweeping(cache: netns.SocketCache) -> None:
        events.append("sweep")
        sweep(cache)

    monkeypatch.setattr(executor._BatchRun, "apply_all", acting)
    monkeypatch.setattr(netns.SocketCache, "sweep", sweeping)
    reply = helper.submit(signed(_delete("nawp-s", named_ns)), None)
    assert reply.ok, reply.error
    assert events == [ACT, "sweep"]
