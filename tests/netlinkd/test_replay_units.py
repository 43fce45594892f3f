"""The replay record's edges: what a state file may hold, the epoch cap, when an epoch ages
out (pure logic; found by bench/mutation.py)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from netlinkd import replay
from netlinkd.errors import Replay, StartupError
from netlinkd.policy import Policy
from netlinkd.replay import ReplayGuard
from tests.harness.durability import DurabilitySpy, open_fds

WINDOW_S = 60
KEEP_S = 2 * WINDOW_S
EPOCHS = [bytes([n]) * 16 for n in range(4)]


def _state(tmp_path: Path) -> object:
    return json.loads((tmp_path / replay.STATE_FILE).read_text())


@pytest.mark.parametrize("entry", [[0, 0], [2**64 - 1, 2**64 - 1], [5, 1700000000]])
def test_state_entries_accepted(tmp_path: Path, entry: list[int]) -> None:
    (tmp_path / replay.STATE_FILE).write_text(json.dumps({"k": {EPOCHS[0].hex(): entry}}))
    guard = ReplayGuard(str(tmp_path), WINDOW_S)
    with pytest.raises(Replay, match=f"last accepted sequence {entry[0]};"):
        guard.check_and_record("k", EPOCHS[0], entry[0], entry[1])


@pytest.mark.parametrize("content", [
    [], {"k": []}, {"k": {"e": [1]}}, {"k": {"e": [1, 2, 3]}}, {"k": {"e": [-1, 0]}},
    {"k": {"e": [2**64, 0]}}, {"k": {"e": [0, 2**64]}}, {"k": {"e": [1.0, 0]}},
    {"k": {"e": [True, 0]}}, {"k": {"e": "1,2"}},
])
def test_state_files_that_are_refused(tmp_path: Path, content: object) -> None:
    (tmp_path / replay.STATE_FILE).write_text(json.dumps(content))
    with pytest.raises(StartupError, match=re.escape(str(tmp_path / replay.STATE_FILE))):
        ReplayGuard(str(tmp_path), WINDOW_S)


def test_unreadable_state_file_is_a_startup_error(tmp_path: Path) -> None:
    (tmp_path / replay.STATE_FILE).write_text("{not json")
    with pytest.raises(StartupError, match="fix or remove the file"):
        ReplayGuard(str(tmp_path), WINDOW_S)


def test_marks_from_the_log_are_raised_never_lowered(tmp_path: Path) -> None:
    guard = ReplayGuard(str(tmp_path), WINDOW_S)
    guard.check_and_record("k", EPOCHS[0], 7, 1000)
    guard.flush()
    ReplayGuard(str(tmp_path), WINDOW_S, accepted=[("k", EPOCHS[0], 3), ("k", EPOCHS[0], 7)],
                now_s=1050)
    assert _state(tmp_path) == {"k": {EPOCHS[0].hex(): [7, 1000]}}  # nothing rose: unchanged
    again = ReplayGuard(str(tmp_path), WINDOW_S, now_s=1060,
                        accepted=[("k", EPOCHS[0], 9), ("k", EPOCHS[1], 0), ("j", EPOCHS[0], 2)])
    assert _state(tmp_path) == {
        "k": {EPOCHS[0].hex(): [9, 1060], EPOCHS[1].hex(): [0, 1060]},
        "j": {EPOCHS[0].hex(): [2, 1060]},
    }
    for key_id, epoch, seq in (("k", EPOCHS[0], 9), ("k", EPOCHS[1], 0), ("j", EPOCHS[0], 2)):
        with pytest.raises(Replay):
            again.check_and_record(key_id, epoch, seq, 1061)


def test_a_log_mark_keeps_the_later_of_the_two_times(tmp_path: Path) -> None:
    guard = ReplayGuard(str(tmp_path), WINDOW_S)
    guard.check_and_record("k", EPOCHS[0], 1, 2000)
    guard.flush()
    ReplayGuard(str(tmp_path), WINDOW_S, accepted=[("k", EPOCHS[0], 4)], now_s=1000)
    assert _state(tmp_path) == {"k": {EPOCHS[0].hex(): [4, 2000]}}


def test_no_state_file_is_written_until_something_is_recorded(tmp_path: Path) -> None:
    ReplayGuard(str(tmp_path), WINDOW_S, accepted=[], now_s=1000)
    assert not (tmp_path / replay.STATE_FILE).exists()


def test_epoch_cap_counts_live_epochs_and_names_the_wait(tmp_path: Path) -> None:
    guard = ReplayGuard(str(tmp_path), WINDOW_S, max_epochs=2)
    guard.check_and_record("k", EPOCHS[0], 1, 1000)
    guard.check_and_record("k", EPOCHS[1], 1, 1010)
    guard.check_and_record("other", EPOCHS[2], 1, 1010)  # the cap is per key id
    guard.check_and_record("k", EPOCHS[0], 2, 1010)  # a live epoch goes on
    with pytest.raises(Replay, match=re.escape(f"2 live epochs, the limit max_epochs = 2; a new "
                                                f"epoch is accepted once the oldest ages out "
                                                f"(in about {1010 + KEEP_S + 1 - 1050} s")):
        guard.check_and_record("k", EPOCHS[2], 1, 1050)
    with pytest.raises(Replay, match="in about 1 s"):
        guard.check_and_record("k", EPOCHS[2], 1, 1010 + KEEP_S)
    # one second later the two epochs last seen at 1010 have aged out
    guard.check_and_record("k", EPOCHS[2], 1, 1010 + KEEP_S + 1)
    guard.flush()
    assert set(_state(tmp_path)["k"]) == {EPOCHS[2].hex()}  # type: ignore[index]


def test_an_epoch_is_kept_exactly_two_windows_after_it_was_last_seen(tmp_path: Path) -> None:
    guard = ReplayGuard(str(tmp_path), WINDOW_S)
    guard.check_and_record("k", EPOCHS[0], 5, 1000)
    guard.check_and_record("j", EPOCHS[1], 1, 1000 + KEEP_S)  # prunes nothing yet
    with pytest.raises(Replay):
        guard.check_and_record("k", EPOCHS[0], 5, 1000 + KEEP_S)
    guard.check_and_record("j", EPOCHS[1], 2, 1000 + KEEP_S + 1)
    guard.flush()
    assert _state(tmp_path) == {"j": {EPOCHS[1].hex(): [2, 1000 + KEEP_S + 1]}}


def test_a_failed_flush_keeps_the_marks_and_the_next_one_writes_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Fail closed: the batch stays refused in memory, and nothing half-written is left."""
    state = tmp_path / "state"
    state.mkdir()
    guard = ReplayGuard(str(state), WINDOW_S)
    guard.check_and_record("k", EPOCHS[0], 1, 1000)
    blocker = state / (replay.STATE_FILE + ".tmp")
    blocker.mkdir()  # the temporary file cannot be opened
    with caplog.at_level(logging.ERROR, logger=replay.__name__):
        guard.flush()
    assert f"cannot write the replay state {state / replay.STATE_FILE}" in caplog.text
    assert not (state / replay.STATE_FILE).exists()
    with pytest.raises(Replay):
        guard.check_and_record("k", EPOCHS[0], 1, 1001)
    blocker.rmdir()
    guard.flush()
    assert _state(state) == {"k": {EPOCHS[0].hex(): [1, 1000]}}


def test_a_refusal_changes_nothing_in_memory_or_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    guard = ReplayGuard(str(tmp_path), WINDOW_S, max_epochs=1)
    guard.check_and_record("k", EPOCHS[0], 5, 1000)
    guard.flush()
    spy = DurabilitySpy(monkeypatch)
    with pytest.raises(Replay, match="not above"):
        guard.check_and_record("k", EPOCHS[0], 5, 1000 + KEEP_S)
    with pytest.raises(Replay, match="max_epochs"):
        guard.check_and_record("k", EPOCHS[1], 1, 1000 + KEEP_S)
    guard.flush()  # nothing to write: neither refusal recorded or pruned anything
    assert spy.take() == []
    assert _state(tmp_path) == {"k": {EPOCHS[0].hex(): [5, 1000]}}
    with pytest.raises(Replay, match="not above"):
        guard.check_and_record("k", EPOCHS[0], 4, 1000 + KEEP_S)


def test_the_default_epoch_cap_is_the_policys(tmp_path: Path) -> None:
    guard = ReplayGuard(str(tmp_path), WINDOW_S)
    cap = Policy().max_epochs
    for number in range(cap):
        guard.check_and_record("k", number.to_bytes(16, "big"), 1, 1000)
    with pytest.raises(Replay, match=f"limit max_epochs = {cap}"):
        guard.check_and_record("k", cap.to_bytes(16, "big"), 1, 1000)


def test_recording_writes_nothing_and_a_flush_makes_the_file_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch's audit intent is its durable record; the file follows off its path."""
    guard = ReplayGuard(str(tmp_path), WINDOW_S)
    path = tmp_path / replay.STATE_FILE
    (tmp_path / (replay.STATE_FILE + ".tmp")).write_text("x" * 4096)  # left by a crash
    spy = DurabilitySpy(monkeypatch)
    fds = open_fds()
    guard.check_and_record("k", EPOCHS[0], 1, 1000)
    assert spy.take() == [] and not path.exists()
    guard.flush()
    assert spy.take() == [f"fsync {path}.tmp", f"rename {path}.tmp {path}", f"fsync {tmp_path}"]
    assert _state(tmp_path) == {"k": {EPOCHS[0].hex(): [1, 1000]}}
    guard.flush()
    assert spy.take() == []  # nothing new
    assert open_fds() == fds
