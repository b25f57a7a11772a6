"""The probe: records the attention of dynamic layers and streams its statistics (the only place hooks live).

Every dynamic layer follows the protocol of :mod:`kwlab.layers.base`: ``layer.attention(x)`` returns the
mixing coefficients ``alpha (B, m, n)`` and ``layer.attention.tap`` sees the full coefficients, zero cell
included. :class:`Probe` hooks both, and per layer accumulates (without keeping every ``alpha``):

* a signed histogram of ``alpha`` over fixed bins (:data:`kwlab.instruments.metrics.DEFAULT_BINS`);
* ``neg_frac`` (share of ``alpha < 0``) and ``neg_mass`` (share of ``sum |alpha|`` that is negative);
* ``zero_mass``: share each mixture gave the zero cell before it was dropped (NaN without a zero cell);
* per cell of the bank: mean ``|alpha|`` and how often it is a mixture's strongest cell;
* ``entropy`` and ``effective_cells = exp(entropy)`` of each mixture's ``p = |alpha| / sum |alpha|``;
* ``diversity``: mean pairwise cosine distance between the samples' flattened ``alpha`` within a batch,
  averaged over batches;
* ``kernel_variation``: ``mean_b ||W_b - mean W|| / ||mean W||`` over the batch's per-sample effective
  kernels (:meth:`DynamicLayer.effective_kernels <kwlab.layers.base.DynamicLayer.effective_kernels>`, every
  method), recomputed from the layer's input after its forward by a third hook, on the layer itself (no
  gradient, RNG forked, the probe's other hooks silent, and the layer's buffers -- BatchNorm statistics --
  swapped for copies meanwhile, so the originals are never written). Its cost is one more attention pass
  and ``B`` kernels per recorded batch; where ``B`` kernels would exceed :data:`KERNEL_ELEMENTS` numbers,
  only the first ``KERNEL_ELEMENTS // kernel size`` samples (at least 2) are used (in training mode their
  attention BatchNorm then sees that sub-batch). A non-finite batch value is left out of the mean and
  counted in ``kernel_batches_skipped``;
* ``effective_cell_fraction``: ``effective_cells / n``, the share of the cells a mixture can use;
* per-class mean attention and ``class_distance`` (mean pairwise cosine distance of the class means) when
  labels are given;
* the temperature at capture time; optionally the first ``keep`` samples' ``alpha`` for heatmaps.

Labels: call ``probe.set_labels(y)`` before a forward (they stay until replaced or cleared with
``set_labels(None)``), or let :meth:`Probe.record` / :meth:`Probe.record_loader` do it for you.

Example::

    model = kwlab.create_model("resnet20_cifar", method="kw", preset="1x", num_classes=10)
    with kwlab.Probe(model, layers="layer1.*", keep=16) as probe:
        probe.record_loader(test_loader, max_batches=20)   # labels are taken from (x, y) batches
    probe.summary()        # one row per layer: neg_frac, neg_mass, zero_mass, entropy, ...
    probe.cell_usage()     # layer x warehouse cell: mean_abs, top_count
    probe.save("runs/probe", config=cfg); kwlab.instruments.load("runs/probe")

Training: :class:`kwlab.experiments.ProbeCallback` records the summary every ``k`` training steps.

Around the probe: the statistics table (:data:`STATISTICS`, :data:`HEADLINE`, :func:`summary_columns`,
:func:`headline`, :func:`degenerate_layers`) lives in :mod:`kwlab.instruments.statistics`, the per-layer
accumulator the hooks feed in :mod:`kwlab.instruments.layer_stats`, and saving and loading the tables in
:mod:`kwlab.instruments.probe_store` (:class:`~kwlab.instruments.ProbeResult` and
:func:`~kwlab.instruments.load` are imported from :mod:`kwlab.instruments`); each name has that one home.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from kwlab.instruments import metrics, statistics
from kwlab.instruments.layer_stats import LayerStats
from kwlab.instruments.probe_store import save_tables
from kwlab.layers.base import DynamicLayer, dynamic_layers
from kwlab.methods.surgery import select
from kwlab.utils import moved_names
from kwlab.utils import progress_bar as tqdm

__all__ = [
    "KERNEL_ELEMENTS",
    "Probe",
    "capture",
    "select_layers",
]

#: Public names that lived here once -> their one home; importing one from here raises an error naming it.
__getattr__ = moved_names(
    __name__,
    {
        "ProbeResult": "kwlab.instruments",
        "load": "kwlab.instruments",
        "DEGENERATE_RULE": "kwlab.instruments.statistics",
        "EXTRA_COLUMNS": "kwlab.instruments.statistics",
        "HEADLINE": "kwlab.instruments.statistics",
        "LAYER_COLUMNS": "kwlab.instruments.statistics",
        "STATISTICS": "kwlab.instruments.statistics",
        "Statistic": "kwlab.instruments.statistics",
        "degenerate_layers": "kwlab.instruments.statistics",
        "headline": "kwlab.instruments.statistics",
        "headline_metrics": "kwlab.instruments.statistics",
        "summary_columns": "kwlab.instruments.statistics",
    },
)


#: The most numbers the per-sample kernels of one recorded batch may take (``kernel_variation``): a batch
#: whose ``B`` kernels would exceed it uses its first ``max(2, KERNEL_ELEMENTS // kernel size)`` samples.
KERNEL_ELEMENTS = 2**24


# ----------------------------------------------------------------------------------------------- selection
def select_layers(
    model: nn.Module, layers: str | Sequence[str] | None = None
) -> list[tuple[str, DynamicLayer]]:
    """The dynamic layers of ``model`` whose qualified name matches any pattern of ``layers``.

    Args:
        model: any module.
        layers: None (all dynamic layers), one pattern (``"layer1.*"``) or a list of patterns; globs, names
            or module prefixes, as ``include`` of every method (:func:`kwlab.methods.surgery.select`).
    Raises:
        ValueError: the model has no dynamic layers, or a pattern matches none of them (the message lists
            the dynamic layers that exist).
    """
    found = list(dynamic_layers(model))
    if not found:
        raise ValueError(
            f"{type(model).__name__} has no dynamic layers (subclasses of "
            "kwlab.layers.base.DynamicLayer); convert it first, e.g. with kwlab.kernelwarehouse(model)"
        )
    if layers is not None and (callable(layers) or (not isinstance(layers, str) and not layers)):
        raise ValueError(f"layers must be None, a glob pattern or a list of glob patterns, got {layers!r}")
    try:
        return select(found, layers, what="dynamic layer")
    except ValueError as err:
        raise ValueError(str(err).replace("include", "layers", 1)) from None


def capture(
    model: nn.Module, x: Tensor, what: str = "inputs", layers: str | Sequence[str] | None = None
) -> dict[str, Tensor]:
    """Run ``model(x)`` once without gradients and return, per dynamic layer, its input (``what="inputs"``)
    or its attention's full coefficients before the zero cell is dropped (``what="coefficients"``).

    For tests and benchmarks that need a reference per layer; the hooks are removed in ``finally``.
    """
    if what not in ("inputs", "coefficients"):
        raise ValueError(f"what must be 'inputs' or 'coefficients', got {what!r}")
    seen: dict[str, Tensor] = {}
    handles = []
    try:
        for name, layer in select_layers(model, layers):
            if what == "inputs":
                handles.append(
                    layer.register_forward_pre_hook(
                        lambda mod, args, n=name: seen.__setitem__(n, args[0].detach())
                    )
                )
            else:
                handles.append(
                    layer.attention.tap.register_forward_hook(
                        lambda mod, args, out, n=name: seen.__setitem__(n, out.detach())
                    )
                )
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


# ------------------------------------------------------------------------------------------------- probe
class Probe:
    """Record the attention of a model's dynamic layers and summarise it as tidy DataFrames.

    Args:
        model: a model with dynamic layers (KW, CondConv, DY-Conv, ODConv, KernelDNA, ...).
        layers: None (all dynamic layers) or glob pattern(s) over qualified names, e.g. ``"layer1.*"``.
        every: record one forward call out of ``every`` (per layer; the first call is recorded).
        keep: keep the first ``keep`` samples' ``alpha (m, n)`` per layer for :meth:`samples` (heatmaps).
        bins: histogram edges (default :data:`kwlab.instruments.metrics.DEFAULT_BINS`, 40 bins on [-1, 1]).

    Use as a context manager (hooks removed on exit, also on error) or with :meth:`start` / :meth:`stop`.
    Recording runs under ``torch.no_grad`` on detached tensors: outputs and gradients are unchanged.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: str | Sequence[str] | None = None,
        every: int = 1,
        keep: int = 0,
        bins: Tensor | Sequence[float] | None = None,
    ) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        if not isinstance(keep, int) or keep < 0:
            raise ValueError(f"keep must be an integer >= 0, got {keep!r}")
        edges = metrics.DEFAULT_BINS if bins is None else torch.as_tensor(bins, dtype=torch.float32)
        if edges.dim() != 1 or edges.numel() < 2 or not bool((edges[1:] > edges[:-1]).all()):
            raise ValueError("bins must be at least 2 strictly increasing edges")
        self.model = model
        self.every = every
        self.keep = keep
        self.bins = edges
        self._layers = select_layers(model, layers)
        self._stats = {name: LayerStats(name, layer, edges, keep) for name, layer in self._layers}
        self._handles: list[Any] = []
        self._labels: Tensor | None = None
        self._inner = False  # True while the kernel hook reruns a layer's attention: hooks stay silent

    # ------------------------------------------------------------------------------------------ hooks
    @property
    def layers(self) -> list[str]:
        """Qualified names of the probed layers, in model order."""
        return [n for n, _ in self._layers]

    @property
    def active(self) -> bool:
        """Whether hooks are currently registered."""
        return bool(self._handles)

    def start(self) -> Probe:
        """Register the hooks (one forward hook on each ``attention`` and one on each ``attention.tap``)."""
        if self._handles:
            raise RuntimeError("probe already started; call stop() first")
        try:
            for name, layer in self._layers:
                stats = self._stats[name]
                self._handles.append(layer.attention.tap.register_forward_hook(self._tap_hook(stats)))
                if stats.learned:
                    self._handles.append(
                        layer.attention.learned_tap.register_forward_hook(self._learned_hook(stats))
                    )
                self._handles.append(layer.attention.register_forward_hook(self._alpha_hook(stats, layer)))
                if type(layer).effective_kernels is not DynamicLayer.effective_kernels:
                    self._handles.append(layer.register_forward_hook(self._kernel_hook(stats, layer)))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> Probe:
        """Remove every hook this probe registered (safe to call twice)."""
        while self._handles:
            self._handles.pop().remove()
        for s in self._stats.values():
            s.pending_full = None
            s.pending_learned = None
            s.pending_kernels = False
        return self

    def __enter__(self) -> Probe:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _tap_hook(self, stats: LayerStats):
        def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
            if not self._inner:
                stats.pending_full = output  # reference only; consumed by the attention hook right after

        return hook

    def _learned_hook(self, stats: LayerStats):
        def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
            if not self._inner:
                stats.pending_learned = output  # consumed by the attention hook right after

        return hook

    def _kernel_hook(self, stats: LayerStats, layer: DynamicLayer):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if self._inner or not stats.pending_kernels:
                return
            stats.pending_kernels = False
            x = inputs[0].detach()
            take = min(x.shape[0], max(2, KERNEL_ELEMENTS // _kernel_numel(layer)))
            if take < 2:
                return
            # the layer's buffers are swapped for copies while its attention runs again, so that training-mode
            # BatchNorm updates land on the copies: the originals (saved for backward) are never written
            owners = [
                (m, name, buf) for m in layer.modules() for name, buf in m._buffers.items() if buf is not None
            ]
            self._inner = True
            try:
                for m, name, buf in owners:
                    m._buffers[name] = buf.clone()
                with torch.no_grad(), torch.random.fork_rng(devices=[]):
                    kernels = layer.effective_kernels(x[:take])
            except NotImplementedError:  # a geometry the method has no kernel form for: NaN, not an error
                return
            finally:
                self._inner = False
                for m, name, buf in owners:
                    m._buffers[name] = buf
            stats.update_kernels(kernels)

        return hook

    def _alpha_hook(self, stats: LayerStats, layer: DynamicLayer):
        def hook(module: nn.Module, inputs: Any, alpha: Tensor) -> None:
            if self._inner:
                return
            full, stats.pending_full = stats.pending_full, None
            learned, stats.pending_learned = stats.pending_learned, None
            record = stats.calls % self.every == 0
            stats.calls += 1
            stats.pending_kernels = record
            if not record:
                return
            labels = self._labels
            if labels is not None and labels.shape[0] != alpha.shape[0]:
                raise ValueError(
                    f"probe labels have {labels.shape[0]} entries but layer {stats.name!r} "
                    f"saw a batch of {alpha.shape[0]}; call probe.set_labels(y) for this batch"
                )
            with torch.no_grad():
                used = getattr(layer.attention, "uses_temperature", True)  # CondConv/KernelDNA: NaN
                stats.update(alpha, full, labels, layer.attention.temperature if used else None, learned)

        return hook

    # ---------------------------------------------------------------------------------------- recording
    def set_labels(self, labels: Tensor | Sequence[int] | None) -> None:
        """Class labels ``(B,)`` of the next forward(s); None clears them."""
        if labels is None:
            self._labels = None
            return
        y = torch.as_tensor(labels)
        if y.dim() != 1 or y.is_floating_point():
            raise ValueError(
                f"labels must be a 1-d integer tensor (B,), got dtype {y.dtype} shape {tuple(y.shape)}"
            )
        self._labels = y.detach()

    def record(self, inputs: Any, labels: Tensor | Sequence[int] | None = None) -> Any:
        """Run ``model(inputs)`` under ``torch.no_grad`` with ``labels`` set, recording attention.

        Starts the probe for this call if it is not running (and stops it again, also on error). Returns the
        model output. The model's train/eval mode is left as it is.
        """
        started_here = not self.active
        if started_here:
            self.start()
        self.set_labels(labels)
        try:
            with torch.no_grad():
                return self.model(inputs)
        finally:
            self._labels = None
            if started_here:
                self.stop()

    def record_loader(
        self,
        loader: Iterable,
        max_batches: int | None = None,
        device: torch.device | str | None = None,
        progress: bool = True,
    ) -> Probe:
        """Record over a loader of ``(inputs, labels)`` batches (or bare inputs), at most ``max_batches``.

        Inputs (and labels) are moved to ``device`` (default: the device of the model's first parameter).
        """
        if device is None:
            p = next(self.model.parameters(), None)
            device = p.device if p is not None else "cpu"
        total = max_batches
        if total is None and hasattr(loader, "__len__"):
            total = len(loader)
        elif total is not None and hasattr(loader, "__len__"):
            total = min(total, len(loader))
        started_here = not self.active
        if started_here:
            self.start()
        try:
            for i, batch in enumerate(
                tqdm(loader, total=total, desc="probe", disable=not progress, leave=False)
            ):
                if max_batches is not None and i >= max_batches:
                    break
                x, y = _split_batch(batch)
                self.record(x.to(device), None if y is None else y.to(device))
        finally:
            if started_here:
                self.stop()
        return self

    def reset(self) -> Probe:
        """Clear every accumulator (hooks stay as they are)."""
        for s in self._stats.values():
            s.reset()
        return self

    # ------------------------------------------------------------------------------------------ readout
    def mean_alpha(self) -> dict[str, Tensor]:
        """Mean ``alpha (m, n)`` per layer over every recorded sample."""
        return {name: s.mean_alpha() for name, s in self._stats.items()}

    def summary(self) -> pd.DataFrame:
        """One row per layer, columns :func:`summary_columns`: layer, bank, num_mixtures, num_cells,
        n_samples, one per statistic of :data:`STATISTICS` (neg_frac, neg_mass, zero_mass, entropy,
        effective_cells, diversity, mean_abs, ...), class_distance, temperature (NaN for a method without
        one: CondConv, KernelDNA). A RuntimeError before any layer has recorded a sample."""
        if self._stats and all(s.n_samples == 0 for s in self._stats.values()):
            raise RuntimeError(
                "Probe.summary(): nothing recorded yet; run forward passes while the probe is on "
                "(inside `with probe:`, after probe.start(), or probe.record_loader(...)) first"
            )
        rows = [s.summary_row() for s in self._stats.values()]
        return pd.DataFrame(rows, columns=statistics.summary_columns())

    def cell_usage(self) -> pd.DataFrame:
        """One row per (layer, warehouse cell): mean_abs (mean ``|alpha|`` over samples and mixtures),
        top_count (times it was a mixture's strongest cell) and top_frac (top_count / mixtures)."""
        rows = []
        for s in self._stats.values():
            if s.acc is None:
                continue
            cell_abs = (s._get("cell_abs") / (s.n_samples * s.m)).tolist()
            top = s._get("top").tolist()
            bad = float(s._get("nonfinite")) > 0  # NaN attention: no usage to report (argmax of NaN)
            share = [math.nan if bad else t / (s.n_samples * s.m) for t in top]
            cell_abs = [math.nan] * s.n if bad else cell_abs
            for c in range(s.n):
                rows.append(
                    {
                        "layer": s.name,
                        "warehouse": s.bank,
                        "cell": c,
                        "mean_abs": cell_abs[c],
                        "top_count": int(top[c]),
                        "top_frac": share[c],
                    }
                )
        return pd.DataFrame(rows, columns=["layer", "warehouse", "cell", "mean_abs", "top_count", "top_frac"])

    def histogram(self) -> pd.DataFrame:
        """One row per (layer, bin): bin_left, bin_right, count, frac (count / coefficients of the layer)."""
        edges = self.bins.tolist()
        rows = []
        for s in self._stats.values():
            if s.acc is None:
                continue
            counts = s._get("hist").tolist()
            for i, c in enumerate(counts):
                rows.append(
                    {
                        "layer": s.name,
                        "bin_left": edges[i],
                        "bin_right": edges[i + 1],
                        "count": int(c),
                        "frac": math.nan if float(s._get("nonfinite")) > 0 else c / (s.n_samples * s.m * s.n),
                    }
                )
        return pd.DataFrame(rows, columns=["layer", "bin_left", "bin_right", "count", "frac"])

    def per_class(self) -> pd.DataFrame:
        """One row per (layer, label, mixture, cell): mean_alpha over that class's samples, n_samples.

        Raises:
            RuntimeError: no labels were recorded.
        """
        rows = []
        for s in self._stats.values():
            cm = s.class_means()
            if cm is None:
                continue
            means, counts = cm
            for c in range(means.shape[0]):
                if counts[c] == 0:
                    continue
                for j in range(s.m):
                    for t in range(s.n):
                        rows.append(
                            {
                                "layer": s.name,
                                "label": c,
                                "mixture": j,
                                "cell": t,
                                "mean_alpha": float(means[c, j, t]),
                                "n_samples": int(counts[c]),
                            }
                        )
        if not rows:
            raise RuntimeError(
                "per_class() needs labels: call probe.set_labels(y) before each forward, or use "
                "probe.record(x, labels=y) / probe.record_loader(loader)"
            )
        return pd.DataFrame(rows, columns=["layer", "label", "mixture", "cell", "mean_alpha", "n_samples"])

    def samples(self) -> pd.DataFrame:
        """Kept coefficients, one row per (layer, sample, mixture, cell): label (-1 if unknown), alpha.

        Raises:
            RuntimeError: the probe was created with ``keep=0``.
        """
        if self.keep == 0:
            raise RuntimeError("no samples kept: create the probe with keep=N to keep N samples per layer")
        frames = []
        for s in self._stats.values():
            if not s.kept:
                continue
            a = torch.cat(s.kept)  # (K, m, n)
            y = torch.cat(s.kept_labels)  # (K,)
            k, m, n = a.shape
            idx = torch.arange(k * m * n)
            frames.append(
                pd.DataFrame(
                    {
                        "layer": s.name,
                        "sample": (idx // (m * n)).numpy(),
                        "label": y.repeat_interleave(m * n).numpy(),
                        "mixture": ((idx // n) % m).numpy(),
                        "cell": (idx % n).numpy(),
                        "alpha": a.reshape(-1).numpy(),
                    }
                )
            )
        cols = ["layer", "sample", "label", "mixture", "cell", "alpha"]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)

    def kept(self, layer: str) -> Tensor:
        """Kept ``alpha (K, m, n)`` of one layer."""
        if layer not in self._stats:
            raise ValueError(f"layer must be one of the probed layers {self.layers}, got {layer!r}")
        s = self._stats[layer]
        return torch.cat(s.kept) if s.kept else torch.zeros(0, s.m, s.n)

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every available table by name (per_class only with labels, samples only with keep > 0)."""
        out = {"summary": self.summary(), "cell_usage": self.cell_usage(), "histogram": self.histogram()}
        if any(s.class_sum is not None for s in self._stats.values()):
            out["per_class"] = self.per_class()
        if self.keep:
            out["samples"] = self.samples()
        return out

    def save(self, directory: str | Path, config: Any = None) -> Path:
        """Write every table (Parquet with pyarrow, else CSV) and ``probe.json`` holding ``config``
        (:func:`kwlab.instruments.probe_store.save_tables`); read back with :func:`load`."""
        return save_tables(directory, self.tables(), config)


# ------------------------------------------------------------------------------------------- batches
def _kernel_numel(layer: nn.Module) -> int:
    """Numbers in one sample's kernel (an upper bound: groups ignored), for :data:`KERNEL_ELEMENTS`."""
    fan_in = getattr(layer, "in_channels", None) or getattr(layer, "in_features", 1)
    fan_out = getattr(layer, "out_channels", None) or getattr(layer, "out_features", 1)
    size = 1
    for k in getattr(layer, "kernel_size", (1,)):
        size *= int(k)
    return max(1, int(fan_in) * int(fan_out) * size)


def _split_batch(batch: Any) -> tuple[Tensor, Tensor | None]:
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        y = batch[1] if len(batch) > 1 and isinstance(batch[1], Tensor) else None
        return batch[0], y
    raise TypeError(f"a batch must be a tensor or an (inputs, labels) tuple, got {type(batch).__name__}")
