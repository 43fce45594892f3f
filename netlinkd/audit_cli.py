"""`netlinkd audit verify` and `netlinkd audit show`: offline checks and a readable timeline.

verify: every line is canonical JSON, its `hash` matches, its `prev` is the previous `hash`
(across rotated files), each intent's batch verifies against the trust keys and matches its
epoch/seq/owner, and intent sequence numbers rise per key and epoch. Exit 0 = intact,
1 = tampered or damaged, 2 = cannot run (missing file, bad trust-key file).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from google.protobuf.message import DecodeError

from netagent_api import helper_pb2
from netlinkd.audit import GENESIS_HASH, canonical_json, record_hash, rotated_path
from netlinkd.errors import StartupError
from netlinkd.trust import TrustedKey, parse_trust_text

EXIT_OK = 0
EXIT_TAMPERED = 1
EXIT_UNUSABLE = 2
VERDICTS = ("pending", "applied", "failed", "rolled_back", "refused", "interrupted")


class BadRecord(Exception):
    """One record breaks the chain; the message says why."""


@dataclass(frozen=True)
class Failure:
    path: str
    index: int
    reason: str


@dataclass
class ChainState:
    trust: dict[str, TrustedKey]
    prev: str | None = None
    count: int = 0
    first_ts: str = ""
    last_ts: str = ""
    hashes: set[str] = field(default_factory=set)
    last_seq: dict[tuple[str, str], int] = field(default_factory=dict)


def rotated_numbers(path: str) -> list[int]:
    """Every N for which `<path>.N` exists (N >= 1, no leading zeros), ascending."""
    prefix = os.path.basename(path) + "."
    numbers: list[int] = []
    for name in os.listdir(os.path.dirname(path) or "."):
        suffix = name[len(prefix) :] if name.startswith(prefix) else ""
        if suffix.isascii() and suffix.isdigit() and suffix == str(int(suffix)) != "0":
            numbers.append(int(suffix))
    return sorted(numbers)


def missing_rotated(path: str) -> list[str]:
    """`<path>.N` files missing below the highest one present: deleted or renamed."""
    numbers = rotated_numbers(path)
    present = set(numbers)
    top = numbers[-1] if numbers else 0
    return [rotated_path(path, n) for n in range(1, top) if n not in present]


def log_files(path: str, include_rotated: bool) -> list[str]:
    """Oldest first: every `<path>.N` present, highest N first, then `<path>`."""
    if not include_rotated:
        return [path]
    return [*(rotated_path(path, n) for n in reversed(rotated_numbers(path))), path]


def chain_segments(path: str, include_rotated: bool) -> list[list[str]]:
    """`log_files` split where a rotated file is missing; each part is a chain of its own."""
    if not include_rotated:
        return [[path]]
    segments: list[list[str]] = [[]]
    previous: int | None = None
    for number in [*reversed(rotated_numbers(path)), 0]:
        if previous is not None and number != previous - 1:
            segments.append([])
        segments[-1].append(path if number == 0 else rotated_path(path, number))
        previous = number
    return segments


def parse_line(line: bytes) -> dict[str, object]:
    if not line.endswith(b"\n"):
        raise BadRecord("unparsable: incomplete line at end of file (torn or truncated write)")
    try:
        record = json.loads(line)
        if not isinstance(record, dict):
            raise BadRecord("unparsable: line is not a JSON object")
        canonical = canonical_json(record)
    except (ValueError, RecursionError) as exc:
        raise BadRecord(f"unparsable: {exc}") from exc
    if canonical + b"\n" != line:
        raise BadRecord("unparsable: line is not in canonical form (edited by hand?)")
    return record


def check_links(record: dict[str, object], state: ChainState, first_in_file: bool) -> None:
    if record.get("hash") != record_hash(record):
        raise BadRecord("hash mismatch: the record was changed after it was written")
    if record.get("kind") == "rotated":
        if not first_in_file:
            raise BadRecord("rotated record in the middle of a file (records spliced in?)")
        if record.get("previous_last_hash") != record.get("prev"):
            raise BadRecord("rotated record: previous_last_hash differs from prev")
        if state.prev is None:
            state.prev = str(record.get("prev"))
    expected = GENESIS_HASH if state.prev is None else state.prev
    if record.get("prev") != expected:
        raise BadRecord(
            f"prev mismatch: expected {expected[:16]}..., record says "
            f"{str(record.get('prev'))[:16]}... (record deleted, inserted or reordered)"
        )


def decode_b64(record: dict[str, object], name: str) -> bytes:
    value = record.get(name)
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRecord(f"intent field {name!r} is not base64") from exc


def check_intent(record: dict[str, object], state: ChainState) -> None:
    key_id = str(record.get("key_id"))
    trusted = state.trust.get(key_id)
    if trusted is None:
        raise BadRecord(f"bad signature: key id {key_id} is not in the trust-key file(s)")
    batch_bytes = decode_b64(record, "batch")
    try:
        trusted.public_key.verify(decode_b64(record, "signature"), batch_bytes)
    except InvalidSignature as exc:
        raise BadRecord(f"bad signature: intent batch does not verify with key {key_id}") from exc
    try:
        batch = helper_pb2.Batch.FromString(batch_bytes)
    except DecodeError as exc:
        raise BadRecord(f"signed batch does not parse: {exc}") from exc
    claimed = (record.get("epoch"), record.get("seq"), record.get("owner"))
    if claimed != (batch.epoch.hex(), batch.sequence, batch.owner):
        raise BadRecord("intent epoch/seq/owner differ from the signed batch")
    stream = (key_id, batch.epoch.hex())
    if batch.sequence <= state.last_seq.get(stream, -1):
        raise BadRecord(f"intent seq {batch.sequence} repeats or goes back (replayed record)")
    state.last_seq[stream] = batch.sequence


def check_record(line: bytes, state: ChainState, first_in_file: bool) -> None:
    record = parse_line(line)
    check_links(record, state, first_in_file)
    if record.get("kind") == "intent":
        check_intent(record, state)
    state.prev = str(record["hash"])
    state.hashes.add(state.prev)
    state.count += 1
    ts = str(record.get("ts", ""))
    state.first_ts = state.first_ts or ts
    state.last_ts = ts


def verify_files(paths: list[str], state: ChainState) -> Failure | None:
    for path in paths:
        with open(path, "rb") as handle:
            for index, line in enumerate(handle):
                try:
                    check_record(line, state, first_in_file=index == 0)
                except BadRecord as exc:
                    return Failure(path, index, str(exc))
    return None


def load_trust(paths: list[str]) -> dict[str, TrustedKey]:
    keys: dict[str, TrustedKey] = {}
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            keys.update(parse_trust_text(handle.read(), path))
    return keys


def run_verify(args: argparse.Namespace) -> int:
    try:
        state = ChainState(trust=load_trust(args.trust_key))
        missing = missing_rotated(args.audit_log) if args.include_rotated else []
        failure = None
        for segment in chain_segments(args.audit_log, args.include_rotated):
            state.prev = None  # after a gap, the next file starts from its `rotated` record
            failure = failure or verify_files(segment, state)
    except (OSError, StartupError) as exc:
        print(f"audit verify: cannot check {args.audit_log}: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    if failure is not None:
        print(f"FAILED: {failure.path}: record {failure.index}: {failure.reason}")
    if missing:
        print(
            f"FAILED: missing rotated file(s): {', '.join(missing)}; every {args.audit_log}.N "
            "below the highest one present must exist (a file was deleted or renamed)"
        )
    if failure is not None or missing:
        return EXIT_TAMPERED
    print(
        f"OK: {state.count} records, {state.first_ts or '-'} .. {state.last_ts or '-'}\n"
        f"last hash: {state.prev or GENESIS_HASH}"
    )
    return check_anchor(args.expect_last_hash, state)


def check_anchor(anchor: str | None, state: ChainState) -> int:
    if anchor is None:
        return EXIT_OK
    if anchor.lower() == (state.prev or GENESIS_HASH):
        print("anchor: matches the last record")
        return EXIT_OK
    if anchor.lower() in state.hashes:
        print("anchor: found inside the chain; records were appended after it")
        return EXIT_OK
    print(f"FAILED: anchor {anchor} is not in the chain: the tail was truncated or rewritten")
    return EXIT_TAMPERED


# --- show ---------------------------------------------------------------------------


def read_records(paths: list[str]) -> Iterator[dict[str, object]]:
    for path in paths:
        with open(path, "rb") as handle:
            for line in handle:
                try:
                    value = json.loads(line)
                except ValueError:
                    continue
                if isinstance(value, dict):
                    yield value


def timeline(records: Iterator[dict[str, object]]) -> list[dict[str, object]]:
    """One entry per batch (intent joined with its result) or per refusal."""
    entries: list[dict[str, object]] = []
    by_batch: dict[tuple[object, object], dict[str, object]] = {}
    for record in records:
        kind = record.get("kind")
        if kind == "intent":
            entry = entry_of(record, "pending")
            by_batch[(record.get("epoch"), record.get("seq"))] = entry
            entries.append(entry)
        elif kind == "result":
            found = by_batch.get((record.get("epoch"), record.get("seq")))
            target = found if found is not None else entry_of(record, "")
            target.update(verdict=record.get("verdict"), error=record.get("error", ""))
            if found is None:
                entries.append(target)
        elif kind == "refused":
            entries.append(entry_of(record, "refused"))
    return entries


def entry_of(record: dict[str, object], verdict: str) -> dict[str, object]:
    return {
        "ts": record.get("ts", ""),
        "epoch": record.get("epoch", ""),
        "seq": record.get("seq", 0),
        "owner": record.get("owner", ""),
        "verdict": record.get("verdict", verdict),
        "ops": record.get("ops", []),
        "interfaces": record.get("interfaces", []),
        "error": record.get("error", ""),
    }


def parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def wanted(entry: dict[str, object], args: argparse.Namespace) -> bool:
    interfaces = entry["interfaces"]
    if args.interface and not (isinstance(interfaces, list) and args.interface in interfaces):
        return False
    if args.verdict and entry["verdict"] != args.verdict:
        return False
    if args.since or args.until:
        try:
            moment = parse_time(str(entry["ts"]))
        except argparse.ArgumentTypeError:
            return False
        if (args.since and moment < args.since) or (args.until and moment > args.until):
            return False
    return True


def render(entry: dict[str, object]) -> str:
    ops = entry["ops"]
    shown = "; ".join(str(op) for op in ops) if isinstance(ops, list) else str(ops)
    text = f"{entry['ts']}  seq={entry['seq']}  {entry['verdict']:<11}  {shown}"
    return f"{text}  error: {entry['error']}" if entry["error"] else text


def run_show(args: argparse.Namespace) -> int:
    try:
        entries = timeline(read_records(log_files(args.audit_log, args.include_rotated)))
    except OSError as exc:
        print(f"audit show: cannot read {args.audit_log}: {exc.strerror}", file=sys.stderr)
        return EXIT_UNUSABLE
    for entry in entries:
        if wanted(entry, args):
            print(json.dumps(entry, sort_keys=True) if args.json else render(entry))
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    audit = subparsers.add_parser("audit", help="check or read the audit log")
    commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = commands.add_parser("verify", help="check the hash chain and intent signatures")
    verify.add_argument("--audit-log", required=True)
    verify.add_argument("--trust-key", required=True, action="append", help="repeatable")
    verify.add_argument("--include-rotated", action="store_true", help="also check <log>.N")
    verify.add_argument("--expect-last-hash", help="anchor recorded earlier (detects truncation)")
    verify.set_defaults(func=run_verify)
    show = commands.add_parser("show", help="print a timeline of batches")
    show.add_argument("--audit-log", required=True)
    show.add_argument("--interface")
    show.add_argument("--since", type=parse_time)
    show.add_argument("--until", type=parse_time)
    show.add_argument("--verdict", choices=VERDICTS)
    show.add_argument("--include-rotated", action="store_true")
    show.add_argument("--json", action="store_true", help="one JSON object per line")
    show.set_defaults(func=run_show)
