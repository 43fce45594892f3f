"""A Debian machine booted with systemd as PID 1 in a container of a private dockerd.

`--privileged` is refused on this kind of VM (it lacks CAP_SYS_RESOURCE), so the container
gets every capability but that one, no seccomp filter (systemd installs its own per unit),
the host's cgroup hierarchy read-write under a cgroup parent of its own (removed afterwards)
and no network but its loopback (`--network none`): nothing it does to links or
namespaces can reach the host's.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.docker.private_dockerd import DockerDaemon

CGROUP_ROOT = Path("/sys/fs/cgroup")
BOOT_DEADLINE_S = 120.0
UNITS = ("netagent-netlinkd.service", "netagent-controller.service")


class Machine:
    def __init__(self, daemon: DockerDaemon, image: str, name: str) -> None:
        self.daemon = daemon
        self.image = image
        self.name = name

    def docker(self, *args: str, check: bool = True,
               stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DOCKER_CONFIG": os.path.join(self.daemon.root, "client")}
        result = subprocess.run(["docker", "-H", self.daemon.url, *args], input=stdin,
                                capture_output=True, env=env, check=False)
        done = subprocess.CompletedProcess(result.args, result.returncode,
                                           result.stdout.decode(errors="replace"),
                                           result.stderr.decode(errors="replace"))
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args[:6])} failed ({done.returncode}):\n"
                                 f"{done.stdout[-3000:]}{done.stderr[-3000:]}")
        return done

    def sh(self, command: str, check: bool = True, stdin: bytes | None = None) -> str:
        """Run `command` with /bin/sh in the machine (in PID 1's namespaces)."""
        flags = ["-i"] if stdin is not None else []
        return self.docker("exec", *flags, self.name, "/bin/sh", "-c", command, check=check,
                           stdin=stdin).stdout

    def wait_until_active(self, units: Sequence[str] = UNITS,
                          deadline_s: float = BOOT_DEADLINE_S) -> None:
        """Wait until every unit is active; fail with their status and journal if one
        fails or the deadline passes."""
        end = time.monotonic() + deadline_s
        states: list[str] = []
        while time.monotonic() < end:
            result = self.docker("exec", self.name, "systemctl", "is-active", *units,
                                 check=False)
            states = result.stdout.split()
            if states == ["active"] * len(units):
                return
            if "failed" in states:
                break
            time.sleep(0.5)
        raise AssertionError(f"units {list(units)} are {states}:\n{self.diagnostics()}")

    def diagnostics(self) -> str:
        return self.sh("systemctl --no-pager status 'netagent*' etcd.service 2>&1; "
                       "journalctl --no-pager -n 80 -u 'netagent*' 2>&1", check=False)


@contextlib.contextmanager
def booted(daemon: DockerDaemon, image: str, label: str) -> Iterator[Machine]:
    """Boot `image` with /sbin/init as PID 1; remove the container and its cgroups after."""
    name = f"netagent-{label}-{uuid.uuid4().hex[:8]}"
    parent = f"netagent-systest-{uuid.uuid4().hex[:8]}"
    machine = Machine(daemon, image, name)
    try:
        machine.docker(
            "run", "--detach", "--name", name, "--hostname", label,
            "--network", "none",
            "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
            "--security-opt", "seccomp=unconfined",
            "--volume", "/sys/fs/cgroup:/sys/fs/cgroup:rw", f"--cgroup-parent=/{parent}",
            "--tmpfs", "/run:rw,exec,mode=0755", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
            "--env", "container=docker", "--stop-signal", "SIGRTMIN+3",
            image, "/sbin/init",
        )
        yield machine
    finally:
        machine.docker("rm", "--force", "--volumes", name, check=False)
        remove_cgroups(parent)


def remove_cgroups(parent: str) -> None:
    """Remove the (empty, once the container is gone) cgroup trees named `parent`."""
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / parent
        if not top.is_dir():
            continue
        for directory, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
            with contextlib.suppress(OSError):
                os.rmdir(directory)


def leftover_cgroups(parent_prefix: str = "netagent-systest-") -> list[str]:
    return [str(p) for p in CGROUP_ROOT.glob(f"*/{parent_prefix}*")]


def exposure(machine: Machine, unit: str) -> float:
    """`systemd-analyze security` of a loaded unit, as the booted systemd computes it."""
    text = machine.sh(f"systemd-analyze security --no-pager {unit}")
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", text)
    assert found is not None, text[-2000:]
    return float(found.group(1))
