"""The README's "Using kwlab in your own training code" recipes run as written (issue 31, item 6): every
``python`` block of that section is executed in order, in one namespace, as a reader would paste them."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
TITLE = "## Using kwlab in your own training code"


def _blocks() -> list[str]:
    text = README.read_text()
    assert TITLE in text
    section = text.split(TITLE, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_section_has_the_plain_timm_lightning_and_export_recipes():
    blocks = _blocks()
    assert len(blocks) == 4
    assert (
        "TemperatureScheduler" in blocks[0] and "ProbeCallback" in blocks[0] and "AveragedModel" in blocks[0]
    )
    assert "TimmTemperature" in blocks[1] and "ModelEmaV3" in blocks[1]
    assert "KWLabCallback" in blocks[2]
    assert "torch.export.export" in blocks[3]


def test_readme_recipes_run_as_written(one_thread):
    namespace: dict = {"__name__": "readme"}
    for i, block in enumerate(_blocks()):
        if "KWLabCallback" in block and importlib.util.find_spec("lightning") is None:
            continue  # the Lightning recipe runs where Lightning is installed
        exec(compile(block, f"README.md block {i}", "exec"), namespace)  # noqa: S102 (the README's own code)
    history = namespace["history"]
    assert sorted(set(history["step"])) == [0, 4, 8]
    assert len(namespace["probe_table"]) > 0
    assert namespace["checkpoint"]["temperature"]["last_step"] == 12


def test_lightning_recipe_runs_when_installed(one_thread):
    if importlib.util.find_spec("lightning") is None:
        pytest.skip("lightning is not installed")
    namespace: dict = {"__name__": "readme"}
    blocks = _blocks()
    exec(compile(blocks[0], "README.md block 0", "exec"), namespace)  # noqa: S102
    exec(compile(blocks[2], "README.md block 2", "exec"), namespace)  # noqa: S102
    assert namespace["trainer"].callbacks
