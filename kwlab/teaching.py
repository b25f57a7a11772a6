"""Small helpers for the teaching notebooks (``notebooks/*.ipynb``) that no other kwlab module provides.

Each helper names the notebook that explains it. They are plain functions of data (plots take an optional
``ax`` and return the Figure, never calling ``plt.show()``), so the notebooks only compose library calls.

* :func:`quick_mode`, :func:`pick_dataset`, :func:`find_data_file`, :func:`runs_dir` -- run settings and
  data discovery shared by every notebook;
* :func:`plan_model`, :func:`kw_parameter_count`, :func:`budget_table`, :func:`plot_budget`,
  :func:`plot_plan`, :func:`budget_explorer` -- warehouse planning on a static network without building
  the KW model (02_kernelwarehouse_anatomy);
* :func:`cell_index_map`, :func:`plot_kernel_cells` -- a kernel cut into cells (02_kernelwarehouse_anatomy);
* :func:`plot_learning_curves` -- per-epoch histories of several runs (03_train_cifar);
* :func:`to_image`, :func:`plot_attribution_grid` -- images and signed attribution maps side by side
  (07_explain_with_captum);
* :func:`export_checkpoint`, :func:`load_checkpoint` -- the small kwlab-trained networks in
  ``data/checkpoints/`` that the analysis notebooks (05, 07) look inside; :func:`randomize_attention` -- the
  same network with freshly initialised attention, the baseline for reading learned attention (05).
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "quick_mode",
    "pick_dataset",
    "find_data_file",
    "runs_dir",
    "plan_model",
    "kw_parameter_count",
    "budget_table",
    "plot_budget",
    "plot_plan",
    "budget_explorer",
    "cell_index_map",
    "plot_kernel_cells",
    "plot_learning_curves",
    "to_image",
    "plot_attribution_grid",
    "checkpoints_dir",
    "export_checkpoint",
    "load_checkpoint",
    "randomize_attention",
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
    from kwlab.experiments.data import data_roots  # noqa: PLC0415

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
    from kwlab.experiments.data import DatasetNotFoundError, resolve_source  # noqa: PLC0415

    try:
        kind, path = resolve_source(name, root, download=False)
    except DatasetNotFoundError as err:
        print(f"{name} not found locally, using {fallback!r} data instead. ({str(err).split(';')[0]})")
        return fallback
    print(f"using {name} from {path}")
    return name


def runs_dir(name: str) -> Path:
    """Where a notebook writes its runs: ``$KWLAB_RUNS/name`` (default ``runs/name``), created.

    Used by notebooks/04_ablation_n_m_sharing.ipynb (the sweep's run directories).
    """
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
    :func:`kwlab.methods.kernelwarehouse.plan_kernelwarehouse` with the knobs the notebook's sliders move.

    Returns a :class:`kwlab.layers.KWPlan` (``plan.table()`` for one row per layer); a combination that is not
    allowed raises ``ValueError`` naming the parameter and the allowed values.
    Explained in notebooks/02_kernelwarehouse_anatomy.ipynb.
    """
    from kwlab.methods.kernelwarehouse import plan_kernelwarehouse  # noqa: PLC0415

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
    from .layers.attention import KWAttention  # noqa: PLC0415

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
    import pandas as pd  # noqa: PLC0415

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


def plot_budget(table: Any, ax=None, title: str | None = None):
    """Parameters (millions) against the budget b, one line per cell ratio, static model dashed.

    Args:
        table: the DataFrame of :func:`budget_table`.
    Explained in notebooks/02_kernelwarehouse_anatomy.ipynb (the static fallback of the interactive view).
    """
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6.5, 4)) if ax is None else (ax.figure, ax)
    ok = table[table["allowed"]]
    for i, (_ratio, part) in enumerate(ok.groupby("cell_ratio", sort=False)):
        part = part.sort_values("budget")
        ax.plot(
            part["budget"],
            part["params"] / 1e6,
            marker="o",
            color=f"C{i}",
            label=f"cell ratio {part['cell_ratio_label'].iloc[0]}",
        )
        for _, r in part.iterrows():
            ax.annotate(
                f"n={int(r['n'])}",
                (r["budget"], r["params"] / 1e6),
                textcoords="offset points",
                xytext=(5, -4 + 9 * (i - 1)),
                fontsize=7,
                color=f"C{i}",
            )
    ax.axhline(table["static_params"].iloc[0] / 1e6, color="0.3", linestyle="--", label="static model")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    budgets = sorted(table["budget"].unique())
    ax.set_xticks(budgets)
    ax.set_xticklabels([_fraction(b) for b in budgets])
    ax.set_xlim(min(budgets) / 1.3, max(budgets) * 1.8)
    ax.set_xlabel("budget b (cells in warehouse / cells cut from layers)")
    ax.set_ylabel("parameters (millions, log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title or "KW parameter count vs budget (n = total warehouse cells)")
    return fig


def plot_plan(
    plan: Any, static_params: int | None = None, params: int | None = None, ax=None, title: str | None = None
):
    """Bars per warehouse: mixtures m cut from its layers (sum) and cells n it holds, log scale.

    Explained in notebooks/02_kernelwarehouse_anatomy.ipynb.
    """
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6.5, 3.8)) if ax is None else (ax.figure, ax)
    keys = list(plan.warehouses)
    m = [sum(plan.layers[n].num_mixtures for n in plan.warehouses[k].layers) for k in keys]
    n = [plan.warehouses[k].num_cells for k in keys]
    pos = np.arange(len(keys))
    bars_m = ax.bar(pos - 0.2, m, width=0.4, color="#5a8f5a", label="m: cells cut from the layers")
    bars_n = ax.bar(pos + 0.2, n, width=0.4, color="#c8553d", label="n: cells in the warehouse")
    ax.bar_label(bars_m, fontsize=7)
    ax.bar_label(bars_n, fontsize=7)
    log = max(m + n) / max(min(m + n), 1) > 30
    if log:
        ax.set_yscale("log")
    ax.margins(y=0.15)
    ax.set_xticks(pos)
    ax.set_xticklabels([f"{k}\n{plan.warehouses[k].cell_shape}" for k in keys], fontsize=8)
    ax.set_xlabel("warehouse (cell shape o_c, i_c, k_c...)")
    ax.set_ylabel("number of cells" + (" (log scale)" if log else ""))
    ax.legend(fontsize=8)
    if title is None:
        title = "Warehouse plan"
        if params is not None and static_params:
            title += f": {params / 1e6:.2f}M params ({params / static_params:.2f}x static)"
    ax.set_title(title)
    fig.tight_layout()
    return fig


def budget_explorer(model: nn.Module, interactive: bool = True, sharing: Any = "stage"):
    """Sliders for the budget b and the cell ratio that redraw :func:`plot_plan` for ``model``.

    With ``interactive=False``, or when ipywidgets is not installed, returns the static fallback instead: a
    Figure with the parameter count for every (b, cell ratio) (:func:`plot_budget`) next to the plan of the
    official 1x setting.

    Explained in notebooks/02_kernelwarehouse_anatomy.ipynb.
    """
    import matplotlib.pyplot as plt  # noqa: PLC0415

    static = sum(p.numel() for p in model.parameters())
    if interactive:
        try:
            import ipywidgets as widgets  # noqa: PLC0415
            from IPython.display import display  # noqa: PLC0415
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
                fig = plot_plan(plan, static, kw_parameter_count(model, plan))
                display(fig)
                plt.close(fig)

            out = widgets.interactive_output(draw, {"b": budget, "r": ratio})
            return widgets.VBox([widgets.HBox([budget, ratio]), out])
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    plot_budget(budget_table(model, sharing=sharing), ax=axes[0])
    plan = plan_model(model, budget=1, cell_in=1, cell_out=1, sharing=sharing)
    plot_plan(
        plan,
        static,
        kw_parameter_count(model, plan),
        ax=axes[1],
        title=f"Plan at b=1, cell ratio 1: {kw_parameter_count(model, plan) / 1e6:.2f}M params",
    )
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------ kernel cells
def cell_index_map(layout: Any) -> Tensor:
    """Which mixture (cell) each weight of a kernel belongs to: an integer tensor of the kernel's shape.

    Built with :func:`kwlab.ops.assemble_kernel` itself: mixture ``j`` filled with the value ``j``.
    Explained in notebooks/02_kernelwarehouse_anatomy.ipynb.
    """
    from .ops import assemble_kernel  # noqa: PLC0415

    m = layout.num_mixtures
    mixtures = torch.arange(m, dtype=torch.float64).reshape(1, m, *([1] * len(layout.cell_shape)))
    mixtures = mixtures.expand(1, m, *layout.cell_shape)
    return assemble_kernel(mixtures, layout)[0].round().long()


def _tile(kernel: Tensor) -> np.ndarray:
    """``(O, I, kh, kw)`` -> ``(O*kh, I*kw)``: one kh x kw tile per (output, input) channel pair."""
    o, i, kh, kw = kernel.shape
    return kernel.permute(0, 2, 1, 3).reshape(o * kh, i * kw).detach().cpu().numpy()


def plot_kernel_cells(weight: Tensor, layout: Any, axes=None, title: str | None = None):
    """Two panels: a 2-D kernel's values, and the cell (mixture index j) each weight belongs to.

    The kernel ``(O, I, kh, kw)`` is drawn as an ``O x I`` grid of ``kh x kw`` tiles (rows: output
    channels, columns: input channels); thin lines separate the tiles.

    Explained in notebooks/02_kernelwarehouse_anatomy.ipynb.
    """
    import matplotlib.pyplot as plt  # noqa: PLC0415

    if weight.dim() != 4:
        raise ValueError(f"weight must be a 2-d conv kernel (O, I, kh, kw), got shape {tuple(weight.shape)}")
    if tuple(weight.shape) != tuple(layout.weight_shape):
        raise ValueError(
            f"weight shape {tuple(weight.shape)} does not match layout.weight_shape {layout.weight_shape}"
        )
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    fig = axes[0].figure
    o, i, kh, kw = weight.shape
    values = _tile(weight)
    lim = float(np.abs(values).max()) or 1.0
    im = axes[0].imshow(values, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    fig.colorbar(im, ax=axes[0], label="weight value", fraction=0.046)
    idx = _tile(cell_index_map(layout))
    m = layout.num_mixtures
    im = axes[1].imshow(idx, cmap="turbo", vmin=-0.5, vmax=m - 0.5, interpolation="nearest")
    fig.colorbar(im, ax=axes[1], label="cell (mixture) index j", fraction=0.046)
    if idx.size <= 400:
        for (r, c), j in np.ndenumerate(idx):
            axes[1].text(c, r, str(j), ha="center", va="center", fontsize=7, color="white")
    for ax in axes:
        for r in range(1, o):
            ax.axhline(r * kh - 0.5, color="black", linewidth=1.2)
        for c in range(1, i):
            ax.axvline(c * kw - 0.5, color="black", linewidth=1.2)
        ax.set_xticks([c * kw + (kw - 1) / 2 for c in range(i)])
        ax.set_xticklabels([str(c) for c in range(i)])
        ax.set_yticks([r * kh + (kh - 1) / 2 for r in range(o)])
        ax.set_yticklabels([str(r) for r in range(o)])
        ax.set_xlabel(f"input channel (each tile: {kh}x{kw} kernel)")
        ax.set_ylabel("output channel")
    axes[0].set_title("kernel W")
    axes[1].set_title(f"cut into m={m} cells of shape {layout.cell_shape}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------ training
def plot_learning_curves(
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    metrics: Sequence[str] = ("train_loss", "test_acc"),
    axes=None,
    title: str | None = None,
):
    """One panel per metric, one line per run, against the epoch.

    Args:
        histories: run name -> ``Trainer.history`` (a list of per-epoch dicts with ``epoch`` and metrics).
        metrics: keys to draw; a metric absent (or all NaN) in a run is skipped for that run.
    Explained in notebooks/03_train_cifar.ipynb.
    """
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    if axes is None:
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.3 * len(metrics), 3.6), squeeze=False)
        axes = list(axes[0])
    fig = axes[0].figure
    labels = {
        "train_loss": "training loss",
        "test_loss": "test loss",
        "train_acc": "training accuracy",
        "test_acc": "test accuracy",
        "temperature": "temperature tau (end of epoch)",
        "lr": "learning rate",
    }
    for ax, metric in zip(axes, metrics):
        for i, (name, hist) in enumerate(histories.items()):
            xs = [h["epoch"] for h in hist if metric in h and not _isnan(h[metric])]
            ys = [h[metric] for h in hist if metric in h and not _isnan(h[metric])]
            if xs:
                ax.plot(xs, ys, marker="o", color=f"C{i}", label=name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(labels.get(metric, metric))
        ax.set_title(labels.get(metric, metric))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


# ------------------------------------------------------------------------------------------- attributions
def to_image(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalised image ``(3, H, W)`` back to ``(H, W, 3)`` in [0, 1] for ``imshow``.

    Explained in notebooks/07_explain_with_captum.ipynb.
    """
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x.detach() * s + m).clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def plot_attribution_grid(
    images: Tensor,
    maps: Mapping[str, Tensor],
    mean: Sequence[float],
    std: Sequence[float],
    column_titles: Sequence[str] | None = None,
    title: str | None = None,
):
    """Images in the first row, one row per attribution map below, signed maps on a shared diverging scale.

    Args:
        images: ``(B, 3, H, W)`` normalised images.
        maps: row label -> attributions ``(B, C, H, W)`` (summed over channels) or ``(B, H, W)``. Each row is
            scaled by its own largest ``|value|`` (one colour bar per row), so rows of different methods or
            models can be compared in shape, not in absolute size.
        column_titles: one string per image (e.g. "label / prediction").
    Explained in notebooks/07_explain_with_captum.ipynb.
    """
    import matplotlib.pyplot as plt  # noqa: PLC0415

    b = images.shape[0]
    rows = len(maps) + 1
    fig, axes = plt.subplots(rows, b, figsize=(1.9 * b + 1.2, 1.9 * rows), squeeze=False)
    for j in range(b):
        axes[0, j].imshow(to_image(images[j], mean, std))
        if column_titles is not None:
            axes[0, j].set_title(column_titles[j], fontsize=8)
    axes[0, 0].set_ylabel("image", fontsize=9)
    for r, (label, attr) in enumerate(maps.items(), start=1):
        a = attr.detach().float().cpu()
        if a.dim() == 4:
            a = a.sum(1)
        lim = float(a.abs().max()) or 1.0
        for j in range(b):
            im = axes[r, j].imshow(a[j].numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        axes[r, 0].set_ylabel(label, fontsize=9)
        fig.colorbar(im, ax=list(axes[r]), fraction=0.02, pad=0.01, label="attribution")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
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
    from .utils import atomic_torch_save, atomic_write_text  # noqa: PLC0415

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


def load_checkpoint(name: str, root: str | os.PathLike | None = None):
    """``(model, config, record)`` of ``root/name`` (default :func:`checkpoints_dir`), model in eval mode.

    The model is built from the stored RunConfig with kwlab's own ``build_model`` and loaded with
    ``torch.load(weights_only=True)`` (strict); ``record`` is the whole ``run.json`` (git revision, final
    metrics). Raises FileNotFoundError naming the folder when it is absent.
    """
    from .experiments.config import RunConfig  # noqa: PLC0415
    from .experiments.train import build_model  # noqa: PLC0415

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
    from .layers.base import DynamicAttention  # noqa: PLC0415

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
