"""A TCP proxy in front of etcd with the two ways a network path fails.

- `blackhole()`: every connection open at that moment swallows whatever is sent either
  way, without closing anything (a dead path or a lost NAT entry). Connections made
  afterwards are forwarded as usual.
- `sever()`: every connection is closed and new ones are refused until `restore()`: to the
  client, etcd is down while the test still uses it.
"""

from __future__ import annotations

import contextlib
import socket
import threading

CHUNK = 65536


class EtcdProxy:
    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._blackholed: set[socket.socket] = set()
        self._severed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def blackhole(self) -> None:
        with self._lock:
            self._blackholed |= self._open

    def sever(self) -> None:
        with self._lock:
            self._severed = True
            opened, self._open = self._open, set()
        for sock in opened:
            _close(sock)

    def restore(self) -> None:
        with self._lock:
            self._severed = False

    def close(self) -> None:
        self.sever()
        _close(self._listener)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._severed:
                    _close(client)
                    _close(upstream)
                    continue
                self._open |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(CHUNK):
                with self._lock:
                    swallowed = source in self._blackholed
                if not swallowed:
                    sink.sendall(data)
        except OSError:
            pass
        with self._lock:
            if source in self._blackholed:
                return  # a black hole never closes anything
        _close(source)
        _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
