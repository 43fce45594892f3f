"""Reading and checking the chain: canonical lines, hashes, `prev` links, record numbers,
signed intents, and the helper's recorded head.

Nothing here needs privilege; the helper uses `last_record` to resume and `signed_intents`
to rebuild its replay marks at start.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from netagent_api import helper_pb2
from netagent_audit.records import (
    GENESIS_HASH,
    Head,
    canonical_json,
    derived_intent_fields,
    parse_rfc3339,
    record_hash,
    rotated_path,
)
from netagent_audit.trustfile import PublicKey

_TAIL_CHUNK = 64 * 1024
# The helper writes an intent right after checking the batch's time against its clock
# (at most time_window_seconds apart); this much more covers the admission in between.
INTENT_TS_SLACK_MS = 10_000
KeyLookup = Callable[[str], PublicKey | None]


class AuditLogCorrupt(Exception):
    """An existing audit file cannot be read back as a chain."""


class BadRecord(Exception):
    """One record breaks the chain; the message says why."""


@dataclass(frozen=True)
class Failure:
    path: str
    index: int
    reason: str


@dataclass
class ChainState:
    keys: KeyLookup
    window_ms: int = 60_000
    prev: str | None = None
    n: int = -1  # number of the last record checked
    count: int = 0
    first_ts: str = ""
    last_ts: str = ""
    hashes: dict[str, int] = field(default_factory=dict)  # hash -> n
    last_seq: dict[tuple[str, str], int] = field(default_factory=dict)


# --- files ------------------------------------------------------------------------------


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


def last_line(path: str) -> bytes | None:
    """The last complete line of a file (without its newline), or None when it is empty.

    Raises AuditLogCorrupt when the file does not end with a newline (a torn write).
    """
    with open(path, "rb") as handle:
        position = handle.seek(0, os.SEEK_END)
        if position == 0:
            return None
        chunk = b""
        while True:
            step = min(_TAIL_CHUNK, position)
            position -= step
            handle.seek(position)
            chunk = handle.read(step) + chunk
            if not chunk.endswith(b"\n"):
                raise AuditLogCorrupt(f"{path} ends with an incomplete line (torn write)")
            start = chunk.rfind(b"\n", 0, len(chunk) - 1)
            if start >= 0 or position == 0:
                return chunk[start + 1 : -1]


def last_record(path: str) -> Head | None:
    """Number and hash of the record to chain from: the current file's last record, else the
    newest rotated file's; None for a new log."""
    for candidate in (path, rotated_path(path, 1)):
        try:
            line = last_line(candidate)
        except FileNotFoundError:
            continue
        if line is not None:
            try:
                value = json.loads(line)
                return Head(int(value["n"]), str(value["hash"]))
            except (ValueError, TypeError, KeyError) as exc:
                raise AuditLogCorrupt(f"{candidate}: last record has no n and hash") from exc
    return None


# --- one record -------------------------------------------------------------------------


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
    n = record.get("n")
    if type(n) is not int or n < 0:
        raise BadRecord("no record number n")
    if record.get("kind") == "rotated":
        if not first_in_file:
            raise BadRecord("rotated record in the middle of a file (records spliced in?)")
        if record.get("previous_last_hash") != record.get("prev"):
            raise BadRecord("rotated record: previous_last_hash differs from prev")
        if state.prev is None:  # the start of a chain whose earlier files are gone
            state.prev, state.n = str(record.get("prev")), n - 1
    expected = GENESIS_HASH if state.prev is None else state.prev
    if record.get("prev") != expected:
        raise BadRecord(
            f"prev mismatch: expected {expected[:16]}..., record says "
            f"{str(record.get('prev'))[:16]}... (record deleted, inserted or reordered)"
        )
    if n != state.n + 1:
        raise BadRecord(f"record number {n} follows {state.n} (records removed or renumbered)")


def decode_b64(record: dict[str, object], name: str) -> bytes:
    try:
        return base64.b64decode(str(record.get(name)), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRecord(f"intent field {name!r} is not base64") from exc


def signed_batch(record: dict[str, object], keys: KeyLookup) -> helper_pb2.Batch:
    """The intent's batch, once its signature verifies with a trusted key."""
    key_id = str(record.get("key_id"))
    key = keys(key_id)
    if key is None:
        raise BadRecord(f"bad signature: key id {key_id} is not in the trust-key file(s)")
    data = decode_b64(record, "batch")
    if not key.verifies(decode_b64(record, "signature"), data):
        raise BadRecord(f"bad signature: intent batch does not verify with key {key_id}")
    try:
        return helper_pb2.Batch.FromString(data)
    except DecodeError as exc:
        raise BadRecord(f"signed batch does not parse: {exc}") from exc


def check_intent(record: dict[str, object], state: ChainState) -> None:
    batch = signed_batch(record, state.keys)
    for name, value in derived_intent_fields(batch).items():
        if record.get(name) != value:
            raise BadRecord(f"intent field {name!r} differs from the signed batch")
    try:
        ts_ms = int(parse_rfc3339(str(record.get("ts"))).timestamp() * 1000)
    except ValueError as exc:
        raise BadRecord("intent ts is not an RFC 3339 time") from exc
    if abs(ts_ms - batch.unix_time_ms) > state.window_ms + INTENT_TS_SLACK_MS:
        raise BadRecord(
            f"intent ts {record.get('ts')} is {(ts_ms - batch.unix_time_ms) / 1000:+.0f} s "
            "off the batch's signed time (the helper logs it within the time window)"
        )
    stream = (str(record.get("key_id")), batch.epoch.hex())
    if batch.sequence <= state.last_seq.get(stream, -1):
        raise BadRecord(f"intent seq {batch.sequence} repeats or goes back (replayed record)")
    state.last_seq[stream] = batch.sequence


def check_record(line: bytes, state: ChainState, first_in_file: bool) -> None:
    record = parse_line(line)
    check_links(record, state, first_in_file)
    if record.get("kind") == "intent":
        check_intent(record, state)
    state.prev = str(record["hash"])
    state.n = int(str(record["n"]))
    state.hashes[state.prev] = state.n
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


def check_head(head: Head, state: ChainState, first_n: int) -> str | None:
    """Why the chain disagrees with the helper's recorded head, or None."""
    if head.n > state.n:
        return (
            f"the log ends at record {state.n} but the helper's head is record {head.n}: "
            f"{head.n - state.n} record(s) were removed from the end (or the whole log replaced)"
        )
    if head.n < first_n:
        return None  # in a rotated file no longer kept
    if state.hashes.get(head.hash) != head.n:
        return f"record {head.n} is not the one the helper wrote (the chain was rewritten)"
    return None


# --- for the helper's start ---------------------------------------------------------------


def _modified_ms(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns // 1_000_000
    except FileNotFoundError:
        return -1


def read_records(paths: list[str]) -> Iterator[dict[str, object]]:
    """Every JSON object line of `paths`, in order; unparsable lines are skipped."""
    for path in paths:
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            continue
        with handle:
            for line in handle:
                try:
                    value = json.loads(line)
                except ValueError:
                    continue
                if isinstance(value, dict):
                    yield value


def signed_intents(
    path: str, keys: KeyLookup, since_ms: int
) -> Iterator[tuple[str, helper_pb2.Batch]]:
    """(key id, batch) of every intent in the log and its rotated files whose signature
    verifies and whose signed time is at or after `since_ms`. Files last written before
    `since_ms` are not read."""
    recent = [p for p in log_files(path, include_rotated=True) if _modified_ms(p) >= since_ms]
    for record in read_records(recent):
        if record.get("kind") != "intent":
            continue
        signed_ms = record.get("signed_ms")
        if isinstance(signed_ms, int) and signed_ms < since_ms:
            continue
        try:
            batch = signed_batch(record, keys)
        except BadRecord:
            continue
        if batch.unix_time_ms >= since_ms:
            yield str(record.get("key_id")), batch
