"""`netlinkd audit show`: one line per batch or refusal, filters by interface/verdict/time."""

from __future__ import annotations

import json
from pathlib import Path

from seclib import audit_cli


def show(log: Path, *args: str) -> list[str]:
    result = audit_cli("show", "--audit-log", str(log), *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_timeline_joins_intent_and_result(built_log: Path) -> None:
    lines = show(built_log)
    assert len(lines) == 24 + 4
    assert "seq=1" in lines[0] and "applied" in lines[0] and "delete_link sec0" in lines[0]


def test_filter_by_interface(built_log: Path) -> None:
    lines = show(built_log, "--interface", "sec3")
    assert len(lines) == 1 and "seq=4" in lines[0]


def test_filter_by_verdict_and_json(built_log: Path) -> None:
    refused = [json.loads(line) for line in show(built_log, "--verdict", "refused", "--json")]
    assert len(refused) == 4
    assert all(entry["verdict"] == "refused" for entry in refused)
    rolled_back = show(built_log, "--verdict", "rolled_back")
    assert len(rolled_back) == 8


def test_filter_by_time(built_log: Path) -> None:
    assert show(built_log, "--since", "2999-01-01T00:00:00Z") == []
    assert len(show(built_log, "--until", "2999-01-01T00:00:00Z")) == 28
    assert show(built_log, "--until", "2000-01-01") == []


def test_bad_time_is_a_usage_error(built_log: Path) -> None:
    result = audit_cli("show", "--audit-log", str(built_log), "--since", "yesterday")
    assert result.returncode == 2 and "ISO 8601" in result.stderr
