"""environment.yml lists the same packages and pins as pyproject.toml and constraints.txt."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
_REQ = re.compile(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*?)\s*$")


def _split(req: str) -> tuple[str, str]:
    m = _REQ.match(req)
    assert m, f"cannot parse requirement {req!r}"
    return m.group(1).lower().replace("_", "-"), m.group(3).replace(" ", "")


def _pyproject_requirements() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = data["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    out: dict[str, str] = {}
    for req in reqs:
        name, spec = _split(req)
        if name == project["name"]:  # self-references such as kwlab[lab]
            continue
        out[name] = spec
    return out


def _constraints() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, spec = _split(line)
            out[name] = spec
    return out


def _environment() -> tuple[dict[str, str], list[str]]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip: list[str] = []
    conda: list[str] = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip += dep.get("pip", [])
        else:
            conda.append(dep)
    out = {}
    for req in pip:
        if req.startswith("-e") or req.startswith("."):
            continue
        name, spec = _split(req)
        assert name not in out, f"{name} listed twice in environment.yml"
        out[name] = spec
    return out, conda


def test_environment_matches_pyproject_and_constraints():
    expected = _pyproject_requirements()
    pins = _constraints()
    expected.update(pins)  # a pin replaces pyproject's range
    env, _ = _environment()
    assert set(env) == set(expected), (
        f"only in environment.yml: {sorted(set(env) - set(expected))}; "
        f"missing from it: {sorted(set(expected) - set(env))}"
    )
    for name, spec in expected.items():
        assert env[name] == spec, (
            f"{name}: environment.yml has {env[name]!r}, pyproject/constraints say {spec!r}"
        )


def test_pins_are_exact_and_in_pyproject():
    pyproject = _pyproject_requirements()
    for name, spec in _constraints().items():
        assert spec.startswith("=="), f"constraints.txt pins {name} with {spec!r}; expected an exact == pin"
        assert name in pyproject, f"constraints.txt pins {name}, which pyproject.toml does not list"


def test_environment_python_matches_requires_python():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    _, conda = _environment()
    pythons = [d for d in conda if d.startswith("python")]
    assert pythons == [f"python{data['project']['requires-python']}"]
    assert "pip" in conda


def test_readme_method_table_is_generated_from_the_method_table():
    import kwlab

    readme = (ROOT / "README.md").read_text()
    assert kwlab.methods.methods_markdown() in readme, "regenerate it: kwlab.methods.methods_markdown()"
