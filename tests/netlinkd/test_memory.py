"""What the serving helper keeps out of its memory (issue 16: its RSS). The figures are
measured by bench/helper_memory.py; these tests pin the causes."""

from __future__ import annotations

import itertools
import subprocess
import sys
import tomllib
from pathlib import Path

from nlkd_lib import Sandbox

import netlinkd

REPO = Path(__file__).resolve().parents[2]
HEAP_MAX = 64 << 20  # the reservation of each glibc thread arena (HEAP_MAX_SIZE, 64-bit)


def _maps(pid: int) -> list[tuple[int, int, str, str]]:
    """(start, end, permissions, path) of every mapping."""
    found = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        start, end = (int(x, 16) for x in fields[0].split("-"))
        found.append((start, end, fields[1], fields[5] if len(fields) > 5 else ""))
    return found


def test_the_serving_helper_loads_no_openssl(helper: Sandbox) -> None:
    """No TLS on a Unix socket: neither libssl nor libcrypto is mapped (4.5 MiB of RSS)."""
    loaded = {Path(path).name.split(".so")[0] for *_rest, path in _maps(helper.pid)}
    assert not loaded & {"libssl", "libcrypto", "_ssl", "_hashlib"}, sorted(loaded)


def test_the_helpers_threads_share_one_malloc_arena(helper: Sandbox) -> None:
    """A glibc thread arena is a 64 MiB-aligned reservation: its used part read-write, the
    rest PROT_NONE up to the next 64 MiB boundary. The helper has none."""
    maps = _maps(helper.pid)
    arenas = [(start, end) for (start, end, perms, path), (after, last, rest, _path)
              in itertools.pairwise(maps)
              if not path and perms == "rw-p" and start % HEAP_MAX == 0
              and after == end and rest == "---p" and last == start + HEAP_MAX]
    assert arenas == []


def test_the_version_is_the_packages() -> None:
    """The helper does not ask importlib.metadata (it would load email, zipfile, csv and
    more: 1.4 MiB); its version constant must follow pyproject.toml's."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert netlinkd.__version__ == project["version"]



def test_the_helper_verifies_with_libsodium_not_cryptography(helper: Sandbox) -> None:
    """`cryptography`'s Rust library would map 7 MiB; PyNaCl's libsodium about 1."""
    loaded = {Path(path).name for *_rest, path in _maps(helper.pid)}
    assert "_sodium.abi3.so" in loaded
    assert "_rust.abi3.so" not in loaded, sorted(loaded)


def test_what_the_serving_helper_imports() -> None:
    """`nacl.signing` imports all 14 of PyNaCl's binding modules (0.8 MiB): the helper calls
    libsodium's `crypto_sign_open` through PyNaCl's compiled module alone. grpc.aio imports
    typing_extensions (0.3 MiB) for `Self`, which the serving helper takes from typing.
    argparse's help formatter imports shutil, and shutil bz2 and lzma (0.3 MiB)."""
    code = ("import contextlib, sys, netlinkd.cli\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(None):\n"
            "    netlinkd.cli.main(['serve', '--help'])\n"
            "import netlinkd.server, netlinkd.trust\n"
            "print(sys.modules['typing_extensions'].__name__)\n"
            "print(' '.join(m for m in sys.modules if m.startswith('nacl')))\n"
            "print(' '.join(m for m in ('bz2', 'lzma') if sys.modules.get(m)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)
    aliased, nacl, compression = out.stdout.splitlines()
    assert aliased == "typing"
    assert compression == ""
    assert set(nacl.split()) <= {"nacl", "nacl._sodium"}, nacl
