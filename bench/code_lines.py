"""Code lines of a package: lines holding code, without blank lines, comments or docstrings.

    .venv/bin/python bench/code_lines.py netlinkd [netagent_audit ...]

The figure docs/SECURITY.md quotes for the privileged core (issue 15 asks for <= 2,000).
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize
from pathlib import Path

_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
         tokenize.ENDMARKER}


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            first = node.body[0] if node.body else None
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


def code_lines(path: Path) -> int:
    source = path.read_text()
    docstrings = _docstring_lines(ast.parse(source))
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in _SKIP:
            lines.update(n for n in range(token.start[0], token.end[0] + 1) if n not in docstrings)
    return len(lines)


def main(packages: list[str]) -> None:
    for package in packages:
        files = sorted(Path(package).glob("*.py"))
        counts = {f.name: code_lines(f) for f in files}
        for name, count in sorted(counts.items(), key=lambda item: -item[1]):
            print(f"{count:6d}  {package}/{name}")
        print(f"{sum(counts.values()):6d}  {package}/ total")


if __name__ == "__main__":
    main(sys.argv[1:] or ["netlinkd"])
