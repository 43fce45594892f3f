"""Replay protection: per key id, the highest sequence seen for each recent epoch.

A batch is recorded in memory when admitted. It is acted on only once its audit intent is
durable (one fsync before the kernel is touched), and the marks are rebuilt at start from the
verified intents of the audit log and its rotated files (`accepted`): so a kill before this
file is written, or deleting or rolling it back, reopens nothing the log holds. The file
follows off the path before acting (`flush`: when the helper is idle, at stop, and before a
batch refused once admitted is answered, as no intent records that one).

Times are the helper's own clock only, never a batch's: an epoch's `seen` only moves forward,
and it is forgotten 2 x the window after it, when every batch it accepted is `STALE` anyway
(a batch was accepted at most one window from its stamp, and is refused one window past it).

The record is rewritten whole, so its size is capped: at most `max_epochs`
live epochs per key id (policy key, default 64). A batch that would add one more is refused
as `REPLAY` before anything is written. An epoch lives until 2 x the time window after its
last accepted batch, so once the oldest ages out a new epoch (a controller start) is
accepted again; a key that a holder keeps busy with many epochs is cleared at once by
rotating to a new key (the cap is per key id).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable

from netlinkd.audit import fsync_dir, replace_file
from netlinkd.errors import Replay, StartupError

STATE_FILE = "replay.json"
log = logging.getLogger(__name__)


# key id -> epoch hex -> [highest sequence, last seen unix seconds]
State = dict[str, dict[str, list[int]]]


MAX_STATE_INT = (1 << 64) - 1  # sequences are uint64; seen times are unix seconds
DEFAULT_MAX_EPOCHS = 64  # see `Policy.max_epochs`


def _parse_entry(entry: object, where: str) -> list[int]:
    """`[seq, seen]`: two integers in 0..2**64-1 (JSON floats like 1e400 are refused)."""
    if (
        isinstance(entry, list)
        and len(entry) == 2
        and all(type(v) is int and 0 <= v <= MAX_STATE_INT for v in entry)
    ):
        return [int(entry[0]), int(entry[1])]
    raise ValueError(f"{where} must be [sequence, seen]: two integers in 0..2**64-1")


def _parse_state(raw: object, path: str) -> State:
    if not isinstance(raw, dict):
        raise StartupError(f"{path}: expected a JSON object; move the file away to reset")
    state: State = {}
    for key_id, epochs in raw.items():
        if not isinstance(epochs, dict):
            raise StartupError(f"{path}: key {key_id!r:.80} must map epochs to [seq, seen]")
        state[str(key_id)] = {
            str(epoch): _parse_entry(entry, f"key {key_id!r:.80} epoch {epoch!r:.80}")
            for epoch, entry in epochs.items()
        }
    return state


class ReplayGuard:
    def __init__(
        self,
        state_dir: str,
        window_s: int,
        max_epochs: int = DEFAULT_MAX_EPOCHS,
        accepted: Iterable[tuple[str, bytes, int]] = (),
        now_s: int = 0,
    ) -> None:
        self._dir = state_dir
        self._path = os.path.join(state_dir, STATE_FILE)
        self._keep_s = 2 * window_s
        self._max_epochs = max_epochs
        self._lock = threading.Lock()
        self._state = self._load()
        self._dirty = self._raise_marks(accepted, now_s)
        self.flush()

    def _raise_marks(self, accepted: Iterable[tuple[str, bytes, int]], now_s: int) -> bool:
        """Raise each (key id, epoch)'s sequence to the accepted ones (e.g. the audit log's
        intents); such an epoch counts as seen `now_s`. True if anything rose."""
        raised = False
        for key_id, epoch, seq in accepted:
            entry = self._state.setdefault(key_id, {}).setdefault(epoch.hex(), [-1, now_s])
            if seq > entry[0]:
                entry[0], entry[1], raised = seq, max(entry[1], now_s), True
        return raised

    def _load(self) -> State:
        try:
            with open(self._path, encoding="utf-8") as handle:
                return _parse_state(json.load(handle), self._path)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, LookupError, ArithmeticError) as exc:
            raise StartupError(
                f"cannot read replay state {self._path}: {exc}; fix or remove the file"
            ) from exc

    def check_and_record(self, key_id: str, epoch: bytes, seq: int, now_s: int) -> None:
        """Raise `Replay` unless seq is above the recorded one and, for a new epoch, the key
        has fewer than `max_epochs` live epochs; else record it in memory, for `flush`. A
        refusal changes nothing."""
        epoch_hex = epoch.hex()
        with self._lock:
            epochs = self._state.get(key_id, {})
            recorded = epochs.get(epoch_hex)
            if recorded is not None and seq <= recorded[0]:
                raise Replay(
                    f"batch epoch {epoch_hex} sequence {seq} from key {key_id} is not above "
                    f"the last accepted sequence {recorded[0]}; sign a new batch"
                )
            if recorded is None:
                self._check_room(key_id, epochs, now_s)
            self._state[key_id] = epochs
            epochs[epoch_hex] = [seq, max(now_s, recorded[1]) if recorded else now_s]
            self._prune(now_s)
            self._dirty = True

    def flush(self) -> None:
        """Write what was recorded since the last flush (fsync'd, renamed, directory
        fsync'd). A failure is logged: the marks hold in memory (and, for the batches acted
        on, in the audit log), and the next flush tries again."""
        with self._lock:
            if not self._dirty:
                return
            try:
                replace_file(self._path, json.dumps(self._state, sort_keys=True).encode())
                fsync_dir(self._dir)
                self._dirty = False
            except OSError as exc:
                log.error("cannot write the replay state %s: %s; check the state dir",
                          self._path, exc.strerror)

    def _check_room(self, key_id: str, epochs: dict[str, list[int]], now_s: int) -> None:
        """Refuse a new epoch while the key already has `max_epochs` that have not aged out."""
        live = [seen for _, seen in epochs.values() if now_s - seen <= self._keep_s]
        if len(live) < self._max_epochs:
            return
        wait_s = max(1, min(live) + self._keep_s + 1 - now_s)
        raise Replay(
            f"key {key_id} already has {len(live)} live epochs, the limit max_epochs = "
            f"{self._max_epochs}; a new epoch is accepted once the oldest ages out (in about "
            f"{wait_s} s, 2 x time_window_seconds after its last batch); keep using a "
            "current epoch, or rotate the key"
        )

    def _prune(self, now_s: int) -> None:
        for key_id in list(self._state):
            epochs = self._state[key_id]
            for epoch_hex in [e for e, (_, seen) in epochs.items() if now_s - seen > self._keep_s]:
                del epochs[epoch_hex]
            if not epochs:
                del self._state[key_id]
