"""The package's shape: no import cycle among bench's modules, and small modules (one job each)."""
import ast

from helpers import ROOT

PACKAGE = ROOT / "bench"
MAX_LINES = 300


def imports(path) -> set[str]:
    """The bench modules that `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("bench.")}
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "bench":
                found |= {a.name for a in node.names if (PACKAGE / f"{a.name}.py").exists()}
            elif node.module.startswith("bench."):
                found.add(node.module.split(".")[1])
    return found - {path.stem}


def graph() -> dict[str, set[str]]:
    return {p.stem: imports(p) for p in sorted(PACKAGE.glob("*.py"))}


def cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, three colours)."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(g.get(m, ())):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(g):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_cycle_finder_finds_one():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_among_bench_modules():
    g = graph()
    assert {"train", "report", "cli"} <= set(g) and "record" in g["train"]  # the walk sees the package
    assert cycle(g) is None, " -> ".join(cycle(g))


def test_no_module_over_300_lines():
    sizes = {p.name: len(p.read_text().splitlines()) for p in PACKAGE.glob("*.py")}
    assert not {n: s for n, s in sizes.items() if s > MAX_LINES}, sizes


def test_the_model_and_the_lightning_module_know_no_config():
    assert not imports(PACKAGE / "models.py")  # nn.Module only: no Lightning, no params
    assert {"config", "speed"}.isdisjoint(imports(PACKAGE / "module.py"))
