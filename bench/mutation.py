"""Generated mutation testing of the privileged helper and the reconciler (issue 15, part 7).

    sudo nice -n 19 .venv/bin/python bench/mutation.py [--workers 2] [--modules M ...]
        [--kernel] [--only SUBSTRING] [--sample N | --stratified N] [--seed S] [--json FILE]
        [--save-coverage FILE | --reuse-coverage FILE ...] [--survivors-of JSON]
        [--check-equivalent] [--list]
    .venv/bin/python bench/mutation.py --rescore FILE ... [--bound]

Every mutant is generated from the source's syntax tree, with mutmut's kinds of operators:
a comparison flipped (== and !=, in and not in, is and is not) or its boundary moved
(< and <=, > and >=), `and` and `or` swapped, a `not` dropped, an `if`/`while` condition
negated, an arithmetic operator swapped, an integer constant plus one, a boolean flipped
(a dataclass's `frozen=True` too), a string constant changed, a call statement removed, a
returned value replaced by None, `break` and `continue` swapped. Not mutated: docstrings,
type annotations, `__all__`, the text of f-strings, and the strings of raised exceptions'
and log calls' messages (their wording is not behaviour).

mutmut itself does not fit this project: its per-test statistics come from trampolines in the
pytest process, and most of netlinkd's tests drive a real helper (`netlinkd serve`, as root,
in its own namespaces) in a subprocess, so mutmut would find no test for most mutants.

How it runs, on a copy of the checkout (the checkout itself is never changed):
1. Coverage, once: the chosen test directories run with a call tracer in every Python process
   (a `sitecustomize` on PYTHONPATH, which the helper subprocesses inherit), recording which
   test called which function of the mutated modules, and how long each test took. A
   process that another one started (a helper a module-scoped fixture starts in the first
   test of a file) counts as called by every test it served, up to the test it exited in
   (or, killed, the last of its file): what it ran at start-up is tried on them all.
   `--reuse-coverage` merges saved runs, e.g. a full one and one of the tests added since.
2. Per mutant: the mutated file is written into the copy and pytest -x runs only the tests
   that called the mutant's function (at module level: the tests that called what the
   statement binds or the functions reading it, else every test that called into the module),
   the files whose tests call it in-process first. In front of them all (a targeted stage
   before the wide one, in the same run): the module's own test file and the files whose
   tests killed the module's earlier mutants, most kills first. Only the order changes, so a
   survivor has run the same tests; a kill comes sooner. Each run is a fork of one process
   that has imported pytest and the libraries already. The mutant is killed when the tests
   fail, crash or time out; the first failing test is recorded as its killer. A test that
   reaches the module only through a dataclass's generated methods is not seen as a caller.

The default modules are netlinkd's logic (policy, verify, replay, trust, audit, addresses)
and controller/reconcile.py; `--kernel` adds the modules that mostly drive the kernel
(executor, netns, links, group_delete, rtnl, link_monitor, recovery, mountguard,
privileges) and the fault test of a helper killed mid-batch. Their tests start real helpers:
all of them take hours on 2 CPUs, so `--sample N` tries N mutants of each module, drawn at
random with `--seed` (a sample's score is a sample's). `--stratified N` draws N mutants of
the named modules together, each mutant not listed as equivalent with the same chance (the
modules in proportion to their sizes), in a random order: with the modules run whole, it
gives netlinkd/'s kill rate and a one-sided 95% bound (`--rescore FILES --bound`). The
results are saved after every mutant: a stopped run's sample is the mutants it began (the
start of the random order), and those begun but not finished are "not run", which the bound
counts as survivors. `--survivors-of` tries again only the mutants a saved run left alive,
once tests were added. The rest of netlinkd/ (server, front, cli, errors, allocator) is in
no list: name it with `--modules`.
EQUIVALENT lists the mutants no test can kill, each with its reason: they are not run and
not counted. `--check-equivalent` runs them too; one that is killed is reported as such.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import json
import math
import os
import queue
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOGIC_MODULES = (
    "netlinkd/policy.py", "netlinkd/verify.py", "netlinkd/replay.py", "netlinkd/trust.py",
    "netlinkd/audit.py", "netlinkd/addresses.py", "controller/reconcile.py",
)
KERNEL_MODULES = (
    "netlinkd/executor.py", "netlinkd/netns.py", "netlinkd/links.py",
    "netlinkd/group_delete.py", "netlinkd/rtnl.py", "netlinkd/link_monitor.py",
    "netlinkd/recovery.py", "netlinkd/mountguard.py", "netlinkd/privileges.py",
)
TEST_DIRS = ("tests/unit", "tests/netlinkd", "tests/security", "tests/fuzz")
KERNEL_TESTS = ("tests/faults/test_helper_recovery.py",)  # a helper killed mid-batch, no etcd
PYTEST_ARGS = ("-q", "-p", "no:cacheprovider", "-p", "no:randomly")
TRACE_ENV = "NETAGENT_MUTATION_TRACE"
_MESSAGE_CALLS = frozenset({"debug", "info", "warning", "error", "exception", "critical", "log"})

# Mutants no test can kill: the mutated program behaves the same. Key (as printed by a run)
# -> why. Keep each reason to one line.
_NO_EXEC = ("only O_CLOEXEC is lost: the descriptor is closed before the function returns and "
            "the helper never execs")
_ALWAYS_A_DIRECTORY = ("O_DIRECTORY (and O_CLOEXEC) lost: the path is always the helper's own "
                       "directory, and the descriptor is closed at once; the helper never execs")
EQUIVALENT: dict[str, str] = {
    "netlinkd/policy.py check_mac: \"0\" -> 'XX0XX'":
        "str.strip takes a set of characters, and a MAC's hex digits hold no X",
    "netlinkd/trust.py load_trust_file: os.O_RDONLY | os.O_CLOEXEC -> os.O_RDONLY & os.O_CLOEXEC":
        _NO_EXEC,
    "netlinkd/replay.py ReplayGuard._raise_marks: 1 -> 2":
        "a new mark starts below every sequence: they are uint64, above -1 and -2 alike",
    "netlinkd/replay.py ReplayGuard.flush: True -> False":
        "sort_keys: only the order of replay.json's keys, which is read back into a dict",
    "netlinkd/audit.py _nonempty: return False -> return None":
        "its only caller takes it as a condition, where None is False",
    "netlinkd/audit.py _nonempty: 0 -> 1":
        "a log of 1 byte never gets here: resuming refuses it as corrupt (no record) first",
    **dict.fromkeys((
        "netlinkd/audit.py AuditLog.__init__: -2 -> 2",
        "netlinkd/audit.py AuditLog.__init__: 2 -> 3",
        "netlinkd/audit.py AuditLog.__init__: \"\" -> 'XXXX'",
    ), "the 'nothing logged yet' head: no real head has its hash, whatever its number"),
    **dict.fromkeys((
        "netlinkd/audit.py AuditLog._last_prev: return \"\" -> return None",
        "netlinkd/audit.py AuditLog._last_prev: \"\" -> 'XXXX'",
        "netlinkd/audit.py AuditLog._last_prev: \"\" -> 'XXXX' #2",
    ), "only compared with a recorded head's hash, 64 hex digits: '', 'XXXX' and None all differ"),
    **dict.fromkeys((
        "controller/reconcile.py <module>: True -> False",
        "controller/reconcile.py <module>: True -> False #2",
        "controller/reconcile.py <module>: True -> False #3",
        "controller/reconcile.py <module>: True -> False #4",
    ), "frozen=False on Availability, Block, Plan, _End: nothing assigns to them or hashes them"),
    "controller/reconcile.py _owns_existing: return False -> return None":
        "its only caller takes it as a condition, where None is False",
    "controller/reconcile.py _ready_pairs: name < world.ends[name].config.peer -> "
    "name <= world.ends[name].config.peer":
        "an end never names itself as its peer: the model refuses such a config",
    "netlinkd/audit.py AuditLog.append: 0 -> 1":
        "a log is never 1 byte long: it holds whole records, each longer and ending in a newline",
    "netlinkd/audit.py AuditLog._write: exc.strerror or exc -> exc.strerror and exc":
        "message wording only: the errno's text with or without its '[Errno N]' prefix",
    "netlinkd/audit.py AuditLog._rotate: fsync_dir(os.path.dirname(self.path)) -> pass":
        "the rotation's new file is created by _open, which fsyncs the directory after both "
        "renames already",
    "netlinkd/audit.py AuditLog._shift_rotated: self._keep_rotated - 1 -> self._keep_rotated + 1":
        "the two extra steps move .K+1 and .K, which do not exist: .K was just unlinked and "
        "nothing writes above it",
    "netlinkd/addresses.py LinkAddresses.delete: return [] -> return None":
        "its only caller takes it as a condition, where None is like []",
    "netlinkd/addresses.py LinkAddresses.difference: return \"\" -> return None":
        "its only caller takes it as a condition, where None is like ''",
    **dict.fromkeys((
        "controller/reconcile.py _specs: a.ref is not None and b.ref is not None -> "
        "a.ref is not None or b.ref is not None",
        "controller/reconcile.py _specs: \"only ready pairs are realized\" -> "
        "'XXonly ready pairs are realizedXX'",
    ), "an assertion of an invariant: only ready pairs, both ends resolved, get here"),
    "controller/reconcile.py _deletes: gone.add(link_id(link.name, link.netns)) -> pass":
        "the links to delete come from a dict keyed by link id: none comes twice, so only "
        "the partners' ids in `gone` are ever looked up",
    "controller/reconcile.py _is_link_local: return False -> return None":
        "its only caller takes it as a condition, where None is False",
    "controller/reconcile.py <module>: 2 -> 3":
        "AddAddress's rank in _KIND_ORDER: 3 sorts after SetLink's 0 and DelAddress's 1 as 2 does",
    "controller/reconcile.py _ordered.<locals>.key: \"\" -> 'XXXX'":
        "a SetLink's address key only breaks ties between SetLinks of one link, and a plan "
        "has at most one SetLink per link",
    **dict.fromkeys((
        "netlinkd/group_delete.py GroupDelete.flush: exc.index < 0 -> exc.index <= 0",
        "netlinkd/group_delete.py GroupDelete.flush: 0 -> 1 #2",
    ), "an error about operation 0 gets first_op, which is then 0 too: a namespace's first "
       "mark has its smallest operation index"),
    "netlinkd/group_delete.py GroupDelete._send_marks: True -> False #2":
        "zip's strict=True: transact returns one reply per request, so the lengths always match",
    "netlinkd/netns.py <module>: \"T\" -> 'XXTXX'":
        "a TypeVar's name: only type checkers read it",
    "netlinkd/netns.py _fstatfs_type: \"fstatfs\" -> 'XXfstatfsXX'":
        "message wording only: the failed call's name in an OSError's text",
    "netlinkd/netns.py netlink_socket_in.<locals>.make: \"setns\" -> 'XXsetnsXX'":
        "message wording only: the failed call's name in an OSError's text",
    "netlinkd/netns.py _is_empty_file: return False -> return None":
        "its only caller takes it as a condition, where None is False",
    "netlinkd/netns.py open_ref: \"namespace\" -> 'XXnamespaceXX'":
        "message wording only: what a refused name is called in the refusal's text",
    **dict.fromkeys((
        "netlinkd/netns.py _make_run_dir_shared: \"none\" -> 'XXnoneXX'",
        "netlinkd/netns.py _make_run_dir_shared: \"none\" -> 'XXnoneXX' #2",
        "netlinkd/netns.py _make_run_dir_shared: \"none\" -> 'XXnoneXX' #3",
        "netlinkd/netns.py _make_run_dir_shared: \"none\" -> 'XXnoneXX' #4",
        "netlinkd/netns.py _make_run_dir_shared: \"none\" -> 'XXnoneXX' #5",
    ), "mount(2) ignores the source of a propagation change and the file system type of both "
       "a propagation change and a bind mount"),
    "netlinkd/netns.py describe_ref: \"the helper's namespace\" -> "
    "\"XXthe helper's namespaceXX\"":
        "message wording only: how the helper's own namespace is named in texts",
    "netlinkd/mountguard.py <module>: 0x00050000 -> 327681":
        "SCMP_ACT_ERRNO's data is the errno: 0x00050001 | EPERM is 0x00050001, EPERM being 1",
    "netlinkd/mountguard.py <module>: \"datum_b\" -> 'XXdatum_bXX'":
        "a ctypes field's name: the rule arguments are built by position, the layout is the same",
    "netlinkd/mountguard.py _library: True -> False":
        "use_errno: libseccomp returns its errors as negative values, ctypes' errno is never read",
    "netlinkd/privileges.py <module>: True -> False":
        "use_errno: only the errno in the text of a failed PR_CAP_AMBIENT_CLEAR_ALL, which "
        "cannot fail on a kernel with ambient capabilities (4.3 and later)",
    "netlinkd/privileges.py verify_dropped: \", \" -> 'XX, XX'":
        "message wording only: the separator of the wrong capability sets in the error",
    "netlinkd/mountguard.py install: 0 -> 1":
        "the value of a masked compare is masked too: 1 under MS_BIND|MS_SHARED is 0 (measured: "
        "with it a mount with no flag is still refused)",
    "netlinkd/rtnl.py <module>: 1 -> 2 #6":
        "cost only: RTEXT_FILTER_SKIP_STATS on another bit, so dumps carry counters nobody "
        "asked for and the parser does not read",
    "netlinkd/rtnl.py <module>: 20 -> 21 #3":
        "cost only: an 8 MiB receive buffer instead of 4 MiB; the answers of a WINDOW of "
        "requests and the event bursts of the tests fit either",
    "netlinkd/links.py peer_from_alias: \"\" -> 'XXXX'":
        "only observed owned links' aliases reach it, and an owner's alias has two colons",
    "netlinkd/links.py <module>: True -> False #2":
        "frozen=False on NewEnd: nothing assigns to one or hashes it",
    **dict.fromkeys((
        "netlinkd/links.py NewEnd.requests: '' -> 'XXXX'",
        "netlinkd/links.py NewEnd.requests: ' and up' -> 'XX and upXX'",
    ), "message wording only: the name of a configure step in an error's text"),
    "netlinkd/executor.py _BatchRun._check_addresses: \"add_address or del_address\" -> "
    "'XXadd_address or del_addressXX'":
        "message wording only: the operations' kind in the prefix of an address error's text",
    "netlinkd/executor.py _BatchRun._failure: \"; \" -> 'XX; XX' #2":
        "message wording only: the separator of the deletions not undone in an error's text",
    "netlinkd/mountguard.py _deny: 0 -> 1":
        "skips a call numbered 0 too: no denied call is (read on x86-64, io_setup on arm64)",
    "netlinkd/rtnl.py <module>: \"\" -> 'XXXX' #3":
        "get_link's default name: sent along with an index, where the kernel looks the link up "
        "by index and ignores IFLA_IFNAME (rtnl_getlink); no call gives neither",
    "netlinkd/links.py configure_created: True -> False":
        "zip's strict=True: transact returns one reply per request, so the lengths always match",
    "netlinkd/verify.py Verifier.check_watch: 1000 -> 1001 #2":
        "used watch requests are kept a little longer: those past the window, which check_time "
        "refuses before they are looked up",
    "netlinkd/link_monitor.py <module>: 0x100 -> 257":
        "GROUPS is 0x1 | 0x10 | 0x100: 257 is 0x101, whose extra bit 0x1 is already set",
    "netlinkd/server.py prepare_socket_path: 0o700 -> 449":
        "the new socket directory is empty and made 0750 root:group right after; 0701 for "
        "that moment gives nobody anything",
    **dict.fromkeys((
        "netlinkd/trust.py TrustStore.reload: self.generation + 1 -> self.generation - 1",
        "netlinkd/trust.py TrustStore.reload: 1 -> 2",
    ), "the key set's generation is only compared for equality with an earlier one, and -1 "
       "or +2 at each reload never repeats a value either"),
    "netlinkd/link_monitor.py _same_namespace: return False -> return None":
        "its only caller takes it as a condition, where None is False",
    "netlinkd/executor.py _BatchRun._make_pairs: True -> False":
        "zip's strict=True: a pair has two ends and two sockets, so the lengths always match",
    "netlinkd/executor.py Executor.__init__: \"netlink\" -> 'XXnetlinkXX'":
        "the netlink thread's name: nothing reads it, only ps and tracebacks show it",
    "netlinkd/front.py Front.close: True -> False":
        "shutdown's wait: close comes last before the process exits, and Python's exit joins "
        "the refusal thread anyway",
    "netlinkd/cli.py <module>: \"group allowed to connect to the socket (default 0, root's "
    "group)\" -> \"XXgroup allowed to connect to the socket (default 0, root's group)XX\"":
        "an option's help text: only --help prints it",
    "netlinkd/server.py resolve_user: \"user\" -> 'XXuserXX'":
        "message wording only: what an unknown controller user is called in the refusal's text",
    "netlinkd/executor.py _BatchRun._apply_one: \"none\" -> 'XXnoneXX'":
        "an operation of no kind never gets here: check_batch refuses it before the executor",
    "netlinkd/replay.py <module>: 0 -> 1":
        "ReplayGuard's now_s default: a mark seen in 1970 at second 0 or 1 ages out alike at "
        "any clock after 1970-01-01T00:02",
}
EQUIVALENT.update(dict.fromkeys((
    "netlinkd/audit.py fsync_dir: os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC -> "
    "(os.O_RDONLY | os.O_DIRECTORY) & os.O_CLOEXEC",
    "netlinkd/audit.py fsync_dir: os.O_RDONLY | os.O_DIRECTORY -> os.O_RDONLY & os.O_DIRECTORY",
), _ALWAYS_A_DIRECTORY))


@dataclass(frozen=True)
class Mutant:
    module: str
    function: str  # qualified name of the enclosing function, "" at module level
    line: int
    before: str
    after: str
    key: str
    source: str  # the whole mutated module
    names: tuple[str, ...] = ()  # at module level: the names its top-level statement binds

    def describe(self) -> str:
        return f"line {self.line:4d}  {self.key}"


def _compact(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


_COMPARE_SWAPS: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In,
    ast.Is: ast.IsNot, ast.IsNot: ast.Is,
}
_BINOP_SWAPS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv, ast.FloorDiv: ast.Mult,
    ast.Div: ast.Mult, ast.Mod: ast.FloorDiv, ast.BitOr: ast.BitAnd, ast.BitAnd: ast.BitOr,
    ast.LShift: ast.RShift, ast.RShift: ast.LShift,
}


class _Generator(ast.NodeVisitor):
    """Collects (node, replacement source, enclosing function) for one module."""

    def __init__(self) -> None:
        self.scope: list[str] = []
        self.edits: list[tuple[ast.AST, str, str, tuple[str, ...]]] = []
        self._skip: set[int] = set()  # ids of nodes (and subtrees) never mutated

    def _function(self) -> str:
        """The enclosing function's qualified name; "" in a module's or a class's body, which
        runs at import (its mutants are tried on every test that calls into the module)."""
        inside_function = bool(self._scope_kinds) and self._scope_kinds[-1] == "function"
        return ".".join(self.scope) if inside_function else ""

    def _add(self, node: ast.AST, replacement: str) -> None:
        self.edits.append((node, replacement, self._function(), self._top_names))

    _top_names: tuple[str, ...] = ()

    def _bound_names(self, statement: ast.stmt) -> tuple[str, ...]:
        if isinstance(statement, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            return (statement.name,)
        targets = statement.targets if isinstance(statement, ast.Assign) else \
            [statement.target] if isinstance(statement, ast.AnnAssign | ast.AugAssign) else []
        return tuple(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))

    def _skip_tree(self, node: ast.AST | None) -> None:
        if node is not None:
            self._skip.update(id(child) for child in ast.walk(node))

    def visit(self, node: ast.AST) -> None:
        if id(node) in self._skip:
            return
        super().visit(node)

    # scopes, and what is never mutated
    def _visit_scope(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self._skip_docstring(node.body)
        if not isinstance(node, ast.ClassDef):
            self._skip_tree(node.returns)
            for arg in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs,
                        node.args.vararg, node.args.kwarg):
                if arg is not None:
                    self._skip_tree(arg.annotation)
        for decorator in node.decorator_list:
            self.visit(decorator)
        if not isinstance(node, ast.ClassDef):
            for default in (*node.args.defaults, *node.args.kw_defaults):
                if default is not None:
                    self.visit(default)
        name = node.name
        outer_is_function = bool(self.scope) and self._scope_kinds[-1] == "function"
        self.scope.append(f"<locals>.{name}" if outer_is_function else name)
        self._scope_kinds.append("class" if isinstance(node, ast.ClassDef) else "function")
        for statement in node.body:
            self.visit(statement)
        self.scope.pop()
        self._scope_kinds.pop()

    _scope_kinds: list[str]

    def run(self, tree: ast.Module) -> None:
        self._scope_kinds = []
        self._skip_docstring(tree.body)
        for statement in tree.body:
            self._top_names = self._bound_names(statement)
            self.visit(statement)

    def _skip_docstring(self, body: list[ast.stmt]) -> None:
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            self._skip_tree(body[0])

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._visit_scope(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._visit_scope(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._visit_scope(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return  # only `from module import *` reads it
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._skip_tree(node.annotation)
        self.generic_visit(node)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                self.visit(value.value)

    def visit_Raise(self, node: ast.Raise) -> None:
        if isinstance(node.exc, ast.Call):
            self._skip_message_strings(node.exc)
        self.generic_visit(node)

    def visit_If(self, node: ast.If) -> None:
        if node.test is not None and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        self._negate(node.test)
        self.generic_visit(node)

    def visit_While(self, node: ast.While) -> None:
        self._negate(node.test)
        self.generic_visit(node)

    def visit_IfExp(self, node: ast.IfExp) -> None:
        self._negate(node.test)
        self.generic_visit(node)

    def _negate(self, test: ast.expr) -> None:
        # Comparisons, and/or and `not` have their own operators; negating them too would
        # only repeat those mutants.
        if not isinstance(test, ast.Compare | ast.BoolOp | ast.UnaryOp):
            self._add(test, f"not ({ast.unparse(test)})")

    def _skip_message_strings(self, call: ast.Call) -> None:
        for arg in (*call.args, *(k.value for k in call.keywords)):
            for child in ast.walk(arg):
                if isinstance(child, ast.Constant) and isinstance(child.value, str):
                    self._skip.add(id(child))

    # the operators
    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Attribute) and node.func.attr in _MESSAGE_CALLS:
            self._skip_message_strings(node)
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        for index, op in enumerate(node.ops):
            swapped = _COMPARE_SWAPS.get(type(op))
            if swapped is not None:
                mutated = copy.deepcopy(node)
                mutated.ops[index] = swapped()
                self._add(node, ast.unparse(mutated))
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        mutated = copy.deepcopy(node)
        mutated.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        self._add(node, ast.unparse(mutated))
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if isinstance(node.op, ast.Not | ast.USub | ast.Invert):
            self._add(node, ast.unparse(node.operand))
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        swapped = _BINOP_SWAPS.get(type(node.op))
        if swapped is not None:
            mutated = copy.deepcopy(node)
            mutated.op = swapped()
            self._add(node, ast.unparse(mutated))
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        swapped = _BINOP_SWAPS.get(type(node.op))
        if swapped is not None:
            mutated = copy.deepcopy(node)
            mutated.op = swapped()
            self._add(node, ast.unparse(mutated))
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, bool):
            self._add(node, repr(not value))
        elif isinstance(value, int):
            self._add(node, repr(value + 1))
        elif isinstance(value, str):
            self._add(node, repr(f"XX{value}XX"))

    def visit_Expr(self, node: ast.Expr) -> None:
        if isinstance(node.value, ast.Constant):
            return  # a docstring, also one after an attribute: no effect
        if isinstance(node.value, ast.Call | ast.Await):
            self._add(node, "pass")
        self.generic_visit(node)

    def visit_Return(self, node: ast.Return) -> None:
        if node.value is not None and not (
            isinstance(node.value, ast.Constant) and node.value.value is None
        ):
            self._add(node, "return None")
        self.generic_visit(node)

    def visit_Break(self, node: ast.Break) -> None:
        self._add(node, "continue")

    def visit_Continue(self, node: ast.Continue) -> None:
        self._add(node, "break")


def _offsets(source: str) -> list[int]:
    starts = [0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    return starts


def generate(module: str, source: str) -> list[Mutant]:
    """Every mutant of `source` that compiles, each differing from the others."""
    tree = ast.parse(source)
    generator = _Generator()
    generator.run(tree)
    encoded = source.encode()
    line_starts = _offsets(encoded.decode("latin-1"))  # byte offsets, as ast reports columns
    mutants: list[Mutant] = []
    seen_sources: set[str] = set()
    seen_keys: dict[str, int] = defaultdict(int)
    for node, replacement, function, names in generator.edits:
        start = line_starts[node.lineno - 1] + node.col_offset  # type: ignore[attr-defined]
        end = line_starts[node.end_lineno - 1] + node.end_col_offset  # type: ignore[attr-defined]
        before = encoded[start:end].decode()
        text = replacement if isinstance(node, ast.stmt) else f"({replacement})"
        mutated = (encoded[:start] + text.encode() + encoded[end:]).decode()
        if mutated == source or mutated in seen_sources:
            continue
        try:
            compile(mutated, module, "exec")
        except SyntaxError:
            continue
        seen_sources.add(mutated)
        key = f"{module} {function or '<module>'}: {_compact(before)} -> {_compact(replacement)}"
        seen_keys[key] += 1
        if seen_keys[key] > 1:
            key += f" #{seen_keys[key]}"
        mutants.append(Mutant(module, function, node.lineno,  # type: ignore[attr-defined]
                              before, replacement, key, mutated, () if function else names))
    return mutants


# --- the copy of the checkout, and the coverage run ---

_SITECUSTOMIZE = f'''\
"""Call tracer of bench/mutation.py: (current test, file, function) of every traced call."""
import atexit
import json as _json
import os as _os
import sys as _sys
import threading as _threading

_DIR = _os.environ.get("{TRACE_ENV}")
if _DIR:
    _PREFIXES = tuple(_json.loads(_os.environ["{TRACE_ENV}_FILES"]))
    _CURRENT = _os.path.join(_DIR, "current")
    _OUT = _os.path.join(_DIR, f"calls-{{_os.getpid()}}.jsonl")
    _seen = set()
    _state = [None, ""]

    def _append(record):
        # writable by all: a traced process may go on as another uid (a test's setuid child)
        fd = _os.open(_OUT, _os.O_WRONLY | _os.O_APPEND | _os.O_CREAT, 0o666)
        try:
            if _os.fstat(fd).st_uid == _os.geteuid():
                _os.fchmod(fd, 0o666)
            _os.write(fd, (_json.dumps(record) + "\\n").encode())
        finally:
            _os.close(fd)

    def _test():
        try:
            info = _os.stat(_CURRENT)
        except OSError:
            return ""
        stamp = (info.st_ino, info.st_mtime_ns)
        if stamp != _state[0]:
            try:
                with open(_CURRENT) as handle:
                    _state[1] = handle.read()
            except OSError:
                return _state[1]
            _state[0] = stamp
        return _state[1]

    def _tracer(frame, event, arg):
        code = frame.f_code
        if event == "call" and code.co_filename in _PREFIXES:
            record = (_test(), code.co_filename, code.co_qualname)
            if record not in _seen:
                _seen.add(record)
                try:
                    _append(record)
                except OSError:
                    pass
        return None

    def _exit():  # the test this process ended in: the tests it served run up to it
        try:
            _append((_test(), "", "<exit>"))
        except OSError:
            pass

    atexit.register(_exit)
    _sys.settrace(_tracer)
    _threading.settrace(_tracer)
'''

_PLUGIN = f'''\
"""pytest plugin of bench/mutation.py: names the running test, records durations/outcomes."""
import json
import os

_DIR = os.environ["{TRACE_ENV}"]
_durations = {{}}
_failed = set()


def pytest_runtest_logstart(nodeid, location):
    tmp = os.path.join(_DIR, "current.tmp")
    with open(tmp, "w") as handle:
        handle.write(nodeid)
    os.replace(tmp, os.path.join(_DIR, "current"))


def pytest_runtest_logreport(report):
    _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration
    if report.failed or report.skipped:
        _failed.add(report.nodeid)


def pytest_sessionfinish(session):
    with open(os.path.join(_DIR, "tests.json"), "w") as handle:
        json.dump({{"durations": _durations, "failed": sorted(_failed), "pid": os.getpid()}},
                  handle)
'''


def make_copy(scratch: Path) -> Path:
    """The checkout's tracked files (as they are in the work tree) under scratch/src."""
    src = scratch / "src"
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        origin = ROOT / name
        if origin.is_file():
            target = src / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, target)
    for directory in (scratch, *(p for p in src.rglob("*") if p.is_dir()), src):
        directory.chmod(0o755)  # the tests run some processes as other uids
    (src / ".venv").symlink_to(ROOT / ".venv")  # tests run the tools in REPO/.venv/bin
    return src


@dataclass
class Coverage:
    # module -> function -> test -> True when the test called it itself (not via a helper)
    callers: dict[str, dict[str, dict[str, bool]]]
    durations: dict[str, float]

    def tests_for(self, module: str, function: str) -> list[str]:
        tests: dict[str, bool] = {}
        for called, callers in self.callers.get(module, {}).items():
            if not function or called == function or called.startswith(function + "."):
                for test, direct in callers.items():
                    tests[test] = tests.get(test, False) or direct
        return self.ordered(tests)

    def ordered(self, tests: dict[str, bool]) -> list[str]:
        """Grouped by file (a module's fixtures start once); the files whose tests call the
        function themselves (unit tests, quick to fail) first, then the cheapest."""
        by_file: dict[str, list[str]] = defaultdict(list)
        for test in tests:
            by_file[test.split("::")[0]].append(test)

        def cost(name: str) -> tuple[bool, float]:
            group = by_file[name]
            direct = any(tests[t] for t in group)
            return not direct, sum(self.durations.get(t, 1.0) for t in group) / len(group)

        return [t for f in sorted(by_file, key=cost)
                for t in sorted(by_file[f], key=lambda t: not tests[t])]

    def is_direct(self, module: str, test: str) -> bool:
        return any(callers.get(test, False) for callers in self.callers.get(module, {}).values())

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"callers": self.callers, "durations": self.durations}))

    @classmethod
    def load(cls, paths: list[Path]) -> Coverage:
        """Saved coverage runs merged: a later run (of tests added since) adds its callers."""
        callers: dict[str, dict[str, dict[str, bool]]] = {}
        durations: dict[str, float] = {}
        for path in paths:
            data = json.loads(path.read_text())
            for module, functions in data["callers"].items():
                for function, tests in functions.items():
                    known = callers.setdefault(module, {}).setdefault(function, {})
                    for test, direct in tests.items():
                        known[test] = known.get(test, False) or direct
            durations.update(data["durations"])
        return cls(callers, durations)


def _env(src: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(src), PYTHONDONTWRITEBYTECODE="1", **(extra or {}))


def collect_coverage(src: Path, scratch: Path, modules: list[str],
                     test_dirs: list[str]) -> Coverage:
    trace = scratch / "trace"
    hook = scratch / "hook"
    for directory in (trace, hook):
        directory.mkdir()
    trace.chmod(0o1777)
    hook.chmod(0o755)
    (hook / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    (hook / "mutation_trace_plugin.py").write_text(_PLUGIN)
    files = [str(src / m) for m in modules]
    env = _env(src, {TRACE_ENV: str(trace), f"{TRACE_ENV}_FILES": json.dumps(files)})
    env["PYTHONPATH"] = f"{hook}:{src}"
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "pytest", *PYTEST_ARGS, "-p",
                          "mutation_trace_plugin", *test_dirs], cwd=src, env=env, check=False,
                         capture_output=True, text=True)
    summary = (run.stdout.strip().splitlines() or ["no output"])[-1]
    print(f"coverage run: {time.monotonic() - started:.0f} s, {summary}", flush=True)
    report = json.loads((trace / "tests.json").read_text())
    failed = set(report["failed"])
    order = list(report["durations"])  # the tests in the order they ran
    position = {test: index for index, test in enumerate(order)}
    callers: dict[str, dict[str, dict[str, bool]]] = {}
    for calls in trace.glob("calls-*.jsonl"):
        direct = calls.name == f"calls-{report['pid']}.jsonl"
        records = []
        for line in calls.read_text().splitlines():
            try:
                test, filename, function = json.loads(line)
            except ValueError:
                continue  # a process killed mid-write
            if test in position:
                records.append((position[test], filename, function))
        for first, filename, function in records:
            if not filename:
                continue
            module = str(Path(filename).relative_to(src))
            tests = callers.setdefault(module, {}).setdefault(function, {})
            for test in order[first: 1 + (first if direct else _served_until(order, records))]:
                if test not in failed:
                    tests[test] = tests.get(test, False) or (direct and test == order[first])
    for test in sorted(failed):
        print(f"not used (failed or skipped without a mutant): {test}", flush=True)
    return Coverage(callers, {k: float(v) for k, v in report["durations"].items()})


def _served_until(order: list[str], records: list[tuple[int, str, str]]) -> int:
    """The last test a helper process (started by another process) served: the one it exited
    in, or (killed, no exit record) the last test of the file it started in. A helper that a
    module-scoped fixture started in an earlier test serves the later ones too: a mutant of
    what it ran at start-up (`serve`) is tried on them all, not only on the first."""
    exits = [index for index, filename, _function in records if not filename]
    if exits:
        return max(exits)
    start = min(index for index, _filename, _function in records)
    file = order[start].split("::")[0]
    return max(i for i, test in enumerate(order) if test.split("::")[0] == file and i >= start)


# --- running the mutants ---

@dataclass
class Result:
    key: str
    module: str
    line: int
    status: str  # killed, survived, timeout, untested, equivalent, equivalent-but-killed,
    # not run (a stopped run)
    seconds: float
    tests: int
    killer: str = ""  # the first failing test


class KillHistory:
    """Which test files killed each module's mutants so far: with pytest -x, trying them first
    (the targeted stage) and the other callers after (the wide stage) finds a killer sooner;
    the tests run for a survivor are the same."""

    def __init__(self) -> None:
        self._files: dict[str, dict[str, int]] = defaultdict(dict)
        self._lock = threading.Lock()

    def note(self, module: str, killer: str) -> None:
        if killer:
            with self._lock:
                counts = self._files[module]
                name = killer.split("::")[0]
                counts[name] = counts.get(name, 0) + 1

    def order(self, module: str, tests: list[str]) -> list[str]:
        """`tests` with the module's own test file and the files that killed its mutants
        (most kills first) in front, each file's tests in their order."""
        with self._lock:
            counts = dict(self._files[module])
        own = f"test_{Path(module).stem}"

        def rank(test: str) -> tuple[int, int]:
            name = test.split("::")[0]
            if name in counts:
                return 0, -counts[name]
            return (1, 0) if Path(name).stem.startswith(own) else (2, 0)

        return sorted(tests, key=rank)  # stable: the coverage order within each rank


_FORK_SERVER = """\
import importlib, json, os, sys
for name in PRELOAD:
    try:
        importlib.import_module(name)
    except ImportError:
        pass
import pytest
read, write = os.pipe()


class Killer:  # sends the first failing test's id (the mutant's killer) to the server
    sent = False

    def pytest_runtest_logreport(self, report):
        if report.failed and not self.sent:
            self.sent = True
            os.write(write, report.nodeid.encode()[:4000] + b"\\n")


for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        os.setsid()
        quiet = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(quiet, fd)
        try:
            code = int(pytest.main(json.loads(line), plugins=[Killer()]))
        except BaseException:
            code = 99
        os._exit(code)
    print(pid, flush=True)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    os.set_blocking(read, False)
    try:
        killer = os.read(read, 65536).decode(errors="replace").split("\\n")[0]
    except BlockingIOError:
        killer = ""
    print(code, flush=True)
    print(killer, flush=True)
"""
# Imported once by the fork server, never a module that is mutated (nor one importing one).
_PRELOAD = ("grpc", "google.protobuf.message", "nacl.bindings", "hypothesis",
            "cryptography.hazmat.primitives.asymmetric.ed25519", "hypothesis.extra.pytestplugin",
            "pytest_timeout", "_pytest.python", "_pytest.pytester", "netagent_api.helper_pb2",
            "netagent_api.interface_pb2", "yaml")


class Runner:
    """Runs pytest on the copy, each run in a fresh fork of one process that has already
    imported pytest and the third-party libraries (about 2 s saved per mutant)."""

    def __init__(self, src: Path) -> None:
        self._src = src
        code = _FORK_SERVER.replace("PRELOAD", repr(_PRELOAD))
        self._server = subprocess.Popen([sys.executable, "-c", code], cwd=src, env=_env(src),
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        start_new_session=True)
        assert self._server.stdin is not None and self._server.stdout is not None
        self._stdin, self._stdout = self._server.stdin, self._server.stdout.fileno()
        self._pending = b""
        self._child = 0

    def _line(self, timeout_s: float | None = None) -> str | None:
        """The server's next line, or None if none came within `timeout_s`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while b"\n" not in self._pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self._stdout], [], [], left)[0]:
                return None
            chunk = os.read(self._stdout, 4096)
            if not chunk:
                raise RuntimeError("the pytest fork server exited")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode()

    def run(self, tests: list[str], budget_s: float) -> tuple[str, str]:
        """(killed, survived or timeout; the first failing test's id, or "")."""
        self._stdin.write((json.dumps(["-x", *PYTEST_ARGS, *tests]) + "\n").encode())
        self._stdin.flush()
        self._child = int(self._line() or "0")
        code = self._line(budget_s)
        if code is None:
            _stop_group(self._child)
            self._line()
            code = "timeout"
        killer = self._line() or ""
        self._child = 0
        return (code if code == "timeout" else "survived" if int(code) == 0 else "killed",
                killer)

    def close(self) -> None:
        if self._child:  # stopped in the middle of a mutant
            _stop_group(self._child)
        self._stdin.close()
        try:
            self._server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _stop_group(self._server.pid)


def _stop_group(pgid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        time.sleep(5)


def run_mutant(src: Path, runner: Runner, mutant: Mutant, tests: list[str],
               budget_s: float) -> tuple[str, str]:
    path = src / mutant.module
    original = path.read_text()
    try:
        path.write_text(mutant.source)
        return runner.run(tests, budget_s)
    finally:
        path.write_text(original)


def functions_using(source: str, names: tuple[str, ...]) -> list[str]:
    """Qualified names of the functions of `source` that read any of `names`."""
    found: list[str] = []

    def walk(node: ast.AST, scope: list[str], in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"<locals>.{child.name}" if in_function else child.name
                inner = [*scope, name]
                if not isinstance(child, ast.ClassDef) and any(
                        isinstance(n, ast.Name) and n.id in names
                        for part in (*child.body, *child.args.defaults) for n in ast.walk(part)):
                    found.append(".".join(inner))
                walk(child, inner, not isinstance(child, ast.ClassDef))

    walk(ast.parse(source), [], False)
    return found


def tests_for(coverage: Coverage, mutant: Mutant) -> list[str]:
    """A function's callers; at module level, the callers of what the statement binds and of
    the functions that read it, or (none found) every test that called into the module."""
    if mutant.function or not mutant.names:
        return coverage.tests_for(mutant.module, mutant.function)
    # a function's or class's own callers too: a default or a decorator argument acts there
    users = [*functions_using((ROOT / mutant.module).read_text(), mutant.names), *mutant.names]
    tests: set[str] = set()
    for user in users:
        tests.update(coverage.tests_for(mutant.module, user))
    return coverage.ordered({t: coverage.is_direct(mutant.module, t) for t in tests}) \
        if tests else coverage.tests_for(mutant.module, "")


def all_mutants(modules: list[str]) -> Iterator[Mutant]:
    for module in modules:
        yield from generate(module, (ROOT / module).read_text())


def sample(mutants: list[Mutant], per_module: int, seed: int) -> list[Mutant]:
    """At most `per_module` mutants of each module, drawn at random with `seed` (the same
    source and seed draw the same mutants), in their order in the module."""
    by_module: dict[str, list[Mutant]] = defaultdict(list)
    for mutant in mutants:
        by_module[mutant.module].append(mutant)
    chosen: set[str] = set()
    for module, group in by_module.items():
        drawn = random.Random(f"{seed}:{module}").sample(group, min(per_module, len(group)))
        chosen.update(m.key for m in drawn)
    return [m for m in mutants if m.key in chosen]


def stratified(mutants: list[Mutant], size: int, seed: int) -> list[Mutant]:
    """`size` of the mutants not listed as equivalent, each with the same chance, the modules
    in proportion to their sizes (a systematic draw over the mutants grouped by module and
    shuffled within it), in a random order to run them in."""
    rng = random.Random(f"stratified:{seed}")
    by_module: dict[str, list[Mutant]] = defaultdict(list)
    for mutant in mutants:
        if mutant.key not in EQUIVALENT:
            by_module[mutant.module].append(mutant)
    frame: list[Mutant] = []
    for module in sorted(by_module):
        group = by_module[module]
        rng.shuffle(group)
        frame.extend(group)
    size = min(size, len(frame))
    if not size:
        return []
    step = len(frame) / size
    start = rng.uniform(0, step)
    chosen = [frame[int(start + i * step)] for i in range(size)]
    rng.shuffle(chosen)
    return chosen


def lower_bound(killed: int, tried: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson bound: the smallest kill rate p with
    P(at least `killed` kills in `tried` | p) >= 1 - confidence."""
    if killed == 0:
        return 0.0

    def at_least(p: float) -> float:
        return sum(math.comb(tried, i) * p**i * (1 - p) ** (tried - i)
                   for i in range(killed, tried + 1))

    low, high = 0.0, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if at_least(middle) < 1 - confidence else (low, middle)
    return low


def bound_lines(results: list[Result]) -> list[str]:
    """netlinkd/'s kill rate with a one-sided 95% bound: the modules whose every mutant is in
    `results` count exactly, the others are one stratified sample (drawn by --stratified,
    not mutants chosen otherwise) over all their mutants not listed as equivalent; mutants of
    the sample not run count as survivors."""
    counted = [r for r in results if r.module.startswith("netlinkd/") and r.status != "equivalent"]
    by_module: dict[str, list[Result]] = defaultdict(list)
    for result in counted:
        by_module[result.module].append(result)
    modules = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "netlinkd").glob("*.py"))
    exact_killed = exact_all = sampled_all = 0
    sample: list[Result] = []
    exact_names: list[str] = []
    for module in modules:
        population = {m.key for m in generate(module, (ROOT / module).read_text())
                      if m.key not in EQUIVALENT}
        if not population:
            continue
        tried = {r.key: r for r in by_module.get(module, [])}
        if population <= {k for k, r in tried.items() if r.status != "not run"}:
            exact_names.append(Path(module).name)
            exact_all += len(population)
            exact_killed += sum(tried[k].status in _KILLED for k in population)
        else:
            sampled_all += len(population)
            sample.extend(tried.values())
    killed = sum(r.status in _KILLED for r in sample)
    rate = lower_bound(killed, len(sample)) if sample else 0.0
    total = exact_all + sampled_all
    point = (exact_killed + sampled_all * (killed / len(sample) if sample else 0)) / total
    low = (exact_killed + sampled_all * rate) / total
    return [f"exact ({', '.join(exact_names)}): {exact_killed} of {exact_all} killed",
            f"sampled: {killed} of {len(sample)} killed, of {sampled_all} mutants; "
            f"one-sided 95% Clopper-Pearson bound {100 * rate:.1f}%",
            f"netlinkd/: estimate {100 * point:.1f}%, 95% lower bound "
            f"(exact + {sampled_all} x bound) / {total} = {100 * low:.1f}%"]


_KILLED = ("killed", "timeout", "equivalent-but-killed")


def score_table(results: list[Result]) -> list[str]:
    rows = ["| module | mutants | equivalent | killed | survived | score |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    by_module: dict[str, list[Result]] = defaultdict(list)
    for result in results:
        by_module[result.module].append(result)
    groups = [*sorted(by_module.items()),
              ("netlinkd/ total", [r for r in results if r.module.startswith("netlinkd/")])]
    for name, group in groups:
        if not group:
            continue
        equivalent = sum(r.status == "equivalent" for r in group)
        killed = sum(r.status in ("killed", "timeout", "equivalent-but-killed") for r in group)
        counted = len(group) - equivalent
        survived = counted - killed
        score = f"{100 * killed / counted:.1f}%" if counted else "-"
        rows.append(f"| {name} | {len(group)} | {equivalent} | {killed} | {survived} | {score} |")
    return rows


def try_mutant(src: Path, runner: Runner, coverage: Coverage, mutant: Mutant,
               check_equivalent: bool, history: KillHistory) -> Result:
    tests = history.order(mutant.module, tests_for(coverage, mutant))
    began = time.monotonic()
    killer = ""
    if mutant.key in EQUIVALENT and not check_equivalent:
        status = "equivalent"
    elif not tests:
        status = "untested"
    else:
        budget = 60 + 3 * sum(coverage.durations.get(t, 1.0) for t in tests)
        status, killer = run_mutant(src, runner, mutant, tests, budget)
        history.note(mutant.module, killer)
        if mutant.key in EQUIVALENT:
            status = "equivalent" if status == "survived" else "equivalent-but-killed"
    result = Result(mutant.key, mutant.module, mutant.line, status,
                    round(time.monotonic() - began, 1), len(tests), killer)
    print(f"{status:9s} {result.seconds:6.1f} s {len(tests):4d} tests  {mutant.describe()}"
          + (f"\n          by {killer}" if killer else ""), flush=True)
    return result


def rescore(paths: list[Path], bound: bool = False) -> int:
    merged: dict[str, Result] = {}
    for path in paths:
        for row in json.loads(path.read_text()):
            result = Result(**row)
            if result.status == "not run" and result.key in merged:
                continue  # a stopped run's unreached mutant: another file may have it
            if result.key in EQUIVALENT and result.status in ("survived", "untested"):
                result.status = "equivalent"
            merged[result.key] = result
    results = list(merged.values())
    for result in results:
        if result.status in ("survived", "untested", "not run"):
            print(f"{result.status:9s} line {result.line:4d}  {result.key}")
    print("\n".join(score_table(results)))
    if bound:
        print("\n".join(bound_lines(results)))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modules", nargs="+", help=f"default: {' '.join(LOGIC_MODULES)}")
    parser.add_argument("--kernel", action="store_true", help="add the kernel-driving modules")
    parser.add_argument("--tests", nargs="+",
                        help=f"test paths of the coverage run; default: {' '.join(TEST_DIRS)} "
                             f"(and {' '.join(KERNEL_TESTS)} with --kernel)")
    parser.add_argument("--only", default="", help="only the mutants whose key has this")
    parser.add_argument("--limit", type=int, default=0, help="at most this many mutants")
    parser.add_argument("--survivors-of", metavar="JSON",
                        help="only the mutants a saved --json run left alive (after new tests)")
    parser.add_argument("--sample", type=int, default=0,
                        help="at most this many mutants of each module, drawn with --seed")
    parser.add_argument("--seed", type=int, default=15, help="the seed of --sample")
    parser.add_argument("--list", action="store_true", help="print the mutants, run nothing")
    parser.add_argument("--json", help="write every mutant's result here")
    parser.add_argument("--save-coverage", help="write the coverage run's findings here")
    parser.add_argument("--workers", type=int, default=1,
                        help="mutants tried at once, each in its own copy of the checkout")
    parser.add_argument("--check-equivalent", action="store_true",
                        help="run the mutants listed as equivalent too (they must survive)")
    parser.add_argument("--reuse-coverage", nargs="+", metavar="FILE",
                        help="skip the coverage run: use those saved by --save-coverage "
                             "(merged: e.g. a run of only the tests added since)")
    parser.add_argument("--rescore", nargs="+", metavar="JSON",
                        help="run nothing: the score of saved --json results (later files "
                             "override earlier ones mutant by mutant, except with 'not run'), "
                             "with today's EQUIVALENT")
    parser.add_argument("--stratified", type=int, default=0, metavar="N",
                        help="N mutants of all the modules together, not listed as equivalent, "
                             "each with the same chance, drawn with --seed (see --bound)")
    parser.add_argument("--bound", action="store_true",
                        help="with --rescore: netlinkd/'s kill rate with a one-sided 95%% bound "
                             "(modules run whole count exactly, the rest must be one "
                             "--stratified run on the same sources)")
    args = parser.parse_args()
    if args.rescore:
        return rescore([Path(name) for name in args.rescore], args.bound)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the running mutant too
    modules = list(dict.fromkeys([*(args.modules or LOGIC_MODULES),
                                  *(KERNEL_MODULES if args.kernel else ())]))
    tests = args.tests or [*TEST_DIRS, *(KERNEL_TESTS if args.kernel else ())]
    mutants = [m for m in all_mutants(modules) if args.only in m.key]
    if args.sample:
        mutants = sample(mutants, args.sample, args.seed)
    if args.stratified:
        mutants = stratified(mutants, args.stratified, args.seed)
    if args.survivors_of:
        alive = {row["key"] for row in json.loads(Path(args.survivors_of).read_text())
                 if row["status"] in ("survived", "untested")}
        mutants = [m for m in mutants if m.key in alive]
    if args.limit:
        mutants = mutants[: args.limit]
    if args.list:
        for mutant in mutants:
            print(mutant.describe())
        print(f"{len(mutants)} mutants")
        return 0
    print(f"{len(mutants)} mutants of {len(modules)} modules", flush=True)
    keys = {m.key for m in mutants}
    whole = not (args.only or args.sample or args.stratified or args.survivors_of or args.limit)
    for key in EQUIVALENT:
        if key.split(" ")[0] in modules and key not in keys and whole:
            print(f"stale: no such mutant any more, EQUIVALENT lists it: {key}", flush=True)
    started = time.monotonic()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="netagent-mutation-") as tmp:
        scratch = Path(tmp)
        src = make_copy(scratch)
        if args.reuse_coverage:
            coverage = Coverage.load([Path(name) for name in args.reuse_coverage])
        else:
            coverage = collect_coverage(src, scratch, modules, tests)
        if args.save_coverage:
            coverage.save(Path(args.save_coverage))
        copies = [src, *(make_copy(scratch / f"worker{n}") for n in range(1, args.workers))]
        runners = [Runner(copy) for copy in copies]
        pending: queue.SimpleQueue[tuple[int, Mutant]] = queue.SimpleQueue()
        for numbered in enumerate(mutants):
            pending.put(numbered)
        done: dict[int, Result] = {}
        stopping = threading.Event()
        history = KillHistory()
        saving = threading.Lock()

        begun: list[int] = []

        def save() -> None:
            """After every mutant, the ones begun (a prefix of the run's order: with
            --stratified, a random sample too); those not finished yet are "not run"."""
            if args.json:
                with saving:
                    rows = [asdict(done.get(i) or Result(m.key, m.module, m.line, "not run", 0,
                                                         0)) for i, m in
                            enumerate(mutants[: len(begun)])]
                    Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")

        def work(copy: Path, runner: Runner) -> None:
            while not stopping.is_set():
                try:
                    index, mutant = pending.get_nowait()
                except queue.Empty:
                    return
                begun.append(index)
                try:
                    done[index] = try_mutant(copy, runner, coverage, mutant,
                                             args.check_equivalent, history)
                    save()
                except (OSError, ValueError, RuntimeError):
                    if not stopping.is_set():
                        raise

        threads = [threading.Thread(target=work, args=pair, daemon=True)
                   for pair in zip(copies, runners, strict=True)]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            stopping.set()
            for runner in runners:
                runner.close()
        results = [done[index] for index in sorted(done)]
    print(f"\n{len(results)} mutants in {time.monotonic() - started:.0f} s")
    print("\n".join(score_table(results)))
    survivors = [r for r in results if r.status in ("survived", "untested")]
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
