"""Notebook plumbing of issue 23: progress that survives a saved notebook, run folders keyed by settings."""

import io
from pathlib import Path

import pytest

import kwlab
from kwlab import teaching
from kwlab.utils import progress_bar


def test_runs_dir_is_keyed_by_the_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("KWLAB_RUNS", str(tmp_path))
    plain = teaching.runs_dir("nb")
    a = teaching.runs_dir("nb", key={"data": "cifar10", "seeds": [0, 1]})
    b = teaching.runs_dir("nb", key={"data": "synthetic", "seeds": [0, 1]})
    assert plain == tmp_path / "nb" and a.parent == b.parent == tmp_path
    assert a != b and a.name.startswith("nb-") and a.is_dir() and b.is_dir()
    assert teaching.runs_dir("nb", key={"seeds": [0, 1], "data": "cifar10"}) == a  # key order is irrelevant


def test_progress_bar_is_text_in_a_jupyter_kernel(monkeypatch):
    from tqdm.notebook import tqdm as widget_tqdm
    from tqdm.std import tqdm as text_tqdm

    import kwlab.utils as utils

    monkeypatch.delenv("KWLAB_PROGRESS", raising=False)
    monkeypatch.setattr(utils, "_in_jupyter_kernel", lambda: True)
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    bar = progress_bar(range(3), desc="decode", mininterval=0.1)
    assert type(bar) is text_tqdm and not isinstance(bar, widget_tqdm)
    assert bar.fp is not None and bar.mininterval >= 1.0
    list(bar)
    bar.close()
    assert "decode" in out.getvalue() and "3/3" in out.getvalue()  # a text bar on stdout, not stderr
    monkeypatch.setenv("KWLAB_PROGRESS", "off")
    assert progress_bar(range(3)).disable


def test_config_label_tells_cell_ratios_apart():
    """NB04's points with 2.5M and 0.2M parameters had one label: the cell ratio was left out."""
    from kwlab.experiments.stats import config_label

    base = dict(method="kw", budget=1.0, sharing="stage", model_kwargs='{"widths": [16, 16, 16]}')
    labels = {config_label(dict(base, cell_in=r, cell_out=r)) for r in (1.0, 0.5, 0.25)}
    assert labels == {
        "kw b=1 stage 16-16-16", "kw b=1 cell 1/2 stage 16-16-16", "kw b=1 cell 1/4 stage 16-16-16"
    }
    assert config_label(dict(base, cell_in=0.5, cell_out=1.0)) == "kw b=1 cell 1x1/2 stage 16-16-16"
    assert config_label(dict(base, cell_in=float("nan"))) == "kw b=1 stage 16-16-16"


def test_nested_progress_bars_in_a_notebook_print_no_cursor_moves(monkeypatch):
    """Nested text bars (sweep > run > epoch) must not emit cursor-up escapes, which a notebook prints raw."""
    import kwlab.utils as utils

    monkeypatch.delenv("KWLAB_PROGRESS", raising=False)
    monkeypatch.setattr(utils, "_in_jupyter_kernel", lambda: True)
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    outer = progress_bar(total=2, desc="sweep", mininterval=0)
    for _ in range(2):
        for _ in progress_bar(range(3), desc="epoch", leave=False, mininterval=0):
            pass
        outer.update()
    outer.close()
    assert "epoch" in out.getvalue() and "sweep" in out.getvalue()
    assert "\x1b[A" not in out.getvalue() and "\n\n" not in out.getvalue()


def test_reference_finding_is_generated_from_the_committed_numbers(tmp_path):
    """The notebooks' "where it helped" cell: each configuration's mean accuracy in the printed finding is the
    mean of the committed results.csv rows (computed here by hand), with the declared verdicts after it."""
    import pandas as pd

    from kwlab.experiments.stats import config_labels

    name = "cued_official_init"
    text = teaching.reference_finding(name)
    folder = Path(kwlab.__file__).resolve().parents[1] / "data" / "results" / name
    results = pd.read_csv(folder / "results.csv")
    labels = config_labels(results)
    for label, group in results.groupby(labels):
        line = next(ln for ln in text.splitlines() if ln.startswith(f"- {label}: final_acc "))
        assert f"final_acc {group['final_acc'].mean():.3f} ± " in line
    assert "Comparisons (11, declared in the sweep file" in text
    with pytest.raises(FileNotFoundError, match="not committed"):
        teaching.reference_finding(name, root=tmp_path)
