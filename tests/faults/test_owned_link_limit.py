"""Fault: the helper's owned-link limit is reached (issue 12, 3b). Against a real helper
with `max_owned_links = 4`: another agent's links do not count against this one's limit,
and 21 pairs put at once over the limit get their ERROR status from one refused batch, not
from one refused batch and one full observe per pair (55 s for 21 pairs before)."""

from __future__ import annotations

import json
import time

import pytest

from tests.faults.faultlib import Desired, audit_mark, intents_since, veth_end
from tests.harness import HelperSandbox, StartController, config_key, wait_until

pytestmark = pytest.mark.root

PAIRS_OVER = 21


def put_at_once(desired: Desired, configs: dict[str, dict[str, object]]) -> None:
    kv = desired.kv
    client = kv.server.client()
    try:
        txn = client.transactions
        client.transaction(compare=[], failure=[], success=[
            txn.put(config_key(kv.label, name), json.dumps(c)) for name, c in configs.items()])
    finally:
        client.close()


def test_over_the_limit_every_create_is_refused_in_one_round(
    helper: HelperSandbox, desired: Desired, start_controller: StartController
) -> None:
    assert helper.policy_file is not None
    helper.policy_file.write_text(helper.policy_file.read_text() + "max_owned_links = 4\n")
    helper.restart()
    # Another agent's two pairs (4 links) under the same helper.
    helper.ip("netns", "add", "lim0")
    for i in range(2):
        helper.ip("link", "add", f"other{i}", "netns", "lim0", "type", "veth", "peer", "name",
                  f"otherp{i}", "netns", "lim0")
        for end, peer in ((f"other{i}", f"otherp{i}"), (f"otherp{i}", f"other{i}")):
            helper.ip("link", "set", end, "alias", f"netagent:someone-else:{peer}", netns="lim0")
    start_controller()
    for i in range(2):
        desired.put_pair(f"lm{i}a", f"lm{i}b", i, netns_a="lim1", netns_b="lim2")
    desired.wait_converged()
    mark = audit_mark(helper)
    over: dict[str, dict[str, object]] = {}
    for i in range(2, 2 + PAIRS_OVER):
        a, b = f"lm{i}a", f"lm{i}b"
        over[a] = veth_end(a, b, 2 * i, netns="lim1")
        over[b] = veth_end(b, a, 2 * i + 1, netns="lim2")
    started = time.monotonic()
    put_at_once(desired, over)

    def all_refused() -> bool:
        statuses = desired.kv.statuses()
        return all("OWNED_LINK_LIMIT" in statuses.get(name, {}).get("reason", "")
                   for name in over)

    wait_until(all_refused, timeout=30, what="every pair over the limit to be ERROR",
               describe=desired.kv.statuses)
    print(f"\n{PAIRS_OVER} pairs over the limit: all ERROR after "
          f"{time.monotonic() - started:.2f} s")
    creating = [r for r in intents_since(helper, mark)
                if any(op.startswith("create_veth_pair") for op in r.get("ops", []))]
    assert len(creating) <= 2, f"{len(creating)} create batches: still one per pair"
    statuses = desired.kv.statuses()
    assert {statuses[n]["state"] for n in ("lm0a", "lm0b", "lm1a", "lm1b")} == {"CONFIGURED"}
