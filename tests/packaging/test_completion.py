"""Bash completion: the shipped scripts are what scripts/gen-completion makes from the
parsers today, and bash completes commands, options and choices with them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from pkg_common import PACKAGING, REPO

PROGRAMS = ("netagent-ctl", "netagent-controller", "netlinkd")


def test_shipped_completions_are_current(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHON=str(REPO / ".venv" / "bin" / "python"))
    subprocess.run([str(REPO / "scripts" / "gen-completion"), str(tmp_path)], check=True,
                   env=env)
    for program in PROGRAMS:
        assert (tmp_path / program).read_text() == (
            PACKAGING / "completion" / program).read_text(), (
            f"packaging/completion/{program} is stale: run scripts/gen-completion")


def complete(program: str, *words: str) -> list[str]:
    """What bash offers for the last of `words` on `program WORDS...`."""
    script = (f"source {PACKAGING / 'completion' / program}\n"
              f"COMP_WORDS=({program} {' '.join(repr(w) for w in words)})\n"
              f"COMP_CWORD={len(words)}\n"
              f"$(complete -p {program} | sed 's/.* -F \\([^ ]*\\) .*/\\1/')\n"
              'printf "%s\\n" "${COMPREPLY[@]}"\n')
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
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
def test_bash_completes(program: str, words: tuple[str, ...], expected: list[str]) -> None:
    assert complete(program, *words) == expected
