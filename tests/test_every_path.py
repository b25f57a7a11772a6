"""Every method of ``kwlab.METHODS`` through every path a user trains it by (issue 29, item 1).

On one tiny net (ResNet-20 at widths 4-8-24 on 8x8 synthetic images: its last stage is wide enough for
FDConv's official gating, min(I, O) > 16) each method goes through

* ``create_model`` after a build of the same model on the meta device (the trainer's and the sweep's
  pre-check), and one forward pass;
* ``kwlab train`` (the CLI, in-process);
* a sweep with the ``sequential`` executor and one with the ``processes`` executor (``kwlab sweep``);
* ``kwlab reproduce`` of the sequential sweep's run (the same numbers again);
* the gallery's notebook path (:func:`kwlab.gallery.build_gallery` on a generated notebook that builds
  and trains the method).

Each path runs once for all methods (module fixtures) and each (method, path) pair is its own test, so a
method that cannot be trained by one path fails here by name. A run must finish with finite numbers
(``nonfinite`` false). The options a method needs on this net are in :data:`OPTIONS` (FDConv's default
``kernel_num=64`` does not divide these layers' spectra; KernelDNA's official wiring is not a conversion);
DCD gets 32 optimizer steps (batch 4), since with fewer its eval-mode BatchNorm statistics overflow (the
official design; ``tests/test_issue29_nonfinite.py`` checks that such a run says so).

Finally every registered model with every method and no options builds on the meta device, or the error
names the option to set (or says the method finds nothing to convert in that model).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

import kwlab
from kwlab.cli import main

METHODS = list(kwlab.METHODS)
#: RunConfig fields every run shares: a run of 2 optimizer steps, about a second on one CPU thread
BASE = {
    "arch": "resnet20_cifar",
    "data": "synthetic",
    "image_size": 8,
    "train_samples": 32,
    "test_samples": 16,
    "batch_size": 16,
    "epochs": 1,
    "lr": 0.05,
    "device": "cpu",
    "probe_samples": 8,
}
WIDTHS = [4, 8, 24]
#: method options this net needs (model_kwargs)
OPTIONS = {"fdconv": {"kernel_num": 4}, "kerneldna": {"wiring": "pairing"}}
#: RunConfig fields a method needs beyond BASE
FIELDS = {"dcd": {"train_samples": 128, "batch_size": 4}}


def run_fields(method: str) -> dict:
    return {
        **BASE,
        **FIELDS.get(method, {}),
        "method": method,
        "model_kwargs": {"widths": WIDTHS, **OPTIONS.get(method, {})},
    }


def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _check_results(results: dict, method: str, where: str) -> None:
    assert results.get("epochs_done") == 1, f"{method} via {where}: {results}"
    assert results.get("nonfinite") is False, f"{method} via {where}: {results.get('notes')}"
    for key in ("final_acc", "final_loss", "final_train_loss"):
        assert math.isfinite(results[key]), f"{method} via {where}: {key} = {results[key]}"


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


# ---------------------------------------------------------------------------------- create_model, meta
@pytest.mark.parametrize("method", METHODS)
def test_create_model_after_a_meta_device_build(method):
    kwargs = {"widths": WIDTHS, **OPTIONS.get(method, {})}
    with torch.device("meta"):
        meta = kwlab.create_model("resnet20_cifar", method=method, num_classes=10, **kwargs)
    model = kwlab.create_model("resnet20_cifar", method=method, num_classes=10, **kwargs)
    assert sum(p.numel() for p in meta.parameters()) == sum(p.numel() for p in model.parameters())
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    if method != "static":
        assert next(kwlab.layers.base.dynamic_layers(model), None) is not None, method
    out = model.train()(torch.randn(4, 3, 8, 8))
    assert out.shape == (4, 10) and torch.isfinite(out).all()


# ------------------------------------------------------------------------------------------ kwlab train
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``kwlab train --set ...`` of every method (in-process): method -> (exit code, stderr, results)."""
    root = tmp_path_factory.mktemp("train")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    try:
        for method in METHODS:
            argv = ["train", "--out", str(root / method), "--no-progress"]
            for key, value in run_fields(method).items():
                argv += ["--set", f"{key}={json.dumps(value) if isinstance(value, dict) else value}"]
            code, _, err = _cli(argv)
            path = root / method / "results.json"
            out[method] = (code, err, json.loads(path.read_text()) if path.exists() else {})
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.parametrize("method", METHODS)
def test_kwlab_train(trained, method):
    code, err, results = trained[method]
    assert code == 0, f"kwlab train of {method}: {err}"
    _check_results(results, method, "kwlab train")


# ------------------------------------------------------------------------------------ sweeps, reproduce
def _sweep(root: Path, executor: str) -> tuple[int, str, pd.DataFrame]:
    spec = {
        "name": f"every-method-{executor}",
        "seeds": 1,
        "base": BASE,
        "runs": [{k: v for k, v in run_fields(m).items() if k not in BASE or v != BASE[k]} for m in METHODS],
        "executor": {"kind": executor, **({"workers": 2, "threads": 1} if executor == "processes" else {})},
    }
    path = root / f"{executor}.yaml"
    path.write_text(yaml.safe_dump(spec))
    code, _, err = _cli(["sweep", str(path), "--out", str(root / executor), "--no-progress", "--no-report"])
    table = root / executor / "results.csv"
    return code, err, pd.read_csv(table) if table.exists() else pd.DataFrame()


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """Both local executors over every method: executor -> (exit code, stderr, results table)."""
    root = tmp_path_factory.mktemp("sweeps")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {ex: _sweep(root, ex) for ex in ("sequential", "processes")} | {"root": root}
    finally:
        torch.set_num_threads(threads)


def _row(swept, executor: str, method: str) -> pd.Series:
    code, err, table = swept[executor]
    rows = table[table["method"] == method] if "method" in table else table
    assert len(rows) == 1, f"{method} via the {executor} sweep (exit {code}): {err[-2000:]}"
    return rows.iloc[0]


@pytest.mark.parametrize("executor", ["sequential", "processes"])
@pytest.mark.parametrize("method", METHODS)
def test_sweep(swept, executor, method):
    row = _row(swept, executor, method)
    run = swept["root"] / executor / "runs" / row["run_id"]
    _check_results(json.loads((run / "results.json").read_text()), method, f"a {executor} sweep")


def test_sweeps_finish(swept):
    for executor in ("sequential", "processes"):
        code, err, table = swept[executor]
        assert code == 0 and sorted(table["method"]) == sorted(METHODS), (executor, err[-2000:])


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_kwlab_reproduce(swept, tmp_path, method):
    row = _row(swept, "sequential", method)
    code, out, err = _cli(
        [
            "reproduce",
            str(swept["root"] / "sequential"),
            "--run",
            row["run_id"],
            "--out",
            str(tmp_path / "again"),
            "--no-progress",
        ]
    )
    assert code == 0, f"kwlab reproduce of {method}: {err}"
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    _check_results(again, method, "kwlab reproduce")
    assert again["final_acc"] == pytest.approx(row["final_acc"]), out
    assert again["final_loss"] == pytest.approx(row["final_loss"], rel=1e-5), out


# ------------------------------------------------------------------------------------ the gallery's path
NOTEBOOK_CELL = """
import json, math, torch, kwlab
from kwlab.experiments import RunConfig, fit
torch.set_num_threads(1)
fields = json.loads({fields!r})
kwargs = fields["model_kwargs"]
model = kwlab.create_model("resnet20_cifar", method=fields["method"], num_classes=10, **kwargs)
results = fit(RunConfig(**fields), None, progress=False)
assert not results["nonfinite"] and math.isfinite(results["final_acc"]), results["notes"]
print("TRAINED", fields["method"], type(model).__name__, results["final_acc"])
"""


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    """:func:`kwlab.gallery.build_gallery` on one generated notebook with a cell per method."""
    nbformat = pytest.importorskip("nbformat")
    for module in ("nbclient", "nbconvert", "ipykernel"):
        pytest.importorskip(module)
    from kwlab.gallery import build_gallery

    root = tmp_path_factory.mktemp("gallery")
    prefix = root / "kernel"
    subprocess.run(
        [sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix), "--name", "python3"],
        check=True,
        capture_output=True,
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
        mp.setenv("KWLAB_RUNS", str(root / "runs"))
        mp.setenv("OMP_NUM_THREADS", "1")
        # the kernel imports the kwlab under test (a relative PYTHONPATH would resolve in the notebook's dir)
        here = str(Path(kwlab.__file__).resolve().parents[1])
        mp.setenv("PYTHONPATH", os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])]))
        mp.delenv("MPLBACKEND", raising=False)
        src = root / "nbs"
        src.mkdir()
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_markdown_cell("Every method, built and trained")]
        # one cell per method, failures kept per cell: the notebook runs to the end and says which failed
        for method in METHODS:
            body = NOTEBOOK_CELL.format(fields=json.dumps(run_fields(method)))
            nb.cells.append(
                nbformat.v4.new_code_cell(
                    "try:\n"
                    + "".join(f"    {line}\n" for line in body.strip().splitlines())
                    + "except Exception as err:\n"
                    + f"    print('FAIL' + 'ED {method}', type(err).__name__, err)\n"  # not in the source
                )
            )
        nbformat.write(nb, src / "01_every_method.ipynb")
        with contextlib.redirect_stdout(io.StringIO()):
            records = build_gallery(src, root / "out", timeout=300)
    page = (root / "out" / "01_every_method.html").read_text()
    return records, page


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_gallery_notebook(gallery, method):
    records, page = gallery
    assert records and records[0]["ok"], records
    assert f"FAILED {method}" not in page, page[page.find(f"FAILED {method}") :][:500]
    assert f"TRAINED {method} " in page


# --------------------------------------------------------------- every registered model, no options given
_NOTHING_TO_CONVERT = ("convert no layer", "finds no conv")


@pytest.mark.slow
def test_every_registered_model_builds_with_every_method_or_names_the_option():
    problems = []
    for arch in kwlab.list_models():
        for method in METHODS:
            try:
                with torch.device("meta"):
                    kwlab.create_model(arch, method=method, num_classes=10)
            except ValueError as err:
                text = str(err)
                options = [o for o in kwlab.METHODS[method].options if f"{o}=" in text]
                if not options and not any(s in text for s in _NOTHING_TO_CONVERT):
                    problems.append(f"{arch} + {method}: names no option: {text[:300]}")
            except Exception as err:  # noqa: BLE001 - anything but a ValueError naming the fix is a failure
                problems.append(f"{arch} + {method}: {type(err).__name__}: {str(err)[:300]}")
    assert not problems, "\n".join(problems)


def test_fdconv_default_kernel_num_on_resnet20_names_kernel_num():
    with pytest.raises(ValueError, match="kernel_num=64 must divide"):
        kwlab.create_model("resnet20_cifar", method="fdconv", num_classes=10)
