"""The package's layout holds: layers import only downward, no module imports itself back through
others (imports inside functions counted), and the top level stays small."""

import sys
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp")  # installed with import-linter (the test extra)

PACKAGE = Path(__file__).resolve().parents[1] / "prompting"


def import_cycles(graph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each a cycle of imports."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(module):
        index[module] = low[module] = counter[0]
        counter[0] += 1
        stack.append(module)
        on_stack.add(module)
        for other in graph.find_modules_directly_imported_by(module):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                group.append(other)
                if other == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for module in sorted(graph.modules):
            if module not in index:
                visit(module)
    finally:
        sys.setrecursionlimit(limit)
    return found


def test_no_module_imports_itself_back():
    graph = grimp.build_graph("prompting", exclude_type_checking_imports=True)
    assert import_cycles(graph) == []


def test_a_cycle_is_found_when_there_is_one(tmp_path, monkeypatch):
    """The cycle finder itself: two modules that import each other inside functions."""
    package = tmp_path / "looped"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from looped import b\n")
    (package / "b.py").write_text("def g():\n    from looped import a\n")
    (package / "c.py").write_text("from looped import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycles(grimp.build_graph("looped")) == [["looped.a", "looped.b"]]


def test_the_top_level_is_a_few_layers():
    top = [p for p in PACKAGE.iterdir() if (p.suffix == ".py" or (p / "__init__.py").exists())]
    assert len(top) <= 12, sorted(p.name for p in top)


def test_classes_and_functions_stay_small():
    """No class over 250 lines and no function over 50: a piece a reader takes in at once."""
    import ast

    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            size = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
            if isinstance(node, ast.ClassDef) and size > 250 or \
                    isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and size > 50:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({size} lines)")
    assert found == []
