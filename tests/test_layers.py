"""The layers of the package docstring hold: every import of src/physdiff, function-level ones
included, goes to the module's own layer or below, no cycle exists (even inside a layer), and
nothing outside the command line imports the command line (benchmarks and examples included)."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "physdiff"


def module_files() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = ["physdiff", *path.relative_to(SRC).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(path: Path, module: str, modules: dict) -> set[str]:
    """The physdiff modules ``module`` (at ``path``) imports anywhere in its body."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()

    def owner(name: str) -> str:
        while name not in modules:
            name = name.rsplit(".", 1)[0]
        return name

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {owner(a.name) for a in node.names if a.name.split(".")[0] == "physdiff"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] != "physdiff":
                continue
            for alias in node.names:
                full = f"{name}.{alias.name}"
                found.add(full if full in modules else owner(name))
    found.discard(module)
    return found


def layer_table() -> list[tuple[int, str, list[str]]]:
    import physdiff

    rows = re.findall(r"^\s*layer (\d+) (\w+): (.+)$", physdiff.__doc__, re.M)
    return [(int(n), name, ["physdiff" if m == "physdiff" else f"physdiff.{m}" for m in mods.split()])
            for n, name, mods in rows]


def layer_of(module: str, table) -> int:
    exact = {m: n for n, _, mods in table for m in mods if not m.endswith(".*")}
    if module in exact:
        return exact[module]
    for n, _, mods in table:
        if any(m.endswith(".*") and module.startswith(m[:-1]) for m in mods):
            return n
    raise AssertionError(f"{module} is in no layer of physdiff's docstring; add it there")


GRAPH = None


def graph() -> dict[str, set[str]]:
    global GRAPH
    if GRAPH is None:
        modules = module_files()
        GRAPH = {m: imports_of(p, m, modules) for m, p in modules.items()}
    return GRAPH


def test_the_table_names_every_layer_once_in_order():
    table = layer_table()
    assert [n for n, _, _ in table] == list(range(8))
    named = [m for _, _, mods in table for m in mods]
    assert len(named) == len(set(named))


def test_every_module_has_a_layer_and_imports_only_downward():
    table = layer_table()
    climbs = [f"{m} (layer {layer_of(m, table)}) imports {t} (layer {layer_of(t, table)})"
              for m, targets in sorted(graph().items()) for t in sorted(targets)
              if layer_of(t, table) > layer_of(m, table)]
    assert not climbs, "imports against the layer order:\n" + "\n".join(climbs)


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one member."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    assert strongly_connected(graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_relative_imports_are_resolved():
    """``from .. import x`` inside a subpackage and ``from . import y`` inside a package's
    __init__ resolve to the modules they name (a wrong resolution would hide imports)."""
    modules = module_files()
    assert "physdiff.samplers" in imports_of(SRC / "run.py", "physdiff.run", modules)
    assert "physdiff.lattice.action" in imports_of(SRC / "lattice" / "__init__.py", "physdiff.lattice", modules)
    assert "physdiff.errors" in imports_of(SRC / "data" / "kinds.py", "physdiff.data.kinds", modules)


@pytest.mark.parametrize("folder", ["src/physdiff", "benchmarks", "examples", "docs"])
def test_nothing_imports_the_command_line(folder):
    face = {"physdiff.cli", "physdiff.arguments", "physdiff.options", "physdiff.__main__"}
    offenders = []
    for path in (ROOT / folder).rglob("*.py"):
        if path.parent == SRC and path.stem in ("cli", "options", "__main__"):
            continue
        text = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(text)):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [f"{node.module}.{a.name}" for a in node.names] + [node.module or ""]
                     if isinstance(node, ast.ImportFrom) and not node.level else
                     [f"physdiff.{node.module or ''}"] + [f"physdiff.{a.name}" for a in node.names]
                     if isinstance(node, ast.ImportFrom) and path.is_relative_to(SRC) else [])
            if face & set(names):
                offenders.append(f"{path.relative_to(ROOT)}: {sorted(face & set(names))}")
    assert not offenders, "\n".join(offenders)


def test_no_theory_name_is_tested_outside_its_definition():
    """A theory's name ("phi4", "ising") is compared with nowhere but in its own class: what a
    theory knows (its critical point, symbols, embeddings) is the theory's to say."""
    pattern = re.compile(r"""(==|!=|\bin\b)\s*\(?\s*["'](phi4|ising)["']|["'](phi4|ising)["']\s*(==|!=)""")
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in SRC.rglob("*.py") if p.name != "action.py"
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not hits, "\n".join(hits)
