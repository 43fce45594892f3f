"""Fault: the controller is SIGKILLed, then restarted.

Nothing changed meanwhile: the restarted controller writes nothing to the kernel (no
operation in the helper's audit log, every link keeps its ifindex) and no status is
rewritten in etcd (each keeps its mod revision, and its verdict). etcd changed meanwhile:
exactly the operations those changes need reach the helper.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest

from tests.faults.faultlib import Desired, audit_mark, intents_since, ops_since, veth_end
from tests.harness import ControllerProcess, EtcdKV, HelperSandbox, records, wait_until

pytestmark = pytest.mark.root

SETTLE_S = 3.0
"""After the restarted controller's first batch, how long to watch for any further one."""


def put_world(desired: Desired) -> None:
    desired.put_pair("fa0", "fb0", 0, netns_a="ns1", netns_b="ns2")
    desired.put_pair("fa1", "fb1", 1, netns_a="ns1", netns_b="ns2", mtu=9000)
    desired.put_pair("fa2", "fb2", 2, netns_a=None, netns_b="ns1",
                     addresses=("10.90.0.1/24", "2001:db8:90::1/64"))
    desired.put_pair("fa3", "fb3", 3, netns_a="ns2", netns_b="ns3", enabled=False)


def sigkill(controller: ControllerProcess) -> None:
    os.kill(controller.pid, signal.SIGKILL)
    wait_until(lambda: not controller.alive(), timeout=10, what="the controller to die")


def restart_and_settle(controller: ControllerProcess, helper: HelperSandbox, mark: int) -> float:
    """Start the controller; wait for its first observe to finish and then for quiet.

    Returns the seconds from the start to the helper's first result for it."""
    started = time.monotonic()
    controller.start()
    wait_until(lambda: any(r.get("kind") == "result" for r in records(helper.audit_log)[mark:]),
               timeout=60, what="the restarted controller's first batch",
               describe=controller.log_text)
    first = time.monotonic() - started
    count = len(intents_since(helper, mark))
    while True:
        time.sleep(SETTLE_S)
        now = len(intents_since(helper, mark))
        if now == count:
            return first
        count = now


def verdicts(kv: EtcdKV, desired: Desired) -> dict[str, dict[str, object]]:
    """State, reason and warnings of every status (the live facts, such as packet
    counters, are read again by a new controller and may differ)."""
    return {name: {k: v for k, v in kv.status(name).items()
                   if k in ("state", "reason", "warnings")} for name in desired.configs}


def test_restart_after_sigkill_writes_nothing_when_nothing_changed(
    desired: Desired, controller: ControllerProcess, helper: HelperSandbox, kv: EtcdKV,
) -> None:
    put_world(desired)
    desired.wait_converged()
    links_before = desired.ifindexes()
    statuses_before = verdicts(kv, desired)
    revisions_before = {name: kv.status_revision(name) for name in desired.configs}
    mark = audit_mark(helper)

    sigkill(controller)
    recovery = restart_and_settle(controller, helper, mark)

    assert ops_since(helper, mark) == [], "the restart changed the kernel"
    assert len(intents_since(helper, mark)) >= 1, "the restarted controller observed nothing"
    assert desired.problems() == []
    assert desired.ifindexes() == links_before, "a link was re-created"
    assert verdicts(kv, desired) == statuses_before, "a status changed its verdict"
    rewritten = {name: kv.status(name) for name in desired.configs
                 if kv.status_revision(name) != revisions_before[name]}
    assert not rewritten, f"the restart rewrote statuses: {rewritten}"
    print(f"RECOVERY controller-sigkill-unchanged first-batch {recovery:.2f}s")


def test_restart_after_sigkill_applies_exactly_the_changes_made_meanwhile(
    desired: Desired, controller: ControllerProcess, helper: HelperSandbox,
) -> None:
    put_world(desired)
    desired.wait_converged()
    sigkill(controller)
    kept = {key: index for key, index in desired.ifindexes().items()
            if key[1] not in ("fa1", "fb1")}
    mark = audit_mark(helper)

    desired.put("fa0", {**desired.configs["fa0"], "mtu": 1400})            # one set_link
    desired.delete("fa1")                                                  # one delete_link
    desired.delete("fb1")
    desired.put("fa2", {**desired.configs["fa2"],                          # del + add address
                        "ip_addresses": ["10.90.0.9/24", "2001:db8:90::1/64"]})
    desired.put_pair("fa4", "fb4", 4, netns_a="ns3", netns_b=None)        # one create
    desired.put("fb3", veth_end("fb3", "fa3", 7, netns="ns3", enabled=True))  # set_link (up, mac)

    started = time.monotonic()
    controller.start()
    desired.wait_converged()
    recovery = time.monotonic() - started
    time.sleep(SETTLE_S)

    ops = ops_since(helper, mark)
    kinds = Counter(op.split()[0] for op in ops)
    assert kinds == Counter({"set_link": 2, "delete_link": 1, "del_address": 1,
                             "add_address": 1, "create_veth_pair": 1}), ops
    assert sorted(op for op in ops if not op.startswith("delete_link")) == sorted([
        "set_link fa0", "set_link fb3", "del_address fa2 10.90.0.1/24",
        "add_address fa2 10.90.0.9/24", "create_veth_pair fa4<->fb4",
    ])
    assert next(op for op in ops if op.startswith("delete_link")) in (
        "delete_link fa1", "delete_link fb1")
    assert desired.problems() == []
    now = desired.ifindexes()
    assert {key: now.get(key) for key in kept} == kept, "an unchanged link was re-created"
    print(f"RECOVERY controller-sigkill-changed converged {recovery:.2f}s")
