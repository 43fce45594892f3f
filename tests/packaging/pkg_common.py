"""Paths and small helpers shared by the packaging tests."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"
SYSTEMD_UNITS = Path("/lib/systemd/system")


@dataclass(frozen=True)
class Packages:
    deb: Path
    rpm: Path


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} not found: install the Debian package {package}")
    return path
