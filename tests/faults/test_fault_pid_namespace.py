"""Fault: the process holding a PID-referenced namespace exits (issue 12 §2).

PID references are off by default (netlinkd(8): `allow_pid_refs`); this helper's policy
turns them on.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import attach_log, netns_files_policy
from tests.faults.faultlib import Desired, veth_end
from tests.harness import EtcdKV, HelperSandbox, KeyPair, StartController, links_of_pid, wait_until

pytestmark = pytest.mark.root

BOUND_S = 4.0  # the issue: 2 s


@pytest.fixture
def helper(request: pytest.FixtureRequest, workdir: Path, keys: KeyPair) -> Iterator[HelperSandbox]:
    policy = netns_files_policy(workdir)
    policy.write_text(policy.read_text() + "allow_pid_refs = true\n")
    sandbox = HelperSandbox(workdir, keys.trust_key, policy_file=policy)
    attach_log(request, "netlinkd log", sandbox.log_path)
    try:
        sandbox.start()
        yield sandbox
    finally:
        sandbox.stop()


def test_exited_pid_namespace_sends_the_pair_to_pending(
    desired: Desired, kv: EtcdKV, helper: HelperSandbox, start_controller: StartController
) -> None:
    start_controller("--resync-interval", "600")
    sleeper = helper.spawn("unshare", "--net", "sleep", "infinity")
    sandbox_ns = Path(f"/proc/{helper.pid}/ns/net").stat().st_ino
    wait_until(lambda: Path(f"/proc/{sleeper.pid}/ns/net").stat().st_ino != sandbox_ns,
               what="the sleeper in a namespace of its own")
    where = f"pid:{sleeper.pid}"
    desired.locate = lambda config: where if config["name"] == "pda" else "name:ns1"
    desired.extra_views = {where: lambda: links_of_pid(helper, sleeper.pid)}
    pid_end = veth_end("pda", "pdb", 40, netns=None)
    pid_end["namespace"] = {"type": 0, "pid": sleeper.pid}
    desired.put("pda", pid_end)
    desired.put("pdb", veth_end("pdb", "pda", 41, netns="ns1"))
    desired.wait_converged()

    desired.extra_views = {}
    started = time.monotonic()
    os.killpg(sleeper.pid, signal.SIGKILL)
    sleeper.wait()
    wait_until(lambda: kv.state("pda") == "PENDING" and kv.state("pdb") == "PENDING",
               timeout=30, interval=0.01, what="both ends PENDING",
               describe=lambda: (kv.status("pda"), kv.status("pdb")))
    took = time.monotonic() - started
    print(f"RECOVERY namespace pid_gone_to_PENDING {took:.3f}")
    assert took < BOUND_S
    assert f"waiting for process {sleeper.pid}" in kv.status("pda")["reason"]
    # Nothing of the helper kept the namespace alive: the peer in ns1 went with it.
    wait_until(lambda: "pdb" not in {v["ifname"] for v in helper.ip_json("link", "show",
                                                                       netns="ns1")},
               timeout=10, what="pdb to vanish with its peer's namespace")
