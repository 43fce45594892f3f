"""EtcdWatcher against a real etcd: snapshot, live events, etcd restart, compaction."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest
from etcd_server import Etcd, wait_for

from controller import keys
from controller.etcd_watch import EtcdWatcher
from controller.events import ConfigChanges, ConfigDeleted, ConfigPut, ConfigSnapshot, Event
from tests.harness.tcp_proxy import EtcdProxy


class Desired:
    """Applies posted events the way the agent does: the resulting key -> value map."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.revisions: dict[str, int] = {}
        self.snapshots = 0
        self.posts: list[Event] = []
        self.lock = threading.Lock()

    def post(self, event: Event) -> None:
        with self.lock:
            self.posts.append(event)
        for change in event.changes if isinstance(event, ConfigChanges) else (event,):
            self._apply(change)

    def _apply(self, event: Event) -> None:
        with self.lock:
            if isinstance(event, ConfigSnapshot):
                self.snapshots += 1
                self.values = dict(event.values)
                self.revisions = dict(event.revisions)
            elif isinstance(event, ConfigPut):
                self.values[event.name] = event.raw
                self.revisions[event.name] = event.revision
            elif isinstance(event, ConfigDeleted):
                self.values.pop(event.name, None)

    def equals(self, expected: dict[str, bytes]) -> bool:
        with self.lock:
            return self.values == expected


@pytest.fixture
def watched(etcd: Etcd, label: str) -> Iterator[tuple[Desired, EtcdWatcher]]:
    desired = Desired()
    watcher = EtcdWatcher(etcd.endpoint, label, desired.post)
    try:
        yield desired, watcher
    finally:
        watcher.stop()


def test_snapshot_then_events(etcd: Etcd, label: str,
                              watched: tuple[Desired, EtcdWatcher]) -> None:
    desired, watcher = watched
    client = etcd.client()
    a = client.put(keys.config_key(label, "a"), b"1").header.revision
    client.put(keys.config_key(label, "a") + "/nested", b"ignored")
    client.put(keys.config_key("other", "x"), b"ignored")
    watcher.start()
    wait_for(lambda: desired.snapshots == 1, "the first snapshot")
    assert desired.equals({"a": b"1"})
    assert desired.revisions == {"a": a}, "each listed key with its mod_revision"
    b = client.put(keys.config_key(label, "b"), b"2").header.revision
    client.delete(keys.config_key(label, "a"))
    wait_for(lambda: desired.equals({"b": b"2"}), "put b, delete a")
    assert desired.snapshots == 1
    assert desired.revisions["b"] == b


def test_etcd_restart_loses_no_event(etcd: Etcd, label: str,
                                     watched: tuple[Desired, EtcdWatcher]) -> None:
    desired, watcher = watched
    watcher.start()
    wait_for(lambda: desired.snapshots == 1, "the first snapshot")
    client = etcd.client()
    client.put(keys.config_key(label, "before"), b"1")
    wait_for(lambda: desired.equals({"before": b"1"}), "event before restart")
    etcd.kill()
    etcd.start()
    client = etcd.client()
    expected = {"before": b"1"}
    for i in range(20):
        client.put(keys.config_key(label, f"k{i}"), str(i).encode())
        expected[f"k{i}"] = str(i).encode()
    client.delete(keys.config_key(label, "before"))
    del expected["before"]
    wait_for(lambda: desired.equals(expected), "all events after the restart")
    assert desired.snapshots == 1, "resumed by revision, not by a new listing"


def test_stream_error_resumes_at_the_next_revision(etcd: Etcd, label: str) -> None:
    """Changes made while the watcher could not read arrive as events, not as a listing:
    the watcher is held in its callback while etcd restarts and the keys change."""
    desired = Desired()
    gate, held = threading.Event(), threading.Event()
    seen: list[Event] = []

    def post(event: Event) -> None:
        seen.extend(event.changes if isinstance(event, ConfigChanges) else (event,))
        if isinstance(event, ConfigPut) and event.name == "gate":
            held.set()
            gate.wait(timeout=60)
        desired.post(event)

    watcher = EtcdWatcher(etcd.endpoint, label, post)
    try:
        watcher.start()
        wait_for(lambda: desired.snapshots == 1, "the first snapshot")
        etcd.client().put(keys.config_key(label, "gate"), b"0")
        wait_for(held.is_set, "the watcher to be held in its callback")
        gate_revision = watcher.revision
        etcd.kill()
        etcd.start()
        client = etcd.client()
        first = client.put(keys.config_key(label, "x"), b"1").header.revision
        client.put(keys.config_key("other", "x"), b"ignored")
        second = client.put(keys.config_key(label, "x"), b"2").header.revision
        client.delete(keys.config_key(label, "gate"))
        gate.set()
        wait_for(lambda: desired.equals({"x": b"2"}), "the changes made during the outage")
        assert desired.snapshots == 1, "resumed by revision, not by a new listing"
        after_gate = [e for e in seen if not isinstance(e, ConfigSnapshot)][1:]
        assert after_gate == [ConfigPut("x", b"1", first), ConfigPut("x", b"2", second),
                              ConfigDeleted("gate")]
        assert watcher.revision > gate_revision
    finally:
        gate.set()
        watcher.stop()


def test_compaction_resyncs_with_snapshot(etcd: Etcd, label: str) -> None:
    """The watcher is held inside a callback while etcd restarts and compacts past it."""
    desired = Desired()
    gate, held = threading.Event(), threading.Event()

    def post(event: Event) -> None:
        if isinstance(event, ConfigPut) and event.name == "gate":
            held.set()
            gate.wait(timeout=60)
        desired.post(event)

    watcher = EtcdWatcher(etcd.endpoint, label, post)
    try:
        watcher.start()
        wait_for(lambda: desired.snapshots == 1, "the first snapshot")
        etcd.client().put(keys.config_key(label, "gate"), b"0")
        wait_for(held.is_set, "the watcher to be held in its callback")
        etcd.kill()
        etcd.start()
        client = etcd.client()
        client.put(keys.config_key(label, "x"), b"1")
        client.put(keys.config_key(label, "x"), b"2")
        client.delete(keys.config_key(label, "gate"))
        client.put(keys.config_key(label, "y"), b"3")
        _, meta = client.get(keys.config_key(label, "y"))
        client.compact(meta.mod_revision)
        gate.set()
        wait_for(lambda: desired.equals({"x": b"2", "y": b"3"}), "state after compaction")
        assert desired.snapshots == 2, "compaction forces a full listing"
    finally:
        gate.set()
        watcher.stop()


def test_a_quiet_prefix_resumes_after_compaction_without_a_full_listing(
    etcd: Etcd, label: str, watched: tuple[Desired, EtcdWatcher]
) -> None:
    """Progress notifications (every 500 ms here) move the resume revision past other
    labels' changes, so compacting them away does not force a listing after a restart."""
    desired, watcher = watched
    client = etcd.client()
    watcher.start()
    wait_for(lambda: desired.snapshots == 1, "the first snapshot")
    for index in range(20):
        client.put(keys.config_key(f"{label}-other", f"k{index}"), b"busy")
    _, meta = client.get(keys.config_key(f"{label}-other", "k19"))
    wait_for(lambda: watcher.revision >= meta.mod_revision, "a progress notification")
    client.compact(meta.mod_revision)
    etcd.kill()
    etcd.start()
    etcd.client().put(keys.config_key(label, "after"), b"1")
    wait_for(lambda: desired.equals({"after": b"1"}), "the put after the restart")
    assert desired.snapshots == 1


def test_a_silently_dead_connection_is_noticed_and_the_watch_resumes(
    etcd: Etcd, label: str
) -> None:
    """The connection starts swallowing everything without closing; keepalive pings go
    unanswered, gRPC fails the stream and the watcher resumes over a new connection."""
    proxy = EtcdProxy(etcd.port)
    desired = Desired()
    watcher = EtcdWatcher(proxy.endpoint, label, desired.post, keepalive_s=6)
    client = etcd.client()
    try:
        watcher.start()
        wait_for(lambda: desired.snapshots == 1, "the first snapshot")
        client.put(keys.config_key(label, "a"), b"1")
        wait_for(lambda: desired.equals({"a": b"1"}), "a live event")
        proxy.blackhole()
        client.put(keys.config_key(label, "b"), b"2")
        wait_for(lambda: desired.equals({"a": b"1", "b": b"2"}),
                 "the change made after the connection went silent", timeout=40)
        assert desired.snapshots == 1, "resumed by revision, not by a new listing"
    finally:
        watcher.stop()
        proxy.close()


def test_an_outage_backs_off_and_is_logged_once(
    etcd: Etcd, label: str, watched: tuple[Desired, EtcdWatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 12 §3b: 152 warnings in a 30 s outage, one every 0.2 s, because the backoff
    restarted before every attempt. Now: one line when it starts, one when it ends, and
    attempts spaced by a growing, jittered delay."""
    desired, watcher = watched
    watcher.start()
    wait_for(lambda: desired.snapshots == 1, "the first snapshot")
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="controller.etcd_watch")
    etcd.kill()
    time.sleep(8)
    etcd.start()
    etcd.client().put(keys.config_key(label, "after"), b"1")
    wait_for(lambda: desired.equals({"after": b"1"}), "the put after the outage")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    attempts = [r for r in caplog.records if "still unreachable" in r.getMessage()]
    assert len(warnings) == 2, warnings
    assert "lost" in warnings[0] and "reachable again" in warnings[1], warnings
    # 0.2 s doubling up to 10 s, full jitter: ~log2(50) + 8/10*2 attempts, never 40.
    assert 1 <= len(attempts) <= 15, len(attempts)
    assert desired.snapshots == 1


def test_the_listing_is_paged_at_one_revision(etcd: Etcd, label: str) -> None:
    client = etcd.client()
    expected = {f"k{i:03d}": str(i).encode() for i in range(25)}
    for name, value in expected.items():
        client.put(keys.config_key(label, name), value)
    client.put(keys.config_key(label + "x", "outside"), b"x")
    desired = Desired()
    watcher = EtcdWatcher(etcd.endpoint, label, desired.post, page_size=4)
    try:
        watcher.start()
        wait_for(lambda: desired.snapshots == 1, "the paged listing")
        assert desired.equals(expected)
        client.put(keys.config_key(label, "late"), b"1")
        wait_for(lambda: desired.equals({**expected, "late": b"1"}), "a put after the listing")
    finally:
        watcher.stop()


def test_a_listing_is_parsed_on_the_watcher_s_thread(etcd: Etcd, label: str) -> None:
    """So that the agent's thread can observe the kernel meanwhile (a restart's resync)."""
    snapshots: list[ConfigSnapshot] = []
    parsed_on: set[str] = set()

    def parse(name: str, raw: bytes) -> object:
        parsed_on.add(threading.current_thread().name)
        return (name, raw.decode())

    def post(event: Event) -> None:
        if isinstance(event, ConfigSnapshot):
            snapshots.append(event)

    client = etcd.client()
    client.put(keys.config_key(label, "a"), b"1")
    client.put(keys.config_key(label, "b"), b"2")
    watcher = EtcdWatcher(etcd.endpoint, label, post, parse=parse)
    try:
        watcher.start()
        wait_for(lambda: len(snapshots) == 1, "the first snapshot")
    finally:
        watcher.stop()
    assert snapshots[0].parsed == {"a": ("a", "1"), "b": ("b", "2")}
    assert parsed_on == {"etcd-watch"}


def test_a_put_is_parsed_on_the_watcher_s_thread(etcd: Etcd, label: str) -> None:
    """A burst of puts (creating 1,000 pairs: 2,000 configs, about 100 ms) is parsed while
    the agent's thread waits on the helper's first batch, not after it (issue 16)."""
    puts: list[ConfigPut] = []
    parsed_on: set[str] = set()
    listed = threading.Event()

    def parse(name: str, raw: bytes) -> object:
        parsed_on.add(threading.current_thread().name)
        return (name, raw.decode())

    def post(event: Event) -> None:
        if isinstance(event, ConfigSnapshot):
            listed.set()
        elif isinstance(event, ConfigPut):
            puts.append(event)

    client = etcd.client()
    watcher = EtcdWatcher(etcd.endpoint, label, post, parse=parse)
    try:
        watcher.start()
        wait_for(listed.is_set, "the first snapshot")
        client.put(keys.config_key(label, "a"), b"1")
        wait_for(lambda: len(puts) == 1, "the put")
    finally:
        watcher.stop()
    assert puts[0].parsed == ("a", "1")
    assert parsed_on == {"etcd-watch"}


def test_the_changes_of_one_transaction_are_posted_together(
        etcd: Etcd, label: str, watched: tuple[Desired, EtcdWatcher]) -> None:
    """Put in one transaction, or deleted by one prefix, a burst reaches the agent as one
    event: its first reconcile plans all of it, not what the watcher had posted when the
    agent woke up (deleting 1,000 pairs was sometimes two passes; issue 16)."""
    desired, watcher = watched
    client = etcd.client()
    watcher.start()
    wait_for(lambda: desired.snapshots == 1, "the first snapshot")
    client.transaction(compare=[], success=[
        client.transactions.put(keys.config_key(label, name), b"1") for name in "abc"],
        failure=[])
    wait_for(lambda: desired.equals(dict.fromkeys("abc", b"1")), "the transaction's puts")
    client.delete_prefix(keys.config_prefix(label))
    client.put(keys.config_key(label, "d"), b"2")
    wait_for(lambda: desired.equals({"d": b"2"}), "the deletes, then one put")
    with desired.lock:
        posts = desired.posts[1:]
    assert [type(post) for post in posts] == [ConfigChanges, ConfigChanges, ConfigPut]
    assert isinstance(posts[0], ConfigChanges) and isinstance(posts[1], ConfigChanges)
    assert [change.name for change in posts[0].changes] == ["a", "b", "c"]
    assert all(isinstance(change, ConfigDeleted) for change in posts[1].changes)
    assert sorted(change.name for change in posts[1].changes) == ["a", "b", "c"]
