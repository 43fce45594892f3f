"""A private dockerd for tests: own data/exec roots and socket, no bridge, no iptables.

The daemon runs with `--live-restore` so that containers survive a daemon restart, and
`<exec-root>/netns` is a shared bind mount made before the daemon starts, so namespace
files Docker mounts there propagate into helper sandboxes (`unshare --propagation slave`)
created afterwards.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors

IMAGE = "netagent-test-busybox"
BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "sleep", "ping", "ip", "ifconfig", "cat")
MNT_DETACH = 2
TEST_ROOT_PREFIX = "/tmp/na-dock-"
START_DEADLINE = 60.0
STOP_DEADLINE = 20.0
# Created by dockerd/containerd outside the roots we give them.
GLOBAL_LEFTOVERS = (
    "/etc/docker/key.json",
    "/run/docker/plugins",
    "/run/docker",
    "/run/containerd/s",
    "/run/containerd",
)


class DockerStartError(RuntimeError):
    pass


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _mount(source: str, target: str, flags: int) -> None:
    if _libc().mount(source.encode(), target.encode(), None, flags, None) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source} on {target}: {os.strerror(errno)}")


def _mount_points_under(root: str) -> list[str]:
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == root or point.startswith(root + "/"):
                points.append(point)
    return points


def unmount_all_under(root: str) -> None:
    """Detach every mount at or below `root`; raise if any survives a few rounds."""
    for _ in range(5):
        points = sorted(set(_mount_points_under(root)), key=len, reverse=True)
        if not points:
            return
        libc = _libc()
        for point in points:
            libc.umount2(point.encode(), MNT_DETACH)  # stacked mounts: the next round retries
        time.sleep(0.1)
    raise OSError(f"mounts left under {root}: {_mount_points_under(root)}")


def pids_mentioning(root: str) -> list[int]:
    """Processes whose command line names `root` (dockerd, containerd, shims)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if root.encode() in cmdline:
            found.append(int(entry.name))
    return found


def dockerd_pids() -> dict[int, bytes]:
    """Running dockerd processes and their command lines."""
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if (entry / "comm").read_text().strip() == "dockerd":
                found[int(entry.name)] = (entry / "cmdline").read_bytes()
        except OSError:
            continue
    return found


def _host_owned_leftovers() -> set[str]:
    """Global Docker files that belong to the host, not to a test dockerd.

    While only test dockerds (temp roots named TEST_ROOT_PREFIX) run, whatever exists was
    made by them; with no dockerd at all, or a host one, existing files are the host's.
    """
    running = dockerd_pids().values()
    if running and all(TEST_ROOT_PREFIX.encode() in cmdline for cmdline in running):
        return set()
    return {path for path in GLOBAL_LEFTOVERS if os.path.lexists(path)}


def children_of(parent: int) -> list[int]:
    children = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = entry.read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            children.append(int(entry.parent.name))
    return children


def _wait_gone(pid: int, deadline: float) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


class DockerDaemon:
    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix=os.path.basename(TEST_ROOT_PREFIX), dir="/tmp")
        self.data_root = os.path.join(self.root, "data")
        self.exec_root = os.path.join(self.root, "exec")
        self.netns_dir = os.path.join(self.exec_root, "netns")
        self.socket = os.path.join(self.root, "docker.sock")
        self.url = f"unix://{self.socket}"
        self.log_path = os.path.join(self.root, "dockerd.log")
        self.socket_gid: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._host_owned = _host_owned_leftovers()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        # Not os.path.ismount: a directory bound onto itself is on the same device, so it
        # reports False, and binding it again on a restart would hide the namespace files
        # of the containers that kept running (their SandboxKeys would turn empty).
        if self.netns_dir not in _mount_points_under(self.netns_dir):
            os.makedirs(self.netns_dir, exist_ok=True)
            _mount(self.netns_dir, self.netns_dir, 0x1000)  # MS_BIND
            _mount("none", self.netns_dir, 1 << 20)  # MS_SHARED
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self._command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_ready()
        if self.socket_gid is not None:
            self.grant_socket(self.socket_gid)

    def _command(self) -> list[str]:
        return [
            "dockerd",
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--host={self.url}",
            f"--pidfile={os.path.join(self.root, 'docker.pid')}",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            "--live-restore",
        ]

    def _wait_ready(self) -> None:
        end = time.monotonic() + START_DEADLINE
        while time.monotonic() < end:
            assert self._process is not None
            if self._process.poll() is not None:
                raise DockerStartError(f"dockerd exited: {self.log_tail()}")
            with contextlib.suppress(docker.errors.DockerException), self.client() as client:
                client.ping()
                return
            time.sleep(0.1)
        raise DockerStartError(f"dockerd not ready after {START_DEADLINE} s: {self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL. With --live-restore, running containers survive."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_DEADLINE)

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        """Remove every trace: containers, processes, mounts, roots, global files we made."""
        try:
            if self._process is not None and self._process.poll() is None:
                self.remove_all_containers()
        finally:
            self.stop()
            self._kill_leftover_processes()
            unmount_all_under(self.root)
            shutil.rmtree(self.root, ignore_errors=True)
            self._remove_global_leftovers()

    def remove_all_containers(self) -> None:
        with self.client() as client:
            for container in client.containers.list(all=True):
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True)

    def _kill_leftover_processes(self) -> None:
        leftovers = pids_mentioning(self.root)
        # Container processes are children of their shim; they would outlive it.
        for pid in [child for shim in leftovers for child in children_of(shim)] + leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not _wait_gone(pid, 5.0):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, 5.0)

    def _remove_global_leftovers(self) -> None:
        """The last test dockerd to stop removes what test dockerds created outside roots."""
        if dockerd_pids():
            return
        for path in GLOBAL_LEFTOVERS:
            if path in self._host_owned or not os.path.lexists(path):
                continue
            if os.path.isdir(path):
                with contextlib.suppress(OSError):
                    os.rmdir(path)
            else:
                os.unlink(path)

    def global_leftovers(self) -> list[str]:
        """Files outside the roots (e.g. /etc/docker/key.json) still there after `destroy`.

        Empty while another dockerd runs: the last one to stop removes them.
        """
        if dockerd_pids():
            return []
        return [p for p in GLOBAL_LEFTOVERS if p not in self._host_owned and os.path.lexists(p)]

    def grant_socket(self, gid: int) -> None:
        """Let group `gid` use the API socket (root-equivalent access; kept across restarts)."""
        self.socket_gid = gid
        os.chmod(self.root, 0o711)
        os.chown(self.socket, 0, gid)
        os.chmod(self.socket, 0o660)

    # ------------------------------------------------------------ helpers

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        client = docker.DockerClient(base_url=self.url, timeout=30)
        try:
            yield client
        finally:
            client.close()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"

    def import_busybox_image(self) -> str:
        rootfs = Path(self.root) / "rootfs"
        (rootfs / "bin").mkdir(parents=True, exist_ok=True)
        shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
        for applet in APPLETS:
            link = rootfs / "bin" / applet
            if not link.is_symlink():
                link.symlink_to("busybox")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["docker", "-H", self.url, "import", "-c", "ENV PATH=/bin", "-", IMAGE],
            stdin=tar.stdout,
            check=True,
            capture_output=True,
        )
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0:
            raise RuntimeError(f"tar of {rootfs} failed")
        return IMAGE
