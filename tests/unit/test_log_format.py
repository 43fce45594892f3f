"""The shared log format: logfmt lines (journald: no timestamp, a <N> priority) or JSON."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

import netagent_log

_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def parse_logfmt(line: str) -> dict[str, str]:
    """The key=value pairs of one logfmt line, quotes and escapes removed."""
    pairs = {}
    for key, value in _PAIR.findall(line):
        if value.startswith('"'):
            value = json.loads(value)
        pairs[key] = value
    return pairs


def _emit(formatter: logging.Formatter, level: int, msg: str, *args: object,
          exc: bool = False, **extra: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        if exc:
            try:
                raise RuntimeError("boom\nsecond line")
            except RuntimeError:
                logger.exception(msg, *args, extra=extra)
        else:
            logger.log(level, msg, *args, extra=extra)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_text_has_time_level_logger_message_and_fields() -> None:
    line = _emit(netagent_log.LogfmtFormatter(), logging.INFO, "batch %d: %s", 7, "ok",
                 seq=7, interface="veth1,veth2", outcome="ok")
    assert line.count("\n") == 1
    fields = parse_logfmt(line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields["time"])
    assert fields["level"] == "info" and fields["msg"] == "batch 7: ok"
    assert (fields["seq"], fields["interface"], fields["outcome"]) == ("7", "veth1,veth2", "ok")


def test_values_are_quoted_and_escaped_onto_one_line() -> None:
    line = _emit(netagent_log.LogfmtFormatter(), logging.WARNING, 'a "b"\nc', key="/x y=z")
    assert line.count("\n") == 1
    fields = parse_logfmt(line)
    assert fields["msg"] == 'a "b"\nc' and fields["key"] == "/x y=z"


def test_an_exception_stays_on_the_event_line() -> None:
    line = _emit(netagent_log.LogfmtFormatter(), logging.ERROR, "failed", exc=True)
    assert line.count("\n") == 1
    assert "RuntimeError: boom\nsecond line" in parse_logfmt(line)["error"]


def test_journald_lines_have_a_priority_and_no_timestamp() -> None:
    formatter = netagent_log.LogfmtFormatter(journald=True)
    warning = _emit(formatter, logging.WARNING, "w")
    assert warning.startswith("<4>level=warning ") and "time=" not in warning
    assert _emit(formatter, logging.DEBUG, "d").startswith("<7>level=debug ")


def test_json_is_one_object_per_line() -> None:
    line = _emit(netagent_log.JsonFormatter(), logging.INFO, "m", seq=3, outcome="ok")
    document = json.loads(line)
    assert document["msg"] == "m" and document["seq"] == 3 and document["level"] == "info"
    assert "time" in document


@pytest.mark.parametrize("journal", [True, False])
def test_make_formatter_follows_journal_stream(
        monkeypatch: pytest.MonkeyPatch, journal: bool) -> None:
    if journal:
        monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    else:
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    formatter = netagent_log.make_formatter("text")
    assert isinstance(formatter, netagent_log.LogfmtFormatter)
    assert formatter.journald is journal
    with pytest.raises(ValueError, match="text, json"):
        netagent_log.make_formatter("xml")


def test_the_controller_logs_for_journald(tmp_path: Path) -> None:
    """A real `netagent-controller run` under $JOURNAL_STREAM: priority, no timestamp."""
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    controller = subprocess.run(
        [sys.executable, "-m", "controller.cli", "run", "--config", str(empty),
         "--signing-key", str(tmp_path / "missing.pem"), "--no-docker"],
        capture_output=True, text=True, timeout=60, check=False,
        env={"JOURNAL_STREAM": "8:1", "PATH": "/usr/bin:/bin"},
    )
    assert controller.returncode == 1
    line = controller.stderr.strip().splitlines()[-1]
    assert line.startswith("<3>level=error logger=netagent.controller msg="), line
    assert "missing.pem" in parse_logfmt(line)["msg"]
