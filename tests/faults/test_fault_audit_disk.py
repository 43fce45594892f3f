"""Fault: the helper's audit log cannot be written (disk full, file system read-only).

The helper fails closed (nothing is applied without its intent record). The statuses say
what is true: pairs that exist as configured stay CONFIGURED with a warning naming the
block; only an end whose change waits is ERROR, with the reason. When space returns (or
the file system is writable again and the helper restarted) the waiting change is applied.
The audit log is on a 4 MiB tmpfs of the test's own; the chain still verifies afterwards.
"""

from __future__ import annotations

import contextlib
import errno
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import attach_log, netns_files_policy
from tests.faults.faultlib import Desired, audit_mark, ops_since
from tests.harness import (
    ControllerProcess,
    EtcdKV,
    HelperSandbox,
    KeyPair,
    SandboxError,
    link,
    venv_tool,
    wait_until,
)

pytestmark = pytest.mark.root

BLOCK = "netlinkd refuses every change: AUDIT_UNAVAILABLE"


@pytest.fixture
def audit_fs(workdir: Path) -> Iterator[Path]:
    """A small tmpfs for the audit log, mounted before the sandbox copies the mounts."""
    path = workdir / "auditfs"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "netagent-audit",
                    str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=False)


@pytest.fixture
def helper(request: pytest.FixtureRequest, workdir: Path, keys: KeyPair,
           audit_fs: Path) -> Iterator[HelperSandbox]:
    sandbox = HelperSandbox(workdir, keys.trust_key, policy_file=netns_files_policy(workdir))
    sandbox.audit_log = audit_fs / "audit.log"
    attach_log(request, "netlinkd log", sandbox.log_path)
    try:
        sandbox.start()
        yield sandbox
    finally:
        sandbox.stop()


def fill(directory: Path) -> Path:
    """Fill the file system of `directory` to the last byte; return the filler file."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as out:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 8, 1):
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * chunk)
    try:
        with open(directory / "probe", "wb") as probe:
            probe.write(b"x" * 4096)
            probe.flush()
        raise AssertionError("the audit file system still has room")
    except OSError as err:
        assert err.errno == errno.ENOSPC, err
    return filler


def put_world(desired: Desired) -> None:
    desired.put_pair("da0", "db0", 0, netns_a="ns1", netns_b="ns2")
    desired.put_pair("da1", "db1", 1, netns_a=None, netns_b="ns1")


def blocked_statuses(kv: EtcdKV, changed: str) -> dict[str, Any] | None:
    """The statuses once the block shows: `changed` ERROR, every other end CONFIGURED with
    the block as a warning. None until then."""
    statuses = kv.statuses()
    error = statuses.get(changed, {})
    if error.get("state") != "ERROR" or BLOCK not in error.get("reason", ""):
        return None
    for name, status in statuses.items():
        if name == changed:
            continue
        if status.get("state") != "CONFIGURED" or not any(
                BLOCK in warning for warning in status.get("warnings", [])):
            return None
    return statuses


def verify_audit(helper: HelperSandbox, keys: KeyPair) -> None:
    result = subprocess.run(
        [venv_tool("netlinkd"), "audit", "verify", "--audit-log", str(helper.audit_log),
         "--trust-key", str(keys.trust_key)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def change_until_blocked(desired: Desired, kv: EtcdKV, name: str) -> dict[str, Any]:
    """Change `name`'s MTU until the helper refuses: the audit log's last page may still
    hold a few records after the file system is full. Returns the blocked statuses."""
    for attempt in range(1, 30):
        mtu = 1400 + attempt
        desired.put(name, {**desired.configs[name], "mtu": mtu})

        def applied_or_blocked(mtu: int = mtu) -> dict[str, Any] | bool | None:
            view = link(desired.helper, name, "ns1")
            return blocked_statuses(kv, name) or (
                view is not None and view.mtu == mtu and kv.state(name) == "CONFIGURED")

        found = wait_until(applied_or_blocked, timeout=60, what=f"{name} applied or blocked",
                           describe=kv.statuses)
        if isinstance(found, dict):
            return found
    raise AssertionError("the helper kept applying changes on a full audit file system")


def test_full_audit_disk_fails_closed_says_why_and_resumes_when_space_returns(
    desired: Desired, controller: ControllerProcess, helper: HelperSandbox, kv: EtcdKV,
    audit_fs: Path, keys: KeyPair,
) -> None:
    put_world(desired)
    desired.wait_converged()
    links_before = desired.ifindexes()
    filler = fill(audit_fs)
    mark = audit_mark(helper)

    statuses = change_until_blocked(desired, kv, "da0")
    assert "No space left on device" in statuses["da0"]["reason"]
    verdict = {k: statuses["db0"].get(k) for k in ("state", "reason", "warnings")}
    assert verdict == {"state": "CONFIGURED", "reason": "", "warnings": [
        f"the pair exists as configured, but changes are blocked: "
        f"{statuses['da0']['reason'].removeprefix('not applied: ')}"]}
    view = link(helper, "da0", "ns1")
    assert view is not None and view.mtu != desired.configs["da0"]["mtu"], \
        "a change was applied without its intent record"

    filler.unlink()
    freed = time.monotonic()
    desired.wait_converged()
    recovery = time.monotonic() - freed
    assert "set_link da0" in ops_since(helper, mark)
    assert desired.ifindexes() == links_before
    verify_audit(helper, keys)
    print(f"RECOVERY audit-disk-full converged-after-space-returned {recovery:.2f}s")


def test_read_only_audit_file_system_keeps_the_helper_down_until_fixed(
    desired: Desired, controller: ControllerProcess, helper: HelperSandbox, kv: EtcdKV,
    audit_fs: Path, keys: KeyPair,
) -> None:
    """A helper restarted onto a read-only audit file system refuses to start (a running
    helper holds the log open for writing, so the kernel refuses the remount)."""
    put_world(desired)
    desired.wait_converged()
    links_before = desired.ifindexes()
    helper.stop_helper()
    subprocess.run(["mount", "-o", "remount,ro", str(audit_fs)], check=True)
    with pytest.raises(SandboxError, match="audit"):
        helper.start_helper()

    desired.put("db1", {**desired.configs["db1"], "mtu": 1400})
    def helper_down() -> dict[str, dict[str, Any]] | None:
        found = kv.statuses()
        others = [v for n, v in found.items() if n != "db1"]
        db1_error = found.get("db1", {}).get("state") == "ERROR"
        return found if db1_error and all(v.get("warnings") for v in others) else None

    statuses = wait_until(helper_down, timeout=60, what="statuses naming the stopped helper",
                          describe=kv.statuses)
    assert statuses is not None
    assert statuses["db1"]["reason"].startswith("not applied: netlinkd unavailable")
    assert all(v["state"] == "CONFIGURED" for n, v in statuses.items() if n != "db1")
    assert desired.ifindexes() == links_before

    subprocess.run(["mount", "-o", "remount,rw", str(audit_fs)], check=True)
    fixed = time.monotonic()
    helper.start_helper()
    desired.wait_converged()
    recovery = time.monotonic() - fixed
    assert desired.ifindexes() == links_before
    verify_audit(helper, keys)
    print(f"RECOVERY audit-fs-read-only converged-after-helper-restart {recovery:.2f}s")
