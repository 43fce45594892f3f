"""Caps on what a signing controller can make the helper keep: live replay epochs per key
(`max_epochs`) and named namespaces (`max_named_namespaces`)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from nlkd_lib import Sandbox, Signer, create, named, own_sandbox, spec

from netagent_api import helper_pb2
from netlinkd import policy
from netlinkd.errors import Replay, StartupError
from netlinkd.replay import DEFAULT_MAX_EPOCHS, ReplayGuard

Kind = helper_pb2.ErrorKind


def _refused(reply: helper_pb2.BatchReply, kind: int, helper: Sandbox) -> dict[str, object]:
    """Refused with `kind`, and the helper's last audit record names the same refusal."""
    assert not reply.ok
    assert reply.error_kind == kind, f"{Kind.Name(reply.error_kind)}: {reply.error}"
    last = helper.audit_records()[-1]
    assert last["kind"] in ("refused", "result") and last["verdict"] in (
        "refused", "failed", "rolled_back"
    )
    assert (last["error_kind"], last["error"]) == (Kind.Name(kind), reply.error)
    return last


# --- max_epochs: unit -------------------------------------------------------------------


def test_policy_defaults_and_checks_of_the_new_keys(tmp_path: Path) -> None:
    assert policy.Policy().max_epochs == DEFAULT_MAX_EPOCHS == 64
    assert policy.Policy().max_named_namespaces == 1024
    path = tmp_path / "policy.toml"
    path.write_text("max_epochs = 3\nmax_named_namespaces = 2\n")
    loaded = policy.load_policy(str(path))
    assert (loaded.max_epochs, loaded.max_named_namespaces) == (3, 2)
    for bad in ("max_epochs = 0", "max_named_namespaces = -1"):
        path.write_text(bad + "\n")
        with pytest.raises(StartupError, match="must be positive"):
            policy.load_policy(str(path))
    path.write_text('max_epochs = "3"\n')
    with pytest.raises(StartupError, match="max_epochs must be int"):
        policy.load_policy(str(path))


def test_new_epoch_beyond_the_cap_is_refused_without_writing(tmp_path: Path) -> None:
    guard = ReplayGuard(str(tmp_path), window_s=60, max_epochs=2)
    first, second, third = (os.urandom(16) for _ in range(3))
    guard.check_and_record("k", first, 1, now_s=1000)
    guard.check_and_record("k", second, 1, now_s=1010)
    guard.flush()
    state = tmp_path / "replay.json"
    before = state.read_bytes()
    with pytest.raises(Replay, match=r"2 live epochs, the limit max_epochs = 2.*in about 111 s"):
        guard.check_and_record("k", third, 1, now_s=1010)
    guard.flush()
    assert state.read_bytes() == before
    # The refusal changed nothing in memory either: a restart sees the same two epochs.
    assert set(json.loads(before)["k"]) == {first.hex(), second.hex()}
    with pytest.raises(Replay, match="max_epochs"):
        ReplayGuard(str(tmp_path), 60, max_epochs=2).check_and_record("k", third, 1, 1010)
    # Current epochs carry on, other keys have their own cap.
    guard.check_and_record("k", first, 2, now_s=1011)
    guard.check_and_record("other", third, 1, now_s=1011)
    # `second` (last batch at 1010) ages out after 2 x 60 s: a new epoch is accepted again.
    with pytest.raises(Replay, match="max_epochs"):
        guard.check_and_record("k", third, 1, now_s=1130)
    guard.check_and_record("k", third, 1, now_s=1131)
    guard.flush()
    assert set(json.loads(state.read_text())["k"]) == {first.hex(), third.hex()}


def test_replay_of_a_current_epoch_is_still_replay_at_the_cap(tmp_path: Path) -> None:
    guard = ReplayGuard(str(tmp_path), window_s=60, max_epochs=1)
    epoch = os.urandom(16)
    guard.check_and_record("k", epoch, 5, now_s=1000)
    with pytest.raises(Replay, match="not above"):
        guard.check_and_record("k", epoch, 5, now_s=1000)
    guard.check_and_record("k", epoch, 6, now_s=1000)


def test_epochs_stamped_in_the_future_count_until_they_age_out(tmp_path: Path) -> None:
    """A batch may be stamped up to one window ahead; its epoch counts from that stamp."""
    guard = ReplayGuard(str(tmp_path), window_s=60, max_epochs=1)
    guard.check_and_record("k", os.urandom(16), 1, now_s=1060)
    with pytest.raises(Replay, match="in about 181 s"):
        guard.check_and_record("k", os.urandom(16), 1, now_s=1000)
    guard.check_and_record("k", os.urandom(16), 1, now_s=1181)


# --- max_epochs: a real helper ----------------------------------------------------------


def test_live_helper_refuses_an_epoch_beyond_max_epochs_until_one_ages_out() -> None:
    window = 2  # epochs are kept for 2 x 2 s after their last batch
    with own_sandbox(f"max_epochs = 3\ntime_window_seconds = {window}\n") as (sandbox, signer):
        signers = [signer, *(Signer(signer.key) for _ in range(2))]
        for each in signers:
            assert each.epoch != signer.epoch or each is signer
            reply = sandbox.submit(each.sign(each.batch([])))
            assert reply.ok, reply.error
        state = Path(sandbox.state) / "replay.json"
        fourth = Signer(signer.key)
        reply = sandbox.submit(fourth.sign(fourth.batch([])))
        record = _refused(reply, helper_pb2.REPLAY, sandbox)
        assert record["kind"] == "refused" and record["epoch"] == fourth.epoch.hex()
        assert "3 live epochs, the limit max_epochs = 3" in reply.error
        assert "a new epoch is accepted once the oldest ages out" in reply.error
        # refused before anything was recorded (the refusal wrote the three others' marks)
        assert sorted(json.loads(state.read_text())[signer.key.key_id]) == sorted(
            each.epoch.hex() for each in signers)
        # The controller's current epochs are unaffected, also after a restart.
        assert sandbox.submit(signer.sign(signer.batch([]))).ok
        sandbox.stop()
        sandbox.start()
        _refused(sandbox.submit(fourth.sign(fourth.batch([]))), helper_pb2.REPLAY, sandbox)
        assert sandbox.submit(signers[1].sign(signers[1].batch([]))).ok
        # Once the oldest epoch has had no batch for 2 x window, a new epoch gets in.
        deadline = time.monotonic() + 4 * window + 5
        while True:
            reply = sandbox.submit(fourth.sign(fourth.batch([])))
            if reply.ok or time.monotonic() > deadline:
                break
            assert reply.error_kind == helper_pb2.REPLAY, reply.error
            time.sleep(0.5)
        assert reply.ok, reply.error
        sandbox.stop()  # the marks are written at stop (or when idle)
        live = json.loads(state.read_text())[signer.key.key_id]
        assert fourth.epoch.hex() in live and len(live) <= 3


# --- max_named_namespaces: a real helper ------------------------------------------------


def test_live_helper_refuses_a_named_namespace_beyond_max_named_namespaces() -> None:
    with own_sandbox("max_named_namespaces = 2\n") as (sandbox, signer):
        def pair(a: str, ns: str, b: str, ns_b: str | None = None) -> helper_pb2.Operation:
            return create(spec(a, named(ns)), spec(b, named(ns_b) if ns_b else None))

        assert sandbox.submit(signer.sign(signer.batch([pair("rc-a1", "rc-1", "rc-b1")]))).ok
        assert sandbox.submit(signer.sign(signer.batch([pair("rc-a2", "rc-2", "rc-b2")]))).ok
        reply = sandbox.submit(signer.sign(signer.batch([pair("rc-a3", "rc-3", "rc-b3")])))
        _refused(reply, helper_pb2.POLICY_REFUSED, sandbox)
        assert reply.failed_index == 0
        assert "would exceed max_named_namespaces = 2" in reply.error
        assert "holds 2 entries" in reply.error
        assert sorted(sandbox.netns_list()) == ["rc-1", "rc-2"]
        assert sandbox.link("rc-b3") is None
        # Existing named namespaces are used as before.
        ok = pair("rc-a4", "rc-1", "rc-b4", "rc-2")
        reply = sandbox.submit(signer.sign(signer.batch([ok])))
        assert reply.ok, reply.error
        # Removing one makes room for exactly one; a batch wanting two is rolled back whole.
        sandbox.run("ip", "netns", "delete", "rc-2")
        two = [pair("rc-a5", "rc-5", "rc-b5"), pair("rc-a6", "rc-6", "rc-b6")]
        reply = sandbox.submit(signer.sign(signer.batch(two)))
        record = _refused(reply, helper_pb2.POLICY_REFUSED, sandbox)
        assert record["verdict"] == "rolled_back" and reply.failed_index == 1
        assert sorted(sandbox.netns_list()) == ["rc-1"]
        assert sandbox.link("rc-b5") is None
        reply = sandbox.submit(signer.sign(signer.batch(two[:1])))
        assert reply.ok, reply.error
        assert sorted(sandbox.netns_list()) == ["rc-1", "rc-5"]
