"""The controller's event loop: adapters post events, the pure core plans, the helper applies.

All state lives on the loop thread; `post()` is the only thread-safe entry point.
"""

from __future__ import annotations

import logging
import math
import queue
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from controller import live_status, wire
from controller import observed as observed_model
from controller.events import (
    ConfigChanges,
    ConfigDeleted,
    ConfigPut,
    ConfigSnapshot,
    Event,
    HelperReconnected,
    LinksChanged,
    LiveTick,
    MicroservicesChanged,
    ResyncTick,
    Stop,
)
from controller.helper_client import HelperUnavailable
from controller.helper_events import OwnChanges
from controller.model import InterfaceConfig, InvalidValue, NamespaceConfig, parse_config
from controller.namespaces import Namespaces
from controller.observed import LinkId, link_id
from controller.ops import CreateVethPair, DeleteLink, NsRef, ObservedLink, Op, State, Status
from controller.reconcile import (
    HELPER_DOWN_GRACE_S,
    Availability,
    Block,
    Bucket,
    ConfigIndex,
    LinkIndex,
    Plan,
    Scope,
    config_bucket,
    plan,
    published_block,
)
from controller.resume import Resume, value_digest
from controller.signer import Observe, Signer
from netagent_api import helper_pb2
from netagent_log import sd_notify

log = logging.getLogger(__name__)

_RETRY_START = 1.0
MAX_OPS_PER_BATCH = 256
"""netlinkd's default `max_ops_per_batch` policy limit."""
_RETRY_MAX = 30.0
_PUBLISH_RETRY_S = 1.0
_COUNTERS_AFTER_BATCH_S = 1.0
"""Due counters wait until no batch has changed anything for this long (a burst's end),
at most one statistics interval: their observe re-reads every link."""
_PER_NAMESPACE = (helper_pb2.POLICY_REFUSED, helper_pb2.KERNEL)
"""Refusals of an observe that one namespace reference can cause, so worth bisecting."""
_EVERY_BATCH = (helper_pb2.AUDIT_UNAVAILABLE,)
"""Refusals that block every batch, whatever it holds: no interface is at fault."""
_BLOCKED_RETRY_MAX = 4.0
RESUME_DECISION_WAIT_S = 2.0  # at most, before the first batch: see `Resume.wait_decided`
"""While changes are blocked, probe at least this often: a retry is cheap, and work
resumes soon after the cause (a full audit disk, a stopped helper) is gone."""


class Helper(Protocol):
    def hello(self) -> bytes: ...
    def submit(self, batch: helper_pb2.SignedBatch) -> helper_pb2.BatchReply: ...


class StatusSink(Protocol):
    def publish(self, statuses: Mapping[str, Status],
                held: Collection[str] = frozenset()) -> bool | None: ...


class BatchFailed(Exception):
    """The helper refused a batch; `failed` maps config names to the reason."""

    def __init__(self, ops: tuple[Op, ...], reply: helper_pb2.BatchReply,
                 failed: Mapping[str, str]) -> None:
        super().__init__(f"{helper_pb2.ErrorKind.Name(reply.error_kind)}: {reply.error}")
        self.ops = ops
        self.reply = reply
        self.failed = dict(failed)

    @property
    def failed_op(self) -> Op | None:
        """The operation the helper named as failing, if it named one."""
        index = self.reply.failed_index
        return self.ops[index] if 0 <= index < len(self.ops) else None


@dataclass
class _State:
    have_config: bool = False  # the first etcd listing arrived; nothing is planned before it
    digests: dict[str, bytes] = field(default_factory=dict)  # resume.value_digest of each
    revisions: dict[str, int] = field(default_factory=dict)  # etcd mod_revision of each
    desired: dict[str, InterfaceConfig | InvalidValue] = field(default_factory=dict)
    index: ConfigIndex = field(default_factory=ConfigIndex)  # of `desired`
    observed: tuple[ObservedLink, ...] = ()
    observed_refs: frozenset[NsRef] = frozenset()  # namespaces `observed` covers
    failures: dict[str, str] = field(default_factory=dict)
    refused: str = ""  # why the helper refused an observe-only batch; applies to all
    block: Block | None = None  # why no change can be applied now (see reconcile.Block)
    seen_kernel: bool = False  # an observe succeeded once: `observed` is worth reporting
    observed_early: bool = False  # the last full observe came before etcd's first listing
    observed_twice: bool = False  # it reported a link under two references
    aside_ops: set[Op] = field(default_factory=set)  # refused; retried on the next timer
    aside_names: set[str] = field(default_factory=set)  # config names of those ops


class Agent:
    """Reconciles desired interfaces from etcd with the kernel through the helper."""

    def __init__(self, label: str, helper: Helper, signer: Signer, statuses: StatusSink,
                 config_prefix: str = "", resync_interval: float = 30.0,
                 stats_interval: float = 0.0, settle_s: float = 0.0,
                 helper_grace_s: float = HELPER_DOWN_GRACE_S,
                 resume: Resume | None = None,
                 inbox: queue.Queue[Event] | None = None) -> None:
        self._label = label
        self._resume = resume
        self._resume_wait = resume is not None
        self._observed_at: tuple[bytes, int] | None = None  # (instance, generation): see
        # `_record_converged`
        self._converged = False  # the last reconcile recorded its state
        self._changed_since_observe = False  # link events came after the last full observe
        self._helper = helper
        self._signer = signer
        self._statuses = statuses
        self._config_prefix = config_prefix
        self._resync_interval = resync_interval
        self._helper_grace_s = helper_grace_s
        # `inbox`: what the watchers posted before the agent was made (`cli.run`)
        self._queue: queue.Queue[Event] = queue.Queue() if inbox is None else inbox
        self._state = _State()
        self._synced_instance: bytes | None = None
        self._last_plan: Plan | None = None  # see _reconcile
        self._statuses_made: Mapping[str, Status] = {}  # by `_with_live`, the last time
        # The last reconcile ended with a full plan that needed nothing, and nothing is
        # set aside, failed, blocked or to observe: a burst of config changes alone then
        # needs only the plan of what it can affect (`reconcile.Scope`) before its batch.
        self._settled = False
        self._touched: tuple[set[str], set[Bucket]] | None = None  # that burst's changes
        self._links: LinkIndex | None = None  # of `_state.observed`, for scopes
        self._unmatched: frozenset[NsRef] = frozenset()  # `_unmatched` of the same
        self._stream_instance: bytes | None = None  # the link-event stream's helper
        self._need_observe = True
        self._names: _NameIndex | None = None
        # Each config's namespace, resolved once between the points that drop `_names`: a
        # reconcile resolves every config four or five times (plan, statuses, name index).
        self._resolved: dict[NamespaceConfig, Availability] = {}
        # What `_forget_resolved` dropped, freed once the next batch is handed over: the
        # full plan after a batch fills both for every config (1,000 pairs: 0.5 ms to free).
        self._dropped: list[object] = []
        self._namespaces = Namespaces()
        self._retry_delay = _RETRY_START
        self._retry_at: float | None = None
        self._resync_at = time.monotonic() + resync_interval
        self._stats_interval = stats_interval
        self._stats_at = time.monotonic() + stats_interval if stats_interval > 0 else None
        self._settle_at: float | None = None
        self._counters: dict[LinkId, tuple[int, ...]] = {}  # statistics as last published
        self._counters_due = False  # the first counters come at the first interval
        self._counters_late_since: float | None = None  # due, waiting for a burst's end
        self._applied_at = -math.inf  # the last batch with operations
        self._debounce = live_status.Debounce(settle_s)
        self._own_changes = OwnChanges()
        self.batches = 0
        self._told_ready = False

    # ---- thread-safe entry points ------------------------------------------------

    def post(self, event: Event) -> None:
        self._queue.put(event)

    def stop(self, reason: str = "stop requested") -> None:
        self.post(Stop(reason))

    def parse_config(self, name: str, raw: bytes) -> InterfaceConfig | InvalidValue:
        """The config value of `name`, parsed; any thread may call it."""
        return parse_config(self._config_prefix, name, raw)

    # ---- loop --------------------------------------------------------------------

    def run(self) -> None:
        """Process events until `Stop`. Never raises for helper or config problems."""
        while self.process(self._next_events()):
            pass

    def process(self, events: Iterable[Event]) -> bool:
        """Absorb a burst of events and reconcile once. False after `Stop`."""
        events = [one for event in events
                  for one in (event.changes if isinstance(event, ConfigChanges) else (event,))]
        stop = next((e for e in events if isinstance(e, Stop)), None)
        if stop is not None:
            log.info("agent stopping: %s", stop.reason)
            self._record_at_stop()
            return False
        link_events = [e for e in events if isinstance(e, LinksChanged)]
        configs_only = all(isinstance(e, ConfigPut | ConfigDeleted) for e in events)
        self._touched = (set(), set()) if self._settled and configs_only else None
        self._settled = False
        for event in events:
            if not isinstance(event, LinksChanged):
                self._absorb(event)
        if link_events:
            self._changed_since_observe = True
            self._forget_resolved()
            self._links_changed(link_events)
        if self._resume_wait and self._resume is not None:
            self._resume_wait = False
            self._resume.wait_decided(RESUME_DECISION_WAIT_S)
        self._reconcile()
        self._touched = None
        self._dropped.clear()
        if self._state.have_config and not self._told_ready:
            # the first listing is applied (Type=notify)
            self._resume.ready() if self._resume is not None else sd_notify.ready()
            self._told_ready = True
        return True

    def _next_events(self) -> list[Event]:
        """Block for one event (or a timer), then drain whatever else is queued."""
        timers = (self._retry_at, self._resync_at, self._stats_at, self._settle_at)
        deadline = min(t for t in timers if t is not None)
        try:
            events = [self._queue.get(timeout=max(0.0, deadline - time.monotonic()))]
        except queue.Empty:
            events = [self._tick()]
        while True:
            try:
                events.append(self._queue.get_nowait())
            except queue.Empty:
                return events

    def _tick(self) -> Event:
        now = time.monotonic()
        if (self._retry_at is not None and self._retry_at <= now) or self._resync_at <= now:
            return ResyncTick()
        return LiveTick()

    def _absorb(self, event: Event) -> None:
        state = self._state
        self._forget_resolved()
        if isinstance(event, ConfigPut):
            state.digests[event.name] = value_digest(event.raw)
            state.revisions[event.name] = event.revision
            done = event.parsed  # by the watcher's thread, while this one waits on a batch
            self._put(event.name, done if isinstance(done, InterfaceConfig | InvalidValue)
                      else self.parse_config(event.name, event.raw))
            state.failures.pop(event.name, None)
            self._changed(event.name)
        elif isinstance(event, ConfigDeleted):
            state.digests.pop(event.name, None)
            state.revisions.pop(event.name, None)
            self._put(event.name, None)
            state.failures.pop(event.name, None)
            self._changed(event.name)
        elif isinstance(event, ConfigSnapshot):
            self._retry_set_aside()
            state.have_config = True
            state.digests = {name: value_digest(raw) for name, raw in event.values.items()}
            state.revisions = dict(event.revisions)
            state.desired = {name: self._parsed(event, name, raw)
                             for name, raw in event.values.items()}
            state.index = ConfigIndex(state.desired)
            state.failures = {n: r for n, r in state.failures.items() if n in state.desired}
            if state.observed_early:
                self._adopt_early_observe()
        elif isinstance(event, MicroservicesChanged):
            self._unset_aside(self._namespaces.docker_changed(event))
        elif isinstance(event, HelperReconnected):
            self._stream_instance = event.instance
            if not self._observed_since(event):
                self._timer_fired()
        elif isinstance(event, LiveTick):
            self._live_tick()
        elif isinstance(event, ResyncTick):
            self._timer_fired()

    def _put(self, name: str, new: InterfaceConfig | InvalidValue | None) -> None:
        """`name`'s config is now `new` (None: deleted); a scoped burst notes what the
        old value named (its peer, its bucket), which the change may affect too."""
        state = self._state
        old = state.desired.get(name)
        if new is None:
            state.desired.pop(name, None)
        else:
            state.desired[name] = new
        state.index.put(name, old, new)
        if self._touched is not None:
            self._touched[0].add(name)
            if isinstance(old, InterfaceConfig):
                self._touched[0].add(old.peer)
                self._touched[1].add(config_bucket(old))

    def _links_changed(self, events: list[LinksChanged]) -> None:
        """The live state (oper state) is taken from every change; a change no batch of
        this agent made that says more needs an observe. A burst is taken in one pass:
        each pass indexes every observed link, so one pass per event would make deleting
        N links cost N^2."""
        news = [self._own_changes.news(event) for event in events]
        self._state.observed = live_status.follow(
            self._state.observed, [change for event in events for change in event.changes])
        if all(new is not None for new in news) and live_status.explained(
                self._state.observed, [change for new in news if new for change in new]):
            return
        for event, new in zip(events, news, strict=True):
            if new is None or new:
                log.info("links changed outside a batch: %s%s%s", ", ".join(event.links) or "-",
                         "; events were lost" if event.overrun else "",
                         "; gone: " + ", ".join(event.namespaces_gone)
                         if event.namespaces_gone else "")
        self._need_observe = True

    def _observed_since(self, stream: HelperReconnected) -> bool:
        """The last full observe was of this helper instance and began at or after the
        link-event stream's generation: every change since is on the stream (an etcd
        listing that came before the stream makes the observe first)."""
        return (self._observed_at is not None and self._observed_at[0] == stream.instance
                and self._observed_at[1] >= stream.generation > 0)

    def _timer_fired(self) -> None:
        now = time.monotonic()
        if self._resync_at <= now:
            self._resync_at = now + self._resync_interval
        self._retry_at = None
        self._forget_resolved()
        self._namespaces.forget_transient()
        self._retry_set_aside()
        self._need_observe = True

    def _live_tick(self) -> None:
        now = time.monotonic()
        if self._stats_at is not None and self._stats_at <= now:
            since = self._counters_late_since or self._stats_at
            quiet_at = self._applied_at + _COUNTERS_AFTER_BATCH_S
            if now < quiet_at and now - since < self._stats_interval:
                self._counters_late_since = since
                self._stats_at = min(quiet_at, since + self._stats_interval)
            else:
                self._need_observe = True  # the observe brings the counters
                self._counters_due = True
                self._counters_late_since = None
                self._stats_at = now + self._stats_interval
        if self._settle_at is not None and self._settle_at <= now:
            self._settle_at = None  # publishing again sets it if something is still held

    def _changed(self, name: str) -> None:
        """A new config for a set-aside interface may fix it: retry what was set aside."""
        if name in self._state.aside_names:
            self._retry_set_aside()

    def _unset_aside(self, moved_labels: set[str]) -> None:
        """Interfaces whose container started, stopped or moved are no longer set aside:
        their operations now name another namespace. Others wait for the retry timer."""
        if not moved_labels or not self._state.aside_names:
            return
        configs = {cfg.name: cfg for cfg in self._configs()}
        touched = {cfg.name for cfg in configs.values() if cfg.namespace.kind == "microservice"
                   and cfg.namespace.microservice in moved_labels}
        touched |= {configs[name].peer for name in touched}
        self._state.aside_names -= touched

    def _retry_set_aside(self) -> None:
        self._state.aside_ops.clear()
        self._state.aside_names.clear()

    def _parsed(self, event: ConfigSnapshot, name: str,
                raw: bytes) -> InterfaceConfig | InvalidValue:
        done = event.parsed.get(name)
        if isinstance(done, InterfaceConfig | InvalidValue):
            return done
        return self.parse_config(name, raw)

    def _adopt_early_observe(self) -> None:
        """The full observe made before etcd's first listing scanned every named namespace
        but was told of no other: the named namespaces it reported links in count as
        observed; any other namespace the configs name is observed as a new one is
        (`_unseen_refs`). Had it reported a link under two references, it kept one of them
        without knowing which the configs use: observe again."""
        state = self._state
        state.observed_early = False
        if state.observed_twice:
            self._need_observe = True
            return
        reported = {link.netns.identity() for link in state.observed}
        state.observed_refs = state.observed_refs | {
            ref for ref in self._observe_refs()
            if ref.kind == "name" and ref.identity() in reported}

    # ---- reconcile ----------------------------------------------------------------

    def _reconcile(self) -> None:
        if not self._state.have_config:
            # Until etcd has been listed, every owned link would look unconfigured, and
            # publishing would delete every status.
            self._observe_early()
            return
        self._forget_resolved()
        self._last_plan = None
        self._converged = False
        if self._links is not None and self._links.observed is not self._state.observed:
            self._links = None  # it holds the links `observed` no longer has
        try:
            self._sync_helper()
            newly_set_aside = self._apply_isolating()
            failures = dict(self._state.failures)
            self._forget_settled_failures()
            if self._state.failures != failures or self._state.block is not None:
                self._last_plan = None  # its inputs changed (a block's text ages)
            if newly_set_aside:
                self._schedule_retry()
            elif not self._state.aside_ops:
                self._retry_delay = _RETRY_START
            self._settled = self._nothing_outstanding()
        except HelperUnavailable as err:
            self._last_plan = None
            log.warning("%s", err)
            self._synced_instance = None
            self._block(f"netlinkd unavailable: {err}", self._helper_grace_s)
            self._schedule_retry()
        except BatchFailed as err:
            self._last_plan = None
            log.log(_level_of(err), "helper refused batch: %s", err,
                    extra={"interface": ",".join(sorted(err.failed)) or None,
                           "outcome": "refused"})
            self._state.failures.update(err.failed)
            self._mark_gone(err)
            self._safe_observe()
            self._schedule_retry()
        except Exception:
            self._last_plan = None
            log.exception("reconcile failed unexpectedly; retrying later")
            self._schedule_retry()
        try:
            # The plan with nothing left to apply is the one the statuses need: nothing
            # has changed since it was made (1,000 pairs: 50-100 ms per plan).
            result = self._last_plan or self._plan()
            statuses, held = self._with_live(self._outstanding(result))
            if self._statuses.publish(statuses, held) is False:
                # not lost until the next change: publish again soon
                retry = time.monotonic() + _PUBLISH_RETRY_S
                self._settle_at = min(retry, self._settle_at or retry)
            elif result is self._last_plan and not result.ops:
                self._record_converged(held)
        except Exception:
            log.exception("computing statuses failed; retrying later")
        if self._settled:
            self._index_links()  # after the statuses' peak, not on top of it

    def _nothing_outstanding(self) -> bool:
        state = self._state
        made = self._last_plan
        return (made is not None and not made.ops and not state.aside_ops and not state.failures
                and state.block is None and not state.refused and not self._namespaces.refused
                and not self._need_observe and self._synced_instance is not None)

    def _observe_early(self) -> None:
        """At start, observe while etcd is listed and parsed (on its watcher's thread):
        a restart's resync costs the longer of the two instead of both. Only once the
        link-event stream is up, so that any change after the observe is told."""
        if self._stream_instance is None or not self._need_observe:
            return
        try:
            self._sync_helper()
        except Exception as err:  # the observe after the listing says what is wrong
            log.info("observe before etcd's listing: %s; observing after it", err)
            self._synced_instance = None
            self._need_observe = True

    def _sync_helper(self) -> None:
        if self._synced_instance is not None and not self._need_observe:
            # A new helper instance is announced by the link-event stream (HelperReconnected)
            # and in every batch's reply, and the kernel keeps its links over a restart:
            # asking before each change would only add a round trip.
            return
        instance = self._helper.hello()
        if instance != self._synced_instance or self._need_observe:
            if instance != self._synced_instance:
                log.info("helper instance %s: full observe", instance.hex()[:12])
            self._observe()
            self._synced_instance = instance
            self._need_observe = False
        # Namespaces configs now resolve to for the first time are observed in the batch
        # that first uses them (`_apply_isolating`).

    def _unseen_refs(self, names: Collection[str] | None = None) -> tuple[NsRef, ...]:
        """Namespaces configs now resolve to (a started container, a new named namespace)
        that no observe has covered: they may hold owned links. With them, the namespaces
        of links this controller created since the last observe: those have no inode yet,
        so they could not be matched with another reference's report of them. With
        `names`, of those configs only."""
        new = {ref for ref in self._observe_refs(names) if ref not in self._state.observed_refs}
        if not new:
            return ()
        if self._links is not None and self._links.observed is self._state.observed:
            unmatched = self._unmatched
        else:
            unmatched = _unmatched(self._state.observed)
        return tuple(sorted(new | unmatched))

    def _observe_unseen(self, refs: tuple[NsRef, ...]) -> None:
        """Observe `refs` in a batch of their own."""
        self._take_observed(refs, self._submit((), Observe(netns=refs)))

    def _take_observed(self, refs: tuple[NsRef, ...], reply: helper_pb2.BatchReply) -> None:
        """The links of `refs` (and of the helper's own namespace) are as `reply` says."""
        covered = {ref.identity() for ref in refs} | {NsRef.host().identity()}
        kept = tuple(k for k in self._state.observed if k.netns.identity() not in covered)
        fresh = (wire.observed_from_proto(link) for link in reply.observed)
        self._state.observed = self._one_per_link((*kept, *fresh))
        self._state.observed_refs = self._state.observed_refs | set(refs)

    def _scope(self) -> Scope | None:
        """The changes of a burst of config changes after a settled reconcile."""
        if self._touched is None:
            return None
        names, buckets = self._touched
        return Scope(frozenset(names), frozenset(buckets), self._state.index,
                     self._index_links())

    def _index_links(self) -> LinkIndex:
        """Made at the end of a settled reconcile, before the next change arrives."""
        if self._links is None or self._links.observed is not self._state.observed:
            self._links = LinkIndex(self._state.observed)
            self._unmatched = _unmatched(self._state.observed)
        return self._links

    def _plan(self, scope: Scope | None = None) -> Plan:
        failures = self._state.failures
        if self._namespaces.refused:
            failures = {**self._namespace_refusals(), **failures}
        state = self._state
        block = state.block
        blocked = published_block(block, time.monotonic()) if state.seen_kernel else ""
        unknown = state.refused
        if block is not None and not state.seen_kernel:
            unknown = unknown or f"{block.reason}; the kernel's state is not known yet"
        if unknown and not blocked:
            failures = {**dict.fromkeys(state.desired, unknown), **failures}
        return plan(state.desired, self.resolve, state.observed, failures, blocked, scope)

    def _block(self, reason: str, grace_s: float) -> None:
        """Changes are blocked. A block that goes on keeps its start, and once published
        stays published (a refusing helper that then stops is no reason to fall silent)."""
        block = self._state.block
        if block is None:
            self._state.block = Block(reason, time.monotonic(), grace_s)
        else:
            self._state.block = Block(reason, block.since, min(block.grace_s, grace_s))

    def _outstanding(self, result: Plan) -> Mapping[str, Status]:
        """An interface with operations still to apply is not CONFIGURED yet."""
        if not result.ops:
            return result.statuses
        waiting = self._names_of(result.ops)
        statuses = dict(result.statuses)
        for name in waiting & set(statuses):
            status = statuses[name]
            if status.state == State.CONFIGURED:
                reason = "not applied yet; retrying"
                statuses[name] = Status(State.PENDING, reason, status.warnings)
        return statuses

    def _with_live(
        self, statuses: Mapping[str, Status]
    ) -> tuple[Mapping[str, Status], set[str]]:
        """Kernel facts of each end, and the config revision it reflects (the plan is of
        that config); a status the agent's own change has not settled yet is held back
        for up to `settle_s` (see `live_status`)."""
        configs = {cfg.name: cfg for cfg in self._configs()}
        where: dict[str, tuple[str, NsRef]] = {}
        expect_up: dict[str, bool] = {}
        for name, cfg in configs.items():
            ref = self.resolve(cfg.namespace).ref
            if ref is not None:
                where[name] = (cfg.host_if_name, ref)
            peer = configs.get(cfg.peer)
            expect_up[name] = cfg.enabled and peer is not None and peer.enabled
        counters = self._counters if self._stats_interval > 0 else None
        found = live_status.with_live(statuses, where, self._state.observed, counters,
                                      self._state.revisions, self._statuses_made)
        self._statuses_made = found
        result, held, self._settle_at = self._debounce.settle(found, expect_up,
                                                              time.monotonic())
        return result, held

    def _forget_settled_failures(self) -> None:
        """After a successful apply only set-aside interfaces still have a failure."""
        state = self._state
        state.failures = {n: r for n, r in state.failures.items() if n in state.aside_names}

    def _observe(self) -> None:
        refs = self._observe_refs()
        try:
            reply = self._submit((), Observe(netns=refs, scan_named=True))
        except BatchFailed as err:
            if err.reply.error_kind not in _PER_NAMESPACE or not refs:
                raise
            refused = self._refused_refs(refs)
            if not refused:
                raise
            self._refuse_namespaces(refused)
            refs = self._observe_refs()
            reply = self._submit((), Observe(netns=refs, scan_named=True))
        links = [wire.observed_from_proto(link) for link in reply.observed]
        self._observed_at = (reply.helper_instance, reply.generation)
        self._changed_since_observe = False
        self._state.observed = self._one_per_link(links)
        self._state.observed_refs = frozenset(refs)
        self._state.observed_early = not self._state.have_config
        self._state.observed_twice = len(self._state.observed) != len(links)
        self._state.seen_kernel = True
        self._take_counters()

    def _record_converged(self, held: Collection[str]) -> None:
        """Nothing to apply, every status published: what a restart may find again
        (`controller.resume`). Only for the default and named namespaces: where the others
        are depends on processes, files and Docker, not on the inputs recorded."""
        state = self._state
        if (self._resume is None or self._observed_at is None or held or state.failures
                or state.block is not None or state.aside_ops or state.refused
                or self._namespaces.refused or self._need_observe
                or self._observed_at[0] != self._synced_instance
                or any(cfg.namespace.kind not in ("default", "named")
                       for cfg in self._configs())):
            return
        written = getattr(self._statuses, "written", None)
        if written is None:
            return
        self._converged = True
        self._resume.converged(
            self._observed_at[0], self._observed_at[1],
            [wire.ns_to_proto(ref) for ref in (NsRef.host(), *state.observed_refs)],
            state.digests, state.revisions, written(), held)

    def _record_at_stop(self) -> None:
        """A converged controller stopped after its own batches or link events
        observes once more and records that (`_record_converged`): a restart right after is
        then ready at once. A stop costs one observe more; a crash keeps the last record."""
        if self._converged and self._changed_since_observe:
            self._need_observe = True
            self._reconcile()

    def _take_counters(self) -> None:
        """Counters change all the time: they are taken at the statistics interval only, so
        other observes (and a restart) do not rewrite every status."""
        if self._stats_interval <= 0 or not self._counters_due:
            return
        self._counters = {link_id(link.name, link.netns): link.statistics
                          for link in self._state.observed if link.statistics}
        self._counters_due = False

    def _one_per_link(self, links: Iterable[ObservedLink]) -> tuple[ObservedLink, ...]:
        wanted = {link_id(cfg.host_if_name, ref) for cfg in self._configs()
                  if (ref := self.resolve(cfg.namespace).ref) is not None}
        return observed_model.one_per_link(links, wanted)

    def _refused_refs(self, refs: tuple[NsRef, ...]) -> dict[NsRef, str]:
        """Bisect an observe the helper refused down to the namespaces it refuses."""
        try:
            self._submit((), Observe(netns=refs))
            return {}
        except BatchFailed as err:
            if err.reply.error_kind not in _PER_NAMESPACE:
                raise
            if len(refs) == 1:
                kind = helper_pb2.ErrorKind.Name(err.reply.error_kind)
                return {refs[0]: f"helper refused {refs[0].describe()}: {kind}: {err.reply.error}"}
            half = len(refs) // 2
            return {**self._refused_refs(refs[:half]), **self._refused_refs(refs[half:])}

    def _refuse_namespaces(self, refused: Mapping[NsRef, str]) -> None:
        """Interfaces in a refused namespace get ERROR (see `_plan`); the others carry on."""
        self._forget_resolved()
        for ref, why in refused.items():
            self._namespaces.refuse(ref, why)

    def _namespace_refusals(self) -> dict[str, str]:
        refused = self._namespaces.refused
        found = {cfg.name: self._namespaces.locate(cfg.namespace).ref for cfg in self._configs()}
        return {name: refused[ref.identity()] for name, ref in found.items()
                if ref is not None and ref.identity() in refused}

    def _safe_observe(self) -> None:
        try:
            self._observe()
        except (HelperUnavailable, BatchFailed) as err:
            log.warning("observe after a failed batch: %s", err)
            self._need_observe = True

    def _observe_refs(self, names: Collection[str] | None = None) -> tuple[NsRef, ...]:
        configs = self._configs() if names is None else [
            cfg for name in names if isinstance(cfg := self._state.desired.get(name),
                                                InterfaceConfig)]
        refs = {self.resolve(cfg.namespace).ref for cfg in configs}
        return tuple(sorted(ref for ref in refs if ref is not None and ref.kind != "host"))

    def _apply_isolating(self) -> bool:
        """Apply the plan; an op the helper refuses is set aside with its interfaces.

        Batches are all-or-nothing, so one refused op (say, a name taken by a foreign
        link) would otherwise hold back every other interface's ops in the same batch on
        every retry. The rest is planned again and sent at once. Set-aside ops wait for the
        retry timer (or a change of their interface's config). True if one was set aside now.

        A namespace not observed yet is observed in the same batch, after its operations
        (one helper round trip per change). That is safe when the plan has no deletions:
        what the namespace holds can then only make a create fail, and a failed batch
        changes nothing. Such a failure is not held against the op: the namespaces are
        observed on their own and the plan made again, as if observed first. A plan with
        deletions (a pair that looks half-made may have its other end there) waits for
        the observe.
        """
        state = self._state
        limit: int | None = None
        newly = False
        scope = self._scope()
        while True:
            made = self._plan(scope)
            ops = tuple(op for op in made.ops if not self._set_aside(op))
            unseen = self._unseen_refs(None if scope is None else made.statuses)
            if unseen and (not ops or any(isinstance(op, DeleteLink) for op in ops)):
                self._observe_unseen(unseen)
                scope = None
                continue
            if not ops:
                if scope is not None:  # the full plan: for the statuses (`_reconcile`)
                    scope = None
                    continue
                self._last_plan = made
                return newly
            limit = len(ops) if limit is None else limit
            try:
                self._apply(ops, unseen)
                if scope is None:
                    return newly
                # A full plan after the scoped batch, as after every batch: it gives the
                # statuses, and applies what the scope could not see (a process whose
                # namespace appeared since the last full plan, no event telling).
                scope = None
                continue
            except BatchFailed as err:
                scope = None
                if unseen:
                    log.info("batch with namespaces not observed before refused (%s); "
                             "observing them, then planning again", err)
                    self._observe_unseen(unseen)
                    continue
                failed = err.failed_op
                if failed is None or self._set_aside(failed) or limit <= 0:
                    raise
                limit -= 1
                newly = True
                log.log(_level_of(err), "helper refused %s: %s; applying the rest without it",
                        wire.describe_op(failed), err,
                        extra={"interface": ",".join(sorted(err.failed)) or None,
                               "outcome": "set aside"})
                self._mark_gone(err)
                for op, failures in self._refused_alike(err, failed, ops).items():
                    state.failures.update(failures)
                    state.aside_ops.add(op)
                    state.aside_names.update(failures)
                self._observe()

    def _refused_alike(self, err: BatchFailed, failed: Op,
                       ops: tuple[Op, ...]) -> dict[Op, dict[str, str]]:
        """The ops a refusal applies to, each with its interfaces' reasons: the failed op,
        or for the helper's limit on owned links every create (each would be refused the
        same way, at the cost of one batch and one full observe per pair)."""
        if err.reply.error_kind != helper_pb2.OWNED_LINK_LIMIT or not isinstance(
                failed, CreateVethPair):
            return {failed: err.failed}
        kind = helper_pb2.ErrorKind.Name(err.reply.error_kind)
        return {op: dict.fromkeys(self._names_of((op,)), f"helper refused "
                                  f"{wire.describe_op(op)}: {kind}: {err.reply.error}")
                for op in ops if isinstance(op, CreateVethPair)}

    def _set_aside(self, op: Op) -> bool:
        state = self._state
        if op in state.aside_ops:
            return True
        return bool(state.aside_names) and bool(self._names_of((op,)) & state.aside_names)

    def _apply(self, ops: tuple[Op, ...], unseen: tuple[NsRef, ...] = ()) -> None:
        """Submit in order, at most MAX_OPS_PER_BATCH ops per batch (the helper refuses more);
        the last batch also observes `unseen`, after its operations."""
        applied = 0  # ops[:applied] made by the helper, not yet in `observed`: one pass for all
        try:
            for start in range(0, len(ops), MAX_OPS_PER_BATCH):
                chunk = ops[start:start + MAX_OPS_PER_BATCH]
                last = start + MAX_OPS_PER_BATCH >= len(ops)
                observe = Observe(netns=unseen) if unseen and last else None
                # The link monitor may hear nothing of it, yet read its sequels (IPv6 DAD,
                # oper state) where it watches only from this batch on: no event tells.
                self._changed_since_observe = True
                reply = self._submit(chunk, observe)
                self._applied_at = time.monotonic()
                applied = start + len(chunk)
                if observe is not None:
                    self._state.observed = observed_model.apply(self._state.observed,
                                                                ops[:applied])
                    applied = 0
                    self._take_observed(unseen, reply)
                for name in self._names_of(chunk):
                    self._state.failures.pop(name, None)
                creates = [op for op in chunk if isinstance(op, CreateVethPair)]
                self._debounce.touched(self._names_of(creates), time.monotonic())
                if any(not (op.a.up and op.b.up) for op in creates):
                    # The kernel announces nothing of a link made down (its stamp
                    # included): its live state, for its status, comes from an observe.
                    self._need_observe = True
                    self.post(LiveTick())
        finally:
            if applied:
                self._state.observed = observed_model.apply(self._state.observed, ops[:applied])

    def _submit(self, ops: Iterable[Op], observe: Observe | None) -> helper_pb2.BatchReply:
        ops = tuple(ops)
        signed = self._signer.sign(ops, observe, self._label)
        seq = self._signer.last_sequence
        reply = self._helper.submit(signed)
        self._dropped.clear()
        self.batches += 1
        self._own_changes.replied(reply)
        outcome = "ok" if reply.ok else "refused"
        log.info("batch %d: %d ops%s: %s", seq, len(ops), " + observe" if observe else "",
                 outcome, extra={"seq": seq, "interface": ",".join(sorted(self._names_of(ops)))
                                 or None, "outcome": outcome})
        if reply.helper_instance and reply.helper_instance != self._synced_instance:
            self._need_observe = True
        if not reply.ok:
            kind = helper_pb2.ErrorKind.Name(reply.error_kind)
            if not ops:
                self._state.refused = f"helper refused to report links: {kind}: {reply.error}"
            if reply.error_kind in _EVERY_BATCH:
                self._block(f"netlinkd refuses every change: {kind}: {reply.error}", 0.0)
                raise BatchFailed(ops, reply, {})
            raise BatchFailed(ops, reply, self._failures_of(ops, reply))
        self._state.refused = ""
        self._state.block = None
        return reply

    def _failures_of(self, ops: tuple[Op, ...], reply: helper_pb2.BatchReply) -> dict[str, str]:
        kind = helper_pb2.ErrorKind.Name(reply.error_kind)
        if 0 <= reply.failed_index < len(ops):
            op = ops[reply.failed_index]
            reason = f"helper refused {wire.describe_op(op)}: {kind}: {reply.error}"
            return dict.fromkeys(self._names_of((op,)), reason)
        reason = f"helper refused the batch: {kind}: {reply.error}"
        return dict.fromkeys(self._names_of(ops), reason)

    def _mark_gone(self, err: BatchFailed) -> None:
        """NAMESPACE_GONE: treat the op's namespaces as unavailable until the next tick."""
        index = err.reply.failed_index
        if err.reply.error_kind == helper_pb2.NAMESPACE_GONE and 0 <= index < len(err.ops):
            for ref in _op_refs(err.ops[index]):
                self._namespaces.mark_gone(ref)
            self._forget_resolved()

    def _names_of(self, ops: Iterable[Op]) -> set[str]:
        """The configs whose kernel link (name and namespace) the operations touch."""
        if self._names is None:
            self._names = _NameIndex(self._configs(), self.resolve)
        return self._names.of(ops)

    def _schedule_retry(self) -> None:
        block = self._state.block
        ceiling = _BLOCKED_RETRY_MAX if block is not None else _RETRY_MAX
        self._retry_delay = min(self._retry_delay, ceiling)
        self._retry_at = time.monotonic() + self._retry_delay
        if block is not None and time.monotonic() < block.since + block.grace_s:
            self._retry_at = min(self._retry_at, block.since + block.grace_s)  # then say so
        log.info("retrying in %.0fs", self._retry_delay)
        self._retry_delay = min(self._retry_delay * 2, ceiling)

    def _configs(self) -> list[InterfaceConfig]:
        return [c for c in self._state.desired.values() if isinstance(c, InterfaceConfig)]

    def resolve(self, ns: NamespaceConfig) -> Availability:
        found = self._resolved.get(ns)
        if found is None:
            found = self._resolved[ns] = self._namespaces.resolve(ns)
        return found

    def _forget_resolved(self) -> None:
        if self._names is not None or self._resolved:
            self._dropped.append((self._names, self._resolved))
        self._names = None
        self._resolved = {}


class _NameIndex:
    """Kernel link (name, namespace) -> the config names that want it."""

    def __init__(self, configs: Iterable[InterfaceConfig],
                 resolve: Callable[[NamespaceConfig], Availability]) -> None:
        # a tuple per link, not a set (216 bytes even for one name: 2.3 MiB for 10,000)
        self._by_link: dict[LinkId, tuple[str, ...]] = {}
        for cfg in configs:
            ref = resolve(cfg.namespace).ref
            if ref is not None:
                key = link_id(cfg.host_if_name, ref)
                self._by_link[key] = (*self._by_link.get(key, ()), cfg.name)

    def of(self, ops: Iterable[Op]) -> set[str]:
        names: set[str] = set()
        for op in ops:
            for ref, link in zip(_op_refs(op), wire.op_links(op), strict=True):
                names.update(self._by_link.get(link_id(link, ref), ()))
        return names


def _unmatched(observed: Iterable[ObservedLink]) -> frozenset[NsRef]:
    """The namespaces of links known without an inode (created, not observed since)."""
    return frozenset(k.netns for k in observed if not k.netns_inode and k.netns.kind != "host")


def _level_of(err: BatchFailed) -> int:
    """A namespace that went away (a stopped container) is expected: its interfaces wait,
    PENDING. Only other refusals are warnings."""
    return logging.INFO if err.reply.error_kind == helper_pb2.NAMESPACE_GONE else logging.WARNING


def _op_refs(op: Op) -> tuple[NsRef, ...]:
    if isinstance(op, CreateVethPair):
        return (op.a.netns, op.b.netns)
    return (op.netns,)
