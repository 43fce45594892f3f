"""`netlinkd serve` and `netlinkd audit ...`: argument and config parsing, start-up order."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import tomllib
from importlib import metadata

import netagent_log
from netlinkd.errors import StartupError
from netlinkd.server import ServeOptions

log = logging.getLogger("netlinkd")
DEFAULT_CONFIG = "/etc/netagent/netagent.toml"
DEFAULTS: dict[str, str | None] = {
    "socket": None,
    "trust_key": None,
    "audit_log": None,
    "state_dir": "/var/lib/netagent",
    "policy": None,
    "socket_group": None,
    "log_level": "INFO",
    "log_format": "text",
}
REQUIRED = ("socket", "trust_key", "audit_log")
_REQUIRED_NOTE = "(required unless set in [netlinkd])"
OPTION_HELP: dict[str, tuple[str, str]] = {
    "socket": ("PATH", f"Unix socket to listen on {_REQUIRED_NOTE}"),
    "trust_key": ("FILE", f"trusted public keys, one 'ed25519 <base64> [comment]' per line; "
                          f"SIGHUP re-reads it {_REQUIRED_NOTE}"),
    "audit_log": ("FILE", f"append-only, hash-chained audit log {_REQUIRED_NOTE}"),
    "state_dir": ("DIR", f"persisted replay state (default {DEFAULTS['state_dir']})"),
    "policy": ("FILE", "policy TOML file: limits and namespace allow-list (default: built-in)"),
    "socket_group": ("GID_OR_NAME",
                     "group allowed to connect to the socket (default 0, root's group)"),
    "log_level": ("LEVEL", "DEBUG, INFO, WARNING or ERROR, in any case (default INFO)"),
    "log_format": ("FORMAT", "text: one key=value line per event (no timestamp under "
                             "journald); json: one JSON object per line (default text)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netlinkd", description="netagent privileged helper")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve signed batches on a Unix socket")
    serve.add_argument("--config", metavar="FILE",
                       help=f"TOML file with a [netlinkd] table (default {DEFAULT_CONFIG})")
    for option in DEFAULTS:
        metavar, text = OPTION_HELP[option]
        serve.add_argument("--" + option.replace("_", "-"), dest=option, default=None,
                           metavar=metavar, help=text)
    try:
        audit_cli = importlib.import_module("netagent_audit.cli")
    except ImportError:
        log.debug("netagent_audit is not installed; no audit subcommands")
    else:
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
    values = _merged_values(args)
    del values["log_format"]
    return ServeOptions(**values)  # type: ignore[arg-type]


def merge_log_format(args: argparse.Namespace) -> str:
    return str(_merged_values(args)["log_format"])


def _merged_values(args: argparse.Namespace) -> dict[str, str | None]:
    table = load_config_table(args.config)
    values = dict(DEFAULTS)
    for key, value in table.items():
        if key not in DEFAULTS:
            raise StartupError(f"config [netlinkd]: unknown key {key!r}; known: {sorted(DEFAULTS)}")
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise StartupError(f"config [netlinkd]: {key} must be a string")
        values[key] = str(value)
    for key in DEFAULTS:
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
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
    return values


def _version() -> str:
    try:
        return metadata.version("netagent")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "serve":
        handler = getattr(args, "func", None)
        if handler is None:
            parser.error(f"{args.command}: no handler registered")
        code: int = handler(args)
        return code
    try:
        options = merge_options(args)
        netagent_log.setup(options.log_level, merge_log_format(args))
        return serve(options)
    except StartupError as exc:
        print(f"netlinkd: {exc}", file=sys.stderr)
        return 2


def serve(options: ServeOptions) -> int:
    from netlinkd.server import start_helper

    helper = start_helper(options, _version())
    log.info("netlinkd %s serving on %s", _version(), options.socket)
    helper.run()
    return 0
