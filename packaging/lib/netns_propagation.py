#!/opt/netagent/venv/bin/python3 -IB
"""Makes named network namespaces created by a sandboxed netlinkd visible on the host.

systemd gives a sandboxed service (ProtectSystem=, PrivateTmp=, ...) its own mount
namespace and turns every mount in it into a *slave*: host mounts propagate in, nothing
propagates out. A namespace that netlinkd bind-mounts at /run/netns/<name> would then
exist only inside the service. Two steps fix that:

  share-host        (netagent-setup.service, runs in the host mount namespace)
      make /run/netns a shared mount point, exactly like `ip netns add` does. Refuses to
      run in any other mount namespace than PID 1's: there it would change nothing.
  join-host -- CMD  (prefix of ExecStart=, runs inside the sandbox)
      make the sandbox's /run/netns a *peer* of the host's (move_mount with
      MOVE_MOUNT_SET_GROUP, Linux >= 5.15), then exec CMD. Mounts under /run/netns now
      propagate both ways; the rest of the sandbox stays a slave.

Installed as /usr/lib/netagent/netns-propagation. Needs CAP_SYS_ADMIN, and
CAP_SYS_PTRACE to open /proc/<host-pid>/root.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
from collections.abc import Sequence

NETNS_DIR = "/run/netns"
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SHARED = 1 << 20
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
AT_FDCWD = -100
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_SET_GROUP = 0x100

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class PropagationError(Exception):
    """A mount step failed; the message names the path and what to do."""


def _fail(what: str, hint: str) -> PropagationError:
    err = ctypes.get_errno()
    return PropagationError(f"{what}: {os.strerror(err)}; {hint}")


def _mount(source: str | None, target: str, flags: int, hint: str) -> None:
    src = source.encode() if source is not None else None
    if _libc.mount(src, target.encode(), None, flags, None) != 0:
        raise _fail(f"mount {target}", hint)


def is_mount_point(path: str) -> bool:
    """True when `path` is the root of a mount in this mount namespace."""
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as table:
        return any(line.split()[4] == real for line in table)


def share_host(directory: str = NETNS_DIR, host_pid: int = 1) -> None:
    """Make `directory` a shared mount point in the host's (PID 1's) mount namespace."""
    if not _same_mount_namespace(host_pid):
        raise PropagationError(
            f"share-host runs in a mount namespace of its own, not PID {host_pid}'s, so "
            f"{directory} would be shared only there; run it from a unit without file-system "
            "sandboxing (netagent-setup.service)"
        )
    os.makedirs(directory, mode=0o755, exist_ok=True)
    hint = "run as root in the host mount namespace (netagent-setup.service)"
    if not is_mount_point(directory):
        _mount(directory, directory, MS_BIND | MS_REC, hint)
    _mount(None, directory, MS_SHARED | MS_REC, hint)


def _same_mount_namespace(host_pid: int) -> bool:
    own = os.stat("/proc/self/ns/mnt").st_ino
    return own == os.stat(f"/proc/{host_pid}/ns/mnt").st_ino


def join_host(host_pid: int = 1, directory: str = NETNS_DIR) -> bool:
    """Make our `directory` mount a peer of the host's; False if already the host's."""
    if _same_mount_namespace(host_pid):
        return False
    if not is_mount_point(directory):
        raise PropagationError(
            f"{directory} is not a mount point in this sandbox; run "
            "'netns-propagation share-host' in the host namespace before the service starts"
        )
    host_path = f"/proc/{host_pid}/root{os.path.realpath(directory)}"
    fd = _libc.syscall(SYS_OPEN_TREE, AT_FDCWD, host_path.encode(), os.O_CLOEXEC)
    if fd < 0:
        raise _fail(f"open_tree {host_path}", "needs CAP_SYS_ADMIN and CAP_SYS_PTRACE")
    try:
        _mount(None, directory, MS_PRIVATE, "needs CAP_SYS_ADMIN and the @mount syscalls")
        flags = MOVE_MOUNT_SET_GROUP | MOVE_MOUNT_F_EMPTY_PATH
        if _libc.syscall(SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, directory.encode(), flags) != 0:
            raise _fail(
                f"join {directory} to the host's peer group",
                "the host's /run/netns must be a shared mount point: is "
                "netagent-setup.service (share-host) active? Needs Linux >= 5.15",
            )
    finally:
        os.close(fd)
    return True


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netns-propagation", description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default=NETNS_DIR, help="named-namespace directory")
    sub = parser.add_subparsers(dest="command", required=True)
    share = sub.add_parser("share-host", help="make the directory a shared mount point")
    share.add_argument("--host-pid", type=int, default=1, help="a process in the host mount ns")
    join = sub.add_parser("join-host", help="peer the sandbox's directory with the host's")
    join.add_argument("--host-pid", type=int, default=1, help="a process in the host mount ns")
    join.add_argument("argv", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...] to exec")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "share-host":
            share_host(args.dir, args.host_pid)
            return 0
        join_host(args.host_pid, args.dir)
    except (PropagationError, OSError) as exc:
        print(f"netns-propagation: {exc}", file=sys.stderr)
        return 1
    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not command:
        return 0
    os.execvp(command[0], command)
    return 127


if __name__ == "__main__":
    sys.exit(main())
