"""Shared pieces of the benchmarks: a helper in the test harness sandbox, a signing client,
the VETH pairs every benchmark creates, `ip -batch` baselines, timing and ratio printing.

Everything root-side runs inside `tests.harness.HelperSandbox` (scratch mount+network
namespace, private /run/netns); nothing touches the host's links or namespaces.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from controller.helper_client import HelperClient  # noqa: E402
from controller.ops import CreateVethPair, DeleteLink, LinkSpec, NsRef, Op  # noqa: E402
from controller.signer import Signer  # noqa: E402
from tests.harness import HelperSandbox, KeyPair, make_keys  # noqa: E402

if TYPE_CHECKING:
    from stack import Stack
    from suite import Suite

T = TypeVar("T")
NS_A = "bench-a"
NS_B = "bench-b"
MTU = 1400
DEFAULT_MAX_OPS = 256
"""netlinkd's default `max_ops_per_batch` (netlinkd/policy.py)."""


# ---- the pairs ------------------------------------------------------------------------


@dataclass(frozen=True)
class End:
    name: str
    netns: str
    address: str


def address(index: int, end: int) -> str:
    """A /24 of its own per pair: 10.<64 + i/256>.<i%256>.<end>/24."""
    return f"10.{64 + index // 256}.{index % 256}.{end}/24"


def pairs(prefix: str, count: int) -> list[tuple[End, End]]:
    """`count` pairs <prefix><i>a in NS_A <-> <prefix><i>b in NS_B."""
    return [
        (End(f"{prefix}{i}a", NS_A, address(i, 1)), End(f"{prefix}{i}b", NS_B, address(i, 2)))
        for i in range(count)
    ]


def _spec(end: End) -> LinkSpec:
    return LinkSpec(end.name, NsRef.named(end.netns), mtu=MTU, up=True, addresses=(end.address,))


def create_ops(ends: Sequence[tuple[End, End]]) -> list[Op]:
    return [CreateVethPair(_spec(a), _spec(b)) for a, b in ends]


def delete_ops(ends: Sequence[tuple[End, End]]) -> list[Op]:
    return [DeleteLink(a.name, NsRef.named(a.netns)) for a, _b in ends]


# ---- the sandboxed helper ---------------------------------------------------------------


@dataclass
class World:
    workdir: Path
    keys: KeyPair
    helper: HelperSandbox


@contextmanager
def sandboxed_helper(policy_lines: Sequence[str] = ()) -> Iterator[World]:
    """netlinkd in a fresh harness sandbox with NS_A and NS_B made; all gone afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="netagent-bench-"))
    workdir.chmod(0o711)
    try:
        keys = make_keys(workdir)
        policy = workdir / "policy.toml"
        policy.write_text("\n".join(['netns_dirs = ["/var/run/netns", "/run/netns"]',
                                     *policy_lines]) + "\n")
        sandbox = HelperSandbox(workdir, keys.trust_key, policy_file=policy)
        try:
            sandbox.start()
            sandbox.ip("netns", "add", NS_A)
            sandbox.ip("netns", "add", NS_B)
            yield World(workdir, keys, sandbox)
        finally:
            sandbox.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class SignedClient:
    """Signs and submits batches the way the controller does (controller.signer/wire)."""

    def __init__(self, world: World, owner: str = "bench") -> None:
        self.owner = owner
        key = load_pem_private_key(world.keys.signing_key.read_bytes(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        self.signer = Signer(key)  # the key file belongs to the controller's uid, not ours
        self.client = HelperClient(str(world.helper.socket), timeout=600)
        self.batches = 0

    def submit(self, ops: Sequence[Op]) -> None:
        reply = self.client.submit(self.signer.sign(ops, None, self.owner))
        self.batches += 1
        if not reply.ok:
            raise RuntimeError(f"helper refused a batch of {len(ops)} ops: {reply.error}")

    def submit_split(self, ops: Sequence[Op], max_ops: int) -> int:
        """Submit `ops` in consecutive batches of at most `max_ops`; return the batch count."""
        chunks = [ops[i:i + max_ops] for i in range(0, len(ops), max_ops)] or [ops]
        for chunk in chunks:
            self.submit(chunk)
        return len(chunks)

    def close(self) -> None:
        self.client.close()


# ---- the whole stack (bench/run's), for the bulk benchmarks -----------------------------


def bulk_stack(pairs: int) -> tuple[Stack, Suite]:
    """`bench/run`'s stack with room for `pairs` pairs, started with its four namespaces
    and the controller; the caller closes the stack (also when this raises)."""
    import suite as bench  # imports benchlib: not at the top
    from stack import Stack

    stack = Stack([f"max_owned_links = {2 * pairs + 64}", "max_named_namespaces = 64"], [])
    try:
        stack.start()
        stack.add_namespaces(bench.NS_A, bench.NS_B, bench.IP_A, bench.IP_B)
        suite = bench.Suite(stack, bench.Config(
            latency_samples=0, sizes=(pairs,), resync_size=0, rss_interfaces=0,
            resync_interval=None, settle=3.0))
        suite.start_controller()
    except BaseException:
        stack.close()
        raise
    return stack, suite


# ---- ip -batch baseline -----------------------------------------------------------------


def ip_batch_create_files(workdir: Path, ends: Sequence[tuple[End, End]]) -> tuple[Path, Path]:
    """Two batch files: run with `ip -n NS_A -batch` and `ip -n NS_B -batch`.

    `ip -batch` takes no per-line `-n` (iproute2 6.1: 'Object "-n" is unknown'), so the
    A side creates each pair from inside NS_A with the peer placed in NS_B directly.
    """
    side_a: list[str] = []
    side_b: list[str] = []
    for a, b in ends:
        side_a += [
            f"link add {a.name} mtu {MTU} type veth peer name {b.name} netns {NS_B} mtu {MTU}",
            f"addr add {a.address} dev {a.name}",
            f"link set {a.name} up",
        ]
        side_b += [f"addr add {b.address} dev {b.name}", f"link set {b.name} up"]
    return _write(workdir / "create-a.batch", side_a), _write(workdir / "create-b.batch", side_b)


def ip_batch_delete_file(workdir: Path, ends: Sequence[tuple[End, End]]) -> Path:
    return _write(workdir / "delete-a.batch", [f"link del {a.name}" for a, _b in ends])


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def ip_batch(world: World, *runs: tuple[str, Path]) -> float:
    """Seconds for `ip -n NS -batch FILE` of each run in turn, inside the sandbox."""
    script = " && ".join(f"ip -n {ns} -batch {path}" for ns, path in runs)
    seconds, _ = timed(lambda: world.helper.run("sh", "-c", script))
    return seconds


# ---- checking the end state --------------------------------------------------------------


def configured_ends(world: World, netns: str, prefix: str) -> int:
    """How many links named <prefix>... in `netns` are UP with MTU and one IPv4 address."""
    found = 0
    for entry in world.helper.ip_json("addr", "show", netns=netns):
        inet = [a for a in entry.get("addr_info", []) if a.get("family") == "inet"]
        if (
            str(entry.get("ifname", "")).startswith(prefix)
            and "UP" in entry.get("flags", [])
            and entry.get("mtu") == MTU
            and len(inet) == 1
        ):
            found += 1
    return found


def require_pairs(world: World, prefix: str, count: int) -> None:
    got = (configured_ends(world, NS_A, prefix), configured_ends(world, NS_B, prefix))
    if got != (count, count):
        raise RuntimeError(f"expected {count} configured ends of {prefix}* per side, got {got}")


def count_links(world: World, netns: str, prefix: str) -> int:
    entries: list[dict[str, Any]] = world.helper.ip_json("link", "show", netns=netns)
    return sum(1 for entry in entries if str(entry.get("ifname", "")).startswith(prefix))


# ---- timing and printing ----------------------------------------------------------------


def timed(work: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}x" if baseline > 0 else "n/a"


def as_json(data: object) -> str:
    return json.dumps(data, sort_keys=True)
