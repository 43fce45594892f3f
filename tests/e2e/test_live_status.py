"""Issue 13: live interface state and statistics in the status keys, end to end."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.e2e.e2e_common import expect_link, named_ns, seed, veth_config
from tests.harness import (
    EtcdKV,
    HelperSandbox,
    StartController,
    intents_changing,
    records,
    status_key,
    wait_until,
    watched_values,
)

pytestmark = pytest.mark.root

NO_RESYNC = ("--resync-interval", "600")
PING = """
import socket, struct, sys
target, count = sys.argv[1], int(sys.argv[2])
with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
    sock.settimeout(2)
    for seq in range(count):
        header = struct.pack("!BBHHH", 8, 0, 0, 0x4e41, seq)
        total = sum(struct.unpack("!4H", header))
        total = (total & 0xFFFF) + (total >> 16)
        sock.sendto(struct.pack("!BBHHH", 8, 0, ~total & 0xFFFF, 0x4e41, seq), (target, 0))
        while sock.recvfrom(256)[0][20] != 0:  # wait for the echo reply
            pass
"""  # ping(8) as ten lines: the test image has no iputils


@contextmanager
def status_history(kv: EtcdKV, name: str) -> Iterator[list[dict[str, Any]]]:
    """Every value the status of `name` takes from now on (an etcd watch, so none is
    missed however briefly it lasts)."""
    # From the revision after the current value: the watch starts asynchronously, and a
    # value written before it is registered must not be missed.
    with watched_values(kv.server, status_key(kv.label, name),
                        kv.status_revision(name) + 1, json.loads) as seen:
        yield seen
        # A caller that saw a value with a read may leave before the watch delivered it.
        current = kv.status(name)
        if current:
            wait_until(lambda: current in seen, timeout=10,
                       what=f"the watch of {name}'s status to deliver {current}")


def wait_status(kv: EtcdKV, name: str, test: Callable[[dict[str, Any]], bool],
                what: str, timeout: float = 30) -> dict[str, Any]:
    def passing() -> dict[str, Any] | None:
        status = kv.status(name)
        return status if test(status) else None

    found = wait_until(passing, timeout=timeout, what=what, describe=lambda: kv.status(name))
    assert found is not None
    return found


def put_seed(kv: EtcdKV, helper: HelperSandbox) -> None:
    kv.put("veth1", seed("veth1"))
    kv.put("veth2", seed("veth2"))
    expect_link(helper, seed("veth1"), "ns1")
    expect_link(helper, seed("veth2"), "ns2")


def test_status_carries_kernel_facts_and_follows_the_oper_state(
    kv: EtcdKV, helper: HelperSandbox, start_controller: StartController
) -> None:
    start_controller(*NO_RESYNC, "--stats-interval", "1")
    put_seed(kv, helper)
    up = wait_status(kv, "veth1", lambda s: s.get("oper_state") == "UP" and "statistics" in s,
                     "veth1 UP with statistics")
    kernel = helper.ip_json("link", "show", "veth1", netns="ns1")[0]
    assert up["state"] == "CONFIGURED" and up["reason"] == ""
    assert up["kernel_name"] == "veth1" and up["namespace"] == {"name": "ns1"}
    assert up["ifindex"] == kernel["ifindex"]
    assert set(up["statistics"]) == {f"{d}_{k}" for d in ("rx", "tx")
                                     for k in ("packets", "bytes", "errors", "dropped")}

    wait_status(kv, "veth2", lambda s: s.get("oper_state") == "UP", "veth2 UP")  # settled
    with status_history(kv, "veth2") as history:
        helper.ip("link", "set", "veth2", "down", netns="ns2")  # veth1's peer, by hand
        wait_until(lambda: any(s.get("oper_state") == "DOWN" for s in history), timeout=10,
                   interval=0.01, what="veth2's oper state DOWN", describe=lambda: history)
        # The agent puts veth2 back up (drift), and the status follows.
        wait_status(kv, "veth2", lambda s: s.get("oper_state") == "UP", "veth2 UP again")
    down_at = next(i for i, s in enumerate(history) if s.get("oper_state") == "DOWN")
    assert all(s["state"] == "CONFIGURED" for s in history[down_at:])
    wait_status(kv, "veth1", lambda s: s.get("oper_state") == "UP", "veth1 UP")


def test_a_creation_publishes_one_final_state(
    kv: EtcdKV, helper: HelperSandbox, start_controller: StartController
) -> None:
    start_controller(*NO_RESYNC, "--stats-interval", "0")
    wait_until(lambda: records(helper.audit_log), what="the controller's first observe")
    with status_history(kv, "veth2") as history:
        kv.put("veth2", seed("veth2"))
        wait_status(kv, "veth2", lambda s: s.get("state") == "PENDING", "veth2 PENDING")
        kv.put("veth1", seed("veth1"))
        wait_status(kv, "veth2", lambda s: s.get("oper_state") == "UP", "veth2 UP")
        time.sleep(3)  # past the settle window: nothing else may come
    assert [s["state"] for s in history] == ["PENDING", "CONFIGURED"], history
    assert history[-1]["oper_state"] == "UP" and "statistics" not in history[-1]


def test_counters_grow_after_a_ping(
    kv: EtcdKV, helper: HelperSandbox, start_controller: StartController
) -> None:
    start_controller(*NO_RESYNC, "--stats-interval", "0.5")
    put_seed(kv, helper)
    before = wait_status(kv, "veth2", lambda s: "statistics" in s, "veth2 statistics")
    sent = wait_status(kv, "veth1", lambda s: "statistics" in s, "veth1 statistics")
    helper.run("ip", "netns", "exec", "ns1", sys.executable, "-c", PING, "192.168.22.2", "5")

    def grown(status: dict[str, Any], old: dict[str, Any], field: str) -> bool:
        return bool(status.get("statistics", {}).get(field, 0)
                    >= old["statistics"][field] + 5)

    wait_status(kv, "veth1", lambda s: grown(s, sent, "tx_packets"), "veth1 tx_packets +5")
    after = wait_status(kv, "veth2", lambda s: grown(s, before, "rx_packets"),
                        "veth2 rx_packets +5")
    # each ICMP echo is at least 42 bytes in Ethernet
    assert after["statistics"]["rx_bytes"] > before["statistics"]["rx_bytes"] + 5 * 42


def test_unchanged_counters_are_not_rewritten(
    kv: EtcdKV, helper: HelperSandbox, start_controller: StartController
) -> None:
    # No IPv6 (router solicitations, MLD) and no IPv4 traffic: the counters stay still.
    for netns in ("ns1", "ns2"):
        helper.ip("netns", "add", netns)
        for scope in ("all", "default"):
            helper.run("ip", "netns", "exec", netns, "sysctl", "-qw",
                       f"net.ipv6.conf.{scope}.disable_ipv6=1")
    start_controller(*NO_RESYNC, "--stats-interval", "0.5")
    for name in ("veth1", "veth2"):
        config = seed(name)
        config["ip_addresses"] = [a for a in config["ip_addresses"] if ":" not in a]
        kv.put(name, config)
    wait_status(kv, "veth1", lambda s: s.get("oper_state") == "UP" and "statistics" in s,
                "veth1 UP with statistics")
    revision = kv.status_revision("veth1")
    mark = len(records(helper.audit_log))
    wait_until(lambda: sum(r.get("kind") == "intent" for r in records(helper.audit_log)[mark:])
               >= 4, timeout=30, what="four statistics observes")
    assert kv.status_revision("veth1") == revision, kv.status("veth1")


def test_the_agent_s_own_changes_need_no_observe(
    kv: EtcdKV, helper: HelperSandbox, start_controller: StartController
) -> None:
    """Issue 16: the link events of the agent's own batches (and the oper state and
    address flags that follow them) are no reason for an observe; the helper's batch
    replies say which events were the batch's, and the oper state comes in the events."""
    start_controller(*NO_RESYNC, "--stats-interval", "0")
    wait_until(lambda: records(helper.audit_log), what="the controller's first observe")
    pairs = 24
    for i in range(pairs):
        for end, peer, netns in (("a", "b", "gena"), ("b", "a", "genb")):
            kv.put(f"gen{i}{end}", veth_config(
                f"gen{i}{end}", f"gen{i}{peer}", netns=named_ns(netns),
                mac=f"02:00:00:77:{i:02x}:{ord(end):02x}",
                addresses=[f"10.77.{i}.{ord(end) - 96}/24", f"fd77:{i}::{ord(end) - 96}/64"]))
    names = [f"gen{i}{end}" for i in range(pairs) for end in "ab"]
    wait_until(lambda: all(kv.status(n).get("oper_state") == "UP" for n in names), timeout=60,
               what="every end CONFIGURED and UP", describe=kv.statuses)
    time.sleep(1)  # the events of the last batch, and any observe they would cause
    changing = intents_changing(helper.audit_log)
    after_first_change = changing[changing.index(True):]
    assert all(after_first_change), changing


def test_a_pair_created_down_gets_its_oper_state_at_once(
    kv: EtcdKV, helper: HelperSandbox, start_controller: StartController
) -> None:
    """The kernel announces nothing of a link created down, so no link event brings its
    oper state: the agent observes after creating it, and its first status has it (not
    the status published without kernel facts when the creation's settle time ends)."""
    start_controller(*NO_RESYNC, "--stats-interval", "0")
    wait_until(lambda: records(helper.audit_log), what="the controller's first observe")
    down = [{**seed(name), "enabled": False} for name in ("veth1", "veth2")]
    with status_history(kv, "veth2") as history:
        for config in down:
            kv.put(config["name"], config)
        wait_status(kv, "veth2", lambda s: s.get("state") == "CONFIGURED", "veth2 CONFIGURED")
    configured = [s for s in history if s["state"] == "CONFIGURED"]
    assert configured[0].get("oper_state") == "DOWN", history
