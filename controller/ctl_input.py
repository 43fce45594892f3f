"""`netagent-ctl put` input: a JSON or YAML file (or stdin) -> the JSON value to store.

JSON is stored exactly as given. YAML is read with YAML 1.2's core types only (`yes`,
`on` and `12:34` stay strings, as in JSON) and duplicate keys are refused, then stored as
compact JSON: the controller reads JSON only.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import yaml

from controller.model import reject_duplicates


class InputError(Exception):
    """The input cannot be read or parsed; the message names the file and the place."""


class _CoreLoader(yaml.SafeLoader):
    """YAML 1.2 core schema: true/false, null, decimal/hex/octal ints, floats; no
    sexagesimal numbers, no yes/no/on/off booleans, no timestamps."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_CORE_TYPES = (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$",
     list("-+0123456789")),
    ("tag:yaml.org,2002:float",
     r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
     r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", list("-+.0123456789")),
)
_CoreLoader.yaml_implicit_resolvers = {}  # only the core types below, not SafeLoader's
for _tag, _pattern, _first in _CORE_TYPES:
    _CoreLoader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))


def read_source(path: str) -> bytes:
    """The bytes of `path`, or of stdin for `-`."""
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror}") from None


def to_json(raw: bytes, source: str) -> bytes:
    """JSON input unchanged; YAML input as compact JSON. Raises InputError."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{source}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        json.loads(text, object_pairs_hook=reject_duplicates)
        return raw
    except json.JSONDecodeError as err:
        if text.lstrip().startswith(("{", "[")):
            raise InputError(f"{source}: not valid JSON: {err.msg} at line {err.lineno} "
                             f"column {err.colno}") from None
    except ValueError as err:
        raise InputError(f"{source}: not valid JSON: {err}") from None
    return json.dumps(_load_yaml(text, source)).encode()


def _load_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        document = yaml.load(text, Loader=_CoreLoader)  # a SafeLoader
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise InputError(f"{source}: neither JSON nor valid YAML: {err.problem}{where}") from None
    except yaml.YAMLError as err:
        raise InputError(f"{source}: neither JSON nor valid YAML: {err}") from None
    if not isinstance(document, dict):
        kind = "empty" if document is None else f"a {type(document).__name__}"
        raise InputError(f"{source}: the document is {kind}; an interface config is a "
                         "mapping of fields (name, type, veth, ...)")
    return document
