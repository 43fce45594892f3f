"""One namespace, two references: the agent against a fake helper that keys namespaces by
inode and reports a link under every reference that reaches it, as netlinkd does."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller import wire
from controller.agent import Agent
from controller.events import ConfigPut, ConfigSnapshot, Microservice, MicroservicesChanged
from controller.ops import CreateVethPair, DeleteLink, NsRef, ObservedLink, Op, State, Status
from controller.signer import Signer
from netagent_api import helper_pb2

HOST = 1000


class InodeKernel:
    """Links keyed by (namespace inode, name); references map to inodes."""

    def __init__(self) -> None:
        self.inodes: dict[tuple[str, str | int], int] = {NsRef.host().identity(): HOST}
        self.links: dict[tuple[int, str], dict[str, Any]] = {}
        self.ops: list[Op] = []
        self._index = itertools.count(10)

    def hello(self) -> bytes:
        return b"one"

    def _inode(self, ref: NsRef) -> int:
        if ref.identity() not in self.inodes and ref.kind == "name":
            self.inodes[ref.identity()] = 2000 + len(self.inodes)
        return self.inodes[ref.identity()]

    def submit(self, signed: helper_pb2.SignedBatch) -> helper_pb2.BatchReply:
        batch = helper_pb2.Batch.FromString(signed.batch)
        for op in (wire.op_from_proto(o) for o in batch.operations):
            self.ops.append(op)
            if isinstance(op, CreateVethPair):
                a, b = (self._inode(op.a.netns), op.a.name), (self._inode(op.b.netns), op.b.name)
                self.links[a] = {"index": next(self._index), "peer": b}
                self.links[b] = {"index": next(self._index), "peer": a}
            elif isinstance(op, DeleteLink):
                gone = self.links.pop((self._inode(op.netns), op.name), None)
                if gone is not None:
                    self.links.pop(gone["peer"], None)
        reply = helper_pb2.BatchReply(ok=True, failed_index=-1, helper_instance=b"one")
        if batch.HasField("observe"):
            refs = [NsRef.host(), *(wire.ns_from_proto(r) for r in batch.observe.netns)]
            for ref in refs:
                inode = self.inodes.get(ref.identity())
                for (where, name), link in sorted(self.links.items()):
                    if where == inode:
                        reply.observed.append(wire.observed_to_proto(ObservedLink(
                            name, ref, link["index"], "", 0, True, (), link["peer"][1],
                            netns_inode=inode)))
        return reply


class Statuses:
    def __init__(self) -> None:
        self.last: dict[str, Status] = {}

    def publish(self, statuses: Mapping[str, Status], held: object = ()) -> None:
        self.last = dict(statuses)


def iface(name: str, peer: str, namespace: dict[str, Any], host: str) -> bytes:
    return json.dumps({"name": name, "type": 0, "enabled": True, "host_if_name": host,
                       "namespace": namespace, "veth": {"peer_if_name": peer}}).encode()


def ms(label: str, sandbox: str) -> Microservice:
    return Microservice(label, "c" * 64, sandbox, 1, "t")


def agent(kernel: InodeKernel, statuses: Statuses) -> Agent:
    return Agent("vpp1", kernel, Signer(Ed25519PrivateKey.generate()), statuses)


def test_host_network_container_pair_survives_another_container_starting() -> None:
    kernel, statuses = InodeKernel(), Statuses()
    kernel.inodes[NsRef.of_path("/run/docker/netns/default").identity()] = HOST
    kernel.inodes[NsRef.of_path("/run/docker/netns/db1").identity()] = 3000
    run = agent(kernel, statuses)
    web = ms("web", "/run/docker/netns/default")  # --network host
    run.process([ConfigSnapshot({"x": iface("x", "m", {}, "x0"),
                                 "m": iface("m", "x", {"type": 1, "microservice": "web"}, "m0")}),
                 MicroservicesChanged({"web": web})])
    assert set(kernel.links) == {(HOST, "x0"), (HOST, "m0")}
    run.process([ConfigPut("d", iface("d", "y", {"type": 1, "microservice": "db"}, "d0")),
                 ConfigPut("y", iface("y", "d", {}, "y0"))])
    run.process([MicroservicesChanged({"web": web, "db": ms("db", "/run/docker/netns/db1")})])
    assert {(HOST, "x0"), (HOST, "m0"), (3000, "d0"), (HOST, "y0")} == set(kernel.links)
    assert not any(isinstance(op, DeleteLink) for op in kernel.ops), kernel.ops
    assert {name: s.state for name, s in statuses.last.items()} == dict.fromkeys(
        "xmdy", State.CONFIGURED)


def test_named_namespace_also_used_by_its_file_keeps_its_pairs(tmp_path: Path) -> None:
    kernel, statuses = InodeKernel(), Statuses()
    run = agent(kernel, statuses)
    run.process([ConfigSnapshot({"x": iface("x", "y", {"type": 2, "name": "ns1"}, "x0"),
                                 "y": iface("y", "x", {}, "y0")}),
                 MicroservicesChanged({})])
    inode = kernel.inodes[NsRef.named("ns1").identity()]
    by_file = tmp_path / "ns1"
    by_file.touch()
    kernel.inodes[NsRef.of_path(str(by_file)).identity()] = inode
    run.process([ConfigPut("p", iface("p", "q", {"type": 3, "filepath": str(by_file)}, "p0")),
                 ConfigPut("q", iface("q", "p", {}, "q0"))])
    assert {(inode, "x0"), (HOST, "y0"), (inode, "p0"), (HOST, "q0")} == set(kernel.links)
    assert not any(isinstance(op, DeleteLink) for op in kernel.ops), kernel.ops
