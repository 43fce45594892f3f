"""The trust-key file's checks that the helper-level tests do not reach (pure logic; found by
bench/mutation.py): a helper not running as root, a FIFO, reload's count."""

from __future__ import annotations

import base64
import os
import threading
from pathlib import Path

import pytest

from netlinkd import trust

LINE = f"ed25519 {base64.b64encode(bytes(range(32))).decode()} t\n"
HELPER_UID = 4242


def _trust_file(directory: Path, lines: str = LINE) -> Path:
    directory.chmod(0o700)
    path = directory / "trust.keys"
    path.write_text(lines)
    path.chmod(0o600)
    return path


def test_a_helper_running_as_another_uid_accepts_root_and_its_own_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _trust_file(tmp_path)
    monkeypatch.setattr(os, "getuid", lambda: HELPER_UID)
    assert trust.load_trust_file(str(path))  # root's file and directory
    os.chown(path, HELPER_UID, 0)
    assert trust.load_trust_file(str(path))  # its own file
    os.chown(path, HELPER_UID + 1, 0)
    with pytest.raises(trust.TrustFileError, match=f"owned by uid {HELPER_UID + 1}"):
        trust.load_trust_file(str(path))


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    fifo = tmp_path / "trust.keys"
    os.mkfifo(fifo, 0o600)
    outcome: list[BaseException] = []

    def load() -> None:
        try:
            trust.load_trust_file(str(fifo))
        except trust.TrustFileError as exc:
            outcome.append(exc)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    loader.join(30)
    if loader.is_alive():  # unblock it: a writer opens and closes the FIFO
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        loader.join(30)
        pytest.fail("the trust-file load blocked on a FIFO")
    assert len(outcome) == 1
    assert "not a regular file" in str(outcome[0])


def test_reload_counts_the_keys(tmp_path: Path) -> None:
    other = f"ed25519 {base64.b64encode(bytes(range(1, 33))).decode()} u\n"
    path = _trust_file(tmp_path)
    store = trust.TrustStore(str(path))
    assert store.reload() == 1
    path.write_text(LINE + other)
    assert store.reload() == 2
    assert store.key_ids() == sorted(
        trust.key_id_of(bytes(range(start, start + 32))) for start in (0, 1))
