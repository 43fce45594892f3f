"""A throwaway etcd server (Debian etcd-server 3.4) and small key/value helpers.

One server per test session; tests keep apart by using a unique agent label each
(`new_label()`), so keys of one test never reach another test's controller.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import etcd3
import grpc
from etcd3 import etcdrpc
from etcd3.etcdrpc import kv_pb2

from .waiting import wait_until

ETCD_BINARY = "/usr/bin/etcd"
CONFIG_PREFIX = "/vnf-agent/{label}/linux/config/v1/interface/"
STATUS_PREFIX = "/vnf-agent/{label}/linux/status/v1/interface/"


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def new_label() -> str:
    """A unique agent label, e.g. `t-1a2b3c4d`."""
    return f"t-{uuid.uuid4().hex[:8]}"


def config_key(label: str, name: str) -> str:
    return CONFIG_PREFIX.format(label=label) + name


def status_key(label: str, name: str) -> str:
    return STATUS_PREFIX.format(label=label) + name


class EtcdServer:
    """`/usr/bin/etcd` on free loopback ports with a private data dir.

    `endpoint` is "127.0.0.1:PORT"; `stop()` kills the server and removes its directory.
    """

    def __init__(self, binary: str = ETCD_BINARY) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="netagent-etcd-"))
        self.port = free_port()
        self.peer_port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.log_path = self._dir / "etcd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._binary = binary

    def start(self) -> EtcdServer:
        client_url = f"http://127.0.0.1:{self.port}"
        peer_url = f"http://127.0.0.1:{self.peer_port}"
        command = [
            self._binary, "--name", "netagent-test", "--data-dir", str(self._dir / "data"),
            "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"netagent-test={peer_url}",
        ]
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_until(self._healthy, timeout=30, what=f"etcd on {self.endpoint} to be healthy",
                   describe=self.log_tail)
        return self

    def _healthy(self) -> bool:
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError(f"etcd exited early; log:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://{self.endpoint}/health", timeout=1) as reply:
                return bool(json.loads(reply.read()).get("health") == "true")
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def client(self) -> Any:
        """A fresh `etcd3` client for this server (close it when done)."""
        return etcd3.client(host="127.0.0.1", port=self.port)

    def stop(self) -> None:
        client = _clients.pop(self.endpoint, None)
        if client is not None:
            client.close()
        try:
            if self._proc is not None and self._proc.poll() is None:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=10)
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> EtcdServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


T = TypeVar("T")


@contextlib.contextmanager
def watched_values(server: EtcdServer, key: str, start_revision: int,
                   decode: Callable[[bytes], T]) -> Iterator[list[T]]:
    """Every value put on `key` from `start_revision` on, decoded, appended as it comes.

    The Watch RPC itself, as controller/etcd_watch.py does: etcd3 0.13's watch thread
    raises a NameError on `six` whenever its stream ends (an unhandled thread exception)."""
    client = server.client()
    requests: queue.Queue[Any] = queue.Queue()
    requests.put(etcdrpc.WatchRequest(create_request=etcdrpc.WatchCreateRequest(
        key=key.encode(), start_revision=start_revision)))
    stream = etcdrpc.WatchStub(client.channel).Watch(
        iter(requests.get, None), credentials=client.call_credentials, metadata=client.metadata)
    seen: list[T] = []
    failed: list[grpc.RpcError] = []

    def follow() -> None:
        try:
            for response in stream:
                seen.extend(decode(event.kv.value) for event in response.events
                            if event.type == kv_pb2.Event.PUT)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:
                failed.append(err)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        requests.put(None)
        stream.cancel()
        thread.join(timeout=5)
        client.close()
    assert not failed, f"the watch of {key} failed: {failed[0]}"


class EtcdKV:
    """The northbound keys of one agent label: config writes and status reads."""

    def __init__(self, server: EtcdServer, label: str) -> None:
        self.server = server
        self.label = label

    def put(self, name: str, value: str | bytes | dict[str, Any]) -> None:
        """Write config `name`; a dict is stored as JSON, str/bytes exactly as given."""
        etcd_put(self.server, self.label, name, value)

    def get(self, name: str) -> bytes | None:
        return etcd_get(self.server, self.label, name)

    def delete(self, name: str) -> None:
        etcd_delete(self.server, self.label, name)

    def status(self, name: str) -> dict[str, Any]:
        """The published status of `name` as a dict, or {} while none is published."""
        return status(self.server, self.label, name)

    def state(self, name: str) -> str:
        """Just the status' `state` ("" while no status is published)."""
        return str(self.status(name).get("state", ""))

    def status_revision(self, name: str) -> int:
        """The etcd mod_revision of the status key (0 while none): changes on every write."""
        _value, meta = _client_for(self.server).get(status_key(self.label, name))
        return 0 if meta is None else int(meta.mod_revision)

    def statuses(self) -> dict[str, dict[str, Any]]:
        prefix = STATUS_PREFIX.format(label=self.label)
        found: dict[str, dict[str, Any]] = {}
        for value, meta in _client_for(self.server).get_prefix(prefix):
            found[meta.key.decode()[len(prefix):]] = json.loads(value)
        return found


_clients: dict[str, Any] = {}


def _client_for(server: EtcdServer) -> Any:
    if server.endpoint not in _clients:
        _clients[server.endpoint] = server.client()
    return _clients[server.endpoint]


def etcd_put(
    server: EtcdServer, label: str, name: str, value: str | bytes | dict[str, Any]
) -> None:
    """Write the config of interface `name` for agent `label` (dicts become JSON)."""
    data = json.dumps(value) if isinstance(value, dict) else value
    _client_for(server).put(config_key(label, name), data)


def etcd_get(server: EtcdServer, label: str, name: str) -> bytes | None:
    value, _meta = _client_for(server).get(config_key(label, name))
    return value  # type: ignore[no-any-return]


def etcd_delete(server: EtcdServer, label: str, name: str) -> None:
    _client_for(server).delete(config_key(label, name))


def status(server: EtcdServer, label: str, name: str) -> dict[str, Any]:
    """The published status of `name` as a dict, or {} while none is published."""
    value, _meta = _client_for(server).get(status_key(label, name))
    if value is None:
        return {}
    parsed: dict[str, Any] = json.loads(value)
    return parsed
