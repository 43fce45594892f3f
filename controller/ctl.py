"""`netagent-ctl`: put/get/del/list interface configs, read statuses, generate keys."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from controller import config_file, etcd_options, keys
from controller.model import InvalidValue, parse_interface


class CtlError(Exception):
    """A user-facing failure; the message says what to do."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netagent-ctl")
    etcd_options.add_arguments(parser)
    parser.add_argument("--config", metavar="FILE",
                        help="TOML file whose [etcd] table gives the etcd options (default "
                             f"{config_file.DEFAULT_PATH} when readable)")
    parser.add_argument("--label", default=os.environ.get("MICROSERVICE_LABEL") or "vpp1",
                        help="agent label (default $MICROSERVICE_LABEL or vpp1)")
    commands = parser.add_subparsers(dest="command", required=True)
    put = commands.add_parser("put", help="store an interface config (JSON file or -)")
    put.add_argument("name", metavar="NAME", help="interface name, the key's last segment")
    put.add_argument("file", metavar="FILE.json", help="the JSON config, or - for stdin")
    put.add_argument("--no-validate", action="store_true",
                     help="store the value even if the controller would reject it")
    commands.add_parser("get", help="print an interface config").add_argument("name")
    commands.add_parser("del", help="delete an interface config").add_argument("name")
    commands.add_parser("list", help="list configured interface names")
    status = commands.add_parser("status", help="print NAME STATE REASON lines")
    status.add_argument("name", nargs="?")
    status.add_argument("--json", action="store_true", help="print JSON instead")
    keygen = commands.add_parser("keygen", help="create the controller's Ed25519 key pair")
    keygen.add_argument("--signing-key", required=True, help="private key file (mode 0600)")
    keygen.add_argument("--trust-key", required=True, help="trust file for netlinkd")
    keygen.add_argument("--force", action="store_true", help="overwrite existing files")
    role = commands.add_parser("etcd-role", help="print (or --apply) the least-privileged etcd "
                                                 "role of an agent label")
    role.add_argument("role_label", metavar="LABEL")
    role.add_argument("--apply", action="store_true",
                      help="create the role in etcd (as an etcd root user) instead of printing "
                           "etcdctl commands")
    role.add_argument("--grant-user", metavar="USER", help="also give the role to this user")
    return parser


def etcd_settings(args: argparse.Namespace) -> etcd_options.EtcdOptions:
    """The etcd options from flags, ETCDCTL_* variables and the config file's [etcd] table."""
    path = args.config
    if path is None and os.access(config_file.DEFAULT_PATH, os.R_OK):
        path = config_file.DEFAULT_PATH
    table = config_file.load_section(path, "etcd") if path else {}
    return etcd_options.resolve(args, table, file_name=f"config file {path}")


def _client(settings: etcd_options.EtcdOptions) -> Any:
    from controller.etcd_client import ClientFactory, connected_client

    return connected_client(ClientFactory(settings))


def _read_value(path: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as err:
        raise CtlError(f"cannot read {path}: {err.strerror}") from None


def cmd_put(client: Any, label: str, args: argparse.Namespace) -> None:
    key = keys.config_key(label, args.name)
    value = _read_value(args.file)
    if not args.no_validate:
        try:
            parse_interface(key, value)
        except InvalidValue as err:
            raise CtlError(f"{err} (the controller would mark it ERROR; --no-validate stores "
                           "it anyway)") from None
    client.put(key, value)


def cmd_get(client: Any, label: str, args: argparse.Namespace) -> None:
    value, _ = client.get(keys.config_key(label, args.name))
    if value is None:
        raise CtlError(f"interface {args.name} is not configured for label {label}")
    sys.stdout.write(value.decode(errors="replace").rstrip("\n") + "\n")


def cmd_del(client: Any, label: str, args: argparse.Namespace) -> None:
    if not client.delete(keys.config_key(label, args.name)):
        raise CtlError(f"interface {args.name} is not configured for label {label}")


def _names_under(client: Any, prefix: str) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for value, meta in client.get_prefix(prefix):
        name = meta.key.decode(errors="replace")[len(prefix):]
        if name and "/" not in name:
            found[name] = bytes(value)
    return found


def cmd_list(client: Any, label: str, args: argparse.Namespace) -> None:
    for name in sorted(_names_under(client, keys.config_prefix(label))):
        print(name)


def _statuses(client: Any, label: str, name: str | None) -> dict[str, dict[str, Any]]:
    if name is not None:
        value, _ = client.get(keys.status_key(label, name))
        raw = {} if value is None else {name: bytes(value)}
    else:
        raw = _names_under(client, keys.status_prefix(label))
    result: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        try:
            result[key] = dict(json.loads(value))
        except ValueError:
            result[key] = {"state": "UNKNOWN", "reason": f"unreadable status {value!r}"}
    return result


def cmd_status(client: Any, label: str, args: argparse.Namespace) -> None:
    from controller import liveness

    controller = liveness.read(client, label)
    if not controller.alive:  # said first, so stale statuses are never read as current
        print(f"netagent-ctl: {controller.describe(label)}", file=sys.stderr)
    statuses = _statuses(client, label, args.name)
    if args.name is not None and not statuses:
        raise CtlError(f"no status for interface {args.name} (is the controller running?)")
    if args.json:
        print(json.dumps(statuses, indent=2, sort_keys=True))
        return
    for name, status in sorted(statuses.items()):
        line = f"{name} {status.get('state', '?')} {status.get('reason', '')}".rstrip()
        for warning in status.get("warnings", []):
            line += f" [warning: {warning}]"
        print(line)


def cmd_keygen(args: argparse.Namespace) -> None:
    from controller.signer import KeyFileExists, generate_keypair

    try:
        key_id = generate_keypair(args.signing_key, args.trust_key, force=args.force)
    except KeyFileExists as err:
        raise CtlError(str(err)) from None
    except OSError as err:
        raise CtlError(f"cannot write key files: {err}") from None
    print(f"key id {key_id}: private key {args.signing_key}, trust line in {args.trust_key}")


def cmd_etcd_role(args: argparse.Namespace) -> None:
    from controller import etcd_role

    if not args.apply:
        print("\n".join(etcd_role.etcdctl_commands(args.role_label, args.grant_user)))
        return
    client = _client(etcd_settings(args))
    try:
        for line in etcd_role.apply(client, args.role_label, args.grant_user) or ["unchanged"]:
            print(line)
    finally:
        client.close()


_COMMANDS = {"put": cmd_put, "get": cmd_get, "del": cmd_del, "list": cmd_list,
             "status": cmd_status}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "keygen":
            cmd_keygen(args)
            return 0
        if args.command == "etcd-role":
            cmd_etcd_role(args)
            return 0
        keys.config_prefix(args.label)
        settings = etcd_settings(args)
        client = _client(settings)
        try:
            _COMMANDS[args.command](client, args.label, args)
        finally:
            client.close()
    except CtlError as err:
        print(f"netagent-ctl: {err}", file=sys.stderr)
        return 1
    except (ValueError, config_file.ConfigFileError) as err:
        print(f"netagent-ctl: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # etcd3 raises its own untyped errors for connection problems
        from controller.etcd_client import describe_error

        text = describe_error(err)
        print(f"netagent-ctl: {text if 'etcd' in text else 'etcd: ' + text}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
