"""Reading the helper's audit log (JSON lines) without depending on netlinkd's code."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any


def records(path: Path) -> list[dict[str, Any]]:
    """Every JSON record of the audit log; [] while it does not exist."""
    try:
        return records_in(path.read_text())
    except FileNotFoundError:
        return []


def records_in(text: str) -> list[dict[str, Any]]:
    """The records of an audit log's text (one JSON object a line)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def batch_results(found: Sequence[dict[str, Any]]) -> list[tuple[float, list[Any]]]:
    """(wall time, the operations of its intent) of each batch result among `found` whose
    intent is among them too. The times have the audit log's millisecond resolution."""
    ops = {(r["epoch"], r["seq"]): _operations(r) for r in found if r.get("kind") == "intent"}
    return [(datetime.fromisoformat(r["ts"].replace("Z", "+00:00")).timestamp(),
             ops[(r["epoch"], r["seq"])]) for r in found
            if r.get("kind") == "result" and (r["epoch"], r["seq"]) in ops]


def _operations(record: dict[str, Any]) -> list[Any]:
    for key in ("operations", "ops"):
        value = record.get(key)
        if isinstance(value, list):
            return value
    batch = record.get("batch")
    if isinstance(batch, dict):
        return _operations(batch)
    return []


def intents_changing(path: Path) -> list[bool]:
    """For each "intent" record in order, whether it carries an operation (an observe-only
    batch does not)."""
    return [bool(_operations(r)) for r in records(path) if r.get("kind") == "intent"]


def changing_intents(path: Path) -> int:
    """How many "intent" records carry at least one operation (observe-only ones don't)."""
    return sum(intents_changing(path))
