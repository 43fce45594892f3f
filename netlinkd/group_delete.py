"""Deleting many owned links for the price of one: mark them with a link group, delete it.

Every RTM_DELLINK waits for an RCU grace period (about 17 ms here). An RTM_DELLINK that
names a link group unregisters all its members together, after one grace period. A batch
marks the links its DeleteLinks name with its own random group number (netagent creates
links in group 0) and deletes each namespace's group before the next operation that is not
a delete. Just before deleting, it checks that the group holds only links it marked, so a
link someone else put in that group is never deleted.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from netlinkd import links, rtnl
from netlinkd.errors import HelperError, KernelError, LinkNotFound
from netlinkd.rtnl import LinkInfo, NetlinkError, Rtnl


@dataclass
class _Marked:
    ipr: Rtnl
    where: str
    first_op: int
    names: dict[int, str] = field(default_factory=dict)  # ifindex -> name
    ops: dict[int, int] = field(default_factory=dict)  # ifindex -> index of its DeleteLink
    sent: bool = False  # the marks went to the kernel (some may have failed)
    gone: int = 0  # noted links already gone when marked (a peer deleted before them)


class GroupDelete:
    """Links to delete, per namespace, waiting for `flush`."""

    def __init__(self, group: int) -> None:
        self.group = group
        self.deleted: list[str] = []
        self._pending: dict[tuple[int, int], _Marked] = {}

    def mark(self, op_index: int, ns_key: tuple[int, int], ipr: Rtnl, link: LinkInfo,
             where: str) -> None:
        """Note an owned link for deletion; the marks go to the kernel at `flush`."""
        marked = self._pending.setdefault(ns_key, _Marked(ipr, where, op_index))
        marked.names[link.index] = link.name
        marked.ops[link.index] = op_index

    def flush(self) -> int:
        """Mark and delete every noted link; returns how many marked links went (their
        peers go too). A failure carries the index of the DeleteLink concerned (of the
        first one in the namespace when the group delete itself failed)."""
        count = 0
        while self._pending:
            ns_key, marked = next(iter(self._pending.items()))
            try:
                self._send_marks(marked)
                self._delete_group(marked)
            except HelperError as exc:
                if exc.index < 0:
                    exc.index = marked.first_op
                raise
            except Exception as exc:
                error = KernelError(f"delete link group {self.group} in {marked.where}: "
                                    f"{type(exc).__name__}: {exc}")
                error.index = marked.first_op
                raise error from exc
            del self._pending[ns_key]
            self.deleted += [f"delete {name} in {marked.where}" for name in marked.names.values()]
            count += len(marked.names)
        return count

    def _send_marks(self, marked: _Marked) -> None:
        """All the namespace's marks in one sendmsg. A link gone since it was looked up
        (deleted by someone else) is already where the batch wants it."""
        indexes = list(marked.names)
        marked.sent = True
        with links.netlink_errors(f"mark links in {marked.where} for deletion"):
            replies = marked.ipr.transact([rtnl.set_link(i, group=self.group) for i in indexes])
        for index, reply in zip(indexes, replies, strict=True):
            if reply.error is not None and reply.error.code == errno.ENODEV:
                marked.gone += 1
                continue
            try:
                with links.netlink_errors(f"mark {marked.names[index]} in {marked.where} "
                                          "for deletion"):
                    reply.check()
            except HelperError as exc:
                exc.index = marked.ops[index]
                raise

    def unmark(self) -> list[str]:
        """Undo the marks sent but not flushed; returns the steps that failed."""
        failed: list[str] = []
        try:
            for marked in self._pending.values():
                if not marked.sent:
                    continue
                for index, name in marked.names.items():
                    try:
                        links.send(marked.ipr, rtnl.set_link(index, group=links.DEFAULT_GROUP),
                                   f"unmark {name}")
                    except LinkNotFound:
                        continue  # gone (an undo deleted it): in no group any more
                    except Exception as exc:
                        failed.append(f"{exc!r}")
        finally:
            self._pending.clear()
        return failed

    def _delete_group(self, marked: _Marked) -> None:
        strangers = [link.name for link in links.dump_links(
            marked.ipr, marked.where, rtnl.GROUP_ATTRS,
            keep=lambda link: link.group == self.group and link.index not in marked.names)]
        if marked.gone == len(marked.names):
            return  # every one was gone already
        if strangers:
            raise KernelError(
                f"link group {self.group} in {marked.where} also holds {', '.join(strangers)}, "
                f"which this batch did not mark; nothing was deleted there, retry the batch"
            )
        try:
            marked.ipr.request(rtnl.delete_group(self.group))
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return  # every marked link went with a peer deleted earlier
            raise KernelError(f"delete link group {self.group} in {marked.where}: {exc}") from exc
        except OSError as exc:
            raise KernelError(f"delete link group {self.group} in {marked.where}: {exc}; "
                              "retry") from exc
