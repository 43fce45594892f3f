"""The helper's service: admission (verify, policy), audit, execution, reply; start-up.

Batches run one at a time on the executor's single netlink thread, from admission to reply.
The socket side (asyncio gRPC, limits on what an unsigned client can hold) is `front.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import hashlib
import importlib
import json
import logging
import os
import pwd
import socket
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from netagent_api import helper_pb2
from netagent_audit import chain, records
from netlinkd import front, mountguard, privileges, recovery
from netlinkd import policy as policy_rules
from netlinkd.audit import AuditLog
from netlinkd.errors import AuditUnavailable, HelperError, KernelError, StartupError
from netlinkd.executor import Executor, Outcome
from netlinkd.link_monitor import LinkMonitor
from netlinkd.replay import ReplayGuard
from netlinkd.trust import TrustStore, check_not_writable_by_others, is_key_id
from netlinkd.verify import MAX_REQUEST_BYTES, Verified, Verifier

log = logging.getLogger(__name__)
GRPC_MAX_MESSAGE = 2 * MAX_REQUEST_BYTES
GRPC_LAZY_MODULES = ("grpc.aio._server", "grpc._utilities", "asyncio.unix_events")
# A refusal's error text may quote unverified input. In the audit record and in the reply
# it is cut to this many bytes once JSON-escaped, so a whole refused record stays under
# 2,048 bytes (tests/netlinkd/test_audit_bounds.py).
MAX_ERROR_JSON_BYTES = 1024
SHUTDOWN_BATCH_WAIT_S = 30.0  # after the gRPC grace period, for a batch still running
LISTEN_BACKLOG = 512
INNER_SOCKET = "grpc.sock"


@dataclass(frozen=True)
class ServeOptions:
    socket: str
    trust_key: str
    audit_log: str
    state_dir: str
    policy: str | None
    socket_group: str | None
    log_level: str
    log_format: str = "text"
    controller_user: str | None = None


def resolve_group(group: str | None) -> int:
    gid = _id_of(group, lambda name: grp.getgrnam(name).gr_gid, "socket group", "group")
    return 0 if gid is None else gid


def resolve_user(user: str | None) -> int | None:
    return _id_of(user, lambda name: pwd.getpwnam(name).pw_uid, "controller user", "user")


def _id_of(value: str | None, lookup: Callable[[str], int], role: str, kind: str) -> int | None:
    """A numeric id as given, or the id a name has in the system's databases."""
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        return lookup(value)
    except KeyError as exc:
        raise StartupError(f"{role} {value!r} is not a known {kind}") from exc


def bounded_text(text: str, limit: int = MAX_ERROR_JSON_BYTES) -> str:
    """`text` cut to at most `limit` bytes once JSON-escaped; non-printables escaped."""
    if len(text) <= limit // 12 and text.isprintable():
        return text  # even 12-byte escapes (astral characters) fit
    budget = limit - 40  # room for the note on what was cut
    pieces: list[str] = []
    for index, char in enumerate(text):
        piece = char if char.isprintable() else ascii(char)[1:-1]
        cost = len(json.dumps(piece)) - 2
        if cost > budget:
            pieces.append(f" [{len(text) - index} characters cut]")
            break
        budget -= cost
        pieces.append(piece)
    return "".join(pieces)


def _claimed_key_id(key_id: str) -> dict[str, object]:
    """The claimed key id if it is well formed; else only its length and a digest prefix."""
    if not key_id or is_key_id(key_id):
        return {"key_id": key_id}
    digest = hashlib.sha256(key_id.encode("utf-8", "surrogatepass")).hexdigest()
    return {"key_id": "", "key_id_chars": len(key_id), "key_id_sha256": digest[:16]}


def claimed_facts(raw: bytes) -> dict[str, object]:
    """What the record of a request refused before its signature verified keeps.

    Only the outer envelope is parsed (the signature check needs it); the signed batch
    inside is never parsed before it verifies. Every value is bounded: digests, lengths,
    and the key id only when it has the shape of a real one.
    """
    facts: dict[str, object] = {"key_id": "", "request_bytes": len(raw), "epoch": "", "seq": 0}
    try:
        signed = helper_pb2.SignedBatch.FromString(raw[:MAX_REQUEST_BYTES])
    except Exception:
        facts["batch_sha256"] = hashlib.sha256(raw).hexdigest()
        return facts
    facts.update(_claimed_key_id(signed.key_id))
    facts["batch_sha256"] = hashlib.sha256(signed.batch).hexdigest()
    return facts


def verified_facts(verified: Verified) -> dict[str, object]:
    """The identity of a batch refused after its signature verified (stale, replay, policy)."""
    return {
        "key_id": verified.signed.key_id,
        "request_bytes": verified.signed.ByteSize(),
        "batch_sha256": hashlib.sha256(verified.signed.batch).hexdigest(),
        "epoch": verified.batch.epoch.hex(),
        "seq": verified.batch.sequence,
    }


def error_reply(
    error: HelperError, instance: bytes, index: int = -1, text: str | None = None
) -> helper_pb2.BatchReply:
    return helper_pb2.BatchReply(
        ok=False,
        failed_index=index,
        error_kind=error.kind,  # type: ignore[arg-type]
        error=str(error) if text is None else text,
        helper_instance=instance,
    )


@dataclass
class Service:
    verifier: Verifier
    policy: policy_rules.Policy
    executor: Executor
    audit: AuditLog
    instance: bytes
    version: str
    monitor: LinkMonitor | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight: helper_pb2.Batch | None = None
        self._since = 0  # the link-event generation just before the running batch acted
        self._stopping = False  # set by close(); read under _lock before each batch

    def hello(self, request: helper_pb2.HelloRequest, context: Any) -> helper_pb2.HelloReply:
        return helper_pb2.HelloReply(helper_instance=self.instance, version=self.version)

    def screen(self, raw: bytes) -> Verified | tuple[dict[str, object], HelperError]:
        """The signature check, cheap and without audit: the request signed by a trusted key,
        or what its refusal record needs. Only signed requests reach the batch queue."""
        try:
            return self.verifier.authenticate(raw)
        except HelperError as exc:
            return claimed_facts(raw), exc

    def screen_facts(self, raw: bytes) -> dict[str, object]:
        return claimed_facts(raw)

    def refuse(self, facts: dict[str, object], error: HelperError) -> helper_pb2.BatchReply:
        """Audit a refusal screened out before the batch queue; the reply says why."""
        return error_reply(error, self.instance, error.index, self._refused(facts, error))

    def submit(self, verified: Verified, context: Any) -> helper_pb2.BatchReply:
        # Never waits for the lock: only close() holds it while this runs on the netlink
        # thread, and close() waits for that thread.
        if self._stopping or not self._lock.acquire(blocking=False):
            # the audit log is (being) closed: nothing is verified, logged or applied
            error = AuditUnavailable("the helper is stopping; nothing was applied, resend")
            return error_reply(error, self.instance)
        try:
            return self._submit(verified)
        except Exception as exc:
            log.exception("internal error while handling a batch")
            return self._internal_error(verified, exc)
        finally:
            self._lock.release()

    def _internal_error(self, verified: Verified, exc: Exception) -> helper_pb2.BatchReply:
        """Audit an unexpected exception: as the batch's result once its intent is logged."""
        error = KernelError(bounded_text(f"internal helper error: {type(exc).__name__}: {exc}"))
        batch, self._in_flight = self._in_flight, None
        if batch is None:
            self._refused(verified_facts(verified), error)
        else:
            self._write_result(batch, Outcome(False, -1, error, "failed"))
        return error_reply(error, self.instance)

    def _submit(self, verified: Verified) -> helper_pb2.BatchReply:
        try:
            self.verifier.admit(verified)
            policy_rules.check_batch(self.policy, verified.batch)
            outcome = self.executor.execute(verified.batch, lambda: self._intent(verified))
        except HelperError as exc:
            if self._in_flight is not None:
                raise
            self.verifier.replay.flush()  # a batch refused once admitted uses up its sequence
            return self.refuse(verified_facts(verified), exc)
        self._in_flight = None
        self._write_result(verified.batch, outcome)
        reply = self._reply(outcome)
        reply.generation = self._since
        if self.monitor is not None:  # which link events the controller may ignore
            reply.own_changes.extend(self.monitor.settle(verified.batch, self._since))
        return reply

    def _intent(self, verified: Verified) -> None:
        """The one fsync before acting: the intent carries key id, epoch and sequence (the
        replay marks are rebuilt from it at start), so the replay file follows later."""
        signed, batch = verified.signed, verified.batch
        self.audit.append(records.intent_record(
            signed.key_id, signed.batch, signed.signature, batch), head_now=False)
        self._in_flight = batch
        self._since = self.monitor.generation if self.monitor is not None else 0

    def _write_result(self, batch: helper_pb2.Batch, outcome: Outcome) -> None:
        error = outcome.error
        try:
            self.audit.append(records.result_record(
                batch, outcome.verdict, error.kind_name if error else "",
                str(error) if error else "", outcome.failed_index, outcome.results,
            ))
        except AuditUnavailable as exc:
            log.critical("audit result record lost for seq %d: %s", batch.sequence, exc)
        log.log(_result_level(error), "batch %d: %s", batch.sequence, outcome.verdict, extra={
            "seq": batch.sequence, "interface": ",".join(records.summarize(batch)[1]) or None,
            "outcome": outcome.verdict, "error_kind": error.kind_name if error else None})

    def _refused(self, facts: dict[str, object], error: HelperError) -> str:
        """Audit a refusal; return its bounded error text, for the reply."""
        text = bounded_text(str(error))
        log.log(_result_level(error), "refused batch: %s: %s", error.kind_name, text,
                extra={"outcome": "refused", "error_kind": error.kind_name})
        try:
            self.audit.append(records.refused_record(error.kind_name, text, facts))
        except AuditUnavailable as exc:
            log.error("audit refused record lost: %s", exc)
        return text

    def close(self, timeout_s: float) -> bool:
        """Take no more batches; wait up to `timeout_s` for a running one; close executor and log.

        A batch queued behind the running one is refused unlogged, never run. If the running
        batch does not finish in time nothing is closed under it (its result record can still
        be written before the process exits), and False is returned.
        """
        self._stopping = True
        if not self._lock.acquire(timeout=timeout_s):
            log.critical(
                "a batch is still running after %.0f s; stopping without closing the audit log",
                timeout_s,
            )
            return False
        try:
            self.executor.close()
            self.verifier.replay.flush()
            self.audit.close()
        finally:
            self._lock.release()
        return True

    def _reply(self, outcome: Outcome) -> helper_pb2.BatchReply:
        if outcome.error is None:
            reply = helper_pb2.BatchReply(ok=True, failed_index=-1, helper_instance=self.instance)
        else:
            reply = error_reply(outcome.error, self.instance, outcome.failed_index)
        reply.observed.extend(outcome.observed)
        return reply


def prepare_socket_path(path: str, gid: int) -> None:
    """Make the socket's own directory 0750 root:gid; remove a stale socket.

    Only a directory that holds nothing but the socket is changed, so a mistaken
    `--socket /run/x.sock` cannot lock down /run itself.
    """
    refuse_if_served(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        os.makedirs(os.path.dirname(directory), mode=0o755, exist_ok=True)
        os.mkdir(directory, 0o700)
    info = os.stat(directory)
    wanted = (os.getuid(), gid, 0o750)
    if (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) != wanted:
        others = sorted(set(os.listdir(directory)) - {os.path.basename(path)})
        if others:
            raise StartupError(
                f"the socket directory {directory} is not netlinkd's own (it holds "
                f"{', '.join(others[:3])}{', ...' if len(others) > 3 else ''}); put the socket "
                f"in a directory of its own, e.g. /run/netagent/netlinkd.sock"
            )
        os.chown(directory, os.getuid(), gid)
        os.chmod(directory, 0o750)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise StartupError(f"{path} exists and is not a socket; remove it or pick another path")
    refuse_if_served(path)
    os.unlink(path)


def refuse_if_served(path: str) -> None:
    """A live helper on `path` must not be touched: checked before anything else at start."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        if probe.connect_ex(path) == 0:
            raise StartupError(f"another process is serving on {path}; stop it first")


def join_socket_group(gid: int) -> None:
    """Make the socket group the helper's only supplementary group (if it is not already).

    Capabilities are dropped before gRPC starts its threads, so CAP_CHOWN is gone when the
    socket is bound; as its owner and a member of the group it may still give the socket
    that group (chown(2)). The systemd unit sets SupplementaryGroups= instead.
    """
    wanted = [gid] if gid else []
    current = os.getgroups()
    if sorted(set(current)) == wanted:
        return
    try:
        os.setgroups(wanted)
    except PermissionError as exc:
        if not gid or gid in current or gid == os.getegid():
            return  # it may give the socket the group already
        raise StartupError(
            f"cannot join the socket group {gid} ({exc.strerror}); start netlinkd with that "
            f"group as its only supplementary group (systemd: SupplementaryGroups=)"
        ) from exc


def bind_socket(server: grpc.aio.Server, path: str, gid: int, inner: str) -> socket.socket:
    """gRPC on `inner` (0600, in the root-only state dir); the public socket, returned for
    the front to accept on, with umask 0117 so it is never wider than 0660, then the group.

    Until the group is set the socket is root's alone: a client connecting that early is
    refused, which is the safe side.
    """
    old = os.umask(0o177)
    public = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(inner)
        if server.add_insecure_port(f"unix:{inner}") == 0:
            raise StartupError(f"cannot bind the helper's inner socket {inner}")
        os.umask(0o117)
        public.bind(path)
        public.listen(LISTEN_BACKLOG)
        os.chown(path, -1, gid)
    except OSError as exc:
        public.close()
        raise StartupError(f"cannot bind the helper socket {path} (group {gid}): {exc}") from exc
    finally:
        os.umask(old)
    return public


def _open_audit(path: str, state_dir: str) -> AuditLog:
    try:
        return AuditLog(path, head_path=os.path.join(state_dir, records.HEAD_FILE))
    except AuditUnavailable as exc:
        raise StartupError(f"cannot open audit log {path}: {exc}") from exc


def _prepare_state_dir(path: str) -> None:
    """The replay record lives here: whoever can write it could reset replay protection."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        check_not_writable_by_others(path)
    except OSError as exc:
        raise StartupError(f"cannot create state dir {path}: {exc.strerror}") from exc


def _replay_guard(
    options: ServeOptions, policy: policy_rules.Policy, trust: TrustStore
) -> ReplayGuard:
    """The replay marks: the larger of replay.json and the audit log's verified intents that
    are recent enough to pass the time window again."""
    now_s = int(time.time())
    since_ms = (now_s - 2 * policy.time_window_seconds) * 1000
    accepted = (
        (key_id, batch.epoch, batch.sequence)
        for key_id, batch in chain.signed_intents(options.audit_log, trust.get, since_ms)
    )
    return ReplayGuard(
        options.state_dir, policy.time_window_seconds, policy.max_epochs, accepted, now_s
    )


def _import_before_drop() -> None:
    """grpc imports these on first use; load them while the helper still has full rights."""
    for module in GRPC_LAZY_MODULES:
        importlib.import_module(module)


def _drop_privileges(policy: policy_rules.Policy) -> None:
    """Capabilities down to the policy's set, then the mount filter (both while one thread)."""
    keep = privileges.required_capabilities(policy.allow_pid_refs)
    try:
        privileges.drop_privileges(keep)
    except privileges.PrivilegeError as exc:
        raise StartupError(f"cannot drop privileges to {sorted(keep)}: {exc}") from exc
    mountguard.install()


@dataclass
class Helper:
    """A started helper: socket directory ready, privileges dropped; `front.serve` runs it."""

    service: Service
    trust: TrustStore
    socket_path: str
    gid: int
    inner_socket: str
    reserved_uids: frozenset[int] = frozenset({0})
    max_message: int = GRPC_MAX_MESSAGE

    def bind(self, server: grpc.aio.Server) -> socket.socket:
        return bind_socket(server, self.socket_path, self.gid, self.inner_socket)

    def reload_trust(self) -> None:
        try:
            count = self.trust.reload()
        except StartupError as exc:
            log.error("trust reload failed, trusting no key until fixed: %s", exc)
            return
        log.info("trust keys reloaded: %d key(s)", count)

    def stop_watching(self) -> None:
        """End the WatchLinks streams (before the server stops, so none holds it up)."""
        if self.service.monitor is not None:
            self.service.monitor.stop()

    def close(self) -> None:
        """After the server stopped: wait for a running batch, close executor and log."""
        self.service.close(SHUTDOWN_BATCH_WAIT_S)
        for path in (self.socket_path, self.inner_socket):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        log.info("netlinkd stopped")

    def run(self) -> None:
        asyncio.run(front.serve(self, grace_s=5))


def start_helper(options: ServeOptions, version: str) -> Helper:
    """Start-up order: no live helper on the socket, trust keys, policy, state, audit log,
    socket dir, privilege drop and mount filter, threads."""
    refuse_if_served(options.socket)
    trust = TrustStore(options.trust_key)
    policy = policy_rules.load_policy(options.policy)
    _prepare_state_dir(options.state_dir)
    audit_log = _open_audit(options.audit_log, options.state_dir)
    replay = _replay_guard(options, policy, trust)
    verifier = Verifier(trust, replay, policy.time_window_seconds)
    gid = resolve_group(options.socket_group)
    controller_uid = resolve_user(options.controller_user)
    try:
        prepare_socket_path(options.socket, gid)
    except OSError as exc:
        raise StartupError(f"cannot prepare socket {options.socket}: {exc}") from exc
    join_socket_group(gid)
    _import_before_drop()
    _drop_privileges(policy)  # before any thread: capabilities are per thread
    instance = os.urandom(16)
    executor = Executor(policy)
    recovery.at_start(options.audit_log, audit_log.append, executor, trust.get)
    monitor = LinkMonitor(policy, instance, on_gone=executor.sweep_soon)
    service = Service(verifier, policy, executor, audit_log, instance, version, monitor)
    monitor.start()
    inner = os.path.join(options.state_dir, INNER_SOCKET)
    reserved = frozenset({0} if controller_uid is None else {0, controller_uid})
    return Helper(service, trust, options.socket, gid, inner, reserved)


def _result_level(error: HelperError | None) -> int:
    """Applied, or a namespace that went away (a stopped container: its pair waits,
    PENDING) is news; any other failure is a warning."""
    return logging.INFO if error is None or error.kind_name == "NAMESPACE_GONE" else logging.WARNING
