"""kwlab.gallery (`make gallery`): notebooks executed in quick mode, one HTML page each and an index."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("nbconvert")
pytest.importorskip("ipykernel")


@pytest.fixture
def own_kernel(tmp_path, monkeypatch):
    """The "python3" kernel runs this interpreter (a private spec first on JUPYTER_PATH)."""
    prefix = tmp_path / "kernel"
    subprocess.run(
        [sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix), "--name", "python3"],
        check=True,
        capture_output=True,
    )
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    monkeypatch.delenv("MPLBACKEND", raising=False)


def _notebook(path: Path, *sources: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("lead-in")]
    nb.cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)


@pytest.mark.slow
def test_gallery_writes_executed_pages_and_an_index(tmp_path, own_kernel, monkeypatch):
    from kwlab.gallery import main

    src = tmp_path / "nbs"
    src.mkdir()
    _notebook(src / "01_fine.ipynb", "import os\nprint('quick', os.environ['KWLAB_QUICK'])")
    _notebook(src / "02_broken.ipynb", "raise ValueError('this cell is broken')")
    _notebook(src / "README_not_numbered.ipynb", "print('never run')")
    monkeypatch.setenv("KWLAB_RUNS", str(tmp_path / "runs"))
    out = tmp_path / "gallery"
    assert main([str(src), str(out), "--timeout", "120"]) == 1  # one notebook failed
    assert sorted(p.name for p in out.glob("*.html")) == ["01_fine.html", "02_broken.html", "index.html"]
    assert "quick 1" in (out / "01_fine.html").read_text()  # executed, in quick mode
    assert "this cell is broken" in (out / "02_broken.html").read_text()  # the error is on the page
    index = (out / "index.html").read_text()
    assert 'href="01_fine.html"' in index and "ran cleanly" in index
    assert "error: ValueError: this cell is broken" in index
    assert not nbformat.read(src / "01_fine.ipynb", as_version=4).cells[1].outputs  # sources untouched
    assert main([str(src), str(out), "--only", "01"]) == 0


def test_streams_read_as_jupyterlab_shows_them():
    """A progress bar sent as many updates keeps its last line; prints around it stay in order, and stdout
    and stderr stay apart (a warning between two prints is where JupyterLab shows it)."""
    from kwlab.gallery import as_lab_shows

    nb = nbformat.v4.new_notebook()
    stream = nbformat.v4.new_output
    cell = nbformat.v4.new_code_cell("train()")
    cell.outputs = [
        stream("stream", name="stdout", text="\rfit:   0%|          | 0/2"),
        stream("stream", name="stdout", text="\rfit:  50%|#####     | 1/2"),
        stream("stream", name="stdout", text="\rfit: 100%|##########| 2/2\r                    \r"),
        stream("stream", name="stdout", text="static acc 0.260\n"),
        stream("stream", name="stderr", text="kwlab: warning: short anneal\n"),
        stream("stream", name="stdout", text="\r  \rKW acc 0.17x\b6\n"),
        nbformat.v4.new_output("display_data", data={"text/plain": "a figure"}),
        stream("stream", name="stdout", text="\r     \r"),  # a bar that cleared itself: nothing left
    ]
    nb.cells = [cell]
    as_lab_shows(nb)
    assert [(o.get("name"), o.get("text")) for o in cell.outputs] == [
        ("stdout", "static acc 0.260\n"),
        ("stderr", "kwlab: warning: short anneal\n"),
        ("stdout", "KW acc 0.176\n"),
        (None, None),
    ]
