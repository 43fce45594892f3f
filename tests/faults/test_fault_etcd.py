"""Faults of etcd: stopped for 30 s, and compacted past the controller's revision.

etcd down: nothing is torn down, nothing is written to the kernel, the outage is logged
once when it starts and once when it ends, the controller's /readyz says etcd is not
connected (statuses live in etcd), and a change made once etcd is back is applied.
Compaction while the controller (or its connection) is down: the deletions made meanwhile
are applied.
"""

from __future__ import annotations

import os
import re
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.faults.faultlib import (
    Desired,
    RestartableEtcd,
    audit_mark,
    ops_since,
)
from tests.harness import (
    ControllerProcess,
    HelperSandbox,
    KeyPair,
    StartController,
    free_port,
    wait_until,
)
from tests.harness.tcp_proxy import EtcdProxy

pytestmark = pytest.mark.root

OUTAGE_S = 30.0
LOST = re.compile(r"etcd watch of \S+ lost")
BACK = re.compile(r"etcd reachable again via \S+ after ([0-9.]+)s")


@pytest.fixture
def etcd(private_etcd: RestartableEtcd) -> RestartableEtcd:
    """These tests stop and compact etcd: each gets its own (kv and the controller use it)."""
    return private_etcd


def readyz(port: int) -> tuple[int, str]:
    """The controller's /readyz: (HTTP status, body)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def put_world(desired: Desired) -> None:
    desired.put_pair("ea0", "eb0", 0, netns_a="ns1", netns_b="ns2")
    desired.put_pair("ea1", "eb1", 1, netns_a="ns1", netns_b=None)
    desired.put_pair("ea2", "eb2", 2, netns_a="ns2", netns_b="ns3", mtu=4000)


def test_etcd_down_30s_tears_nothing_down_and_later_changes_apply(
    desired: Desired, etcd: RestartableEtcd, start_controller: StartController,
    helper: HelperSandbox,
) -> None:
    port = free_port()
    controller = start_controller("--metrics-address", f"127.0.0.1:{port}")
    put_world(desired)
    desired.wait_converged()
    wait_until(lambda: readyz(port) == (200, "ready\n"), timeout=30, what="/readyz ready",
               describe=lambda: readyz(port))
    links_before = desired.ifindexes()
    mark = audit_mark(helper)
    log_before = len(controller.log_text().splitlines())

    etcd.halt()
    down_until = time.monotonic() + OUTAGE_S
    wait_until(lambda: readyz(port)[0] == 503 and "etcd not connected" in readyz(port)[1],
               timeout=OUTAGE_S, what="/readyz to say etcd is not connected",
               describe=lambda: readyz(port))
    while time.monotonic() < down_until:
        assert ops_since(helper, mark) == [], "the kernel changed while etcd was down"
        assert desired.kernel_problems() == []
        time.sleep(1.0)
    outage_log = controller.log_text().splitlines()[log_before:]

    etcd.start()
    back = time.monotonic()
    desired.put("ea0", {**desired.configs["ea0"], "mtu": 1300})
    desired.wait_converged()
    recovery = time.monotonic() - back

    assert ops_since(helper, mark) == ["set_link ea0"]
    assert desired.ifindexes() == links_before
    assert controller.alive()
    wait_until(lambda: readyz(port) == (200, "ready\n"), timeout=30, what="/readyz ready again",
               describe=lambda: readyz(port))
    assert len([line for line in outage_log if LOST.search(line)]) == 1, outage_log
    log_after = controller.log_text().splitlines()[log_before:]
    assert len([line for line in log_after if LOST.search(line)]) == 1, log_after
    assert len([line for line in log_after if BACK.search(line)]) == 1, log_after
    warnings = [line for line in outage_log if "level=warning" in line]
    assert len(warnings) <= 3, "the outage is logged once per concern, not per retry: " + \
        "\n".join(warnings)
    print(f"RECOVERY etcd-down-30s change-applied-after-restart {recovery:.2f}s "
          f"(outage log lines: {len(outage_log)})")


def test_deletions_made_while_the_watch_was_cut_survive_compaction(
    desired: Desired, etcd: RestartableEtcd, helper: HelperSandbox, keys: KeyPair,
    workdir: Path, label: str,
) -> None:
    proxy = EtcdProxy(etcd.port)
    controller = ControllerProcess(workdir, etcd=proxy.endpoint, label=label,
                                   socket=helper.socket, signing_key=keys.signing_key)
    try:
        controller.start()
        put_world(desired)
        desired.wait_converged()
        proxy.sever()
        time.sleep(1.0)  # the watch has seen its stream fail
        desired.delete("ea1")
        desired.delete("eb1")
        desired.put("ea2", {**desired.configs["ea2"], "mtu": 3000})
        for round_ in range(20):  # history of other keys, all compacted away
            desired.kv.put("noise", {"round": round_})
        desired.kv.delete("noise")
        etcd.compact()
        proxy.restore()
        back = time.monotonic()
        desired.wait_converged()
        recovery = time.monotonic() - back
        assert "compacted" in controller.log_text()
        print(f"RECOVERY etcd-compacted-while-cut converged {recovery:.2f}s")
    finally:
        controller.stop()
        proxy.close()


def test_deletions_made_while_the_controller_was_down_survive_compaction(
    desired: Desired, etcd: RestartableEtcd, start_controller: StartController,
    helper: HelperSandbox,
) -> None:
    controller = start_controller()
    put_world(desired)
    desired.wait_converged()
    os.kill(controller.pid, signal.SIGKILL)
    wait_until(lambda: not controller.alive(), timeout=10, what="the controller to die")
    mark = audit_mark(helper)
    desired.delete("ea0")
    desired.delete("eb0")
    etcd.compact()
    started = time.monotonic()
    controller.start()
    desired.wait_converged()
    recovery = time.monotonic() - started
    assert [op.split()[0] for op in ops_since(helper, mark)] == ["delete_link"]
    print(f"RECOVERY etcd-compacted-controller-down converged {recovery:.2f}s")
