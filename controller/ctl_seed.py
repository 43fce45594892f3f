"""The seed's `vpp-agent-ctl` spellings (`-put KEY FILE`, `-cvth1`, ...) and its built-in
veth1/veth2 example, for `netagent-ctl`.

Pure: no I/O. The aliases are rewritten into subcommands before argparse sees them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

EXAMPLES: dict[str, dict[str, Any]] = {
    # The seed's veth1-veth2 pair: named namespaces ns1/ns2, 192.168.22.1/24 and .2/24, and
    # the IPv6 addresses and MACs of the seed's veth1.json and veth2.json. Both addresses
    # are stored (the seed's tool overwrote the IPv4 one).
    "veth1": {"enabled": True, "mtu": 1500,
              "ip_addresses": ["192.168.22.1/24", "2001:db8:0:0:0:ff00:89e3:bb42/48"],
              "namespace": {"name": "ns1", "type": 2}, "name": "veth1",
              "phys_address": "d2:74:8c:12:67:d2", "type": 0,
              "veth": {"peer_if_name": "veth2"}},
    "veth2": {"enabled": True, "mtu": 1500,
              "ip_addresses": ["192.168.22.2/24", "2001:842:0:0:0:ff00:13c7:1245/48"],
              "namespace": {"name": "ns2", "type": 2}, "name": "veth2",
              "phys_address": "92:c7:42:67:ab:cd", "type": 0,
              "veth": {"peer_if_name": "veth1"}},
}

ALIASES: dict[str, tuple[str, ...]] = {
    "-put": ("put",),
    "-get": ("get",),
    "-del": ("del",),
    "-list": ("list",),
    "-cvth1": ("put-example", "veth1"),
    "-cvth2": ("put-example", "veth2"),
    "-dvth1": ("del", "veth1"),
    "-dvth2": ("del", "veth2"),
}
"""vpp-agent-ctl spelling -> netagent-ctl subcommand (arguments that follow are kept)."""

ALIAS_HELP = """\
vpp-agent-ctl spellings (the seed's commands) work as written:
  -put KEY FILE   put KEY FILE (KEY: a full /vnf-agent/<label>/... key or a name)
  -get KEY        get KEY
  -del KEY        del KEY
  -list           list
  -cvth1, -cvth2  put-example veth1, put-example veth2 (the seed's built-in pair:
                  ns1/ns2, 192.168.22.1/24 and .2/24 plus IPv6 addresses and MACs)
  -dvth1, -dvth2  del veth1, del veth2"""


def expand_aliases(argv: Sequence[str]) -> list[str]:
    """Replace the first vpp-agent-ctl spelling by its subcommand; others are left alone
    (a second one is an error argparse reports)."""
    result = list(argv)
    for index, word in enumerate(result):
        if word == "--":
            break
        if word in ALIASES:
            return [*result[:index], *ALIASES[word], *result[index + 1:]]
    return result


def example_value(name: str) -> bytes:
    """The stored form of a built-in example: compact JSON, like the seed's files."""
    return json.dumps(EXAMPLES[name]).encode()
