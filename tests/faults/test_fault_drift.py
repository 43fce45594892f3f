"""Faults: managed links and namespaces changed or deleted by hand (issues 12 §2, 13).

The controller's periodic resync is set to 10 minutes, so every repair here comes from the
helper's link events. Each test bounds the repair time the issues ask for (1 s for a link,
2 s for a namespace) with a factor of two for a loaded test machine, and prints what it
measured as `RECOVERY <fault> <what> <seconds>` lines (`pytest -s`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.faults.faultlib import Desired, audit_mark, intents_since, veth_end
from tests.harness import EtcdKV, HelperSandbox, StartController, links_in_file, wait_until

pytestmark = pytest.mark.root

NO_RESYNC = ("--resync-interval", "600")
LINK_BOUND_S = 2.0   # the issue: 1 s
NAMESPACE_BOUND_S = 4.0  # the issue: 2 s
RECHECK_BOUND_S = 4.0  # issue 14: 2 s


def repaired_within(desired: Desired, what: str, bound: float,
                    damage: Callable[[], object]) -> float:
    """Do `damage`, then wait for the kernel and statuses to equal the config again; the
    audit log shows the repair (so the damage did happen, however quick the repair)."""
    assert not desired.problems()
    mark = audit_mark(desired.helper)
    started = time.monotonic()
    damage()
    wait_until(lambda: [r for r in intents_since(desired.helper, mark) if r.get("ops")],
               timeout=30, interval=0.01, what=f"a batch repairing {what}")
    desired.wait_converged(timeout=30)
    took = time.monotonic() - started
    print(f"RECOVERY drift {what.replace(' ', '_')} {took:.3f}")
    assert took < bound, f"{what} took {took:.2f} s to repair"
    return took


@pytest.fixture
def pair(desired: Desired, start_controller: StartController) -> Desired:
    start_controller(*NO_RESYNC)
    desired.put("dra", veth_end("dra", "drb", 2, netns="ns1",
                                addresses=("10.81.0.1/24", "2001:db8:81::1/64")))
    desired.put("drb", veth_end("drb", "dra", 3, netns="ns2",
                                addresses=("10.81.0.2/24", "10.81.0.3/24", "2001:db8:81::2/64")))
    desired.wait_converged()
    return desired


def test_deleted_link_is_restored(pair: Desired, helper: HelperSandbox) -> None:
    repaired_within(pair, "dra deleted", LINK_BOUND_S,
                    lambda: helper.ip("link", "del", "dra", netns="ns1"))


@pytest.mark.parametrize("change", [
    ("mtu", ["link", "set", "drb", "mtu", "1400"]),
    ("mac", ["link", "set", "drb", "address", "02:00:00:00:99:99"]),
    ("address", ["addr", "del", "10.81.0.3/24", "dev", "drb"]),
    ("primary", ["addr", "del", "10.81.0.2/24", "dev", "drb"]),  # drops 10.81.0.3 too
    ("down", ["link", "set", "drb", "down"]),
], ids=lambda change: change[0])
def test_changed_link_is_restored(pair: Desired, helper: HelperSandbox,
                                  change: tuple[str, list[str]]) -> None:
    what, argv = change
    repaired_within(pair, f"{what} of drb changed", LINK_BOUND_S,
                    lambda: helper.ip(*argv, netns="ns2"))


def test_deleted_named_namespace_is_recreated(pair: Desired, helper: HelperSandbox) -> None:
    repaired_within(pair, "ns2 deleted", NAMESPACE_BOUND_S,
                    lambda: helper.ip("netns", "del", "ns2"))
    assert "ns2" in helper.netns_list()


def test_vanished_file_namespace_sends_the_pair_to_pending(
    desired: Desired, kv: EtcdKV, helper: HelperSandbox, start_controller: StartController
) -> None:
    start_controller(*NO_RESYNC)
    path = helper.new_netns_file("drf")
    desired.locate = lambda config: (f"file:{path}" if config["name"] == "fla" else "name:ns1")
    desired.extra_views = {f"file:{path}": lambda: links_in_file(helper, str(path))}
    desired.put_pair("fla", "flb", 2, netns_a=None, netns_b="ns1")
    desired.configs["fla"]["namespace"] = {"type": 3, "filepath": str(path)}
    kv.put("fla", desired.configs["fla"])
    desired.wait_converged()

    started = time.monotonic()
    # Unmounted where it was made (the host; the sandbox sees it through propagation).
    # A plain umount: nothing of the helper may keep the file busy.
    subprocess.run(["umount", str(path)], check=True)
    path.unlink()
    wait_until(lambda: kv.state("fla") == "PENDING" and kv.state("flb") == "PENDING",
               timeout=30, interval=0.01, what="both ends PENDING",
               describe=lambda: (kv.status("fla"), kv.status("flb")))
    took = time.monotonic() - started
    print(f"RECOVERY namespace file_gone_to_PENDING {took:.3f}")
    assert took < NAMESPACE_BOUND_S
    # The namespace died (nothing of the agent's kept it alive): its peer went with it.
    wait_until(lambda: "flb" not in {v["ifname"] for v in helper.ip_json("link", "show",
                                                                       netns="ns1")},
               timeout=10, what="flb to vanish with its peer's namespace")
    assert "waiting for namespace file" in kv.status("fla")["reason"]


def test_restarted_helper_is_noticed_at_once(pair: Desired, helper: HelperSandbox) -> None:
    """Issue 14: the controller keeps the helper's stream open; a new instance id means a
    full observe at once, not at the next resync (10 minutes here)."""
    os.killpg(helper.helper_pid, signal.SIGKILL)
    helper.stop_helper()  # reaps it
    helper.ip("link", "set", "dra", "mtu", "1280", netns="ns1")  # drift no helper saw
    mark = audit_mark(helper)
    helper.start_helper()  # returns once the new helper's socket answers
    ready = time.monotonic()
    wait_until(lambda: intents_since(helper, mark), timeout=30, interval=0.01,
               what="the controller's first batch to the new helper")
    checked = time.monotonic() - ready
    pair.wait_converged(timeout=30)
    took = time.monotonic() - ready
    print(f"RECOVERY helper_restart links_rechecked {checked:.3f}")
    print(f"RECOVERY helper_restart drift_repaired {took:.3f}")
    assert checked < RECHECK_BOUND_S
