"""The helper keeps exactly the documented capabilities, in every thread, for good."""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import TEST_GID, HelperSandbox, KeyPair, proc_status, unprivileged
from seclib import PYTHON, mask_of, read_caps, read_caps_all_threads

from netlinkd.privileges import SECUREBITS_WANTED as SECUREBITS

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

WITH_PID = mask_of("net_admin", "sys_admin", "sys_ptrace")
WITHOUT_PID = mask_of("net_admin", "sys_admin")

_DROP_SCRIPT = textwrap.dedent(
    """
    import sys, prctl
    from netlinkd.privileges import drop_privileges, required_capabilities
    drop_privileges(required_capabilities(sys.argv[1] == "pid"))
    attempts = []
    for name, action in [
        ("raise sys_ptrace", lambda: setattr(prctl.cap_effective, "sys_ptrace", True)),
        ("raise dac_override", lambda: setattr(prctl.cap_permitted, "dac_override", True)),
        ("clear noroot", lambda: setattr(prctl.securebits, "noroot", False)),
        ("clear no_new_privs", lambda: prctl.set_no_new_privs(0)),
        ("set keep_caps", lambda: setattr(prctl.securebits, "keep_caps", True)),
        ("clear no_setuid_fixup", lambda: setattr(prctl.securebits, "no_setuid_fixup", False)),
    ]:
        try:
            action()
            attempts.append(name + ": allowed")
        except (OSError, ValueError):
            attempts.append(name + ": refused")
    attempts.append("securebits: %#x" % prctl.get_securebits())
    print(";".join(attempts), flush=True)
    sys.stdin.read()
    """
)


@pytest.fixture(params=["pid", "nopid"])
def dropped(request: pytest.FixtureRequest) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    process = subprocess.Popen(
        [PYTHON, "-c", _DROP_SCRIPT, request.param],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        yield process, request.param, line
    finally:
        process.kill()
        process.communicate(timeout=30)


def test_drop_leaves_exactly_the_documented_set(
    dropped: tuple[subprocess.Popen[str], str, str],
) -> None:
    process, mode, line = dropped
    assert line, process.stderr.read() if process.stderr else ""
    expected = WITH_PID if mode == "pid" else WITHOUT_PID
    caps = read_caps(process.pid)
    assert caps == {
        "CapInh": 0, "CapPrm": expected, "CapEff": expected, "CapBnd": expected, "CapAmb": 0,
        "NoNewPrivs": 1,
    }


def test_dropped_capabilities_cannot_come_back(
    dropped: tuple[subprocess.Popen[str], str, str],
) -> None:
    _process, mode, line = dropped
    attempts = dict(item.split(": ") for item in line.split(";"))
    if mode == "nopid":
        assert attempts["raise sys_ptrace"] == "refused"
    assert attempts["raise dac_override"] == "refused"
    assert attempts["clear noroot"] == "refused"
    assert attempts["clear no_new_privs"] == "refused"
    assert attempts["set keep_caps"] == "refused"
    assert attempts["clear no_setuid_fixup"] == "refused"


def test_securebits_are_set_and_locked(dropped: tuple[subprocess.Popen[str], str, str]) -> None:
    """Read back after the drop: noroot, no_setuid_fixup set; keep_caps clear; all locked.

    /proc/<pid>/status does not show securebits, so the live helper cannot be read from
    outside; it runs the same `drop_privileges`, whose check refuses to serve otherwise.
    """
    _process, _mode, line = dropped
    attempts = dict(item.split(": ") for item in line.split(";"))
    assert int(attempts["securebits"], 16) & 0x3F == SECUREBITS == 0x2F


def test_drop_without_locked_securebits_is_refused() -> None:
    script = textwrap.dedent(
        """
        from netlinkd import privileges
        privileges._lock_securebits = lambda: None
        try:
            privileges.drop_privileges(privileges.required_capabilities(False))
        except privileges.PrivilegeError as exc:
            print(exc)
        """
    )
    result = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, timeout=60)
    assert "securebits are 0x0 after the capability drop" in result.stdout, result.stderr


def test_drop_is_refused_once_threads_run() -> None:
    script = textwrap.dedent(
        """
        import threading
        from netlinkd.privileges import PrivilegeError, drop_privileges
        threading.Thread(target=threading.Event().wait, args=(30,), daemon=True).start()
        try:
            drop_privileges(frozenset({"net_admin"}))
        except PrivilegeError as exc:
            print(exc)
        """
    )
    result = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, timeout=60)
    assert "threads running" in result.stdout, result.stderr


def hello_as(socket: Path, uid: int, gid: int) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(
        """
        import sys, grpc
        from netagent_api import helper_pb2
        channel = grpc.insecure_channel("unix:" + sys.argv[1])
        hello = channel.unary_unary(
            "/netagent.helper.v1.Netlinkd/Hello",
            request_serializer=helper_pb2.HelloRequest.SerializeToString,
            response_deserializer=helper_pb2.HelloReply.FromString,
        )
        try:
            print("OK", hello(helper_pb2.HelloRequest(), timeout=10).version)
        except grpc.RpcError as exc:
            print("REFUSED", exc.code(), exc.details())
            sys.exit(3)
        """
    )
    return subprocess.run(
        unprivileged([PYTHON, "-c", script, str(socket)], uid=uid, gid=gid),
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_live_helper_threads_hold_only_the_documented_set(helper: HelperSandbox) -> None:
    assert hello_as(helper.socket, 65534, TEST_GID).returncode == 0
    threads = read_caps_all_threads(helper.helper_pid)
    assert len(threads) > 1, "gRPC threads are running"
    for tid, caps in threads.items():  # the default policy: no PID references, no ptrace
        assert caps["CapEff"] == WITHOUT_PID, tid
        assert caps["CapPrm"] == WITHOUT_PID, tid
        assert caps["CapBnd"] == WITHOUT_PID, tid
        assert (caps["CapInh"], caps["CapAmb"], caps["NoNewPrivs"]) == (0, 0, 1), tid
    for task in Path(f"/proc/{helper.helper_pid}/task").iterdir():
        status = proc_status_of(task / "status")
        assert status["Seccomp"] == "2", f"thread {task.name} runs without the mount filter"


def proc_status_of(path: Path) -> dict[str, str]:
    pairs = (line.split(":", 1) for line in path.read_text().splitlines() if ":" in line)
    return {key: value.strip() for key, value in pairs}


def test_live_helper_with_pid_refs_gets_ptrace_back(workdir: Path, keys: KeyPair) -> None:
    policy = workdir / "policy.toml"
    policy.write_text("allow_pid_refs = true\n")
    with HelperSandbox(workdir, keys.trust_key, policy_file=policy) as sandbox:
        for tid, caps in read_caps_all_threads(sandbox.helper_pid).items():
            assert caps["CapEff"] == caps["CapBnd"] == WITH_PID, tid


def test_socket_is_group_only(helper: HelperSandbox) -> None:
    info = helper.socket.stat()
    assert (info.st_mode & 0o777, info.st_uid, info.st_gid) == (0o660, 0, TEST_GID)
    directory = helper.socket.parent.stat()
    assert (directory.st_mode & 0o7777, directory.st_gid) == (0o750, TEST_GID)  # not setgid
    groups = proc_status(helper.helper_pid)["Groups"].split()
    assert groups == [str(TEST_GID)], "the socket group is the helper's only extra group"


def test_stranger_is_refused_and_group_member_is_served(helper: HelperSandbox) -> None:
    stranger = hello_as(helper.socket, 65534, 65534)
    assert stranger.returncode == 3, stranger.stdout + stranger.stderr
    assert "REFUSED" in stranger.stdout
    connect = "import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])"
    for path in (helper.socket, helper.socket.parent / "absent.sock"):
        raw = subprocess.run(
            unprivileged([PYTHON, "-c", connect, str(path)], uid=65534, gid=65534),
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert "PermissionError" in raw.stderr, f"{path}: the kernel refuses connect(2)"
    member = hello_as(helper.socket, 65534, TEST_GID)
    assert member.returncode == 0 and member.stdout.startswith("OK"), member.stderr
