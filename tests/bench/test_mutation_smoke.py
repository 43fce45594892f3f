"""bench/mutation.py in small: its operators, and one run that must kill a known mutant and
let a listed equivalent one live. The full run is slow and is not part of the test suite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import mutation
from tests.harness import REPO

SOURCE = '''"""Docstring."""
from __future__ import annotations

NAMES = ("a",)


def limit(x: int, flag: bool = True) -> int:
    """Doc."""
    if x <= 1 and flag:
        raise ValueError("message text")
    total: int = x + 1
    log.info("also message text %s", x)
    while flag:
        break
    return total
'''


def _changes(source: str) -> set[str]:
    return {f"{m.function}: {m.before} -> {m.after}" for m in mutation.generate("m.py", source)}


def test_the_operators_and_what_they_leave_alone() -> None:
    assert _changes(SOURCE) == {
        "limit: x <= 1 -> x < 1",
        "limit: 1 -> 2",
        "limit: x <= 1 and flag -> x <= 1 or flag",
        "limit: x + 1 -> x - 1",
        "limit: flag -> not (flag)",
        "limit: log.info(\"also message text %s\", x) -> pass",
        "limit: break -> continue",
        "limit: return total -> return None",
        ": True -> False",
        ': "a" -> \'XXaXX\'',
    }
    keys = [m.key for m in mutation.generate("m.py", SOURCE)]
    assert len(keys) == len(set(keys)), "every mutant has its own key"
    assert "m.py limit: 1 -> 2 #2" in keys


def test_module_level_mutants_name_what_their_statement_binds() -> None:
    names = {m.before: m.names for m in mutation.generate("m.py", SOURCE) if not m.function}
    assert names == {'"a"': ("NAMES",), "True": ("limit",)}  # a default: evaluated by `def`
    assert mutation.functions_using(SOURCE, ("NAMES",)) == []
    assert mutation.functions_using("X = 1\ndef f():\n    return X\n", ("X",)) == ["f"]


@pytest.mark.root
def test_a_run_kills_a_known_mutant_and_spares_a_listed_equivalent(tmp_path: Path) -> None:
    results = {}
    for only, extra in (("check_not_writable_by_others: 0 -> 1", []),
                        ("load_trust_file: os.O_RDONLY | os.O_CLOEXEC ->",
                         ["--check-equivalent"])):
        out = tmp_path / "results.json"
        run = subprocess.run(
            [sys.executable, str(REPO / "bench" / "mutation.py"), "--modules",
             "netlinkd/trust.py", "--tests", "tests/netlinkd/test_trust_file.py", "--only", only,
             "--json", str(out), *extra],
            cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
        assert run.returncode == 0, run.stdout + run.stderr
        [result] = json.loads(out.read_text())
        results[only] = result["status"]
    assert results == {"check_not_writable_by_others: 0 -> 1": "killed",
                       "load_trust_file: os.O_RDONLY | os.O_CLOEXEC ->": "equivalent"}
