"""A controller restarted on the state it left converged says READY=1 before any batch
(`controller.resume`, docs/PERFORMANCE.md item 10), and writes nothing; one restarted after
the kernel, a config or a status changed while it was stopped says READY=1 only once
that change is acted on, as before.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from controller.live_status import SETTLE_S
from tests.faults.faultlib import Desired, audit_mark, ops_since
from tests.harness import (
    TEST_GID,
    UNPRIVILEGED_UID,
    ControllerProcess,
    EtcdKV,
    HelperSandbox,
    ReadySocket,
    StartController,
    batch_results,
    records,
    status_key,
    wait_until,
)
from tests.harness.etcd import _client_for

pytestmark = pytest.mark.root

RESYNC = ("--resync-interval", "1")  # a full observe each second records the state
QUIET_S = 3.0


@pytest.fixture
def converged(desired: Desired, start_controller: StartController,
              workdir: Path) -> tuple[Desired, ControllerProcess, Path]:
    """Two pairs in named namespaces and one with an end in the helper's own namespace,
    converged; the controller has recorded that state, and is stopped."""
    state = workdir / "controller-state"
    state.mkdir(mode=0o700)
    os.chown(state, UNPRIVILEGED_UID, TEST_GID)
    controller = start_controller(*RESYNC, "--state-dir", str(state))
    desired.put_pair("ra0", "rb0", 0, netns_a="ns1", netns_b="ns2")
    desired.put_pair("ra1", "rb1", 1, netns_a="ns2", netns_b="ns1", mtu=9000)
    desired.put_pair("ra2", "rb2", 2, netns_a=None, netns_b="ns1",
                     addresses=("10.91.0.1/24", "2001:db8:91::1/64"))
    desired.wait_converged()
    recorded = state / "converged.json"
    last: list[object] = [None, time.monotonic()]

    def stable() -> bool:  # recorded, and the same for two full observes
        now = recorded.read_text() if recorded.exists() else None
        if now != last[0]:
            last[:] = [now, time.monotonic()]
        return now is not None and time.monotonic() - float(last[1]) > 2.5  # type: ignore[arg-type]

    wait_until(stable, timeout=30, interval=0.1, what="the converged state recorded",
               describe=controller.log_text)
    controller.stop()
    return desired, controller, recorded


def restart(controller: ControllerProcess, workdir: Path) -> float:
    """Start it with a $NOTIFY_SOCKET; the wall time of its READY=1."""
    notify = ReadySocket(workdir / f"notify-{time.monotonic_ns()}.sock")
    controller.extra_env["NOTIFY_SOCKET"] = str(notify.path)
    try:
        controller.start()
        return notify.wait(0, 60)
    finally:
        notify.close()


def results_after(helper: HelperSandbox, mark: int) -> list[tuple[float, list[str]]]:
    """(wall time, the operations of its intent) of each batch result after `mark`."""
    return batch_results(records(helper.audit_log)[mark:])


def test_a_restart_on_the_state_it_left_is_ready_before_any_batch_and_writes_nothing(
    converged: tuple[Desired, ControllerProcess, Path], helper: HelperSandbox, kv: EtcdKV,
    workdir: Path,
) -> None:
    desired, controller, _recorded = converged
    links = desired.ifindexes()
    revisions = {name: kv.status_revision(name) for name in desired.configs}
    mark = audit_mark(helper)

    ready = restart(controller, workdir)
    wait_until(lambda: results_after(helper, mark), timeout=30, what="the full observe after")
    time.sleep(QUIET_S)

    first_result = results_after(helper, mark)[0][0]
    # the audit log's times have millisecond resolution
    assert math.floor(ready * 1000) / 1000 <= first_result, "READY=1 waited for the first batch"
    assert "converged as left" in controller.log_text()
    assert ops_since(helper, mark) == [], "the restart changed the kernel"
    assert desired.ifindexes() == links
    assert {name: kv.status_revision(name) for name in desired.configs} == revisions
    assert desired.problems() == []


def test_a_stop_right_after_changes_records_the_state_for_a_ready_restart(
    desired: Desired, start_controller: StartController, helper: HelperSandbox, kv: EtcdKV,
    workdir: Path,
) -> None:
    """No periodic observe after the pairs were made (resync 10 min, no statistics): the
    stop observes once more and records what it found."""
    state = workdir / "controller-state"
    state.mkdir(mode=0o700)
    os.chown(state, UNPRIVILEGED_UID, TEST_GID)
    controller = start_controller("--resync-interval", "600", "--stats-interval", "0",
                                  "--state-dir", str(state))
    desired.put_pair("sa0", "sb0", 0, netns_a="ns1", netns_b="ns2")
    desired.wait_converged()
    time.sleep(2 * SETTLE_S)  # the new ends' statuses are no longer held
    controller.stop()
    revisions = {name: kv.status_revision(name) for name in desired.configs}
    mark = audit_mark(helper)

    ready = restart(controller, workdir)
    wait_until(lambda: results_after(helper, mark), timeout=30, what="the full observe after")
    time.sleep(QUIET_S)

    assert ready < results_after(helper, mark)[0][0], "READY=1 waited for the first batch"
    assert ops_since(helper, mark) == []
    assert {name: kv.status_revision(name) for name in desired.configs} == revisions


def _mtu(desired: Desired) -> None:
    desired.helper.ip("link", "set", "ra0", "mtu", "1300", netns="ns1")


def _address(desired: Desired) -> None:
    desired.helper.ip("addr", "add", "10.92.0.1/24", "dev", "rb2", netns="ns1")


def _down_in_own_namespace(desired: Desired) -> None:
    desired.helper.ip("link", "set", "ra2", "down")


def _config(desired: Desired) -> None:
    desired.put("ra1", {**desired.configs["ra1"], "mtu": 1400})


CHANGES: dict[str, Callable[[Desired], None]] = {
    "an MTU changed": _mtu, "an address added": _address,
    "a link set down in the helper's own namespace": _down_in_own_namespace,
    "a config changed": _config,
}


@pytest.mark.parametrize("what", sorted(CHANGES))
def test_a_change_while_it_was_stopped_is_acted_on_before_ready(
    converged: tuple[Desired, ControllerProcess, Path], helper: HelperSandbox,
    workdir: Path, what: str,
) -> None:
    desired, controller, _recorded = converged
    CHANGES[what](desired)
    assert desired.problems(), f"{what}: nothing to act on"
    mark = audit_mark(helper)

    ready = restart(controller, workdir)

    repairs = [t for t, ops in results_after(helper, mark) if ops]
    assert repairs and repairs[0] <= ready, f"{what}: READY=1 before it was acted on"
    assert "not converged as left" in controller.log_text()
    desired.wait_converged()


def test_a_status_deleted_while_it_was_stopped_is_written_again_before_ready(
    converged: tuple[Desired, ControllerProcess, Path], kv: EtcdKV, workdir: Path,
) -> None:
    desired, controller, _recorded = converged
    _client_for(kv.server).delete(status_key(kv.label, "rb0"))

    restart(controller, workdir)

    assert kv.status("rb0"), "READY=1 before the status was written again"
    assert "not converged as left" in controller.log_text()
    desired.wait_converged()


def test_a_damaged_record_is_ignored(
    converged: tuple[Desired, ControllerProcess, Path], helper: HelperSandbox,
    workdir: Path,
) -> None:
    desired, controller, recorded = converged
    body = json.loads(recorded.read_text())
    body["generation"] += 1_000_000  # any generation the helper reaches vouches for nothing
    recorded.write_text(json.dumps(body))
    mark = audit_mark(helper)

    ready = restart(controller, workdir)

    results = results_after(helper, mark)
    assert results and results[0][0] <= ready, "READY=1 on a damaged record"
    assert "ignoring" in controller.log_text()
    assert ops_since(helper, mark) == []
    assert desired.problems() == []
