"""Small helpers for the teaching notebooks (``notebooks/*.ipynb``) that no other kwlab module provides.

Each helper names the notebook that explains it. They are plain functions of data, so the notebooks only
compose library calls. The notebooks' figures are drawn by :mod:`kwlab.instruments.plot`.

* :func:`quick_mode`, :func:`pick_dataset`, :func:`find_data_file`, :func:`runs_dir` -- run settings and
  data discovery shared by every notebook;
* :func:`plan_model`, :func:`kw_parameter_count`, :func:`budget_table`, :func:`budget_explorer` -- warehouse
  planning on a static network without building the KW model (02_kernelwarehouse_anatomy);
* :func:`export_checkpoint`, :func:`load_checkpoint` -- the small kwlab-trained networks in
  ``data/checkpoints/`` that the analysis notebooks (05, 07) look inside; :func:`randomize_attention` -- the
  same network with freshly initialised attention, the baseline for reading learned attention (05);
* :func:`reference_finding` -- a committed reference result's accuracies and verdicts, generated from its
  numbers (03, 04, 09 and 10 say with it where dynamic convolution helped and where it did not).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kwlab.methods.kw_plan import plan_kernelwarehouse

from .layers.attention import KWAttention
from .layers.base import DynamicAttention
from .utils import atomic_torch_save, atomic_write_text

__all__ = [
    "quick_mode",
    "pick_dataset",
    "find_data_file",
    "runs_dir",
    "plan_model",
    "kw_parameter_count",
    "budget_table",
    "budget_explorer",
    "checkpoints_dir",
    "export_checkpoint",
    "load_checkpoint",
    "load_run",
    "randomize_attention",
    "reference_finding",
]


# ----------------------------------------------------------------------------------------------- settings
def quick_mode() -> bool:
    """Quick mode (every notebook runs small on a laptop CPU) unless ``$KWLAB_QUICK`` is 0/false/no/off.

    Quick is the default, so a notebook opened without settings never starts a GPU-sized run; full mode is
    asked for with ``KWLAB_QUICK=0`` (``make lab FULL=1``) or ``QUICK = False`` in the notebook's first cell.
    Any other value raises ValueError naming the allowed ones. Used by every notebook (its first code cell).
    """
    value = os.environ.get("KWLAB_QUICK", "").strip().lower()
    if value in ("", "1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(
        f"KWLAB_QUICK must be one of 1/true/yes/on or 0/false/no/off (or unset: quick), got {value!r}"
    )


def find_data_file(filename: str, root: str | os.PathLike | None = None) -> Path | None:
    """The first ``filename`` found under ``root``, ``$KWLAB_DATA`` or ``./data`` (None if absent).

    Used by notebooks/06_imagenet_subset.ipynb to find ``imagenette2-224.zip``.
    """
    from kwlab.experiments.data_sources import data_roots  # noqa: PLC0415 - kwlab.experiments needs pandas (the lab extra)

    for r in data_roots(root):
        p = r / filename
        if p.exists():
            return p
    return None


def pick_dataset(
    name: str = "cifar10", fallback: str = "synthetic", root: str | os.PathLike | None = None
) -> str:
    """``name`` if that dataset is available locally (no download is attempted), else ``fallback``.

    Prints which one was chosen and why. Used by notebooks/03_train_cifar.ipynb (CIFAR-10 when
    ``$KWLAB_DATA`` holds ``cifar10-jpg.zip``, synthetic images otherwise).
    """
    from kwlab.experiments.data_readers import DatasetNotFoundError  # noqa: PLC0415 - kwlab.experiments needs pandas (the lab extra)
    from kwlab.experiments.data_sources import resolve_source  # noqa: PLC0415 - kwlab.experiments needs pandas (the lab extra)

    try:
        kind, path = resolve_source(name, root, download=False)
    except DatasetNotFoundError as err:
        print(f"{name} not found locally, using {fallback!r} data instead. ({str(err).split(';')[0]})")
        return fallback
    print(f"using {name} from {path}")
    return name


def runs_dir(name: str, key: Any = None) -> Path:
    """Where a notebook writes its runs: ``$KWLAB_RUNS/name`` (default ``runs/name``), created.

    ``key`` (any JSON-serialisable value, e.g. a sweep's ``spec.to_dict()``) keys the folder by content:
    ``name-<8 hex digits of its hash>``. A notebook re-run with other settings (quick or full mode, CIFAR-10
    or synthetic data) then gets its own folder and never mixes its runs with another setting's.
    Used by notebooks/04_ablation_n_m_sharing.ipynb (the sweep's run directories).
    """
    if key is not None:
        text = json.dumps(key, sort_keys=True, default=str)
        name = f"{name}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    path = Path(os.environ.get("KWLAB_RUNS", "runs")).expanduser() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


# ----------------------------------------------------------------------------------------------- planning
def plan_model(
    model: nn.Module,
    *,
    budget: float = 1.0,
    cell_in: float = 1.0,
    cell_out: float = 1.0,
    sharing: Any = "stage",
    spatial_partition: bool = True,
    reduction: float = 1 / 16,
):
    """The warehouse plan :func:`kwlab.kernelwarehouse` would make for a *static* ``model`` (nothing built);
    :func:`kwlab.methods.plan_kernelwarehouse` with the knobs the notebook's sliders move.

    Returns a :class:`kwlab.layers.KWPlan` (``plan.table()`` for one row per layer); a combination that is not
    allowed raises ``ValueError`` naming the parameter and the allowed values.
    Explained in notebooks/02_kernelwarehouse_anatomy.ipynb.
    """

    return plan_kernelwarehouse(
        model,
        budget=budget,
        cell_in=cell_in,
        cell_out=cell_out,
        sharing=sharing,
        spatial_partition=spatial_partition,
        reduction=reduction,
    )


def kw_parameter_count(
    model: nn.Module, plan: Any, *, attention_norm: str = "batch", zero_cell: bool = True
) -> int:
    """Parameters of the KW model that ``plan`` describes, from the static ``model`` and the plan alone:
    ``static params - converted kernels + warehouse cells + attention heads``. Each layer's attention is built
    on the meta device (no memory) and counted, so the count is the real module's by construction.

    Explained in notebooks/02_kernelwarehouse_anatomy.ipynb (checked there against the built model).
    """

    modules = dict(model.named_modules())
    total = sum(p.numel() for p in model.parameters())
    total += sum(wp.num_parameters for wp in plan.warehouses.values())
    with torch.device("meta"):
        for name, lp in plan.layers.items():
            total -= modules[name].weight.numel()
            wp = plan.warehouses[lp.warehouse]
            att = KWAttention(
                lp.spec.in_channels,
                lp.num_mixtures,
                wp.num_cells,
                start_cell=lp.start_cell,
                budget=wp.options.budget,
                reduction=wp.options.reduction,
                norm=attention_norm,
                zero_cell=zero_cell,
            )
            total += sum(p.numel() for p in att.parameters())
    return int(total)


def budget_table(
    model: nn.Module,
    budgets: Sequence[float] = (0.25, 0.5, 1, 2, 4),
    cell_ratios: Sequence[float] = (1.0, 0.5, 0.25),
    sharing: Any = "stage",
):
    """One row per (budget b, cell ratio): allowed?, total mixtures m, total cells n, warehouses, parameters.

    ``cell_ratio`` sets ``cell_in = cell_out``. Disallowed combinations keep a row with ``allowed=False``
    and the reason. Explained in notebooks/02_kernelwarehouse_anatomy.ipynb.
    """
    import pandas as pd  # noqa: PLC0415 - pandas, the lab extra

    static = sum(p.numel() for p in model.parameters())
    rows = []
    for ratio in cell_ratios:
        for b in budgets:
            row = dict(
                budget=float(b),
                budget_label=_fraction(b),
                cell_ratio=float(ratio),
                cell_ratio_label=_fraction(ratio),
                static_params=static,
            )
            try:
                plan = plan_model(model, budget=b, cell_in=ratio, cell_out=ratio, sharing=sharing)
            except ValueError as err:
                rows.append(
                    dict(
                        row,
                        allowed=False,
                        reason=str(err).split(":")[0],
                        m=np.nan,
                        n=np.nan,
                        warehouses=np.nan,
                        params=np.nan,
                    )
                )
                continue
            rows.append(
                dict(
                    row,
                    allowed=True,
                    reason="",
                    m=sum(lp.num_mixtures for lp in plan.layers.values()),
                    n=sum(wp.num_cells for wp in plan.warehouses.values()),
                    warehouses=len(plan.warehouses),
                    params=kw_parameter_count(model, plan),
                )
            )
    return pd.DataFrame(rows)


def _fraction(x: float) -> str:
    f = Fraction(x).limit_denominator(64)
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def budget_explorer(model: nn.Module, interactive: bool = True, sharing: Any = "stage"):
    """Sliders for the budget b and the cell ratio that redraw :func:`kwlab.instruments.plot.warehouse_plan`.

    With ``interactive=False``, or when ipywidgets is not installed, returns the static fallback instead: a
    Figure with the parameter count for every (b, cell ratio) (``plot.params_vs_budget``) next to the plan of
    the official 1x setting.

    Explained in notebooks/02_kernelwarehouse_anatomy.ipynb.
    """
    import matplotlib.pyplot as plt  # noqa: PLC0415 - matplotlib, the lab extra

    from .instruments import plot  # noqa: PLC0415 - matplotlib is the optional "lab" extra

    static = sum(p.numel() for p in model.parameters())
    if interactive:
        try:
            import ipywidgets as widgets  # noqa: PLC0415 - ipywidgets is optional: the static view without it
            from IPython.display import display  # noqa: PLC0415 - IPython is optional: the static view without it
        except ImportError:
            print("ipywidgets is not installed: showing the static view (pip install ipywidgets for sliders)")
        else:
            budget = widgets.SelectionSlider(
                options=[("1/4", 0.25), ("1/2", 0.5), ("1", 1.0), ("2", 2.0), ("4", 4.0)],
                value=1.0,
                description="budget b",
            )
            ratio = widgets.SelectionSlider(
                options=[("1/4", 0.25), ("1/2", 0.5), ("1", 1.0)], value=1.0, description="cell ratio"
            )

            def draw(b: float, r: float) -> None:
                try:
                    plan = plan_model(model, budget=b, cell_in=r, cell_out=r, sharing=sharing)
                except ValueError as err:
                    print(f"not allowed: {err}")
                    return
                fig = plot.warehouse_plan(plan, static, kw_parameter_count(model, plan))
                display(fig)
                plt.close(fig)

            out = widgets.interactive_output(draw, {"b": budget, "r": ratio})
            return widgets.VBox([widgets.HBox([budget, ratio]), out])
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    plot.params_vs_budget(budget_table(model, sharing=sharing), ax=axes[0])
    plan = plan_model(model, budget=1, cell_in=1, cell_out=1, sharing=sharing)
    plot.warehouse_plan(
        plan,
        static,
        kw_parameter_count(model, plan),
        ax=axes[1],
        title=f"Plan at b=1, cell ratio 1: {kw_parameter_count(model, plan) / 1e6:.2f}M params",
    )
    fig.tight_layout()
    return fig


# -------------------------------------------------------------------------------------------- checkpoints
def checkpoints_dir() -> Path:
    """``$KWLAB_CHECKPOINTS``, else the repository's ``data/checkpoints`` (the notebooks' networks)."""
    env = os.environ.get("KWLAB_CHECKPOINTS")
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[1] / "data" / "checkpoints"


def export_checkpoint(run_dir: str | os.PathLike, name: str, root: str | os.PathLike | None = None) -> Path:
    """Copy a finished kwlab run (``run_dir/checkpoint.pt`` + ``config.json``) to ``root/name/``.

    Writes ``model.pt`` (the model's ``state_dict`` only) and ``run.json`` (the RunConfig, the git revision
    and resolved settings from ``config.json``, and the run's final metrics from ``metrics.jsonl``).
    """

    run_dir = Path(run_dir)
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    record = json.loads((run_dir / "config.json").read_text())
    lines = (
        (run_dir / "metrics.jsonl").read_text().splitlines() if (run_dir / "metrics.jsonl").exists() else []
    )
    history = [json.loads(line) for line in lines if line.strip()]
    if history and history[-1].get("epoch") != record["config"]["epochs"]:
        raise ValueError(
            f"{run_dir} is not finished: last epoch {history[-1].get('epoch')}, "
            f"epochs={record['config']['epochs']}"
        )
    record["final"] = history[-1] if history else {}
    record["source_run"] = run_dir.name
    out = Path(root) if root is not None else checkpoints_dir()
    out = out / name
    out.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(state["model"], out / "model.pt")
    atomic_write_text(out / "run.json", json.dumps(record, indent=2) + "\n")
    return out


def load_run(run_dir: str | os.PathLike):
    """``(model, config)`` of a finished kwlab run directory (its ``checkpoint.pt`` and ``config.json``), the
    model in eval mode at the temperature it ended with. Loaded with ``torch.load(weights_only=True)``
    (strict). Raises FileNotFoundError naming the file when the run kept no checkpoint."""
    from .experiments.config import RunConfig  # noqa: PLC0415 - teaching stays importable without experiments
    from .experiments.setup import build_model  # noqa: PLC0415 - as above

    run_dir = Path(run_dir)
    for needed in ("checkpoint.pt", "config.json"):
        if not (run_dir / needed).exists():
            raise FileNotFoundError(f"no finished run at {run_dir}: {run_dir / needed} does not exist")
    record = json.loads((run_dir / "config.json").read_text())
    config = RunConfig.from_dict(record["config"])
    model = build_model(config, int(record["resolved"]["num_classes"]))
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    return model.eval(), config


def load_checkpoint(name: str, root: str | os.PathLike | None = None):
    """``(model, config, record)`` of ``root/name`` (default :func:`checkpoints_dir`), model in eval mode.

    The model is built from the stored RunConfig with kwlab's own ``build_model`` and loaded with
    ``torch.load(weights_only=True)`` (strict); ``record`` is the whole ``run.json`` (git revision, final
    metrics). Raises FileNotFoundError naming the folder when it is absent.
    """
    from .experiments.config import RunConfig  # noqa: PLC0415 - kwlab.experiments needs pandas (the lab extra)
    from .experiments.setup import build_model  # noqa: PLC0415 - kwlab.experiments needs pandas (the lab extra)

    folder = (Path(root) if root is not None else checkpoints_dir()) / name
    if not (folder / "model.pt").exists():
        raise FileNotFoundError(f"no checkpoint {name!r}: {folder / 'model.pt'} does not exist")
    record = json.loads((folder / "run.json").read_text())
    config = RunConfig.from_dict(record["config"])
    model = build_model(config, int(record["resolved"]["num_classes"]))
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    return model.eval(), config, record


def randomize_attention(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` whose attention modules are freshly initialised (their own ``reset_parameters``,
    BatchNorm statistics reset); everything else, temperature included, is kept.

    The baseline for reading trained attention (05_attention_analysis): a statistic that random attention
    shows as well (signs, cell usage) says nothing about what was learned.
    """

    out = copy.deepcopy(model)
    torch.manual_seed(seed)
    for module in out.modules():
        if isinstance(module, DynamicAttention):
            for sub in module.modules():
                if hasattr(sub, "reset_running_stats"):
                    sub.reset_running_stats()
                if sub is not module and hasattr(sub, "reset_parameters"):
                    sub.reset_parameters()
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return out


# ------------------------------------------------------------------------------------- reference results
def reference_finding(name: str, root: str | os.PathLike | None = None) -> str:
    """The finding of the committed reference result ``data/results/<name>``: each configuration's accuracy
    with its interval and budget, and the verdicts declared in its sweep file (differs / equivalent / not
    resolved, Holm-adjusted), generated now from its ``results.csv`` -- never typed by hand.

    Raises FileNotFoundError naming the folder when the result is not committed (only its sweep file)."""
    from .experiments.findings import findings, load_results, load_verdicts  # noqa: PLC0415 - pandas, lazily

    folder = Path(root) if root is not None else Path(__file__).resolve().parents[1] / "data" / "results"
    folder = folder / name
    if not (folder / "results.csv").exists():
        raise FileNotFoundError(f"reference result {name!r} is not committed: no {folder / 'results.csv'}")
    return "\n".join(findings(load_results(folder), None, load_verdicts(folder)))
