"""At start, clean up after a batch the helper did not live to finish (SIGKILL, power loss).

The intent record is fsync'd before the first netlink request and batches run one at a
time, so after a crash at most one intent lacks its result: the last record of the log.
Only that batch's link group (`links.batch_group(epoch, seq)`) can hold half-made work,
and only in the namespaces its operations name:

- an owned link in the group was marked for a group delete that never ran: it goes back
  to group 0 (the controller plans the delete again if it is still wanted);
- a link with no alias in the group, whose name and namespace are an end of one of the
  intent's CreateVethPairs, was born by this batch and never stamped: it is deleted (its
  peer, born in the same request, goes with it) and the controller creates it again;
- anything else is a stranger's and is left alone.

A stranger can put a link in any group, but not guess this one: the group is a digest of
the batch's random epoch and its sequence, which only the controller, the helper and the
audit log (root-only) know. The work is written to the audit log first (the intent's
result, verdict `interrupted`, carrying the batch); if that write fails nothing is touched
(fail closed) and the next start tries again. A clean-up cut short is found again the same
way: the log then ends with that `interrupted` result.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from netagent_api import helper_pb2
from netagent_audit import records
from netagent_audit.chain import AuditLogCorrupt, last_line
from netlinkd import links, netns
from netlinkd.errors import HelperError, LinkNotFound, NamespaceGone, PolicyRefused
from netlinkd.executor import Executor
from netlinkd.netns import NsHandle, SocketCache, describe_ref
from netlinkd.policy import Policy, named_ns_path
from netlinkd.rtnl import LinkInfo

log = logging.getLogger(__name__)
RefKey = tuple[str, str | int]


@dataclass(frozen=True)
class Leftover:
    """One link of the unfinished batch, by namespace reference and ifindex."""

    ref: helper_pb2.NamespaceRef
    index: int
    name: str
    delete: bool  # else: put back in group 0

    def describe(self) -> str:
        action = "delete unstamped" if self.delete else "unmark"
        return f"{action} {self.name} (ifindex {self.index}) in {describe_ref(self.ref)}"


def unfinished_batch(audit_path: str) -> tuple[helper_pb2.Batch, bool] | None:
    """The batch to clean up after, and whether its result is still to be written.

    The log's last record names it: an intent (the helper died inside the batch), or the
    `interrupted` result of a clean-up that may itself have been cut short.
    """
    try:
        line = last_line(audit_path)
    except (FileNotFoundError, AuditLogCorrupt):
        return None
    if line is None:
        return None
    try:
        record = json.loads(line)
        interrupted = record.get("kind") == "result" and record.get("verdict") == "interrupted"
        if record.get("kind") != "intent" and not interrupted:
            return None
        raw = base64.b64decode(record["batch"], validate=True)
        return helper_pb2.Batch.FromString(raw), not interrupted
    except (ValueError, KeyError, AttributeError, binascii.Error, DecodeError) as exc:
        log.error("the last audit record is an unreadable intent (%s); not recovering", exc)
        return None


def _ref_key(ref: helper_pb2.NamespaceRef) -> RefKey:
    kind = ref.WhichOneof("kind")
    return ("host", 0) if kind is None else (kind, getattr(ref, kind))


def _namespaces(batch: helper_pb2.Batch) -> Iterator[helper_pb2.NamespaceRef]:
    for op in batch.operations:
        kind = op.WhichOneof("op")
        if kind == "create_veth_pair":
            yield op.create_veth_pair.a.netns
            yield op.create_veth_pair.b.netns
        elif kind is not None:
            yield getattr(op, kind).netns


def _stale_namespace_files(batch: helper_pb2.Batch, policy: Policy) -> list[str]:
    """Named namespaces the batch was creating whose file is left empty and unmounted (a
    kill between creating the file and mounting the namespace on it, or inside the undo):
    such a file reads as a namespace that is gone, for good, and would block every create
    in it. Only the intent's names are looked at."""
    stale: set[str] = set()
    for op in batch.operations:
        if op.WhichOneof("op") != "create_veth_pair":
            continue
        for end in (op.create_veth_pair.a, op.create_veth_pair.b):
            if end.netns.WhichOneof("kind") != "name":
                continue
            try:
                path = named_ns_path(policy, end.netns.name, "recovery")
            except HelperError:
                continue
            if _empty_and_unmounted(path):
                stale.add(path)
    return sorted(stale)


def _empty_and_unmounted(path: str) -> bool:
    """A file `create_named` made (mode 0, so unreadable without CAP_DAC_OVERRIDE) and
    never mounted a namespace on, or `remove_named` unmounted."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size == 0 and not os.path.ismount(path)


def _born(batch: helper_pb2.Batch) -> set[tuple[RefKey, str]]:
    """(namespace, name) of every end the batch's creates would make."""
    ends = [end for op in batch.operations if op.WhichOneof("op") == "create_veth_pair"
            for end in (op.create_veth_pair.a, op.create_veth_pair.b)]
    return {(_ref_key(end.netns), end.name) for end in ends}


class Recovery:
    """Runs on the executor's netlink thread (it owns `cache`)."""

    def __init__(self, policy: Policy, host: NsHandle, cache: SocketCache,
                 batch: helper_pb2.Batch) -> None:
        self._policy = policy
        self._host = host
        self._cache = cache
        self._batch = batch
        self._group = links.batch_group(batch.epoch, batch.sequence)
        self._owned = links.owner_prefix(batch.owner)

    def find(self) -> list[Leftover]:
        born = _born(self._batch)
        found: list[Leftover] = []
        done: set[RefKey] = set()
        for ref in _namespaces(self._batch):
            if _ref_key(ref) in done:
                continue
            done.add(_ref_key(ref))
            for link in self._group_members(ref):
                if link.alias.startswith(self._owned):
                    found.append(Leftover(ref, link.index, link.name, delete=False))
                elif not link.alias and (_ref_key(ref), link.name) in born:
                    found.append(Leftover(ref, link.index, link.name, delete=True))
                else:
                    log.warning("link %s in %s is in group %d but not this helper's; left alone",
                                link.name, describe_ref(ref), self._group)
        return found

    def _group_members(self, ref: helper_pb2.NamespaceRef) -> list[LinkInfo]:
        try:
            handle = netns.open_ref(self._policy, ref, self._host)
        except (NamespaceGone, PolicyRefused):
            return []  # gone, and its links with it
        try:
            with self._cache.scanning(handle) as ipr:
                return [link for link in links.dump_links(ipr, describe_ref(ref))
                        if link.group == self._group]
        finally:
            handle.close()

    def apply(self, leftovers: list[Leftover]) -> list[str]:
        """Each step re-checks its link (same name, still in the group); returns failures."""
        failed: list[str] = []
        for leftover in leftovers:
            try:
                self._apply_one(leftover)
            except (HelperError, OSError) as exc:
                failed.append(f"{leftover.describe()}: {exc}")
        return failed

    def _apply_one(self, leftover: Leftover) -> None:
        try:
            handle = netns.open_ref(self._policy, leftover.ref, self._host)
        except NamespaceGone:
            return
        where = describe_ref(leftover.ref)
        try:
            with self._cache.scanning(handle) as ipr:
                current = links.link_by_index(ipr, leftover.index, where)
                if current is None or (current.name, current.group) != (leftover.name,
                                                                        self._group):
                    return  # gone (a peer deleted before it) or no longer the link found
                if leftover.delete:
                    links.delete_link(ipr, leftover.index, leftover.describe())
                else:
                    links.set_link(ipr, leftover.index, leftover.describe(),
                                   group=links.DEFAULT_GROUP)
        except LinkNotFound:
            return
        finally:
            handle.close()


def finish_unfinished(
    audit_path: str, append: Callable[[dict[str, object]], None], executor: Executor
) -> list[str]:
    """Find the unfinished batch, audit its clean-up, then do it; return the steps.

    Raises what `append` raises (the audit log cannot be written): nothing was touched.
    """
    found = unfinished_batch(audit_path)
    if found is None:
        return []
    batch, unrecorded = found
    recovery = Recovery(executor.policy, executor.host, executor.cache, batch)
    leftovers = executor.run(recovery.find)
    stale = _stale_namespace_files(batch, executor.policy)
    steps = [leftover.describe() for leftover in leftovers]
    steps += [f"remove the empty namespace file {path} (its creation was cut short)"
              for path in stale]
    if not (steps or unrecorded):
        return []
    append(records.interrupted_record(batch, steps))
    for failure in executor.run(lambda: recovery.apply(leftovers)):
        log.error("recovery step failed: %s", failure)
    for path in stale:
        _remove_if_still_empty(path)
    return steps


def _remove_if_still_empty(path: str) -> None:
    try:
        if _empty_and_unmounted(path):
            os.unlink(path)
    except OSError as exc:
        log.error("cannot remove the empty namespace file %s: %s", path, exc)


def at_start(audit_path: str, append: Callable[[dict[str, object]], None],
             audit_error: type[Exception], executor: Executor) -> None:
    """`finish_unfinished`, logged; a failure is logged and never stops the helper."""
    try:
        steps = finish_unfinished(audit_path, append, executor)
    except audit_error as exc:
        log.error("cannot audit the clean-up of an interrupted batch (%s); nothing touched, "
                  "the next start tries again", exc)
        return
    except Exception:
        log.exception("clean-up of an interrupted batch failed; the next start tries again")
        return
    for step in steps:
        log.warning("interrupted batch: %s", step)
