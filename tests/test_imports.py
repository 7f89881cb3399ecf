"""Imports run one way: no import cycle among the package's modules, hidden or not.

Two checks. A static one reads every module's imports, the ones inside functions and `if TYPE_CHECKING:` too
(an import inside a function that exists only to dodge a cycle is still a cycle), and fails naming the cycle.
A dynamic one imports each module first, with no other module of the package loaded, then all of them in order
and in reverse order, so a module that only imports cleanly after some other module was loaded is caught too.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "supercorrect"


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `name` imports anywhere in its file."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import sub` imports the submodule; `from mod import name` imports mod
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_checker_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_the_package():
    mods = modules()
    graph = {name: imports_of(name, path, set(mods)) for name, path in mods.items()}
    assert len(graph) > 30 and graph["supercorrect.trainers.dpo"]  # the walk sees the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


IMPORT_IN_ORDERS = """
import importlib, json, sys
names = json.loads(sys.argv[1])
failures = []
for order in [[first] for first in names] + [names, names[::-1]]:
    for mod in [m for m in sys.modules if m == "supercorrect" or m.startswith("supercorrect.")]:
        del sys.modules[mod]
    for name in order:
        try:
            importlib.import_module(name)
        except Exception as e:
            failures.append(f"{name} (order starting {order[0]}): {type(e).__name__}: {e}")
            break
print(json.dumps(failures))
"""


def test_every_module_imports_first_in_a_fresh_interpreter():
    # The package's own modules are dropped from sys.modules before each order; third-party ones (torch) stay
    # loaded, which does not change how the package's modules import each other.
    names = [n for n in modules() if not n.endswith("__main__")]
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_IN_ORDERS, json.dumps(names)],
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
