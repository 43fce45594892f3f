"""Fault: netlinkd SIGKILLed at every instant of batches that create, change and delete
pairs (issue 12, section 1).

For k = 0, 1, 2, ... the helper is started so that it dies right before its (k+1)-th
netlink request that changes the kernel (tests/faults/netlinkd_with_faults.py; reads change
nothing, so these are all the distinct instants), the configuration flips between two
states in one etcd transaction, the helper dies, and is started again without the fault.
Then, with no manual step and no periodic resync (30 s, never reached), the kernel must
equal the configuration exactly (`Desired.problems`: pairs, MAC, MTU, addresses, state,
owner; nothing leaked, nothing unowned; every status CONFIGURED) and no link may be left in
a batch's link group. A direction's sweep ends at the first k the helper survives.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.faults.faultlib import Desired, veth_end
from tests.faults.helper_faults import grouped_links, start_helper
from tests.harness import StartController, config_key, wait_until

pytestmark = pytest.mark.root

Configs = dict[str, dict[str, Any]]
STEP_TIMEOUT_S = 60


def pair(tag: str, index: int, *addresses: str, mtu: int = 1500,
         enabled: bool = True) -> Configs:
    one, two = f"{tag}1", f"{tag}2"
    return {
        one: veth_end(one, two, 2 * index, netns="ks1", mtu=mtu, addresses=addresses),
        two: veth_end(two, one, 2 * index + 1, netns="ks2", mtu=mtu, addresses=(),
                      enabled=enabled),
    }


# S0 -> S1 deletes pair kb, creates pair kd (with an address) and changes pair ka (MTU,
# MAC, one address replaced, one end taken down); S1 -> S0 undoes all of it.
S0: Configs = {**pair("ka", 1, "10.77.1.1/24", "10.77.2.1/24"),
               **pair("kb", 2, "10.77.3.1/24"), **pair("kc", 3)}
S1: Configs = {**pair("ka", 9, "10.77.1.1/24", "10.77.4.1/24", mtu=1400, enabled=False),
               **pair("kc", 3), **pair("kd", 4, "10.77.5.1/24")}


def switch_to(desired: Desired, configs: Configs) -> None:
    """Replace the desired configs by `configs` in one etcd transaction."""
    kv = desired.kv
    client = kv.server.client()
    try:
        txn = client.transactions
        ops = [txn.put(config_key(kv.label, n), json.dumps(c)) for n, c in configs.items()]
        ops += [txn.delete(config_key(kv.label, n)) for n in desired.configs if n not in configs]
        client.transaction(compare=[], success=ops, failure=[])
    finally:
        client.close()
    desired.configs = dict(configs)


def problems(desired: Desired) -> list[str]:
    return desired.problems() + grouped_links(desired.helper)


def died_or_converged(desired: Desired) -> str:
    if desired.helper.helper_exited():
        return "died"
    return "" if problems(desired) else "converged"


def wait_converged(desired: Desired) -> None:
    wait_until(lambda: not problems(desired), timeout=STEP_TIMEOUT_S, interval=0.1,
               what="the kernel and the statuses to equal the config",
               describe=lambda: problems(desired))


def test_helper_killed_before_every_write_converges(
    desired: Desired, start_controller: StartController
) -> None:
    helper = desired.helper
    start_helper(helper)
    start_controller()
    switch_to(desired, S0)
    wait_converged(desired)
    targets = (S1, S0)
    next_kill = [0, 0]
    survived = [False, False]
    recoveries: list[float] = []
    started = time.monotonic()
    step = 0
    while not all(survived):
        direction = step % 2
        step += 1
        start_helper(helper, kill_at=None if survived[direction] else next_kill[direction])
        switch_to(desired, targets[direction])
        outcome = wait_until(lambda: died_or_converged(desired), timeout=STEP_TIMEOUT_S,
                             what=f"step {step}: the helper to die or the kernel to converge",
                             describe=lambda: problems(desired))
        if outcome == "converged":
            survived[direction] = True
            continue
        killed = time.monotonic()
        start_helper(helper)
        wait_converged(desired)
        recoveries.append(time.monotonic() - killed)
        next_kill[direction] += 1
    print(f"\nhelper kill sweep: {len(recoveries)} kills (writes per direction: {next_kill}) "
          f"in {time.monotonic() - started:.1f} s; kill to converged (helper restart "
          f"included): max {max(recoveries):.2f} s, mean "
          f"{sum(recoveries) / len(recoveries):.2f} s")
    assert min(next_kill) >= 8, "each direction's batches make at least this many writes"
