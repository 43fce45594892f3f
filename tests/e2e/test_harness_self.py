"""Self-tests of the shared harness: etcd, the sandbox, the unprivileged wrapper."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.harness import (
    TEST_GID,
    UNPRIVILEGED_UID,
    EtcdKV,
    HelperSandbox,
    WaitTimeout,
    host_snapshot,
    link,
    unprivileged,
    wait_until,
)

pytestmark = pytest.mark.root


def test_etcd_put_get_delete_round_trip(kv: EtcdKV) -> None:
    kv.put("veth1", {"name": "veth1"})
    assert kv.get("veth1") == b'{"name": "veth1"}'
    kv.delete("veth1")
    assert kv.get("veth1") is None
    assert kv.status("veth1") == {}


def test_wait_until_returns_the_value_and_names_what_it_waited_for() -> None:
    values = iter([0, 0, 7])
    assert wait_until(lambda: next(values), timeout=5, interval=0) == 7
    with pytest.raises(WaitTimeout, match="the impossible"):
        wait_until(lambda: False, timeout=0.1, what="the impossible")


def test_sandbox_is_a_scratch_world_that_vanishes(helper: HelperSandbox) -> None:
    host_before = host_snapshot()
    helper.ip("link", "add", "hx0", "type", "veth", "peer", "name", "hx1")
    helper.run("ip", "netns", "add", "ns1")
    assert helper.netns_list() == ["ns1"]
    assert link(helper, "hx0") is not None
    assert link(helper, "lo", netns="ns1") is not None
    assert link(helper, "eth0") is None
    assert host_snapshot() == host_before
    helper.stop()
    assert host_snapshot() == host_before


def test_helper_restart_keeps_the_kernel_state(helper: HelperSandbox) -> None:
    helper.ip("link", "add", "hr0", "type", "veth", "peer", "name", "hr1")
    before = link(helper, "hr0")
    first = helper.helper_pid
    helper.restart()
    assert helper.helper_pid != first
    assert link(helper, "hr0") == before


def test_the_socket_is_reachable_only_through_the_test_group(helper: HelperSandbox) -> None:
    stat = helper.socket.stat()
    assert stat.st_gid == TEST_GID
    probe = f"test -w {helper.socket} && echo writable"
    as_group = subprocess.run(unprivileged(["sh", "-c", probe]), capture_output=True, text=True)
    assert as_group.stdout.strip() == "writable", as_group.stderr
    other = unprivileged(["sh", "-c", probe], gid=UNPRIVILEGED_UID)
    assert subprocess.run(other, capture_output=True, text=True).stdout.strip() == ""


def test_unprivileged_wrapper_has_no_capabilities(workdir: Path) -> None:
    result = subprocess.run(
        unprivileged(["sh", "-c", "id -u; grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status"]),
        capture_output=True, text=True, check=True,
    )
    lines = result.stdout.split("\n")
    assert lines[0] == str(UNPRIVILEGED_UID)
    assert all(line.split()[1] == "0000000000000000" for line in lines[1:] if line)
