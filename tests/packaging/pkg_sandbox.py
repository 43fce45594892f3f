"""Run a packaged systemd unit's commands the way systemd would, without systemd as PID 1.

- `parse_service(path)`: the `[Service]` settings of a unit file, each key to its values.
- `HostWorld`: a scratch "host" (`unshare --mount --net --pid --fork --mount-proc`) with a
  private tmpfs on /run/netns and a loopback-only network. Inside it PID 1 is the world's
  holder, so `/proc/1/root` (used by `netns-propagation join-host`) means this world.
- `HostWorld.run_plus(argv)`: an `ExecStartPre=+` command (no sandbox, world's namespaces).
- `HostWorld.spawn_service(...)`: an `ExecStart=` command with the unit's file-system
  sandbox reproduced: a new mount namespace with *slave* propagation (what systemd sets
  up), ReadWritePaths bound read-write, `/` read-only (ProtectSystem=strict), a private
  /tmp (PrivateTmp), /home and /root hidden (ProtectHome), then `setpriv` for the
  capability bounding set, user, group and no_new_privs.

MemoryDenyWriteExecute=yes is reproduced with prctl(PR_SET_MDWE) (`mdwe_argv`), and
SystemCallFilter/RestrictAddressFamilies/RestrictNamespaces with libseccomp (`pkg_seccomp`).
ProtectProc/ProcSubset become a private /proc with hidepid=/subset=.
What is *not* reproduced: PrivateDevices, IPAddressDeny,
ProtectKernelModules/Logs, ProtectClock, ProtectHostname.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
_HOLDER = (
    "mkdir -p /run/netns && mount -t tmpfs -o mode=0755 netagent-pkg-test /run/netns"
    " && ip link set lo up && echo ready && exec sleep infinity"
)


def parse_service(path: Path) -> dict[str, list[str]]:
    """Settings of the `[Service]` section; repeated keys keep every value in order."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section == "Service" and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def command_of(value: str) -> tuple[str, list[str]]:
    """Split an Exec*= value into its prefix characters (+, -, !, @) and its argv."""
    prefix = ""
    while value and value[0] in "+-!@:":
        prefix, value = prefix + value[0], value[1:]
    return prefix, shlex.split(value)


def capability_names(value: str) -> list[str]:
    return [name.removeprefix("CAP_").lower() for name in value.split()]


def proc_options(unit: dict[str, list[str]]) -> str:
    """Mount options of a private /proc for ProtectProc= and ProcSubset= ("" if none)."""
    options = []
    protect = unit.get("ProtectProc", ["default"])[-1]
    if protect != "default":
        options.append(f"hidepid={protect}")
    if unit.get("ProcSubset", ["all"])[-1] == "pid":
        options.append("subset=pid")
    return ",".join(options)


def sandbox_script(read_write_paths: Sequence[str], proc: str = "") -> str:
    """Shell commands that rebuild ProtectSystem=strict, ReadWritePaths, PrivateTmp,
    ProtectHome, ProtectKernelTunables and (with `proc` options) ProtectProc/ProcSubset
    inside a fresh slave mount namespace."""
    steps = [f"mount --bind {shlex.quote(p)} {shlex.quote(p)}" for p in read_write_paths]
    steps += [
        "mount -o remount,bind,ro /",
        # ProtectKernelTunables=yes (both units): /proc/sys and /sys read-only.
        "mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys",
        "mount --bind /sys /sys && mount -o remount,bind,ro /sys",
        *_private_tmp_keeping(CHECKOUT),
        "for d in /home /root /run/user; do [ -d $d ] && mount -t tmpfs -o mode=0 none $d; done",
        "true",
    ]
    if proc:
        steps.append(f"mount -t proc -o {shlex.quote(proc)} proc /proc")
    return " && ".join(steps)


def _private_tmp_keeping(checkout: Path) -> list[str]:
    """PrivateTmp=yes. A checkout under /tmp (its .venv runs the service under test) is
    bound back read-only, as the installed /opt/netagent would be visible."""
    if not checkout.is_relative_to("/tmp"):
        return ["mount -t tmpfs -o mode=1777 private-tmp /tmp"]
    path = shlex.quote(str(checkout))
    return [
        f"exec 9<{path}",  # the checkout, still reachable once /tmp is covered
        "mount -t tmpfs -o mode=1777 private-tmp /tmp",
        f"mkdir -p {path} && mount --no-canonicalize --bind /proc/self/fd/9 {path} && exec 9<&-",
        f"mount -o remount,bind,ro {path}",
    ]


class HostWorld:
    """A scratch mount+network+PID namespace standing in for the host."""

    def __init__(self) -> None:
        self._unshare: subprocess.Popen[bytes] | None = None
        self.pid = 0

    def start(self) -> HostWorld:
        self._unshare = subprocess.Popen(
            ["unshare", "--mount", "--net", "--pid", "--fork", "--mount-proc",
             "--propagation", "private", "sh", "-c", _HOLDER],
            stdout=subprocess.PIPE, start_new_session=True,
        )
        assert self._unshare.stdout is not None
        if self._unshare.stdout.readline().strip() != b"ready":
            raise RuntimeError("the scratch host world (unshare) failed to start")
        children = Path(f"/proc/{self._unshare.pid}/task/{self._unshare.pid}/children")
        self.pid = int(children.read_text().split()[0])
        return self

    def enter(self) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-m", "-n", "-p", "--"]

    def run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.enter(), *argv], capture_output=True, text=True,
                              check=False, stdin=subprocess.DEVNULL)

    def run_plus(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """An ExecStartPre=+ command: full privileges, the world's own namespaces."""
        return self.run(argv)

    def spawn_service(
        self,
        argv: Sequence[str],
        *,
        read_write_paths: Sequence[str],
        capabilities: Sequence[str],
        log: Path,
        user: str = "root",
        wrappers: Sequence[str] = (),
        groups: Sequence[str] = (),
    ) -> subprocess.Popen[bytes]:
        """An ExecStart= command inside the unit's reproduced file-system sandbox."""
        return spawn_sandboxed(self.enter(), argv, read_write_paths=read_write_paths,
                               capabilities=capabilities, log=log, user=user,
                               wrappers=wrappers, groups=groups)

    def stop(self) -> None:
        """SIGKILL the world's process group (its PID 1 takes the whole world with it)."""
        proc = self._unshare
        if proc is None or proc.poll() is not None:
            return
        if proc.pid <= 1:
            raise RuntimeError(f"refusing to signal process group {proc.pid}")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def setpriv_argv(
    user: str, capabilities: Sequence[str], groups: Sequence[str] = ()
) -> list[str]:
    """`groups`: SupplementaryGroups= of a root unit."""
    bounding = ",".join(["-all", *(f"+{cap}" for cap in capabilities)])
    argv = ["setpriv", "--bounding-set", bounding, "--no-new-privs"]
    if groups:
        argv += ["--groups", ",".join(groups)]
    if user != "root":
        argv += ["--reuid", user, "--regid", user, "--init-groups",
                 "--inh-caps", "-all", "--ambient-caps", "-all"]
    return [*argv, "--"]


# MemoryDenyWriteExecute=yes, as systemd >= 253 applies it: prctl(PR_SET_MDWE,
# PR_MDWE_REFUSE_EXEC_GAIN), inherited across execve (Linux >= 6.3).
_MDWE = (
    "import ctypes, os, sys\n"
    "if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:\n"
    "    sys.exit('PR_SET_MDWE failed: ' + os.strerror(ctypes.get_errno()))\n"
    "os.execvp(sys.argv[1], sys.argv[1:])\n"
)


def mdwe_argv() -> list[str]:
    return ["/usr/bin/python3", "-I", "-c", _MDWE]


def spawn_sandboxed(
    enter: Sequence[str],
    argv: Sequence[str],
    *,
    read_write_paths: Sequence[str],
    capabilities: Sequence[str],
    log: Path,
    user: str = "root",
    wrappers: Sequence[str] = (),
    proc: str = "",
    groups: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """`wrappers`: a command prefix run after setpriv (e.g. `mdwe_argv()`, seccomp);
    `proc`: options of a private /proc (`proc_options(unit)`)."""
    command = [*setpriv_argv(user, capabilities, groups), *wrappers, *argv]
    inner = " ".join(shlex.quote(a) for a in command)
    script = f"{sandbox_script(read_write_paths, proc)} && exec {inner}"
    with open(log, "wb") as out:
        return subprocess.Popen(
            [*enter, "unshare", "--mount", "--propagation", "slave", "sh", "-c", script],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
