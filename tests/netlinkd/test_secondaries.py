"""Deleting a subnet's primary IPv4 address keeps the subnet's other addresses.

The kernel drops every secondary address of a subnet with its primary when
promote_secondaries is 0 (the default in a new namespace), without a word; the helper adds
them back in the same operation (netlinkd/executor.py, `_del_address`)."""

from __future__ import annotations

from pathlib import Path

from nlkd_lib import (
    Sandbox,
    Signer,
    add_address,
    create,
    del_address,
    delete,
    named,
    set_link,
    spec,
)

from netagent_api import helper_pb2
from tests.harness.audit import records


def _addresses(helper: Sandbox, name: str, netns: str) -> set[str]:
    link = helper.link(name, netns)
    assert link is not None
    return {f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
            if not str(a["local"]).startswith("fe80")}


def _ok(reply: helper_pb2.BatchReply) -> helper_pb2.BatchReply:
    assert reply.ok, f"{helper_pb2.ErrorKind.Name(reply.error_kind)}: {reply.error}"
    return reply


def test_deleting_the_primary_keeps_its_secondary(helper: Sandbox, signer: Signer) -> None:
    ns = named("ps-ns")
    a = spec("ps-a", ns, up=True, addresses=["10.61.0.1/24", "10.61.0.2/24", "10.62.0.1/24"])
    _ok(helper.submit(signer.sign(signer.batch([create(a, spec("ps-b", named("ps-nb")))]))))
    try:
        assert _addresses(helper, "ps-a", "ps-ns") == {"10.61.0.1/24", "10.61.0.2/24",
                                                        "10.62.0.1/24"}
        # 10.61.0.1 came first, so it is the primary of 10.61.0.0/24.
        _ok(helper.submit(signer.sign(signer.batch([del_address("ps-a", "10.61.0.1/24", ns)]))))
        assert _addresses(helper, "ps-a", "ps-ns") == {"10.61.0.2/24", "10.62.0.1/24"}
        [result] = [r for r in records(Path(helper.audit)) if r["kind"] == "result"][-1:]
        assert result["results"][0].endswith("; re-added 10.61.0.2/24"), result  # audited
        # A primary and its secondary together, and a new primary: the batch's end state.
        _ok(helper.submit(signer.sign(signer.batch([
            add_address("ps-a", "10.61.0.3/24", ns),
            del_address("ps-a", "10.61.0.2/24", ns),
            del_address("ps-a", "10.62.0.1/24", ns),
        ]))))
        assert _addresses(helper, "ps-a", "ps-ns") == {"10.61.0.3/24"}
    finally:
        helper.submit(signer.sign(signer.batch([delete("ps-a", ns)])))


def test_a_kernel_side_effect_fails_the_batch_instead_of_passing_for_applied(
    helper: Sandbox, signer: Signer
) -> None:
    """Taking a link down drops its IPv6 addresses (keep_addr_on_down = 0). A batch that adds
    one and then takes the link down would otherwise be `applied` with the address gone."""
    ns = named("se-ns")
    a = spec("se-a", ns, up=True, addresses=["10.63.0.1/24"])
    _ok(helper.submit(signer.sign(signer.batch([create(a, spec("se-b", named("se-nb")))]))))
    try:
        reply = helper.submit(signer.sign(signer.batch([
            add_address("se-a", "fd63::1/64", ns),
            set_link("se-a", ns, up=False),
        ])))
        assert not reply.ok and reply.failed_index == 0, reply
        assert "kernel side effect" in reply.error and "fd63::1/64" in reply.error, reply.error
        link = helper.link("se-a", "se-ns")
        assert link is not None and "UP" in link["flags"], "rolled back"
        assert _addresses(helper, "se-a", "se-ns") == {"10.63.0.1/24"}
    finally:
        helper.submit(signer.sign(signer.batch([delete("se-a", ns)])))


def test_the_audit_result_says_what_each_operation_did(helper: Sandbox, signer: Signer) -> None:
    """Operations that find their change made already are applied, and audited as such."""
    ns = named("pr-ns")
    a = spec("pr-a", ns, mtu=1500, addresses=["10.63.0.1/24"])
    _ok(helper.submit(signer.sign(signer.batch([create(a, spec("pr-b", named("pr-nb")))]))))
    try:
        _ok(helper.submit(signer.sign(signer.batch([
            set_link("pr-a", ns, mtu=1500),
            set_link("pr-a", ns, mtu=1400, up=True),
            add_address("pr-a", "10.63.0.1/24", ns),
            del_address("pr-a", "10.63.0.9/24", ns),
        ]))))
        [result] = [r for r in records(Path(helper.audit)) if r["kind"] == "result"][-1:]
        assert [step.rsplit(":", 1)[-1] for step in result["results"]] == [
            " unchanged", " ['mtu', 'up']", " already present", " already absent"], result
    finally:
        helper.submit(signer.sign(signer.batch([delete("pr-a", ns)])))
