"""controller.resume: what a restarted controller takes for the state it left converged."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller import resume
from controller.resume import Converged, Resume, config_digest, namespace_key, not_quiet
from netagent_api import helper_pb2

INSTANCE = b"\x01" * 16
NS1 = helper_pb2.NamespaceRef(name="ns1")
HOST = helper_pb2.NamespaceRef()
CONFIGS = {"a": b'{"name": "a"}', "b": b'{"name": "b"}'}
REVISIONS = {"a": 5, "b": 6}
STATUSES = {"a": b'{"state": "CONFIGURED"}', "b": b'{"state": "CONFIGURED"}'}
DIGESTS = {name: resume.value_digest(raw) for name, raw in CONFIGS.items()}


def left(generation: int = 10) -> Converged:
    return Converged("vpp1", INSTANCE.hex(), generation,
                     tuple(sorted({namespace_key(HOST), namespace_key(NS1)})),
                     config_digest(CONFIGS, REVISIONS), resume.status_digest(STATUSES))


def first(generation: int = 12, instance: bytes = INSTANCE,
          quiet: tuple[tuple[helper_pb2.NamespaceRef, int, int], ...] = (
              (HOST, 0, 3), (NS1, 4, 10))) -> helper_pb2.LinkEvent:
    return helper_pb2.LinkEvent(helper_instance=instance, generation=generation, quiet=[
        helper_pb2.QuietNamespace(netns=ref, watched_since=since, last_message=last)
        for ref, since, last in quiet])


def test_quiet_namespaces_of_the_same_helper_vouch_for_the_state_left() -> None:
    assert not_quiet(left(), first()) == ""


@pytest.mark.parametrize(("event", "why"), [
    (first(instance=b"\x02" * 16), "another helper instance"),
    (first(generation=9), "a generation the helper has not reached"),
    (first(quiet=((HOST, 0, 3),)), "a namespace the helper does not watch"),
    (first(quiet=((HOST, 0, 3), (NS1, 4, 11))), "a namespace changed or watched anew since"),
    (first(quiet=((HOST, 0, 3), (NS1, 11, 0))), "a namespace changed or watched anew since"),
])
def test_anything_read_or_missed_since_vouches_for_nothing(
        event: helper_pb2.LinkEvent, why: str) -> None:
    assert not_quiet(left(), event) == why


def test_every_config_name_revision_and_value_counts() -> None:
    digest = config_digest(CONFIGS, REVISIONS)
    assert config_digest(CONFIGS, {**REVISIONS, "a": 7}) != digest  # put again, same value
    assert config_digest({**CONFIGS, "a": b'{"name": "A"}'}, REVISIONS) != digest
    assert config_digest({"a": CONFIGS["a"]}, REVISIONS) != digest
    assert config_digest({"ab": b"", "": b"ab"}, {}) != config_digest({"a": b"b", "": b"ab"}, {})


def test_a_record_is_read_back_only_if_intact(tmp_path: Path) -> None:
    path = str(tmp_path / resume.FILE_NAME)
    resume.save(path, left())
    assert resume.load(path) == left()
    assert os.stat(path).st_mode & 0o777 == 0o600
    body = json.loads(Path(path).read_text())
    body["generation"] = 11  # no longer what its check covers
    Path(path).write_text(json.dumps(body))
    assert resume.load(path) is None
    Path(path).write_text("{")
    assert resume.load(path) is None
    assert resume.load(str(tmp_path / "missing.json")) is None


@pytest.fixture
def notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    yield sock
    sock.close()


def told(sock: socket.socket) -> list[bytes]:
    found = []
    while True:
        try:
            found.append(sock.recv(64))
        except BlockingIOError:
            return found


def test_ready_is_told_once_early_when_all_three_agree(
        tmp_path: Path, notify: socket.socket) -> None:
    resume.save(str(tmp_path / resume.FILE_NAME), left())
    early = Resume(str(tmp_path), "vpp1", lambda: STATUSES)
    early.config_listed(CONFIGS, REVISIONS)
    assert told(notify) == []  # the helper has not said yet
    early.helper_said(first())
    assert told(notify) == [b"READY=1"]
    early.ready()
    assert told(notify) == []


@pytest.mark.parametrize("change", ["config", "statuses", "helper", "label"])
def test_ready_waits_for_the_agent_when_anything_differs(
        tmp_path: Path, notify: socket.socket, change: str) -> None:
    resume.save(str(tmp_path / resume.FILE_NAME), left())
    statuses = {**STATUSES, "b": b'{"state": "PENDING"}'} if change == "statuses" else STATUSES
    late = Resume(str(tmp_path), "vpp2" if change == "label" else "vpp1", lambda: statuses)
    late.config_listed({**CONFIGS, "c": b"{}"} if change == "config" else CONFIGS, REVISIONS)
    late.helper_said(first(generation=9) if change == "helper" else first())
    assert told(notify) == []
    late.ready()
    assert told(notify) == [b"READY=1"]


def test_the_first_batch_waits_for_the_decision_only_when_a_state_was_recorded(
        tmp_path: Path, notify: socket.socket) -> None:
    assert Resume(str(tmp_path), "vpp1", lambda: STATUSES).wait_decided(0)  # no record
    resume.save(str(tmp_path / resume.FILE_NAME), left())
    early = Resume(str(tmp_path), "vpp1", lambda: STATUSES)
    early.config_listed(CONFIGS, REVISIONS)
    assert not early.wait_decided(0)  # the helper has not said yet
    early.helper_said(first())
    assert early.wait_decided(0) and told(notify) == [b"READY=1"]
    late = Resume(str(tmp_path), "vpp1", lambda: STATUSES)
    late.helper_said(first(generation=9))
    assert not late.wait_decided(0)
    late.config_listed(CONFIGS, REVISIONS)
    assert late.wait_decided(0) and told(notify) == []  # changed: READY=1 after the resync


def test_the_converged_state_is_written_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / resume.FILE_NAME
    keeper = Resume(str(tmp_path), "vpp1", dict)
    keeper.converged(INSTANCE, 10, [NS1, HOST], DIGESTS, REVISIONS, STATUSES)
    assert resume.load(str(path)) == left()
    mtime = path.stat().st_mtime_ns
    keeper.converged(INSTANCE, 10, [HOST, NS1], DIGESTS, REVISIONS, STATUSES)
    assert path.stat().st_mtime_ns == mtime  # the same state: not written again
    keeper.converged(INSTANCE, 10, [NS1, HOST], DIGESTS, REVISIONS, STATUSES, held={"a"})
    keeper.converged(INSTANCE, 11, [NS1, HOST], DIGESTS, REVISIONS, STATUSES)
    assert resume.load(str(path)) == left(11)


def test_with_a_record_the_statuses_are_listed_before_the_config_listing_arrives(
        tmp_path: Path, notify: socket.socket) -> None:
    listing = threading.Event()
    threads: list[str] = []

    def statuses() -> dict[str, bytes]:
        threads.append(threading.current_thread().name)
        listing.set()
        return STATUSES

    Resume(str(tmp_path), "vpp1", statuses).start()  # no record: nothing to compare
    assert not listing.wait(0.2)
    resume.save(str(tmp_path / resume.FILE_NAME), left())
    early = Resume(str(tmp_path), "vpp1", statuses)
    early.start()
    assert listing.wait(10)  # while etcd's config listing is still awaited
    early.config_listed(CONFIGS, REVISIONS)
    early.helper_said(first())
    assert told(notify) == [b"READY=1"]
    assert threads == ["status-listing"]  # listed once, not again after the config listing


def test_statuses_not_listed_early_are_listed_after_the_config_listing(
        tmp_path: Path, notify: socket.socket) -> None:
    calls: list[str] = []

    def statuses() -> dict[str, bytes]:
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            raise OSError("etcd not up yet")
        return STATUSES

    resume.save(str(tmp_path / resume.FILE_NAME), left())
    early = Resume(str(tmp_path), "vpp1", statuses)
    early.start()
    early.helper_said(first())
    early.config_listed(CONFIGS, REVISIONS)
    assert calls == ["status-listing", threading.current_thread().name]
    assert told(notify) == [b"READY=1"]


def test_the_wait_for_the_decision_is_bounded_once_for_all_waiters(
        tmp_path: Path, notify: socket.socket) -> None:
    """`cli.run` waits before making the agent, the agent before its first batch: with the
    helper or etcd down, the first batch waited twice the bound."""
    resume.save(str(tmp_path / resume.FILE_NAME), left())
    undecided = Resume(str(tmp_path), "vpp1", lambda: STATUSES)
    started = time.monotonic()
    assert not undecided.wait_decided(0.5)
    assert not undecided.wait_decided(0.5)
    assert time.monotonic() - started < 0.9
