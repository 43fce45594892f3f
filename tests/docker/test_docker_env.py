"""The controller finds Docker through $DOCKER_HOST, as `docker` and docker.from_env() do.

dockerd listens only on its private Unix socket; a TCP forwarder on 127.0.0.1 stands in
for a remote engine, so `DOCKER_HOST=tcp://127.0.0.1:PORT` is the only way to reach it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import (
    ControllerProcess,
    EtcdKV,
    EtcdServer,
    HelperSandbox,
    KeyPair,
    link,
    links_of_pid,
    wait_until,
)
from private_dockerd import DockerDaemon

pytestmark = [pytest.mark.root, pytest.mark.docker]


class TcpToUnix:
    """Forwards each TCP connection on 127.0.0.1:<port> to a Unix socket."""

    def __init__(self, target: str) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self._target)
            self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._listener.close()
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.close()


@pytest.fixture
def tcp_docker(dockerd: DockerDaemon) -> Iterator[TcpToUnix]:
    forwarder = TcpToUnix(dockerd.socket)
    try:
        yield forwarder
    finally:
        forwarder.close()


def test_docker_host_is_honoured(
    etcd: EtcdServer, label: str, kv: EtcdKV, helper: HelperSandbox, keys: KeyPair,
    workdir: Path, tcp_docker: TcpToUnix, microservice: Callable[..., Any], ms_label: str,
) -> None:
    config = workdir / "controller.toml"
    config.write_text("[controller]\n")
    config.chmod(0o644)
    controller = ControllerProcess(
        workdir, etcd=etcd.endpoint, label=label, socket=helper.socket,
        signing_key=keys.signing_key, extra_args=("--config", str(config)),
        extra_env={"DOCKER_HOST": f"tcp://127.0.0.1:{tcp_docker.port}"},
    )
    controller.start()
    try:
        kv.put("ms0", {"name": "ms0", "type": 0, "enabled": True,
                       "ip_addresses": ["10.78.0.2/24"],
                       "namespace": {"type": 1, "microservice": ms_label},
                       "veth": {"peer_if_name": "hs0"}})
        kv.put("hs0", {"name": "hs0", "type": 0, "enabled": True,
                       "ip_addresses": ["10.78.0.1/24"], "veth": {"peer_if_name": "ms0"}})
        container = microservice(ms_label)
        pid = container.attrs["State"]["Pid"]
        wait_until(lambda: "ms0" in links_of_pid(helper, pid), timeout=60,
                   what="ms0 in the container (Docker reached through $DOCKER_HOST)",
                   describe=controller.log_text)
        assert link(helper, "hs0") is not None
        assert f"docker tcp://127.0.0.1:{tcp_docker.port}" in controller.log_text()
    finally:
        controller.stop()
