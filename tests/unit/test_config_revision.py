"""Each status names the config revision it reflects, so `netagent-ctl status --wait` can
tell a verdict on the config stored now from one on an older version (pure: fake helper)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller.agent import Agent
from controller.ctl_status import _unsettled
from controller.events import ConfigPut, ConfigSnapshot
from controller.ops import SetLink, State, Status
from controller.signer import Signer
from controller.status import encode
from netagent_api import helper_pb2
from tests.unit.test_agent import PAIR, FakeHelper, Statuses

REVISIONS = {"veth1": 11, "veth2": 12}


def new_agent(helper: FakeHelper, statuses: Statuses) -> Agent:
    return Agent("vpp1", helper, Signer(Ed25519PrivateKey.generate()), statuses,
                 config_prefix="/vnf-agent/vpp1/linux/config/v1/interface/")


def with_mtu(name: str, mtu: int) -> bytes:
    document = json.loads(PAIR[name])
    document["mtu"] = mtu
    return json.dumps(document).encode()


def published(statuses: Statuses) -> dict[str, dict[str, Any]]:
    return {name: json.loads(encode(status)) for name, status in statuses.last.items()}


def test_a_status_names_the_revision_of_the_config_it_reflects() -> None:
    helper, statuses = FakeHelper(), Statuses()
    agent = new_agent(helper, statuses)
    agent.process([ConfigSnapshot(PAIR, REVISIONS)])
    assert {n: (d["state"], d["config_revision"]) for n, d in published(statuses).items()} \
        == {"veth1": ("CONFIGURED", 11), "veth2": ("CONFIGURED", 12)}

    agent.process([ConfigPut("veth1", with_mtu("veth1", 9000), 20)])
    [change] = helper.op_batches()[-1]
    assert isinstance(change, SetLink) and (change.name, change.mtu) == ("veth1", 9000)
    after = published(statuses)
    assert (after["veth1"]["state"], after["veth1"]["config_revision"]) == ("CONFIGURED", 20)
    assert after["veth2"]["config_revision"] == 12, "an unchanged config keeps its revision"


def test_the_same_config_put_again_is_a_new_revision_to_publish() -> None:
    helper, statuses = FakeHelper(), Statuses()
    agent = new_agent(helper, statuses)
    agent.process([ConfigSnapshot(PAIR, REVISIONS)])
    before = len(helper.op_batches())
    agent.process([ConfigPut("veth1", PAIR["veth1"], 30)])
    assert len(helper.op_batches()) == before, "nothing to change in the kernel"
    assert published(statuses)["veth1"]["config_revision"] == 30


def test_a_failed_or_invalid_new_config_is_published_with_its_revision() -> None:
    helper, statuses = FakeHelper(), Statuses()
    agent = new_agent(helper, statuses)
    agent.process([ConfigSnapshot(PAIR, REVISIONS)])
    helper.fail = (0, helper_pb2.KERNEL)
    agent.process([ConfigPut("veth1", with_mtu("veth1", 9000), 21)])
    failed = published(statuses)["veth1"]
    assert (failed["state"], failed["config_revision"]) == ("ERROR", 21), failed
    helper.fail = None
    agent.process([ConfigPut("veth2", b'{"name": "veth2", "mtu": "x"}', 22)])
    invalid = published(statuses)["veth2"]
    assert (invalid["state"], invalid["config_revision"]) == ("ERROR", 22), invalid


def test_a_restart_listing_the_same_revisions_publishes_the_same_bytes() -> None:
    helper, first, second = FakeHelper(), Statuses(), Statuses()
    new_agent(helper, first).process([ConfigSnapshot(PAIR, REVISIONS)])
    new_agent(helper, second).process([ConfigSnapshot(PAIR, REVISIONS)])
    assert {n: encode(s) for n, s in first.last.items()} == \
        {n: encode(s) for n, s in second.last.items()}


def test_encode_leaves_an_unknown_revision_out() -> None:
    assert json.loads(encode(Status(State.CONFIGURED, ""))) == {"state": "CONFIGURED",
                                                                "reason": ""}
    assert json.loads(encode(Status(State.PENDING, "x", config_revision=5))) == {
        "state": "PENDING", "reason": "x", "config_revision": 5}


def doc(name: str, state: str, revision: int | None = None) -> Mapping[str, Any]:
    found: dict[str, Any] = {"name": name, "state": state, "reason": ""}
    if revision is not None:
        found["config_revision"] = revision
    return found


def test_wait_settles_only_on_the_current_configs_revision() -> None:
    configs = {"a": 20, "b": 12}
    assert _unsettled([doc("a", "CONFIGURED", 20), doc("b", "ERROR", 12)], configs) == ()
    assert _unsettled([doc("a", "CONFIGURED", 11)], configs) == (
        "a: CONFIGURED is of config revision 11; revision 20 is not applied yet",)
    assert _unsettled([doc("a", "CONFIGURED")], configs) == (
        "a: CONFIGURED is of config revision unknown; revision 20 is not applied yet",)
    assert _unsettled([doc("a", "PENDING", 20)], configs) == ("a: PENDING",)
    assert _unsettled([doc("c", "CONFIGURED", 3)], configs) == (
        "c: its config is deleted, its status not yet",)
