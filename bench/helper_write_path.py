"""The helper's own time per batch, in process (issue 16): the real verifier, replay guard,
audit log (fsync'd, with its head file) and executor behind the front's signature screen
and its hand-off to the thread that runs the batch, without gRPC, the controller or the
link monitor, in a scratch mount and network namespace (private
/run/netns). Each round: a batch creating one veth pair between two named namespaces (MTU,
UP, one address), then a batch deleting it; with `--fresh`, each pair in two namespaces
made for it (as in `bench/run`'s latency phase: the helper has no socket there yet). Prints
p50 and p90 of each kind, of the time before acting (from `submit` until the executor
starts the operations: verification, replay, policy, namespaces, audit), of the time until
the pair is configured (from `submit` until the kernel acknowledged the last end's
addresses and UP: the helper's share of a pair's latency) and the fsyncs (and fdatasyncs)
per batch. `--tree DIR` runs another checkout's `netlinkd`, to compare write paths.

    .venv/bin/python bench/helper_write_path.py [--rounds N] [--fresh] [--tree DIR]  (root)
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SCRATCH_ENV = "NETAGENT_BENCH_SCRATCH"
REPO = Path(__file__).resolve().parent.parent


def _in_scratch_namespaces() -> None:
    """Re-run this script in a new mount and network namespace with /run/netns on tmpfs."""
    shell = 'mkdir -p /run/netns && mount -t tmpfs tmpfs /run/netns && exec "$0" "$@"'
    tree = sys.argv[sys.argv.index("--tree") + 1] if "--tree" in sys.argv else str(REPO)
    env = {**os.environ, SCRATCH_ENV: "1", "PYTHONPATH": tree}
    os.execvpe("unshare", ["unshare", "--mount", "--net", "--propagation", "slave", "sh",
                           "-c", shell, sys.executable, *sys.argv], env)


def _ms(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(rounds: int, fresh: bool) -> None:
    from netagent_api import helper_pb2
    from netlinkd import audit, executor, front, links, policy, server, trust
    from netlinkd.replay import ReplayGuard
    from netlinkd.verify import Verifier

    for name in ("wp1", "wp2"):
        subprocess.run(["ip", "netns", "add", name], check=True)
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    fsyncs = [0]
    real_fsync = os.fsync

    def counting(fd: int) -> None:
        fsyncs[0] += 1
        real_fsync(fd)

    os.fsync = counting  # type: ignore[assignment]
    real_fdatasync = os.fdatasync

    def counting_data(fd: int) -> None:
        fsyncs[0] += 1
        real_fdatasync(fd)

    os.fdatasync = counting_data  # type: ignore[assignment]
    acting: list[float] = []
    apply_all = executor._BatchRun.apply_all

    def timed(run: executor._BatchRun, ops: Any) -> executor.Outcome:
        acting.append(time.perf_counter())
        return apply_all(run, ops)

    executor._BatchRun.apply_all = timed  # type: ignore[method-assign,assignment]
    configured: list[float] = []
    configure_created = links.configure_created

    def configuring(*args: Any) -> Any:
        errors = configure_created(*args)
        configured.append(time.perf_counter())
        return errors

    links.configure_created = configuring  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "trust.keys").write_text(f"ed25519 {base64.b64encode(public).decode()} b\n")
        (root / "trust.keys").chmod(0o600)
        root.chmod(0o700)
        (root / "state").mkdir(mode=0o700)
        log = audit.AuditLog(str(root / "audit.log"), head_path=str(root / "head.json"))
        verifier = Verifier(trust.TrustStore(str(root / "trust.keys")),
                            ReplayGuard(str(root / "state"), 60), 60)
        service = server.Service(verifier, policy.Policy(), executor.Executor(policy.Policy()),
                                 log, os.urandom(16), "bench")
        batches = front.Front(service)._batches  # where the front runs a signed batch
        epoch, key_id = os.urandom(16), trust.key_id_of(public)

        def ns(name: str) -> helper_pb2.NamespaceRef:
            return helper_pb2.NamespaceRef(name=name)

        def create(a: str, b: str) -> helper_pb2.Operation:
            return helper_pb2.Operation(create_veth_pair=helper_pb2.CreateVethPair(
                a=helper_pb2.LinkSpec(name="wpa", netns=ns(a), mtu=1400, up=True,
                                      addresses=["10.77.0.1/24"]),
                b=helper_pb2.LinkSpec(name="wpb", netns=ns(b), mtu=1400, up=True)))

        times: dict[str, list[float]] = {"create": [], "delete": [], "before acting": [],
                                         "until configured": []}
        per_batch: list[int] = []
        pair = ("wp1", "wp2")
        for number in range(2 * rounds):
            if fresh and number % 2 == 0:
                pair = (f"wpa{number}", f"wpb{number}")
                for name in pair:
                    subprocess.run(["ip", "netns", "add", name], check=True)
            op = create(*pair) if number % 2 == 0 else helper_pb2.Operation(
                delete_link=helper_pb2.DeleteLink(name="wpa", netns=ns(pair[0])))
            kind = "create" if number % 2 == 0 else "delete"
            data = helper_pb2.Batch(epoch=epoch, sequence=number + 1, owner="bench",
                                    unix_time_ms=int(time.time() * 1000),
                                    operations=[op]).SerializeToString()
            raw = helper_pb2.SignedBatch(batch=data, signature=private.sign(data),
                                         key_id=key_id).SerializeToString()
            before, start = fsyncs[0], time.perf_counter()
            screened = service.screen(raw)  # returned None before it returned the batch
            assert not isinstance(screened, tuple), screened
            payload: Any = screened or raw
            reply = batches.submit(service.submit, payload, None).result()
            times[kind].append((time.perf_counter() - start) * 1000)
            times["before acting"].append((acting[-1] - start) * 1000)
            if kind == "create":
                times["until configured"].append((configured[-1] - start) * 1000)
            per_batch.append(fsyncs[0] - before)
            if not reply.ok:
                raise SystemExit(f"batch {number + 1} ({kind}) failed: {reply.error}")
        service.close(10)
    for kind, values in times.items():
        print(f"{kind}: p50 {_ms(values, 0.5):.2f} ms, "
              f"p90 {_ms(values, 0.9):.2f} ms ({len(values)} batches)")
    print(f"fsyncs per batch (all, while it ran): {statistics.mean(per_batch):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--fresh", action="store_true",
                        help="each pair in two namespaces made for it")
    parser.add_argument("--tree", help="the checkout whose netlinkd runs")
    args = parser.parse_args()
    if os.environ.get(SCRATCH_ENV) != "1":
        _in_scratch_namespaces()
    run(args.rounds, args.fresh)


if __name__ == "__main__":
    main()
