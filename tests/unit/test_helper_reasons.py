"""A helper that cannot be reached gives a one-line reason naming the fix, not gRPC's text."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from controller.helper_client import HelperClient, HelperUnavailable


def _reason(path: Path) -> str:
    client = HelperClient(str(path), timeout=2.0)
    try:
        with pytest.raises(HelperUnavailable) as caught:
            client.hello()
    finally:
        client.close()
    return str(caught.value)


def _plain(reason: str, path: Path) -> None:
    assert "\n" not in reason and len(reason.replace(str(path), "")) < 120, reason
    for raw in ("FAILED_PRECONDITION", "StatusCode", "connect failed", "addr:", "last error"):
        assert raw not in reason, reason


def test_missing_socket(tmp_path: Path) -> None:
    path = tmp_path / "netlinkd.sock"
    reason = _reason(path)
    _plain(reason, path)
    assert reason == (f"socket {path} does not exist; start netlinkd "
                      "(systemctl start netagent-netlinkd) or fix --socket")


def test_stale_socket(tmp_path: Path) -> None:
    path = tmp_path / "netlinkd.sock"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))
    reason = _reason(path)
    _plain(reason, path)
    assert reason.startswith(f"socket {path} refuses connections"), reason
    assert reason.endswith("start netlinkd (systemctl start netagent-netlinkd)")
