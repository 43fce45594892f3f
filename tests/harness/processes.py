"""The unprivileged controller process, and the `netagent-ctl` command-line client."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from .paths import EMPTY_CONFIG, TEST_GID, UNPRIVILEGED_UID, venv_tool
from .sandbox import stop_process


def unprivileged(argv: list[str], uid: int = UNPRIVILEGED_UID, gid: int = TEST_GID) -> list[str]:
    """`argv` wrapped to run as `uid`/`gid` with no groups, no capabilities at all."""
    return [
        "setpriv", "--reuid", str(uid), "--regid", str(gid), "--clear-groups",
        "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", *argv,
    ]


def _clean_env() -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/nonexistent",
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
    }


def _default_config(args: tuple[str, ...] | list[str]) -> list[str]:
    return [] if "--config" in args else ["--config", str(EMPTY_CONFIG)]


class ControllerProcess:
    """`netagent-controller run` as uid 65534 with no capabilities.

    Output goes to `log_path` (appended across restarts). `extra_args` are passed after
    the contract flags, e.g. ("--resync-interval", "1"); `extra_env` is added to its
    otherwise clean environment (e.g. DOCKER_HOST). `state_dir`, if set, is made (owned by
    the controller's uid, 0700) and passed as `--state-dir`.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        etcd: str,
        label: str,
        socket: Path,
        signing_key: Path,
        extra_args: tuple[str, ...] = (),
        extra_env: dict[str, str] | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.state_dir = state_dir
        self.extra_env = dict(extra_env or {})
        self.etcd = etcd
        self.label = label
        self.socket = socket
        self.signing_key = signing_key
        self.extra_args = extra_args
        self.log_path = workdir / "controller.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return unprivileged([
            venv_tool("netagent-controller"), "run", "--etcd", self.etcd, "--label", self.label,
            "--socket", str(self.socket), "--signing-key", str(self.signing_key),
            *self.extra_args, *_default_config(self.extra_args),
            *(["--state-dir", str(self.state_dir)] if self.state_dir else []),
        ])

    def start(self) -> ControllerProcess:
        if self.state_dir is not None and not self.state_dir.exists():
            self.state_dir.mkdir(mode=0o700)
            os.chown(self.state_dir, UNPRIVILEGED_UID, TEST_GID)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, cwd="/",
                env=_clean_env() | self.extra_env, start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the controller is not running; call start() first")
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        stop_process(self._proc)
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


StartController = Callable[..., ControllerProcess]
"""The `start_controller` fixture: `start_controller(*extra_args) -> ControllerProcess`."""


def proc_status(pid: int) -> dict[str, str]:
    """/proc/<pid>/status as a dict (`Uid`, `CapEff`, ...)."""
    fields: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _sep, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def run_ctl(
    etcd: str, label: str, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """`netagent-ctl --etcd ETCD --label LABEL ARGS...` (as root; it needs no privileges)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [venv_tool("netagent-ctl"), "--etcd", etcd, "--label", label, *args],
        capture_output=True, text=True, check=check, env=env,
    )
