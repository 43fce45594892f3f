"""The helper's read-only `WatchLinks` stream against a real helper and kernel.

Owned links are made by signed batches, without a controller; foreign ones by hand. The
stream must report changes to the owned ones, and nothing about the others. Only a watch
request signed by a trusted key is served (issue 15 §1).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller.helper_client import HelperClient
from controller.ops import CreateVethPair, LinkSpec, NsRef
from controller.signer import Signer
from netagent_api import helper_pb2, watch_message
from netlinkd.link_monitor import MAX_SUBSCRIBERS
from tests.e2e.stream_reader import StreamReader
from tests.harness import HelperSandbox, KeyPair, wait_until

pytestmark = pytest.mark.root
OWNER = "tester"


def private_key(keys: KeyPair) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(keys.signing_key.read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def signer(keys: KeyPair) -> Signer:
    return Signer(private_key(keys))


@pytest.fixture
def stream(helper: HelperSandbox, keys: KeyPair) -> Iterator[StreamReader]:
    reader = StreamReader(helper.socket, signer(keys).watch_request())
    try:
        yield reader
    finally:
        reader.close()


class Owner:
    """Makes owned links the real way: signed batches through the helper's socket."""

    def __init__(self, helper: HelperSandbox, keys: KeyPair) -> None:
        self._client = HelperClient(str(helper.socket))
        self._signer = signer(keys)

    def pair(self, a: str, b: str, netns: str | None = None, up: bool = True) -> None:
        where = NsRef.named(netns) if netns else NsRef.host()
        op = CreateVethPair(LinkSpec(a, NsRef.host(), up=up), LinkSpec(b, where, up=up))
        reply = self._client.submit(self._signer.sign([op], None, OWNER))
        assert reply.ok, reply.error

    def close(self) -> None:
        self._client.close()


@pytest.fixture
def owner(helper: HelperSandbox, keys: KeyPair) -> Iterator[Owner]:
    made = Owner(helper, keys)
    try:
        yield made
    finally:
        made.close()


def test_first_message_names_the_instance(helper: HelperSandbox,
                                          stream: StreamReader) -> None:
    wait_until(lambda: stream.events, timeout=10, what="the first stream message")
    first = stream.events[0]
    assert first.helper_instance == stream.hello()
    assert not first.changes and not first.overrun


def test_owned_changes_only(helper: HelperSandbox, stream: StreamReader, owner: Owner) -> None:
    wait_until(lambda: stream.events, timeout=10, what="the first stream message")
    helper.ip("link", "add", "frgn1", "type", "veth", "peer", "name", "frgn2")
    helper.ip("link", "set", "frgn1", "alias", "someone-else")
    owner.pair("own1", "own2")
    wait_until(lambda: {"own1", "own2"} <= stream.names(), timeout=10,
               what="events for the owned pair", describe=stream.names)

    foreign_index = helper.ip_json("link", "show", "frgn1")[0]["ifindex"]
    helper.ip("link", "set", "frgn1", "mtu", "1400")
    helper.ip("addr", "add", "10.99.0.1/24", "dev", "frgn1")
    helper.ip("link", "set", "frgn1", "up")
    before = len(stream.changes())
    helper.ip("link", "set", "own1", "mtu", "1300")  # a marker after the foreign changes
    wait_until(lambda: any(c.name == "own1" for c in stream.changes()[before:]),
               timeout=10, what="the owned MTU change")
    helper.ip("link", "del", "frgn1")
    helper.ip("addr", "add", "10.99.1.1/24", "dev", "own2")
    helper.ip("link", "del", "own1")
    wait_until(lambda: any(c.name == "own1" and c.deleted for c in stream.changes()),
               timeout=10, what="the owned deletion")

    assert stream.names() <= {"own1", "own2"}
    assert foreign_index not in {c.ifindex for c in stream.changes()}
    assert all(c.owner == "tester" for c in stream.changes())


def test_deleted_named_namespace_is_reported(helper: HelperSandbox, stream: StreamReader,
                                             owner: Owner) -> None:
    owner.pair("nsown1", "nsown2", netns="evx", up=False)  # no event tells the alias
    helper.ip("addr", "add", "10.98.0.1/24", "dev", "nsown2", netns="evx")
    wait_until(lambda: {"nsown2"} <= stream.names(), timeout=10,
               what="an event for the address of nsown2")
    helper.ip("netns", "del", "evx")
    wait_until(lambda: [r for r in stream.gone() if r.name == "evx"], timeout=10,
               what="namespace evx reported gone", describe=lambda: stream.events)
    # Nothing (neither the helper's watch nor its socket cache) keeps it alive: the
    # surviving end in the helper's own namespace dies with its peer.
    wait_until(lambda: any(c.name == "nsown1" and c.deleted for c in stream.changes()),
               timeout=10, what="the surviving end deleted by the kernel")
    assert not [v for v in helper.ip_json("link", "show") if v["ifname"] == "nsown1"]


def test_a_foreign_namespace_is_not_reported(helper: HelperSandbox, stream: StreamReader,
                                             owner: Owner) -> None:
    helper.ip("netns", "add", "evy")
    helper.ip("link", "add", "fy1", "netns", "evy", "type", "veth", "peer", "name", "fy2")
    helper.ip("link", "set", "fy1", "alias", "not-netagent", netns="evy")
    owner.pair("marky1", "marky2")
    wait_until(lambda: {"marky1"} <= stream.names(), timeout=10, what="marker events")
    helper.ip("link", "set", "fy1", "up", netns="evy")
    helper.ip("netns", "del", "evy")
    helper.ip("link", "del", "marky1")
    wait_until(lambda: any(c.name == "marky1" and c.deleted for c in stream.changes()),
               timeout=10, what="marker deletion")
    assert not stream.gone()
    assert stream.names() <= {"marky1", "marky2"}


def refusal(helper: HelperSandbox, request: helper_pb2.WatchRequest) -> grpc.StatusCode:
    reader = StreamReader(helper.socket, request)
    try:
        wait_until(lambda: reader.error is not None or reader.events, timeout=10,
                   what="the watch request answered")
        assert reader.error is not None, "a watch request not signed by a trusted key is served"
        code: grpc.StatusCode = reader.error.code()
        return code
    finally:
        reader.close()


def test_only_a_trusted_key_may_watch(helper: HelperSandbox, keys: KeyPair) -> None:
    genuine = signer(keys).watch_request()
    stranger = Signer(Ed25519PrivateKey.generate())
    forged = stranger.watch_request()
    forged.key_id = genuine.key_id  # the trusted key's id over a stranger's signature
    stale_ms = time.time_ns() // 1_000_000 - 3_600_000  # far outside the time window
    stale = helper_pb2.WatchRequest(key_id=genuine.key_id, unix_time_ms=stale_ms)
    stale.signature = private_key(keys).sign(watch_message(genuine.key_id, stale_ms))
    for request in (helper_pb2.WatchRequest(), stranger.watch_request(), forged, stale):
        assert refusal(helper, request) == grpc.StatusCode.PERMISSION_DENIED
    reader = StreamReader(helper.socket, genuine)
    try:
        wait_until(lambda: reader.events, timeout=10, what="the genuine stream's first message")
        assert refusal(helper, genuine) == grpc.StatusCode.PERMISSION_DENIED  # used already
    finally:
        reader.close()


def test_keyless_watchers_cannot_hold_the_slots(helper: HelperSandbox, keys: KeyPair,
                                                owner: Owner) -> None:
    """A socket-group member without the key opens far more streams than the helper has
    watcher slots (16) and keeps them open: the genuine stream is served all the same."""
    keyless = [StreamReader(helper.socket, helper_pb2.WatchRequest()) for _ in range(40)]
    try:
        wait_until(lambda: all(r.error is not None or r.events for r in keyless), timeout=30,
                   what="every keyless watch answered")
        reader = StreamReader(helper.socket, signer(keys).watch_request())
        try:
            wait_until(lambda: reader.events or reader.error, timeout=10,
                       what="the genuine stream's first message")
            assert reader.error is None, reader.error
            owner.pair("slot1", "slot2")
            wait_until(lambda: {"slot1", "slot2"} <= reader.names(), timeout=10,
                       what="events for the owned pair", describe=reader.names)
        finally:
            reader.close()
        assert not [r for r in keyless if r.events], "a keyless watch request is served"
    finally:
        for r in keyless:
            r.close()


def test_a_signed_watcher_beyond_the_slots_is_told_so(helper: HelperSandbox,
                                                      keys: KeyPair) -> None:
    """The 16 watcher slots full of genuine streams: one more gets RESOURCE_EXHAUSTED, not
    an empty stream; once a slot is free a new genuine stream is served again."""
    sign = signer(keys)
    held = [StreamReader(helper.socket, sign.watch_request()) for _ in range(MAX_SUBSCRIBERS)]
    try:
        wait_until(lambda: all(r.events for r in held), timeout=30,
                   what="every slot's first message",
                   describe=lambda: [(len(r.events), r.error and r.error.code()) for r in held])
        assert refusal(helper, sign.watch_request()) == grpc.StatusCode.RESOURCE_EXHAUSTED
        held.pop().close()
        again = StreamReader(helper.socket, sign.watch_request())
        try:
            wait_until(lambda: again.events or again.error, timeout=10,
                       what="a stream in the freed slot")
            assert again.error is None, again.error
        finally:
            again.close()
    finally:
        for reader in held:
            reader.close()
