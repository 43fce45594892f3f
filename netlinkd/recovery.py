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

The batch is read from the signed bytes only, and only once their signature verifies with
a key of the trust file: whoever can write the log cannot make recovery act on a batch
the controller did not sign. A stranger can put a link in any group, but not guess this
one: the group is a digest of the batch's random epoch and its sequence, which only the
controller, the helper and the audit log (root-only) know. The work is written to the audit
log first (the intent's result, verdict `interrupted`, carrying the signed intent); if that
write fails nothing is touched (fail closed) and the next start tries again. A clean-up
cut short is found again the same way: the log then ends with that `interrupted` result.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass

from netagent_api import helper_pb2
from netagent_audit import records
from netagent_audit.chain import AuditLogCorrupt, BadRecord, KeyLookup, last_line, signed_batch
from netlinkd import links, netns, rtnl
from netlinkd.errors import (
    AuditUnavailable,
    HelperError,
    LinkNotFound,
    NamespaceGone,
    PolicyRefused,
)
from netlinkd.executor import Executor
from netlinkd.netns import describe_ref
from netlinkd.policy import named_ns_path, namespace_refs, ref_key
from netlinkd.rtnl import LinkInfo

log = logging.getLogger(__name__)


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


def unfinished_batch(
    audit_path: str, keys: KeyLookup
) -> tuple[dict[str, object], helper_pb2.Batch, bool] | None:
    """The last record, if it names a batch to clean up after (an intent: the helper died
    inside it; an `interrupted` result: a clean-up that may itself have been cut short),
    its signature-checked batch, and whether its result is still to be written."""
    try:
        line = last_line(audit_path)
        record = json.loads(line) if line is not None else None
    except (FileNotFoundError, AuditLogCorrupt, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    interrupted = record.get("kind") == "result" and record.get("verdict") == "interrupted"
    if record.get("kind") != "intent" and not interrupted:
        return None
    try:
        return record, signed_batch(record, keys), not interrupted
    except BadRecord as exc:
        log.error("the last audit record names a batch that does not verify (%s); "
                  "not recovering", exc)
        return None


def _created_ends(batch: helper_pb2.Batch) -> list[helper_pb2.LinkSpec]:
    return [end for op in batch.operations if op.WhichOneof("op") == "create_veth_pair"
            for end in (op.create_veth_pair.a, op.create_veth_pair.b)]


def _stale_namespace_files(batch: helper_pb2.Batch, executor: Executor) -> list[str]:
    """Named namespaces the batch was creating whose file is left empty and unmounted (a
    kill between creating the file and mounting the namespace on it, or inside the undo):
    such a file reads as a namespace that is gone, for good, and would block every create
    in it. Only the intent's names are looked at."""
    stale: set[str] = set()
    for end in _created_ends(batch):
        if end.netns.WhichOneof("kind") == "name":
            try:
                path = named_ns_path(executor.policy, end.netns.name, "recovery")
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


def _find(executor: Executor, batch: helper_pb2.Batch, group: int) -> list[Leftover]:
    """On the netlink thread: the links of the batch's group, in the namespaces it names."""
    born = {(ref_key(end.netns), end.name) for end in _created_ends(batch)}
    owned = links.owner_prefix(batch.owner)
    found: list[Leftover] = []
    for key, ref in {ref_key(ref): ref for _index, ref in namespace_refs(batch)}.items():
        for link in _group_members(executor, ref, group):
            if link.alias.startswith(owned):
                found.append(Leftover(ref, link.index, link.name, delete=False))
            elif not link.alias and (key, link.name) in born:
                found.append(Leftover(ref, link.index, link.name, delete=True))
            else:
                log.warning("link %s in %s is in group %d but not this helper's; left alone",
                            link.name, describe_ref(ref), group)
    return found


def _group_members(executor: Executor, ref: helper_pb2.NamespaceRef,
                   group: int) -> list[LinkInfo]:
    try:
        handle = netns.open_ref(executor.policy, ref, executor.host)
    except (NamespaceGone, PolicyRefused):
        return []  # gone, and its links with it
    with closing(handle), executor.cache.scanning(handle) as ipr:
        return links.dump_links(ipr, describe_ref(ref), keep=lambda link: link.group == group)


def _apply(executor: Executor, leftover: Leftover, group: int) -> None:
    """On the netlink thread: one step, once its link is checked again (same ifindex, name
    and group)."""
    try:
        handle = netns.open_ref(executor.policy, leftover.ref, executor.host)
    except NamespaceGone:
        return
    try:
        with closing(handle), executor.cache.scanning(handle) as ipr:
            current = links.link_by_index(ipr, leftover.index, describe_ref(leftover.ref))
            if current is None or (current.name, current.group) != (leftover.name, group):
                return  # gone (a peer deleted before it) or no longer the link found
            request = (rtnl.delete_link(leftover.index) if leftover.delete
                       else rtnl.set_link(leftover.index, group=links.DEFAULT_GROUP))
            links.send(ipr, request, leftover.describe())
    except LinkNotFound:
        return


def finish_unfinished(
    audit_path: str, append: Callable[[dict[str, object]], None], executor: Executor,
    keys: KeyLookup,
) -> list[str]:
    """Find the unfinished batch, audit its clean-up, then do it; return the steps.

    Raises what `append` raises (the audit log cannot be written): nothing was touched.
    """
    found = unfinished_batch(audit_path, keys)
    if found is None:
        return []
    record, batch, unrecorded = found
    group = links.batch_group(batch.epoch, batch.sequence)
    leftovers = executor.run(lambda: _find(executor, batch, group))
    stale = _stale_namespace_files(batch, executor)
    steps = [leftover.describe() for leftover in leftovers]
    steps += [f"remove the empty namespace file {path} (its creation was cut short)"
              for path in stale]
    if not (steps or unrecorded):
        return []
    append(records.interrupted_record(record, batch, steps))

    def apply_all() -> None:
        for leftover in leftovers:
            try:
                _apply(executor, leftover, group)
            except (HelperError, OSError) as exc:
                log.error("recovery step failed: %s: %s", leftover.describe(), exc)

    executor.run(apply_all)
    for path in stale:
        try:
            if _empty_and_unmounted(path):
                os.unlink(path)
        except OSError as exc:
            log.error("cannot remove the empty namespace file %s: %s", path, exc)
    return steps


def at_start(audit_path: str, append: Callable[[dict[str, object]], None],
             executor: Executor, keys: KeyLookup) -> None:
    """`finish_unfinished`, logged; a failure is logged and never stops the helper."""
    try:
        steps = finish_unfinished(audit_path, append, executor, keys)
    except AuditUnavailable as exc:
        log.error("cannot audit the clean-up of an interrupted batch (%s); nothing touched, "
                  "the next start tries again", exc)
        return
    except Exception:
        log.exception("clean-up of an interrupted batch failed; the next start tries again")
        return
    for step in steps:
        log.warning("interrupted batch: %s", step)
