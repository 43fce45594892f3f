"""Watches the links this helper owns and tells `WatchLinks` subscribers what changed.

One thread; per watched namespace one NETLINK_ROUTE socket subscribed to link and address
events. Watched: the helper's own namespace and every namespace a batch names (only
batches make owned links), at most `max_watched`. A watched namespace whose name or file
vanished (checked every `POLL_S`) is dropped at once, so this monitor never keeps a dead
namespace alive, and reported (`namespace_gone`).

- Ownership is read from each link message's alias (`netagent:`). An address event names
  only an ifindex: the link is asked for once, on the same socket, and remembered. Nothing
  is said about any other link.
- ENOBUFS (events lost): what was remembered about that namespace's links is forgotten
  and an `overrun` event is sent.
- Generations tell a controller its own changes from others' (docs/ARCHITECTURE.md): each
  event carries one more than the last. `settle(batch, since)`, after the batch ran, waits
  for a round that has read every event the batch caused (the kernel queues them before
  its requests return) and gives, per namespace, the span of generations after `since`
  whose changes were all to links the batch named or to their veth peers.
- `quiet()`, for a restarted controller: per watched namespace, the generation it has been
  watched since and that of the last round that read anything from it (any message, or
  an overrun). Such a round takes a generation of its own even when it reports nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import select
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from netagent_api import helper_pb2
from netlinkd import links, netns, rtnl
from netlinkd.errors import HelperError
from netlinkd.policy import Policy, named_links

log = logging.getLogger(__name__)

POLL_S = 0.5
SETTLE_TIMEOUT_S = 1.0
MAX_WATCHED_NAMESPACES = 1024
MAX_SUBSCRIBERS = 16
SUBSCRIBER_QUEUE = 256
GROUPS = 0x1 | 0x10 | 0x100  # RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
Key = tuple[int, int]
_STAMP = links.ALIAS_PREFIX.encode()
Deliver = Callable[[helper_pb2.LinkEvent | None], None]


@dataclass(slots=True)
class _Owned:
    """What a change reports of an owned link; one is kept per link (1,000s of them)."""

    name: str
    owner: str
    peer: str
    mac: str
    mtu: int
    up: bool
    oper_state: str


@dataclass
class _Watched:
    ref: helper_pb2.NamespaceRef
    key: Key
    path: str  # stat-checked at every poll; "" for the helper's own namespace
    sock: socket.socket
    since: int  # the generation when watching began
    last: int = 0  # the generation of the last round that read anything from it
    links: dict[int, _Owned | None] = field(default_factory=dict)  # None: not owned
    # (name, peer) of each owned link changed since the last settle -> its first generation
    unsettled: dict[tuple[str, str], int] = field(default_factory=dict)


@dataclass
class _Settle:
    batch: helper_pb2.Batch | None  # None: asked by `quiet()`
    since: int
    done: threading.Event = field(default_factory=threading.Event)
    own: list[helper_pb2.OwnChanges] = field(default_factory=list)
    quiet: helper_pb2.LinkEvent = field(default_factory=helper_pb2.LinkEvent)


class StreamQueue:
    """One stream's events, handed from the monitor thread to its event loop; bounded: a
    reader that falls `SUBSCRIBER_QUEUE` events behind gets one `overrun` instead."""

    def __init__(self, loop: asyncio.AbstractEventLoop, instance: bytes) -> None:
        self._loop = loop
        self._instance = instance
        self.events: asyncio.Queue[helper_pb2.LinkEvent | None] = asyncio.Queue()

    def deliver(self, event: helper_pb2.LinkEvent | None) -> None:
        self._loop.call_soon_threadsafe(self._offer, event)

    def _offer(self, event: helper_pb2.LinkEvent | None) -> None:
        if event is not None and self.events.qsize() >= SUBSCRIBER_QUEUE:
            log.warning("a WatchLinks reader is not keeping up; it gets an overrun")
            while not self.events.empty():
                self.events.get_nowait()
            event = helper_pb2.LinkEvent(helper_instance=self._instance, overrun=True)
        self.events.put_nowait(event)


class LinkMonitor:
    """`start()`, `settle(batch)`, `subscribe()`/`unsubscribe()`, `stop()`; thread-safe."""

    def __init__(self, policy: Policy, instance: bytes, rcvbuf: int = rtnl.RCVBUF,
                 on_gone: Callable[[], None] = lambda: None) -> None:
        self._policy = policy
        self._on_gone = on_gone
        self._instance = instance
        self._rcvbuf = rcvbuf
        self._lock = threading.Lock()
        self._settling: list[_Settle] = []
        self._subscribers: list[Deliver] = []
        self._watched: dict[Key, _Watched] = {}
        self.generation = 0  # of the last event sent: a batch about to run notes it
        # This round's changes by (namespace, ifindex): a round can hold thousands of
        # notifications for hundreds of links.
        self._changes: dict[tuple[Key, int], helper_pb2.LinkChange] = {}
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._host: netns.NsHandle | None = None
        # Each watched namespace costs one descriptor: leave most of them to batches.
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self._max_watched = min(MAX_WATCHED_NAMESPACES, max(16, soft_limit // 4))
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="link-monitor", daemon=True)
        self.overruns = 0

    # ---- thread-safe entry points ------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake()
        self._thread.join(timeout=5)
        with self._lock:
            for deliver in self._subscribers:
                deliver(None)  # ends the stream

    def settle(self, batch: helper_pb2.Batch, since: int) -> list[helper_pb2.OwnChanges]:
        """Watch the namespaces `batch` named; once every event it caused is read, which
        were its own, per namespace: those after `since` (the generation when it began)
        up to the first change to a link it did not name (nor its peer). Empty if the
        monitor does not answer within `SETTLE_TIMEOUT_S` (the controller then takes the
        batch's events for news: one observe more, nothing missed)."""
        return list(self._ask(_Settle(batch, since)).own)

    def quiet(self) -> helper_pb2.LinkEvent:
        """The generation and the watched namespaces' `QuietNamespace`s, once every message
        queued before the call is read; none if the monitor does not answer in time."""
        request = self._ask(_Settle(None, 0))
        return request.quiet if request.done.is_set() else helper_pb2.LinkEvent()

    def _ask(self, request: _Settle) -> _Settle:
        with self._lock:
            if self._stopping or not self._thread.is_alive():
                return request
            self._settling.append(request)
        self._wake()
        request.done.wait(SETTLE_TIMEOUT_S)
        return request

    def subscribe(self, deliver: Deliver) -> bool:
        """Call `deliver` (quickly: it runs on the monitor thread) with each event, and
        with None when the monitor stops. False if there are too many subscribers."""
        with self._lock:
            if len(self._subscribers) >= MAX_SUBSCRIBERS or self._stopping:
                return False
            self._subscribers.append(deliver)
            return True

    def unsubscribe(self, deliver: Deliver) -> None:
        with self._lock:
            if deliver in self._subscribers:
                self._subscribers.remove(deliver)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # already woken
            os.write(self._wake_w, b"x")

    # ---- the monitor thread ------------------------------------------------------------

    def _run(self) -> None:
        self._host = host = netns.host_handle()
        try:
            self._add(helper_pb2.NamespaceRef(), host, "")
            while not self._stopping:
                self._round()
        except Exception:
            log.exception("the link monitor failed; link events stop (resync still runs)")
        finally:
            for watched in list(self._watched.values()):
                self._drop(watched, None)
            host.close()

    def _round(self) -> None:
        # Settle only requests made before this round's select: their batch's events are
        # queued by then, so this round reads them.
        with self._lock:
            settling, self._settling = self._settling, []
        by_fd = {w.sock.fileno(): w for w in self._watched.values()}
        ready, _, _ = select.select([self._wake_r, *by_fd], [], [], 0 if settling else POLL_S)
        event = helper_pb2.LinkEvent(generation=self.generation + 1)
        self._changes.clear()
        read = False
        for fd in ready:
            if fd in by_fd:
                by_fd[fd].last, read = event.generation, True
                self._read(by_fd[fd], event)
            else:
                _drain(fd)
        for watched in list(self._watched.values()):
            if watched.path and not _same_namespace(watched.path, watched.key):
                self._drop(watched, event)
                self._on_gone()
        if read or event.namespace_gone:
            self.generation = event.generation
        if event.changes or event.overrun or event.namespace_gone:
            event.helper_instance = self._instance
            with self._lock:
                for deliver in self._subscribers:
                    deliver(event)
        for request in settling:
            if request.batch is None:
                request.quiet = helper_pb2.LinkEvent(generation=self.generation, quiet=(
                    helper_pb2.QuietNamespace(netns=w.ref, watched_since=w.since,
                                              last_message=w.last)
                    for w in self._watched.values()))
            else:
                request.own = self._settle(request.batch, request.since)
            request.done.set()

    def _settle(self, batch: helper_pb2.Batch, since: int) -> list[helper_pb2.OwnChanges]:
        named: dict[Key, set[str]] = {}
        found: dict[bytes, _Watched | None] = {}  # a batch names a namespace once per link
        for ref, name in _batch_links(batch):
            key = ref.SerializeToString(deterministic=True)
            watched = found[key] = found[key] if key in found else self._watch(ref)
            if watched is not None:
                named.setdefault(watched.key, set()).add(name)
        every_name = {name for names in named.values() for name in names} - {""}
        result = []
        for watched in self._watched.values():
            names = named.get(watched.key, set())
            others = [generation for (name, peer), generation in watched.unsettled.items()
                      if generation > since and name not in names and peer not in every_name]
            mine = min(others) - 1 if others else self.generation
            if (names or watched.unsettled) and mine > since:
                result.append(helper_pb2.OwnChanges(netns=watched.ref, after=since,
                                                    through=mine))
            watched.unsettled.clear()
            if names:  # it may have stamped a link while down, which no event announces
                watched.links = {i: known for i, known in watched.links.items() if known}
        return result

    def _watch(self, ref: helper_pb2.NamespaceRef) -> _Watched | None:
        assert self._host is not None
        if not ref.WhichOneof("kind"):
            return self._watched.get(self._host.key)
        try:
            handle = netns.open_ref(self._policy, ref, self._host)
        except HelperError:
            return None  # gone, or not allowed: nothing to watch
        watched = self._watched.get(handle.key)
        if watched is not None or len(self._watched) >= self._max_watched:
            handle.close()
            if watched is None:
                log.warning("watching %d namespaces already; %s is left to the resync",
                            self._max_watched, netns.describe_ref(ref))
            return watched
        return self._add(ref, handle, handle.path)

    def _add(self, ref: helper_pb2.NamespaceRef, handle: netns.NsHandle,
             path: str) -> _Watched | None:
        """Watch the namespace of `handle`; closes it unless it is the host's. Only a
        socket is kept: an open namespace file would keep its mount busy (umount: EBUSY)."""
        try:
            sock = netns.netlink_socket_in(handle.fd) if path else socket.socket(
                socket.AF_NETLINK, socket.SOCK_DGRAM, netns.NETLINK_ROUTE)
        except OSError as exc:
            log.warning("cannot watch %s: %s", netns.describe_ref(ref), exc)
            return None
        finally:
            if path:
                handle.close()
        # A batch of 256 pairs announces about 2 MiB of events at once.
        sock.setsockopt(socket.SOL_SOCKET, rtnl.SO_RCVBUFFORCE, self._rcvbuf)
        sock.bind((0, GROUPS))
        sock.setblocking(False)
        watched = self._watched[handle.key] = _Watched(ref, handle.key, path, sock,
                                                       self.generation)
        return watched

    def _drop(self, watched: _Watched, event: helper_pb2.LinkEvent | None) -> None:
        del self._watched[watched.key]
        watched.sock.close()
        if event is not None:
            log.info("%s is gone", netns.describe_ref(watched.ref))
            event.namespace_gone.append(watched.ref)

    def _read(self, watched: _Watched, event: helper_pb2.LinkEvent) -> None:
        """Every queued message; then the links of address events not known yet are
        asked for (one send), and their answers read."""
        # ifindex -> (address, added); formatted only for a link still there and owned
        addressed: dict[int, list[tuple[rtnl.AddressInfo, bool]]] = {}
        asked = False
        while True:
            for kind, message in self._receive(watched, event):
                if kind in (rtnl.RTM_NEWADDR, rtnl.RTM_DELADDR):
                    address = rtnl.parse_address(message)
                    if address is not None and not address.kernel_link_local:
                        addressed.setdefault(address.index, []).append(
                            (address, kind == rtnl.RTM_NEWADDR))
                elif kind in (rtnl.RTM_NEWLINK, rtnl.RTM_DELLINK):
                    self._link(watched, message, kind, event)
            unknown = addressed.keys() - watched.links.keys()
            if asked or not unknown:
                break
            asked = True
            with contextlib.suppress(OSError):  # the answer is only a shortcut to ownership
                watched.sock.send(b"".join(rtnl.get_link(index=index).encode(1)
                                           for index in unknown))
        for index, addresses in addressed.items():
            owned = watched.links.get(index)
            if owned is not None:
                self._change(watched, index, owned, event, [
                    (f"{a.address}/{a.prefixlen}", added) for a, added in addresses])

    def _receive(self, watched: _Watched,
                 event: helper_pb2.LinkEvent) -> Iterator[tuple[int, bytes]]:
        while True:
            try:
                data = watched.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.overruns += 1
                log.warning("netlink events lost in %s (ENOBUFS)", netns.describe_ref(watched.ref))
                watched.links.clear()
                event.overrun = True
                continue
            for kind, _flags, _seq, message in rtnl._messages(data):
                yield kind, message

    def _link(self, watched: _Watched, message: bytes, kind: int,
              event: helper_pb2.LinkEvent) -> None:
        """A link's message: an event, or the answer about a link with an address event
        (which is that link's change). One neither owned before nor stamped now changes
        nothing reported: it is not parsed (most of a create's messages come before the
        stamp, and a link message is some 50 attributes). The deletion of an owned link
        already known is told from what is known (a group delete's thousands)."""
        index = rtnl.link_index(message)
        gone = kind == rtnl.RTM_DELLINK
        was = watched.links.pop(index, None) if gone else watched.links.get(index)
        if gone and was is not None:
            self._change(watched, index, was, event, deleted=True)
            return
        if _STAMP not in message and was is None:
            if not gone:
                watched.links[index] = None
            return
        link = rtnl.parse_link(message)
        owned = None
        if link.alias.startswith(links.ALIAS_PREFIX):
            _, owner, peer, *_ = [*link.alias.split(":", 2), "", ""]
            owned = _Owned(link.name, sys.intern(owner), peer, link.mac, link.mtu, link.up,
                           link.oper_state)
        if not gone:
            watched.links[index] = owned
        reported = owned or was
        # Not reported: a link whose state as a change tells it did not change (its group
        # set for a group delete, say). No longer stamped: deleted, to its owner.
        if reported is not None and (owned != was or gone):
            self._change(watched, index, reported, event, deleted=owned is None or gone)

    def _change(self, watched: _Watched, index: int, owned: _Owned,
                event: helper_pb2.LinkEvent, addresses: list[tuple[str, bool]] | None = None,
                deleted: bool = False) -> None:
        watched.unsettled.setdefault((owned.name, owned.peer), event.generation)
        change = self._changes.get((watched.key, index))
        if change is None:
            change = self._changes[(watched.key, index)] = event.changes.add(
                ifindex=index, netns=watched.ref)
        change.owner, change.name, change.peer = owned.owner, owned.name, owned.peer
        change.mac, change.mtu, change.up = owned.mac, owned.mtu, owned.up
        change.oper_state, change.deleted = owned.oper_state, deleted
        for address, added in addresses or ():
            (change.added_addresses if added else change.removed_addresses).append(address)


def _batch_links(batch: helper_pb2.Batch) -> Iterator[tuple[helper_pb2.NamespaceRef, str]]:
    """(namespace, link name) of every link the batch names; "" for an observed one."""
    yield from ((link.netns, link.name) for _index, link in named_links(batch))
    yield from ((ref, "") for ref in batch.observe.netns)


def _same_namespace(path: str, key: Key) -> bool:
    try:
        info = os.stat(path)
    except OSError:
        return False
    return (info.st_dev, info.st_ino) == key


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 4096):
            pass
