"""The package's shape, checked in CI: no import cycle, no module much over 400 lines.

Run from the repository root: `python .ci/check_layout.py`. Exits 1 naming what is wrong.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path("tripchat")
MAX_LINES = 450  # "about 400": room to finish a thought, not to grow a second job


def module_name(path: Path) -> str:
    parts = path.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that `path` imports (a `from pkg import sub` counts `pkg.sub`)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - max(node.level - 1, 0)]
            target = ".".join([*base, node.module] if node.module else base)
            if not node.level:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return (found & modules) - {name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                found.append([*path[path.index(dep) :], dep] if dep in path else [node, dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def main() -> int:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    graph = {module_name(f): imports(f, modules) for f in files}
    problems = [" -> ".join(cycle) for cycle in cycles(graph)]
    problems = [f"import cycle: {p}" for p in problems]
    for f in files:
        lines = len(f.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            problems.append(f"{f}: {lines} lines (at most {MAX_LINES}); split it by concept")
    for problem in problems:
        print(problem)
    print(f"layout: {len(files)} modules, {'ok' if not problems else 'FAILED'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
