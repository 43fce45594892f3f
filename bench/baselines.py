"""`ip -batch` baselines for the same pairs netagent makes: created in place (the peer is
born in its namespace), MAC, MTU, IPv4 + IPv6, UP; deleted with one `ip link del group`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stack import MTU, End, Stack

GROUP = 7


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def create_files(workdir: Path, ends: Sequence[tuple[End, End]]) -> tuple[Path, Path]:
    """`ip -batch` takes no per-line `-n`, so each namespace has its own file: the A side
    creates each pair with the peer placed in B directly."""
    side_a: list[str] = []
    side_b: list[str] = []
    for a, b in ends:
        side_a += [
            f"link add {a.name} address {a.mac} mtu {MTU} group {GROUP} type veth peer name "
            f"{b.name} address {b.mac} mtu {MTU} group {GROUP} netns {b.netns}",
            f"addr add {a.v4} dev {a.name}",
            f"addr add {a.v6} dev {a.name}",
            f"link set {a.name} up",
        ]
        side_b += [f"addr add {b.v4} dev {b.name}", f"addr add {b.v6} dev {b.name}",
                   f"link set {b.name} up"]
    return (_write(workdir / "ip-create-a.batch", side_a),
            _write(workdir / "ip-create-b.batch", side_b))


def ip_create(stack: Stack, ends: Sequence[tuple[End, End]]) -> None:
    file_a, file_b = create_files(stack.workdir, ends)
    ns_a, ns_b = ends[0][0].netns, ends[0][1].netns
    stack.sandbox.run("sh", "-c", f"ip -n {ns_a} -batch {file_a} && ip -n {ns_b} -batch {file_b}")


def ip_delete_group(stack: Stack, netns: str) -> None:
    stack.sandbox.run("ip", "-n", netns, "link", "del", "group", str(GROUP))
