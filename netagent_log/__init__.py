"""One log format for netagent-controller and netlinkd: one event per line.

`text` is logfmt (`time=... level=info logger=... msg="..." seq=3 outcome=ok`); `json` is
one JSON object per line, for log shippers. Fields come from the standard `extra=`
argument of a logging call (`log.info("batch %d", n, extra={"seq": n, "outcome": "ok"})`),
so call sites need nothing else. Under journald (`$JOURNAL_STREAM` set) text lines carry
no timestamp of their own but a `<N>` syslog priority prefix, which journald turns into
the entry's priority.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import IO, Any

FORMATS = ("text", "json")
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName",
}
_SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4,
                    logging.ERROR: 3, logging.CRITICAL: 2}


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The `extra=` fields of a record, in the order they were given."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and v is not None}


def _timestamp(record: logging.LogRecord) -> str:
    moment = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{moment}.{int(record.msecs):03d}Z"


def _error_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    if record.exc_info:
        return formatter.formatException(record.exc_info)
    return record.exc_text or None


def logfmt_value(value: object) -> str:
    """A logfmt value: bare when it is a simple token, else double-quoted and escaped."""
    text = value if isinstance(value, str) else (
        str(value).lower() if isinstance(value, bool) else str(value))
    if text and all(c.isprintable() and c not in ' ="\\' for c in text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{escaped}"'


class LogfmtFormatter(logging.Formatter):
    """`[time=...] level=... logger=... msg=... k=v...`; `journald` drops time, adds <N>."""

    def __init__(self, journald: bool = False) -> None:
        super().__init__()
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        pairs: list[tuple[str, object]] = []
        if not self.journald:
            pairs.append(("time", _timestamp(record)))
        pairs += [("level", record.levelname.lower()), ("logger", record.name),
                  ("msg", record.getMessage()), *fields_of(record).items()]
        error = _error_text(self, record)
        if error:
            pairs.append(("error", error))
        line = " ".join(f"{key}={logfmt_value(value)}" for key, value in pairs)
        if self.journald:
            return f"<{_SYSLOG_PRIORITY.get(record.levelno, 6)}>{line}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": _timestamp(record), "level": record.levelname.lower(),
            "logger": record.name, "msg": record.getMessage(),
        }
        for key, value in fields_of(record).items():
            document.setdefault(key, value)
        error = _error_text(self, record)
        if error:
            document["error"] = error
        return json.dumps(document, default=str, ensure_ascii=False)


def under_journald() -> bool:
    """True when stderr is connected to journald (systemd sets $JOURNAL_STREAM)."""
    return bool(os.environ.get("JOURNAL_STREAM"))


def make_formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return LogfmtFormatter(journald=under_journald())
    raise ValueError(f"log format {log_format!r}: use one of {', '.join(FORMATS)}")


def setup(level: str, log_format: str = "text", stream: IO[str] | None = None) -> None:
    """Replace the root logger's handlers with one writing `log_format` lines to stderr."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(make_formatter(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
