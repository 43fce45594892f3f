"""JSON config value -> validated `InterfaceConfig`, or `InvalidValue` naming the field.

Pure: no I/O, and no etcd3, docker, grpc or pyroute2 imports. The JSON is the seed's
(ligato linuxplugin) model, parsed strictly by protobuf: unknown fields are errors.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from google.protobuf import json_format

from controller.observed import canonical_interface
from netagent_api import interface_pb2

log = logging.getLogger(__name__)

NsKind = Literal["default", "named", "pid", "file", "microservice"]

IFNAMSIZ = 16
NAME_MAX = 255
MTU_MIN, MTU_MAX = 68, 65535
IPV6_MIN_MTU = 1280

_Pb = interface_pb2.Interface
_PbNs = interface_pb2.Interface.Namespace


@dataclass(frozen=True)
class NamespaceConfig:
    kind: NsKind = "default"
    name: str = ""
    pid: int = 0
    path: str = ""
    microservice: str = ""

    def describe(self) -> str:
        value = {"named": self.name, "pid": self.pid, "file": self.path}.get(self.kind)
        if self.kind == "microservice":
            return f"the namespace of microservice {self.microservice}"
        return "the default namespace" if value is None else f"namespace {self.kind}={value}"


@dataclass(frozen=True)
class InterfaceConfig:
    name: str
    host_if_name: str
    description: str
    enabled: bool
    mac: str
    mtu: int
    addresses: tuple[str, ...]
    namespace: NamespaceConfig
    peer: str


class InvalidValue(Exception):
    """A config value that cannot be used; names the etcd key and the offending field."""

    def __init__(self, key: str, field: str, problem: str) -> None:
        super().__init__(key, field, problem)
        self.key = key
        self.field = field
        self.problem = problem

    def __str__(self) -> str:
        return _shortened(f"{self.key}: field '{self.field}': {self.problem}")


_LONG_RUN = re.compile(r"\S{97,}")


def _shortened(text: str) -> str:
    """A long run of text (a bad value quoted in a problem) keeps only its start and end:
    the message goes into the status, and a 100 KB bad value must not."""
    return _LONG_RUN.sub(
        lambda m: f"{m[0][:64]}...[{len(m[0]) - 80} characters]...{m[0][-16:]}", text)


class _FieldError(Exception):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(field, problem)
        self.field = field
        self.problem = problem


def parse_config(prefix: str, name: str, raw: bytes) -> InterfaceConfig | InvalidValue:
    """The config value of `name` (its key is `prefix` + `name`), parsed; a bad one is
    logged and returned as the `InvalidValue`."""
    try:
        return parse_interface(prefix + name, raw)
    except InvalidValue as err:
        log.warning("invalid config: %s", err, extra={
            "interface": name, "key": err.key, "outcome": "invalid"})
        return err


def parse_interface(key: str, raw: bytes | str) -> InterfaceConfig:
    """Parse and validate one config value stored at `key`. Raises `InvalidValue`."""
    try:
        message = _parse_message(raw)
        return _validate(key, message)
    except _FieldError as err:
        raise InvalidValue(key, err.field, err.problem) from None


def validate_pairing(configs: Mapping[str, InterfaceConfig]) -> dict[str, str]:
    """Config name -> problem, for ends whose peer exists but points elsewhere.

    The end that names a peer which names a third interface is in error; ends whose
    peer is simply not configured yet are not listed (they are pending, not wrong).
    """
    problems: dict[str, str] = {}
    for name, config in sorted(configs.items()):
        peer = configs.get(config.peer)
        if peer is not None and peer.peer != name:
            problems[name] = (
                f"peer mismatch: {name} names {config.peer} as its peer, but "
                f"{config.peer} names {peer.peer or 'no peer'}; make them name each other"
            )
    return problems


# ---- protobuf parsing -------------------------------------------------------------

_CAMEL_HUMP = re.compile(r"[A-Z]")
_PREFIX = re.compile(r"^Failed to parse (\S+) field: ")
_UNKNOWN = re.compile(r'has no field named "([^"]+)"')
_WHERE = re.compile(r"\s+at \S+$")
_NOT_INTEGER = re.compile(
    r"^(?:invalid literal for int\(\) with base 10: (?P<repr>.+)"
    r"|Couldn't parse (?:integer|non-integer string): (?:\"(?P<text>.*)\"|(?P<number>\S+))"
    r"|Bool value (?P<bool>True|False) is not acceptable for integer field)$"
)
_BAD_ENUM = re.compile(r"^Invalid enum value (?P<value>.+) for enum type (?P<enum>\S+)$")


def _parse_message(raw: bytes | str) -> interface_pb2.Interface:
    text = _decode(raw)
    try:
        document = json.loads(text, object_pairs_hook=reject_duplicates)
    except ValueError as err:
        raise _FieldError("<value>", f"not valid JSON: {err}") from None
    if not isinstance(document, dict):
        raise _FieldError("<value>", "must be a JSON object")
    _reject_two_spellings(document)
    message = _Pb()
    if _plain_fill(document, message):
        return message
    try:
        return json_format.ParseDict(document, _Pb(), ignore_unknown_fields=False)
    except json_format.ParseError as err:
        raise _from_parse_error(str(err)) from None


_FieldDescriptor = type(_Pb.DESCRIPTOR.fields[0])
_SCALAR_TYPES: dict[int, type] = {
    _FieldDescriptor.TYPE_STRING: str, _FieldDescriptor.TYPE_BOOL: bool,
    _FieldDescriptor.TYPE_UINT32: int, _FieldDescriptor.TYPE_ENUM: int,
}


def _plain_fill(document: dict[str, Any], message: Any) -> bool:
    """Fill `message` from a document in which every value has exactly the JSON type of
    its field (a string, a bool, an in-range integer, a known enum number or name, a list
    of strings, an object), as json_format.ParseDict would: a few times faster, for a
    restart's thousands of configs. False for any other document (`message` is then
    discarded): ParseDict parses it, or says what is wrong with it."""
    try:
        return _fill(document, message)
    except (TypeError, ValueError):
        return False


def _fill(document: dict[str, Any], message: Any) -> bool:
    by_json, by_name = _field_names_of(message.DESCRIPTOR)
    for key, value in document.items():
        field = by_json.get(key) or by_name.get(key)  # as json_format looks them up
        if field is None:
            return False
        if field.is_repeated:
            if (field.type != _FieldDescriptor.TYPE_STRING or type(value) is not list
                    or any(type(item) is not str for item in value)):
                return False
            getattr(message, field.name).extend(value)
        elif field.type == _FieldDescriptor.TYPE_MESSAGE:
            if type(value) is not dict:
                return False
            child = getattr(message, field.name)
            child.SetInParent()
            if not _fill(value, child):
                return False
        elif field.type == _FieldDescriptor.TYPE_ENUM and type(value) is str:
            known = field.enum_type.values_by_name.get(value)
            if known is None:
                return False
            setattr(message, field.name, known.number)
        elif _plain_scalar(field, value):
            setattr(message, field.name, value)
        else:
            return False
    return True


def _plain_scalar(field: Any, value: object) -> bool:
    if type(value) is not _SCALAR_TYPES.get(field.type):
        return False
    if type(value) is not int:
        return True
    if field.type == _FieldDescriptor.TYPE_ENUM:
        return value in field.enum_type.values_by_number
    return 0 <= value < 1 << 32


@functools.cache
def _field_names_of(descriptor: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    return ({field.json_name: field for field in descriptor.fields},
            dict(descriptor.fields_by_name))


def _decode(raw: bytes | str) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _FieldError("<value>", f"not UTF-8 text: {err}") from None


def reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A `json.loads` object_pairs_hook: a key given twice is an error, not last-one-wins."""
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise ValueError(f"duplicate key {name!r}")
        result[name] = value
    return result


def _reject_two_spellings(document: dict[str, Any], path: str = "") -> None:
    """`phys_address` next to `physAddress`: protobuf would silently keep the last one."""
    spelled: dict[str, str] = {}
    for name, value in document.items():
        field = _CAMEL_HUMP.sub(lambda m: "_" + m.group(0).lower(), name)
        if field in spelled:
            raise _FieldError(path + field,
                              f"given twice, as {spelled[field]!r} and {name!r}; keep one")
        spelled[field] = name
        if isinstance(value, dict):
            _reject_two_spellings(value, f"{path}{field}.")


def _from_parse_error(message: str) -> _FieldError:
    """Turn protobuf's nested 'Failed to parse a field: Failed to parse b field: ...'."""
    path: list[str] = []
    rest = message
    while match := _PREFIX.match(rest):
        path.append(match.group(1))
        rest = rest[match.end() :]
    unknown = _UNKNOWN.search(rest)
    if unknown:
        known = ", ".join(_field_names(path))
        path.append(unknown.group(1))
        return _FieldError(".".join(path), f"unknown field; fix its spelling or remove it "
                                           f"(known here: {known})")
    problem = _WHERE.sub("", rest.split("\n")[0].rstrip(".")).rstrip(".")
    return _FieldError(".".join(path) or "<value>", _plain_problem(problem))


def _field_names(path: list[str]) -> list[str]:
    """The field names of the message at `path` (JSON or proto spellings) in the model."""
    message = _Pb.DESCRIPTOR
    for part in path:
        field = message.fields_by_name.get(part) or next(
            (f for f in message.fields if f.json_name == part), None)
        if field is None or field.message_type is None:
            return []
        message = field.message_type
    return [field.name for field in message.fields]


def _plain_problem(problem: str) -> str:
    """Protobuf's wording for a non-integer or an unknown enum name, in the user's terms."""
    if match := _NOT_INTEGER.match(problem):
        if match["repr"] is not None:
            value = match["repr"]
        elif match["text"] is not None:
            value = repr(match["text"])
        elif match["bool"] is not None:
            value = match["bool"].lower()
        else:
            value = match["number"]
        return f"{value} is not an integer"
    if match := _BAD_ENUM.match(problem):
        try:
            enum = _Pb.DESCRIPTOR.file.pool.FindEnumTypeByName(match["enum"])
        except KeyError:
            return problem
        names = ", ".join(f"{value.name} ({value.number})" for value in enum.values)
        return f"{match['value']!r} is not one of {names}"
    return problem


# ---- validation -------------------------------------------------------------------


def _validate(key: str, m: interface_pb2.Interface) -> InterfaceConfig:
    _check_name(key, m.name)
    host_if_name = m.host_if_name or m.name
    _check_kernel_name("host_if_name" if m.host_if_name else "name", host_if_name)
    _check_type(m)
    addresses = _check_addresses(m.ip_addresses)
    return InterfaceConfig(
        name=m.name,
        host_if_name=host_if_name,
        description=m.description,
        enabled=m.enabled,
        mac=_check_mac(m.phys_address),
        mtu=_check_mtu(m.mtu, addresses),
        addresses=addresses,
        namespace=_namespace(m.namespace) if m.HasField("namespace") else NamespaceConfig(),
        peer=_check_peer(m),
    )


def _check_name(key: str, name: str) -> None:
    last = key.rsplit("/", 1)[-1]
    if not name:
        raise _FieldError("name", f"missing; set it to {last!r}, the last segment of the key")
    if name != last:
        raise _FieldError("name", f"{name!r} differs from the key's last segment {last!r}; "
                                  f"make them equal (put it as {name!r}, or set name to {last!r})")


def _check_kernel_name(field: str, name: str) -> None:
    size = len(name.encode("utf-8"))
    if size >= IFNAMSIZ:
        raise _FieldError(field, f"{name!r} is {size} bytes; Linux allows at most 15")
    if name in (".", ".."):
        raise _FieldError(field, f"{name!r} is not a valid Linux interface name")
    bad = [c for c in name if c in "/:\0" or c.isspace()]
    if bad:
        raise _FieldError(field, f"{name!r} contains {bad[0]!r}; Linux interface names cannot")


def _check_type(m: interface_pb2.Interface) -> None:
    if m.type != _Pb.VETH:
        raise _FieldError("type", f"unsupported type {m.type}; only VETH (0) is supported")


def _check_peer(m: interface_pb2.Interface) -> str:
    peer = m.veth.peer_if_name
    if not peer:
        raise _FieldError("veth.peer_if_name", "required for VETH; name the other end")
    if peer == m.name:
        raise _FieldError("veth.peer_if_name", f"{peer!r} is this interface itself")
    if "/" in peer:
        raise _FieldError("veth.peer_if_name", f"{peer!r} is not a config name (contains '/')")
    return peer


_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def _check_mac(mac: str) -> str:
    if not mac:
        return ""
    normal = mac.lower()
    if not _MAC.match(normal):
        raise _FieldError("phys_address", f"{mac!r} is not of the form aa:bb:cc:dd:ee:ff")
    if int(normal[:2], 16) & 1:
        raise _FieldError("phys_address", f"{mac!r} is a multicast address; use a unicast one")
    if normal == "00:00:00:00:00:00":
        raise _FieldError("phys_address", "the all-zero address is not a valid MAC")
    return normal


def _check_mtu(mtu: int, addresses: tuple[str, ...]) -> int:
    if mtu != 0 and not MTU_MIN <= mtu <= MTU_MAX:
        raise _FieldError("mtu", f"{mtu} is outside {MTU_MIN}..{MTU_MAX} (0 keeps the default)")
    if mtu != 0 and mtu < IPV6_MIN_MTU and any(":" in a for a in addresses):
        raise _FieldError("mtu", f"{mtu} is below {IPV6_MIN_MTU}, the least IPv6 allows, and "
                                 f"ip_addresses has IPv6 addresses; raise it or drop them")
    return mtu


def _check_addresses(addresses: Any) -> tuple[str, ...]:
    seen: list[str] = []
    for i, text in enumerate(addresses):
        field = f"ip_addresses[{i}]"
        normal = _normalize_address(text, field)
        if normal in seen:
            raise _FieldError(field, f"{text!r} duplicates ip_addresses[{seen.index(normal)}]")
        seen.append(normal)
    return tuple(seen)


def _normalize_address(text: str, field: str = "address") -> str:
    """'2001:db8:0::1/48' -> '2001:db8::1/48'. Requires an explicit prefix length."""
    if "/" not in text:
        raise _FieldError(field, f"{text!r} has no prefix length; write it as addr/prefix")
    try:
        return canonical_interface(text)
    except ValueError as err:
        raise _FieldError(field, f"{text!r} is not an IP address with prefix: {err}") from None


# ---- namespace union --------------------------------------------------------------

# For each namespace type: the field carrying its reference; the rest must stay unset.
_NS_FIELDS = ("pid", "microservice", "name", "filepath")
_NS_OWN_FIELD = {
    _PbNs.PID_REF_NS: "pid",
    _PbNs.MICROSERVICE_REF_NS: "microservice",
    _PbNs.NAMED_NS: "name",
    _PbNs.FILE_REF_NS: "filepath",
}


def _namespace(ns: interface_pb2.Interface.Namespace) -> NamespaceConfig:
    own = _NS_OWN_FIELD.get(ns.type)
    if own is None:
        valid = ", ".join(f"{v.name} ({v.number})" for v in _PbNs.Type.DESCRIPTOR.values)
        raise _FieldError("namespace.type", f"unknown namespace type {ns.type}; use one of "
                                            f"{valid}")
    type_name = _PbNs.Type.Name(ns.type)
    for field in _NS_FIELDS:
        if field != own and getattr(ns, field):
            raise _FieldError(
                f"namespace.{field}",
                f"does not belong to namespace type {type_name}; set namespace.{own} instead "
                f"or change namespace.type",
            )
    return _shared(_NS_BUILDERS[ns.type](ns))


_SHARED_MAX = 4096
_shared_namespaces: dict[NamespaceConfig, NamespaceConfig] = {}


def _shared(ns: NamespaceConfig) -> NamespaceConfig:
    """One object for equal namespaces: 10,000 configs name a few (1.6 MiB as copies)."""
    found = _shared_namespaces.get(ns)
    if found is None:
        if len(_shared_namespaces) >= _SHARED_MAX:
            _shared_namespaces.clear()
        found = _shared_namespaces.setdefault(ns, ns)
    return found


def _pid_ns(ns: interface_pb2.Interface.Namespace) -> NamespaceConfig:
    return NamespaceConfig(kind="pid", pid=ns.pid) if ns.pid else NamespaceConfig()


def _named_ns(ns: interface_pb2.Interface.Namespace) -> NamespaceConfig:
    name = ns.name
    if not name:
        return NamespaceConfig()
    if "/" in name or name in (".", "..") or "\0" in name:
        raise _FieldError("namespace.name", f"{name!r} must be a single file name (no '/')")
    if len(name.encode("utf-8")) > NAME_MAX:
        raise _FieldError("namespace.name", f"longer than {NAME_MAX} bytes")
    return NamespaceConfig(kind="named", name=name)


def _file_ns(ns: interface_pb2.Interface.Namespace) -> NamespaceConfig:
    path = ns.filepath
    if not path:
        return NamespaceConfig()
    if not path.startswith("/") or "\0" in path:
        raise _FieldError("namespace.filepath", f"{path!r} must be an absolute path")
    return NamespaceConfig(kind="file", path=path)


def _microservice_ns(ns: interface_pb2.Interface.Namespace) -> NamespaceConfig:
    if not ns.microservice:
        raise _FieldError("namespace.microservice", "required for MICROSERVICE_REF_NS")
    return NamespaceConfig(kind="microservice", microservice=ns.microservice)


_NS_BUILDERS = {
    _PbNs.PID_REF_NS: _pid_ns,
    _PbNs.MICROSERVICE_REF_NS: _microservice_ns,
    _PbNs.NAMED_NS: _named_ns,
    _PbNs.FILE_REF_NS: _file_ns,
}
