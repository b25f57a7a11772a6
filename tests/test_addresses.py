"""One address per public name: every public name is imported from one place.

A name listed in a module's ``__all__`` is that module's own (defined there), or, for a package
``__init__``, a re-export of its subpackage's names (the documented address, as ``captum.attr`` does). A
non-package module re-exports nothing: names that once had a second address there raise an error naming
their home (``MOVED_NAMES``), and so do the old module paths of ``kwlab.MOVED``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

import pytest

import kwlab

ROOT = Path(kwlab.__file__).resolve().parent

#: Non-package modules whose names are imported from elsewhere only where a lab extra is missing.
OPTIONAL = {"kwlab.integrations.lightning"}

def _modules() -> dict[str, object]:
    names = ["kwlab"] + [m.name for m in pkgutil.walk_packages(kwlab.__path__, "kwlab.")]
    return {n: importlib.import_module(n) for n in names if not n.endswith("__main__")}


MODULES = _modules()

#: Old address -> {public name: its one home}, derived from the one table in kwlab: each old address's
#: ``__getattr__`` (:func:`kwlab.utils.moved_names`) carries its ``moved`` table. Importing a name from its
#: old address raises an error naming the home; the home serves it.
MOVED_NAMES = {
    name: dict(module.__getattr__.moved)
    for name, module in MODULES.items()
    if hasattr(getattr(module, "__getattr__", None), "moved")
}


def _is_package(module) -> bool:
    return hasattr(module, "__path__")


def _public(module) -> list[str]:
    return list(getattr(module, "__all__", ()))


def _home(obj) -> str:
    """Where ``obj`` was defined: a class's or function's ``__module__``; "" for an instance (a
    :class:`kwlab.utils.Registry` carries its class's module, not the one that made it)."""
    return (getattr(obj, "__module__", None) or "") if inspect.isclass(obj) or callable(obj) else ""


def _imported_names(module) -> dict[str, str]:
    """Top-level names ``module`` binds by ``from ... import``: name -> the module it comes from."""
    tree = ast.parse(Path(module.__file__).read_text())
    package = module.__name__.rpartition(".")[0]
    found = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                found[alias.asname or alias.name] = source
    return found


def test_no_module_re_exports_a_name():
    """The before-stop count: ``__all__`` names of non-package modules defined in another kwlab module."""
    second = []
    for name, module in MODULES.items():
        if _is_package(module) or name in OPTIONAL:
            continue
        for public in _public(module):
            home = _home(getattr(module, public))
            if home.startswith("kwlab") and home != name:
                second.append(f"{name}.{public} (defined in {home})")
    assert second == []


@pytest.mark.parametrize("name", sorted(n for n, m in MODULES.items() if not _is_package(m)))
def test_a_module_lists_only_its_own_names(name):
    """Constants too (they carry no ``__module__``): no ``__all__`` name is bound by an import."""
    module = MODULES[name]
    imported = _imported_names(module)
    borrowed = [p for p in _public(module) if p in imported]
    assert borrowed == [], f"{name} re-exports {borrowed}; import them from their home instead"


def test_every_public_name_has_one_home():
    """Each public object is listed by at most one non-package module (the one that defines it); packages
    may re-export it (their ``__all__`` is the documented address)."""
    owners: dict[int, list[str]] = {}
    for name, module in MODULES.items():
        if _is_package(module) or name in OPTIONAL:
            continue
        for public in _public(module):
            obj = getattr(module, public)
            if isinstance(obj, (int, float, str, bool, tuple, type(None))):
                continue  # equal small values may be shared by chance, not by address
            owners.setdefault(id(obj), []).append(f"{name}.{public}")
    twice = {v[0]: v[1:] for v in owners.values() if len(v) > 1}
    assert twice == {}


def test_package_re_exports_name_their_subpackage_objects():
    """A package's ``__all__`` names a module, or an object that one of its own modules defines."""
    for name, module in MODULES.items():
        if not _is_package(module):
            continue
        for public in _public(module):
            obj = getattr(module, public)
            home = getattr(obj, "__name__", "") if isinstance(obj, type(sys)) else _home(obj)
            if home and home.startswith("kwlab"):
                assert home.startswith(name + ".") or home == name or name == "kwlab", (name, public, home)


def test_the_moved_names_are_read_from_kwlab():
    """The derived table holds every old address (each module that serves moved names), none empty."""
    assert {"kwlab.experiments.data", "kwlab.experiments.train", "kwlab.ops.dynamic"} <= set(MOVED_NAMES)
    assert MOVED_NAMES["kwlab.experiments.data"]["DeviceLoader"] == "kwlab.experiments.loader"
    assert all(MOVED_NAMES.values())
    for name, module in MODULES.items():  # a module-level __getattr__ serves moved names (or a lazy extra)
        if name != "kwlab" and name not in OPTIONAL and hasattr(module, "__getattr__"):
            assert name in MOVED_NAMES, f"{name}.__getattr__ has no moved table"


@pytest.mark.parametrize(
    "old,public,home", [(old, n, h) for old, names in MOVED_NAMES.items() for n, h in names.items()]
)
def test_an_old_address_raises_an_error_naming_the_home(old, public, home):
    module = importlib.import_module(old)
    assert public not in _public(module)
    with pytest.raises(ImportError, match=f"{old}.{public} moved to {home}"):
        exec(f"from {old} import {public}", {})
    with pytest.raises(ImportError, match=home):
        getattr(module, public)
    assert hasattr(importlib.import_module(home), public)
    assert public in _public(importlib.import_module(home)), f"{home} serves {public} but does not list it"


@pytest.mark.parametrize("old", sorted(kwlab.MOVED))
def test_an_old_module_path_raises_an_error_naming_the_home(old):
    with pytest.raises(ModuleNotFoundError, match=f"kwlab.{old} moved to {kwlab.MOVED[old]}"):
        importlib.import_module(f"kwlab.{old}")
    importlib.import_module(kwlab.MOVED[old])
