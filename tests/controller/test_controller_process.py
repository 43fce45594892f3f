"""netagent-controller as a real process, unprivileged, with real etcd and a fake helper."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from etcd_server import Etcd, wait_for
from fake_helper import FakeHelperServer

from controller import keys
from controller.signer import generate_keypair

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
NOBODY = 65534


@pytest.fixture
def helper() -> Iterator[tuple[FakeHelperServer, str]]:
    """Key and socket in a directory the unprivileged controller can reach."""
    tmp_path = Path(tempfile.mkdtemp(prefix="netagent-ctl-proc-"))
    tmp_path.chmod(0o755)
    key, trust = str(tmp_path / "c.key"), str(tmp_path / "trust.keys")
    generate_keypair(key, trust)
    os.chown(key, NOBODY, NOBODY)
    public = Ed25519PublicKey.from_public_bytes(
        base64.b64decode(Path(trust).read_text().split()[1]))
    server = FakeHelperServer(str(tmp_path / "helper.sock"), public)
    server.start()
    os.chmod(server.socket_path, 0o666)
    try:
        yield server, key
    finally:
        server.stop()
        shutil.rmtree(tmp_path, ignore_errors=True)


def _status(etcd: Etcd, label: str, name: str) -> str:
    value, _ = etcd.client().get(keys.status_key(label, name))
    return "" if value is None else str(json.loads(value)["state"])


def test_controller_process_configures_and_stops(
        etcd: Etcd, label: str, helper: tuple[FakeHelperServer, str]) -> None:
    server, key = helper
    client = etcd.client()
    for name in ("veth1", "veth2"):
        client.put(keys.config_key(label, name), (FIXTURES / f"{name}.json").read_bytes())
    command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
               "--inh-caps=-all", "--bounding-set=-all",
               sys.executable, "-m", "controller", "run", "--etcd", etcd.endpoint,
               "--label", label, "--socket", server.socket_path, "--signing-key", key,
               "--no-docker", "--config", os.devnull]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True,
                               cwd=str(FIXTURES.parent.parent))
    try:
        wait_for(lambda: process.poll() is not None
                 or _status(etcd, label, "veth2") == "CONFIGURED", "veth2 CONFIGURED")
        assert process.poll() is None, process.communicate()[1]
        proc_status = Path(f"/proc/{process.pid}/status").read_text()
        assert "CapEff:\t0000000000000000" in proc_status
        assert f"Uid:\t{NOBODY}\t" in proc_status
        assert server.link_names() == {"veth1", "veth2"}
        client.delete(keys.config_key(label, "veth2"))
        wait_for(lambda: not server.link_names(), "the pair to be deleted")
        wait_for(lambda: _status(etcd, label, "veth2") == "", "veth2 status removed")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        _, errors = process.communicate(timeout=30)
    assert "agent stopping: signal SIGTERM" in errors
    assert all(batch.owner == label for batch in server.batches)
