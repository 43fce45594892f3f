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
from netlinkd.links import Link
from netlinkd.rtnl import NetlinkError, Rtnl


@dataclass
class _Marked:
    ipr: Rtnl
    where: str
    first_op: int
    names: dict[int, str] = field(default_factory=dict)  # ifindex -> name


class GroupDelete:
    """Marked links, per namespace, waiting for `flush`."""

    def __init__(self, group: int) -> None:
        self.group = group
        self.deleted: list[str] = []
        self._pending: dict[tuple[int, int], _Marked] = {}

    def mark(self, op_index: int, ns_key: tuple[int, int], ipr: Rtnl, link: Link,
             where: str) -> None:
        links.set_link(ipr, link.index, f"mark {link.name} in {where} for deletion",
                       group=self.group)
        marked = self._pending.setdefault(ns_key, _Marked(ipr, where, op_index))
        marked.names[link.index] = link.name

    def flush(self) -> int:
        """Delete every marked link; returns how many marked links went (their peers go too).
        A failure carries the index of the first DeleteLink in the namespace concerned."""
        count = 0
        while self._pending:
            ns_key, marked = next(iter(self._pending.items()))
            try:
                self._delete_group(marked)
            except HelperError as exc:
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

    def unmark(self) -> list[str]:
        """Undo the marks not yet flushed; returns the steps that failed."""
        failed: list[str] = []
        try:
            for marked in self._pending.values():
                for index, name in marked.names.items():
                    try:
                        links.set_link(marked.ipr, index, f"unmark {name}",
                                       group=links.DEFAULT_GROUP)
                    except LinkNotFound:
                        continue  # gone (an undo deleted it): in no group any more
                    except HelperError as exc:
                        failed.append(str(exc))
                    except Exception as exc:
                        failed.append(f"unmark {name} in {marked.where}: {exc!r}")
        finally:
            self._pending.clear()
        return failed

    def _delete_group(self, marked: _Marked) -> None:
        strangers = [link.name for link in links.dump_links(marked.ipr, marked.where)
                     if link.group == self.group and link.index not in marked.names]
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
