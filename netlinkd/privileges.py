"""Irreversible capability drop for the helper, verified against /proc/self/status.

Capabilities are per thread: `drop_privileges` must run while the process has a single thread,
and refuses otherwise. Order: securebits and the bounding set while CAP_SETPCAP is still
effective, then no_new_privs, then ambient and inheritable cleared, effective lowered before
permitted.
"""

from __future__ import annotations

import ctypes
import os

import prctl

from netlinkd.errors import StartupError

CAPS_NEEDED_ALWAYS = frozenset({"net_admin", "sys_admin"})
CAP_FOR_PID_REFS = "sys_ptrace"

_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_libc = ctypes.CDLL(None, use_errno=True)
_STATUS_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs")
_SET_AND_LOCKED = (
    prctl.SECURE_NOROOT, prctl.SECURE_NOROOT_LOCKED,
    prctl.SECURE_NO_SETUID_FIXUP, prctl.SECURE_NO_SETUID_FIXUP_LOCKED,
    prctl.SECURE_KEEP_CAPS_LOCKED,
)
SECUREBITS_WANTED = sum(1 << bit for bit in _SET_AND_LOCKED)  # python-prctl gives bit numbers
SECUREBITS_MANAGED = SECUREBITS_WANTED | 1 << prctl.SECURE_KEEP_CAPS


class PrivilegeError(StartupError):
    """The capability drop could not be made or verified: the helper must not serve."""


def required_capabilities(policy_allows_pid: bool) -> frozenset[str]:
    """The capability names (python-prctl spelling) the helper keeps after start-up."""
    return CAPS_NEEDED_ALWAYS | ({CAP_FOR_PID_REFS} if policy_allows_pid else set())


def capability_mask(names: frozenset[str]) -> int:
    return sum(1 << getattr(prctl, "CAP_" + name.upper()) for name in names)


def read_status(pid: int | str = "self") -> dict[str, int]:
    """CapInh/CapPrm/CapEff/CapBnd/CapAmb (bit masks) and NoNewPrivs of a process."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in _STATUS_FIELDS:
                found[key] = int(value.strip(), 16 if key.startswith("Cap") else 10)
    return found


def drop_privileges(keep: frozenset[str]) -> None:
    """Keep exactly `keep` in the effective, permitted and bounding sets, for good."""
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        raise PrivilegeError(
            f"cannot drop capabilities with {threads} threads running (capabilities are per "
            "thread); drop them before starting gRPC or any other thread"
        )
    try:
        _lock_securebits()
        prctl.capbset.limit(*keep)
        prctl.set_no_new_privs(1)
        if _libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"PR_CAP_AMBIENT_CLEAR_ALL: {os.strerror(code)}")
        prctl.cap_inheritable.limit()
        prctl.cap_effective.limit(*keep)
        prctl.cap_permitted.limit(*keep)
    except OSError as exc:
        raise PrivilegeError(
            f"capability drop failed: {exc}; is the helper running as root?"
        ) from exc
    verify_dropped(capability_mask(keep))


def _lock_securebits() -> None:
    prctl.set_securebits(SECUREBITS_WANTED)


def verify_dropped(keep_mask: int) -> None:
    """Raise PrivilegeError unless the kernel reports exactly the intended state."""
    status = read_status()
    expected = {
        "CapEff": keep_mask,
        "CapPrm": keep_mask,
        "CapBnd": keep_mask,
        "CapInh": 0,
        "CapAmb": 0,
        "NoNewPrivs": 1,
    }
    wrong = {key: status.get(key) for key, value in expected.items() if status.get(key) != value}
    if wrong:
        shown = ", ".join(f"{key}={got!r} (want {expected[key]:#x})" for key, got in wrong.items())
        raise PrivilegeError(f"capability drop not effective: {shown}")
    bits = prctl.get_securebits() & SECUREBITS_MANAGED
    if bits != SECUREBITS_WANTED:
        raise PrivilegeError(
            f"securebits are {bits:#x} after the capability drop, want {SECUREBITS_WANTED:#x} "
            "(noroot and no_setuid_fixup set, keep_caps clear, all three locked)"
        )
