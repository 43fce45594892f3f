"""`netlinkd serve` and `netlinkd audit ...`: argument and config parsing, start-up order."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tomllib
import typing

import netagent_log
from netlinkd import __version__
from netlinkd.errors import StartupError

if typing.TYPE_CHECKING:
    from netlinkd.server import ServeOptions

log = logging.getLogger("netlinkd")
DEFAULT_CONFIG = "/etc/netagent/netagent.toml"
_REQUIRED = " (required unless set in [netlinkd])"
# option: (default, metavar, help)
OPTIONS: dict[str, tuple[str | None, str, str]] = {
    "socket": (None, "PATH", "Unix socket to listen on" + _REQUIRED),
    "trust_key": (None, "FILE", "trusted public keys, one 'ed25519 <base64> [comment]' per "
                  "line; SIGHUP re-reads it" + _REQUIRED),
    "audit_log": (None, "FILE", "append-only, hash-chained audit log" + _REQUIRED),
    "state_dir": ("/var/lib/netagent", "DIR",
                  "persisted replay state and audit head (default /var/lib/netagent)"),
    "policy": (None, "FILE", "policy TOML file: limits and namespace allow-list (default: "
               "built-in)"),
    "socket_group": (None, "GID_OR_NAME",
                     "group allowed to connect to the socket (default 0, root's group)"),
    "controller_user": (None, "UID_OR_NAME",
                        "the controller's user: its connections are never crowded out by "
                        "other uids' (root's never are either)"),
    "log_level": ("INFO", "LEVEL", "DEBUG, INFO, WARNING or ERROR, in any case (default INFO)"),
    "log_format": ("text", "FORMAT", "text: one key=value line per event (no timestamp under "
                   "journald); json: one JSON object per line (default text)"),
}
DEFAULTS = {option: default for option, (default, _, _) in OPTIONS.items()}
REQUIRED = ("socket", "trust_key", "audit_log")
# The helper speaks gRPC over a Unix socket, never TLS. Unless these fail to import, asyncio
# loads `ssl` and hashlib OpenSSL's digests: libssl and libcrypto, 4.5 MiB of the helper's
# RSS. hashlib then uses CPython's own SHA-256 (the audit chain's and the batch digests).
# argparse's help formatter imports shutil, which imports bz2 and lzma (0.3 MiB with their
# libraries); the helper compresses nothing.
NOT_LOADED_WHEN_SERVING = ("ssl", "_ssl", "_hashlib", "bz2", "lzma")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netlinkd", description="netagent privileged helper")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve signed batches on a Unix socket")
    serve.add_argument("--config", metavar="FILE",
                       help=f"TOML file with a [netlinkd] table (default {DEFAULT_CONFIG})")
    for option, (_default, metavar, text) in OPTIONS.items():
        serve.add_argument("--" + option.replace("_", "-"), dest=option, default=None,
                           metavar=metavar, help=text)
    from netagent_audit import cli as audit_cli  # always installed: netlinkd imports it

    audit_cli.register(commands)
    return parser


def load_config_table(path: str | None) -> dict[str, object]:
    """The [netlinkd] table of the config file; the default file is optional."""
    chosen = path or DEFAULT_CONFIG
    if path is None and not os.path.exists(chosen):
        return {}
    try:
        with open(chosen, "rb") as handle:
            document = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise StartupError(f"cannot read config file {chosen}: {exc}") from exc
    table = document.get("netlinkd", {})
    if not isinstance(table, dict):
        raise StartupError(f"config file {chosen}: [netlinkd] must be a table")
    return table


def merge_options(args: argparse.Namespace) -> ServeOptions:
    """Command-line flags override the config file, which overrides built-in defaults."""
    from netlinkd.server import ServeOptions

    values = dict(DEFAULTS)
    for key, value in load_config_table(args.config).items():
        if key not in DEFAULTS:
            raise StartupError(f"config [netlinkd]: unknown key {key!r}; known: {sorted(DEFAULTS)}")
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise StartupError(f"config [netlinkd]: {key} must be a string")
        values[key] = str(value)
    values.update({key: getattr(args, key) for key in DEFAULTS if getattr(args, key) is not None})
    level = str(values["log_level"]).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise StartupError(f"log level {values['log_level']!r}: use DEBUG, INFO, WARNING, ERROR")
    values["log_level"] = level
    if values["log_format"] not in netagent_log.FORMATS:
        raise StartupError(f"log format {values['log_format']!r}: use "
                           f"{' or '.join(netagent_log.FORMATS)}")
    missing = [k for k in REQUIRED if not values[k]]
    if missing:
        flags = ", ".join("--" + k.replace("_", "-") for k in missing)
        raise StartupError(f"missing required option(s) {flags} (flag or [netlinkd] in config)")
    return ServeOptions(**values)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:  # before anything imports asyncio, hashlib or grpc
        for name in NOT_LOADED_WHEN_SERVING:
            sys.modules.setdefault(name, None)  # type: ignore[arg-type]
        # grpc.aio takes only `Self` from typing_extensions (0.3 MiB), which typing has
        sys.modules.setdefault("typing_extensions", typing)
    args = build_parser().parse_args(argv)
    if args.command != "serve":
        return int(args.func(args))
    try:
        options = merge_options(args)
        netagent_log.setup(options.log_level, options.log_format)
        return serve(options)
    except StartupError as exc:
        print(f"netlinkd: {exc}", file=sys.stderr)
        return 2


SWITCH_INTERVAL_S = 0.0005
"""How long a thread keeps the GIL while another waits (Python's default: 5 ms): the netlink
thread waits for it after every socket call while the link monitor parses (bench/gil_wait.py)."""


def serve(options: ServeOptions) -> int:
    from netlinkd import allocator, server

    allocator.use_one_arena()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    helper = server.start_helper(options, __version__)
    log.info("netlinkd %s serving on %s", __version__, options.socket)
    helper.run()
    return 0
