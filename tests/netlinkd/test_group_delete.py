"""netlinkd.group_delete, and the executor's undo of a created pair (`Created.undo`),
against the real kernel, in two scratch network namespaces.

Each namespace is held by an `unshare --net sleep` process that is killed at the end, so
the namespaces and every link in them go away even when a test fails.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from netlinkd import links, rtnl
from netlinkd.errors import KernelError, PolicyRefused
from netlinkd.executor import Created
from netlinkd.group_delete import GroupDelete
from netlinkd.links import DEFAULT_GROUP, batch_group, owner_alias
from netlinkd.netns import netlink_socket_in

_GROUP = batch_group(b"test-epoch-16byt", 1)


@dataclass
class Scratch:
    ipr: rtnl.Rtnl
    fd: int
    key: tuple[int, int]

    def names(self) -> set[str]:
        return {link.name for link in links.dump_links(self.ipr, "scratch")}

    def link(self, name: str) -> rtnl.LinkInfo:
        found = links.find_link(self.ipr, name, "scratch")
        assert found is not None, name
        return found


@pytest.fixture
def two() -> Iterator[tuple[Scratch, Scratch]]:
    holders: list[subprocess.Popen[bytes]] = []
    opened: list[Scratch] = []
    try:
        for _ in range(2):
            holder = subprocess.Popen(["unshare", "--net", "sleep", "300"])
            holders.append(holder)
            path = f"/proc/{holder.pid}/ns/net"
            deadline = time.monotonic() + 10
            while os.stat(path).st_ino == os.stat("/proc/self/ns/net").st_ino:
                assert time.monotonic() < deadline, "unshare --net did not switch namespaces"
                time.sleep(0.005)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            st = os.fstat(fd)
            opened.append(Scratch(rtnl.Rtnl(netlink_socket_in(fd)), fd,
                                  (st.st_dev, st.st_ino)))
        yield opened[0], opened[1]
    finally:
        for scratch in opened:
            scratch.ipr.close()
            os.close(scratch.fd)
        for holder in holders:
            holder.kill()
            holder.wait()


def _pair(ns: Scratch, a: str, b: str, peer_ns: Scratch | None = None) -> None:
    ns.ipr.request(rtnl.create_veth(rtnl.EndSpec(a, ns.fd),
                                    rtnl.EndSpec(b, (peer_ns or ns).fd)))


def test_marked_links_go_in_one_delete_and_others_stay(two: tuple[Scratch, Scratch]) -> None:
    ns, _ = two
    for i in range(3):
        _pair(ns, f"gd-a{i}", f"gd-b{i}")
    _pair(ns, "gd-keep", "gd-keepp")
    deletes = GroupDelete(_GROUP)
    for i in range(3):
        deletes.mark(i, ns.key, ns.ipr, ns.link(f"gd-a{i}"), "scratch")
    assert ns.link("gd-a0").group == DEFAULT_GROUP, "marks go to the kernel at flush"
    assert deletes.flush() == 3
    assert ns.names() == {"lo", "gd-keep", "gd-keepp"}
    assert deletes.deleted == [f"delete gd-a{i} in scratch" for i in range(3)]
    assert deletes.flush() == 0, "nothing left to delete"


def test_both_ends_marked_or_peer_already_gone(two: tuple[Scratch, Scratch]) -> None:
    ns1, ns2 = two
    _pair(ns1, "gd-x", "gd-y")
    _pair(ns1, "gd-p", "gd-q", peer_ns=ns2)
    deletes = GroupDelete(_GROUP)
    deletes.mark(0, ns1.key, ns1.ipr, ns1.link("gd-x"), "ns1")
    deletes.mark(1, ns1.key, ns1.ipr, ns1.link("gd-y"), "ns1")
    deletes.mark(2, ns1.key, ns1.ipr, ns1.link("gd-p"), "ns1")
    deletes.mark(3, ns2.key, ns2.ipr, ns2.link("gd-q"), "ns2")
    assert deletes.flush() == 4, "the group of ns2 is empty by then: not an error"
    assert ns1.names() == {"lo"} and ns2.names() == {"lo"}


def test_a_noted_link_someone_else_deleted_does_not_stop_the_others(
    two: tuple[Scratch, Scratch],
) -> None:
    ns, _ = two
    _pair(ns, "gd-a", "gd-ap")
    _pair(ns, "gd-b", "gd-bp")
    deletes = GroupDelete(_GROUP)
    deletes.mark(0, ns.key, ns.ipr, ns.link("gd-a"), "scratch")
    deletes.mark(1, ns.key, ns.ipr, ns.link("gd-b"), "scratch")
    links.send(ns.ipr, rtnl.delete_link(ns.link("gd-b").index), "someone else")
    assert deletes.flush() == 2
    assert ns.names() == {"lo"}, "gd-a was deleted all the same"


def test_marked_links_someone_else_deleted_before_the_group_delete_are_no_error(
    two: tuple[Scratch, Scratch], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Marked, then gone (a stranger deletes them) before the group delete: ENODEV there
    means the batch's links are where it wants them."""
    ns, _ = two
    _pair(ns, "gd-c", "gd-cp")
    deletes = GroupDelete(_GROUP)
    deletes.mark(0, ns.key, ns.ipr, ns.link("gd-c"), "scratch")
    real_dump = links.dump_links

    def stranger_first(nl: rtnl.Rtnl, where: str, *args: Any, **kwargs: Any,
                       ) -> list[rtnl.LinkInfo]:
        gone = links.find_link(nl, "gd-c", where)
        if gone is not None:
            links.send(nl, rtnl.delete_link(gone.index), "someone else")
        return real_dump(nl, where, *args, **kwargs)

    monkeypatch.setattr(links, "dump_links", stranger_first)
    assert deletes.flush() == 1
    assert ns.names() == {"lo"}


def test_a_stranger_in_the_group_stops_the_delete_and_marks_are_undone(
    two: tuple[Scratch, Scratch],
) -> None:
    ns, _ = two
    _pair(ns, "gd-own", "gd-ownp")
    _pair(ns, "gd-foreign", "gd-foreignp")
    deletes = GroupDelete(_GROUP)
    links.send(ns.ipr, rtnl.set_link(ns.link("gd-foreign").index, group=deletes.group), "test")
    deletes.mark(7, ns.key, ns.ipr, ns.link("gd-own"), "scratch")
    with pytest.raises(KernelError, match="also holds gd-foreign") as raised:
        deletes.flush()
    assert raised.value.index == 7
    assert {"gd-own", "gd-foreign"} <= ns.names(), "nothing was deleted"
    assert deletes.deleted == []
    assert deletes.unmark() == []
    assert ns.link("gd-own").group == DEFAULT_GROUP
    assert ns.link("gd-foreign").group == deletes.group, "the stranger is left as it was"
    assert deletes.flush() == 0, "unmark forgets the marks: nothing is deleted after it"
    assert "gd-own" in ns.names()


def test_each_batch_has_its_own_group_outside_the_default() -> None:
    epoch = bytes(16)
    groups = {batch_group(epoch, seq) for seq in range(50)}
    groups |= {batch_group(bytes([1]) * 16, seq) for seq in range(50)}
    assert len(groups) == 100 and all(group >= 1 << 31 for group in groups)
    assert batch_group(epoch, 7) == batch_group(epoch, 7), "the intent record names it"


def test_marks_go_in_one_request_and_a_link_gone_meanwhile_counts_as_deleted(
    two: tuple[Scratch, Scratch],
) -> None:
    ns, _ = two
    for i in range(300):
        _pair(ns, f"gm-a{i}", f"gm-b{i}")
    deletes = GroupDelete(_GROUP)
    for i in range(300):
        deletes.mark(i, ns.key, ns.ipr, ns.link(f"gm-a{i}"), "scratch")
    links.send(ns.ipr, rtnl.delete_link(ns.link("gm-a5").index), "someone else")
    sends = []
    real = ns.ipr.sock

    class Counting:
        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        def sendmsg(self, buffers: list[bytes]) -> int:
            sends.append(len(buffers))
            return real.sendmsg(buffers)

    ns.ipr.sock = Counting()  # type: ignore[assignment]
    try:
        assert deletes.flush() == 300, "gm-a5 is gone: deleted as the batch wants"
    finally:
        ns.ipr.sock = real
    assert sends == [256, 44, 1, 1], \
        "the marks pipelined (one sendmsg per window), then the group's dump and its delete"
    assert not {n for n in ns.names() if n.startswith("gm-")}


def test_unmark_after_a_failed_mark_puts_the_others_back(two: tuple[Scratch, Scratch]) -> None:
    ns, _ = two
    _pair(ns, "gu-a", "gu-b")
    _pair(ns, "gu-c", "gu-d")
    deletes = GroupDelete(_GROUP)
    deletes.mark(3, ns.key, ns.ipr, ns.link("gu-a"), "scratch")
    deletes.mark(4, ns.key, ns.ipr, rtnl.LinkInfo(ns.link("gu-c").index, "gu-c", "", "", 0,
                                                  False, 0), "scratch")
    deletes.mark(5, ns.key, ns.ipr, rtnl.LinkInfo(-7, "gu-bad", "", "", 0, False, 0), "scratch")
    with pytest.raises(KernelError) as raised:
        deletes.flush()
    assert raised.value.index == 5, raised.value
    assert ns.link("gu-a").group == deletes.group, "sent before the bad one failed"
    failed = deletes.unmark()
    assert len(failed) == 1 and "gu-bad" in failed[0], failed
    assert ns.link("gu-a").group == DEFAULT_GROUP and ns.link("gu-c").group == DEFAULT_GROUP
    assert {"gu-a", "gu-c"} <= ns.names()


# ---- the undo of a create: only what this batch created, as it created it ----

_UNDO_GROUP = batch_group(b"test-epoch-16byt", 2)
_OTHER_GROUP = batch_group(b"test-epoch-16byt", 3)
_ALIAS = owner_alias("undo", "ud-peer")


def _created(ns: Scratch, *, alias: str | None = None, group: int = _UNDO_GROUP,
             name: str = "ud-end") -> Created:
    """A pair born in the batch's group, as the pipelined create makes it, then changed
    to `alias`, `group` and `name` as someone else might have; its undo record."""
    ns.ipr.request(rtnl.create_veth(rtnl.EndSpec("ud-end", ns.fd, group=_UNDO_GROUP),
                                    rtnl.EndSpec("ud-peer", ns.fd, group=_UNDO_GROUP)))
    index = ns.link("ud-end").index
    change = rtnl.set_link(index, alias=alias, group=None if group == _UNDO_GROUP else group)
    links.send(ns.ipr, change, "test")
    if name != "ud-end":
        subprocess.run(["nsenter", f"--net=/proc/self/fd/{ns.fd}", "ip", "link", "set",
                        "dev", "ud-end", "name", name], check=True, pass_fds=(ns.fd,))
    return Created(ns.ipr, index, "ud-end", "scratch", _ALIAS, _UNDO_GROUP)


@pytest.mark.parametrize("alias", [_ALIAS, None], ids=["stamped", "unstamped"])
def test_what_the_batch_created_is_undone(two: tuple[Scratch, Scratch], alias: str | None,
                                          ) -> None:
    ns, _ = two
    _created(ns, alias=alias).undo()
    assert ns.names() == {"lo"}


@pytest.mark.parametrize(("alias", "group"), [
    ("someone-else", _UNDO_GROUP),  # a stranger's alias, in the batch's group still
    (None, _OTHER_GROUP),  # no alias, but moved out of the batch's group
], ids=["foreign-alias", "other-group"])
def test_a_created_link_someone_else_changed_is_left_in_place(
    two: tuple[Scratch, Scratch], alias: str | None, group: int,
) -> None:
    ns, _ = two
    with pytest.raises(PolicyRefused, match=r"not undone: .* is now ud-end"):
        _created(ns, alias=alias, group=group).undo()
    assert ns.names() == {"lo", "ud-end", "ud-peer"}


def test_a_created_link_renamed_by_someone_else_is_left_in_place(
    two: tuple[Scratch, Scratch],
) -> None:
    ns, _ = two
    with pytest.raises(PolicyRefused, match="is now ud-renamed"):
        _created(ns, alias=_ALIAS, name="ud-renamed").undo()
    assert ns.names() == {"lo", "ud-renamed", "ud-peer"}
