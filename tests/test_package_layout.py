"""The package's shape: imports run one way (no cycle), and only the command line prints or exits."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mgrad"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the mgrad modules its module-level imports execute (a package's ``__init__`` included)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.parse(path.read_text()).body:  # module level only: a function's import runs later
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in found:
                parts = target.split(".")
                # importing a.b.c runs a, a.b and a.b.c
                targets |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & modules.keys()
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        graph[name] = targets - {name} - ancestors  # a package is already importing when its modules run
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` (as a path that ends where it starts), or ``[]``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str]:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [node, target] if target in path else [node, target]
            if target not in state:
                cycle = visit(target, path + [node])
                if cycle:
                    return cycle
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [])
            if cycle:
                return cycle
    return []


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_mgrad_imports_have_no_cycle():
    graph = import_graph()
    assert {"mgrad.data", "mgrad.transforms", "mgrad.metrics", "mgrad.cli"} <= graph.keys()
    assert "mgrad.data.datasets" in graph["mgrad.data"]  # the graph holds the package's own edges
    assert find_cycle(graph) == [], " -> ".join(find_cycle(graph))


def test_data_layer_does_not_import_the_layers_above():
    graph = import_graph()
    for name, targets in graph.items():
        if name.startswith("mgrad.data"):
            above = {t for t in targets if t.startswith(("mgrad.transforms", "mgrad.engines", "mgrad.bundle"))}
            assert not above, (name, above)


def test_only_the_command_line_prints_or_exits():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name in ("cli.py", "__main__.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{path.name}:{node.lineno} print")
            if isinstance(node, ast.Name) and node.id == "SystemExit":
                offenders.append(f"{path.name}:{node.lineno} SystemExit")
    assert offenders == []


def test_figures_leave_matplotlibs_global_backend_alone():
    text = (PACKAGE / "visualize.py").read_text()
    assert "matplotlib.use(" not in text and "pyplot" not in text
    assert all("pyplot" not in p.read_text() for p in PACKAGE.rglob("*.py"))
