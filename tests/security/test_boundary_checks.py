"""Checks that mutation testing found no test for (issue 15, part 7): each test fails when
its check is removed or loosened (bench/mutants.py runs exactly those mutants)."""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path

import pytest

from netagent_api import helper_pb2
from netlinkd import audit, policy, trust
from netlinkd.errors import PolicyRefused

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "netlinkd"))
from nlkd_lib import (
    add_address,
    create,
    delete,
    named,
    own_sandbox,
    set_link,
    spec,
)

KEY = base64.b64encode(bytes(range(32))).decode()
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


# --- trust.py -------------------------------------------------------------------------


def test_a_key_of_another_type_is_refused_even_when_its_bytes_fit() -> None:
    with pytest.raises(trust.TrustFileError, match="expected 'ed25519"):
        trust.parse_trust_text(f"rsa {KEY} looks like a key\n", "t")
    assert len(trust.parse_trust_text(f"ed25519 {KEY} fine\n", "t")) == 1


@root_only
@pytest.mark.parametrize("owned", ["file", "directory"])
def test_trust_file_or_directory_owned_by_another_uid_is_refused(
    tmp_path: Path, owned: str
) -> None:
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o755)
    path = directory / "trust.keys"
    path.write_text(f"ed25519 {KEY} t\n")
    path.chmod(0o644)
    assert len(trust.load_trust_file(str(path))) == 1
    os.chown(path if owned == "file" else directory, 65534, -1)
    with pytest.raises(trust.TrustFileError, match="owned by uid 65534"):
        trust.load_trust_file(str(path))


# --- policy.py ------------------------------------------------------------------------


@pytest.mark.parametrize("owner", ["a:b", "a b", "a\nb", "a*", ""])
def test_owner_labels_with_other_characters_are_refused(owner: str) -> None:
    """Owner `a` must not manage links of owner `a:b`: the alias is netagent:<owner>:<peer>."""
    with pytest.raises(PolicyRefused):
        policy.check_owner(owner)
    policy.check_owner("a")


def test_loopback_is_refused_by_the_policy_itself() -> None:
    """The executor would refuse `lo` anyway (it has no owner alias); the policy says why."""
    with pytest.raises(PolicyRefused, match="loopback"):
        policy.check_ifname("lo", "w")
    policy.check_ifname("lo0", "w")


def test_namespace_path_must_sit_directly_in_an_allowed_directory(tmp_path: Path) -> None:
    allowed = tmp_path / "netns"
    for path in (allowed / "ok", allowed / "sub" / "y", tmp_path / "netnsX" / "y"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    rules = policy.Policy(netns_dirs=(str(allowed),))
    assert policy.canonical_ns_path(rules, str(allowed / "ok"), "w") == str(allowed / "ok")
    for bad in (allowed / "sub" / "y", tmp_path / "netnsX" / "y"):
        with pytest.raises(PolicyRefused, match="outside the allowed"):
            policy.canonical_ns_path(rules, str(bad), "w")


@pytest.mark.parametrize(("pid", "allowed"), [(0, False), (1, False), (2, True)])
def test_pid_references_to_pid_0_and_1_are_refused(pid: int, allowed: bool) -> None:
    rules = policy.Policy(allow_pid_refs=True)
    ref = helper_pb2.NamespaceRef(pid=pid)
    if allowed:
        policy.check_ns_ref(rules, ref, "w")
    else:
        with pytest.raises(PolicyRefused, match=f"PID {pid} cannot be"):
            policy.check_ns_ref(rules, ref, "w")


def test_observed_namespaces_are_checked_by_the_policy() -> None:
    batch = helper_pb2.Batch(owner="t")
    batch.observe.netns.append(helper_pb2.NamespaceRef(path="/etc/passwd"))
    with pytest.raises(PolicyRefused, match="observe: namespace path"):
        policy.check_batch(policy.Policy(), batch)


# --- audit.py -------------------------------------------------------------------------


def test_every_record_is_fsynced_before_append_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = audit.AuditLog(str(tmp_path / "audit.log"))
    synced: list[int] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_size)
        real_fsync(fd)

    monkeypatch.setattr(audit.os, "fsync", recording_fsync)
    try:
        log.append({"kind": "refused", "error": "x"})
        size = (tmp_path / "audit.log").stat().st_size
        assert size in synced, "the record was not fsync'd"
    finally:
        log.close()


# --- executor.py, live ----------------------------------------------------------------


@root_only
def test_mixed_batch_of_owned_and_foreign_deletes_changes_nothing() -> None:
    with own_sandbox() as (sandbox, signer):
        ns = named("mix-ns")
        pairs = [create(spec("mx-a", ns), spec("mx-b")), create(spec("mx-c", ns), spec("mx-d"))]
        assert sandbox.submit(signer.sign(signer.batch(pairs))).ok
        sandbox.run("ip", "link", "add", "mx-f", "type", "veth", "peer", "name", "mx-fp")
        sandbox.run("ip", "link", "set", "mx-f", "alias", "netagent:other:mx-fp")
        # the set between the deletes runs the owned delete before the foreign one is reached
        ops = [delete("mx-b"), set_link("mx-d", up=True), delete("mx-f")]
        reply = sandbox.submit(signer.sign(signer.batch(ops)))
        assert not reply.ok and reply.failed_index == 2, reply
        assert sandbox.link("mx-b") is not None and sandbox.link("mx-a", "mix-ns") is not None
        assert sandbox.link("mx-f") is not None
        assert "not undone" not in reply.error


@root_only
def test_a_failed_batch_undoes_its_set_link_and_add_address() -> None:
    with own_sandbox() as (sandbox, signer):
        ns = named("undo-ns")
        pair = create(spec("ud-a", ns, mtu=1500), spec("ud-b"))
        assert sandbox.submit(signer.sign(signer.batch([pair]))).ok
        ops = [set_link("ud-a", ns, mtu=1400, up=True), add_address("ud-a", "10.66.0.1/24", ns),
               set_link("ud-missing", ns, mtu=1400)]
        reply = sandbox.submit(signer.sign(signer.batch(ops)))
        assert not reply.ok and reply.failed_index == 2, reply
        link = sandbox.link("ud-a", "undo-ns")
        assert link is not None and link["mtu"] == 1500 and "UP" not in link["flags"]
        assert not [a for a in link.get("addr_info", []) if a["local"] == "10.66.0.1"]


@root_only
def test_owned_link_limit_is_exact_for_an_odd_limit() -> None:
    """Pairs come two links at a time: with a limit of 5, a third pair (6 links) is refused."""
    with own_sandbox("max_owned_links = 5\n") as (sandbox, signer):
        ns = named("odd-ns")
        for i in range(2):
            pair = create(spec(f"od{i}a", ns), spec(f"od{i}b", ns))
            assert sandbox.submit(signer.sign(signer.batch([pair]))).ok
        third = create(spec("od9a", ns), spec("od9b", ns))
        reply = sandbox.submit(signer.sign(signer.batch([third])))
        assert reply.error_kind == helper_pb2.OWNED_LINK_LIMIT and "limit of 5" in reply.error
