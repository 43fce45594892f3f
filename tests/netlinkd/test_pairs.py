"""Creating, changing, rolling back and deleting owned veth pairs in a real helper."""

from __future__ import annotations

import os
import subprocess
import sys

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


def _ok(reply: helper_pb2.BatchReply) -> None:
    assert reply.ok, f"{helper_pb2.ErrorKind.Name(reply.error_kind)}: {reply.error}"


def _addrs(link: dict[str, object]) -> set[str]:
    infos = link.get("addr_info", [])
    assert isinstance(infos, list)
    return {
        f"{a['local']}/{a['prefixlen']}" for a in infos if not str(a["local"]).startswith("fe80")
    }


def test_hello_gives_a_16_byte_instance(helper: Sandbox) -> None:
    reply = helper.hello()
    assert len(reply.helper_instance) == 16
    assert reply.version


def test_socket_is_0660(helper: Sandbox) -> None:
    assert os.stat(helper.socket).st_mode & 0o777 == 0o660


def test_create_pair_in_two_named_namespaces(helper: Sandbox, signer: Signer) -> None:
    a = spec("cp-a", named("cp-nsa"), mac="02:aa:00:00:00:01", mtu=1400, up=True,
             addresses=["10.71.0.1/24", "fd71::1/64"])
    b = spec("cp-b", named("cp-nsb"), mac="02:aa:00:00:00:02", mtu=1400, up=True,
             addresses=["10.71.0.2/24"])
    _ok(helper.submit(signer.sign(signer.batch([create(a, b)]))))
    assert {"cp-nsa", "cp-nsb"} <= set(helper.netns_list())
    link_a = helper.link("cp-a", "cp-nsa")
    link_b = helper.link("cp-b", "cp-nsb")
    assert link_a is not None and link_b is not None
    assert link_a["address"] == "02:aa:00:00:00:01" and link_b["address"] == "02:aa:00:00:00:02"
    assert link_a["mtu"] == 1400 and link_b["mtu"] == 1400
    assert "UP" in link_a["flags"] and "UP" in link_b["flags"]
    assert _addrs(link_a) == {"10.71.0.1/24", "fd71::1/64"}
    assert _addrs(link_b) == {"10.71.0.2/24"}
    assert link_a["ifalias"] == "netagent:t:cp-b" and link_b["ifalias"] == "netagent:t:cp-a"
    assert helper.link("cp-a") is None, "nothing may appear in the helper's own namespace"


def test_set_link_in_place_keeps_ifindex(helper: Sandbox, signer: Signer) -> None:
    ns = named("sl-ns")
    _ok(helper.submit(signer.sign(signer.batch(
        [create(spec("sl-a", ns, up=True), spec("sl-b", ns, up=True))]
    ))))
    before = helper.link("sl-a", "sl-ns")
    assert before is not None
    _ok(helper.submit(signer.sign(signer.batch(
        [set_link("sl-a", ns, mac="02:bb:00:00:00:09", mtu=1300, up=False)]
    ))))
    after = helper.link("sl-a", "sl-ns")
    assert after is not None
    assert after["ifindex"] == before["ifindex"]
    assert (after["address"], after["mtu"]) == ("02:bb:00:00:00:09", 1300)
    assert "UP" not in after["flags"]


def test_addresses_add_del_idempotent(helper: Sandbox, signer: Signer) -> None:
    ns = named("ad-ns")
    _ok(helper.submit(signer.sign(signer.batch(
        [create(spec("ad-a", ns, addresses=["10.72.0.1/24"]), spec("ad-b", ns))]
    ))))
    _ok(helper.submit(signer.sign(signer.batch([
        add_address("ad-a", "10.72.0.1/24", ns),
        add_address("ad-a", "10.72.1.1/24", ns),
        del_address("ad-a", "10.72.0.1/24", ns),
        del_address("ad-a", "10.72.9.9/24", ns),
    ]))))
    link = helper.link("ad-a", "ad-ns")
    assert link is not None and _addrs(link) == {"10.72.1.1/24"}


def test_failure_mid_batch_rolls_everything_back(helper: Sandbox, signer: Signer) -> None:
    ops = [
        create(spec("rb-a", named("rb-new")), spec("rb-b", named("rb-new"))),
        set_link("rb-a", named("rb-new"), mtu=1400),
        create(spec("rb-c", named("rb-new")), spec("rb-a", named("rb-new"))),
    ]
    reply = helper.submit(signer.sign(signer.batch(ops)))
    assert not reply.ok
    assert reply.error_kind == helper_pb2.CONFLICT, reply.error
    assert reply.failed_index == 2
    expected = "link rb-a already exists in namespace name=rb-new (owner: netagent,"
    assert expected in reply.error, reply.error
    assert "rb-new" not in helper.netns_list(), "a namespace the batch created is removed"
    results = [r for r in helper.audit_records() if r.get("kind") == "result"]
    assert results[-1]["verdict"] == "rolled_back" and results[-1]["failed_index"] == 2


def test_foreign_name_fails_the_batch_before_anything_changes(
    helper: Sandbox, signer: Signer
) -> None:
    helper.run("ip", "netns", "add", "rb-other")
    helper.run("ip", "-n", "rb-other", "link", "add", "rb-taken", "type", "veth",
               "peer", "name", "rb-taken-p")
    ns = named("rb-other")
    _ok(helper.submit(signer.sign(signer.batch([create(spec("rb-own", ns), spec("rb-ownp", ns))]))))
    ops = [
        delete("rb-own", ns),
        create(spec("rb-a", named("rb-new2")), spec("rb-b", named("rb-new2"))),
        create(spec("rb-c", ns), spec("rb-taken", ns)),
    ]
    reply = helper.submit(signer.sign(signer.batch(ops)))
    assert (reply.ok, reply.error_kind, reply.failed_index) == (False, helper_pb2.CONFLICT, 2)
    assert "rb-taken" in reply.error and "left untouched" in reply.error
    names = {link["ifname"] for link in helper.links("rb-other")}
    assert {"rb-own", "rb-ownp", "rb-taken", "rb-taken-p"} <= names, "nothing was deleted"
    assert "rb-c" not in names and "rb-new2" not in helper.netns_list()
    result = [r for r in helper.audit_records() if r.get("kind") == "result"][-1]
    assert (result["verdict"], result["results"]) == ("failed", [])


def test_delete_before_a_kernel_failure_is_reported_as_not_undone(
    helper: Sandbox, signer: Signer
) -> None:
    ns = named("nu-ns")
    _ok(helper.submit(signer.sign(signer.batch([create(spec("nu-old", ns), spec("nu-oldp", ns))]))))
    ops = [
        delete("nu-old", ns),
        create(spec("nu-a", ns), spec("nu-b", ns)),
        create(spec("nu-c", ns), spec("nu-a", ns)),
    ]
    reply = helper.submit(signer.sign(signer.batch(ops)))
    assert (reply.ok, reply.error_kind, reply.failed_index) == (False, helper_pb2.CONFLICT, 2)
    assert "not undone: delete nu-old" in reply.error
    names = {link["ifname"] for link in helper.links("nu-ns")}
    assert not names & {"nu-old", "nu-a", "nu-b", "nu-c"}, "creates rolled back, delete stays"
    result = [r for r in helper.audit_records() if r.get("kind") == "result"][-1]
    assert result["verdict"] == "failed" and "not undone" in result["error"]


def test_delete_is_idempotent(helper: Sandbox, signer: Signer) -> None:
    ns = named("dl-ns")
    _ok(helper.submit(signer.sign(signer.batch([create(spec("dl-a", ns), spec("dl-b", ns))]))))
    for _ in range(2):
        _ok(helper.submit(signer.sign(signer.batch([delete("dl-a", ns)]))))
        assert helper.link("dl-a", "dl-ns") is None and helper.link("dl-b", "dl-ns") is None
    _ok(helper.submit(signer.sign(signer.batch([
        delete("never-made", ns), delete("never-made", named("no-such-ns"))
    ]))))


def test_observe_returns_owned_links_only(helper: Sandbox, signer: Signer) -> None:
    ns = named("ob-ns")
    _ok(helper.submit(signer.sign(signer.batch(
        [create(spec("ob-a", ns, addresses=["10.73.0.1/24"], up=True), spec("ob-b"))]
    ))))
    _ok(helper.submit(signer.sign(signer.batch(
        [create(spec("ob-x", ns), spec("ob-y", ns))], owner="other"
    ))))
    helper.run("ip", "-n", "ob-ns", "link", "add", "ob-f1", "type", "veth", "peer", "name", "ob-f2")
    observe = helper_pb2.ObserveRequest(scan_named=True)
    reply = helper.submit(signer.sign(signer.batch([], observe)))
    _ok(reply)
    found = {(o.name, o.netns.WhichOneof("kind"), o.netns.name): o for o in reply.observed}
    names = {o.name for o in reply.observed}
    assert not names & {"ob-x", "ob-y", "ob-f1", "ob-f2"}
    assert {"ob-a", "ob-b"} <= names
    ob_a = found[("ob-a", "name", "ob-ns")]
    assert ob_a.peer == "ob-b" and ob_a.up and list(ob_a.addresses) == ["10.73.0.1/24"]
    assert ob_a.netns_inode == os.stat(f"/proc/{helper.pid}/root/run/netns/ob-ns").st_ino
    ob_b = found[("ob-b", None, "")]
    assert ob_b.peer == "ob-a" and not ob_b.up
    assert ob_a.HasField("statistics") and ob_b.HasField("statistics"), "the kernel's counters"
    assert (ob_b.statistics.tx_packets, ob_b.statistics.tx_bytes) == (0, 0), "down: sent nothing"


def test_observe_reports_a_namespace_under_each_reference_that_reaches_it(
    helper: Sandbox, signer: Signer
) -> None:
    ns = named("oa-ns")
    _ok(helper.submit(signer.sign(signer.batch([create(spec("oa-a", ns), spec("oa-b", ns))]))))
    by_file = helper_pb2.NamespaceRef(path="/run/netns/oa-ns")
    observe = helper_pb2.ObserveRequest(netns=[ns, by_file, ns], scan_named=True)
    reply = helper.submit(signer.sign(signer.batch([], observe)))
    _ok(reply)
    reports = [(o.name, o.netns.WhichOneof("kind"), o.netns_inode, o.ifindex)
               for o in reply.observed if o.name in ("oa-a", "oa-b")]
    assert sorted((name, kind) for name, kind, _, _ in reports) == [
        ("oa-a", "name"), ("oa-a", "path"), ("oa-b", "name"), ("oa-b", "path")]
    assert len({(name, inode, index) for name, _, inode, index in reports}) == 2


def test_helper_imports_no_etcd_or_docker() -> None:
    code = (
        "import sys, netlinkd.cli, netlinkd.server, netlinkd.executor;"
        "roots = {m.split('.')[0] for m in sys.modules};"
        "bad = sorted(roots & {'etcd3', 'docker', 'controller'});"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_both_ends_may_share_a_name_in_two_namespaces(helper: Sandbox, signer: Signer) -> None:
    """eth0 in a container and eth0 on the host: the kernel allows it, so does the policy
    (the controller plans such pairs: test_reconcile.py)."""
    ns = named("same-ns")
    reply = helper.submit(signer.sign(signer.batch(
        [create(spec("same0", ns, addresses=["10.9.0.1/30"]), spec("same0"))],
        helper_pb2.ObserveRequest(netns=[ns]),
    )))
    assert reply.ok, reply.error
    inside, outside = helper.link("same0", "same-ns"), helper.link("same0")
    assert inside is not None and outside is not None
    assert inside["ifalias"] == outside["ifalias"] == "netagent:t:same0"
    assert {(o.name, o.netns.name) for o in reply.observed} >= {("same0", "same-ns"), ("same0", "")}
    reply = helper.submit(signer.sign(signer.batch([delete("same0", ns)])))
    assert reply.ok, reply.error
    assert helper.link("same0") is None and helper.link("same0", "same-ns") is None
    twice = create(spec("same1", ns), spec("same1", ns))
    refused = helper.submit(signer.sign(signer.batch([twice])))
    assert not refused.ok and refused.error_kind == helper_pb2.POLICY_REFUSED
    assert "in one namespace" in refused.error
