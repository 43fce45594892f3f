"""Watches owned links in every namespace the helper manages and tells subscribers what
changed, for the read-only `WatchLinks` stream.

One thread. Per watched namespace one NETLINK_ROUTE socket subscribed to link and address
events; an inotify watch on the named-namespace directory. Watched: the helper's own
namespace, and every named namespace and PID or file reference (batches name those) that
holds an owned link; a namespace without one is probed once, and again when a batch
names it (only batches make owned links).

- Only links stamped `netagent:` are reported; an address event is reported only for an
  ifindex known to be such a link. Nothing is said about any other link.
- ENOBUFS (events lost): the namespace is dumped again and an `overrun` event is sent.
- A watched namespace whose name or file vanished (inotify, or a path check every
  `POLL_S`) is dropped at once, so this monitor never keeps a dead namespace alive, and
  reported (`namespace_gone`) if it held owned links.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import resource
import select
import socket
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from netagent_api import helper_pb2
from netlinkd import links, netns
from netlinkd.errors import HelperError
from netlinkd.policy import Policy
from netlinkd.rtnl import Rtnl

log = logging.getLogger(__name__)

POLL_S = 0.5
MAX_WATCHED_NAMESPACES = 1024
MAX_SUBSCRIBERS = 16
SUBSCRIBER_QUEUE = 256
GROUPS = 0x1 | 0x10 | 0x100  # RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR = 16, 17, 20, 21
IFLA_IFNAME, IFLA_IFALIAS = 3, 20
IN_CREATE, IN_DELETE, IN_MOVED_FROM, IN_MOVED_TO = 0x100, 0x200, 0x40, 0x80
IN_NONBLOCK_CLOEXEC = os.O_NONBLOCK | os.O_CLOEXEC
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
_ATTR = struct.Struct("=HH")
_libc = ctypes.CDLL(None, use_errno=True)
Key = tuple[int, int]


@dataclass
class _Watched:
    ref: helper_pb2.NamespaceRef
    key: Key
    path: str  # stat-checked at every poll; "" for the helper's own namespace
    sock: socket.socket
    owned: dict[int, tuple[str, str]] = field(default_factory=dict)  # ifindex -> name, owner


def _attrs(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    while offset + _ATTR.size <= end:
        length, kind = _ATTR.unpack_from(data, offset)
        if length < _ATTR.size:
            break
        found[kind & 0x3FFF] = data[offset + _ATTR.size:offset + length]
        offset += (length + 3) & ~3
    return found


def _text(raw: bytes | None) -> str:
    return (raw or b"").split(b"\0", 1)[0].decode(errors="replace")


def _messages(data: bytes) -> Iterable[tuple[int, int, int]]:
    """(type, body offset, end) of each netlink message in one datagram."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, _flags, _seq, _pid = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size:
            return
        yield kind, offset + _HEADER.size, offset + length
        offset += (length + 3) & ~3


Deliver = Callable[[helper_pb2.LinkEvent | None], None]


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
    """`start()`, `watch(refs)`, `subscribe()`/`unsubscribe()`, `stop()`; thread-safe."""

    def __init__(self, policy: Policy, instance: bytes, rcvbuf: int = 0,
                 on_gone: Callable[[], None] = lambda: None) -> None:
        self._policy = policy
        self._on_gone = on_gone
        self._instance = instance
        self._rcvbuf = rcvbuf
        self._lock = threading.Lock()
        self._requested: list[tuple[helper_pb2.NamespaceRef, bool]] = []
        self._subscribers: list[Deliver] = []
        self._watched: dict[Key, _Watched] = {}
        # The changes of this round's event by (reference, ifindex): a round can hold
        # thousands of notifications for hundreds of links.
        self._changes: dict[tuple[bytes, int], helper_pb2.LinkChange] = {}
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._inotify = -1
        self._host: netns.NsHandle | None = None
        self._unowned: set[str] = set()  # paths probed and found without an owned link
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

    def watch(self, refs: Iterable[helper_pb2.NamespaceRef], changed: bool = True) -> None:
        """Watch these namespaces too (a batch named them). `changed`: the batch changed
        links there, so list them again: the kernel announces no alias set on a down link,
        so the stamp of a new link may never come as an event."""
        with self._lock:
            self._requested.extend((ref, changed) for ref in refs)
        self._wake()

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

    def _publish(self, event: helper_pb2.LinkEvent) -> None:
        event.helper_instance = self._instance
        with self._lock:
            for deliver in self._subscribers:
                deliver(event)

    # ---- the monitor thread ------------------------------------------------------------

    def _run(self) -> None:
        self._host = host = netns.host_handle()
        try:
            self._add(helper_pb2.NamespaceRef(), host, "")
            self._scan()
            while not self._stopping:
                self._round()
        except Exception:
            log.exception("the link monitor failed; link events stop (resync still runs)")
        finally:
            for watched in list(self._watched.values()):
                self._drop(watched, None)
            host.close()
            if self._inotify >= 0:
                os.close(self._inotify)

    def _round(self) -> None:
        by_fd = {w.sock.fileno(): w for w in self._watched.values()}
        fds = [self._wake_r, *by_fd, *([self._inotify] if self._inotify >= 0 else [])]
        ready, _, _ = select.select(fds, [], [], POLL_S)
        event = helper_pb2.LinkEvent()
        self._changes.clear()
        for fd in ready:
            if fd in by_fd:
                self._read(by_fd[fd], event)
            else:
                _drain(fd)
        self._scan(event)
        if event.changes or event.overrun or event.namespace_gone:
            self._publish(event)

    def _scan(self, event: helper_pb2.LinkEvent | None = None) -> None:
        """Drop namespaces whose name or file is gone, or that hold no owned link; probe
        new named namespaces and those batches named."""
        for watched in list(self._watched.values()):
            if watched.path and not _same_namespace(watched.path, watched.key):
                self._drop(watched, event)
                self._on_gone()
            elif watched.path and not watched.owned:
                self._drop(watched, None)
                self._unowned.add(watched.path)
        if self._inotify < 0:
            self._inotify = _inotify_watch(netns.NETNS_RUN_DIR)
        with self._lock:
            requested, self._requested = self._requested, []
        names = {os.path.join(netns.NETNS_RUN_DIR, n): n for n in netns.list_named()}
        self._unowned &= names.keys() | {w.path for w in self._watched.values()}
        skip = self._unowned | {w.path for w in self._watched.values()}
        named = [(helper_pb2.NamespaceRef(name=n), False) for p, n in names.items()
                 if p not in skip]
        for ref, changed in [*named, *_each_once(requested)]:
            self._try_add(ref, changed, event)

    def _try_add(self, ref: helper_pb2.NamespaceRef, changed: bool,
                 event: helper_pb2.LinkEvent | None) -> None:
        assert self._host is not None
        try:
            handle = netns.open_ref(self._policy, ref, self._host)
        except HelperError:
            return  # gone, not yet mounted, or not allowed: nothing to watch
        watched = self._watched.get(handle.key)
        if watched is not None or len(self._watched) >= self._max_watched:
            handle.close()
            if watched is not None and changed:
                self._dump(watched)
            elif watched is None:
                log.warning("watching %d namespaces already; %s is left to the resync",
                            self._max_watched, netns.describe_ref(ref))
            return
        self._unowned.discard(handle.path)
        watched = self._add(ref, handle, handle.path)
        if watched is not None and event is not None:
            # Changes between the batch that made these links and this watch went unseen.
            for index, (name, owner) in watched.owned.items():
                self._change(watched, index, name, owner, event)

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
        if self._rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf)
        sock.bind((0, GROUPS))
        sock.setblocking(False)
        watched = _Watched(ref, handle.key, path, sock)
        self._watched[handle.key] = watched
        self._dump(watched)
        return watched

    def _dump_socket(self, watched: _Watched) -> Rtnl | None:
        """A socket in the watched namespace, if its path still leads there."""
        if not watched.path:
            return Rtnl.here()
        try:
            handle = netns.open_ns_file(watched.path, follow=watched.ref.HasField("pid"))
        except HelperError:
            return None
        try:
            if handle.key != watched.key:
                return None
            return Rtnl(netns.netlink_socket_in(handle.fd))
        finally:
            handle.close()

    def _dump(self, watched: _Watched) -> None:
        """Learn which ifindexes are owned links; events queued meanwhile apply after."""
        where = netns.describe_ref(watched.ref)
        try:
            ipr = self._dump_socket(watched)
        except OSError as exc:
            log.warning("cannot list links in %s: %s", where, exc)
            return
        if ipr is None:
            return  # gone: the next scan drops it
        try:
            found = links.dump_links(ipr, where)
        except HelperError as exc:
            log.warning("cannot list links in %s: %s", where, exc)
            return
        finally:
            ipr.close()
        watched.owned = {link.index: (link.name, _owner(link.alias)) for link in found
                         if link.alias.startswith(links.ALIAS_PREFIX)}

    def _drop(self, watched: _Watched, event: helper_pb2.LinkEvent | None) -> None:
        del self._watched[watched.key]
        watched.sock.close()
        if watched.owned and event is not None:
            log.info("%s is gone; it held owned links", netns.describe_ref(watched.ref))
            event.namespace_gone.append(watched.ref)

    def _read(self, watched: _Watched, event: helper_pb2.LinkEvent) -> None:
        while True:
            try:
                data = watched.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.overruns += 1
                log.warning("netlink events lost in %s (ENOBUFS); listing its links again",
                            netns.describe_ref(watched.ref))
                self._dump(watched)
                event.overrun = True
                continue
            for kind, start, end in _messages(data):
                self._message(watched, data, kind, start, end, event)

    def _message(self, watched: _Watched, data: bytes, kind: int, start: int, end: int,
                 event: helper_pb2.LinkEvent) -> None:
        if kind in (RTM_NEWADDR, RTM_DELADDR) and end - start >= _IFADDR.size:
            index = _IFADDR.unpack_from(data, start)[4]
            if index in watched.owned:
                self._change(watched, index, *watched.owned[index], event)
        elif kind in (RTM_NEWLINK, RTM_DELLINK) and end - start >= _IFINFO.size:
            index = _IFINFO.unpack_from(data, start)[2]
            attrs = _attrs(data, start + _IFINFO.size, end)
            name, alias = _text(attrs.get(IFLA_IFNAME)), _text(attrs.get(IFLA_IFALIAS))
            # An event may predate the dump that found the link owned (the alias is set by
            # a second request of the batch): only a deletion forgets an owned link.
            known = watched.owned.pop(index, None) if kind == RTM_DELLINK \
                else watched.owned.get(index)
            stamped = alias.startswith(links.ALIAS_PREFIX)
            if stamped and kind == RTM_NEWLINK:
                watched.owned[index] = (name, _owner(alias))
            if stamped or known is not None:
                owner = _owner(alias) if stamped or known is None else known[1]
                self._change(watched, index, name, owner, event, kind == RTM_DELLINK)

    def _change(self, watched: _Watched, index: int, name: str, owner: str,
                event: helper_pb2.LinkEvent, deleted: bool = False) -> None:
        key = (watched.ref.SerializeToString(deterministic=True), index)
        change = self._changes.get(key)
        if change is not None:
            change.deleted = deleted
            return
        self._changes[key] = event.changes.add(owner=owner, name=name, ifindex=index,
                                               netns=watched.ref, deleted=deleted)


def _each_once(
    requested: list[tuple[helper_pb2.NamespaceRef, bool]],
) -> list[tuple[helper_pb2.NamespaceRef, bool]]:
    """Each reference once, changed if any request said so: a batch names a namespace
    once per link, and each request for a changed namespace lists all its links."""
    merged: dict[bytes, tuple[helper_pb2.NamespaceRef, bool]] = {}
    for ref, changed in requested:
        key = ref.SerializeToString(deterministic=True)
        merged[key] = (ref, changed or (key in merged and merged[key][1]))
    return list(merged.values())


def _owner(alias: str) -> str:
    return alias.split(":", 2)[1] if alias.count(":") >= 2 else ""


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


def _inotify_watch(directory: str) -> int:
    """An inotify fd watching names come and go in `directory`; -1 if it does not exist."""
    fd = int(_libc.inotify_init1(IN_NONBLOCK_CLOEXEC))
    if fd < 0:
        return -1
    mask = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO
    if _libc.inotify_add_watch(fd, directory.encode(), mask) < 0:
        os.close(fd)
        return -1
    return fd
