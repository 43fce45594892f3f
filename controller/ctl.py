"""`netagent-ctl`: put/get/del/list interface configs, read and watch statuses, keys.

Global options (etcd, --label, --config) go anywhere on the line, as with etcdctl. The
seed's vpp-agent-ctl spellings (`-put KEY FILE`, `-cvth1`, ...) are rewritten into
subcommands first (controller.ctl_seed).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from controller import (
    __version__,
    config_file,
    ctl_output,
    ctl_seed,
    ctl_status,
    etcd_options,
    keys,
)
from controller.ctl_input import InputError, read_source, to_json
from controller.model import InvalidValue, parse_interface

DEFAULT_LABEL = os.environ.get("MICROSERVICE_LABEL") or "vpp1"
EXIT_PROBLEM, EXIT_USAGE = 1, 2


class CtlError(Exception):
    """A user-facing failure; the message says what to do."""


class _Label(argparse.Action):
    """--label, remembering that it was given (a full key's label must agree with it)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        namespace.label = values
        namespace.label_given = True


def version() -> str:
    return __version__


def _add_globals(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("global options (anywhere on the line)")
    group.add_argument("--label", action=_Label, metavar="LABEL",
                       default=argparse.SUPPRESS if suppress else DEFAULT_LABEL,
                       help="agent label (default $MICROSERVICE_LABEL or vpp1)")
    group.add_argument("--config", metavar="FILE", default=default,
                       help="TOML file whose [etcd] table gives the etcd options (default "
                            f"{config_file.DEFAULT_PATH} when readable)")
    etcd_options.add_arguments(group, suppress_defaults=suppress)


def _add_output(parser: argparse.ArgumentParser, formats: Sequence[str] = ctl_output.FORMATS,
                ) -> None:
    parser.add_argument("-o", "--output", choices=formats, default=formats[0],
                        help=f"output format (default {formats[0]}; json is one array, "
                             "like ip -j)" if "table" in formats else "output format")


_EPILOG = f"""\
exit status: 0 success; 1 a problem (not found, refused input, an interface in ERROR,
no live controller, a timeout); 2 a usage error.

{ctl_seed.ALIAS_HELP}"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netagent-ctl", epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write interface configs into etcd and read what netagent made of them.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    _add_globals(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, text: str, aliases: Sequence[str] = ()) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text, aliases=list(aliases))
        _add_globals(sub, suppress=True)
        return sub

    put = command("put", "store an interface config from a JSON or YAML file, or - for stdin")
    put.add_argument("name", metavar="NAME|KEY",
                     help="interface name, or its full key /vnf-agent/<label>/linux/config/"
                          "v1/interface/<name> (which also gives the label)")
    put.add_argument("file", metavar="FILE", help="JSON or YAML config; - reads stdin")
    put.add_argument("--no-validate", action="store_true",
                     help="store the value without checking it (the controller still will)")
    example = command("put-example", "store the seed's built-in veth1 or veth2 "
                                     "(vpp-agent-ctl -cvth1/-cvth2)")
    example.add_argument("name", choices=sorted(ctl_seed.EXAMPLES))
    show = command("example", "print the seed's built-in veth1 or veth2 config")
    show.add_argument("name", choices=sorted(ctl_seed.EXAMPLES))
    _add_output(show, ("json", "yaml"))
    get = command("get", "print an interface config")
    get.add_argument("name", metavar="NAME|KEY")
    _add_output(get)
    delete = command("del", "delete an interface config", aliases=("delete",))
    delete.add_argument("name", metavar="NAME|KEY")
    _add_output(command("list", "list the configured interfaces", aliases=("ls",)))
    status = command("status", "show what netagent made of each interface")
    status.add_argument("names", nargs="*", metavar="NAME", help="default: every interface")
    _add_output(status)
    status.add_argument("--json", dest="output", action="store_const", const="json",
                        help=argparse.SUPPRESS)
    status.add_argument("--wait", action="store_true",
                        help="wait until the interfaces are settled (not PENDING, a status "
                             "for each config)")
    status.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="with --wait: give up after this long (default 60)")
    watch = command("watch", "print config and status changes as they happen")
    watch.add_argument("-o", "--output", choices=("text", "json"), default="text",
                       help="text lines, or one JSON object per line")
    watch.add_argument("--rev", type=int, default=0, metavar="REVISION",
                       help="start at this etcd revision (default: now)")
    keygen = command("keygen", "create the controller's Ed25519 key pair")
    keygen.add_argument("--signing-key", required=True, help="private key file (mode 0600)")
    keygen.add_argument("--trust-key", required=True, help="trust file for netlinkd")
    keygen.add_argument("--force", action="store_true", help="overwrite existing files")
    role = command("etcd-role", "print (or --apply) the least-privileged etcd role of an "
                                "agent label")
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


def target(args: argparse.Namespace) -> tuple[str, str]:
    """(label, name) of a NAME or full KEY argument; a key's label must match --label."""
    found = keys.split_config_key(args.name)
    if found is None:
        if args.name.startswith("/"):
            raise ValueError(f"{args.name!r} is not a config key; expected "
                             f"{keys.config_key('LABEL', 'NAME')} or a bare NAME")
        keys.config_key(args.label, args.name)
        return args.label, args.name
    label, name = found
    if getattr(args, "label_given", False) and args.label != label:
        raise ValueError(f"the key names label {label!r} but --label is {args.label!r}; "
                         "drop one of them")
    return label, name


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


# ---- commands ---------------------------------------------------------------------------


def cmd_put(client: Any, args: argparse.Namespace) -> int:
    label, name = target(args)
    key = keys.config_key(label, name)
    source = "stdin" if args.file == "-" else args.file
    try:
        value = to_json(read_source(args.file), source)
    except InputError as err:
        raise CtlError(str(err)) from None
    if not args.no_validate:
        try:
            parse_interface(key, value)
        except InvalidValue as err:
            raise CtlError(f"{source} refused: field '{err.field}': {err.problem} "
                           f"(for {key})") from None
    client.put(key, value)
    return 0


def cmd_put_example(client: Any, args: argparse.Namespace) -> int:
    key = keys.config_key(args.label, args.name)
    value = ctl_seed.example_value(args.name)
    parse_interface(key, value)
    client.put(key, value)
    return 0


def cmd_example(args: argparse.Namespace) -> int:
    document = ctl_seed.EXAMPLES[args.name]
    if args.output == "yaml":
        _out(ctl_output.as_yaml([document]).removeprefix("- ").replace("\n  ", "\n"))
    else:
        _out(ctl_seed.example_value(args.name).decode() + "\n")
    return 0


def cmd_get(client: Any, args: argparse.Namespace) -> int:
    label, name = target(args)
    value, _ = client.get(keys.config_key(label, name))
    if value is None:
        raise CtlError(f"interface {name} is not configured for label {label}")
    document = ctl_output.config_document(name, bytes(value))
    _out(ctl_output.render([document], args.output, ctl_output.config_table))
    return 0


def cmd_del(client: Any, args: argparse.Namespace) -> int:
    label, name = target(args)
    if not client.delete(keys.config_key(label, name)):
        raise CtlError(f"interface {name} is not configured for label {label}")
    return 0


def cmd_list(client: Any, args: argparse.Namespace) -> int:
    configs = ctl_status.names_under(client, keys.config_prefix(args.label))
    documents = [ctl_output.config_document(name, raw) for name, raw in sorted(configs.items())]
    if not documents and args.output == "table":
        print(f"netagent-ctl: no interface is configured for label {args.label}",
              file=sys.stderr)
        return 0
    _out(ctl_output.render(documents, args.output, ctl_output.config_table))
    return 0


def cmd_status(client: Any, args: argparse.Namespace) -> int:
    try:
        return ctl_status.run(client, args, _out)
    except ctl_status.StatusError as err:
        raise CtlError(str(err)) from None


def cmd_watch(client: Any, args: argparse.Namespace) -> int:
    from controller import ctl_watch

    return ctl_watch.run(client, args.label, args.output, _out, args.rev or None)


def cmd_keygen(args: argparse.Namespace) -> int:
    from controller.signer import KeyFileExists, generate_keypair

    try:
        key_id = generate_keypair(args.signing_key, args.trust_key, force=args.force)
    except KeyFileExists as err:
        raise CtlError(str(err)) from None
    except OSError as err:
        raise CtlError(f"cannot write key files: {err}") from None
    print(f"key id {key_id}: private key {args.signing_key}, trust line in {args.trust_key}")
    return 0


def cmd_etcd_role(args: argparse.Namespace) -> int:
    from controller import etcd_role

    if not args.apply:
        print("\n".join(etcd_role.etcdctl_commands(args.role_label, args.grant_user)))
        return 0
    client = _client(etcd_settings(args))
    try:
        for line in etcd_role.apply(client, args.role_label, args.grant_user) or ["unchanged"]:
            print(line)
    finally:
        client.close()
    return 0


_WITH_ETCD: dict[str, Callable[[Any, argparse.Namespace], int]] = {
    "put": cmd_put, "put-example": cmd_put_example, "get": cmd_get, "del": cmd_del,
    "delete": cmd_del, "list": cmd_list, "ls": cmd_list, "status": cmd_status,
    "watch": cmd_watch,
}
_OFFLINE: dict[str, Callable[[argparse.Namespace], int]] = {
    "keygen": cmd_keygen, "example": cmd_example, "etcd-role": cmd_etcd_role,
}


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not words:
        parser.print_help()
        return 0
    args = parser.parse_args(ctl_seed.expand_aliases(words))
    try:
        if args.command in _OFFLINE:
            return _OFFLINE[args.command](args)
        keys.config_prefix(args.label)
        client = _client(etcd_settings(args))
        try:
            return _WITH_ETCD[args.command](client, args)
        finally:
            client.close()
    except CtlError as err:
        print(f"netagent-ctl: {err}", file=sys.stderr)
        return EXIT_PROBLEM
    except (ValueError, config_file.ConfigFileError) as err:
        print(f"netagent-ctl: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # etcd3 raises its own untyped errors for connection problems
        from controller.etcd_client import describe_error

        text = describe_error(err)
        print(f"netagent-ctl: {text if 'etcd' in text else 'etcd: ' + text}", file=sys.stderr)
        return EXIT_PROBLEM


if __name__ == "__main__":
    sys.exit(main())
