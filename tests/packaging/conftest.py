"""Fixtures for the packaging tests: the built packages and a root tree for systemd-analyze.

Set NETAGENT_DIST to a directory holding netagent_*.deb and netagent-*.rpm to reuse a
build (`.ci/packaging` does); otherwise the packages are built once per session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pkg_common import PACKAGING, SYSTEMD_UNITS, Packages


def _find(directory: Path, pattern: str) -> Path:
    found = sorted(directory.glob(pattern))
    if len(found) != 1:
        raise AssertionError(f"expected one {pattern} in {directory}, found {found}")
    return found[0]


@pytest.fixture(scope="session")
def packages() -> Iterator[Packages]:
    given = os.environ.get("NETAGENT_DIST")
    if given:
        directory = Path(given)
        yield Packages(_find(directory, "netagent_*.deb"), _find(directory, "netagent-*.rpm"))
        return
    directory = Path(tempfile.mkdtemp(prefix="netagent-dist-"))
    try:
        result = subprocess.run([str(PACKAGING / "build"), str(directory)], capture_output=True,
                                text=True, check=False, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, f"packaging/build failed:\n{result.stdout}{result.stderr}"
        yield Packages(_find(directory, "netagent_*.deb"), _find(directory, "netagent-*.rpm"))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def unit_root(packages: Packages) -> Iterator[Path]:
    """The .deb's files plus the system's own units (targets), as a --root for systemd."""
    root = Path(tempfile.mkdtemp(prefix="netagent-unitroot-"))
    try:
        subprocess.run(["dpkg-deb", "-x", str(packages.deb), str(root)], check=True)
        units = root / "usr/lib/systemd/system"
        for source in SYSTEMD_UNITS.iterdir():
            target = units / source.name
            if not target.exists() and source.is_file():
                shutil.copy2(source, target)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)

