"""READY=1 at once for a controller restarted on what it left converged (docs/PERFORMANCE.md,
item 10).

When a reconcile against a full observe finds nothing to apply and every status is
published (nothing failed, held, blocked or set aside), the controller records in its
state directory what that outcome was computed from: the helper instance, the link-event
generation the observe came after, the namespaces it covered, and digests of etcd's
config keys (names, mod_revisions, values) and of the status keys it published.

A restarted controller tells READY=1 as soon as the same helper instance says that every
one of those namespaces has been watched since before that generation and nothing at all
was read from it after (`QuietNamespace`, the first message of `WatchLinks`), and etcd's
config and status keys digest the same: the plan, a pure function of those inputs, would
find nothing to do again, and the statuses would be written as they are.

The file decides only when READY=1 is told, never what is looked at: the full observe,
plan and status comparison run after it as at any start, and act on anything the check
cannot see (a link changed in a namespace the helper did not watch). A damaged file
(its check fails) or one that does not match is ignored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import asdict, dataclass

from netagent_api import helper_pb2
from netagent_log import sd_notify

log = logging.getLogger(__name__)

FILE_NAME = "converged.json"
_VERSION = 2


@dataclass(frozen=True)
class Converged:
    label: str
    helper_instance: str  # hex
    generation: int
    namespaces: tuple[str, ...]  # hex of each NamespaceRef, serialized deterministically
    config: str  # config_digest
    statuses: str  # status_digest


def value_digest(raw: bytes) -> bytes:
    """What the agent keeps of each config value for the record: 32 bytes, not the value
    (10,000 configs' values were some 3 MiB of the controller's memory)."""
    return hashlib.sha256(raw).digest()


def config_digest(values: Mapping[str, bytes], revisions: Mapping[str, int]) -> str:
    return digests_digest({name: value_digest(raw) for name, raw in values.items()}, revisions)


def digests_digest(digests: Mapping[str, bytes], revisions: Mapping[str, int]) -> str:
    """`config_digest` of the values whose `value_digest`s are given."""
    found = hashlib.sha256()
    for name in sorted(digests):
        found.update(b"%d:%s%d:" % (len(name), name.encode(), revisions.get(name, 0)))
        found.update(digests[name])
    return found.hexdigest()


def status_digest(written: Mapping[str, bytes]) -> str:
    return config_digest(written, {})


def namespace_key(ref: helper_pb2.NamespaceRef) -> str:
    return ref.SerializeToString(deterministic=True).hex()


def not_quiet(left: Converged, first: helper_pb2.LinkEvent) -> str:
    """Why the helper's first `WatchLinks` message does not vouch for `left`; "" if it does."""
    if first.helper_instance.hex() != left.helper_instance:
        return "another helper instance"
    if left.generation > first.generation:
        return "a generation the helper has not reached"
    quiet = {namespace_key(q.netns): q for q in first.quiet}
    for key in left.namespaces:
        found = quiet.get(key)
        if found is None:
            return "a namespace the helper does not watch"
        if found.watched_since > left.generation or found.last_message > left.generation:
            return "a namespace changed or watched anew since"
    return ""


def save(path: str, converged: Converged) -> None:
    """Replace the file atomically; no fsync: a file lost or torn by a crash is ignored."""
    body = {"version": _VERSION, **asdict(converged)}
    text = json.dumps({**body, "check": _check(body)}, sort_keys=True)
    temporary = f"{path}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(temporary, path)


def load(path: str) -> Converged | None:
    """The recorded state, or None (no file, damaged, or of another version)."""
    try:
        with open(path) as found:
            body = json.load(found)
        check = body.pop("check")
        if check != _check(body) or body.pop("version") != _VERSION:
            raise ValueError("check failed")
        body["namespaces"] = tuple(body["namespaces"])
        converged = Converged(**body)
        if not all(isinstance(getattr(converged, f), t) for f, t in (
                ("label", str), ("helper_instance", str), ("generation", int),
                ("config", str), ("statuses", str))):
            raise ValueError("bad field types")
        return converged
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        log.warning("ignoring %s: %s", path, err)
        return None


def _check(body: Mapping[str, object]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class Resume:
    """Tells READY=1 once: early when the recorded state is vouched for (`helper_said`,
    `config_listed`), else when the agent's first listing is applied (`ready`).

    `statuses` lists the status keys (a dict name -> value) for the early check. With a
    record, `start` calls it at once on a thread of its own, so the listing overlaps the
    wait for etcd's config listing instead of following it (2,000 statuses: 20 to 40 ms
    of a restart's READY=1); if that failed, the etcd watcher's thread lists them again
    after the config listing. Thread-safe."""

    def __init__(self, state_dir: str | None, label: str,
                 statuses: Callable[[], Mapping[str, bytes]]) -> None:
        self._path = os.path.join(state_dir, FILE_NAME) if state_dir else None
        self._label = label
        self._statuses = statuses
        self._lock = threading.Lock()
        self._told = False
        self._left = load(self._path) if self._path else None
        if self._left is not None and self._left.label != label:
            self._left = None
        self._helper: str | None = None  # why not quiet, once the helper said
        self._config: bool | None = None  # the listing digests as left
        self._saved = self._left
        self._decided = threading.Event()
        if self._left is None:
            self._decided.set()
        self._listing: threading.Thread | None = None
        self._deadline: float | None = None  # of `wait_decided`
        self._listed: Mapping[str, bytes] | None = None

    def start(self) -> None:
        """With a record, list the status keys now (see the class)."""
        if self._left is not None and self._listing is None:
            self._listing = threading.Thread(target=self._list_statuses,
                                             name="status-listing", daemon=True)
            self._listing.start()

    def _list_statuses(self) -> None:
        try:
            self._listed = self._statuses()
        except Exception as err:  # listed again after the config listing
            log.debug("status keys not listed early: %s", err)

    def helper_said(self, first: helper_pb2.LinkEvent) -> None:
        """The first message of the first `WatchLinks` stream."""
        with self._lock:
            if self._helper is None and self._left is not None:
                self._helper = not_quiet(self._left, first)
                self._decide()

    def config_listed(self, values: Mapping[str, bytes], revisions: Mapping[str, int]) -> None:
        """etcd's first listing of the config keys, before it is parsed."""
        left = self._left
        if left is None or self._config is not None:
            return
        same = config_digest(values, revisions) == left.config
        if same:
            if self._listing is not None:
                self._listing.join()
            try:
                listed = self._statuses() if self._listed is None else self._listed
                self._listed = None
                same = status_digest(listed) == left.statuses
            except Exception as err:  # the agent's first publish lists them again
                log.info("status keys not listed for the early check: %s", err)
                same = False
        with self._lock:
            self._config = same
            self._decide()

    def _decide(self) -> None:
        if self._helper is None or self._config is None or self._told:
            return
        if self._helper or not self._config:
            log.info("not converged as left: %s; READY=1 after the first resync",
                     self._helper or "config or status keys changed")
            self._left = None
            self._decided.set()
            return
        log.info("converged as left at generation %d: READY=1 now; the full resync follows",
                 self._left.generation if self._left else 0)
        self._tell()

    def ready(self) -> None:
        """The agent applied its first listing."""
        with self._lock:
            self._tell()

    def wait_decided(self, timeout: float) -> bool:
        """Before the agent is made and before its first batch: wait until a recorded state
        is vouched for, and READY=1 told, or found changed; at once without a record. So an
        early READY=1 always comes before the resync's first batch. All calls together
        wait at most `timeout` (of the first call) in all."""
        with self._lock:
            if self._deadline is None:
                self._deadline = time.monotonic() + timeout
            left = self._deadline - time.monotonic()
        return self._decided.wait(max(0.0, left))

    def _tell(self) -> None:
        if not self._told:
            sd_notify.ready()
            self._told = True
            self._decided.set()

    def converged(self, instance: bytes, generation: int,
                  namespaces: Iterable[helper_pb2.NamespaceRef],
                  digests: Mapping[str, bytes], revisions: Mapping[str, int],
                  written: Mapping[str, bytes], held: Collection[str] = ()) -> None:
        """Record the agent's converged state (on its thread), if it differs from the last.
        `digests`: each config value's `value_digest`."""
        if self._path is None or held:
            return
        now = Converged(self._label, instance.hex(), generation,
                        tuple(sorted({namespace_key(ref) for ref in namespaces})),
                        digests_digest(digests, revisions), status_digest(written))
        if now == self._saved:
            return
        self._saved = now  # a failure is logged once per state, not at every reconcile
        try:
            save(self._path, now)
        except OSError as err:
            log.warning("cannot record the converged state in %s: %s", self._path, err)
