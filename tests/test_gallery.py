"""kwlab.gallery (`make gallery`): notebooks executed in quick mode, one HTML page each and an index."""

from __future__ import annotations

import html
import re
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


FORMULA = r"W(x) = \sum_{k=1}^{K} \pi_k(x)\, W_k"


def _formula_and_widget_notebook():
    """A markdown formula and an ipywidgets view (a slider and an Output widget that shows a figure), with
    the widget state as nbclient saves it (``Widget.get_manager_state``)."""
    widgets = pytest.importorskip("ipywidgets")
    nb = nbformat.v4.new_notebook()
    text = f"The mixture $${FORMULA}$$ with $K$ kernels; `$HOME` is code."
    nb.cells = [nbformat.v4.new_markdown_cell(text)]
    slider = widgets.SelectionSlider(options=[("1/4", 0.25), ("1", 1.0)], value=1.0, description="budget b")
    out = widgets.Output()
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    figure = {"image/png": png, "text/plain": "<Figure>"}
    out.outputs = ({"output_type": "display_data", "data": figure, "metadata": {}},)
    box = widgets.VBox([widgets.HBox([slider]), out])
    cell = nbformat.v4.new_code_cell("box")
    cell.outputs = [nbformat.v4.new_output("display_data", data=box._repr_mimebundle_())]
    nb.cells.append(cell)
    state = widgets.Widget.get_manager_state(drop_defaults=True, widgets=[box, box.children[0], slider, out])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": state}
    return nb, png


def test_pages_load_nothing_from_the_network():
    """nbconvert's own page loads MathJax, require.js and the widget manager from CDNs; the gallery's loads
    nothing, keeps the formula (MathML with its TeX, or the TeX itself) and shows the widget's last state."""
    from nbconvert import HTMLExporter

    from kwlab.gallery import offline_exporter, remote_references, widget_snapshots

    nb, png = _formula_and_widget_notebook()
    stock, _ = HTMLExporter().from_notebook_node(nb)
    assert any("mathjax" in u.lower() for u in remote_references(stock))  # the check sees what it must
    assert any("html-manager" in u for u in remote_references(stock))

    assert widget_snapshots(nb) == 1
    page, _ = offline_exporter().from_notebook_node(nb)
    assert remote_references(page) == []
    assert not re.search(r"<(script|link)\b[^>]*\b(src|href)=[\"']?(https?:)?//", page, re.I)
    assert html.escape(FORMULA, quote=False) in page  # the TeX, as an annotation or as the fallback
    try:
        import latex2mathml  # noqa: F401
    except ImportError:
        assert f"$${html.escape(FORMULA, quote=False)}$$" in page
    else:
        assert '<math display="block">' in page and '<math display="inline">' in page
    assert "<code>$HOME</code>" in page  # a dollar in code is not maths
    assert "budget b" in page and png in page  # the slider's label and the figure it last showed
    assert "widget-state+json" not in page and "widget-view+json" not in page


def test_remote_references_tells_loads_from_links():
    from kwlab.gallery import remote_references

    page = """<html><head><script src="https://cdn.example.org/x.js"></script>
    <link rel="stylesheet" href="//fonts.example.org/f.css"><style>/* see https://example.org */
    body{background:url(https://img.example.org/b.png)}</style>
    <script type="module">import m from "https://cdn.example.org/m.mjs";</script>
    <script type="application/vnd.jupyter.widget-state+json">{"a": "https://not.loaded.org"}</script>
    </head><body><a href="https://example.org/paper">a link</a><img src="data:image/png;base64,AAAA">
    <math xmlns="http://www.w3.org/1998/Math/MathML"></math></body></html>"""
    assert sorted(remote_references(page)) == [
        "//fonts.example.org/f.css",
        "https://cdn.example.org/m.mjs",
        "https://cdn.example.org/x.js",
        "https://img.example.org/b.png",
    ]


def test_widget_snapshots_without_saved_state_keep_their_text():
    from kwlab.gallery import widget_snapshots

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("w")
    view = {"model_id": "gone", "version_major": 2, "version_minor": 0}
    data = {"application/vnd.jupyter.widget-view+json": view, "text/plain": "IntSlider(3)"}
    cell.outputs = [nbformat.v4.new_output("display_data", data=data)]
    nb.cells = [cell]
    assert widget_snapshots(nb) == 0
    assert cell.outputs[0].data == {"text/plain": "IntSlider(3)"}


@pytest.mark.slow
def test_gallery_pages_of_an_executed_widget_work_offline(tmp_path, own_kernel, monkeypatch):
    """End to end: a kernel runs interactive_output with a figure; the gallery page loads nothing and shows
    the slider's value and the figure."""
    pytest.importorskip("ipywidgets")
    pytest.importorskip("matplotlib")
    from kwlab.gallery import main, remote_references

    src = tmp_path / "nbs"
    src.mkdir()
    nb = nbformat.v4.new_notebook()
    code = (
        "import ipywidgets as w, matplotlib\nmatplotlib.use('module://matplotlib_inline.backend_inline')\n"
        "import matplotlib.pyplot as plt\nfrom IPython.display import display\n"
        "s = w.IntSlider(value=3, min=1, max=5, description='cells n')\n"
        "def draw(n):\n    fig, ax = plt.subplots(); ax.plot(range(n)); display(fig); plt.close(fig)\n"
        "display(w.VBox([s, w.interactive_output(draw, {'n': s})]))"
    )
    nb.cells = [nbformat.v4.new_markdown_cell(f"$${FORMULA}$$"), nbformat.v4.new_code_cell(code)]
    nbformat.write(nb, src / "01_widget.ipynb")
    monkeypatch.setenv("KWLAB_RUNS", str(tmp_path / "runs"))
    assert main([str(src), str(tmp_path / "out"), "--timeout", "120"]) == 0
    page = (tmp_path / "out" / "01_widget.html").read_text()
    assert remote_references(page) == []
    assert html.escape(FORMULA, quote=False) in page
    assert "cells n" in page and 'src="data:image/png;base64,' in page
