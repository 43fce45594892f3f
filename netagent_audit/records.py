"""The audit record format, defined once.

One canonical JSON object per line. Every record carries `kind`, `n` (its number since the
first record of the log, continuing across rotations), `ts` (RFC 3339 UTC, milliseconds),
`prev` (the `hash` of the record before it) and `hash` (SHA-256 hex over the canonical JSON of
the record without `hash`). Kinds: `intent` (the exact signed batch, before the kernel is
touched), `result`, `refused`, `rotated` (first record of a new file).

An intent's `epoch`, `seq`, `owner`, `ops` and `interfaces` are derived from its signed bytes
(`intent_record`); a reader checks them with `check_intent_fields`, never trusts them.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from netagent_api import helper_pb2

GENESIS_HASH = "0" * 64
RESERVED_FIELDS = ("n", "ts", "prev", "hash")
HEAD_FILE = "audit-head.json"  # in the helper's state directory
HEAD_SLOT = 4096  # from one head slot to the next: each in a page of its own
KINDS = ("intent", "result", "refused", "rotated")


def canonical_json(record: dict[str, object]) -> bytes:
    """The exact bytes that are hashed and stored: sorted keys, no spaces, ASCII only."""
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def record_hash(record: dict[str, object]) -> str:
    body = {key: value for key, value in record.items() if key != "hash"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def rfc3339_ms(moment: datetime) -> str:
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_rfc3339(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def rotated_path(path: str, number: int) -> str:
    return f"{path}.{number}"


def _op_summary(op: helper_pb2.Operation) -> tuple[str, list[str]]:
    kind = op.WhichOneof("op") or "none"
    if kind == "create_veth_pair":
        a, b = op.create_veth_pair.a, op.create_veth_pair.b
        return f"create_veth_pair {a.name}<->{b.name}", [a.name, b.name]
    if kind == "none":
        return kind, []
    target = getattr(op, kind)
    extra = f" {target.address}" if kind in ("add_address", "del_address") else ""
    return f"{kind} {target.name}{extra}", [target.name]


def summarize(batch: helper_pb2.Batch) -> tuple[list[str], list[str]]:
    """Short human summaries of the operations, and the interface names they touch."""
    summaries: list[str] = []
    names: list[str] = []
    for op in batch.operations:
        text, touched = _op_summary(op)
        summaries.append(text)
        names.extend(n for n in touched if n not in names)
    return summaries, names


def derived_intent_fields(batch: helper_pb2.Batch) -> dict[str, object]:
    """Everything an intent states about its batch, computed from the signed batch."""
    summaries, names = summarize(batch)
    return {
        "epoch": batch.epoch.hex(),
        "seq": batch.sequence,
        "owner": batch.owner,
        "signed_ms": batch.unix_time_ms,
        "ops": summaries,
        "interfaces": names,
    }


def intent_record(
    key_id: str, signed_batch: bytes, signature: bytes, batch: helper_pb2.Batch
) -> dict[str, object]:
    return {
        "kind": "intent",
        "key_id": key_id,
        "batch": base64.b64encode(signed_batch).decode(),
        "signature": base64.b64encode(signature).decode(),
        **derived_intent_fields(batch),
    }


def result_record(
    batch: helper_pb2.Batch, verdict: str, error_kind: str, error: str, failed_index: int,
    results: list[str],
) -> dict[str, object]:
    return {
        "kind": "result",
        "epoch": batch.epoch.hex(),
        "seq": batch.sequence,
        "verdict": verdict,
        "error_kind": error_kind,
        "error": error,
        "failed_index": failed_index,
        "results": results,
    }


def interrupted_record(
    intent: dict[str, object], batch: helper_pb2.Batch, steps: list[str]
) -> dict[str, object]:
    """The result of a batch the helper did not live to finish, written at its next start.
    It carries the signed intent (key id, signed bytes, signature) of `intent`, the record
    the batch was verified from, so a clean-up cut short is found again from signed bytes."""
    record = result_record(
        batch, "interrupted", "",
        "the helper stopped before this batch finished; cleaned up at the next start", -1,
        [f"recovery: {step}" for step in steps],
    )
    record.update({name: intent.get(name) for name in ("key_id", "batch", "signature")})
    return record


def refused_record(error_kind: str, error: str, facts: dict[str, object]) -> dict[str, object]:
    return {"kind": "refused", "verdict": "refused", "error_kind": error_kind, "error": error,
            **facts}


def rotated_record(previous_file: str, previous_last_hash: str) -> dict[str, object]:
    return {
        "kind": "rotated",
        "previous_file": previous_file,
        "previous_last_hash": previous_last_hash,
    }


@dataclass(frozen=True)
class Head:
    """The last record written: its number and hash (kept in the state dir, logged).

    The head file has two slots, `HEAD_SLOT` bytes apart, written in turn in place; each is
    one line with a `check` (a hash of the head), so a write torn by a crash leaves the
    other slot, and a reader takes the newest valid one. A file of one line without
    `check` is an older helper's head, which was renamed into place whole."""

    n: int
    hash: str

    def encode(self, *, check: bool = True) -> bytes:
        body: dict[str, object] = {"hash": self.hash, "n": self.n}
        if check:
            body["check"] = hashlib.sha256(canonical_json(body)).hexdigest()[:16]
        return canonical_json(body) + b"\n"

    @staticmethod
    def slots(data: bytes) -> list[Head | None]:
        """The valid head in each slot of a head file, or None (never written, or torn)."""
        found: list[Head | None] = []
        for start in (0, HEAD_SLOT):
            line = data[start:start + HEAD_SLOT].partition(b"\n")[0] + b"\n"
            try:
                value = json.loads(line)
                head = Head(value["n"], value["hash"])
                valid = (type(head.n) is int and head.n >= 0 and isinstance(head.hash, str)
                         and len(head.hash) == 64 and head.encode(check="check" in value) == line)
            except (ValueError, TypeError, KeyError, AttributeError):
                valid = False
            found.append(head if valid else None)
        return found

    @staticmethod
    def decode(data: bytes, where: str) -> Head:
        heads = [head for head in Head.slots(data) if head is not None]
        if not heads:
            raise ValueError(f"{where}: not an audit head (no slot holds a valid one)")
        return max(heads, key=lambda head: head.n)

    @staticmethod
    def parse(text: str) -> Head:
        """`N:HASH`, as the helper logs it ("audit head n=N hash=HASH" gives N and HASH)."""
        n, _, digest = text.partition(":")
        if not n.isdigit() or len(digest) != 64:
            raise ValueError(f"expected N:HASH (64 hex digits), got {text!r}")
        return Head(int(n), digest.lower())
