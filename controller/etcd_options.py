"""etcd client options, spelled the way etcdctl spells them, for netagent-controller and -ctl.

Each option comes from the first source that sets it: the command-line flag, the `ETCDCTL_*`
environment variable, the config file's `[etcd]` table, the default. Everything is checked
here, at parse time, so a bad value is one line naming the option. No etcd3 or gRPC import:
`controller.etcd_client` turns `EtcdOptions` into a client.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_ENDPOINTS = "127.0.0.1:2379"
FILE_KEYS = ("endpoints", "cacert", "cert", "key", "user", "password_file")
"""Keys of the config file's `[etcd]` table (the long option names, `_` for `-`)."""
ENVIRONMENT = {
    "endpoints": "ETCDCTL_ENDPOINTS",
    "cacert": "ETCDCTL_CACERT",
    "cert": "ETCDCTL_CERT",
    "key": "ETCDCTL_KEY",
    "user": "ETCDCTL_USER",
}
PASSWORD_ENVIRONMENT = "ETCDCTL_PASSWORD"
"""The password of a `--user NAME` given without one and without `--password-file`."""
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)$")


class EtcdOptionError(ValueError):
    """A bad etcd option; the message names the option and where it came from."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    tls: bool

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.netloc}"


@dataclass(frozen=True)
class EtcdOptions:
    endpoints: tuple[Endpoint, ...]
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        return self.endpoints[0].tls

    def describe(self) -> str:
        """The endpoints as URLs, comma-separated: for logs and error messages."""
        return ",".join(endpoint.url for endpoint in self.endpoints)


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                  suppress_defaults: bool = False) -> None:
    """Adds --endpoints (alias --etcd), --cacert, --cert, --key, --user, --password-file.

    `suppress_defaults` leaves absent options out of the namespace, for adding the same
    options to subcommand parsers without them overwriting a value given before the command.
    """
    default = argparse.SUPPRESS if suppress_defaults else None
    group = parser.add_argument_group("etcd") if isinstance(parser, argparse.ArgumentParser) \
        else parser
    group.add_argument("--endpoints", "--etcd", dest="endpoints", default=default,
                       metavar="HOST:PORT,...",
                       help="etcd members, comma-separated HOST:PORT or http(s)://HOST:PORT "
                            f"($ETCDCTL_ENDPOINTS, default {DEFAULT_ENDPOINTS})")
    group.add_argument("--cacert", default=default, metavar="FILE",
                       help="verify etcd's certificate with this CA bundle; implies TLS "
                            "($ETCDCTL_CACERT)")
    group.add_argument("--cert", default=default, metavar="FILE",
                       help="client certificate for TLS ($ETCDCTL_CERT)")
    group.add_argument("--key", default=default, metavar="FILE",
                       help="client certificate's private key ($ETCDCTL_KEY)")
    group.add_argument("--user", default=default, metavar="NAME[:PASSWORD]",
                       help="etcd user; a password here is visible in ps, prefer "
                            "--password-file ($ETCDCTL_USER)")
    group.add_argument("--password-file", default=default, metavar="FILE",
                       help="file whose first line is the etcd user's password "
                            "(else $ETCDCTL_PASSWORD)")


@dataclass(frozen=True)
class _Value:
    text: str
    source: str  # "--cacert", "ETCDCTL_CACERT" or "config file X [etcd] cacert"


def resolve(args: argparse.Namespace, file_table: Mapping[str, object] | None = None,
            environ: Mapping[str, str] | None = None, file_name: str = "config file",
            ) -> EtcdOptions:
    """The options from flags (`args`), then `environ`, then `file_table`, then defaults."""
    environ = os.environ if environ is None else environ
    table = dict(file_table or {})
    unknown = sorted(set(table) - set(FILE_KEYS))
    if unknown:
        raise EtcdOptionError(f"{file_name}: unknown [etcd] keys {unknown}; known keys are "
                              f"{list(FILE_KEYS)}")
    values: dict[str, _Value] = {}
    for name in FILE_KEYS:
        value = _pick(name, args, environ, table, file_name)
        if value is not None:
            values[name] = value
    given = values.get("endpoints", _Value(DEFAULT_ENDPOINTS, "default"))
    endpoints = parse_endpoints(given.text, given.source,
                                tls_files=any(n in values for n in ("cacert", "cert")))
    for name in ("cacert", "cert", "key", "password_file"):
        if name in values:
            _check_readable(values[name])
    if ("cert" in values) != ("key" in values):
        present, missing = ("cert", "key") if "cert" in values else ("key", "cert")
        raise EtcdOptionError(f"{values[present].source}: a client certificate needs both "
                              f"--cert and --key; --{missing} is missing")
    user, password = _credentials(values.get("user"), values.get("password_file"),
                                  environ.get(PASSWORD_ENVIRONMENT))
    return EtcdOptions(
        endpoints=endpoints,
        cacert=_text(values.get("cacert")), cert=_text(values.get("cert")),
        key=_text(values.get("key")), user=user, password=password,
    )


def _pick(name: str, args: argparse.Namespace, environ: Mapping[str, str],
          table: Mapping[str, object], file_name: str) -> _Value | None:
    flag = getattr(args, name, None)
    if flag is not None:
        return _Value(str(flag), "--" + name.replace("_", "-"))
    env = environ.get(ENVIRONMENT.get(name, ""))
    if env:
        return _Value(env, ENVIRONMENT[name])
    if name in table:
        value = table[name]
        source = f"{file_name} [etcd] {name}"
        if isinstance(value, list) and name == "endpoints":
            value = ",".join(str(item) for item in value)
        if not isinstance(value, str) or not value:
            raise EtcdOptionError(f"{source}: expected a non-empty string")
        return _Value(value, source)
    return None


def _text(value: _Value | None) -> str | None:
    return None if value is None else value.text


def parse_endpoints(text: str, source: str = "--endpoints", tls_files: bool = False,
                    ) -> tuple[Endpoint, ...]:
    """`a:2379,https://b:2379` -> endpoints; all plaintext or all TLS. `source` names the
    option in errors; `tls_files` (--cacert or --cert given) makes a bare HOST:PORT TLS."""
    value = _Value(text, source)
    items = [item.strip() for item in value.text.split(",")]
    if not all(items):
        raise EtcdOptionError(f"{value.source}: empty endpoint in {value.text!r}")
    endpoints = tuple(_endpoint(item, value.source, tls_files) for item in items)
    if len({endpoint.tls for endpoint in endpoints}) > 1:
        raise EtcdOptionError(f"{value.source}: mixes http:// and https:// endpoints")
    if len(set(endpoints)) != len(endpoints):
        raise EtcdOptionError(f"{value.source}: an endpoint is listed twice in {value.text!r}")
    return endpoints


def _endpoint(item: str, source: str, tls_files: bool) -> Endpoint:
    scheme, sep, rest = item.partition("://")
    if not sep:
        scheme, rest = ("https" if tls_files else "http"), item
    elif scheme not in ("http", "https"):
        raise EtcdOptionError(f"{source}: {item!r} must be HOST:PORT or http(s)://HOST:PORT")
    elif scheme == "http" and tls_files:
        raise EtcdOptionError(f"{source}: {item!r} is plaintext but --cacert or --cert is "
                              "given; write https:// or drop the TLS options")
    host, colon, port = rest.rstrip("/").rpartition(":")
    if not colon or not _HOST.match(host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise EtcdOptionError(f"{source}: {item!r} must be HOST:PORT or http(s)://HOST:PORT, "
                              "e.g. 127.0.0.1:2379")
    return Endpoint(host=host, port=int(port), tls=scheme == "https")


def _check_readable(value: _Value) -> None:
    try:
        with open(value.text, "rb") as handle:
            handle.read(1)
    except OSError as err:
        raise EtcdOptionError(f"{value.source}: cannot read {value.text}: "
                              f"{err.strerror}") from None


def _credentials(user: _Value | None, password_file: _Value | None,
                 password_env: str | None) -> tuple[str | None, str | None]:
    if user is None:
        if password_file is not None:
            raise EtcdOptionError(f"{password_file.source}: a password needs --user NAME")
        return None, None
    name, colon, password = user.text.partition(":")
    if not name:
        raise EtcdOptionError(f"{user.source}: expected NAME or NAME:PASSWORD")
    if password_file is not None:
        if colon:
            raise EtcdOptionError(f"{user.source}: gives a password and so does "
                                  f"{password_file.source}; keep one")
        password = _first_line(password_file)
    elif not colon and password_env:
        password = password_env
    elif not colon:
        raise EtcdOptionError(f"{user.source}: user {name!r} has no password; add "
                              "--password-file FILE or $ETCDCTL_PASSWORD (NAME:PASSWORD is "
                                  "visible in ps)")
    if not password:
        raise EtcdOptionError(f"{password_file.source if password_file else user.source}: "
                              "the password is empty")
    return name, password


def _first_line(value: _Value) -> str:
    with open(value.text, encoding="utf-8", errors="strict") as handle:
        try:
            return handle.readline().rstrip("\r\n")
        except UnicodeDecodeError:
            raise EtcdOptionError(f"{value.source}: {value.text} is not UTF-8 text") from None
