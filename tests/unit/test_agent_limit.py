"""A refusal that applies to every create (the helper's limit on owned links) sets all the
plan's creates aside at once: one refused batch and one observe, then the other operations
go ahead. Before, each pair cost a refused batch and a full observe of its own (55 s for 21
pairs against a live helper)."""

from __future__ import annotations

import json

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller import wire
from controller.agent import Agent
from controller.events import ConfigPut, ConfigSnapshot
from controller.ops import CreateVethPair, State
from controller.signer import Signer
from netagent_api import helper_pb2
from tests.unit.test_agent import PAIR, FakeHelper, Statuses, veth

LIMIT_ERROR = "creating 2 links would exceed the limit of 4 owned links of owner vpp1"


def refuse_every_create(helper: FakeHelper) -> None:
    real_submit = helper.submit

    def submit(signed: helper_pb2.SignedBatch) -> helper_pb2.BatchReply:
        ops = [wire.op_from_proto(op)
               for op in helper_pb2.Batch.FromString(signed.batch).operations]
        creates = [i for i, op in enumerate(ops) if isinstance(op, CreateVethPair)]
        if creates:
            helper.batches.append((ops, helper_pb2.Batch.FromString(signed.batch)))
            return helper_pb2.BatchReply(ok=False, failed_index=creates[0],
                                         error_kind=helper_pb2.OWNED_LINK_LIMIT,
                                         error=LIMIT_ERROR, helper_instance=helper.instance)
        return real_submit(signed)

    helper.submit = submit  # type: ignore[method-assign]


def test_the_owned_link_limit_sets_every_create_aside_in_one_round() -> None:
    helper, statuses = FakeHelper(), Statuses()
    agent = Agent("vpp1", helper, Signer(Ed25519PrivateKey.generate()), statuses,
                  config_prefix="/vnf-agent/vpp1/linux/config/v1/interface/")
    agent.process([ConfigSnapshot(PAIR)])
    assert statuses.state("veth1") == State.CONFIGURED
    refuse_every_create(helper)
    before = len(helper.batches)
    changed = json.loads(PAIR["veth1"])
    changed["mtu"] = 1400
    events = [ConfigPut("veth1", json.dumps(changed).encode())]
    for i in range(21):
        events.append(ConfigPut(f"l{i}a", veth(f"l{i}a", f"l{i}b", "ns1", f"10.1.{i}.1/24")))
        events.append(ConfigPut(f"l{i}b", veth(f"l{i}b", f"l{i}a", "ns2", f"10.1.{i}.2/24")))
    agent.process(events)
    batches = helper.batches[before:]
    refused = [ops for ops, _ in batches if any(isinstance(op, CreateVethPair) for op in ops)]
    assert len(refused) == 1, f"{len(refused)} refused batches: one per pair again"
    assert len(batches) <= 3, [len(ops) for ops, _ in batches]
    assert statuses.state("veth1") == State.CONFIGURED, "the other operations went ahead"
    assert next(k for k in helper.links if k.name == "veth1").mtu == 1400
    for i in range(21):
        for end in "ab":
            status = statuses.last[f"l{i}{end}"]
            assert status.state == State.ERROR and "OWNED_LINK_LIMIT" in status.reason, status
