"""Watch links and addresses appear and go in network namespaces, as the kernel announces
them (rtnetlink multicast groups), and note when a set of links is ready or gone.

This is how every benchmark decides "done", whoever did the work (netagent, `ip`, the CNI
plugin): no polling, no reading of anyone's log. A background thread reads the sockets and
time-stamps each message as it arrives, so the wait costs nothing in the measurement.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from netlinkd.netns import netlink_socket_in

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
GROUPS = 0x1 | 0x10 | 0x100  # RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
IFLA_IFNAME = 3
IFA_ADDRESS = 1
IFF_UP = 0x1
RT_SCOPE_LINK = 253
SO_RCVBUFFORCE = 33
RCVBUF = 64 << 20
_HDR = struct.Struct("=IHHII")
_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBI")
_RTA = struct.Struct("=HH")


def _attrs(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    while offset + 4 <= end:
        length, kind = _RTA.unpack_from(data, offset)
        if length < 4:
            break
        found[kind & 0x3FFF] = data[offset + 4:offset + length]
        offset += (length + 3) & ~3
    return found


@dataclass
class _Namespace:
    sock: socket.socket
    names: dict[int, str] = field(default_factory=dict)  # ifindex -> name
    up: dict[int, bool] = field(default_factory=dict)
    addresses: dict[int, set[tuple[int, int, bytes]]] = field(default_factory=dict)
    by_name: dict[str, int] = field(default_factory=dict)


@dataclass
class _Waiter:
    ready: dict[tuple[str, str], int]  # (namespace, name) -> global addresses wanted
    gone: set[tuple[str, str]]
    done_at: float | None = None
    event: threading.Event = field(default_factory=threading.Event)


class KernelWatch:
    """`with KernelWatch(paths) as watch:` where `paths` maps a label to an nsfs path."""

    def __init__(self, paths: Mapping[str, str]) -> None:
        self._spaces: dict[str, _Namespace] = {}
        for label, path in paths.items():
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                sock = netlink_socket_in(fd)
            finally:
                os.close(fd)
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
            sock.bind((0, GROUPS))
            self._spaces[label] = _Namespace(sock)
        self._lock = threading.Lock()
        self._waiters: list[_Waiter] = []
        self._wake_r, self._wake_w = os.pipe()
        self._stop = False
        self.error: BaseException | None = None
        for label in self._spaces:
            self._dump(label)
        self._thread = threading.Thread(target=self._run, name="kernel-watch", daemon=True)
        self._thread.start()

    def __enter__(self) -> KernelWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop = True
        os.write(self._wake_w, b"x")
        self._thread.join()
        for space in self._spaces.values():
            space.sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # ---- waiting ------------------------------------------------------------------------

    def expect(self, ready: Mapping[tuple[str, str], int] = {},
               gone: Iterable[tuple[str, str]] = ()) -> _Waiter:
        """Register before acting: links (namespace label, name) UP with at least N
        global addresses, and links that must disappear."""
        waiter = _Waiter(dict(ready), set(gone))
        with self._lock:
            self._check(waiter, list(waiter.ready), list(waiter.gone))
            self._waiters.append(waiter)
        return waiter

    def wait(self, waiter: _Waiter, timeout: float) -> float:
        """perf_counter time at which the last expected message arrived."""
        deadline = time.monotonic() + timeout
        while not waiter.event.wait(1.0) and time.monotonic() < deadline:
            pass  # short waits: Ctrl-C is handled at once
        if not waiter.event.is_set():
            if self.error is not None:
                raise RuntimeError(f"kernel watch failed: {self.error}")
            raise TimeoutError(f"{len(waiter.ready)} links not ready and {len(waiter.gone)} "
                               f"not gone after {timeout:.0f} s, e.g. "
                               f"{sorted(waiter.ready)[:3]} {sorted(waiter.gone)[:3]}")
        with self._lock:
            self._waiters.remove(waiter)
        assert waiter.done_at is not None
        return waiter.done_at

    def count_present(self, label: str, prefix: str) -> int:
        with self._lock:
            return sum(1 for name in self._spaces[label].by_name if name.startswith(prefix))

    # ---- the reader thread -------------------------------------------------------------

    def _dump(self, label: str) -> None:
        sock = self._spaces[label].sock
        for kind, body in ((RTM_GETLINK, _IFINFO.pack(0, 0, 0, 0, 0)),
                           (RTM_GETADDR, _IFADDR.pack(0, 0, 0, 0, 0))):
            sock.send(_HDR.pack(_HDR.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP,
                                1, 0) + body)
            while not self._read(label, sock.recv(1 << 20), time.perf_counter()):
                pass

    def _run(self) -> None:
        by_fd = {space.sock.fileno(): label for label, space in self._spaces.items()}
        try:
            while not self._stop:
                readable, _, _ = select.select([self._wake_r, *by_fd], [], [])
                now = time.perf_counter()
                for fd in readable:
                    if fd in by_fd:
                        self._drain(by_fd[fd], now)
        except BaseException as exc:
            self.error = exc
            with self._lock:
                for waiter in self._waiters:
                    waiter.event.set()

    def _drain(self, label: str, now: float) -> None:
        sock = self._spaces[label].sock
        while True:
            try:
                data = sock.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            self._read(label, data, now)

    def _read(self, label: str, data: bytes, now: float) -> bool:
        """Apply one datagram; True at the end of a dump."""
        space = self._spaces[label]
        offset = 0
        done = False
        touched: list[str] = []
        gone: list[str] = []
        with self._lock:
            while offset + _HDR.size <= len(data):
                length, kind, _flags, _seq, _pid = _HDR.unpack_from(data, offset)
                body = offset + _HDR.size
                if kind in (NLMSG_DONE, NLMSG_ERROR):
                    done = True
                elif kind in (RTM_NEWLINK, RTM_DELLINK):
                    _fam, _type, index, flags, _change = _IFINFO.unpack_from(data, body)
                    name = _attrs(data, body + _IFINFO.size, offset + length).get(IFLA_IFNAME)
                    if kind == RTM_DELLINK:
                        gone += self._forget(space, index)
                    elif name is not None:
                        text = name.rstrip(b"\0").decode()
                        old = space.names.get(index)
                        if old is not None and old != text:
                            space.by_name.pop(old, None)
                        space.names[index], space.by_name[text] = text, index
                        space.up[index] = bool(flags & IFF_UP)
                        touched.append(text)
                elif kind in (RTM_NEWADDR, RTM_DELADDR):
                    family, prefix, _f, scope, index = _IFADDR.unpack_from(data, body)
                    raw = _attrs(data, body + _IFADDR.size, offset + length).get(IFA_ADDRESS)
                    if raw is not None and scope != RT_SCOPE_LINK:
                        held = space.addresses.setdefault(index, set())
                        key = (family, prefix, raw)
                        held.add(key) if kind == RTM_NEWADDR else held.discard(key)
                        if index in space.names:
                            touched.append(space.names[index])
                offset += (length + 3) & ~3
            for waiter in self._waiters:
                self._check(waiter, [(label, n) for n in touched], [(label, n) for n in gone],
                            now)
        return done

    @staticmethod
    def _forget(space: _Namespace, index: int) -> list[str]:
        name = space.names.pop(index, None)
        space.up.pop(index, None)
        space.addresses.pop(index, None)
        if name is not None and space.by_name.get(name) == index:
            del space.by_name[name]
            return [name]
        return []

    def _check(self, waiter: _Waiter, touched: list[tuple[str, str]],
               gone: list[tuple[str, str]], now: float | None = None) -> None:
        for key in touched:
            wanted = waiter.ready.get(key)
            if wanted is not None and self._is_ready(key, wanted):
                del waiter.ready[key]
        for key in list(waiter.gone) if now is None else gone:
            space = self._spaces[key[0]]
            if key in waiter.gone and key[1] not in space.by_name:
                waiter.gone.discard(key)
        if not waiter.ready and not waiter.gone and waiter.done_at is None:
            waiter.done_at = time.perf_counter() if now is None else now
            waiter.event.set()

    def _is_ready(self, key: tuple[str, str], wanted: int) -> bool:
        space = self._spaces[key[0]]
        index = space.by_name.get(key[1])
        return (index is not None and space.up.get(index, False)
                and len(space.addresses.get(index, ())) >= wanted)
