"""The link-event adapter's conversion of the helper's stream (no helper: the stream is a
list of the messages it would send)."""

from __future__ import annotations

import pytest

from controller import helper_events
from controller.events import Event, LinksChanged, OwnedLinkChange
from controller.helper_events import HelperEvents
from netagent_api import helper_pb2

INSTANCE = b"instance"


def _event(generation: int, *changes: helper_pb2.LinkChange) -> helper_pb2.LinkEvent:
    return helper_pb2.LinkEvent(helper_instance=INSTANCE, generation=generation,
                                changes=changes)


def _change(name: str, netns: str, owner: str = "me") -> helper_pb2.LinkChange:
    return helper_pb2.LinkChange(owner=owner, name=name, ifindex=7, mac="02:00:00:00:00:01",
                                 mtu=1400, up=True, oper_state="UP",
                                 netns=helper_pb2.NamespaceRef(name=netns),
                                 added_addresses=["10.0.0.1/24"])


def _follow(*messages: helper_pb2.LinkEvent) -> list[LinksChanged]:
    posted: list[Event] = []
    events = HelperEvents(None, "me", posted.append, sign=helper_pb2.WatchRequest)
    events._follow(iter([helper_pb2.LinkEvent(helper_instance=INSTANCE), *messages]))
    return [e for e in posted if isinstance(e, LinksChanged)]


def _changes(posted: list[LinksChanged]) -> list[OwnedLinkChange]:
    return [change for event in posted for change in event.changes]


def test_changes_in_one_namespace_share_its_reference() -> None:
    """A burst's changes wait in the agent's queue (5,000 pairs made: tens of thousands of
    them); a copy of the namespace reference per change was a third of their memory."""
    posted = _follow(_event(1, _change("a1", "ns-a")), _event(2, _change("a2", "ns-a")),
                     _event(3, _change("b1", "ns-b"), _change("x", "ns-b", owner="other")))
    first, second, other = _changes(posted)
    assert (first.name, second.name, other.name) == ("a1", "a2", "b1")
    assert first.netns is second.netns and first.watched_as is second.watched_as
    assert first.netns == second.netns != other.netns
    assert first.watched_as == helper_pb2.NamespaceRef(name="ns-a").SerializeToString(
        deterministic=True)
    assert first.generation == 1 and second.generation == 2 and other.generation == 3


def test_the_shared_references_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(helper_events, "MAX_NAMESPACES", 2)
    posted = _follow(*(_event(i, _change(f"l{i}", f"ns{i}")) for i in range(5)),
                     _event(9, _change("again", "ns4")))
    changes = _changes(posted)
    assert [c.netns.name for c in changes] == ["ns0", "ns1", "ns2", "ns3", "ns4", "ns4"]
    assert changes[-1].netns is changes[-2].netns


def test_queued_changes_carry_no_instance_dict() -> None:
    """Slots: the per-instance dict was most of an OwnedLinkChange's own size."""
    change, = _changes(_follow(_event(1, _change("a1", "ns-a"))))
    assert not hasattr(change, "__dict__")
    assert not hasattr(LinksChanged(), "__dict__")


def test_the_changes_of_one_link_share_its_strings() -> None:
    """Creating a link brings two or three changes of it, all queued during a burst."""
    posted = _follow(_event(1, _change("a1", "ns-a")), _event(2, _change("a1", "ns-a")))
    first, second = _changes(posted)
    assert first.name is second.name and first.mac is second.mac
    assert first.added_addresses[0] is second.added_addresses[0]
