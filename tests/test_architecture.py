"""The house rules: no import circle, and each wing imports only downward (read from the source, not run)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "kwlab"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """kwlab modules imported anywhere in ``path`` (top level or inside functions)."""
    tree = ast.parse(path.read_text())
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("kwlab")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("kwlab"):
                found.add(mod)
                found |= {f"{mod}.{a.name}" for a in node.names}
    return found


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}
GRAPH = {name: {m for m in _imports(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def _wing(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.mark.parametrize(
    "wing,forbidden",
    [
        (
            "ops",
            {"layers", "methods", "models", "instruments", "experiments", "teaching", "utils", "cli", ""},
        ),
        ("layers", {"methods", "models", "instruments", "experiments", "teaching", "cli"}),
        ("methods", {"models", "instruments", "experiments", "teaching", "cli"}),
        ("instruments", {"experiments", "teaching", "cli"}),
    ],
)
def test_wings_import_only_downward(wing, forbidden):
    bad = sorted(
        f"{src} -> {dst}"
        for src, dsts in GRAPH.items()
        if _wing(src) == wing
        for dst in dsts
        if _wing(dst) in forbidden and dst != "kwlab"
    )
    assert not bad, "imports that run back up: " + ", ".join(bad)


def test_no_import_circle():
    # only the modules' own imports count; the package __init__ files re-export downward
    graph = {k: {d for d in v if not MODULES[d].name == "__init__.py" or d == k} for k, v in GRAPH.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_hooks_live_only_in_the_probe_and_the_conversion_tracer():
    # the probe records attention; the conversion's tracer reads each layer's input resolution once.
    # Both remove their hooks in ``finally``.
    users = {}
    for name, path in MODULES.items():
        text = path.read_text()
        if "register_forward" in text or "register_full_backward" in text:
            users[name] = text
    assert sorted(users) == ["kwlab.instruments.probe", "kwlab.methods.surgery"]
    for name, text in users.items():
        assert "finally:" in text and ".remove()" in text, name


def test_old_module_paths_name_their_new_home():
    import kwlab

    with pytest.raises(ModuleNotFoundError, match=r"kwlab\.train moved to kwlab\.experiments\.train"):
        import kwlab.train  # noqa: F401
    with pytest.raises(AttributeError, match=r"kwlab\.plot moved to kwlab\.instruments\.plot"):
        _ = kwlab.plot
