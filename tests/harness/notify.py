"""A `$NOTIFY_SOCKET` (sd_notify) for the controller, as systemd would give it."""

from __future__ import annotations

import socket
import struct
import threading
import time
from pathlib import Path

from .waiting import wait_until

SO_TIMESTAMP = 29  # asm-generic/socket.h (SO_TIMESTAMP_OLD); the socket module lacks it


class ReadySocket:
    """A $NOTIFY_SOCKET for the controller: when each READY=1 (sd_notify) arrived. The
    controller sends it once per start, after its first listing of etcd is applied
    (planned against an observation of the kernel, statuses published): resync done."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        # the kernel stamps each datagram when the controller sends it, so a busy test
        # thread cannot date READY=1 after what the controller did next
        self._sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
        path.chmod(0o666)  # the controller runs as uid 65534
        self._ready: list[float] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._listen, name="notify", daemon=True).start()

    def _listen(self) -> None:
        while True:
            try:
                message, ancillary, _flags, _address = self._sock.recvmsg(
                    4096, socket.CMSG_SPACE(struct.calcsize("ll")))
            except OSError:
                return
            sent = time.time()
            for level, kind, data in ancillary:
                if (level, kind) == (socket.SOL_SOCKET, SO_TIMESTAMP):
                    seconds, microseconds = struct.unpack("ll", data[:struct.calcsize("ll")])
                    sent = seconds + microseconds / 1e6
            if b"READY=1" in message.split(b"\n"):
                with self._lock:
                    self._ready.append(sent)

    def count(self) -> int:
        with self._lock:
            return len(self._ready)

    def wait(self, after: int, timeout: float) -> float:
        """The wall time READY=1 number `after` (0-based) was sent at, waiting for it."""
        wait_until(lambda: self.count() > after, timeout=timeout, interval=0.005,
                   what="the controller's READY=1")
        with self._lock:
            return self._ready[after]

    def close(self) -> None:
        self._sock.close()
