"""`audit show`: one line per batch (its intent joined with its result) or per refusal.

An intent's epoch, sequence, owner, operations and interfaces are read from its signed batch
bytes, never from the record's own copies; its `ts` is the one `verify` checks against the
signed time. Run `verify` first: `show` prints what the file says.
"""

from __future__ import annotations

import argparse
import base64
import binascii
from collections.abc import Iterable
from datetime import UTC, datetime

from google.protobuf.message import DecodeError

from netagent_api import helper_pb2
from netagent_audit.records import derived_intent_fields, parse_rfc3339

VERDICTS = ("pending", "applied", "failed", "rolled_back", "refused", "interrupted")


def intent_facts(record: dict[str, object]) -> dict[str, object]:
    """The intent's claims, from its signed bytes; a batch that does not decode says so."""
    try:
        batch = helper_pb2.Batch.FromString(base64.b64decode(str(record.get("batch"))))
    except (binascii.Error, ValueError, DecodeError):
        return {"epoch": "", "seq": 0, "owner": "", "ops": ["(batch bytes do not decode)"],
                "interfaces": []}
    return derived_intent_fields(batch)


def entry_of(record: dict[str, object], verdict: str) -> dict[str, object]:
    entry: dict[str, object] = {
        "ts": record.get("ts", ""),
        "epoch": record.get("epoch", ""),
        "seq": record.get("seq", 0),
        "owner": "",
        "verdict": record.get("verdict", verdict),
        "ops": [],
        "interfaces": [],
        "error": record.get("error", ""),
    }
    if record.get("kind") == "intent":
        facts = intent_facts(record)
        entry.update({name: facts[name] for name in ("epoch", "seq", "owner", "ops",
                                                     "interfaces")})
    return entry


def timeline(records: Iterable[dict[str, object]]) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = []
    by_batch: dict[tuple[object, object], dict[str, object]] = {}
    for record in records:
        kind = record.get("kind")
        if kind == "intent":
            entry = entry_of(record, "pending")
            by_batch[(entry["epoch"], entry["seq"])] = entry
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


def parse_time(text: str) -> datetime:
    try:
        moment = parse_rfc3339(text)
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
