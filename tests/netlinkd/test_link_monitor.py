"""netlinkd.link_monitor against the real kernel, in a scratch namespace of its own."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from netagent_api import helper_pb2
from netlinkd import link_monitor, rtnl

PROBE = Path(__file__).with_name("monitor_probe.py")
REPO = Path(__file__).resolve().parents[2]


def probe(*args: object) -> dict[str, Any]:
    script = (f"mkdir -p /run/netns && mount -t tmpfs probe /run/netns && "
              f"exec {sys.executable} {PROBE} {' '.join(map(str, args))}")
    result = subprocess.run(["unshare", "--net", "--mount", "sh", "-c", script],
                            capture_output=True, text=True, timeout=120, cwd=REPO,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert result.returncode == 0, result.stderr
    found: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return found


@pytest.mark.root
def test_an_overrun_is_reported_and_the_namespace_listed_again() -> None:
    found = probe("overrun", 1)  # the kernel's minimum: a burst of events overflows it
    assert found["overruns"], found
    assert found["overrun_events"], found
    # own3 was made during the overrun, while its events were lost, and is down (no event
    # tells its stamp): its address event is reported all the same.
    assert found["names_after"] == ["own3"], found


@pytest.mark.root
def test_settle_tells_a_batch_s_own_events_and_nothing_else() -> None:
    found = probe("settle")
    changes = found["changes"]
    (after1, through1, kind1), = found["spans1"]  # the helper's own namespace only
    assert (after1, through1, kind1) == (found["since1"], found["end1"], None), found
    first = [c for c in changes if c["generation"] <= through1]
    assert {c["name"] for c in first} == {"own5", "own6"}, found  # own9/10: down, no event
    own5 = [c for c in first if c["name"] == "own5"]
    assert own5[-1]["up"] and own5[-1]["peer"] == "own6", found
    assert any("10.5.0.1/24" in c["added"] for c in own5), found

    # Someone else's change to own5 during batch 2 is not batch 2's, nor is anything after.
    by_hand = [c for c in changes if c["name"] == "own5" and c["mtu"] == 1300]
    assert by_hand, found
    for after, through, _kind in found["spans2"]:
        assert after == found["since2"] and through < by_hand[0]["generation"], found
    # own9, stamped while down by batch 1: its address event names only an ifindex, and
    # is reported.
    assert any(c["name"] == "own9" and "10.9.0.1/24" in c["added"] for c in changes), found


@pytest.mark.root
def test_a_change_that_changes_nothing_reported_is_not_an_event() -> None:
    """A group delete marks each link it deletes with a group first: the kernel announces
    each mark, but a change carries no group, so none is reported (issue 16: the helper's
    CPU when deleting 1,000 pairs); the deletion that follows is."""
    found = probe("unchanged")
    assert "own11" in found["made"], found
    assert found["group"] == [], found
    assert found["mtu"] == [["own11", 1280, False]], found
    last = {name: deleted for name, _mtu, deleted in found["deleted"]}  # after going down
    assert last == {"own11": True, "own12": True}, found


@pytest.mark.root
def test_the_messages_of_links_never_stamped_are_not_parsed() -> None:
    """Most of a create's link messages come before the stamp (issue 16: the monitor's CPU
    when creating 1,000 pairs): a link neither owned before nor stamped now is skipped
    unparsed. A stamp taken away is still told (the link is no longer owned)."""
    found = probe("unstamped")
    assert found["parsed"] == ["own15", "own16"], found
    changes = [tuple(c) for c in found["changes"]]
    assert ("own15", False) in changes and ("own16", False) in changes, found
    assert changes[-1] == ("own15", True), found


@pytest.mark.root
def test_the_deletion_of_a_known_owned_link_is_told_without_parsing_its_message() -> None:
    """Deleting 1,000 pairs announces 2,000 owned links gone, and each batch's reply waits
    for the monitor to read them (issue 16: delete 1,000 pairs): the deletion of a link
    the monitor knows is told from what it knows, its message unparsed."""
    found = probe("deleted")
    assert found["before"], found
    assert rtnl.RTM_DELLINK not in {kind for _name, kind in found["parsed"]}, found
    told = {name: (peer, owner) for name, peer, owner, deleted in found["changes"] if deleted}
    assert told == {"own19": ("own20", "p"), "own20": ("own19", "p")}, found


def test_a_reader_that_falls_behind_gets_one_overrun_instead_of_its_backlog(
        caplog: pytest.LogCaptureFixture) -> None:
    """A WatchLinks reader's queue is bounded: the event past SUBSCRIBER_QUEUE replaces the
    whole backlog with one `overrun` (the controller then resyncs), and says so in the log."""
    loop = asyncio.new_event_loop()
    try:
        stream = link_monitor.StreamQueue(loop, b"instance")
        for generation in range(1, link_monitor.SUBSCRIBER_QUEUE + 1):
            stream.deliver(helper_pb2.LinkEvent(generation=generation))
        loop.run_until_complete(asyncio.sleep(0))
        assert stream.events.qsize() == link_monitor.SUBSCRIBER_QUEUE
        assert not caplog.records
        with caplog.at_level(logging.WARNING, logger="netlinkd.link_monitor"):
            stream.deliver(helper_pb2.LinkEvent(generation=link_monitor.SUBSCRIBER_QUEUE + 1))
            stream.deliver(None)  # the end of the stream is never dropped
            loop.run_until_complete(asyncio.sleep(0))
        queued = [stream.events.get_nowait() for _ in range(stream.events.qsize())]
    finally:
        loop.close()
    assert queued == [helper_pb2.LinkEvent(helper_instance=b"instance", overrun=True), None]
    assert [r.getMessage() for r in caplog.records] == [
        "a WatchLinks reader is not keeping up; it gets an overrun"]


@pytest.mark.root
def test_watcher_slots_are_taken_freed_and_ended_by_stop() -> None:
    """At most MAX_SUBSCRIBERS streams; an unsubscribed one frees its slot and hears
    nothing more; `stop` ends every stream still subscribed (None) and takes no more."""
    found = probe("subscribers")
    slots = link_monitor.MAX_SUBSCRIBERS
    assert found["taken"] == [True] * slots + [False], found
    assert found["retaken"] is True and found["after_stop"] is False, found
    pair = ["own13", "own14"]
    assert found["names"] == [[]] + [pair] * slots, found
    assert found["ended"] == [False] + [True] * slots, found


@pytest.mark.root
def test_an_idle_monitor_polls_at_poll_s_not_in_a_busy_loop() -> None:
    """Without a settle request each round waits up to POLL_S for an event (2 s: about 4
    rounds); only a settle request makes a round not wait, and only that round (the 2 s
    follow one)."""
    found = probe("idle")
    assert 1 <= found["selects"] <= 2 / link_monitor.POLL_S + 3, found
    before, after = found["fds"]
    assert after == before, f"a stopped monitor leaves no namespace or socket open: {found}"


@pytest.mark.root
def test_quiet_says_since_when_a_watched_namespace_was_read_from_nothing() -> None:
    """A restarted controller trusts its last observation of a namespace only if nothing
    was read from it since (docs/PERFORMANCE.md, item 10): any message counts, reported or
    not (a link not owned, a group change), and takes a generation; idle rounds do not."""
    found = probe("quiet")
    start, foreign, idle, made, group = (found[k] for k in (
        "start", "foreign", "idle", "made", "group"))
    assert start[1] == 0 and start[2] <= start[0], found  # watched since the monitor began
    assert foreign[0] > start[0] and foreign[2] == foreign[0], found
    assert idle == foreign, found
    assert made[0] > idle[0] and made[2] == made[0], found
    assert group[0] > made[0] and group[2] == group[0], found
    reported = [generation for generation, changes in found["events"] if changes]
    assert reported and all(idle[0] < g <= made[0] for g in reported), found
