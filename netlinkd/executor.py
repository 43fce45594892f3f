"""Runs a verified, policy-checked batch on ONE dedicated thread that owns every netlink
socket. All-or-nothing: each applied step pushes its undo onto an `ExitStack`; success
calls `pop_all()`, any failure unwinds.

Deleting a link cannot be undone (a veth pair is gone with it). So before anything is
applied, every operation that names an existing link not owned by the batch's owner fails
the batch untouched; a later kernel error can still leave a delete applied, and the
outcome then says so (verdict `failed`, "not undone: ...").
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from netagent_api import helper_pb2
from netlinkd import links, netns, rtnl
from netlinkd.addresses import AddressBook, LinkAddresses
from netlinkd.errors import (
    Conflict,
    HelperError,
    KernelError,
    LinkNotFound,
    NamespaceGone,
    OwnedLinkLimit,
    PolicyRefused,
)
from netlinkd.group_delete import GroupDelete
from netlinkd.netns import NsHandle, SocketCache, describe_ref
from netlinkd.policy import Policy, namespace_refs, ref_key
from netlinkd.rtnl import LinkInfo, Rtnl

log = logging.getLogger(__name__)
T = TypeVar("T")
CREATE = "create_veth_pair"


@dataclass
class Outcome:
    ok: bool
    failed_index: int = -1
    error: HelperError | None = None
    verdict: str = "applied"
    results: list[str] = field(default_factory=list)
    observed: list[helper_pb2.ObservedLink] = field(default_factory=list)


@dataclass
class Created:
    """A veth pair this batch created, for its undo: end `name`, by ifindex, in the
    namespace `ipr` is bound to. The ifindex (not the name, which a stranger may have taken
    since) is what gets deleted, and only while it still looks like what was created: its
    name, and the owner alias or (not stamped yet) no alias and the batch's link group."""

    ipr: Rtnl
    index: int
    name: str
    where: str
    alias: str
    group: int

    def undo(self) -> None:
        if self.index:
            link = links.link_by_index(self.ipr, self.index, self.where)
        else:  # the look-up right after the create failed: by name
            link = links.find_link(self.ipr, self.name, self.where)
        if link is None:
            return  # already gone (a DeleteLink of this batch, or someone else)
        unstamped = link.alias == "" and link.group == self.group
        if link.name != self.name or not (link.alias == self.alias or unstamped):
            raise PolicyRefused(
                f"not undone: ifindex {link.index} in {self.where} is now {link.name} with "
                f"alias {link.alias!r}, not the {self.name} this batch created; left in place"
            )
        links.send(self.ipr, rtnl.delete_link(link.index), f"delete {self.name} in {self.where}")


@dataclass
class _NewPair:
    """A CreateVethPair of a pipelined run: its ends (a, b), their namespaces, the undo."""

    index: int
    op: helper_pb2.CreateVethPair
    what: str
    handles: tuple[NsHandle, NsHandle]
    iprs: tuple[Rtnl, Rtnl]
    created: Created | None = None

    @property
    def ends(self) -> tuple[helper_pb2.LinkSpec, helper_pb2.LinkSpec]:
        return self.op.a, self.op.b

    @property
    def where(self) -> tuple[str, str]:
        return describe_ref(self.op.a.netns), describe_ref(self.op.b.netns)


_Found = tuple[Rtnl | None, dict[str, LinkInfo | None]]  # a namespace's socket, its links
_LookedUp = tuple[list[tuple[int, str, Any]], dict[tuple[str, str | int], _Found | HelperError]]


class _OpFailed(Exception):
    def __init__(self, index: int, error: HelperError) -> None:
        super().__init__(str(error))
        self.index = index
        self.error = error


def _prefixed(error: HelperError, prefix: str) -> HelperError:
    wrapped = type(error)(f"{prefix}: {error}")
    wrapped.__cause__ = error
    return wrapped


class Executor:
    """Public face: `execute`, `close`. Everything runs on the netlink thread."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netlink")
        self._intents = ThreadPoolExecutor(max_workers=1, thread_name_prefix="intent")
        self._thread = self.pool.submit(threading.get_ident).result()
        self.owned_count: dict[str, int] = {}  # owner -> running count; absent: unknown
        self.host = self.run(netns.host_handle)
        self.cache = self.run(lambda: SocketCache(self.host))

    def run(self, work: Callable[[], T]) -> T:
        """Run `work` on the netlink thread (where `host` and `cache` may be used): at once
        when called there (the front runs each batch there)."""
        if threading.get_ident() == self._thread:
            return work()
        return self.pool.submit(work).result()

    def execute(self, batch: helper_pb2.Batch, before_acting: Callable[[], None]) -> Outcome:
        """Open each namespace the batch names once (one that is not a namespace refuses
        the batch: raised, with nothing done), call `before_acting` (the audit intent; what
        it raises is raised), then apply. The pre-check's look-ups only read: they run while
        `before_acting` does (its fsync), and nothing is changed until it has returned."""
        return self.run(lambda: self._execute(batch, before_acting))

    def _execute(self, batch: helper_pb2.Batch, before_acting: Callable[[], None]) -> Outcome:
        try:
            with ExitStack() as handles:
                group = links.batch_group(batch.epoch, batch.sequence)
                run = _BatchRun(self, batch.owner, group, handles)
                run.open_all([*namespace_refs(batch), *((-1, r) for r in batch.observe.netns)])
                intent = self._intents.submit(before_acting)
                try:
                    run.look_up(batch.operations)
                finally:
                    intent.result()
                outcome = run.apply_all(batch.operations)
                if not outcome.ok:
                    self.owned_count.clear()
                if batch.HasField("observe"):
                    self._observe_into(run, batch.observe, outcome)
        finally:
            self.cache.release()
            self.cache.sweep()  # after the batch, off the path to acting
        return outcome

    @staticmethod
    def _observe_into(run: _BatchRun, request: helper_pb2.ObserveRequest,
                      outcome: Outcome) -> None:
        """Observe after the operations. Whatever goes wrong here, the operations' outcome
        (and the audit verdict) stands: a failed observe after applied operations is an
        error saying so, with verdict `applied` and no observed links."""
        try:
            outcome.observed = run.observe(request)
        except Exception as exc:
            log.warning("observe after the operations failed: %s", exc)
            if outcome.ok:
                error = exc if isinstance(exc, HelperError) else KernelError(
                    f"{type(exc).__name__}: {exc}")
                outcome.ok, outcome.error = False, _prefixed(error, "operations applied, "
                                                             "observe failed")

    def sweep_soon(self) -> None:
        """A namespace vanished: close cached sockets of vanished namespaces (after any
        running batch), so the cache does not keep a dead namespace and its links alive."""
        self.pool.submit(lambda: self.cache.sweep())

    def close(self) -> None:
        def stop() -> None:
            self.cache.close()
            self.host.close()

        self.run(stop)
        self.pool.shutdown(wait=True)
        self._intents.shutdown(wait=True)


class _BatchRun:
    """State of one batch on the netlink thread."""

    def __init__(self, executor: Executor, owner: str, group: int, handles: ExitStack) -> None:
        self._x = executor
        self._owner = owner
        self._group = group
        self._handles = handles
        self._undo_steps = 0
        self._undo_errors: list[str] = []
        self._deletes = GroupDelete(group)
        self._addresses = AddressBook()
        self._found: dict[tuple[int, str], LinkInfo | None] = {}
        self._op_index = -1
        self._looked_up: _LookedUp | None = None
        # Each namespace a batch's operations name is opened once (one fd however many
        # operations name it); `expect_inode` is still checked on every use.
        self._opened: dict[tuple[str, str | int], NsHandle] = {}

    # --- namespaces -------------------------------------------------------------------

    def _open(self, ref: helper_pb2.NamespaceRef) -> NsHandle:
        key = ref_key(ref)
        handle = self._opened.get(key)
        if handle is None:
            handle = netns.open_ref(self._x.policy, ref, self._x.host, dir_checked=True)
            self._handles.callback(handle.close)
            self._opened[key] = handle
        else:
            netns.check_expected_inode(ref, handle)
        return handle

    def open_all(self, refs: list[tuple[int, helper_pb2.NamespaceRef]]) -> None:
        for index, ref in refs:
            if ref.WhichOneof("kind") is not None:
                try:
                    self._open(ref)
                except NamespaceGone:
                    continue
                except HelperError as exc:
                    exc.index = index
                    raise

    def _open_or_create(self, ref: helper_pb2.NamespaceRef, undo: ExitStack) -> NsHandle:
        if ref.WhichOneof("kind") == "name":
            path = os.path.join(netns.NETNS_RUN_DIR, ref.name)
            if not os.path.lexists(path):
                self._opened.pop(ref_key(ref), None)  # not the namespace made now
                limit, present = self._x.policy.max_named_namespaces, len(netns.list_named())
                if present >= limit:
                    raise PolicyRefused(
                        f"creating namespace {ref.name} would exceed max_named_namespaces = "
                        f"{limit} ({netns.NETNS_RUN_DIR} holds {present} entries); remove "
                        "unused namespaces or raise the limit"
                    )
                netns.create_named(ref.name)
                self._push_undo(undo, f"remove namespace {ref.name}", netns.remove_named, path)
        return self._open(ref)

    def _ipr(self, handle: NsHandle) -> Rtnl:
        return self._x.cache.get(handle)

    # --- undo -------------------------------------------------------------------------

    def _push_undo(self, undo: ExitStack, what: str, fn: Callable[..., Any], *args: Any) -> None:
        self._undo_steps += 1
        undo.callback(self._run_undo, what, fn, *args)

    def _run_undo(self, what: str, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            log.error("rollback step failed: %s: %s", what, exc)
            self._undo_errors.append(f"{what}: {exc}")

    # --- batch ------------------------------------------------------------------------

    def apply_all(self, ops: Sequence[helper_pb2.Operation]) -> Outcome:
        results: list[str] = []
        try:
            self._refuse_certain_failures(ops)
            with ExitStack() as undo:
                index = 0
                while index < len(ops):
                    kind = ops[index].WhichOneof("op")
                    if kind != "delete_link":
                        self._flush_deletes()
                    if kind == CREATE:
                        end = next((i for i in range(index, len(ops))
                                    if ops[i].WhichOneof("op") != CREATE), len(ops))
                        results += self._create_pairs(index, ops[index:end], undo)
                        index = end
                        continue
                    results.append(self._apply_one(index, ops[index], undo))
                    index += 1
                self._flush_deletes()
                self._check_addresses()
                undo.pop_all()
            return Outcome(ok=True, results=results)
        except _OpFailed as exc:
            failed = exc
        except Exception as exc:
            log.exception("unexpected error in operation %d", self._op_index)
            error = KernelError(f"operation {self._op_index}: {type(exc).__name__}: {exc}")
            failed = _OpFailed(self._op_index, error)
        finally:
            # Links marked for a group delete never stay in the batch's group.
            self._undo_errors += self._deletes.unmark()
        return self._failure(failed, results)

    def _failure(self, failed: _OpFailed, results: list[str]) -> Outcome:
        error = failed.error
        verdict = "rolled_back" if self._undo_steps else "failed"
        if self._undo_errors:
            verdict = "failed"
            error = _prefixed(error, "rollback incomplete (" + "; ".join(self._undo_errors) + ")")
        if self._deletes.deleted:
            verdict = "failed"
            error = _prefixed(error, "not undone: " + "; ".join(self._deletes.deleted))
        return Outcome(False, failed.index, error, verdict, results)

    def _apply_one(self, index: int, op: helper_pb2.Operation, undo: ExitStack) -> str:
        """`_delete_link`, `_set_link`, `_add_address` or `_del_address` (the policy let
        no other kind through)."""
        kind = op.WhichOneof("op") or "none"
        with self._as_op(index, kind):
            handler: Callable[[Any, ExitStack], str] = getattr(self, f"_{kind}")
            return handler(getattr(op, kind), undo)

    @contextmanager
    def _as_op(self, index: int, kind: str) -> Iterator[None]:
        """Errors raised inside become operation `index`'s failure."""
        prefix = f"operation {index} ({kind})"
        self._op_index = index
        try:
            yield
        except _OpFailed:
            raise
        except HelperError as exc:
            raise _OpFailed(index, _prefixed(exc, prefix)) from exc
        except Exception as exc:
            raise _OpFailed(index, KernelError(f"{prefix}: {exc}")) from exc

    # --- ownership --------------------------------------------------------------------

    def _find(self, ipr: Rtnl, name: str, where: str) -> LinkInfo | None:
        """The link as the up-front check found it, or as this batch's own changes left it;
        looked up again only after the batch created or deleted links there."""
        key = (id(ipr), name)
        if key not in self._found:
            self._found[key] = links.find_link(ipr, name, where)
        return self._found[key]

    def _owned_link(self, ipr: Rtnl, name: str, ref: helper_pb2.NamespaceRef) -> LinkInfo:
        where = describe_ref(ref)
        link = self._find(ipr, name, where)
        if link is None:
            raise LinkNotFound(f"link {name} does not exist in {where}")
        self._require_owned(link, where)
        return link

    def _require_owned(self, link: LinkInfo, where: str) -> None:
        if not link.alias.startswith(links.owner_prefix(self._owner)):
            raise PolicyRefused(
                f"link {link.name} in {where} is not owned by netagent:{self._owner} "
                f"(alias {link.alias!r}); it is left untouched"
            )

    def look_up(self, ops: Sequence[helper_pb2.Operation]) -> _LookedUp:
        """The links the operations name, for `_refuse_certain_failures`: the names of each
        namespace looked up together (one sendmsg). Only reads; a failure is kept for then."""
        targets = [(index, kind, target) for index, op in enumerate(ops)
                   if (kind := op.WhichOneof("op")) is not None
                   for target in ((op.create_veth_pair.a, op.create_veth_pair.b)
                                  if kind == CREATE else (getattr(op, kind),))]
        by_ns: dict[tuple[str, str | int], tuple[helper_pb2.NamespaceRef, dict[str, None]]] = {}
        for _index, _kind, target in targets:
            by_ns.setdefault(ref_key(target.netns), (target.netns, {}))[1][target.name] = None
        found: dict[tuple[str, str | int], _Found | HelperError] = {}
        for key, (ref, names) in by_ns.items():
            try:  # no socket: the namespace is gone or not made yet, nothing in it is foreign
                ipr = self._existing_ns(ref)
                now = {} if ipr is None else links.find_links(ipr, list(names), describe_ref(ref))
            except HelperError as exc:
                found[key] = exc
                continue
            found[key] = (ipr, now)
            self._found.update({(id(ipr), name): link for name, link in now.items()})
        self._looked_up = targets, found
        return self._looked_up

    def _refuse_certain_failures(self, ops: Sequence[helper_pb2.Operation]) -> None:
        """Before any change: an op naming an existing link of another owner fails the batch."""
        targets, found = self._looked_up or self.look_up(ops)
        for index, kind, target in targets:
            with self._as_op(index, kind):
                there = found[ref_key(target.netns)]
                if isinstance(there, HelperError):
                    raise there
                ipr, now = there
                link = now.get(target.name)
                if ipr is None or link is None:
                    continue
                if kind != CREATE:
                    self._require_owned(link, describe_ref(target.netns))
                elif not link.alias.startswith(links.owner_prefix(self._owner)):
                    self._refuse_existing(ipr, target)

    def _existing_ns(self, ref: helper_pb2.NamespaceRef) -> Rtnl | None:
        if ref.WhichOneof("kind") == "name" and not os.path.lexists(
            os.path.join(netns.NETNS_RUN_DIR, ref.name)
        ):
            return None
        try:
            return self._ipr(self._open(ref))
        except NamespaceGone:
            return None

    def _refuse_existing(self, ipr: Rtnl, spec: helper_pb2.LinkSpec) -> None:
        where = describe_ref(spec.netns)
        link = links.find_link(ipr, spec.name, where)
        if link is None:
            return
        owner = "netagent" if link.alias.startswith(links.ALIAS_PREFIX) else "not netagent"
        raise Conflict(
            f"link {spec.name} already exists in {where} (owner: {owner}, alias "
            f"{link.alias!r}); it is left untouched, delete or rename it first"
        )

    def _reserve_owned(self, count: int, pending: int = 0) -> None:
        """Links vanish with their namespace unseen, so the running count may be too high:
        recount before refusing. `pending`: links reserved but not created yet, which a
        recount cannot see."""
        limit, counts = self._x.policy.max_owned_links, self._x.owned_count
        if self._owner not in counts or counts[self._owner] + count > limit:
            counts[self._owner] = self._count_owned() + pending
        if counts[self._owner] + count > limit:
            raise OwnedLinkLimit(
                f"creating {count} links would exceed the limit of {limit} owned links of "
                f"owner {self._owner} ({counts[self._owner]} exist); every create is refused "
                f"until links are deleted or max_owned_links is raised"
            )
        counts[self._owner] += count

    def _count_owned(self) -> int:
        """This owner's links in the host and every namespace in `netns_dirs` (another
        agent's links count against its own limit, not this one's). Each namespace file
        is closed as soon as it is counted; running out of descriptors is a KernelError
        (retriable), never a namespace silently left out of the count."""
        seen = {self._x.host.key}
        total = self._count_in(self._x.host)
        for directory in self._x.policy.netns_dirs:
            try:
                entries = os.listdir(directory)
            except OSError:
                continue
            for entry in entries:
                try:
                    handle = netns.open_ns_file(os.path.join(directory, entry))
                except (NamespaceGone, PolicyRefused):
                    continue
                with closing(handle):
                    if handle.key not in seen:
                        seen.add(handle.key)
                        total += self._count_in(handle)
        return total

    def _count_in(self, handle: NsHandle) -> int:
        with self._x.cache.scanning(handle) as ipr:
            prefix = links.owner_prefix(self._owner)
            return len(links.dump_links(ipr, handle.path,
                                        keep=lambda link: link.alias.startswith(prefix)))

    # --- operations -------------------------------------------------------------------

    def _create_pairs(self, first: int, ops: Sequence[helper_pb2.Operation],
                      undo: ExitStack) -> list[str]:
        """A run of consecutive CreateVethPairs, pipelined: every pair's RTM_NEWLINK in one
        sendmsg from the host socket, then per namespace one sendmsg looking the new ends up
        and one configuring them. Both ends are born in the batch's link group (with MAC and
        MTU), then each is stamped with the owner alias and moved to group 0. A helper killed
        in between leaves links `recovery` can prove are its own: the name and namespace of
        a create in the unfinished intent, and the group derived from it. A failure is
        reported for the first operation, in order, that failed; the undo deletes every
        pair made."""
        pairs: list[_NewPair] = []
        deferred: _OpFailed | None = None
        for offset, op in enumerate(ops):
            try:
                pairs.append(self._prepare_pair(first + offset, op.create_veth_pair, undo,
                                                2 * len(pairs)))
            except _OpFailed as exc:
                deferred = exc  # the pairs before it are made (and undone) as if in order
                break
        if pairs:
            self._make_pairs(pairs, undo)
            self._configure_pairs(pairs)
        if deferred is not None:
            raise deferred
        return [pair.what for pair in pairs]

    def _prepare_pair(self, index: int, op: helper_pb2.CreateVethPair, undo: ExitStack,
                      pending: int) -> _NewPair:
        with self._as_op(index, CREATE):
            a, b = op.a, op.b
            handle_a = self._open_or_create(a.netns, undo)
            handle_b = self._open_or_create(b.netns, undo)
            self._reserve_owned(2, pending)
            what = (f"create veth {a.name} ({describe_ref(a.netns)}) "
                    f"<-> {b.name} ({describe_ref(b.netns)})")
            return _NewPair(index, op, what, (handle_a, handle_b),
                            (self._ipr(handle_a), self._ipr(handle_b)))

    def _make_pairs(self, pairs: list[_NewPair], undo: ExitStack) -> None:
        def spec(end: helper_pb2.LinkSpec, handle: NsHandle) -> rtnl.EndSpec:
            return rtnl.EndSpec(end.name, handle.fd, end.mac, end.mtu, self._group)

        specs = [(spec(pair.op.a, pair.handles[0]), spec(pair.op.b, pair.handles[1]))
                 for pair in pairs]
        for pair in pairs:
            for end, ipr in zip(pair.ends, pair.iprs, strict=True):
                self._found.pop((id(ipr), end.name), None)
        try:
            refusals = links.create_veths(self._x.cache.host, specs,
                                          f"create {len(pairs)} veth pairs")
        except HelperError:
            for pair in pairs:  # fate unknown: each undo looks its end up by name
                self._push_created(pair, undo)
            with self._as_op(pairs[0].index, CREATE):
                raise
        for pair, refusal in zip(pairs, refusals, strict=True):
            if refusal is None:
                self._push_created(pair, undo)
        for pair, refusal in zip(pairs, refusals, strict=True):
            if refusal is None:
                continue
            with self._as_op(pair.index, CREATE):
                try:
                    with links.netlink_errors(pair.what):
                        raise refusal
                except Conflict:
                    for end, ipr in zip(pair.ends, pair.iprs, strict=True):
                        self._refuse_existing(ipr, end)
                    raise

    def _push_created(self, pair: _NewPair, undo: ExitStack) -> None:
        a, b = pair.ends
        pair.created = Created(pair.iprs[0], 0, a.name, describe_ref(a.netns),
                               links.owner_alias(self._owner, b.name), self._group)
        self._push_undo(undo, f"delete {a.name}", self._delete_created, pair.created)

    def _configure_pairs(self, pairs: list[_NewPair]) -> None:
        """Per namespace: the new ends looked up in one sendmsg, configured in another.
        Nothing is configured unless every end is the link this batch created."""
        by_ns: dict[tuple[int, int], list[tuple[int, int]]] = {}  # (pair, side) per namespace
        for position, pair in enumerate(pairs):
            for side, handle in enumerate(pair.handles):
                by_ns.setdefault(handle.key, []).append((position, side))
        looked_up: dict[tuple[int, int], LinkInfo | None] = {}
        for ends in by_ns.values():
            position, side = ends[0]
            ipr, where = pairs[position].iprs[side], pairs[position].where[side]
            with self._as_op(pairs[position].index, CREATE):
                now = links.find_links(ipr, [pairs[p].ends[s].name for p, s in ends], where)
            looked_up.update({(p, s): now[pairs[p].ends[s].name] for p, s in ends})
        made: dict[tuple[int, int], LinkInfo] = {}
        for position, pair in enumerate(pairs):
            with self._as_op(pair.index, CREATE):
                for side, end in enumerate(pair.ends):
                    made[(position, side)] = self._created(looked_up[(position, side)], end)
            assert pair.created is not None
            pair.created.index = made[(position, 0)].index
        failures: dict[tuple[int, int], HelperError] = {}
        for ends in by_ns.values():
            new = [self._new_end(pairs[p], s, made[(p, s)].index) for p, s in ends]
            position, side = ends[0]
            errors = links.configure_created(pairs[position].iprs[side], new,
                                             pairs[position].where[side])
            failures.update({at: error for at, error in zip(ends, errors, strict=True)
                             if error is not None})
        if failures:
            with self._as_op(pairs[min(failures)[0]].index, CREATE):
                raise failures[min(failures)]

    def _new_end(self, pair: _NewPair, side: int, index: int) -> links.NewEnd:
        end, peer = pair.ends[side], pair.ends[1 - side]
        return links.NewEnd(index, links.owner_alias(self._owner, peer.name), end.up,
                            list(end.addresses), f"{end.name} in {pair.where[side]}")

    def _created(self, link: LinkInfo | None, spec: helper_pb2.LinkSpec) -> LinkInfo:
        where = f"{spec.name} in {describe_ref(spec.netns)}"
        if link is None:
            raise LinkNotFound(f"{where} vanished right after creation")
        if link.group != self._group or link.alias:
            raise Conflict(f"{where} is not the link this batch created (group {link.group}, "
                           f"alias {link.alias!r}); it is left untouched")
        return link

    def _delete_created(self, created: Created) -> None:
        try:
            created.undo()
        except BaseException:
            self._x.owned_count.pop(self._owner, None)
            raise
        if self._owner in self._x.owned_count:
            self._x.owned_count[self._owner] -= 2

    def _delete_link(self, op: helper_pb2.DeleteLink, undo: ExitStack) -> str:
        what = f"delete {op.name} in {describe_ref(op.netns)}"
        try:
            handle = self._open(op.netns)
        except NamespaceGone:
            return f"{what}: namespace already gone"
        ipr = self._ipr(handle)
        link = self._find(ipr, op.name, describe_ref(op.netns))
        if link is None:
            return f"{what}: already absent"
        self._require_owned(link, describe_ref(op.netns))
        self._deletes.mark(self._op_index, handle.key, ipr, link, describe_ref(op.netns))
        self._found.pop((id(ipr), op.name), None)
        return what

    def _flush_deletes(self) -> None:
        """Run the DeleteLinks marked so far (see `group_delete`)."""
        self._found.clear()  # peers go with the links deleted
        try:
            deleted = self._deletes.flush()
        except HelperError as exc:
            failed = _prefixed(exc, f"operation {exc.index} (delete_link)")
            raise _OpFailed(exc.index, failed) from exc
        if self._owner in self._x.owned_count:  # at least this many: peers go too, recount is exact
            self._x.owned_count[self._owner] -= deleted

    def _set_link(self, op: helper_pb2.SetLink, undo: ExitStack) -> str:
        what = f"set {op.name} in {describe_ref(op.netns)}"
        ipr = self._ipr(self._open(op.netns))
        link = self._owned_link(ipr, op.name, op.netns)
        wanted = {name: getattr(op, name) for name in ("mac", "mtu", "up") if op.HasField(name)}
        if "mac" in wanted:
            wanted["mac"] = wanted["mac"].lower()  # as the kernel reports it
        new = {name: value for name, value in wanted.items() if value != getattr(link, name)}
        if not new:
            return f"{what}: unchanged"
        old = {name: getattr(link, name) for name in new}
        links.send(ipr, rtnl.set_link(link.index, **new), what)
        self._found[(id(ipr), op.name)] = dataclasses.replace(link, **new)
        restore = rtnl.set_link(link.index, **old)
        self._push_undo(undo, f"restore {op.name}", links.send, ipr, restore,
                        f"restore {op.name}")
        return f"{what}: {sorted(new)}"

    def _add_address(self, op: helper_pb2.AddAddress, undo: ExitStack) -> str:
        where = describe_ref(op.netns)
        what = f"add {op.address} to {op.name} in {where}"
        view = self._addresses_of(op)
        if view.has(op.address):
            return f"{what}: already present"
        view.add(op.address, what)
        self._push_undo(undo, f"undo {what}", links.send, view.nl,
                        rtnl.del_address(view.index, op.address), what)
        return what

    def _del_address(self, op: helper_pb2.DelAddress, undo: ExitStack) -> str:
        """Deletes exactly the address named: what the kernel drops with it is added back
        (see `addresses`)."""
        where = describe_ref(op.netns)
        what = f"delete {op.address} from {op.name} in {where}"
        view = self._addresses_of(op)
        if not view.has(op.address):
            return f"{what}: already absent"
        dropped = view.delete(op.address, what)
        self._push_undo(undo, f"undo {what}", links.send, view.nl,
                        rtnl.add_address(view.index, op.address), what)
        return f"{what}; re-added {', '.join(dropped)}" if dropped else what

    def _addresses_of(self, op: helper_pb2.AddAddress | helper_pb2.DelAddress) -> LinkAddresses:
        handle = self._open(op.netns)
        ipr = self._ipr(handle)
        link = self._owned_link(ipr, op.name, op.netns)
        return self._addresses.of(handle.key, ipr, link.index, describe_ref(op.netns),
                                  self._op_index)

    def _check_addresses(self) -> None:
        try:
            self._addresses.check()
        except HelperError as exc:
            kind = "add_address or del_address"
            raise _OpFailed(exc.index, _prefixed(exc, f"operation {exc.index} ({kind})")) from exc

    # --- observe ----------------------------------------------------------------------

    def observe(self, request: helper_pb2.ObserveRequest) -> list[helper_pb2.ObservedLink]:
        seen: dict[tuple[int, int], tuple[list[LinkInfo], dict[int, list[str]]]] = {}
        found = self._observe_in(self._x.host, helper_pb2.NamespaceRef(), seen)
        refs = list(request.netns)
        if request.scan_named:
            refs += [helper_pb2.NamespaceRef(name=name) for name in netns.list_named()]
        done: set[bytes] = set()
        for position, ref in enumerate(refs):
            encoded = ref.SerializeToString(deterministic=True)
            if encoded in done:
                continue
            done.add(encoded)
            # Opened afresh (a namespace the batch rolled back is gone) and closed at once;
            # out of descriptors is a KernelError and fails the observe, never a skip.
            try:  # the batch's own references were checked with it; a scan's were not
                handle = netns.open_ref(self._x.policy, ref, self._x.host,
                                        dir_checked=position < len(request.netns))
            except (NamespaceGone, PolicyRefused):
                continue
            with closing(handle):
                found += self._observe_in(handle, ref, seen)
        return found

    def _observe_in(
        self, handle: NsHandle, ref: helper_pb2.NamespaceRef,
        seen: dict[tuple[int, int], tuple[list[LinkInfo], dict[int, list[str]]]],
    ) -> list[helper_pb2.ObservedLink]:
        """The owned links of the namespace, reported under `ref`. A second reference to a
        namespace already dumped (`ns1` and its file, or a host-network container's
        SandboxKey) reports the same links again under it, so the controller can match
        each under the reference it configured."""
        if handle.key not in seen:
            where = describe_ref(ref)
            prefix = links.owner_prefix(self._owner)
            with self._x.cache.scanning(handle) as ipr:
                owned = links.dump_links(ipr, where, rtnl.STATS_ATTRS,
                                         keep=lambda link: link.alias.startswith(prefix))
                seen[handle.key] = owned, links.addresses_by_index(ipr, where) if owned else {}
        owned, addresses = seen[handle.key]
        return [self._observed(link, addresses.get(link.index, []), ref, handle.inode)
                for link in owned]

    def _observed(
        self, link: LinkInfo, addresses: list[str], ref: helper_pb2.NamespaceRef, inode: int
    ) -> helper_pb2.ObservedLink:
        observed = helper_pb2.ObservedLink(
            name=link.name,
            netns_inode=inode,
            ifindex=link.index,
            mac=link.mac,
            mtu=link.mtu,
            up=link.up,
            addresses=addresses,
            peer=links.peer_from_alias(link.alias),
            oper_state=link.oper_state,
        )
        if link.statistics:
            observed.statistics.CopyFrom(helper_pb2.LinkStatistics(
                **dict(zip(rtnl.STATISTICS, link.statistics, strict=True))))
        observed.netns.CopyFrom(ref)
        return observed
