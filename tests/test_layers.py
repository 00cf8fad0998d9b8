"""Layers point one way: the import graph of the package, read from the source.

Every ``import`` counts, including those inside functions (a lazy import is
still a dependency). The layers are the table in docs/architecture.md: each
package (or top-level module) of ``blendflag`` sits in one layer, and imports
point down that table or stay in their layer, never up. Also: the library never
imports the command layer or an integration, integrations never import the
command layer, the core never imports a plugin, plugins registered as entry
points never import one another, and there are no circles, neither between
modules nor between packages.
"""

from __future__ import annotations

import ast
import re
from importlib.metadata import entry_points
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"blendflag": ROOT / "blendflag", "blendflag_plugins": ROOT / "plugins"}


def _module_name(package: str, path: Path) -> str:
    rel = path.relative_to(PACKAGES[package]).with_suffix("")
    parts = [package, *rel.parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = module.split(".")[: -node.level] if node.level else []
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    """``{module: modules of the two packages it imports}``."""
    modules = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            modules[_module_name(package, path)] = path
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path, name):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


GRAPH = import_graph()


def _is_commands(module: str) -> bool:
    return module == "blendflag.commands" or module.startswith("blendflag.commands.")


def _is_integration(module: str) -> bool:
    return module == "blendflag.integrations" or module.startswith("blendflag.integrations.")


def test_the_graph_is_read():
    assert "blendflag.shear.engine" in GRAPH["blendflag.pipeline.stages"] or any(
        "blendflag.shear" in t for t in GRAPH["blendflag.pipeline.stages"]
    )
    assert "blendflag.shear.results" in GRAPH["blendflag.shear.statistics"]


def test_the_library_never_imports_the_command_layer():
    upward = {
        m: sorted(t for t in targets if _is_commands(t))
        for m, targets in GRAPH.items()
        if m.startswith("blendflag") and not _is_commands(m) and m != "blendflag.cli"
    }
    assert {m: t for m, t in upward.items() if t} == {}


def test_the_library_never_imports_an_integration():
    """Integrations (adapters to other pipelines) sit above the library, beside commands."""
    assert "blendflag.integrations.shapepipe.blendflag_runner" in GRAPH
    upward = {
        m: sorted(t for t in targets if _is_integration(t))
        for m, targets in GRAPH.items()
        if m.startswith("blendflag") and not _is_integration(m)
    }
    assert {m: t for m, t in upward.items() if t} == {}


def test_integrations_do_not_use_the_command_layer():
    """An integration calls the library, as a command does, never a command."""
    sideways = {
        m: sorted(t for t in targets if _is_commands(t) or t == "blendflag.cli")
        for m, targets in GRAPH.items()
        if _is_integration(m)
    }
    assert {m: t for m, t in sideways.items() if t} == {}


def test_the_core_never_imports_a_plugin():
    bad = {
        m: sorted(t for t in targets if t.startswith("blendflag_plugins"))
        for m, targets in GRAPH.items()
        if m.startswith("blendflag.") or m == "blendflag"
    }
    assert {m: t for m, t in bad.items() if t} == {}


def test_registered_plugins_do_not_import_each_other():
    registered = {ep.value for ep in entry_points(group="blendflag")}
    registered &= set(GRAPH)
    assert registered, "no built-in plugin module found among the entry points"
    bad = {m: sorted(GRAPH[m] & (registered - {m})) for m in registered}
    assert {m: t for m, t in bad.items() if t} == {}


def _find_cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_circles():
    # a package's __init__ importing its submodules is not a circle of modules
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in GRAPH.items()}
    assert _find_cycle(graph) is None


def test_the_cycle_finder_finds_a_circle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


ARCHITECTURE = ROOT / "docs" / "architecture.md"


def layer_table() -> list[tuple[str, list[str]]]:
    """``[(layer, [unit, ...]), ...]`` top to bottom, from docs/architecture.md's layer table.

    A unit is a package (``blendflag.shear``) or a top-level module
    (``blendflag.cli``); the root ``blendflag`` is its own unit.
    """
    text = ARCHITECTURE.read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    layers = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or cells[0] in ("layer", "") or set(cells[0]) <= {"-"}:
            continue
        units = re.findall(r"`(blendflag(?:_plugins)?(?:\.\w+)?)`", cells[1])
        layers.append((cells[0], units))
    return layers


LAYERS = layer_table()


def unit_of(module: str) -> str:
    """The package (or top-level module) a module belongs to."""
    parts = module.split(".")
    return parts[0] if parts[0] == "blendflag_plugins" else ".".join(parts[:2])


def _layer_index() -> dict[str, int]:
    return {unit: i for i, (_, units) in enumerate(LAYERS) for unit in units}


def test_the_layer_table_is_read():
    names = [name for name, _ in LAYERS]
    assert names[0] == "command line" and "data" in names and len(names) >= 6
    assert _layer_index()["blendflag.shear"] > _layer_index()["blendflag.pipeline"]


def test_every_package_has_a_layer():
    """A new package or top-level module is placed in docs/architecture.md's table."""
    index = _layer_index()
    missing = sorted({unit_of(m) for m in GRAPH} - set(index))
    assert missing == []


def test_imports_point_down_the_layer_table():
    index = _layer_index()
    upward = sorted(
        f"{m} -> {t} ({LAYERS[index[unit_of(m)]][0]} -> {LAYERS[index[unit_of(t)]][0]})"
        for m, targets in GRAPH.items()
        for t in targets
        if index[unit_of(t)] < index[unit_of(m)]
    )
    assert upward == []


def package_graph() -> dict[str, set[str]]:
    """``{unit: units it imports}``: the import graph with modules merged into their packages."""
    graph: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        here = unit_of(module)
        graph.setdefault(here, set()).update(unit_of(t) for t in targets if unit_of(t) != here)
    return graph


def test_no_circles_between_packages():
    """``a`` imports ``b`` and ``b`` imports ``a``, through any modules: one package too many."""
    graph = package_graph()
    graph["blendflag"] = set()  # the root is every package's parent: importing it is no circle
    assert _find_cycle(graph) is None


def test_the_package_check_sees_a_circle_through_modules():
    modules = {"p.a.x": {"p.b.y"}, "p.b.y": set(), "p.b.z": {"p.a.w"}, "p.a.w": set()}
    merged: dict[str, set[str]] = {}
    for module, targets in modules.items():
        merged.setdefault(unit_of(module), set()).update(
            unit_of(t) for t in targets if unit_of(t) != unit_of(module)
        )
    assert _find_cycle(merged) == ["p.a", "p.b", "p.a"]


def _builtin_plugin_names() -> set[str]:
    from blendflag.plugins import get_detectors, get_flaggers, get_plugin_manager, get_shear_engines

    pm = get_plugin_manager()
    return set(get_flaggers(pm)) | set(get_shear_engines(pm)) | set(get_detectors(pm))


def _string_values(tree) -> list[ast.Constant]:
    """String constants that are values: not docstrings, not subscript keys (JSON fields)."""
    skip = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            skip.add(id(body[0].value))
        if isinstance(node, ast.Subscript):
            skip.add(id(node.slice))
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip
    ]


def test_the_core_names_no_builtin_plugin():
    names = _builtin_plugin_names()
    assert {"sextractor", "sep"} <= names  # the registry is read
    found = []
    for path in (ROOT / "blendflag").rglob("*.py"):
        for const in _string_values(ast.parse(path.read_text())):
            if const.value in names:
                found.append(f"{path.relative_to(ROOT)}:{const.lineno}: {const.value!r}")
    assert found == []


def test_the_literal_check_sees_a_name():
    tree = ast.parse('"""doc vgg16"""\nx = {"a": 1}["vgg16"]\ny = "vgg16"\n')
    assert sorted(c.value for c in _string_values(tree)) == ["a", "vgg16"]
