"""sd_notify (netagent_log.sd_notify, used by the controller and netlinkd): one datagram to
$NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from netagent_log import sd_notify


@pytest.fixture
def notify() -> ModuleType:
    return sd_notify


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        path = str(tmp_path / "notify")
        sock.bind(path)
        sock.settimeout(5)
        yield sock, path


def test_ready_sends_ready_1(notify: ModuleType, listener: tuple[socket.socket, str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert notify.ready() is True
    assert sock.recv(64) == b"READY=1"


def test_abstract_socket_address(notify: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"netagent-test-{os.getpid()}-{notify.__name__}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify.notify("STATUS=listing") is True
        assert sock.recv(64) == b"STATUS=listing"


def test_outside_systemd_does_nothing(notify: ModuleType,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify.ready() is False


def test_a_missing_socket_is_a_warning_not_a_crash(
        notify: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert notify.ready() is False
    assert "READY=1" in caplog.text and "gone" in caplog.text
