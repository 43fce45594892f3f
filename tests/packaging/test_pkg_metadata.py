"""What a packager checks before accepting the packages: licence and copyright, declared
runtime libraries, metadata, compressed man pages, and byte-identical rebuilds."""

from __future__ import annotations

import gzip
import hashlib
import subprocess
from pathlib import Path

import pytest
from pkg_common import PACKAGING, REPO, Packages

pytestmark = pytest.mark.root


def _control(deb: Path) -> dict[str, str]:
    text = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True,
                          check=True).stdout
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line[:1] not in (" ", "") and ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    return fields


def _deb_files(deb: Path) -> list[str]:
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                             check=True).stdout
    return [line.split()[-1].removeprefix(".") for line in listing.splitlines()]


def test_licence_and_copyright(packages: Packages) -> None:
    licence = (REPO / "LICENSE").read_text()
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert "END OF TERMS AND CONDITIONS" in licence  # the full text, not a notice
    assert "/usr/share/doc/netagent/copyright" in _deb_files(packages.deb)
    copyright_file = (PACKAGING / "copyright").read_text()
    assert copyright_file.startswith(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/")
    assert "License: Apache-2.0" in copyright_file


def test_deb_metadata(packages: Packages) -> None:
    control = _control(packages.deb)
    assert "localhost" not in control["Maintainer"] + control["Homepage"]
    assert control["Homepage"].startswith("https://")
    assert len(control["Description"]) <= 60 and not control["Description"].endswith(".")
    assert control["Suggests"] == "etcd-server"
    depends = [item.strip().split()[0] for item in control["Depends"].split(",")]
    # Found by dpkg-shlibdeps from the bundled extension modules, not written by hand.
    assert {"python3.11", "iproute2", "libc6", "libgcc-s1", "libstdc++6", "libcap2"} <= set(
        depends), control["Depends"]
    assert "(>= " in control["Depends"]


def test_man_pages_are_gzipped_without_name_or_time(packages: Packages) -> None:
    pages = [path for path in _deb_files(packages.deb) if path.startswith("/usr/share/man/")
             and not path.endswith("/")]
    assert pages and all(path.endswith(".gz") for path in pages), pages
    for source in (PACKAGING / "man").glob("*.[0-9]"):
        packed = gzip.compress(source.read_bytes(), compresslevel=9, mtime=0)
        assert packed[3] & 0x08 == 0  # FNAME: no file name stored (gzip -n)
        assert gzip.decompress(packed) == source.read_bytes()


def test_two_builds_of_one_commit_are_byte_identical(packages: Packages,
                                                     tmp_path: Path) -> None:
    result = subprocess.run([str(PACKAGING / "build"), str(tmp_path)], capture_output=True,
                            text=True, check=False, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    for first in (packages.deb, packages.rpm):
        second = tmp_path / first.name
        assert _digest(first) == _digest(second), _differences(first, second, tmp_path)
    listing = "\n".join(_deb_files(packages.deb))
    assert "direct_url.json" not in listing
    extracted = tmp_path / "unpacked"
    subprocess.run(["dpkg-deb", "-x", str(packages.deb), str(extracted)], check=True)
    leaked = subprocess.run(["grep", "-rlE", r"/tmp/netagent-build\.[A-Za-z0-9]{6}",
                             str(extracted)],
                            capture_output=True, text=True, check=False).stdout
    assert leaked == "", f"a temporary build path is recorded in: {leaked}"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _differences(first: Path, second: Path, tmp_path: Path) -> str:
    if first.suffix != ".deb":
        return f"{first.name} differs"
    trees = []
    for index, deb in enumerate((first, second)):
        tree = tmp_path / f"diff{index}"
        subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
        trees.append(str(tree))
    return subprocess.run(["diff", "-rq", *trees], capture_output=True, text=True,
                          check=False).stdout[:3000]
