"""netagent-ctl against a real etcd, run as a subprocess like an operator would."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
from etcd_server import Etcd

from controller import keys
from controller.ctl_seed import EXAMPLES
from controller.liveness import agent_key

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CTL = [sys.executable, "-m", "controller.ctl"]


def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CTL, *args], input=stdin.decode(), capture_output=True, text=True,
                          timeout=60, check=False)


def ctl(etcd: Etcd, label: str, *args: str, stdin: bytes = b"",
        ) -> subprocess.CompletedProcess[str]:
    """Global options last: they are accepted anywhere on the line."""
    return run(*args, "--etcd", etcd.endpoint, "--label", label, stdin=stdin)


def test_put_get_list_del(etcd: Etcd, label: str) -> None:
    assert ctl(etcd, label, "put", "veth1", str(FIXTURES / "veth1.json")).returncode == 0
    raw = (FIXTURES / "veth2.json").read_bytes()
    assert ctl(etcd, label, "put", "veth2", "-", stdin=raw).returncode == 0
    assert etcd.client().get(keys.config_key(label, "veth2"))[0] == raw  # stored as given
    got = ctl(etcd, label, "get", "veth2", "-o", "json")
    assert json.loads(got.stdout) == [json.loads(raw)]
    listed = ctl(etcd, label, "list", "-o", "json")
    assert [doc["name"] for doc in json.loads(listed.stdout)] == ["veth1", "veth2"]
    table = ctl(etcd, label, "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "PEER", "NAMESPACE", "MTU", "MAC", "ADDRESSES"]
    assert table[1].split() == ["veth1", "veth2", "named:ns1", "1500", "d2:74:8c:12:67:d2",
                                "192.168.22.1/24,2001:db8::ff00:89e3:bb42/48".replace(
                                    "2001:db8::ff00:89e3:bb42", "2001:db8:0:0:0:ff00:89e3:bb42")]
    assert yaml.safe_load(ctl(etcd, label, "get", "veth1", "-o", "yaml").stdout) == [
        json.loads((FIXTURES / "veth1.json").read_text())]
    assert ctl(etcd, label, "del", "veth1").returncode == 0
    assert [d["name"] for d in json.loads(ctl(etcd, label, "ls", "-o", "json").stdout)] == [
        "veth2"]
    missing = ctl(etcd, label, "get", "veth1")
    assert missing.returncode == 1 and "veth1 is not configured" in missing.stderr


def test_global_options_anywhere(etcd: Etcd, label: str) -> None:
    file = str(FIXTURES / "veth1.json")
    assert run("--label", label, "put", "--etcd", etcd.endpoint, "veth1", file).returncode == 0
    assert run("--etcd", etcd.endpoint, "list", "--label", label, "-o", "json").returncode == 0
    shown = run("status", "--label", label, "--etcd", etcd.endpoint)
    assert shown.stdout.split()[:2] == ["NAME", "STATE"], shown


def test_seed_commands_store_the_seed_values(etcd: Etcd, label: str) -> None:
    client = etcd.client()
    key = keys.config_key(label, "veth1")
    put = run("--etcd", etcd.endpoint, "-put", key, str(FIXTURES / "veth1.json"))
    assert put.returncode == 0, put.stderr
    assert client.get(key)[0] == (FIXTURES / "veth1.json").read_bytes()
    assert ctl(etcd, label, "-dvth1").returncode == 0
    assert client.get(key)[0] is None
    for alias, name in (("-cvth1", "veth1"), ("-cvth2", "veth2")):
        assert ctl(etcd, label, alias).returncode == 0
        stored = json.loads(client.get(keys.config_key(label, name))[0])
        assert stored == json.loads((FIXTURES / f"{name}.json").read_text()) == EXAMPLES[name]
        assert len(stored["ip_addresses"]) == 2  # IPv4 and IPv6, both kept
    assert ctl(etcd, label, "-dvth2").returncode == 0
    assert [d["name"] for d in json.loads(ctl(etcd, label, "list", "-o", "json").stdout)] == [
        "veth1"]


def test_a_full_key_gives_the_label(etcd: Etcd, label: str) -> None:
    key = keys.config_key(label, "veth1")
    assert run("--etcd", etcd.endpoint, "put", key, str(FIXTURES / "veth1.json")).returncode == 0
    assert json.loads(run("--etcd", etcd.endpoint, "get", key, "-o", "json").stdout)[0][
        "name"] == "veth1"
    clash = run("--etcd", etcd.endpoint, "--label", "other", "get", key)
    assert clash.returncode == 2 and "--label is 'other'" in clash.stderr


def test_no_arguments_lists_every_command() -> None:
    shown = run()
    assert shown.returncode == 0
    for word in ("put", "put-example", "example", "get", "del", "list", "status", "watch",
                 "keygen", "-put KEY FILE", "-cvth1", "-dvth2", "--label", "--endpoints"):
        assert word in shown.stdout, word


def test_yaml_from_a_file_and_stdin(etcd: Etcd, label: str, tmp_path: Path) -> None:
    document = dict(EXAMPLES["veth1"], phys_address="12:34:56:12:34:56")  # YAML 1.1: base 60
    text = yaml.safe_dump(document).replace("'12:34:56:12:34:56'", "12:34:56:12:34:56")
    assert "phys_address: 12:34:56:12:34:56" in text
    path = tmp_path / "veth1.yaml"
    path.write_text(text)
    assert ctl(etcd, label, "put", "veth1", str(path)).returncode == 0
    assert json.loads(etcd.client().get(keys.config_key(label, "veth1"))[0]) == document
    piped = ctl(etcd, label, "put", "veth2", "-", stdin=yaml.safe_dump(EXAMPLES["veth2"]).encode())
    assert piped.returncode == 0, piped.stderr
    assert json.loads(etcd.client().get(keys.config_key(label, "veth2"))[0]) == EXAMPLES["veth2"]


def test_invalid_input_is_refused_naming_the_field(etcd: Etcd, label: str,
                                                   tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**EXAMPLES["veth1"], "namespace": {"type": 7, "name": "x"}}))
    refused = ctl(etcd, label, "put", "veth1", str(bad))
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"netagent-ctl: {bad} refused: field 'namespace.type': unknown namespace type 7; use "
        "one of PID_REF_NS (0), MICROSERVICE_REF_NS (1), NAMED_NS (2), FILE_REF_NS (3) "
        f"(for {keys.config_key(label, 'veth1')})")
    assert "--no-validate" not in refused.stderr
    for value, message in [
        ('{"name": "veth1", "mtu": "abc"}', "field 'mtu': 'abc' is not an integer"),
        ('{"name": "veth1", "type": "TAP"}', "field 'type': 'TAP' is not one of VETH (0)"),
        ('{"name": "veth1", "mtu": 1500,', "stdin: not valid JSON: Expecting property name"),
        ("name: veth1\nname: veth2\n", "duplicate key 'name' at line 2"),
        ("name: veth1\nnamespace: {nme: ns1}\n", "field 'namespace.nme': unknown field; fix "
         "its spelling or remove it (known here: type, pid, microservice, name, filepath)"),
    ]:
        result = ctl(etcd, label, "put", "veth1", "-", stdin=value.encode())
        assert result.returncode == 1 and message in result.stderr, result.stderr
    assert ctl(etcd, label, "list", "-o", "json").stdout.strip() == "[]"
    assert ctl(etcd, label, "put", "--no-validate", "veth1", str(bad)).returncode == 0


def test_unreachable_etcd_says_which_endpoint(label: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{probe.getsockname()[1]}"
    result = run("--etcd", endpoint, "--label", label, "list")
    assert result.returncode == 1
    assert f"cannot reach etcd (tried http://{endpoint}" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _status(etcd: Etcd, label: str, name: str, state: str, reason: str = "",
            revision: int | None = None) -> None:
    """A status as a controller publishes it: of the config stored now, unless `revision`
    names another."""
    _, meta = etcd.client().get(keys.config_key(label, name))
    reflected = revision if revision is not None else meta.mod_revision if meta else 0
    etcd.client().put(keys.status_key(label, name), json.dumps(
        {"state": state, "reason": reason, "config_revision": reflected}))


def _controller_alive(etcd: Etcd, label: str) -> None:
    """The liveness key a running controller keeps (here without its lease)."""
    etcd.client().put(agent_key(label), json.dumps({"state": "OK", "start_time": 1}))


def test_status_table_json_and_exit_codes(etcd: Etcd, label: str) -> None:
    empty = ctl(etcd, label, "status")
    assert empty.returncode == 1
    assert f"label {label} has no interface configs and no statuses" in empty.stderr
    ctl(etcd, label, "-cvth1")
    ctl(etcd, label, "-cvth2")
    _status(etcd, label, "veth1", "CONFIGURED")
    dead = ctl(etcd, label, "status")
    assert dead.returncode == 1 and "veth1" in dead.stdout
    assert f"no live controller serves {label}" in dead.stderr
    _controller_alive(etcd, label)
    etcd.client().delete(keys.status_key(label, "veth1"))
    unknown = ctl(etcd, label, "status", "-o", "json")
    assert [d["state"] for d in json.loads(unknown.stdout)] == ["UNKNOWN", "UNKNOWN"]
    _status(etcd, label, "veth1", "CONFIGURED")
    _status(etcd, label, "veth2", "PENDING", "waiting for x")
    shown = ctl(etcd, label, "status")
    assert shown.returncode == 0
    assert [line.split(None, 2) for line in shown.stdout.splitlines()] == [
        ["NAME", "STATE", "REASON"], ["veth1", "CONFIGURED", "-"],
        ["veth2", "PENDING", "waiting for x"]]
    _, veth2 = etcd.client().get(keys.config_key(label, "veth2"))
    assert json.loads(ctl(etcd, label, "status", "veth2", "-o", "json").stdout) == [
        {"name": "veth2", "state": "PENDING", "reason": "waiting for x",
         "config_revision": veth2.mod_revision}]
    _status(etcd, label, "veth2", "ERROR", "broken")
    failed = ctl(etcd, label, "status")
    assert failed.returncode == 1 and "in ERROR: veth2" in failed.stderr
    assert ctl(etcd, label, "status", "veth1").returncode == 0
    assert ctl(etcd, label, "status", "zz").returncode == 1


def test_status_wait(etcd: Etcd, label: str) -> None:
    ctl(etcd, label, "-cvth1")
    _controller_alive(etcd, label)
    _status(etcd, label, "veth1", "PENDING", "waiting for peer veth2")
    timed_out = ctl(etcd, label, "status", "--wait", "--timeout", "1")
    assert timed_out.returncode == 1
    assert "not settled after 1 s: veth1: PENDING waiting for peer veth2" in timed_out.stderr
    later = threading.Timer(1.5, _status, (etcd, label, "veth1", "CONFIGURED"))
    later.start()
    try:
        settled = ctl(etcd, label, "status", "--wait", "--timeout", "30")
    finally:
        later.join()
    assert settled.returncode == 0, settled.stderr
    assert settled.stdout.splitlines()[1].split() == ["veth1", "CONFIGURED", "-"]
    _status(etcd, label, "veth1", "PENDING", "waiting for peer veth2")
    later = threading.Timer(1.5, _status, (etcd, label, "veth1", "ERROR", "no"))
    later.start()
    try:
        failed = ctl(etcd, label, "status", "--wait", "veth1")
    finally:
        later.join()
    assert failed.returncode == 1 and "in ERROR: veth1" in failed.stderr


def test_status_wait_ignores_a_verdict_on_an_older_config(etcd: Etcd, label: str) -> None:
    ctl(etcd, label, "-cvth1")
    _controller_alive(etcd, label)
    _, older = etcd.client().get(keys.config_key(label, "veth1"))
    _status(etcd, label, "veth1", "CONFIGURED")
    ctl(etcd, label, "-cvth1")  # the same config again: a new revision not yet applied
    _, newer = etcd.client().get(keys.config_key(label, "veth1"))
    stale = ctl(etcd, label, "status", "--wait", "--timeout", "1")
    assert stale.returncode == 1
    assert (f"veth1: CONFIGURED is of config revision {older.mod_revision}; revision "
            f"{newer.mod_revision} is not applied yet") in stale.stderr, stale.stderr
    later = threading.Timer(1.5, _status, (etcd, label, "veth1", "CONFIGURED"))
    later.start()
    try:
        settled = ctl(etcd, label, "status", "--wait", "--timeout", "30")
    finally:
        later.join()
    assert settled.returncode == 0, settled.stderr


def test_watch_streams_config_and_status_changes(etcd: Etcd, label: str) -> None:
    watcher = subprocess.Popen(
        [*CTL, "watch", "-o", "json", "--etcd", etcd.endpoint, "--label", label],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)  # the watch is set up once the client connected
        assert ctl(etcd, label, "-cvth1").returncode == 0
        _status(etcd, label, "veth1", "PENDING", "waiting for peer veth2")
        assert ctl(etcd, label, "del", "veth1").returncode == 0
        assert watcher.stdout is not None
        lines = [json.loads(watcher.stdout.readline()) for _ in range(3)]
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)
    assert [(d["kind"], d["name"], d["event"]) for d in lines] == [
        ("config", "veth1", "put"), ("status", "veth1", "put"), ("config", "veth1", "delete")]
    assert lines[0]["value"] == EXAMPLES["veth1"]
    assert lines[1]["value"]["state"] == "PENDING"


def test_example_and_keygen(tmp_path: Path) -> None:
    assert json.loads(run("example", "veth2").stdout) == EXAMPLES["veth2"]
    assert yaml.safe_load(run("example", "veth1", "-o", "yaml").stdout) == EXAMPLES["veth1"]
    key, trust = tmp_path / "k", tmp_path / "t"
    args = ["keygen", "--signing-key", str(key), "--trust-key", str(trust)]
    assert run(*args).returncode == 0
    again = run(*args)
    assert again.returncode == 1 and "--force" in again.stderr
    assert run(*args, "--force").returncode == 0


def test_watch_resumes_after_etcd_restarts(etcd: Etcd, label: str) -> None:
    """A change made while etcd was away from the watch is still printed, once."""
    ctl(etcd, label, "-cvth1")
    _, meta = etcd.client().get(keys.config_key(label, "veth1"))
    watcher = subprocess.Popen(
        [*CTL, "watch", "--rev", str(meta.mod_revision), "--etcd", etcd.endpoint,
         "--label", label], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout is not None
        assert watcher.stdout.readline().startswith("config veth1 put ")
        etcd.kill()
        time.sleep(2)
        etcd.start()
        assert ctl(etcd, label, "-cvth2").returncode == 0
        assert watcher.stdout.readline().startswith("config veth2 put ")
        assert ctl(etcd, label, "-dvth2").returncode == 0
        assert watcher.stdout.readline().strip() == "config veth2 deleted"
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)
    assert watcher.stderr is not None
    assert "watch interrupted" in watcher.stderr.read()


def test_a_name_that_differs_from_the_key_says_how_to_fix_it(etcd: Etcd, label: str) -> None:
    refused = ctl(etcd, label, "put", "veth9", str(FIXTURES / "veth1.json"))
    assert refused.returncode == 1
    assert ("field 'name': 'veth1' differs from the key's last segment 'veth9'; make them "
            "equal (put it as 'veth1', or set name to 'veth9')") in refused.stderr
