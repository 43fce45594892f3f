"""`netagent-ctl` output: tables for people, `-o json` (one array, like `ip -j`) and
`-o yaml` for programs. Pure: takes parsed documents, returns text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import yaml

FORMATS = ("table", "json", "yaml")
_NS_TYPES = {0: "pid", 1: "microservice", 2: "named", 3: "file",
             "PID_REF_NS": "pid", "MICROSERVICE_REF_NS": "microservice", "NAMED_NS": "named",
             "FILE_REF_NS": "file"}
_NS_VALUE = {"pid": "pid", "microservice": "microservice", "named": "name", "file": "filepath"}


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, like `docker ps`; the last column unpadded."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines) + "\n"


def as_json(documents: Sequence[Any]) -> str:
    return json.dumps(list(documents), indent=2, sort_keys=True) + "\n"


def as_yaml(documents: Sequence[Any]) -> str:
    return str(yaml.safe_dump(list(documents), sort_keys=True, default_flow_style=False))


def render(documents: Sequence[Any], output: str,
           make_table: Callable[[Sequence[Any]], str]) -> str:
    if output == "json":
        return as_json(documents)
    if output == "yaml":
        return as_yaml(documents)
    return make_table(documents)


# ---- configs ------------------------------------------------------------------------


def config_document(name: str, raw: bytes) -> dict[str, Any]:
    """A stored config as a document; an unreadable one keeps its text under `invalid`."""
    try:
        value = json.loads(raw)
    except ValueError:
        return {"name": name, "invalid": raw.decode(errors="replace")}
    return value if isinstance(value, dict) else {"name": name, "invalid": value}


def _namespace_text(ns: Any) -> str:
    if not isinstance(ns, Mapping) or not ns:
        return "default"
    kind = _NS_TYPES.get(ns.get("type", 0), str(ns.get("type")))
    value = ns.get(_NS_VALUE.get(kind, ""), "")
    return f"{kind}:{value}" if value not in ("", 0) else "default"


def config_table(documents: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for doc in documents:
        if "invalid" in doc:
            rows.append([str(doc.get("name", "?")), "?", "?", "?", "?", "(not valid JSON)"])
            continue
        peer = doc.get("veth", {}).get("peer_if_name", "") if isinstance(
            doc.get("veth"), Mapping) else ""
        rows.append([
            str(doc.get("name", "?")), str(peer or "-"), _namespace_text(doc.get("namespace")),
            str(doc.get("mtu") or "-"), str(doc.get("phys_address") or "-"),
            ",".join(str(a) for a in doc.get("ip_addresses", [])) or "-",
        ])
    return table(["NAME", "PEER", "NAMESPACE", "MTU", "MAC", "ADDRESSES"], rows)


# ---- statuses -----------------------------------------------------------------------


def _status_namespace(ns: Any) -> str:
    if not isinstance(ns, Mapping):
        return "-"
    if not ns:
        return "default"
    kind, value = next(iter(ns.items()))
    return str(value) if kind == "name" else f"{kind}:{value}"


_LIVE_COLUMNS: tuple[tuple[str, Callable[[Mapping[str, Any]], str]], ...] = (
    ("KERNEL", lambda s: str(s.get("kernel_name", "-"))),
    ("NETNS", lambda s: _status_namespace(s["namespace"]) if "namespace" in s else "-"),
    ("IFINDEX", lambda s: str(s.get("ifindex", "-"))),
    ("OPER", lambda s: str(s.get("oper_state", "-"))),
    ("RX", lambda s: _packets(s, "rx")),
    ("TX", lambda s: _packets(s, "tx")),
)
_LIVE_FIELDS = {"KERNEL": "kernel_name", "NETNS": "namespace", "IFINDEX": "ifindex",
                "OPER": "oper_state", "RX": "statistics", "TX": "statistics"}


def _packets(status: Mapping[str, Any], way: str) -> str:
    stats = status.get("statistics")
    if not isinstance(stats, Mapping):
        return "-"
    text = f"{stats.get(way + '_packets', 0)}p/{stats.get(way + '_bytes', 0)}B"
    problems = int(stats.get(way + "_errors", 0)) + int(stats.get(way + "_dropped", 0))
    return text + (f"/{problems}err" if problems else "")


def status_table(documents: Sequence[Mapping[str, Any]]) -> str:
    """NAME STATE, the live columns some status carries (kernel name only where it
    differs from the config name), then REASON with any warnings."""
    columns = [(title, cell) for title, cell in _LIVE_COLUMNS
               if any(_LIVE_FIELDS[title] in doc for doc in documents)]
    if not any(doc.get("kernel_name", doc.get("name")) != doc.get("name") for doc in documents):
        columns = [(title, cell) for title, cell in columns if title != "KERNEL"]
    rows = []
    for doc in documents:
        reason = str(doc.get("reason", ""))
        for warning in doc.get("warnings", []):
            reason += f" [warning: {warning}]"
        rows.append([str(doc.get("name")), str(doc.get("state", "?")),
                     *(cell(doc) for _, cell in columns), reason.strip() or "-"])
    return table(["NAME", "STATE", *(title for title, _ in columns), "REASON"], rows)
