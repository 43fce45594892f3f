"""The unit reproduction itself: what it claims to enforce is enforced."""

from __future__ import annotations

import subprocess

from pkg_sandbox import mdwe_argv

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
