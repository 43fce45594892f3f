"""Reproduce a unit's SystemCallFilter= and RestrictAddressFamilies= without systemd.

`seccomp_argv(unit)` is a command prefix: `/usr/bin/python3` (Debian's python3-seccomp)
loads a libseccomp filter built from the unit's settings, then execs the real command.
Groups (@system-service, ...) are expanded with `systemd-analyze syscall-filter`, so the
lists are systemd's own. Like systemd: an allow list, minus the `~` deny lists, with
SystemCallErrorNumber= as the action for everything else; socket() is allowed only for
the listed address families (others get EAFNOSUPPORT, as with systemd); RestrictNamespaces=
allows unshare/clone/setns only without the forbidden CLONE_NEW* flags, and clone3 gets
ENOSYS (as with systemd, so glibc falls back to clone).
"""

from __future__ import annotations

import json
import subprocess
from functools import cache

_LOADER = """
import errno, json, os, socket, sys
import seccomp
spec = json.loads(sys.argv[1])
fail = seccomp.ERRNO(getattr(errno, spec["errno"]))
f = seccomp.SyscallFilter(defaction=seccomp.ALLOW if spec["allow"] is None else fail)
for name in spec["allow"] or []:
    try:
        f.add_rule(seccomp.ALLOW, name)
    except (RuntimeError, ValueError, OSError):
        pass  # not a syscall on this architecture
if spec["families"] is not None:
    for family in spec["families"]:
        f.add_rule(seccomp.ALLOW, "socket", seccomp.Arg(0, seccomp.EQ, getattr(socket, family)))
    listed = [getattr(socket, n) for n in spec["families"]]
    refuse = seccomp.ERRNO(errno.EAFNOSUPPORT)
    for family in set(range(1, 46)) - set(listed):
        f.add_rule(refuse, "socket", seccomp.Arg(0, seccomp.EQ, family))
if spec["ns_blocked"] is not None:
    blocked = spec["ns_blocked"]
    for name, arg in (("unshare", 0), ("clone", 0), ("setns", 1)):
        f.add_rule(seccomp.ALLOW, name, seccomp.Arg(arg, seccomp.MASKED_EQ, blocked, 0))
    f.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")  # as systemd: glibc falls back to clone
f.load()
os.execvp(sys.argv[2], sys.argv[2:])
"""


@cache
def expand(group: str) -> frozenset[str]:
    """The system calls of a systemd group (recursively) or of a plain name."""
    if not group.startswith("@"):
        return frozenset({group})
    result = subprocess.run(["systemd-analyze", "syscall-filter", group], capture_output=True,
                            text=True, check=True)
    names: set[str] = set()
    for line in result.stdout.splitlines()[1:]:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            names |= expand(entry)
    return frozenset(names)


def allowed_syscalls(filters: list[str]) -> set[str]:
    allowed: set[str] = set()
    for value in filters:
        denied = value.startswith("~")
        names = set().union(*(expand(item) for item in value.lstrip("~").split()))
        allowed = allowed - names if denied else allowed | names
    return allowed


NAMESPACE_FLAGS = {
    "cgroup": 0x02000000, "ipc": 0x08000000, "net": 0x40000000, "mnt": 0x00020000,
    "pid": 0x20000000, "user": 0x10000000, "uts": 0x04000000, "time": 0x00000080,
}


def blocked_namespaces(setting: str) -> int | None:
    """Namespace flags RestrictNamespaces= forbids, or None when it restricts nothing."""
    if setting == "no":
        return None
    allowed = set() if setting == "yes" else set(setting.split())
    unknown = allowed - set(NAMESPACE_FLAGS)
    if unknown:
        raise ValueError(f"RestrictNamespaces=: unknown namespace types {sorted(unknown)}")
    return sum(flag for name, flag in NAMESPACE_FLAGS.items() if name not in allowed)


def seccomp_argv(unit: dict[str, list[str]]) -> list[str]:
    """Command prefix applying the unit's syscall and address-family filters."""
    filters = unit.get("SystemCallFilter")
    allow = allowed_syscalls(filters) if filters else None
    families = unit.get("RestrictAddressFamilies")
    if families is not None and allow is not None:
        allow.discard("socket")
    blocked = blocked_namespaces(unit.get("RestrictNamespaces", ["no"])[-1])
    if blocked is not None and allow is not None:
        allow -= {"unshare", "clone", "setns", "clone3"}
    spec = {
        "ns_blocked": blocked,
        "allow": sorted(allow) if allow is not None else None,
        "errno": unit.get("SystemCallErrorNumber", ["EPERM"])[-1],
        "families": families[-1].split() if families else None,
    }
    return ["/usr/bin/python3", "-I", "-c", _LOADER, json.dumps(spec)]
