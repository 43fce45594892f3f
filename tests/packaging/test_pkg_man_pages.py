"""The man pages name every long option the commands' --help shows."""

from __future__ import annotations

import re
import subprocess

import pytest
from pkg_common import PACKAGING, REPO

COMMANDS = {
    "netlinkd.8": [["netlinkd", "serve"], ["netlinkd", "audit", "verify"],
                   ["netlinkd", "audit", "show"]],
    "netagent-controller.8": [["netagent-controller", "run"]],
    "netagent-ctl.1": [["netagent-ctl", *command] for command in (
        [], ["put"], ["put-example"], ["example"], ["get"], ["del"], ["list"], ["status"],
        ["watch"], ["keygen"], ["etcd-role"])],
}


def long_options(argv: list[str]) -> set[str]:
    tool = str(REPO / ".venv" / "bin" / argv[0])
    result = subprocess.run([tool, *argv[1:], "--help"], capture_output=True, text=True,
                            check=True)
    return set(re.findall(r"--[a-z][a-z-]+", result.stdout)) - {"--help"}


def documented(page: str) -> str:
    return (PACKAGING / "man" / page).read_text().replace("\\-", "-")


@pytest.mark.parametrize("page", sorted(COMMANDS))
def test_man_page_names_every_option(page: str) -> None:
    text = documented(page)
    missing = {f"{' '.join(argv)} {option}" for argv in COMMANDS[page]
               for option in long_options(argv) if option not in text}
    assert not missing, f"{page} lacks {sorted(missing)}"


def test_man_pages_render() -> None:
    for page in COMMANDS:
        result = subprocess.run(["man", "-l", str(PACKAGING / "man" / page)],
                                capture_output=True, text=True, check=False,
                                env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin"})
        assert result.returncode == 0 and "NAME" in result.stdout, result.stderr
