"""The helper's start-up steps in server.py, each on real directories, sockets and groups
(as root, in one process; the group changes in a child process)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import grpc
import pytest

from netlinkd import server
from netlinkd.errors import NamespaceGone, PolicyRefused, StartupError

GID = 4321


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_missing_socket_directory_is_made_under_an_existing_or_new_parent(
    tmp_path: Path,
) -> None:
    new_parent = tmp_path / "run" / "netagent"
    server.prepare_socket_path(str(new_parent / "netlinkd.sock"), GID)
    assert _mode(tmp_path / "run") == 0o755
    existing_parent = tmp_path / "run" / "other"
    server.prepare_socket_path(str(existing_parent / "netlinkd.sock"), GID)
    info = existing_parent.stat()
    assert (_mode(existing_parent), info.st_uid, info.st_gid) == (0o750, 0, GID)


def test_a_directory_already_netlinkds_own_is_left_as_it_is_whatever_it_holds(
    tmp_path: Path,
) -> None:
    own = tmp_path / "netagent"
    own.mkdir()
    os.chown(own, 0, GID)
    own.chmod(0o750)
    (own / "left-by-an-operator").touch()
    server.prepare_socket_path(str(own / "netlinkd.sock"), GID)
    assert (own / "left-by-an-operator").exists()


@pytest.mark.parametrize(("count", "listed"), [
    (3, "a0, a1, a2)"), (4, "a0, a1, a2, ...)"),
])
def test_a_shared_directory_is_refused_naming_at_most_three_of_its_files(
    tmp_path: Path, count: int, listed: str
) -> None:
    for n in range(count):
        (tmp_path / f"a{n}").touch()
    with pytest.raises(StartupError) as refused:
        server.prepare_socket_path(str(tmp_path / "x.sock"), GID)
    assert f"(it holds {listed}" in str(refused.value)


def test_a_stale_socket_is_removed_and_a_live_one_refused_before_anything_changes(
    tmp_path: Path,
) -> None:
    own = tmp_path / "netagent"
    own.mkdir(mode=0o755)
    path = own / "netlinkd.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
        live.bind(str(path))
        live.listen()
        with pytest.raises(StartupError, match="another process is serving"):
            server.prepare_socket_path(str(path), GID)
        assert (_mode(own), own.stat().st_gid) == (0o755, 0), "the live helper's directory"
        assert path.exists()
    assert stat.S_ISSOCK(path.lstat().st_mode)  # closed: nobody serves on it any more
    server.prepare_socket_path(str(path), GID)
    assert not path.exists()


def _bind(path: Path, inner: Path) -> tuple[socket.socket, int]:
    async def bind() -> tuple[socket.socket, int]:
        grpc_server = grpc.aio.server()
        try:
            public = server.bind_socket(grpc_server, str(path), GID, str(inner))
        finally:
            await grpc_server.stop(None)
        umask = os.umask(0o22)
        os.umask(umask)
        return public, umask

    return asyncio.run(bind())


def test_the_sockets_are_bound_0600_and_0660_root_and_the_group(tmp_path: Path) -> None:
    inner = tmp_path / "state" / "grpc.sock"
    inner.parent.mkdir(mode=0o700)
    inner.touch()  # a stale inner socket file from a killed helper
    path = tmp_path / "netlinkd.sock"
    before = os.umask(0o22)
    try:
        public, umask = _bind(path, inner)
    finally:
        os.umask(before)
    with public:
        assert umask == 0o22, "the umask is restored"
        assert stat.S_ISSOCK(inner.lstat().st_mode) and _mode(inner) == 0o600
        info = path.lstat()
        assert (_mode(path), info.st_uid, info.st_gid) == (0o660, 0, GID)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))  # listening: the front accepts on it


def test_a_public_socket_that_cannot_be_bound_is_closed(tmp_path: Path) -> None:
    async def attempt() -> None:
        grpc_server = grpc.aio.server()
        try:
            server.bind_socket(grpc_server, str(tmp_path / "no-such-dir" / "netlinkd.sock"), GID,
                               str(tmp_path / "grpc.sock"))
        except StartupError:
            pass
        finally:
            await grpc_server.stop(None)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        asyncio.run(attempt())
        gc.collect()
    assert not [w for w in caught if "unclosed <socket.socket" in str(w.message)]


def test_the_state_directory_is_made_0700_and_one_others_may_write_is_refused(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    server._prepare_state_dir(str(state))
    assert _mode(state) == 0o700
    server._prepare_state_dir(str(state))  # again, existing
    state.chmod(0o777)
    with pytest.raises(StartupError):
        server._prepare_state_dir(str(state))


def test_the_socket_group_is_a_name_a_number_or_none() -> None:
    assert server.resolve_group(None) == 0
    assert server.resolve_group("root") == 0
    assert server.resolve_group(str(GID)) == GID
    with pytest.raises(StartupError, match="socket group 'no-such-group-x' is not a known group"):
        server.resolve_group("no-such-group-x")


_JOIN = """
import os, sys
from netlinkd import server
from netlinkd.errors import StartupError
os.setgroups([int(g) for g in sys.argv[2].split(",") if g])
if sys.argv[1] == "nonroot":
    os.setgid(65534)
    os.setuid(65534)
try:
    server.join_socket_group(int(sys.argv[3]))
except StartupError:
    print("refused")
else:
    print(sorted(os.getgroups()))
"""


@pytest.mark.parametrize(("who", "groups", "gid", "after"), [
    ("root", "1,2", GID, f"[{GID}]"),
    ("root", "1,2", 0, "[]"),
    ("root", str(GID), GID, f"[{GID}]"),
    ("nonroot", f"7,{GID}", GID, f"[7, {GID}]"),  # may give the socket the group already
    ("nonroot", "7", 0, "[7]"),
    ("nonroot", "7", GID, "refused"),
])
def test_the_socket_group_becomes_the_only_supplementary_group(
    who: str, groups: str, gid: int, after: str
) -> None:
    run = subprocess.run([sys.executable, "-c", _JOIN, who, groups, str(gid)],
                         capture_output=True, text=True, check=True, timeout=60)
    assert run.stdout.strip() == after, run.stderr


def test_a_gone_namespace_is_news_and_any_other_failure_a_warning() -> None:
    assert server._result_level(None) == logging.INFO
    assert server._result_level(NamespaceGone("/run/netns/x is gone")) == logging.INFO
    assert server._result_level(PolicyRefused("no")) == logging.WARNING
