"""Adapter: keeps the helper's read-only `WatchLinks` stream open and posts what it says.

At every (re)connection it posts `HelperReconnected` with the helper's instance id (the
first message of a stream), so a restarted helper is resynced at once; changes to this
agent's links post `LinksChanged`, which `OwnChanges` tells from the changes of the
agent's own batches. A lost stream is reopened every `RETRY_S`, each time with a newly
signed request (the helper serves the stream only to a trusted key).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

import grpc

from controller import wire
from controller.events import Event, HelperReconnected, LinksChanged, OwnedLinkChange
from controller.ops import NsRef
from netagent_api import helper_pb2

log = logging.getLogger(__name__)

RETRY_S = 0.25
MAX_SPANS = 64  # own-change spans kept per namespace; events come within a few batches
MAX_NAMESPACES = 4096  # namespace references shared by the changes (see _Namespaces)


class HelperEvents:
    def __init__(self, client: Any, owner: str, post: Callable[[Event], None],
                 sign: Callable[[], helper_pb2.WatchRequest], retry_s: float = RETRY_S,
                 on_first: Callable[[helper_pb2.LinkEvent], None] = lambda first: None,
                 ) -> None:
        self._client = client
        self._on_first = on_first
        self._sign = sign
        self._owner = owner
        self._post = post
        self._retry_s = retry_s
        self._stopping = threading.Event()
        self._call: Any = None
        self._lost_logged = False
        self._namespaces = _Namespaces()
        self._thread = threading.Thread(target=self._run, name="helper-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        call = self._call
        if call is not None:
            call.cancel()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._call = self._client.watch_links(self._sign())
                self._follow(self._call)
            except grpc.RpcError as err:
                if not self._stopping.is_set() and not self._lost_logged:
                    code = err.code() if isinstance(err, grpc.Call) else None
                    log.warning("helper link events unavailable (%s); retrying every %.2fs",
                                code, self._retry_s)
                    self._lost_logged = True
            except Exception:
                log.exception("helper link events failed; retrying")
            self._stopping.wait(self._retry_s)

    def _follow(self, call: Any) -> None:
        first = True
        for message in call:
            if first:
                first = False
                self._lost_logged = False
                log.info("helper link events from instance %s", message.helper_instance.hex()[:12])
                self._on_first(message)
                self._post(HelperReconnected(message.helper_instance, message.generation))
                continue
            changed = self._changed(message)
            if changed is not None:
                self._post(changed)

    def _changed(self, message: helper_pb2.LinkEvent) -> LinksChanged | None:
        mine = tuple(_owned(change, message.generation, self._namespaces)
                     for change in message.changes if change.owner == self._owner)
        gone = tuple(wire.ns_from_proto(ref).describe() for ref in message.namespace_gone)
        if not mine and not gone and not message.overrun:
            return None
        return LinksChanged(mine, message.overrun, gone, message.helper_instance)


class OwnChanges:
    """Tells the link events of this agent's own batches from news: each batch reply says,
    per namespace, which generations of events were its own (docs/PERFORMANCE.md)."""

    def __init__(self) -> None:
        self._instance = b""
        self._mine: dict[bytes, list[tuple[int, int]]] = {}

    def replied(self, reply: helper_pb2.BatchReply) -> None:
        if reply.helper_instance != self._instance:
            self._instance, self._mine = reply.helper_instance, {}
        for own in reply.own_changes:
            spans = self._mine.setdefault(_key(own.netns), [])
            spans.append((own.after, own.through))
            del spans[:-MAX_SPANS]

    def news(self, event: LinksChanged) -> tuple[OwnedLinkChange, ...] | None:
        """The changes no batch of this agent made; None if the event cannot be followed
        change by change (events lost, a namespace gone, another helper instance)."""
        if event.overrun or event.namespaces_gone or event.instance != self._instance:
            return None
        return tuple(change for change in event.changes if not any(
            after < change.generation <= through
            for after, through in self._mine.get(change.watched_as, ())))


class _Namespaces:
    """One NsRef and one serialized reference per namespace, shared by every change in it:
    the changes of a burst wait in the agent's queue (creating 5,000 pairs: tens of
    thousands), and a copy of both per change was a third of their memory."""

    def __init__(self) -> None:
        self._known: dict[bytes, tuple[NsRef, bytes]] = {}

    def of(self, ref: helper_pb2.NamespaceRef) -> tuple[NsRef, bytes]:
        key = _key(ref)
        known = self._known.get(key)
        if known is None:
            if len(self._known) >= MAX_NAMESPACES:
                self._known.clear()
            known = self._known[key] = (wire.ns_from_proto(ref), key)
        return known


def _owned(change: helper_pb2.LinkChange, generation: int,
           namespaces: _Namespaces) -> OwnedLinkChange:
    netns, watched_as = namespaces.of(change.netns)
    # interned: the changes of one link wait in the queue together, two or three a link
    return OwnedLinkChange(
        name=sys.intern(change.name), netns=netns, watched_as=watched_as,
        generation=generation, ifindex=change.ifindex, mac=sys.intern(change.mac),
        mtu=change.mtu, up=change.up, oper_state=sys.intern(change.oper_state),
        peer=sys.intern(change.peer), deleted=change.deleted,
        added_addresses=tuple(map(sys.intern, change.added_addresses)),
        removed_addresses=tuple(map(sys.intern, change.removed_addresses)))


def _key(ref: helper_pb2.NamespaceRef) -> bytes:
    return ref.SerializeToString(deterministic=True)
