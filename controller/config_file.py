"""TOML config file loader shared by netagent-controller and netlinkd. Standard library only."""

from __future__ import annotations

import os
import tomllib

DEFAULT_PATH = "/etc/netagent/netagent.toml"


class ConfigFileError(Exception):
    """The config file cannot be read or has the wrong shape."""


def load_section(path: str | None, section: str) -> dict[str, object]:
    """The `[section]` table of `path` (or of the default file if it exists), else {}.

    An explicit `path` must exist; the default path is optional.
    """
    if path is None:
        if not os.path.exists(DEFAULT_PATH):
            return {}
        path = DEFAULT_PATH
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as err:
        raise ConfigFileError(f"cannot read config file {path}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigFileError(f"config file {path} is not valid TOML: {err}") from None
    table = document.get(section, {})
    if not isinstance(table, dict):
        raise ConfigFileError(f"config file {path}: [{section}] must be a table")
    return dict(table)
