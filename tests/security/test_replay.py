"""Replay closed for good (issue 15, part 3): marks come from the larger of replay.json and
the audit log's verified intents; an epoch's time is the helper's clock and only moves on.
As in the helper, a batch is recorded durably by its intent only: replay.json is written
when the helper flushes it (idle, stop, a refusal), and a kill skips that.

Runs the real Verifier, ReplayGuard, AuditLog and log reader, on a fake clock.
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from seclib import BatchSigner

from netagent_api import helper_pb2
from netagent_audit import chain, records
from netlinkd import server
from netlinkd.audit import DEFAULT_MAX_BYTES, AuditLog
from netlinkd.errors import HelperError, Replay
from netlinkd.policy import Policy
from netlinkd.replay import STATE_FILE, ReplayGuard
from netlinkd.server import ServeOptions
from netlinkd.trust import TrustStore
from netlinkd.verify import Verifier

WINDOW_S = 60
T0 = 1_900_000_000.0
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))


@dataclass
class Helper:
    """A helper's admission and audit, restartable, on a clock the test moves."""

    root: Path
    signer: BatchSigner
    now: float = T0
    max_bytes: int = DEFAULT_MAX_BYTES
    verifier: Verifier = field(init=False)
    log: AuditLog = field(init=False)

    def __post_init__(self) -> None:
        (self.root / "state").mkdir(mode=0o700, exist_ok=True)
        self.trust = TrustStore(str(self.signer.write_trust(self.root / "trust.keys")))
        self.start()

    @property
    def audit_path(self) -> str:
        return str(self.root / "audit.log")

    @property
    def state_file(self) -> Path:
        return self.root / "state" / STATE_FILE

    def start(self) -> None:
        """What `netlinkd.server._replay_guard` does at start, at the fake time."""
        now_s = int(self.now)
        since_ms = (now_s - 2 * WINDOW_S) * 1000
        intents = chain.signed_intents(self.audit_path, self.trust.get, since_ms)
        accepted = [(key_id, b.epoch, b.sequence) for key_id, b in intents]
        guard = ReplayGuard(str(self.root / "state"), WINDOW_S, 64, accepted, now_s)
        self.verifier = Verifier(self.trust, guard, WINDOW_S, clock=lambda: self.now)
        self.log = AuditLog(self.audit_path, max_bytes=self.max_bytes, keep_rotated=2)

    def restart(self, *, killed: bool = False) -> None:
        """A stop (the replay marks flushed), or a SIGKILL (nothing more written)."""
        if not killed:
            self.verifier.replay.flush()
        self.log.close()
        self.start()

    def submit(self, signed: helper_pb2.SignedBatch) -> bool:
        try:
            verified = self.verifier.verify(signed.SerializeToString())
        except HelperError:
            self.verifier.replay.flush()
            return False
        batch = verified.batch
        self.log.append(records.intent_record(signed.key_id, signed.batch, signed.signature, batch))
        stamp = int(self.now)
        os.utime(self.audit_path, (stamp, stamp))  # the log's mtime on the same fake clock
        return True


def stamped(signer: BatchSigner, epoch: bytes, seq: int, at_s: float) -> helper_pb2.SignedBatch:
    batch = helper_pb2.Batch(epoch=epoch, sequence=seq, unix_time_ms=int(at_s * 1000),
                             owner=signer.owner)
    return signer.sign(batch)


def test_the_issues_fake_clock_repro_is_refused(tmp_path: Path) -> None:
    """B1 (seq 1, stamped +59 s), B2 (seq 2, stamped now), another epoch stamped +59 s at
    t+63 s; before the fix that pruned the first epoch and B1 was accepted again at t+64 s."""
    signer = BatchSigner()
    helper = Helper(tmp_path, signer)
    t = helper.now
    first, other = b"\x01" * 16, b"\x02" * 16
    b1 = stamped(signer, first, 1, t + 59)
    assert helper.submit(b1)
    assert helper.submit(stamped(signer, first, 2, t))
    helper.now = t + 63
    assert helper.submit(stamped(signer, other, 1, t + 63 + 59))
    helper.now = t + 64
    assert not helper.submit(b1)
    with pytest.raises(Replay):
        helper.verifier.verify(b1.SerializeToString())


@pytest.mark.parametrize("rotations", [0, 2])
def test_a_kill_before_the_replay_file_is_written_reopens_nothing(
    tmp_path: Path, rotations: int
) -> None:
    """Killed once the intents are durable, before replay.json was ever written; with
    `rotations`, the captured batch's intent is in a rotated file of the log."""
    signer = BatchSigner()
    helper = Helper(tmp_path, signer, max_bytes=4096 if rotations else DEFAULT_MAX_BYTES)
    epoch = b"\x08" * 16
    captured = stamped(signer, epoch, 1, helper.now)
    assert helper.submit(captured)
    seq = 2
    while len(list(tmp_path.glob("audit.log.*"))) < rotations:
        assert helper.submit(stamped(signer, epoch, seq, helper.now))
        seq += 1
    if rotations:
        signature = base64.b64encode(captured.signature).decode()
        assert sum(signature in p.read_text()
                   for p in tmp_path.glob("audit.log.*")) == 1
    assert not helper.state_file.exists()
    helper.now += 5
    helper.restart(killed=True)
    with pytest.raises(Replay):
        helper.verifier.verify(captured.SerializeToString())
    assert helper.submit(stamped(signer, epoch, seq, helper.now)), "the epoch goes on"


@pytest.mark.parametrize("damage", ["delete", "rollback", "empty"])
def test_replay_state_damage_reopens_nothing_the_log_holds(tmp_path: Path, damage: str) -> None:
    signer = BatchSigner()
    helper = Helper(tmp_path, signer)
    epoch = b"\x07" * 16
    assert helper.submit(stamped(signer, epoch, 1, helper.now))
    helper.verifier.replay.flush()  # the helper was idle
    rolled_back = helper.state_file.read_bytes()
    captured = stamped(signer, epoch, 2, helper.now)
    assert helper.submit(captured)
    helper.verifier.replay.flush()
    if damage == "delete":
        helper.state_file.unlink()
    elif damage == "rollback":
        helper.state_file.write_bytes(rolled_back)
    else:
        helper.state_file.write_text("{}")
    helper.now += 5
    helper.restart()
    with pytest.raises(Replay):
        helper.verifier.verify(captured.SerializeToString())
    assert helper.submit(stamped(signer, epoch, 3, helper.now)), "the epoch goes on"


def test_epoch_seen_time_never_goes_back(tmp_path: Path) -> None:
    guard = ReplayGuard(str(tmp_path), WINDOW_S)
    guard.check_and_record("k" * 16, b"e" * 16, 1, 1000)
    guard.check_and_record("k" * 16, b"e" * 16, 2, 900)  # an earlier clock reading
    guard.flush()
    state = (tmp_path / STATE_FILE).read_text()
    assert '"65656565656565656565656565656565": [2, 1000]' in state


# --- property: no sequence of times, restarts and state damage applies a batch twice -----

# Times near the edges (the window, twice the window) matter most; plain integers rarely
# land there.
EDGES = [0, 1, 2, 3, 4, 5, 30, 58, 59, 60, 61, 62, 63, 64, 119, 120, 121, 122]
seconds = st.one_of(st.sampled_from(EDGES), st.integers(0, 200))
step = st.one_of(
    st.tuples(st.just("advance"), seconds),
    st.tuples(st.just("new"), st.integers(0, 1), st.one_of(seconds, seconds.map(lambda s: -s))),
    st.tuples(st.just("replay"), st.integers(0, 1000)),
    st.tuples(st.just("restart"), st.sampled_from(["keep", "delete", "rollback", "killed"])),
)


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(step, max_size=40))
def test_no_sequence_of_timestamps_applies_a_batch_twice(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[object, ...]]
) -> None:
    root = tmp_path_factory.mktemp("replay")
    signer = BatchSigner()
    helper = Helper(root, signer)
    epochs = [bytes([n]) * 16 for n in range(3)]
    next_seq = [1, 1, 1]
    sent: list[helper_pb2.SignedBatch] = []
    applied: set[bytes] = set()
    snapshots: list[bytes] = []
    try:
        for action in steps:
            kind = action[0]
            if kind == "advance":
                helper.now += int(str(action[1]))
            elif kind == "new":
                which, offset = int(str(action[1])), int(str(action[2]))
                signed = stamped(signer, epochs[which], next_seq[which], helper.now + offset)
                next_seq[which] += 1
                sent.append(signed)
                _apply_once(helper, signed, applied)
                if helper.state_file.exists():
                    snapshots.append(helper.state_file.read_bytes())
            elif kind == "replay" and sent:
                _apply_once(helper, sent[int(str(action[1])) % len(sent)], applied)
            elif kind == "restart":
                _damage(helper, str(action[1]), snapshots)
                helper.restart(killed=action[1] == "killed")
                if helper.state_file.exists():
                    snapshots.append(helper.state_file.read_bytes())
            for signed in sent:  # after every step, every batch sent so far is tried again
                _apply_once(helper, signed, applied)
    finally:
        helper.log.close()
        shutil.rmtree(root, ignore_errors=True)


def _apply_once(helper: Helper, signed: helper_pb2.SignedBatch, applied: set[bytes]) -> None:
    if helper.submit(signed):
        assert signed.batch not in applied, "a batch was accepted twice"
        applied.add(signed.batch)


def _damage(helper: Helper, mode: str, snapshots: list[bytes]) -> None:
    if mode == "delete" and helper.state_file.exists():
        helper.state_file.unlink()
    elif mode == "rollback" and snapshots:
        helper.state_file.write_bytes(snapshots[0])


def test_epoch_time_is_the_helpers_clock_not_the_batch_stamp(tmp_path: Path) -> None:
    """A batch stamped 59 s ahead must not age its own or any other epoch by its stamp."""
    signer = BatchSigner()
    helper = Helper(tmp_path, signer)
    epoch = b"\x05" * 16
    assert helper.submit(stamped(signer, epoch, 1, helper.now + 59))
    helper.verifier.replay.flush()
    state = helper.state_file.read_text()
    assert f'"{epoch.hex()}": [1, {int(helper.now)}]' in state, state


def test_the_helpers_start_restores_the_marks_of_recent_intents_only(tmp_path: Path) -> None:
    """`server._replay_guard` itself, on the real clock: an intent signed within two windows
    restores its mark; one older (every batch of its epoch is STALE) takes no epoch slot."""
    signer = BatchSigner()
    now = time.time()
    helper = Helper(tmp_path, signer, now=now - 3 * WINDOW_S)
    old, recent, new = b"\x0a" * 16, b"\x0b" * 16, b"\x0c" * 16
    assert helper.submit(stamped(signer, old, 5, helper.now))
    helper.now = now - 10
    assert helper.submit(stamped(signer, recent, 2, helper.now))
    helper.log.close()
    fresh = tmp_path / "fresh-state"
    fresh.mkdir(mode=0o700)
    options = ServeOptions(socket="", trust_key=str(tmp_path / "trust.keys"),
                           audit_log=helper.audit_path, state_dir=str(fresh), policy=None,
                           socket_group=None, log_level="info")
    guard = server._replay_guard(options, Policy(time_window_seconds=WINDOW_S, max_epochs=2),
                                 helper.trust)
    with pytest.raises(Replay):
        guard.check_and_record(signer.key_id, recent, 2, int(now))
    guard.check_and_record(signer.key_id, new, 1, int(now))  # the second slot is free
