"""Steps of the .deb lifecycle test: install, inspect, run the units' commands, remove.

Everything the daemons do to the network happens inside a `HostWorld`; the controller
runs on the real host (it only needs etcd and the helper's socket).
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import re
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pkg_sandbox import (
    HostWorld,
    capability_names,
    command_of,
    mdwe_argv,
    parse_service,
    proc_options,
    spawn_sandboxed,
)
from pkg_seccomp import seccomp_argv

from tests.harness import proc_status, stop_process, wait_until

UNIT_DIR = Path("/usr/lib/systemd/system")
CONFIG = Path("/etc/netagent/netagent.toml")
KEY = Path("/etc/netagent/controller.key")
TRUST = Path("/etc/netagent/trust.keys")
AUDIT_LOG = Path("/var/log/netagent/audit.log")
SOCKET = Path("/run/netagent/netlinkd.sock")
STATE_PATHS = ("/etc/netagent", "/var/lib/netagent", "/var/lib/netagent-controller",
               "/var/log/netagent", "/run/netagent")
PROGRAM_PATHS = ("/usr/sbin/netlinkd", "/usr/sbin/netagent-controller", "/usr/bin/netagent-ctl",
                 "/opt/netagent", "/usr/lib/netagent", str(UNIT_DIR / "netagent-netlinkd.service"))
ENABLED_LINKS = ("/etc/systemd/system/multi-user.target.wants/netagent-netlinkd.service",
                 "/etc/systemd/system/multi-user.target.wants/netagent-controller.service")

# CAP_NET_ADMIN (12), CAP_SYS_ADMIN (21), CAP_SYS_PTRACE (19): what netlinkd may keep.
HELPER_RUNTIME_CAPS = (1 << 12) | (1 << 21) | (1 << 19)

# path -> (mode, owner, group) after installation
EXPECTED_MODES = {
    "/etc/netagent": (0o755, "root", "root"),
    str(CONFIG): (0o644, "root", "root"),
    "/run/netagent": (0o750, "root", "netagent"),
    "/var/lib/netagent": (0o700, "root", "root"),
    "/var/lib/netagent-controller": (0o700, "netagent", "netagent"),
    "/var/log/netagent": (0o700, "root", "root"),
    "/usr/sbin/netlinkd": (0o755, "root", "root"),
    "/usr/bin/netagent-ctl": (0o755, "root", "root"),
}

# Made by netagent-setup.service on the first start, not by the postinst.
EXPECTED_KEY_MODES = {
    str(KEY): (0o600, "netagent", "netagent"),
    str(TRUST): (0o644, "root", "root"),
}


def sh(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False, env=env,
                            stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}):\n"
                             f"{result.stdout}{result.stderr}")
    return result


def installed() -> bool:
    result = sh(["dpkg-query", "-W", "-f=${Status}", "netagent"], check=False)
    return "install ok installed" in result.stdout


def apt(*args: str) -> str:
    return sh(["apt-get", "-y", "-q", "--no-install-recommends", *args]).stdout


def mode_of(path: str) -> tuple[int, str, str]:
    info = os.stat(path)
    return (stat.S_IMODE(info.st_mode), pwd.getpwuid(info.st_uid).pw_name,
            grp.getgrgid(info.st_gid).gr_name)


def wrong_modes(expected: dict[str, tuple[int, str, str]] = EXPECTED_MODES,
                ) -> dict[str, tuple[int, str, str]]:
    return {path: mode_of(path) for path, want in expected.items() if mode_of(path) != want}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def configure(etcd: str, label: str) -> None:
    """What an administrator would edit: the etcd endpoint and the label (Docker is off)."""
    text = CONFIG.read_text()
    text, edited = re.subn(r'(?m)^endpoints = "[^"]*"', f'endpoints = "{etcd}"', text)
    assert edited == 1, "the packaged config must name the etcd endpoints in [etcd]"
    text = re.sub(r"(?m)^# label = .*$", f'label = "{label}"', text)
    assert re.search(r"(?m)^no_docker = true$", text), "the packaged config must leave Docker off"
    CONFIG.write_text(text)


@dataclass
class RunningUnits:
    world: HostWorld
    helper: subprocess.Popen[bytes]
    controller: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        stop_process(self.controller)
        stop_process(self.helper)
        self.world.stop()


def _exec_lines(unit: dict[str, list[str]], key: str) -> list[tuple[str, list[str]]]:
    return [command_of(value) for value in unit.get(key, [])]


def unit_wrappers(unit: dict[str, list[str]]) -> list[str]:
    """MemoryDenyWriteExecute=, then SystemCallFilter= and RestrictAddressFamilies=."""
    mdwe = mdwe_argv() if unit.get("MemoryDenyWriteExecute") == ["yes"] else []
    return [*mdwe, *seccomp_argv(unit)]


def start_helper(log: Path) -> RunningUnits:
    """netagent-setup.service (unsandboxed, as root, in the world's "host" mount namespace),
    then netagent-netlinkd.service as systemd would run it, inside a scratch world."""
    setup = parse_service(UNIT_DIR / "netagent-setup.service")
    unit = parse_service(UNIT_DIR / "netagent-netlinkd.service")
    assert "ExecStartPre" not in unit, "the helper's set-up belongs in netagent-setup.service"
    world = HostWorld().start()
    try:
        for prefix, argv in _exec_lines(setup, "ExecStart"):
            assert prefix == "", f"unexpected ExecStart prefix {prefix!r}"
            sh(world.enter() + argv)
        [(_, argv)] = _exec_lines(unit, "ExecStart")
        helper = world.spawn_service(
            argv, read_write_paths=unit["ReadWritePaths"][-1].split(),
            capabilities=capability_names(unit["CapabilityBoundingSet"][-1]), log=log,
            wrappers=unit_wrappers(unit), groups=unit["SupplementaryGroups"][-1].split())
    except BaseException:
        world.stop()
        raise
    running = RunningUnits(world, helper)
    try:
        wait_until(lambda: SOCKET.is_socket() or helper.poll() is not None, timeout=60,
                   what="the helper's socket", describe=lambda: log.read_text(errors="replace"))
        assert helper.poll() is None, log.read_text(errors="replace")
    except BaseException:
        running.stop()
        raise
    return running


def start_controller(running: RunningUnits, log: Path) -> None:
    """netagent-controller.service: ExecStart as netagent."""
    unit = parse_service(UNIT_DIR / "netagent-controller.service")
    assert "ExecStartPre" not in unit
    [(_, argv)] = _exec_lines(unit, "ExecStart")
    running.controller = spawn_sandboxed(
        [], argv, read_write_paths=[], capabilities=[], log=log, user=unit["User"][-1],
        wrappers=unit_wrappers(unit), proc=proc_options(unit))


def world_has_link(world: HostWorld, netns: str, name: str) -> bool:
    return world.run(["ip", "-n", netns, "link", "show", name]).returncode == 0


def host_netns() -> str:
    return sh(["ip", "netns", "list"]).stdout


def leftovers(paths: Sequence[str]) -> list[str]:
    return [path for path in paths if os.path.lexists(path)]


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def daemon_status(root: subprocess.Popen[bytes], module: str) -> dict[str, str]:
    """/proc status of the process below `root` running `from <module> import main`."""
    pending = [root.pid]
    while pending:
        pid = pending.pop()
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if f"from {module} import main" in cmdline:
            return proc_status(pid)
        pending += _children(pid)
    raise AssertionError(f"no process running {module} below pid {root.pid}")
