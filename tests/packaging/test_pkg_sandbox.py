"""The unit reproduction itself: what it claims to enforce is enforced."""

from __future__ import annotations

import subprocess

from pkg_sandbox import mdwe_argv
from pkg_seccomp import seccomp_argv

_MAP_WX = (
    "import mmap\n"
    "try:\n"
    "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
    "except OSError as exc:\n"
    "    print('refused', exc.errno)\n"
    "else:\n"
    "    print('mapped')\n"
)


def _map_wx(prefix: list[str]) -> str:
    result = subprocess.run([*prefix, "/usr/bin/python3", "-c", _MAP_WX], capture_output=True,
                            text=True, check=True)
    return result.stdout.strip()


def test_memory_deny_write_execute_is_enforced() -> None:
    assert _map_wx([]) == "mapped"
    assert _map_wx(mdwe_argv()).startswith("refused")


_PROBE = (
    "import os, socket\n"
    "for family in (socket.AF_UNIX, socket.AF_INET):\n"
    "    try:\n"
    "        socket.socket(family, socket.SOCK_STREAM).close(); print(family.name, 'ok')\n"
    "    except OSError as exc:\n"
    "        print(family.name, exc.errno)\n"
    "try:\n"
    "    os.fsync(0); print('sync ok')\n"
    "except OSError as exc:\n"
    "    print('sync', exc.errno)\n"
)


def test_system_call_filter_and_address_families_are_enforced() -> None:
    unit = {"SystemCallFilter": ["@system-service", "~@sync"],
            "RestrictAddressFamilies": ["AF_UNIX"], "SystemCallErrorNumber": ["EPERM"]}
    with open(__file__) as stdin:
        result = subprocess.run([*seccomp_argv(unit), "/usr/bin/python3", "-c", _PROBE],
                                stdin=stdin, capture_output=True, text=True, check=True)
    assert result.stdout.split("\n")[:3] == ["AF_UNIX ok", "AF_INET 97", "sync 1"], result


_UNSHARE = (
    "import ctypes, os\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "for flag in (0x40000000, 0x00020000):\n"
    "    print(0 if libc.unshare(flag) == 0 else ctypes.get_errno())\n"
)


def test_restrict_namespaces_allows_only_the_listed_types() -> None:
    """RestrictNamespaces=net: a new network namespace yes, a mount namespace no (EPERM)."""
    unit = {"SystemCallFilter": ["@system-service"], "RestrictNamespaces": ["net"]}
    result = subprocess.run([*seccomp_argv(unit), "/usr/bin/python3", "-c", _UNSHARE],
                            capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["0", "1"], result
