"""Least privilege, tightened (issue 15, part 4): PID references off unless a policy turns
them on, no mount but the ones named namespaces need, and a second `netlinkd serve` that
touches nothing of a live one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from netlinkd import policy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "netlinkd"))
from nlkd_lib import NETLINKD, make_sandbox, new_key

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
REPO = Path(__file__).resolve().parents[2]


def test_installed_policy_has_pid_references_off() -> None:
    assert policy.Policy().allow_pid_refs is False
    assert policy.load_policy(None).allow_pid_refs is False
    installed = (REPO / "packaging" / "etc" / "netagent.toml").read_text()
    assert "allow_pid_refs" not in installed, "the package installs the defaults"


# Runs as root in a private mount namespace, with the helper's capability set and filter
# (`filtered`) or its capability set only (`unfiltered`, the control: the test can fail).
_REMOUNT_SCRIPT = textwrap.dedent(
    """
    import ctypes, os, sys, threading
    from netlinkd import mountguard, privileges
    target, scratch, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    privileges.drop_privileges(privileges.required_capabilities(False))
    if mode == "filtered":
        mountguard.install()
    libc = ctypes.CDLL(None, use_errno=True)

    def attempt(name, call):
        result = call()
        print(f"{name}: {'ok' if result == 0 else os.strerror(ctypes.get_errno())}")

    MS_RDONLY, MS_REMOUNT, MS_BIND = 1, 0x20, 0x1000
    attempt("remount rw", lambda: libc.mount(None, target.encode(), None,
                                             MS_REMOUNT | MS_BIND, None))
    attempt("tmpfs over it", lambda: libc.mount(b"tmpfs", target.encode(), b"tmpfs", 0, None))
    attempt("move", lambda: libc.mount(target.encode(), scratch.encode(), None, 0x2000, None))
    try:
        with open(os.path.join(target, "planted"), "w") as handle:
            handle.write("x")
        print("write: ok")
    except OSError as exc:
        print(f"write: {exc.strerror}")
    # what a named namespace needs still works: a new netns bound onto a file
    ns_file = os.path.join(scratch, "ns1")
    open(ns_file, "w").close()
    box = {}
    def bind():
        libc.unshare(0x40000000)
        box["r"] = libc.mount(b"/proc/thread-self/ns/net", ns_file.encode(), None, MS_BIND, None)
        box["e"] = ctypes.get_errno()
    thread = threading.Thread(target=bind)
    thread.start(); thread.join()
    print(f"named namespace: {'ok' if box['r'] == 0 else os.strerror(box['e'])}")
    attempt("umount detach", lambda: libc.umount2(ns_file.encode(), 2))
    # the new mount API and pivot_root, with arguments no call accepts: EPERM is the filter
    resolve = mountguard._library().seccomp_syscall_resolve_name
    for name in NEW_API:
        number = resolve(name.encode())
        attempt(name, lambda: libc.syscall(number, -1, None, 0, None, 0))
    # the flag rules: umount2 only with MNT_DETACH, unshare and setns of a netns only
    attempt("umount2 force", lambda: libc.umount2(b"/nonexistent-mountguard", 1))
    attempt("setns uts", lambda: libc.setns(-1, 0x04000000))
    attempt("unshare uts", lambda: libc.unshare(0x04000000))
    # a new mount with no flag at all, by the raw system call (no wrapper adds MS_MGC_VAL)
    raw_mount = resolve(b"mount")
    attempt("tmpfs no flags", lambda: libc.syscall(raw_mount, b"tmpfs", scratch.encode(),
                                                   b"tmpfs", ctypes.c_ulong(0), None))
    """
)
_NEW_API = ("mount_setattr", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount",
            "fspick", "pivot_root")
_REMOUNT_SCRIPT = _REMOUNT_SCRIPT.replace("NEW_API", repr(_NEW_API))


def _remount_attempts(tmp_path: Path, mode: str) -> dict[str, str]:
    target, scratch = tmp_path / mode / "readonly", tmp_path / mode / "scratch"
    target.mkdir(parents=True)
    scratch.mkdir()
    setup = (
        f"mount --bind {target} {target} && mount -o remount,bind,ro {target} && "
        f"mount -t tmpfs tmpfs {scratch} && exec {sys.executable} -c \"$0\" {target} "
        f"{scratch} {mode}"
    )
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", setup, _REMOUNT_SCRIPT],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    return dict(line.split(": ", 1) for line in result.stdout.splitlines())


def test_remount_fails_under_the_helpers_mount_filter(tmp_path: Path) -> None:
    control = _remount_attempts(tmp_path, "unfiltered")
    assert control["remount rw"] == "ok" and control["write"] == "ok", (
        "without the filter CAP_SYS_ADMIN undoes a read-only mount", control,
    )
    filtered = _remount_attempts(tmp_path, "filtered")
    assert filtered["remount rw"] == "Operation not permitted", filtered
    assert filtered["tmpfs over it"] == "Operation not permitted", filtered
    assert filtered["move"] == "Operation not permitted", filtered
    assert filtered["write"] == "Read-only file system", filtered
    assert filtered["named namespace"] == "ok", filtered
    assert filtered["umount detach"] == "ok", filtered
    for name in (*_NEW_API, "umount2 force", "setns uts", "unshare uts", "tmpfs no flags"):
        assert control[name] != "Operation not permitted", (name, control)
        assert filtered[name] == "Operation not permitted", (name, filtered)


def test_second_serve_touches_nothing_of_the_live_helper(tmp_path: Path) -> None:
    sandbox = make_sandbox(new_key())
    sandbox.extra_args = ["--socket-group", "65534"]
    try:
        sandbox.start()
        directory = Path(sandbox.socket).parent
        before = _snapshot(directory, Path(sandbox.state), Path(sandbox.audit))
        second = subprocess.run(
            ["nsenter", "-t", str(sandbox.pid), "-m", "-n", NETLINKD, "serve",
             "--socket", sandbox.socket, "--trust-key", sandbox.trust,
             "--audit-log", str(tmp_path / "other-audit.log"),
             "--state-dir", sandbox.state, "--config", "/dev/null"],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert second.returncode == 2, second.stderr
        assert "another process is serving on" in second.stderr
        assert _snapshot(directory, Path(sandbox.state), Path(sandbox.audit)) == before
        assert not (tmp_path / "other-audit.log").exists()
        sandbox.hello()
    finally:
        sandbox.stop()
        shutil.rmtree(sandbox.root, ignore_errors=True)


def _snapshot(directory: Path, state: Path, audit: Path) -> tuple[object, ...]:
    info = directory.stat()
    files = sorted(  # gRPC's inner socket by its inode: not replaced either
        (p.name, p.read_bytes() if p.is_file() else p.stat().st_ino) for p in state.iterdir())
    return (info.st_uid, info.st_gid, info.st_mode, files, audit.read_bytes())
