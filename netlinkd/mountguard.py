"""A seccomp filter that leaves the helper only the mounts named namespaces need.

CAP_SYS_ADMIN allows any mount, including `remount,bind,rw` of a read-only path, which
undoes systemd's ProtectSystem=strict. Creating a named namespace needs only a bind mount
(MS_BIND, of /proc/thread-self/ns/net onto /run/netns/<name>), making /run/netns shared
(MS_SHARED|MS_REC, or MS_BIND|MS_REC first) and MNT_DETACH unmounts. Everything else fails
with EPERM: any other mount flag (MS_REMOUNT, MS_MOVE, MS_RDONLY, ...), a new file system
mount (no MS_BIND or MS_SHARED), the new mount API (mount_setattr, open_tree, move_mount,
fsopen/fsconfig/fsmount/fspick), pivot_root, umount2 flags other than MNT_DETACH, and
unshare/setns of any namespace but a network namespace.

Installed once, while the process has a single thread, after the capability drop; threads
started later inherit it. Uses libseccomp through ctypes (libseccomp2, which systemd needs).
"""

from __future__ import annotations

import ctypes
import errno

from netlinkd.errors import StartupError

MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 2
CLONE_NEWNET = 0x40000000
_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_ACT_ERRNO = 0x00050000 | errno.EPERM
_SCMP_CMP_MASKED_EQ = 7
_DENIED_SYSCALLS = (
    "mount_setattr", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick",
    "pivot_root",
)
# syscall: (argument index, bits that may be set, bits of which one must be set)
_FLAG_RULES = {
    "mount": (3, MS_BIND | MS_REC | MS_SHARED, MS_BIND | MS_SHARED),
    "umount2": (1, MNT_DETACH, 0),
    "unshare": (0, CLONE_NEWNET, CLONE_NEWNET),
    "setns": (1, CLONE_NEWNET, CLONE_NEWNET),
}


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class MountGuardError(StartupError):
    """The filter could not be built or installed: the helper must not serve."""


def _library() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError as exc:
        raise MountGuardError(f"cannot load libseccomp.so.2 ({exc}); install libseccomp2") from exc
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)
    ]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def _deny(lib: ctypes.CDLL, ctx: int, name: str, *checks: tuple[int, int, int]) -> None:
    """Deny `name` when every (arg, mask, value) check holds: (arg & mask) == value."""
    number = lib.seccomp_syscall_resolve_name(name.encode())
    if number < 0:
        return  # not on this architecture or libseccomp version
    array = (_ArgCmp * max(1, len(checks)))(
        *(_ArgCmp(arg, _SCMP_CMP_MASKED_EQ, mask, value) for arg, mask, value in checks)
    )
    result = lib.seccomp_rule_add_array(ctx, _SCMP_ACT_ERRNO, number, len(checks), array)
    if result < 0:
        raise MountGuardError(f"seccomp rule for {name}: {errno.errorcode.get(-result, result)}")


def install() -> None:
    """Install the filter in this (single-threaded) process; raise if it cannot be."""
    lib = _library()
    ctx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not ctx:
        raise MountGuardError("seccomp_init failed")
    try:
        for name in _DENIED_SYSCALLS:
            _deny(lib, ctx, name)
        for name, (arg, allowed, required) in _FLAG_RULES.items():
            for bit in range(64):
                if not allowed & (1 << bit):
                    _deny(lib, ctx, name, (arg, 1 << bit, 1 << bit))
            if required:
                _deny(lib, ctx, name, (arg, required, 0))
        result = lib.seccomp_load(ctx)
        if result < 0:
            raise MountGuardError(f"seccomp_load: {errno.errorcode.get(-result, result)}")
    finally:
        lib.seccomp_release(ctx)
