"""netagent-ctl against a real etcd, run as a subprocess like an operator would."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from etcd_server import Etcd

from controller import keys

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def ctl(etcd: Etcd, label: str, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller.ctl", "--etcd", etcd.endpoint, "--label", label, *args],
        input=stdin.decode(), capture_output=True, text=True, timeout=60, check=False,
    )


def test_put_get_list_del(etcd: Etcd, label: str) -> None:
    assert ctl(etcd, label, "put", "veth1", str(FIXTURES / "veth1.json")).returncode == 0
    raw = (FIXTURES / "veth2.json").read_bytes()
    assert ctl(etcd, label, "put", "veth2", "-", stdin=raw).returncode == 0
    got = ctl(etcd, label, "get", "veth2")
    assert json.loads(got.stdout) == json.loads(raw)
    assert ctl(etcd, label, "list").stdout.split() == ["veth1", "veth2"]
    assert ctl(etcd, label, "del", "veth1").returncode == 0
    assert ctl(etcd, label, "list").stdout.split() == ["veth2"]
    missing = ctl(etcd, label, "get", "veth1")
    assert missing.returncode == 1 and "veth1 is not configured" in missing.stderr


def test_put_refuses_invalid_unless_no_validate(etcd: Etcd, label: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "bad", "type": 0, "mtu": 99999999999}')
    refused = ctl(etcd, label, "put", "bad", str(bad))
    assert refused.returncode == 1
    assert keys.config_key(label, "bad") in refused.stderr and "field" in refused.stderr
    assert refused.stderr.rstrip().endswith(
        "(the controller would mark it ERROR; --no-validate stores it anyway)")
    assert ctl(etcd, label, "list").stdout == ""
    assert ctl(etcd, label, "put", "--no-validate", "bad", str(bad)).returncode == 0
    assert ctl(etcd, label, "list").stdout.split() == ["bad"]


def test_put_type_errors_are_plain(etcd: Etcd, label: str) -> None:
    key = keys.config_key(label, "veth1")
    for value, message in [
        ('{"name": "veth1", "mtu": "abc"}', "field 'mtu': 'abc' is not an integer"),
        ('{"name": "veth1", "type": "TAP"}', "field 'type': 'TAP' is not one of VETH (0)"),
        ('{"name": "veth1", "namespace": {"type": "X"}}',
         "field 'namespace.type': 'X' is not one of PID_REF_NS (0), MICROSERVICE_REF_NS (1), "
         "NAMED_NS (2), FILE_REF_NS (3)"),
    ]:
        refused = ctl(etcd, label, "put", "veth1", "-", stdin=value.encode())
        assert refused.returncode == 1
        assert f"netagent-ctl: {key}: {message} (the controller" in refused.stderr


def test_unreachable_etcd_says_which_endpoint(label: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{probe.getsockname()[1]}"
    result = subprocess.run(
        [sys.executable, "-m", "controller.ctl", "--etcd", endpoint, "--label", label, "list"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"netagent-ctl: cannot reach etcd (tried http://{endpoint} ("), \
        result.stderr


def test_status_lines_and_json(etcd: Etcd, label: str) -> None:
    client = etcd.client()
    client.put(keys.status_key(label, "a"), b'{"state": "CONFIGURED", "reason": ""}')
    client.put(keys.status_key(label, "b"), b'{"state": "PENDING", "reason": "waiting for x"}')
    assert ctl(etcd, label, "status").stdout.splitlines() == [
        "a CONFIGURED", "b PENDING waiting for x"]
    assert json.loads(ctl(etcd, label, "status", "--json", "b").stdout) == {
        "b": {"state": "PENDING", "reason": "waiting for x"}}
    assert ctl(etcd, label, "status", "zz").returncode == 1


def test_keygen(tmp_path: Path) -> None:
    key, trust = tmp_path / "k", tmp_path / "t"
    args = [sys.executable, "-m", "controller.ctl", "keygen",
            "--signing-key", str(key), "--trust-key", str(trust)]
    assert subprocess.run(args, capture_output=True, check=False).returncode == 0
    again = subprocess.run(args, capture_output=True, text=True, check=False)
    assert again.returncode == 1 and "--force" in again.stderr
    assert subprocess.run([*args, "--force"], capture_output=True, check=False).returncode == 0
