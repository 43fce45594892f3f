"""A named namespace created by the sandboxed helper must be visible to `ip netns` on
the host, although the unit gives the helper its own (slave) mount namespace.

The unit's mount setup is reproduced without systemd (see `pkg_sandbox`). The helper's
own `netlinkd.netns.create_named` makes the namespace, exactly as during a batch.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pkg_common import PACKAGING, REPO
from pkg_sandbox import HostWorld, capability_names, parse_service, spawn_sandboxed

from tests.harness import stop_process

PROPAGATION = [str(REPO / ".venv/bin/python"), "-I", str(PACKAGING / "lib/netns_propagation.py")]
UNIT = parse_service(PACKAGING / "systemd/netagent-netlinkd.service")
CAPS = capability_names(UNIT["CapabilityBoundingSet"][-1])
RW_PATHS = ["/run/netns"]

pytestmark = pytest.mark.root


def _create_named_argv(name: str) -> list[str]:
    code = f"from netlinkd.netns import create_named; create_named({name!r})"
    return [str(REPO / ".venv/bin/python"), "-c", code]


def _run_in_service(
    enter: list[str], argv: list[str], log: Path
) -> tuple[int, str]:
    proc = spawn_sandboxed(enter, argv, read_write_paths=RW_PATHS, capabilities=CAPS, log=log)
    try:
        code = proc.wait(timeout=60)
    finally:
        stop_process(proc)
    return code, log.read_text(errors="replace")


@pytest.fixture
def world() -> Iterator[HostWorld]:
    host = HostWorld().start()
    try:
        yield host
    finally:
        host.stop()


def _usable_in(world: HostWorld, name: str) -> bool:
    return world.run(["ip", "netns", "exec", name, "true"]).returncode == 0


def test_without_joining_the_namespace_stays_inside_the_service(
    world: HostWorld, tmp_path: Path
) -> None:
    """The pitfall exists: the bind mount does not reach the host (only an empty file)."""
    assert world.run_plus([*PROPAGATION, "share-host"]).returncode == 0
    code, log = _run_in_service(world.enter(), _create_named_argv("napkg-alone"),
                                tmp_path / "svc.log")
    assert code == 0, log
    assert not _usable_in(world, "napkg-alone")


def test_joined_service_namespace_is_visible_on_the_host(
    world: HostWorld, tmp_path: Path
) -> None:
    pre = world.run_plus([*PROPAGATION, "share-host"])
    assert pre.returncode == 0, pre.stderr
    argv = [*PROPAGATION, "join-host", "--", *_create_named_argv("napkg-joined")]
    code, log = _run_in_service(world.enter(), argv, tmp_path / "svc.log")
    assert code == 0, log
    assert "napkg-joined" in world.run(["ip", "netns", "list"]).stdout
    assert _usable_in(world, "napkg-joined")


def test_on_the_real_host(tmp_path: Path) -> None:
    """Same proof against this machine's own /run/netns; the namespace is removed after."""
    name = f"napkg-{uuid.uuid4().hex[:8]}"
    subprocess.run([*PROPAGATION, "share-host", "--host-pid", str(os.getpid())], check=True)
    argv = [*PROPAGATION, "join-host", "--host-pid", str(os.getpid()), "--",
            *_create_named_argv(name)]
    try:
        code, log = _run_in_service([], argv, tmp_path / "svc.log")
        assert code == 0, log
        listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        assert name in listing.stdout
        assert subprocess.run(["ip", "netns", "exec", name, "true"]).returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        Path("/run/netns", name).unlink(missing_ok=True)
