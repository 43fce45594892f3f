"""Reading the helper's audit log (JSON lines) without depending on netlinkd's code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def records(path: Path) -> list[dict[str, Any]]:
    """Every JSON record of the audit log; [] while it does not exist."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


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
