"""`HelperSandbox`: the privileged helper running in a scratch world of its own.

A *holder* process (`unshare --mount --net`, then `sleep infinity`) anchors a private
mount namespace and a scratch network namespace. `/run/netns` is a private tmpfs inside
it, so named namespaces made there (the seed's ns1/ns2) never collide with the host and
vanish with the holder. `netlinkd serve` is started inside that world with `nsenter`, so
`restart()` replaces only the helper process and keeps every kernel object as it was.
The host's own interfaces cannot be touched from here.

`netns_files` is a shared bind mount made before the holder starts: namespace files
mounted there from the host (`new_netns_file`) propagate into the sandbox, so FILE_REF
paths exist for the controller (host view) and the helper (sandbox view) alike.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from .paths import EMPTY_CONFIG, TEST_GID, venv_tool
from .waiting import wait_until

_HOLDER_SCRIPT = (
    "mkdir -p /run/netns && mount -t tmpfs -o mode=0755 netagent-test /run/netns"
    " && ip link set lo up && echo ready && exec sleep infinity"
)


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL it after `grace` seconds; reap it."""
    if proc is None or proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


class SandboxError(RuntimeError):
    """The sandbox or the helper inside it could not start; the message holds its log."""


def _run_host(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SandboxError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr}")


class HelperSandbox:
    """Runs `netlinkd serve` inside a scratch mount+network namespace.

    `pid` is the holder (use it with `nsenter -t`); `helper_pid` is netlinkd itself.
    Files: `socket`, `audit_log`, `state_dir`, `log_path`, all under `workdir`.
    """

    def __init__(
        self,
        workdir: Path,
        trust_key: Path,
        *,
        policy_file: Path | None = None,
        socket_gid: int = TEST_GID,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.workdir = workdir
        self.trust_key = trust_key
        self.policy_file = policy_file
        self.socket_gid = socket_gid
        self.extra_args = extra_args
        self.socket = workdir / "run" / "netlinkd.sock"
        self.audit_log = workdir / "audit.log"
        self.state_dir = workdir / "state"
        self.log_path = workdir / "netlinkd.log"
        self.netns_files = workdir / "nsfiles"
        self.program: tuple[str, ...] = (venv_tool("netlinkd"),)
        """What runs as netlinkd (a test may put a wrapper around it, see tests/faults)."""
        self.env: dict[str, str] = {}
        """Extra environment of the next `start_helper()`."""
        self._holder: subprocess.Popen[bytes] | None = None
        self._helper: subprocess.Popen[bytes] | None = None
        self._children: list[subprocess.Popen[bytes]] = []

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> HelperSandbox:
        self._prepare_dirs()
        self._start_holder()
        self.start_helper()
        return self

    def _prepare_dirs(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o711)
        self.socket.parent.mkdir(exist_ok=True)
        os.chown(self.socket.parent, 0, self.socket_gid)
        os.chmod(self.socket.parent, 0o750)
        self.state_dir.mkdir(mode=0o700, exist_ok=True)
        self.netns_files.mkdir(mode=0o755, exist_ok=True)
        _run_host(["mount", "--bind", str(self.netns_files), str(self.netns_files)])
        _run_host(["mount", "--make-shared", str(self.netns_files)])

    def _start_holder(self) -> None:
        self._holder = subprocess.Popen(
            ["unshare", "--mount", "--net", "--propagation", "slave", "sh", "-c", _HOLDER_SCRIPT],
            stdout=subprocess.PIPE, start_new_session=True,
        )
        assert self._holder.stdout is not None
        line = self._holder.stdout.readline()
        self._holder.stdout.close()
        if line.strip() != b"ready":
            stop_process(self._holder)
            raise SandboxError("the sandbox holder (unshare --mount --net) failed to start")

    @property
    def pid(self) -> int:
        if self._holder is None:
            raise SandboxError("the sandbox is not started; call start() first")
        return self._holder.pid

    @property
    def helper_pid(self) -> int:
        if self._helper is None:
            raise SandboxError("netlinkd is not running in the sandbox; call start_helper()")
        return self._helper.pid

    def helper_command(self) -> list[str]:
        command = [
            *self.program, "serve", "--socket", str(self.socket),
            "--trust-key", str(self.trust_key), "--audit-log", str(self.audit_log),
            "--state-dir", str(self.state_dir), "--socket-group", str(self.socket_gid),
        ]
        if self.policy_file is not None:
            command += ["--policy", str(self.policy_file)]
        if "--config" not in self.extra_args:
            command += ["--config", str(EMPTY_CONFIG)]
        return command + list(self.extra_args)

    def start_helper(self) -> None:
        """Start netlinkd in the sandbox and wait until its socket accepts connections."""
        self.socket.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            self._helper = subprocess.Popen(
                ["nsenter", "-t", str(self.pid), "-m", "-n", *self.helper_command()],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, **self.env},
            )
        wait_until(self._helper_ready, timeout=30, what=f"netlinkd socket {self.socket}",
                   describe=self.log_tail)

    def _helper_ready(self) -> bool:
        assert self._helper is not None
        if self._helper.poll() is not None:
            raise SandboxError(
                f"netlinkd exited with {self._helper.returncode}; log:\n{self.log_tail()}"
            )
        # The helper gives the socket its group right after binding it.
        return self.socket.is_socket() and self.socket.stat().st_gid == self.socket_gid

    def helper_exited(self) -> bool:
        """Whether netlinkd has exited (killed, crashed or stopped)."""
        return self._helper is None or self._helper.poll() is not None

    def stop_helper(self) -> None:
        stop_process(self._helper)
        self._helper = None

    def restart(self) -> None:
        """Replace the helper process; namespaces, links and the state dir stay."""
        self.stop_helper()
        self.start_helper()

    def stop(self) -> None:
        """Stop the helper, every spawned child and the holder: the world vanishes."""
        try:
            self.stop_helper()
            for child in self._children:
                stop_process(child, grace=2.0)
            self._children.clear()
        finally:
            stop_process(self._holder, grace=2.0)
            self._holder = None
            self._unmount_netns_files()

    def _unmount_netns_files(self) -> None:
        mounts = Path("/proc/self/mountinfo").read_text()
        target = str(self.netns_files)
        while any(line.split()[4] == target for line in mounts.splitlines()):
            _run_host(["umount", "--recursive", "--lazy", target])
            mounts = Path("/proc/self/mountinfo").read_text()

    def new_netns_file(self, name: str) -> Path:
        """A fresh network namespace bound at `netns_files/<name>` (seen inside too)."""
        path = self.netns_files / name
        path.touch()
        _run_host(["unshare", f"--net={path}", "true"])
        return path

    def remove_files(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> HelperSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- looking inside ----------------------------------------------------------------

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def enter_command(self, *argv: str) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-m", "-n", *argv]

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside the sandbox (its mount and network namespace)."""
        result = subprocess.run(
            self.enter_command(*argv), capture_output=True, text=True, check=False
        )
        if check and result.returncode != 0:
            raise SandboxError(
                f"{' '.join(argv)} failed in the sandbox ({result.returncode}): {result.stderr}"
            )
        return result

    def spawn(self, *argv: str) -> subprocess.Popen[bytes]:
        """Start a long-running process inside the sandbox; stop() kills it."""
        child = subprocess.Popen(
            self.enter_command(*argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._children.append(child)
        return child

    def ip(self, *args: str, netns: str | None = None, check: bool = True) -> str:
        """`ip [-n NAME] ARGS` inside the sandbox; returns stdout."""
        where = ["-n", netns] if netns is not None else []
        return self.run("ip", *where, *args, check=check).stdout

    def ip_json(self, *args: str, netns: str | None = None) -> Any:
        """`ip -j [-n NAME] ARGS` parsed; an empty answer is []."""
        text = self.ip("-j", *args, netns=netns).strip()
        return json.loads(text) if text else []

    def netns_list(self) -> list[str]:
        """Names under the sandbox's private /run/netns."""
        return sorted(entry["name"] for entry in self.ip_json("netns", "list"))
