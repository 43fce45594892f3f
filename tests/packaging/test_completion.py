"""Bash completion: scripts/gen-completion (which packaging/build runs) makes a script per
command from its parser, the packages install each, and bash completes with them."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pkg_common import PACKAGING, REPO

PROGRAMS = ("netagent-ctl", "netagent-controller", "netlinkd")


@pytest.fixture(scope="module")
def completions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("completion")
    env = dict(os.environ, PYTHON=str(REPO / ".venv" / "bin" / "python"))
    subprocess.run([str(REPO / "scripts" / "gen-completion"), str(out)], check=True, env=env)
    yield out


def test_every_command_has_one_and_the_packages_install_it(completions: Path) -> None:
    nfpm = (PACKAGING / "nfpm.yaml").read_text()
    for program in PROGRAMS:
        assert f"complete -o bashdefault -F _shtab_{program.replace('-', '_')} {program}" in (
            completions / program).read_text()
        assert (f"src: ${{NETAGENT_STAGE}}/completion/{program}\n"
                f"    dst: /usr/share/bash-completion/completions/{program}\n") in nfpm


def complete(script: Path, program: str, *words: str) -> list[str]:
    """What bash offers for the last of `words` on `program WORDS...`."""
    code = (f"source {script}\n"
            f"COMP_WORDS=({program} {' '.join(repr(w) for w in words)})\n"
            f"COMP_CWORD={len(words)}\n"
            f"$(complete -p {program} | sed 's/.* -F \\([^ ]*\\) .*/\\1/')\n"
            'printf "%s\\n" "${COMPREPLY[@]}"\n')
    done = subprocess.run(["bash", "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.split()


@pytest.mark.parametrize(("program", "words", "expected"), [
    ("netagent-ctl", ("st",), ["status"]),
    ("netagent-ctl", ("status", "--w"), ["--wait"]),
    ("netagent-ctl", ("status", "-o", ""), ["table", "json", "yaml"]),
    ("netagent-ctl", ("put-example", ""), ["veth1", "veth2"]),
    ("netagent-ctl", ("list", "--lab"), ["--label"]),
    ("netagent-controller", ("run", "--log-f"), ["--log-format"]),
    ("netlinkd", ("au",), ["audit"]),
])
def test_bash_completes(completions: Path, program: str, words: tuple[str, ...],
                        expected: list[str]) -> None:
    assert complete(completions / program, program, *words) == expected
