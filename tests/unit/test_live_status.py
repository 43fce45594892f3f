"""controller.live_status: kernel facts in statuses, the creation debounce, following link
events; controller.helper_events.OwnChanges (pure)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from controller.events import LinksChanged, OwnedLinkChange
from controller.helper_events import OwnChanges
from controller.live_status import (
    SETTLE_S,
    Debounce,
    explained,
    follow,
    unsettled,
    with_live,
)
from controller.observed import link_id
from controller.ops import Live, NsRef, ObservedLink, State, Status
from controller.status import encode
from netagent_api import helper_pb2

NS1 = NsRef.named("ns1")
COUNTERS = (1, 2, 300, 400, 0, 0, 5, 6)


def observed(name: str = "v1", oper: str = "UP", ifindex: int = 7) -> ObservedLink:
    return ObservedLink(name=name, netns=NS1, ifindex=ifindex, mac="02:00:00:00:00:01",
                        mtu=1500, up=True, addresses=(), peer="v2", oper_state=oper,
                        statistics=(9,) * 8)


def configured(oper: str = "UP", ifindex: int = 7) -> Status:
    return Status(State.CONFIGURED, "", live=Live("v1", NS1, ifindex, oper))


def test_with_live_adds_the_kernel_facts_and_the_given_counters() -> None:
    statuses = {"v1": Status(State.CONFIGURED, ""), "other": Status(State.PENDING, "x")}
    result = with_live(statuses, {"v1": ("v1", NS1)}, [observed()],
                       {link_id("v1", NS1): COUNTERS})
    assert result["v1"].live == Live("v1", NS1, 7, "UP", COUNTERS)
    assert result["other"].live is None
    document = json.loads(encode(result["v1"]))
    assert document == {
        "state": "CONFIGURED", "reason": "", "kernel_name": "v1", "namespace": {"name": "ns1"},
        "ifindex": 7, "oper_state": "UP",
        "statistics": {"rx_packets": 1, "tx_packets": 2, "rx_bytes": 300, "tx_bytes": 400,
                       "rx_errors": 0, "tx_errors": 0, "rx_dropped": 5, "tx_dropped": 6},
    }


def test_statistics_off_leaves_them_out_and_the_seed_fields_stay() -> None:
    result = with_live({"v1": Status(State.CONFIGURED, "")}, {"v1": ("v1", NsRef.host())},
                       [ObservedLink("v1", NsRef.host(), 3, "", 1500, True, (), "v2", 0,
                                     "DOWN")], None)
    document = json.loads(encode(result["v1"]))
    assert "statistics" not in document
    assert document["namespace"] == {} and document["oper_state"] == "DOWN"
    assert document["state"] == "CONFIGURED" and document["reason"] == ""


def test_an_end_without_counters_yet_keeps_the_published_ones() -> None:
    live = with_live({"v1": Status(State.CONFIGURED, "")}, {"v1": ("v1", NS1)}, [observed()],
                     {})["v1"]
    assert live.live is not None and live.live.statistics is None
    published = json.dumps({"state": "CONFIGURED", "statistics": {"rx_packets": 3}}).encode()
    assert json.loads(encode(live, published))["statistics"] == {"rx_packets": 3}
    assert "statistics" not in json.loads(encode(live))


def test_unsettled() -> None:
    assert unsettled(Status(State.CONFIGURED, ""), expect_up=False)  # not observed yet
    assert unsettled(configured(ifindex=0), expect_up=False)
    assert unsettled(configured("LOWERLAYERDOWN"), expect_up=True)
    assert not unsettled(configured("LOWERLAYERDOWN"), expect_up=False)
    assert not unsettled(configured("UP"), expect_up=True)
    assert not unsettled(Status(State.PENDING, "waiting"), expect_up=True)


def test_a_touched_end_is_held_until_it_settles_or_the_window_ends() -> None:
    debounce = Debounce()
    debounce.touched(["v1"], now=100.0)
    published, held, wake = debounce.settle({"v1": configured("LOWERLAYERDOWN")},
                                            {"v1": True}, now=100.5)
    assert (published, held, wake) == ({}, {"v1"}, 100.0 + SETTLE_S)
    published, held, wake = debounce.settle({"v1": configured("UP")}, {"v1": True}, now=100.8)
    assert (set(published), held, wake) == ({"v1"}, set(), None)
    # Settled: a later flap (a change by hand) is published at once.
    published, held, _ = debounce.settle({"v1": configured("LOWERLAYERDOWN")}, {"v1": True},
                                         now=101.0)
    assert published["v1"].live == configured("LOWERLAYERDOWN").live and not held


def test_the_window_ends() -> None:
    debounce = Debounce()
    debounce.touched(["v1"], now=100.0)
    published, held, wake = debounce.settle({"v1": configured("LOWERLAYERDOWN")},
                                            {"v1": True}, now=100.0 + SETTLE_S)
    assert set(published) == {"v1"} and not held and wake is None


def change(generation: int = 5, **facts: Any) -> OwnedLinkChange:
    """A change of v1 in ns1 that says what `observed()` already holds, plus `facts`."""
    link = observed()
    fields: dict[str, Any] = {
        "name": link.name, "netns": link.netns, "watched_as": b"ns1",
        "generation": generation, "ifindex": link.ifindex, "mac": link.mac,
        "mtu": link.mtu, "up": link.up, "oper_state": link.oper_state, "peer": link.peer}
    return OwnedLinkChange(**{**fields, **facts})


def test_follow_takes_the_live_state_from_every_change() -> None:
    made = dataclasses.replace(observed(oper="", ifindex=0), mac="", mtu=0,
                               addresses=("10.0.0.1/24",))
    followed = follow([made], [change(oper_state="LOWERLAYERDOWN"), change(
        oper_state="UP", added_addresses=("10.0.0.1/24",))])
    assert followed == (dataclasses.replace(made, oper_state="UP", ifindex=7, mtu=1500,
                                            mac="02:00:00:00:00:01"),)
    assert explained(followed, [change()])
    # What the agent set is not overwritten (an event can be of a state a batch changed
    # after); a deletion has no live state.
    assert follow(followed, [change(mtu=1400, mac="02:00:00:00:00:99", oper_state="DOWN",
                                    deleted=True)]) == followed
    assert follow(followed, [change(mtu=1400)]) == followed


@pytest.mark.parametrize("facts", [
    {"mtu": 1400}, {"up": False}, {"mac": "02:00:00:00:00:99"}, {"peer": "other"},
    {"deleted": True}, {"name": "unknown"}, {"added_addresses": ("10.9.9.9/24",)},
    {"removed_addresses": ("10.0.0.1/24",)},
])
def test_anything_but_the_live_state_needs_an_observe(facts: dict[str, Any]) -> None:
    known = dataclasses.replace(observed(), addresses=("10.0.0.1/24",))
    assert explained([known], [change(added_addresses=("10.0.0.1/24",))])
    assert not explained(follow([known], [change(**facts)]), [change(**facts)])


def test_own_changes_are_the_spans_batch_replies_name() -> None:
    own = OwnChanges()
    ns1 = helper_pb2.NamespaceRef(name="ns1")
    key = ns1.SerializeToString(deterministic=True)
    own.replied(helper_pb2.BatchReply(helper_instance=b"i", own_changes=[
        helper_pb2.OwnChanges(netns=ns1, after=3, through=7)]))

    def event(generation: int, where: bytes = key, overrun: bool = False) -> LinksChanged:
        return LinksChanged((dataclasses.replace(change(generation), watched_as=where),),
                            overrun=overrun, instance=b"i")

    assert own.news(event(5)) == ()
    assert own.news(event(3)) == event(3).changes  # before the batch began
    assert own.news(event(8)) == event(8).changes  # after it
    assert own.news(event(5, b"other")) == event(5, b"other").changes
    assert own.news(event(5, overrun=True)) is None
    assert own.news(dataclasses.replace(event(5), instance=b"restarted")) is None


def test_an_unchanged_status_is_the_one_made_before() -> None:
    """The publisher keeps what it published: a status equal in every field, live facts
    and revision included, is the same object, not a copy per publish."""
    made = with_live({"v1": Status(State.CONFIGURED, ""), "v9": Status(State.PENDING, "x")},
                     {"v1": ("v1", NS1)}, [observed()], None, {"v1": 4, "v9": 5})
    assert made["v1"] == Status(State.CONFIGURED, "", config_revision=4)
    assert made["v1"].live == Live("v1", NS1, 7, "UP")
    assert made["v9"].config_revision == 5
    again = with_live({"v1": Status(State.CONFIGURED, ""), "v9": Status(State.PENDING, "x")},
                      {"v1": ("v1", NS1)}, [observed()], None, {"v1": 4, "v9": 5}, made)
    assert again["v1"] is made["v1"] and again["v9"] is made["v9"]
    changed = with_live({"v1": Status(State.CONFIGURED, ""), "v9": Status(State.PENDING, "x")},
                        {"v1": ("v1", NS1)}, [observed(oper="DOWN")], None,
                        {"v1": 4, "v9": 6}, made)
    assert changed["v1"].live == Live("v1", NS1, 7, "DOWN")
    assert changed["v9"] == Status(State.PENDING, "x", config_revision=6)
