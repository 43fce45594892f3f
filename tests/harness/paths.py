"""Where the project and its virtualenv live, and the identities tests run under."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
FIXTURES = REPO / "tests" / "fixtures"
EMPTY_CONFIG = FIXTURES / "empty-config.toml"
"""Passed as `--config` to every daemon a test starts, so a host /etc/netagent never leaks in."""

UNPRIVILEGED_UID = 65534
"""`nobody`: the controller runs as this user in every test."""

TEST_GID = 64123
"""Group owning the helper socket; the controller runs with it as its only group."""


def venv_tool(name: str) -> str:
    """Absolute path of a console script installed in the project venv."""
    return str(VENV_BIN / name)
