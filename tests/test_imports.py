"""The package's imports form no loop (issue 11): walks every ``import`` statement, at any depth, by AST."""
from __future__ import annotations

import ast
from pathlib import Path

import captioner

PACKAGE = Path(captioner.__file__).parent


def module_name(path: Path) -> str:
    parts = ("captioner",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: the captioner modules it imports}, counting function-level imports too."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                base = f"{base}.{node.module}" if node.level and node.module else (base if node.level else node.module)
                targets.add(base)
                targets |= {f"{base}.{a.name}" for a in node.names}  # "from . import backend" names a module
        edges = set()
        for target in targets:
            parts = target.split(".")
            for i in range(2, len(parts) + 1):  # importing a.b.c runs a.b's __init__ first
                if ".".join(parts[:i]) in modules:
                    edges.add(".".join(parts[:i]))
        # A module's own packages are already being imported when it runs: no edge back to them.
        ancestors = {name.rsplit(".", k)[0] for k in range(name.count(".") + 1)}
        graph[name] = edges - ancestors
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_walker_sees_a_loop():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    graph = import_graph()
    assert "captioner.training.record" in graph["captioner.export"]  # "from .training.record import Run"
    assert "captioner.training" in graph["captioner.export"]  # ... which runs the package's __init__
    assert "captioner.backend" in graph["captioner.training.batches"]  # "from .. import backend"


def test_no_import_loops():
    graph = import_graph()
    assert not cycles(graph), cycles(graph)
    assert "captioner.training" not in graph["captioner.evaluate"]
