"""Agent loop against a fake helper (records batches, can fail op N or be down)."""

from __future__ import annotations

import dataclasses
import gc
import json
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller import live_status, observed, wire
from controller.agent import MAX_OPS_PER_BATCH, Agent, _NameIndex
from controller.events import (
    ConfigChanges,
    ConfigDeleted,
    ConfigPut,
    ConfigSnapshot,
    HelperReconnected,
    LinksChanged,
    LiveTick,
    Microservice,
    MicroservicesChanged,
    OwnedLinkChange,
    ResyncTick,
    Stop,
)
from controller.helper_client import HelperUnavailable
from controller.model import InterfaceConfig, NamespaceConfig
from controller.ops import CreateVethPair, DeleteLink, NsRef, ObservedLink, Op, State, Status
from controller.reconcile import HELPER_DOWN_GRACE_S, Availability
from controller.signer import Signer
from netagent_api import helper_pb2


def veth(name: str, peer: str, ns: str, ip: str) -> bytes:
    return json.dumps({
        "name": name, "type": 0, "enabled": True, "mtu": 1500,
        "ip_addresses": [ip], "namespace": {"type": 2, "name": ns},
        "veth": {"peer_if_name": peer},
    }).encode()


PAIR = {"veth1": veth("veth1", "veth2", "ns1", "10.0.0.1/24"),
        "veth2": veth("veth2", "veth1", "ns2", "10.0.0.2/24")}


class FakeHelper:
    def __init__(self) -> None:
        self.instance = b"first"
        self.links: tuple[ObservedLink, ...] = ()
        self.batches: list[tuple[list[Op], helper_pb2.Batch]] = []
        self.fail: tuple[int, int] | None = None  # (op index or -1 = any batch, ErrorKind)
        self.taken: set[str] = set()  # link names a foreign link holds: CONFLICT
        self.refused_paths: set[str] = set()  # namespace files outside the policy
        self.down = False
        self.generation = 0  # the link monitor's, as a batch reply carries it

    def hello(self) -> bytes:
        if self.down:
            raise HelperUnavailable("helper at /fake did not answer Hello")
        return self.instance

    def submit(self, signed: helper_pb2.SignedBatch) -> helper_pb2.BatchReply:
        if self.down:
            raise HelperUnavailable("helper at /fake did not answer Submit")
        batch = helper_pb2.Batch.FromString(signed.batch)
        ops = [wire.op_from_proto(op) for op in batch.operations]
        self.batches.append((ops, batch))
        if {ref.path for ref in batch.observe.netns} & self.refused_paths:
            return helper_pb2.BatchReply(ok=False, failed_index=-1,
                                         error_kind=helper_pb2.POLICY_REFUSED,
                                         error="observe: outside the allowed directories",
                                         helper_instance=self.instance)
        conflict = next((i for i, op in enumerate(ops) if set(wire.op_links(op)) & self.taken), -1)
        if conflict >= 0:
            return helper_pb2.BatchReply(ok=False, failed_index=conflict,
                                         error_kind=helper_pb2.CONFLICT, error="name taken",
                                         helper_instance=self.instance)
        if self.fail is not None and (self.fail[0] < 0 or self.fail[0] < len(ops)):
            return helper_pb2.BatchReply(ok=False, failed_index=self.fail[0],
                                         error_kind=self.fail[1], error="boom",  # type: ignore[arg-type]
                                         helper_instance=self.instance)
        existing = {(k.name, k.netns.identity()) for k in self.links}
        for index, op in enumerate(ops):
            if isinstance(op, CreateVethPair) and {
                (op.a.name, op.a.netns.identity()), (op.b.name, op.b.netns.identity())
            } & existing:
                return helper_pb2.BatchReply(ok=False, failed_index=index,
                                             error_kind=helper_pb2.CONFLICT,
                                             error="exists (owned by netagent)",
                                             helper_instance=self.instance)
        self.links = observed.apply(self.links, ops)
        reply = helper_pb2.BatchReply(ok=True, failed_index=-1, helper_instance=self.instance,
                                      generation=self.generation)
        if batch.HasField("observe"):
            reply.observed.extend(wire.observed_to_proto(link) for link in self.links
                                  if self._visible(link, batch.observe))
        return reply

    @staticmethod
    def _visible(link: ObservedLink, request: helper_pb2.ObserveRequest) -> bool:
        """Like netlinkd: its own namespace, the asked ones, named ones on a scan."""
        asked = {wire.ns_from_proto(ref).identity() for ref in request.netns}
        kind = link.netns.kind
        return (kind == "host" or link.netns.identity() in asked
                or (kind == "name" and request.scan_named))

    def link_names(self) -> set[str]:
        return {link.name for link in self.links}

    def op_batches(self) -> list[list[Op]]:
        return [ops for ops, _ in self.batches if ops]


class Statuses:
    def __init__(self) -> None:
        self.last: dict[str, Status] = {}
        self.calls: list[dict[str, Status]] = []

    def publish(self, statuses: Mapping[str, Status], held: object = ()) -> None:
        self.last = dict(statuses)
        self.calls.append(self.last)

    def state(self, name: str) -> State:
        return self.last[name].state


@pytest.fixture
def helper() -> FakeHelper:
    return FakeHelper()


@pytest.fixture
def statuses() -> Statuses:
    return Statuses()


@pytest.fixture
def agent(helper: FakeHelper, statuses: Statuses) -> Agent:
    return Agent("vpp1", helper, Signer(Ed25519PrivateKey.generate()), statuses,
                 config_prefix="/vnf-agent/vpp1/linux/config/v1/interface/")


def test_snapshot_creates_pair_and_reports_configured(
        agent: Agent, helper: FakeHelper, statuses: Statuses) -> None:
    assert agent.process([ConfigSnapshot(PAIR)])
    first_ops, first = helper.batches[0]
    assert not first_ops and first.observe.scan_named, "starts with a full observe"
    assert {r.name for r in first.observe.netns} == {"ns1", "ns2"}
    assert any(isinstance(op, CreateVethPair) for op in helper.op_batches()[0])
    assert helper.link_names() == {"veth1", "veth2"}
    assert statuses.state("veth1") == statuses.state("veth2") == State.CONFIGURED
    assert all(b.owner == "vpp1" for _, b in helper.batches)


def test_resync_without_drift_sends_no_ops(agent: Agent, helper: FakeHelper) -> None:
    agent.process([ConfigSnapshot(PAIR)])
    before = len(helper.op_batches())
    agent.process([ResyncTick()])
    assert len(helper.op_batches()) == before
    assert not helper.batches[-1][0] and helper.batches[-1][1].HasField("observe")


def test_burst_of_puts_is_one_batch(agent: Agent, helper: FakeHelper) -> None:
    agent.process([ConfigSnapshot({})])
    agent.process([ConfigPut(name, raw) for name, raw in PAIR.items()])
    assert len(helper.op_batches()) == 1


def test_queued_events_are_drained_into_one_reconcile(
        agent: Agent, helper: FakeHelper, statuses: Statuses) -> None:
    two_pairs = {**PAIR, "aaa1": veth("aaa1", "aaa2", "ns1", "10.1.0.1/24"),
                 "aaa2": veth("aaa2", "aaa1", "ns2", "10.1.0.2/24")}
    agent.post(ConfigSnapshot({}))
    for name, raw in two_pairs.items():
        agent.post(ConfigPut(name, raw))
    loop = threading.Thread(target=agent.run)
    loop.start()
    try:
        deadline = time.monotonic() + 30
        while len(statuses.last) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        agent.stop()
        loop.join(timeout=30)
    assert not loop.is_alive()
    assert {s.state for s in statuses.last.values()} == {State.CONFIGURED}
    assert [len(ops) for ops in helper.op_batches()] == [2], "both pairs in one batch"


def test_more_ops_than_the_helper_limit_go_in_consecutive_batches(
        agent: Agent, helper: FakeHelper, statuses: Statuses) -> None:
    count = MAX_OPS_PER_BATCH + 10
    pairs = {}
    for i in range(count):
        pairs[f"a{i}"] = veth(f"a{i}", f"b{i}", "ns1", f"10.{i // 256}.{i % 256}.1/24")
        pairs[f"b{i}"] = veth(f"b{i}", f"a{i}", "ns2", f"10.{i // 256}.{i % 256}.2/24")
    agent.process([ConfigSnapshot(pairs)])
    assert [len(ops) for ops in helper.op_batches()] == [MAX_OPS_PER_BATCH, 10]
    assert len(helper.link_names()) == 2 * count
    assert {s.state for s in statuses.last.values()} == {State.CONFIGURED}
    agent.process([ConfigSnapshot({})])
    assert [len(ops) for ops in helper.op_batches()[2:]] == [MAX_OPS_PER_BATCH, 10]
    assert helper.link_names() == set()


def test_bad_key_never_blocks_good_keys(agent: Agent, statuses: Statuses) -> None:
    agent.process([ConfigSnapshot({**PAIR, "bad": b'{"name": "bad", "mtu": "x"'})])
    assert statuses.state("veth1") == State.CONFIGURED
    assert statuses.state("bad") == State.ERROR
    assert "/vnf-agent/vpp1/linux/config/v1/interface/bad" in statuses.last["bad"].reason


def test_delete_removes_link_and_status(
        agent: Agent, helper: FakeHelper, statuses: Statuses) -> None:
    agent.process([ConfigSnapshot(PAIR)])
    agent.process([ConfigDeleted("veth2")])
    assert "veth2" not in statuses.last
    assert statuses.state("veth1") == State.PENDING
    assert not helper.link_names()


def test_failed_op_is_reported_then_retried(
        agent: Agent, helper: FakeHelper, statuses: Statuses) -> None:
    helper.fail = (0, helper_pb2.KERNEL)
    agent.process([ConfigSnapshot(PAIR)])
    assert statuses.state("veth1") == State.ERROR
    assert "helper refused create veth" in statuses.last["veth1"].reason
    assert "KERNEL: boom" in statuses.last["veth1"].reason
    helper.fail = None
    agent.process([ResyncTick()])
    assert statuses.state("veth1") == statuses.state("veth2") == State.CONFIGURED


def test_refused_op_is_set_aside_and_the_rest_of_the_batch_applies(
        agent: Agent, helper: FakeHelper, statuses: Statuses) -> None:
    helper.taken = {"aaa1"}
    desired = {**PAIR, "aaa1": veth("aaa1", "aaa2", "ns1", "10.1.0.1/24"),
               "aaa2": veth("aaa2", "aaa1", "ns2", "10.1.0.2/24")}
    agent.process([ConfigSnapshot(desired)])
    first, second = helper.op_batches()[:2]
    assert [wire.op_links(op) for op in first] == [("aaa1", "aaa2"), ("veth1", "veth2")]
    assert [wire.op_links(op) for op in second] == [("veth1", "veth2")]
    assert helper.link_names() == {"veth1", "veth2"}
    assert statuses.state("veth1") == statuses.state("veth2") == State.CONFIGURED
    assert statuses.state("aaa1") == statuses.state("aaa2") == State.ERROR
    assert "create veth aaa1<->aaa2: CONFLICT: name taken" in statuses.last["aaa1"].reason
    sent = len(helper.batches)
    agent.process([ConfigPut("veth1", veth("veth1", "veth2", "ns1", "10.0.0.9/24"))])
    assert [[wire.op_links(op) for op in ops] for ops, _ in helper.batches[sent:]] == [
        [("veth1",), ("veth1",)]], "a set-aside op waits for the timer or its own config"
    sent = len(helper.batches)
    agent.process([ConfigPut("aaa2", veth("aaa2", "aaa1", "ns2", "10.1.0.9/24"))])
    assert [wire.op_links(op) for op in helper.batches[sent][0]] == [("aaa1", "aaa2")]
    helper.taken = set()
    agent.process([ResyncTick()])
    assert {s.state for s in statuses.last.values()} == {State.CONFIGURED}
    assert helper.link_names() == {"veth1", "veth2", "aaa1", "aaa2"}


def test_refused_delete_of_an_unconfigured_link_does_not_block_a_create(
        agent: Agent, helper: FakeHelper, statuses: Statuses) -> None:
    agent.process([ConfigSnapshot({"aaa1": veth("aaa1", "aaa2", "ns1", "10.1.0.1/24"),
                                   "aaa2": veth("aaa2", "aaa1", "ns2", "10.1.0.2/24")})])
    helper.taken = {"aaa1"}
    agent.process([ConfigSnapshot(PAIR)])
    assert helper.link_names() == {"veth1", "veth2", "aaa1", "aaa2"}
    assert statuses.state("veth1") == statuses.state("veth2") == State.CONFIGURED
    helper.taken = set()
    agent.process([ResyncTick()])
    assert helper.link_names() == {"veth1", "veth2"}


def test_namespace_the_helper_refuses_errors_only_its_interfaces(
        agent: Agent, helper: FakeHelper, statuses: Statuses, tmp_path: Path) -> None:
    bad = tmp_path / "bad-ns"
    bad.touch()
    helper.refused_paths = {str(bad)}
    outside = json.dumps({"name": "out1", "type": 0, "enabled": True,
                          "namespace": {"type": 3, "filepath": str(bad)},
                          "veth": {"peer_if_name": "out2"}}).encode()
    desired = {**PAIR, "out1": outside, "out2": veth("out2", "out1", "ns3", "10.2.0.2/24")}
    agent.process([ConfigSnapshot(desired)])
    assert helper.link_names() == {"veth1", "veth2"}
    assert statuses.state("veth1") == statuses.state("veth2") == State.CONFIGURED
    assert statuses.state("out1") == State.ERROR
    assert "POLICY_REFUSED" in statuses.last["out1"].reason
    assert str(bad) in statuses.last["out1"].reason
    assert statuses.state("out2") == State.PENDING
    assert "peer out1" in statuses.last["out2"].reason
    helper.refused_paths = set()
    agent.process([ResyncTick()])
    assert helper.link_names() == {"veth1", "veth2", "out1", "out2"}
    assert {s.state for s in statuses.last.values()} == {State.CONFIGURED}


def test_namespace_gone_marks_pending_until_tick(
        agent: Agent, helper: FakeHelper, statuses: Statuses) -> None:
    helper.fail = (0, helper_pb2.NAMESPACE_GONE)
    agent.process([ConfigSnapshot(PAIR)])
    assert statuses.state("veth1") in (State.PENDING, State.ERROR)
    helper.fail = None
    agent.process([ResyncTick()])
    assert statuses.state("veth1") == State.CONFIGURED


def test_a_new_pair_costs_one_batch_per_put_where_its_namespaces_were_never_observed(
        agent: Agent, helper: FakeHelper, statuses: Statuses) -> None:
    agent.process([ConfigSnapshot(PAIR)])
    sent = len(helper.batches)
    agent.process([ConfigPut("new1", veth("new1", "new2", "ns3", "10.3.0.1/24"))])
    (ops, observe_ns3), = helper.batches[sent:]
    assert not ops and "ns3" in {r.name for r in observe_ns3.observe.netns}
    sent = len(helper.batches)
    agent.process([ConfigPut("new2", veth("new2", "new1", "ns4", "10.3.0.2/24"))])
    (ops, create), = helper.batches[sent:]
    assert [wire.op_links(op) for op in ops] == [("new1", "new2")]
    assert "ns4" in {r.name for r in create.observe.netns}, "observed in the same batch"
    assert statuses.state("new1") == statuses.state("new2") == State.CONFIGURED
    assert statuses.last["new2"].live is not None and statuses.last["new2"].live.namespace \
        == NsRef.named("ns4"), "the batch's observe is taken in"


def _pair_made_elsewhere(a: str, b: str, ns_a: str, ns_b: str) -> tuple[ObservedLink, ...]:
    """A pair owned by this agent that no observe has seen (its namespaces were made after
    the last one), with other addresses than configured."""
    return (ObservedLink(a, NsRef.named(ns_a), 7, "", 1500, True, ("10.9.0.1/24",), b),
            ObservedLink(b, NsRef.named(ns_b), 8, "", 1500, True, ("10.9.0.2/24",), a))


def test_a_pair_already_in_namespaces_never_observed_is_kept_not_recreated(
        agent: Agent, helper: FakeHelper, statuses: Statuses) -> None:
    """Both ends arrive at once: the create, sent with the observe, is refused (the names
    exist) and changes nothing; it is not held against the pair, which is planned again
    with what the observe finds and only its addresses are changed."""
    agent.process([ConfigSnapshot(PAIR)])
    helper.links = (*helper.links, *_pair_made_elsewhere("new1", "new2", "ns3", "ns4"))
    sent = len(helper.batches)
    agent.process([ConfigPut("new1", veth("new1", "new2", "ns3", "10.3.0.1/24")),
                   ConfigPut("new2", veth("new2", "new1", "ns4", "10.3.0.2/24"))])
    sent_ops = [type(op).__name__ for ops, _ in helper.batches[sent:] for op in ops]
    assert "DeleteLink" not in sent_ops
    assert statuses.state("new1") == statuses.state("new2") == State.CONFIGURED
    assert {a for k in helper.links if k.name == "new2" for a in k.addresses} == {"10.3.0.2/24"}
    assert [k.ifindex for k in helper.links if k.name in ("new1", "new2")] == [7, 8]


def test_a_half_seen_pair_is_observed_before_anything_is_deleted(
        agent: Agent, helper: FakeHelper, statuses: Statuses, tmp_path: Path) -> None:
    """An end's config now names its namespace by a file no observe has covered yet (the
    same namespace as before): planned blind, its pair looks half-made, and the plan
    would delete the other end (taking the pair along) to make it anew. A plan with
    deletions waits for the observe instead, which finds the pair whole."""
    ns_file = tmp_path / "ns4"
    ns_file.touch()
    agent.process([ConfigSnapshot(PAIR)])
    moved = NsRef.of_path(str(ns_file))
    helper.links = tuple(dataclasses.replace(k, netns=moved) if k.name == "veth2" else k
                         for k in helper.links)
    sent = len(helper.batches)
    agent.process([ConfigPut("veth2", json.dumps({
        "name": "veth2", "type": 0, "enabled": True, "mtu": 1500,
        "ip_addresses": ["10.0.0.2/24"], "namespace": {"type": 3, "filepath": str(ns_file)},
        "veth": {"peer_if_name": "veth1"}}).encode())])
    assert [ops for ops, _ in helper.batches[sent:]] == [[]], "one observe, no change"
    assert statuses.state("veth1") == statuses.state("veth2") == State.CONFIGURED


def test_helper_restart_triggers_full_observe_and_repair(
        agent: Agent, helper: FakeHelper, statuses: Statuses) -> None:
    agent.process([ConfigSnapshot(PAIR)])
    helper.instance = b"second"
    helper.links = ()
    agent.process([HelperReconnected(b"second")])  # the link-event stream's first message
    assert helper.link_names() == {"veth1", "veth2"}
    assert statuses.state("veth1") == State.CONFIGURED


def test_a_change_costs_no_round_trip_but_its_batch(agent: Agent, helper: FakeHelper) -> None:
    """No Hello before each change: a helper restart the link-event stream has not told
    yet shows in the next batch's reply, and the round after that observes everything."""
    agent.process([ConfigSnapshot(PAIR)])
    hellos = 0
    real_hello = helper.hello

    def counted_hello() -> bytes:
        nonlocal hellos
        hellos += 1
        return real_hello()

    helper.hello = counted_hello  # type: ignore[method-assign]
    helper.instance = b"second"
    sent = len(helper.batches)
    agent.process([ConfigPut("veth1", veth("veth1", "veth2", "ns1", "10.0.0.9/24"))])
    assert (hellos, len(helper.batches)) == (0, sent + 1)
    agent.process([ConfigPut("veth2", veth("veth2", "veth1", "ns2", "10.0.0.8/24"))])
    ops, first = helper.batches[sent + 1]
    assert not ops and first.observe.scan_named, "a full observe for the new instance"
    assert hellos == 1


def test_helper_down_is_reported_and_survived(
        agent: Agent, helper: FakeHelper, statuses: Statuses) -> None:
    helper.down = True
    agent.process([ConfigSnapshot(PAIR)])
    assert statuses.state("veth1") == State.ERROR
    assert "netlinkd unavailable" in statuses.last["veth1"].reason
    helper.down = False
    agent.process([ResyncTick()])
    assert statuses.state("veth1") == State.CONFIGURED


def test_stop_ends_processing(agent: Agent) -> None:
    assert agent.process([ConfigSnapshot({}), Stop()]) is False


def test_resolver(agent: Agent, tmp_path: Path) -> None:
    assert agent.resolve(NamespaceConfig()).ref == NsRef.host()
    assert agent.resolve(NamespaceConfig("named", name="x")).ref == NsRef.named("x")
    assert agent.resolve(NamespaceConfig("pid", pid=1)).ref == NsRef.of_pid(1)
    assert agent.resolve(NamespaceConfig("pid", pid=2**22 + 7)).reason == (
        f"waiting for process {2**22 + 7}")
    missing = str(tmp_path / "nope")
    assert agent.resolve(NamespaceConfig("file", path=missing)).reason == (
        f"waiting for namespace file {missing}")
    assert agent.resolve(NamespaceConfig("file", path=str(tmp_path))).ref == (
        NsRef.of_path(str(tmp_path)))
    ms = NamespaceConfig("microservice", microservice="web")
    before_listing = agent.resolve(ms)
    assert before_listing.reason == "waiting for microservice web; Docker not listed yet"
    assert before_listing.hold
    down = "Docker unreachable at unix:///d.sock: refused"
    agent.process([MicroservicesChanged({}, connected=False, reason=down)])
    assert agent.resolve(ms).reason == f"waiting for microservice web; {down}"
    assert agent.resolve(ms).hold
    agent.process([MicroservicesChanged({})])
    assert agent.resolve(ms) == Availability(None, "waiting for microservice web")
    found = Microservice("web", "c1" * 8, "/var/run/docker/netns/abc", 42, "t", ("two found",))
    agent.process([MicroservicesChanged({"web": found})])
    assert agent.resolve(ms).ref == NsRef.of_path("/var/run/docker/netns/abc")
    assert agent.resolve(ms).warnings == ("two found",)
    agent.process([MicroservicesChanged({"web": found}, connected=False, reason=down)])
    assert agent.resolve(ms).ref == NsRef.of_path("/var/run/docker/netns/abc")
    assert agent.resolve(ms).warnings == (
        "two found", f"{down}; keeping container c1c1c1c1c1c1 as last seen")


def test_docker_outage_keeps_applied_microservice_pair_and_says_so(
        agent: Agent, helper: FakeHelper, statuses: Statuses) -> None:
    ends = {
        "ms0": json.dumps({"name": "ms0", "type": 0, "enabled": True,
                           "namespace": {"type": 1, "microservice": "web"},
                           "veth": {"peer_if_name": "hs0"}}).encode(),
        "hs0": json.dumps({"name": "hs0", "type": 0, "enabled": True,
                           "veth": {"peer_if_name": "ms0"}}).encode(),
    }
    web = Microservice("web", "c1" * 8, "/var/run/docker/netns/abc", 42, "t")
    agent.process([ConfigSnapshot(ends), MicroservicesChanged({"web": web})])
    assert statuses.state("ms0") == statuses.state("hs0") == State.CONFIGURED
    applied = len(helper.batches)
    down = "Docker unreachable at unix:///d.sock: connection refused"
    agent.process([MicroservicesChanged({"web": web}, connected=False, reason=down)])
    assert len(helper.batches) == applied, "an outage must not change anything applied"
    assert statuses.state("ms0") == State.CONFIGURED
    assert any(down in warning for warning in statuses.last["ms0"].warnings)
    agent.process([MicroservicesChanged({"web": web})])
    assert statuses.last["ms0"].warnings == ()


def test_refused_observe_is_reported_on_every_interface(
        agent: Agent, helper: FakeHelper, statuses: Statuses) -> None:
    helper.fail = (-1, helper_pb2.BAD_SIGNATURE)
    agent.process([ConfigSnapshot(PAIR)])
    assert statuses.state("veth1") == State.ERROR
    assert "BAD_SIGNATURE: boom" in statuses.last["veth2"].reason
    helper.fail = None
    agent.process([ResyncTick()])
    assert statuses.state("veth1") == statuses.state("veth2") == State.CONFIGURED


def test_full_audit_disk_keeps_true_statuses_and_blocks_changes(
        agent: Agent, helper: FakeHelper, statuses: Statuses) -> None:
    agent.process([ConfigSnapshot(PAIR)])
    helper.fail = (-1, helper_pb2.AUDIT_UNAVAILABLE)
    agent.process([ResyncTick()])
    for name in ("veth1", "veth2"):
        assert statuses.state(name) == State.CONFIGURED
        assert statuses.last[name].reason == ""
        assert "changes are blocked: netlinkd refuses every change: AUDIT_UNAVAILABLE: boom" \
            in statuses.last[name].warnings[0]
    agent.process([ConfigPut("veth1", veth("veth1", "veth2", "ns1", "10.0.0.9/24"))])
    assert statuses.state("veth1") == State.ERROR
    assert statuses.last["veth1"].reason.startswith("not applied: netlinkd refuses every change")
    assert statuses.state("veth2") == State.CONFIGURED
    helper.fail = None
    agent.process([ResyncTick()])
    assert statuses.last == {"veth1": Status(State.CONFIGURED, ""),
                             "veth2": Status(State.CONFIGURED, "")}
    assert {"10.0.0.9/24"} <= {a for k in helper.links for a in k.addresses}


def test_full_audit_disk_before_any_observe_says_the_state_is_unknown(
        agent: Agent, helper: FakeHelper, statuses: Statuses) -> None:
    helper.fail = (-1, helper_pb2.AUDIT_UNAVAILABLE)
    agent.process([ConfigSnapshot(PAIR)])
    assert statuses.state("veth1") == State.ERROR
    assert "helper refused to report links: AUDIT_UNAVAILABLE" in statuses.last["veth1"].reason


def test_stopped_helper_blocks_changes_but_keeps_what_is_true(
        helper: FakeHelper, statuses: Statuses) -> None:
    agent = _new_agent(helper, statuses, helper_grace_s=0.0)
    agent.process([ConfigSnapshot(PAIR)])
    helper.down = True
    agent.process([ResyncTick()])
    assert statuses.state("veth1") == State.CONFIGURED
    assert "changes are blocked: netlinkd unavailable" in statuses.last["veth1"].warnings[0]


def test_helper_restart_within_the_grace_rewrites_no_status(
        agent: Agent, helper: FakeHelper, statuses: Statuses) -> None:
    agent.process([ConfigSnapshot(PAIR)])
    before = dict(statuses.last)
    published = len(statuses.calls)
    helper.down = True
    agent.process([ResyncTick()])
    agent.process([ResyncTick()])
    assert statuses.last == before
    helper.down = False
    helper.instance = b"restarted"
    agent.process([ResyncTick()])
    assert statuses.last == before
    assert all(call == before for call in statuses.calls[published:])


def test_helper_down_past_the_grace_is_published(
        agent: Agent, helper: FakeHelper, statuses: Statuses,
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [time.monotonic()]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    agent.process([ConfigSnapshot(PAIR)])
    helper.down = True
    agent.process([ResyncTick()])
    assert statuses.last["veth1"].warnings == ()
    clock[0] += HELPER_DOWN_GRACE_S
    agent.process([ResyncTick()])
    assert "changes are blocked: netlinkd unavailable" in statuses.last["veth1"].warnings[0]


def test_full_audit_disk_after_a_stop_is_published_at_once(
        agent: Agent, helper: FakeHelper, statuses: Statuses) -> None:
    agent.process([ConfigSnapshot(PAIR)])
    helper.down = True
    agent.process([ResyncTick()])
    helper.down = False
    helper.fail = (-1, helper_pb2.AUDIT_UNAVAILABLE)
    agent.process([ResyncTick()])
    assert "changes are blocked: netlinkd refuses every change: AUDIT_UNAVAILABLE" \
        in statuses.last["veth1"].warnings[0]


# ---- restarts, outages and shared kernel names (found in review) ----------------------

def _iface(name: str, peer: str, namespace: dict[str, object], host: str = "") -> bytes:
    value: dict[str, object] = {"name": name, "type": 0, "enabled": True, "mtu": 1500,
                                "namespace": namespace, "veth": {"peer_if_name": peer}}
    if host:
        value["host_if_name"] = host
    return json.dumps(value).encode()


MS_PAIR = {"m": _iface("m", "h", {"type": 1, "microservice": "web"}, host="ceth0"),
           "h": _iface("h", "m", {}, host="vhost0")}


def _web(sandbox: str) -> MicroservicesChanged:
    return MicroservicesChanged({"web": Microservice("web", "c" * 64, sandbox, 1, "t")})


def refuse_creates(helper: FakeHelper, refused: Callable[[CreateVethPair], bool]) -> None:
    """From now on the helper answers CONFLICT to the creates `refused` picks."""
    real_submit = helper.submit

    def submit(signed: helper_pb2.SignedBatch) -> helper_pb2.BatchReply:
        ops = [wire.op_from_proto(op)
               for op in helper_pb2.Batch.FromString(signed.batch).operations]
        for index, op in enumerate(ops):
            if isinstance(op, CreateVethPair) and refused(op):
                return helper_pb2.BatchReply(ok=False, failed_index=index,
                                             error_kind=helper_pb2.CONFLICT,
                                             error="name taken by a foreign link",
                                             helper_instance=helper.instance)
        return real_submit(signed)

    helper.submit = submit  # type: ignore[method-assign]


def _new_agent(helper: FakeHelper, statuses: Statuses | None = None,
               helper_grace_s: float = HELPER_DOWN_GRACE_S) -> Agent:
    return Agent("vpp1", helper, Signer(Ed25519PrivateKey.generate()), statuses or Statuses(),
                 config_prefix="/vnf-agent/vpp1/linux/config/v1/interface/",
                 helper_grace_s=helper_grace_s)


def test_nothing_is_planned_or_published_before_the_first_etcd_listing(
        helper: FakeHelper) -> None:
    _new_agent(helper).process([ConfigSnapshot(PAIR)])
    before = len(helper.batches)
    restarted = Statuses()
    agent = _new_agent(helper, restarted)  # restart while etcd is unreachable
    agent.process([ResyncTick()])
    agent.process([MicroservicesChanged({})])
    agent.process([HelperReconnected(b"second")])
    assert helper.link_names() == {"veth1", "veth2"}
    assert helper.op_batches()[before:] == [] and restarted.last == {}  # may observe
    agent.process([ConfigSnapshot(PAIR)])
    assert helper.op_batches()[before:] == []
    assert restarted.state("veth1") == State.CONFIGURED


def test_a_restart_observes_while_etcd_is_listed_and_not_again_after(
        helper: FakeHelper) -> None:
    """The full observe is made once the link-event stream is up, before etcd's listing
    arrives (the watcher parses it meanwhile); the listing is planned against it."""
    _new_agent(helper).process([ConfigSnapshot(PAIR)])
    before = len(helper.batches)
    restarted = Statuses()
    agent = _new_agent(helper, restarted)
    agent.process([MicroservicesChanged({})])
    assert len(helper.batches) == before, "not before the link-event stream is up"
    agent.process([HelperReconnected(helper.instance)])
    (ops, batch), = helper.batches[before:]
    assert not ops and batch.observe.scan_named and restarted.last == {}
    agent.process([ConfigSnapshot(PAIR)])
    assert len(helper.batches) == before + 1
    assert restarted.state("veth1") == State.CONFIGURED
    assert restarted.state("veth2") == State.CONFIGURED


def test_after_an_early_observe_a_named_namespace_it_found_nothing_in_is_observed_anew(
        helper: FakeHelper) -> None:
    """Only the named namespaces the early observe reported links in count as observed:
    it did not ask for the others (one may lie outside the helper's scan)."""
    _new_agent(helper).process([ConfigSnapshot(PAIR)])
    before = len(helper.batches)
    agent = _new_agent(helper, Statuses())
    agent.process([HelperReconnected(helper.instance)])
    more = {**PAIR, "veth3": veth("veth3", "veth4", "ns3", "10.0.1.1/24"),
            "veth4": veth("veth4", "veth3", "ns4", "10.0.1.2/24")}
    agent.process([ConfigSnapshot(more)])
    _early, (ops, batch) = helper.batches[before:]
    assert [type(op) for op in ops] == [CreateVethPair]
    assert {"ns3", "ns4"} <= {wire.ns_from_proto(ref).name for ref in batch.observe.netns}


def test_an_early_observe_that_fails_is_made_again_after_the_listing(
        helper: FakeHelper) -> None:
    _new_agent(helper).process([ConfigSnapshot(PAIR)])
    before = len(helper.batches)
    statuses = Statuses()
    agent = _new_agent(helper, statuses)
    helper.down = True
    agent.process([HelperReconnected(helper.instance)])
    helper.down = False
    agent.process([ConfigSnapshot(PAIR)])
    (ops, batch), = helper.batches[before:]
    assert not ops and batch.observe.scan_named
    assert statuses.state("veth1") == State.CONFIGURED


def test_restart_with_microservices_changes_nothing_whatever_comes_first(
        helper: FakeHelper) -> None:
    _new_agent(helper).process([_web("/run/docker/netns/aaa"), ConfigSnapshot(MS_PAIR)])
    assert helper.link_names() == {"ceth0", "vhost0"}
    applied = len(helper.op_batches())
    statuses = Statuses()
    agent = _new_agent(helper, statuses)
    agent.process([ConfigSnapshot(MS_PAIR)])  # etcd listed, Docker not yet
    assert statuses.state("h") == State.PENDING
    assert "Docker not listed yet" in statuses.last["m"].reason
    agent.process([_web("/run/docker/netns/aaa")])
    assert helper.op_batches()[applied:] == [], "a restart must not touch the kernel"
    assert statuses.state("m") == statuses.state("h") == State.CONFIGURED


def test_docker_down_at_start_keeps_applied_microservice_pairs(helper: FakeHelper) -> None:
    _new_agent(helper).process([_web("/run/docker/netns/aaa"), ConfigSnapshot(MS_PAIR)])
    statuses = Statuses()
    agent = _new_agent(helper, statuses)
    down = MicroservicesChanged({}, connected=False, reason="Docker unreachable: refused")
    agent.process([ConfigSnapshot(MS_PAIR), down])
    assert helper.link_names() == {"ceth0", "vhost0"}
    assert "Docker unreachable: refused" in statuses.last["m"].reason
    agent.process([MicroservicesChanged({})])  # Docker back: web is not running
    assert helper.link_names() == set()
    assert statuses.state("m") == State.PENDING


def test_a_refused_pair_does_not_hold_back_a_pair_with_the_same_names_elsewhere(
        agent: Agent, helper: FakeHelper, statuses: Statuses) -> None:
    refuse_creates(helper, lambda op: op.a.netns == NsRef.named("ns1"))
    named = {"x1": ("x2", "ns1"), "x2": ("x1", "ns2"), "y1": ("y2", "ns3"), "y2": ("y1", "ns4")}
    agent.process([ConfigSnapshot({
        name: _iface(name, peer, {"type": 2, "name": ns}, host=f"eth{name[1] == '2':d}")
        for name, (peer, ns) in named.items()
    })])
    assert statuses.state("y1") == statuses.state("y2") == State.CONFIGURED
    assert statuses.state("x1") == State.ERROR and "foreign link" in statuses.last["x1"].reason
    assert statuses.state("x2") != State.CONFIGURED
    assert {(k.name, k.netns) for k in helper.links} == {
        ("eth0", NsRef.named("ns3")), ("eth1", NsRef.named("ns4"))}


def test_status_recovers_when_a_timed_out_batch_was_applied_after_all(
        agent: Agent, helper: FakeHelper, statuses: Statuses) -> None:
    real_submit = helper.submit

    def applied_but_lost(signed: helper_pb2.SignedBatch) -> helper_pb2.BatchReply:
        reply = real_submit(signed)
        if helper_pb2.Batch.FromString(signed.batch).operations:
            helper.submit = real_submit  # type: ignore[method-assign]
            raise HelperUnavailable("DEADLINE_EXCEEDED")
        return reply

    helper.submit = applied_but_lost  # type: ignore[method-assign]
    agent.process([ConfigSnapshot(PAIR)])
    assert statuses.last["veth1"] == Status(State.PENDING, "not applied yet; retrying")
    agent.process([ResyncTick()])
    assert helper.link_names() == {"veth1", "veth2"}
    assert statuses.state("veth1") == statuses.state("veth2") == State.CONFIGURED


def test_stopped_then_restarted_container_gives_pending_then_pair_at_once(
        agent: Agent, helper: FakeHelper, statuses: Statuses) -> None:
    agent.process([_web("/run/docker/netns/aaa"), ConfigSnapshot(MS_PAIR)])
    assert statuses.state("m") == State.CONFIGURED
    helper.links = ()  # the container stopped: its namespace took both ends along
    agent.process([MicroservicesChanged({})])
    assert statuses.last["m"] == Status(State.PENDING, "waiting for microservice web")
    agent.process([_web("/run/docker/netns/bbb")])
    assert {(k.name, k.netns) for k in helper.links} == {
        ("ceth0", NsRef.of_path("/run/docker/netns/bbb")), ("vhost0", NsRef.host())}
    assert statuses.state("m") == statuses.state("h") == State.CONFIGURED


def test_set_aside_pair_is_not_reported_configured(
        agent: Agent, helper: FakeHelper, statuses: Statuses) -> None:
    helper.taken = {"veth1"}
    agent.process([ConfigSnapshot(PAIR)])
    assert statuses.state("veth1") == statuses.state("veth2") == State.ERROR
    assert helper.link_names() == set()


def test_unrelated_container_events_do_not_retry_a_set_aside_operation(
        agent: Agent, helper: FakeHelper) -> None:
    helper.taken = {"veth1"}
    agent.process([ConfigSnapshot(PAIR), MicroservicesChanged({})])
    before = len(helper.batches)
    for index in range(5):
        agent.process([_web(f"/run/docker/netns/c{index}")])
    assert helper.batches[before:] == []


def test_a_set_aside_pair_is_retried_at_once_when_its_container_moves(
        agent: Agent, helper: FakeHelper, statuses: Statuses) -> None:
    refuse_creates(helper, lambda op: "aaa" in op.a.netns.path + op.b.netns.path)
    agent.process([_web("/run/docker/netns/aaa"), ConfigSnapshot(MS_PAIR)])
    assert statuses.state("m") == State.ERROR and helper.link_names() == set()
    agent.process([_web("/run/docker/netns/bbb")])  # restarted: no retry timer needed
    assert {(k.name, k.netns) for k in helper.links} == {
        ("ceth0", NsRef.of_path("/run/docker/netns/bbb")), ("vhost0", NsRef.host())}
    assert statuses.state("m") == statuses.state("h") == State.CONFIGURED


def test_an_early_observe_that_saw_a_link_twice_is_made_again_after_the_listing(
        helper: FakeHelper) -> None:
    """A link reported under two references (here the named namespace is the helper's
    own) is kept under the one the configs use; before the listing that is not known."""
    _new_agent(helper).process([ConfigSnapshot(PAIR)])
    helper.links = tuple(dataclasses.replace(link, netns_inode=7, ifindex=i)
                         for i, link in enumerate(helper.links, 1))
    ns1 = next(link for link in helper.links if link.netns.name == "ns1")
    helper.links += (dataclasses.replace(ns1, netns=NsRef.host()),)
    before = len(helper.batches)
    statuses = Statuses()
    agent = _new_agent(helper, statuses)
    agent.process([HelperReconnected(helper.instance)])
    agent.process([ConfigSnapshot(PAIR)])
    (early_ops, early), (ops, again) = helper.batches[before:]
    assert not early_ops and not ops and early.observe.scan_named and again.observe.scan_named
    assert statuses.state("veth1") == State.CONFIGURED


def test_a_reconcile_with_nothing_to_apply_plans_once(
        helper: FakeHelper, monkeypatch: pytest.MonkeyPatch) -> None:
    """The statuses come from the plan that found nothing to apply (a restart's resync
    of 1,000 pairs planned twice)."""
    from controller import agent as agent_module

    agent = _new_agent(helper)
    agent.process([ConfigSnapshot(PAIR)])
    plans: list[object] = []
    real = agent_module.plan
    monkeypatch.setattr(agent_module, "plan",
                        lambda *args, **kwargs: plans.append(args) or real(*args, **kwargs))
    agent.process([ResyncTick()])
    assert len(plans) == 1
    assert len(helper.op_batches()) == 1


def test_a_burst_of_link_events_is_followed_in_one_pass(
        agent: Agent, helper: FakeHelper, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each pass over the link events indexes every observed link: one pass per event made
    deleting 3,000 pairs cost the controller 110 s of CPU (bench/run, 6,000 events)."""
    agent.process([ConfigSnapshot(PAIR)])
    passes: list[int] = []
    follow = live_status.follow

    def counting(observed_links: object, changes: list[OwnedLinkChange]) -> object:
        passes.append(len(changes))
        return follow(observed_links, changes)  # type: ignore[arg-type]

    monkeypatch.setattr(live_status, "follow", counting)
    burst = [LinksChanged((OwnedLinkChange(name="veth1", netns=NsRef.named("ns1"),
                                           watched_as=b"", generation=n, oper_state="UP"),),
                          instance=b"another helper") for n in range(50)]
    observes = len(helper.batches)
    agent.process(burst)
    assert passes == [50]
    assert len(helper.batches) == observes + 1, "the burst's news is one observe"


def test_each_namespace_is_resolved_once_per_reconcile(
        agent: Agent, helper: FakeHelper, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reconcile resolved every config's namespace four or five times (the plan, the
    statuses, the name index, the namespaces to observe): issue 16, 76,000 resolutions
    creating and deleting 1,000 pairs. Now once per namespace, until something that can
    move a namespace happens (the next event, a refusal, the timer)."""
    agent.process([ConfigSnapshot({})])
    resolved: list[NamespaceConfig] = []
    real = agent._namespaces.resolve

    def counting(ns: NamespaceConfig) -> Availability:
        resolved.append(ns)
        return real(ns)

    monkeypatch.setattr(agent._namespaces, "resolve", counting)
    many = {}
    for i in range(20):
        many[f"a{i}"] = veth(f"a{i}", f"b{i}", "ns1", f"10.0.{i}.1/24")
        many[f"b{i}"] = veth(f"b{i}", f"a{i}", "ns2", f"10.0.{i}.2/24")
    agent.process([ConfigPut(name, raw) for name, raw in many.items()])
    assert len(helper.link_names()) == 40
    assert sorted(ns.name for ns in resolved) == ["ns1", "ns2"]
    resolved.clear()
    agent.process([ResyncTick()])
    assert sorted(ns.name for ns in resolved) == ["ns1", "ns2"]


def test_batches_of_one_apply_update_the_observed_model_once(
        agent: Agent, helper: FakeHelper, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model of the kernel after a batch is rebuilt from every observed link: once per
    apply, not once per batch of it (issue 16). A later batch refused leaves the earlier
    batches' links in the model."""
    agent.process([ConfigSnapshot({})])
    passes: list[int] = []
    real = observed.apply

    def counting(links: object, ops: list[Op]) -> object:
        ops = list(ops)
        if sys._getframe(1).f_globals["__name__"] == "controller.agent":  # not FakeHelper's
            passes.append(len(ops))
        return real(links, ops)  # type: ignore[arg-type]

    monkeypatch.setattr(observed, "apply", counting)
    count = 2 * MAX_OPS_PER_BATCH + 10
    pairs = {}
    for i in range(count):
        pairs[f"a{i}"] = veth(f"a{i}", f"b{i}", "ns1", f"10.{i // 256}.{i % 256}.1/24")
        pairs[f"b{i}"] = veth(f"b{i}", f"a{i}", "ns2", f"10.{i // 256}.{i % 256}.2/24")
    agent.process([ConfigPut(name, raw) for name, raw in pairs.items()])
    assert [len(ops) for ops in helper.op_batches()] == [MAX_OPS_PER_BATCH] * 2 + [10]
    assert passes == [count]
    assert len(agent._state.observed) == 2 * count

    more = {f"c{i}": veth(f"c{i}", f"d{i}", "ns1", f"10.9.{i}.1/24") for i in range(300)}
    more |= {f"d{i}": veth(f"d{i}", f"c{i}", "ns2", f"10.9.{i}.2/24") for i in range(300)}
    helper.taken = {"d299"}  # the second batch is refused
    passes.clear()
    agent.process([ConfigPut(name, raw) for name, raw in more.items()])
    assert MAX_OPS_PER_BATCH in passes[:1], passes
    names = {link.name for link in agent._state.observed}
    assert {"c0", "d0", f"c{MAX_OPS_PER_BATCH - 1}"} <= names


def test_a_put_parsed_by_the_watcher_is_not_parsed_again(
        agent: Agent, helper: FakeHelper, monkeypatch: pytest.MonkeyPatch) -> None:
    """The etcd watcher's thread parses each put (issue 16: a burst of 2,000 took the
    agent's thread about 100 ms between the first batch and the next); a put it could not
    parse for the agent (no parser) is parsed here."""
    agent.process([ConfigSnapshot({})])
    ready = {name: agent.parse_config(name, raw) for name, raw in PAIR.items()}
    parsed: list[str] = []
    real = agent.parse_config

    def counting(name: str, raw: bytes) -> object:
        parsed.append(name)
        return real(name, raw)

    monkeypatch.setattr(agent, "parse_config", counting)
    agent.process([ConfigPut(name, raw, 0, ready[name]) for name, raw in PAIR.items()])
    assert parsed == []
    assert helper.link_names() == {"veth1", "veth2"}
    agent.process([ConfigPut("veth1", PAIR["veth1"])])
    assert parsed == ["veth1"]


def test_the_agent_keeps_no_configs_value(agent: Agent) -> None:
    """Only what is parsed from it and, for the converged record (`controller.resume`), a
    32-byte digest: 10,000 configs' values were some 3 MiB of the controller's memory."""
    agent.process([ConfigSnapshot({})])
    padding = b" " * 16384  # JSON allows it; the parsed config is the same
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        puts = [ConfigPut(f"v{i}", veth(f"v{i}", f"p{i}", "ns1", f"10.1.{i}.1/24") + padding,
                          i) for i in range(100)]
        agent.process(puts)
        del puts
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 100 * len(padding) // 4, kept


def test_the_name_index_costs_little_per_config(agent: Agent) -> None:
    """It lives as long as the configs (10,000 in issue 16's controller RSS figure)."""
    configs = [agent.parse_config(f"v{i}", veth(f"v{i}", f"p{i}", "ns1", "10.1.0.1/24"))
               for i in range(1000)]
    for cfg in configs:
        assert isinstance(cfg, InterfaceConfig)
        agent.resolve(cfg.namespace)
    tracemalloc.start()
    try:
        index = _NameIndex(configs, agent.resolve)
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert index.of([DeleteLink("v7", NsRef.named("ns1"))]) == {"v7"}
    assert kept < 200 * len(configs), kept


def test_a_recorded_state_holds_the_first_batch_until_it_is_vouched_for_or_not(
        helper: FakeHelper, statuses: Statuses, tmp_path: Path) -> None:
    """An early READY=1 comes before the resync's first batch, never racing it: with a
    converged state on record, the agent's first batch waits (bounded) for the decision."""
    from controller import resume

    recorded = resume.Converged("vpp1", "00" * 16, 1, (), "config", "statuses")
    resume.save(str(tmp_path / resume.FILE_NAME), recorded)
    keeper = resume.Resume(str(tmp_path), "vpp1", dict)
    waiting = Agent("vpp1", helper, Signer(Ed25519PrivateKey.generate()), statuses,
                    config_prefix="/vnf-agent/vpp1/linux/config/v1/interface/", resume=keeper)
    first = threading.Thread(target=waiting.process, args=([ConfigSnapshot(PAIR)],))
    first.start()
    time.sleep(0.3)
    assert helper.batches == []
    keeper.helper_said(helper_pb2.LinkEvent(helper_instance=b"\x02" * 16))
    keeper.config_listed({}, {})
    first.join(timeout=5)
    assert helper.batches, "the first batch went once the recorded state was found changed"


class WrittenStatuses(Statuses):
    """Statuses whose written values the converged record digests."""

    def written(self) -> dict[str, bytes]:
        return {name: repr(status).encode() for name, status in self.last.items()}


def test_a_stop_after_its_own_batch_observes_again_even_without_link_events(
        helper: FakeHelper, tmp_path: Path) -> None:
    """The link monitor watches a namespace only from the batch that names it on, so the
    kernel's later messages there (IPv6 DAD, oper state) may be all it reads: no event
    tells the agent. The record of the observe before that batch would not be vouched for
    after a restart; the stop observes again and records that."""
    from controller import resume

    keeper = resume.Resume(str(tmp_path), "vpp1", dict)
    agent = Agent("vpp1", helper, Signer(Ed25519PrivateKey.generate()), WrittenStatuses(),
                  config_prefix="/vnf-agent/vpp1/linux/config/v1/interface/", resume=keeper)
    agent.process([ConfigSnapshot(PAIR)])
    assert helper.op_batches(), "the pair was made"
    agent.process([LiveTick()])  # as when the new ends' statuses settle
    before = resume.load(str(tmp_path / resume.FILE_NAME))
    assert before is not None and before.generation == 0
    helper.generation = 5  # the monitor read the kernel's later messages

    assert agent.process([Stop()]) is False

    ops, batch = helper.batches[-1]
    assert not ops and batch.HasField("observe"), "no observe at the stop"
    after = resume.load(str(tmp_path / resume.FILE_NAME))
    assert after is not None and after.generation == 5


@pytest.mark.parametrize(("stream_from", "observes_again"), [
    (7, False),  # the observe began at the stream's generation: nothing can be missed
    (8, True),  # the monitor read something after the observe began and before the stream
    (0, True),  # the stream's generation is not known
])
def test_a_stream_that_comes_after_the_first_observe_repeats_it_only_if_it_could_miss(
        helper: FakeHelper, statuses: Statuses, stream_from: int, observes_again: bool) -> None:
    helper.generation = 7
    agent = _new_agent(helper, statuses)
    agent.process([ConfigSnapshot(PAIR)])  # etcd's listing before the link-event stream
    before = len(helper.batches)
    agent.process([HelperReconnected(helper.instance, stream_from)])
    assert (len(helper.batches) > before) is observes_again


def test_the_changes_of_one_watch_response_are_planned_in_one_pass(
        agent: Agent, helper: FakeHelper) -> None:
    """The etcd watcher posts a transaction's changes (or a deleted prefix's) as one
    `ConfigChanges`: one reconcile takes them all, in one batch."""
    agent.process([ConfigSnapshot({})])
    before = len(helper.op_batches())
    changes = ConfigChanges((ConfigPut("a", veth("a", "b", "ns1", "10.0.0.1/24")),
                             ConfigPut("b", veth("b", "a", "ns2", "10.0.0.2/24"))))
    agent.process([changes])
    assert len(helper.op_batches()) == before + 1
    assert helper.link_names() == {"a", "b"}
    agent.process([ConfigChanges((ConfigDeleted("a"), ConfigDeleted("b")))])
    assert helper.link_names() == set()


def test_due_counters_wait_for_the_end_of_a_burst_of_batches(
        helper: FakeHelper, statuses: Statuses, monkeypatch: pytest.MonkeyPatch) -> None:
    """The counters' observe re-reads every link: due in the middle of a burst of batches
    (creating 1,000 pairs), it waits until none came for 1 s, at most one interval."""
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    agent = Agent("vpp1", helper, Signer(Ed25519PrivateKey.generate()), statuses,
                  config_prefix="/vnf-agent/vpp1/linux/config/v1/interface/",
                  stats_interval=10.0)
    agent.process([ConfigSnapshot({})])

    def observes() -> int:
        return sum(1 for ops, batch in helper.batches if not ops and batch.HasField("observe"))

    def put_pair(i: int) -> None:
        agent.process([ConfigPut(f"a{i}", veth(f"a{i}", f"b{i}", "ns1", f"10.0.{i}.1/24")),
                       ConfigPut(f"b{i}", veth(f"b{i}", f"a{i}", "ns2", f"10.0.{i}.2/24"))])

    now[0] = 109.8
    put_pair(1)
    before = observes()
    now[0] = 110.2  # due at 110, a batch 0.4 s ago
    agent.process([LiveTick()])
    assert observes() == before
    now[0] = 110.9  # 1.1 s after the batch
    agent.process([LiveTick()])
    assert observes() == before + 1
    for step in range(1, 20):  # batches every 0.9 s from 119.9: never 1 s without one
        now[0] = 119.0 + 0.9 * step
        put_pair(1 + step)
        before = observes()
        agent.process([LiveTick()])
        if now[0] < 130.9:
            assert observes() == before, f"at {now[0]}: waits for the end of the burst"
        else:
            assert observes() == before + 1, "at most one interval late"
            break
    else:
        raise AssertionError("the counters never came")


def test_an_unchanged_status_is_published_as_the_same_object(agent: Agent,
                                                             statuses: Statuses) -> None:
    """The publisher keeps the statuses it published (10,000 in issue 16's controller RSS
    figure): one copy, not a new one per publish that leaves the last for the collector."""
    agent.process([ConfigSnapshot(PAIR)])
    agent.process([ResyncTick()])
    first, again = statuses.calls[-2], statuses.calls[-1]
    assert again == first and first["veth1"].live is not None
    assert all(again[name] is first[name] for name in first)
