"""`netlinkd` with one injected fault, for tests only: it SIGKILLs itself right before its
(k+1)-th netlink request that changes the kernel, i.e. once k such requests took effect
(requests pipelined in one sendmsg all take effect before it returns: they count as one);
or, with NETLINKD_FAULT_TEAR_HEAD_AT=k, half-way through its (k+1)-th in-place write of the
audit head (the helper's only `os.pwrite`), having written the first half of it.

    NETLINKD_FAULT_KILL_AT=k python tests/faults/netlinkd_with_faults.py serve ...

Requests that only read (dumps, gets) are not counted: the kernel's state changes only at
writes, so a kill before each write (k = 0, 1, ...) covers every distinct state a batch
passes through. The production helper holds no fault code: this wrapper patches the
socket's `send` in its own process, then runs the real `netlinkd.cli.main`.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import sys
from typing import Any

KILL_AT_ENV = "NETLINKD_FAULT_KILL_AT"
TEAR_HEAD_AT_ENV = "NETLINKD_FAULT_TEAR_HEAD_AT"
_NLMSG_HEADER = struct.Struct("=IHHII")
_RTM_BASE = 16


def changes_kernel(data: bytes) -> bool:
    """Whether a netlink request is a write: RTM_NEW*/DEL*/SET*, not an RTM_GET*."""
    if len(data) < _NLMSG_HEADER.size:
        return False
    kind = int(_NLMSG_HEADER.unpack_from(data)[1])
    return kind >= _RTM_BASE and kind % 4 != 2  # RTM_GETLINK = 18, RTM_GETADDR = 22, ...


def install(kill_at: int) -> None:
    writes = 0
    original = socket.socket.send
    original_sendmsg = socket.socket.sendmsg

    def before_write(sock: socket.socket, requests: list[bytes]) -> None:
        # A pipelined sendmsg runs all its requests before the process can die: one point.
        nonlocal writes
        if sock.family == socket.AF_NETLINK and any(changes_kernel(r) for r in requests):
            if writes == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            writes += 1

    def send(self: socket.socket, data: Any, flags: int = 0) -> int:
        before_write(self, [bytes(data)])
        return original(self, data, flags)

    def sendmsg(self: socket.socket, buffers: Any, *args: Any) -> int:
        buffers = [bytes(b) for b in buffers]
        before_write(self, buffers)
        return original_sendmsg(self, buffers, *args)

    socket.socket.send = send  # type: ignore[method-assign,assignment]
    socket.socket.sendmsg = sendmsg  # type: ignore[method-assign,assignment]


def tear_head(tear_at: int) -> None:
    writes = 0
    original = os.pwrite

    def pwrite(fd: int, data: Any, offset: int) -> int:
        nonlocal writes
        if writes == tear_at:
            original(fd, data[:len(data) // 2], offset)
            os.kill(os.getpid(), signal.SIGKILL)
        writes += 1
        return original(fd, data, offset)

    os.pwrite = pwrite


if __name__ == "__main__":
    if KILL_AT_ENV in os.environ:
        install(int(os.environ[KILL_AT_ENV]))
    if TEAR_HEAD_AT_ENV in os.environ:
        tear_head(int(os.environ[TEAR_HEAD_AT_ENV]))
    from netlinkd.cli import main

    sys.exit(main())
