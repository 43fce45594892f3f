"""`netagent-audit verify|show` (also `netlinkd audit ...`): offline, unprivileged.

verify: every line is canonical JSON, its `hash` matches, its `prev` is the previous `hash` and
its `n` the previous `n` + 1 (across rotated files); each intent's batch verifies against the
trust keys, every field it states about the batch equals the signed batch, its `ts` is within
the time window of the signed time, and sequences rise per key and epoch; the log reaches the
helper's recorded head (state dir) and any `--expect-head` taken from the journal.
Exit 0 = intact, 1 = tampered or damaged, 2 = cannot run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib

from netagent_audit import chain, show
from netagent_audit.records import GENESIS_HASH, HEAD_FILE, Head
from netagent_audit.trustfile import PublicKey, TrustedKey, TrustFormatError, parse_trust_text

EXIT_OK = 0
EXIT_TAMPERED = 1
EXIT_UNUSABLE = 2
DEFAULT_STATE_DIR = "/var/lib/netagent"
DEFAULT_CONFIG = "/etc/netagent/netagent.toml"


def load_trust(paths: list[str]) -> dict[str, TrustedKey]:
    keys: dict[str, TrustedKey] = {}
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            keys.update(parse_trust_text(handle.read(), path))
    return keys


def chain_state(trust_paths: list[str], window_s: int = 60) -> chain.ChainState:
    keys = load_trust(trust_paths)

    def lookup(key_id: str) -> PublicKey | None:
        found = keys.get(key_id)
        return None if found is None else found.public_key

    return chain.ChainState(keys=lookup, window_ms=window_s * 1000)


def configured_state_dir(audit_log: str, config: str) -> str | None:
    """The helper's state dir from its config file, if that config names this very log."""
    try:
        with open(config, "rb") as handle:
            table = tomllib.load(handle).get("netlinkd", {})
        log, state = table.get("audit_log"), table.get("state_dir", DEFAULT_STATE_DIR)
        if isinstance(log, str) and isinstance(state, str) and os.path.samefile(log, audit_log):
            return state
    except (OSError, tomllib.TOMLDecodeError, AttributeError):
        pass
    return None


def read_head(args: argparse.Namespace) -> tuple[Head | None, str]:
    """The helper's recorded head, and a note when it is not checked."""
    state_dir = args.state_dir or configured_state_dir(args.audit_log, args.config)
    if state_dir is None:
        return None, "note: the helper's head was not checked; pass --state-dir"
    path = os.path.join(state_dir, HEAD_FILE)
    try:
        with open(path, "rb") as handle:
            return Head.decode(handle.read(), path), ""
    except FileNotFoundError:
        raise ValueError(f"{path} is missing: the helper's head was deleted") from None


def run_verify(args: argparse.Namespace) -> int:
    try:
        state = chain_state(args.trust_key, args.time_window)
        head, note = read_head(args)
        missing = chain.missing_rotated(args.audit_log) if args.include_rotated else []
        failure = None
        for segment in chain.chain_segments(args.audit_log, args.include_rotated):
            state.prev = None  # after a gap, the next file starts from its `rotated` record
            failure = failure or chain.verify_files(segment, state)
        first_n = min(state.hashes.values(), default=0)
    except (OSError, ValueError, TrustFormatError) as exc:
        print(f"audit verify: cannot check {args.audit_log}: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    problems = []
    if failure is not None:
        problems.append(f"{failure.path}: record {failure.index}: {failure.reason}")
    if missing:
        problems.append(
            f"missing rotated file(s): {', '.join(missing)}; every {args.audit_log}.N below "
            "the highest one present must exist (a file was deleted or renamed)"
        )
    anchors = [("the helper's head", head), *(("--expect-head", h) for h in args.expect_head)]
    for name, anchor in anchors:
        reason = None if anchor is None or failure else chain.check_head(anchor, state, first_n)
        if reason:
            problems.append(f"{name} (record {anchor.n if anchor else '?'}): {reason}")
    for problem in problems:
        print(f"FAILED: {problem}")
    if problems:
        return EXIT_TAMPERED
    print(
        f"OK: {state.count} records, {state.first_ts or '-'} .. {state.last_ts or '-'}\n"
        f"last hash: {state.prev or GENESIS_HASH}\nhead: {state.n}:{state.prev or GENESIS_HASH}"
    )
    if note:
        print(note)
    elif head is not None and state.n > head.n:
        print(f"note: {state.n - head.n} record(s) after the helper's recorded head")
    return check_anchor(args.expect_last_hash, state)


def check_anchor(anchor: str | None, state: chain.ChainState) -> int:
    if anchor is None:
        return EXIT_OK
    if anchor.lower() == (state.prev or GENESIS_HASH):
        print("anchor: matches the last record")
        return EXIT_OK
    if anchor.lower() in state.hashes:
        print("anchor: found inside the chain; records were appended after it")
        return EXIT_OK
    print(f"FAILED: anchor {anchor} is not in the chain: the tail was truncated or rewritten")
    return EXIT_TAMPERED


def run_show(args: argparse.Namespace) -> int:
    try:
        paths = chain.log_files(args.audit_log, args.include_rotated)
        for path in paths:
            os.stat(path)
        entries = show.timeline(chain.read_records(paths))
    except OSError as exc:
        print(f"audit show: cannot read {args.audit_log}: {exc.strerror}", file=sys.stderr)
        return EXIT_UNUSABLE
    for entry in entries:
        if show.wanted(entry, args):
            print(json.dumps(entry, sort_keys=True) if args.json else show.render(entry))
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    audit = subparsers.add_parser("audit", help="check or read the audit log")
    add_commands(audit)


def add_commands(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="audit_command", required=True)
    verify = commands.add_parser("verify", help="check the hash chain and intent signatures")
    verify.add_argument("--audit-log", required=True)
    verify.add_argument("--trust-key", required=True, action="append", help="repeatable")
    verify.add_argument("--include-rotated", action="store_true", help="also check <log>.N")
    verify.add_argument("--state-dir", help=f"the helper's state dir, holding {HEAD_FILE} "
                        "(default: the config's state_dir when its audit_log is this log)")
    verify.add_argument("--config", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    verify.add_argument("--expect-head", action="append", default=[], type=Head.parse,
                        metavar="N:HASH", help="a head the helper logged (journal); repeatable")
    verify.add_argument("--expect-last-hash", help="anchor recorded earlier (detects truncation)")
    verify.add_argument("--time-window", type=int, default=60, metavar="SECONDS",
                        help="the helper's time_window_seconds (default 60)")
    verify.set_defaults(func=run_verify)
    show_parser = commands.add_parser("show", help="print a timeline of batches")
    show_parser.add_argument("--audit-log", required=True)
    show_parser.add_argument("--interface")
    show_parser.add_argument("--since", type=show.parse_time)
    show_parser.add_argument("--until", type=show.parse_time)
    show_parser.add_argument("--verdict", choices=show.VERDICTS)
    show_parser.add_argument("--include-rotated", action="store_true")
    show_parser.add_argument("--json", action="store_true", help="one JSON object per line")
    show_parser.set_defaults(func=run_show)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netagent-audit", description="the helper's audit log")
    add_commands(parser)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code
