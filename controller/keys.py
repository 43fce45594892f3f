"""etcd key builders and parsers for interface config and status.

Pure: no I/O, and no etcd3, docker, grpc or pyroute2 imports.
"""

from __future__ import annotations

_CONFIG = "/vnf-agent/{label}/linux/config/v1/interface/"
_STATUS = "/vnf-agent/{label}/linux/status/v1/interface/"


def _segment(what: str, value: str) -> str:
    if not value or "/" in value:
        raise ValueError(f"{what} {value!r} must be non-empty and contain no '/'")
    return value


def config_prefix(label: str) -> str:
    return _CONFIG.format(label=_segment("agent label", label))


def config_key(label: str, name: str) -> str:
    return config_prefix(label) + _segment("interface name", name)


def status_prefix(label: str) -> str:
    return _STATUS.format(label=_segment("agent label", label))


def status_key(label: str, name: str) -> str:
    return status_prefix(label) + _segment("interface name", name)


def name_from_config_key(label: str, key: str) -> str | None:
    """The interface name of a key directly under the config prefix, else None."""
    prefix = config_prefix(label)
    if not key.startswith(prefix):
        return None
    name = key[len(prefix) :]
    return name if name and "/" not in name else None


_CONFIG_PARTS = _CONFIG.split("{label}")


def split_config_key(key: str) -> tuple[str, str] | None:
    """`/vnf-agent/<label>/linux/config/v1/interface/<name>` -> (label, name), else None."""
    head, tail = _CONFIG_PARTS
    if not key.startswith(head):
        return None
    label, sep, name = key[len(head):].partition(tail)
    if not sep or not label or "/" in label or not name or "/" in name:
        return None
    return label, name

