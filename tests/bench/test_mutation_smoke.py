"""bench/mutation.py in small: its operators, and one run that must kill a known mutant and
let a listed equivalent one live. The full run is slow and is not part of the test suite."""

from __future__ import annotations

import json
import math
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


def test_a_stratified_draw_is_proportional_and_leaves_out_listed_equivalents() -> None:
    mutants = [mutation.Mutant(module, "f", line, "a", "b", f"{module} f: {line}", "")
               for module, count in (("a.py", 300), ("b.py", 100), ("c.py", 5))
               for line in range(count)]
    listed = "a.py f: 7"
    mutation.EQUIVALENT[listed] = "a test's own entry"
    try:
        drawn = mutation.stratified(mutants, 81, seed=15)
        assert drawn == mutation.stratified(mutants, 81, seed=15), "the seed fixes the draw"
    finally:
        del mutation.EQUIVALENT[listed]
    counts = {module: sum(m.module == module for m in drawn) for module in ("a.py", "b.py")}
    assert len({m.key for m in drawn}) == 81
    assert abs(counts["a.py"] - 81 * 299 / 404) <= 1 and abs(counts["b.py"] - 81 * 100 / 404) <= 1
    assert listed not in {m.key for m in drawn}


def test_the_lower_bound_is_clopper_pearsons() -> None:
    assert abs(mutation.lower_bound(60, 60) - 0.05 ** (1 / 60)) < 1e-9
    # P(X >= 58 | n=60, p) at the bound is 5%
    p = mutation.lower_bound(58, 60)
    tail = sum(math.comb(60, i) * p**i * (1 - p) ** (60 - i) for i in range(58, 61))
    assert abs(tail - 0.05) < 1e-6
    assert mutation.lower_bound(0, 10) == 0.0


def test_the_files_that_killed_a_modules_mutants_run_first() -> None:
    history = mutation.KillHistory()
    tests = ["t/test_x.py::a", "t/test_mod.py::b", "t/test_y.py::c", "t/test_y.py::d"]
    assert history.order("n/mod.py", tests) == [
        "t/test_mod.py::b", "t/test_x.py::a", "t/test_y.py::c", "t/test_y.py::d"]
    history.note("n/mod.py", "t/test_y.py::d")
    assert history.order("n/mod.py", tests) == [
        "t/test_y.py::c", "t/test_y.py::d", "t/test_mod.py::b", "t/test_x.py::a"]
    assert history.order("n/other.py", tests) == tests


@pytest.mark.root
def test_the_coverage_run_sees_a_shared_helpers_later_tests_and_setuid_children(
    tmp_path: Path,
) -> None:
    """test_memory.py's helper is started by its first test (a module-scoped fixture) and read
    by the others: what it ran at start-up counts for them all. join_socket_group's refusals
    run in a child that went on as nobody: its calls after the switch are seen too."""
    saved = tmp_path / "coverage.json"
    joins = "tests/netlinkd/test_server_startup.py::" \
            "test_the_socket_group_becomes_the_only_supplementary_group"
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "mutation.py"), "--modules", "netlinkd/cli.py",
         "netlinkd/server.py", "--tests", "tests/netlinkd/test_memory.py", joins,
         "--only", "NO-SUCH-MUTANT", "--save-coverage", str(saved)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    coverage = mutation.Coverage.load([saved])
    assert "tests/netlinkd/test_memory.py::test_the_helpers_threads_share_one_malloc_arena" \
        in coverage.tests_for("netlinkd/cli.py", "serve")
    assert {f"{joins}[nonroot-7,4321-4321-[7, 4321]]", f"{joins}[nonroot-7-4321-refused]"} <= \
        set(coverage.tests_for("netlinkd/server.py", "join_socket_group"))


def test_saved_coverage_runs_merge(tmp_path: Path) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    mutation.Coverage({"m.py": {"f": {"t::a": False}}}, {"t::a": 2.0}).save(first)
    mutation.Coverage({"m.py": {"f": {"t::a": True, "t::b": False}, "g": {"t::b": True}}},
                      {"t::b": 3.0}).save(second)
    merged = mutation.Coverage.load([first, second])
    assert merged.callers == {"m.py": {"f": {"t::a": True, "t::b": False}, "g": {"t::b": True}}}
    assert merged.durations == {"t::a": 2.0, "t::b": 3.0}
