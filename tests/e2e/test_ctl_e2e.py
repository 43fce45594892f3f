"""`netagent-ctl` drives the whole system: the seed's commands, put, status, watch, del."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from tests.e2e.e2e_common import expect_gone, expect_link, expect_state, seed
from tests.harness import (
    FIXTURES,
    ControllerProcess,
    EtcdKV,
    EtcdServer,
    HelperSandbox,
    config_key,
    link,
    run_ctl,
    venv_tool,
    wait_until,
)

pytestmark = pytest.mark.root


def test_ctl_put_status_get_list_del(
    etcd: EtcdServer, label: str, helper: HelperSandbox, controller: ControllerProcess
) -> None:
    def ctl(*args: str) -> str:
        return run_ctl(etcd.endpoint, label, *args).stdout

    ctl("put", "veth1", str(FIXTURES / "veth1.json"))
    ctl("put", "veth2", str(FIXTURES / "veth2.json"))
    expect_link(helper, seed("veth1"), "ns1")
    expect_link(helper, seed("veth2"), "ns2")
    settled = run_ctl(etcd.endpoint, label, "status", "--wait", "--timeout", "30", "-o", "json")
    assert [(d["name"], d["state"]) for d in json.loads(settled.stdout)] == [
        ("veth1", "CONFIGURED"), ("veth2", "CONFIGURED")]
    assert json.loads(ctl("get", "veth1", "-o", "json")) == [seed("veth1")]
    assert [d["name"] for d in json.loads(ctl("list", "-o", "json"))] == ["veth1", "veth2"]

    ctl("del", "veth2")
    expect_gone(helper, "veth1", "ns1")
    assert [d["name"] for d in json.loads(ctl("list", "-o", "json"))] == ["veth1"]
    wait_until(lambda: "PENDING" in ctl("status", "veth1"), timeout=30,
               what="ctl status veth1: PENDING", describe=lambda: ctl("status", "veth1"))
    pending = run_ctl(etcd.endpoint, label, "status", "--wait", "--timeout", "1", check=False)
    assert pending.returncode == 1 and "veth1: PENDING waiting for peer veth2" in pending.stderr


def test_status_wait_returns_once_a_changed_config_is_in_the_kernel(
    etcd: EtcdServer, label: str, helper: HelperSandbox, controller: ControllerProcess
) -> None:
    """A CONFIGURED interface whose config changes is not settled until the controller has
    applied the new config: a verdict on the old one does not count."""
    run_ctl(etcd.endpoint, label, "-cvth1")
    run_ctl(etcd.endpoint, label, "-cvth2")
    run_ctl(etcd.endpoint, label, "status", "--wait", "--timeout", "60")
    changed = {**seed("veth1"), "mtu": 9000}
    os.killpg(controller.pid, signal.SIGSTOP)  # the change cannot be applied meanwhile
    try:
        revision = etcd.client().put(config_key(label, "veth1"),
                                     json.dumps(changed)).header.revision
        stale = run_ctl(etcd.endpoint, label, "status", "--wait", "--timeout", "2",
                        check=False)
    finally:
        os.killpg(controller.pid, signal.SIGCONT)
    assert stale.returncode == 1, "--wait took the verdict on the old config as settled"
    assert "veth1: CONFIGURED is of config revision" in stale.stderr, stale.stderr
    assert f"revision {revision} is not applied yet" in stale.stderr, stale.stderr

    settled = run_ctl(etcd.endpoint, label, "status", "--wait", "--timeout", "60", "veth1",
                      "-o", "json", check=False)
    view = link(helper, "veth1", "ns1")
    assert settled.returncode == 0, settled.stderr
    assert view is not None and view.mtu == 9000, view
    [shown] = json.loads(settled.stdout)
    assert (shown["state"], shown["config_revision"]) == ("CONFIGURED", revision)


def test_seed_commands_end_to_end(
    etcd: EtcdServer, label: str, helper: HelperSandbox, controller: ControllerProcess
) -> None:
    """`-cvth1`/`-cvth2` give exactly the seed's values in the kernel; `-dvth1` removes."""
    for alias in ("-cvth1", "-cvth2"):
        run_ctl(etcd.endpoint, label, alias)
    veth1 = expect_link(helper, seed("veth1"), "ns1")
    veth2 = expect_link(helper, seed("veth2"), "ns2")
    assert veth1.mac == "d2:74:8c:12:67:d2" and veth2.mac == "92:c7:42:67:ab:cd"
    assert {"192.168.22.1/24", "2001:db8::ff00:89e3:bb42/48"} == veth1.addresses
    assert {"192.168.22.2/24", "2001:842::ff00:13c7:1245/48"} == veth2.addresses
    assert run_ctl(etcd.endpoint, label, "status", "--wait", "--timeout", "30").returncode == 0

    def live_table() -> list[list[str]]:
        lines = run_ctl(etcd.endpoint, label, "status").stdout.splitlines()
        return [line.split() for line in lines]

    wait_until(lambda: live_table()[0][:5] == ["NAME", "STATE", "NETNS", "IFINDEX", "OPER"]
               and [row[4] for row in live_table()[1:]] == ["UP", "UP"], timeout=30,
               what="the kernel's view in netagent-ctl status", describe=live_table)
    table = live_table()
    assert [row[:3] for row in table[1:]] == [["veth1", "CONFIGURED", "ns1"],
                                              ["veth2", "CONFIGURED", "ns2"]], table
    shown = json.loads(run_ctl(etcd.endpoint, label, "status", "veth1", "-o", "json").stdout)
    assert shown[0]["oper_state"] == "UP" and shown[0]["namespace"] == {"name": "ns1"}
    run_ctl(etcd.endpoint, label, "-dvth1")
    expect_gone(helper, "veth2", "ns2")
    run_ctl(etcd.endpoint, label, "-dvth2")
    gone = run_ctl(etcd.endpoint, label, "status", "--wait", "--timeout", "30", check=False)
    assert gone.returncode == 1 and f"label {label} has no interface configs" in gone.stderr


def test_watch_sees_a_put_and_the_controllers_status(
    etcd: EtcdServer, label: str, kv: EtcdKV, helper: HelperSandbox,
    controller: ControllerProcess,
) -> None:
    run_ctl(etcd.endpoint, label, "-cvth1")
    _, meta = etcd.client().get(config_key(label, "veth1"))
    watcher = subprocess.Popen(  # from the put's revision on, so no change can slip by
        [venv_tool("netagent-ctl"), "watch", "--rev", str(meta.mod_revision),
         "--etcd", etcd.endpoint, "--label", label],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []
    try:
        expect_state(kv, "veth1", "PENDING")
        run_ctl(etcd.endpoint, label, "-cvth2")
        assert watcher.stdout is not None
        while not any(line.startswith("status veth2 CONFIGURED") for line in seen):
            line = watcher.stdout.readline()
            assert line, f"watch ended: {seen} {watcher.stderr.read() if watcher.stderr else ''}"
            seen.append(line.strip())
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)
    assert seen[0] == f"config veth1 put {json.dumps(seed('veth1'), sort_keys=True)}", seen
    assert any(line.startswith("config veth2 put {") for line in seen), seen
    assert any(line.startswith("status veth1 PENDING") for line in seen), seen
