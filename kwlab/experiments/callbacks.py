"""The callback protocol of :mod:`kwlab.experiments.train`, :class:`ProbeCallback` (the probe during
training) and :class:`FinalProbeCallback` (the probe of the trained model).

A callback receives the :class:`~kwlab.experiments.train.Trainer` (``trainer.model``, ``trainer.config``,
``trainer.step``, ``trainer.epoch``, ``trainer.run_dir``) at fixed points of the loop. Callbacks with
state implement ``state_dict``/``load_state_dict`` so that a resumed run continues exactly (a callback whose
state is empty stores nothing in the checkpoint). A callback adds fields to the run's results through
:meth:`Callback.result_fields`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from torch import Tensor, nn

from kwlab.experiments.accuracies import frozen_accuracies
from kwlab.experiments.columns import Column
from kwlab.instruments.probe import Probe
from kwlab.instruments.probe_store import plain_value
from kwlab.instruments.statistics import headline, headline_metrics, statistic_label, summary_columns
from kwlab.layers.base import dynamic_layers
from kwlab.utils import read_table, write_table

__all__ = ["Callback", "FinalProbeCallback", "ProbeCallback", "load_history"]


class Callback:
    """Base class; every hook is optional."""

    def on_fit_start(self, trainer: Any) -> None:
        """Before the first epoch (also after a resume)."""

    def on_step_start(self, trainer: Any, step: int) -> None:
        """Before the forward pass of global training step ``step``."""

    def on_step_end(
        self, trainer: Any, step: int, inputs: Any, targets: Any, logits: Any, loss: float
    ) -> None:
        """After the optimizer step of global training step ``step``."""

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
        """After evaluation at the end of ``epoch`` (0-based)."""

    def on_fit_end(self, trainer: Any) -> None:
        """After the last epoch."""

    #: The result columns :meth:`result_fields` writes (:class:`kwlab.experiments.columns.Column`): a
    #: callback that adds fields declares them here, and the results tables derive from the declarations.
    columns: tuple[Column, ...] = ()

    def result_fields(self, trainer: Any) -> dict[str, Any]:
        """Fields this callback adds to the run's results (after the built-in ones; read after the fit),
        declared in :attr:`columns`."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class ProbeCallback(Callback):
    """Record the probe summary every ``every`` training steps of :class:`kwlab.experiments.train.Trainer`.

    The hooks exist only during recorded steps (registered in ``on_step_start``, removed in ``on_step_end``),
    so other steps run at full speed. :meth:`history` is one tidy DataFrame per run, columns ``step, epoch``
    followed by the :meth:`Probe.summary` columns (``neg_frac`` over training is
    ``history().pivot(index="step", columns="layer", values="neg_frac")``). The history travels with the
    trainer's checkpoints through :meth:`state_dict` / :meth:`load_state_dict`, and ``on_fit_end`` writes it
    to ``trainer.run_dir`` (:meth:`save`; read back with :func:`load_history`).

    Args:
        every: record steps ``0, every, 2 * every, ...``.
        layers: glob pattern(s) of the layers to probe (None: all).
        bins: histogram edges for the probe (the histogram is not kept in the history).

    **Outside kwlab's Trainer** (your own loop, timm's, Lightning's) the hooks need only this: ``trainer`` is
    the model itself (an ``nn.Module``) or any object with a ``model`` attribute (and optionally ``epoch``,
    recorded in the history, and ``run_dir``, where ``on_fit_end`` saves it); ``step`` is the 0-based index
    of the optimizer step, the same in ``on_step_start`` (before the forward pass) and ``on_step_end``
    (after it; the other arguments may be None). ``on_fit_end`` stops the probe::

        cb = ProbeCallback(every=10)
        for step, (x, y) in enumerate(loader):
            cb.on_step_start(model, step)
            loss = criterion(model(x), y)
            ...
            cb.on_step_end(model, step)
        cb.on_fit_end(model)
        cb.history()
    """

    def __init__(
        self,
        every: int = 10,
        layers: str | Sequence[str] | None = None,
        bins: Tensor | Sequence[float] | None = None,
    ) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        self.every = every
        self.layers = layers
        self.bins = bins
        self._probe: Probe | None = None
        self._rows: list[dict[str, Any]] = []

    def _ensure_probe(self, trainer: Any) -> Probe:
        model = trainer if isinstance(trainer, nn.Module) else getattr(trainer, "model", None)
        if not isinstance(model, nn.Module):
            raise ValueError(
                f"trainer must be the model (an nn.Module) or an object with a 'model' attribute holding it, "
                f"got {type(trainer).__name__}"
            )
        if self._probe is None or self._probe.model is not model:
            self._probe = Probe(model, layers=self.layers, bins=self.bins)
        return self._probe

    def on_fit_start(self, trainer: Any) -> None:
        self._ensure_probe(trainer)

    def on_step_start(self, trainer: Any, step: int) -> None:
        if step % self.every == 0:
            probe = self._ensure_probe(trainer)
            probe.stop().reset().start()

    def on_step_end(
        self,
        trainer: Any,
        step: int,
        inputs: Any = None,
        targets: Any = None,
        logits: Any = None,
        loss: float = math.nan,
    ) -> None:
        probe = self._probe
        if probe is None or not probe.active:
            return
        probe.stop()
        epoch = None if isinstance(trainer, nn.Module) else getattr(trainer, "epoch", None)
        for row in probe.summary().to_dict("records"):
            self._rows.append(
                {
                    "step": int(step),
                    "epoch": plain_value(epoch),
                    **{k: plain_value(v) for k, v in row.items()},
                }
            )

    def on_fit_end(self, trainer: Any = None) -> None:
        if self._probe is not None:
            self._probe.stop()
        run_dir = None if isinstance(trainer, nn.Module) else getattr(trainer, "run_dir", None)
        if run_dir is not None and self._rows:
            self.save(run_dir)

    def step_headline(self, step: int) -> dict[str, float]:
        """The headline statistics of recorded step ``step`` (means over layers, ``{"probe_neg_frac": ...}``:
        :func:`kwlab.instruments.statistics.headline`); ``{}`` when the step was not recorded."""
        rows = [r for r in self._rows if r["step"] == step]
        return headline(pd.DataFrame(rows, columns=summary_columns())) if rows else {}

    def history(self) -> pd.DataFrame:
        """Columns step, epoch, then the summary columns; one row per (recorded step, layer)."""
        return pd.DataFrame(self._rows, columns=["step", "epoch", *summary_columns()])

    def state_dict(self) -> dict[str, Any]:
        """Plain Python containers only (loads with ``torch.load(..., weights_only=True)``)."""
        return {"every": self.every, "rows": [dict(r) for r in self._rows]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.every = int(state.get("every", self.every))
        self._rows = [dict(r) for r in state.get("rows", [])]

    def save(self, run_dir: str | Path) -> Path:
        """Write ``probe_history.parquet`` (or ``.csv`` without pyarrow) into ``run_dir``; see
        :func:`load_history`."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        return write_table(self.history(), run_dir / "probe_history")


def load_history(run_dir: str | Path) -> pd.DataFrame:
    """Read the history that :meth:`ProbeCallback.save` wrote into ``run_dir``."""
    return read_table(Path(run_dir) / "probe_history")


class FinalProbeCallback(Callback):
    """Probe the trained model at the end of :meth:`Trainer.fit <kwlab.experiments.train.Trainer.fit>`.

    Runs the probe on up to ``samples`` test images (in eval mode; 16 samples kept per layer), saves its
    tables to ``run_dir/probe`` (:meth:`Probe.save`), and adds to the results ``final_acc_frozen`` and
    ``final_acc_frozen_recal`` (:func:`kwlab.experiments.accuracies.frozen_accuracies`) and the headline
    numbers, means over layers (:func:`kwlab.instruments.statistics.headline`): ``probe_neg_frac``,
    ``probe_effective_cells``, ... (:data:`kwlab.instruments.statistics.HEADLINE`). The trainer adds it for a
    model with dynamic layers when ``config.probe_samples > 0``; it does nothing for a model without them.
    """

    columns = (
        Column("final_acc_frozen", "metric", "test accuracy with the attention frozen", True),
        Column(
            "final_acc_frozen_recal",
            "metric",
            "test accuracy with the attention frozen, BatchNorm recalibrated",
            True,
        ),
        *(Column(name, "metric", statistic_label(name)) for name in headline_metrics()),
    )

    def __init__(self, samples: int) -> None:
        if not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
        self.samples = samples
        self._fields: dict[str, Any] = {}

    def on_fit_end(self, trainer: Any) -> None:
        model = trainer.model
        if next(dynamic_layers(model), None) is None:
            return
        batches = max(1, -(-self.samples // trainer.test_loader.batch_size))
        was_training = model.training
        model.eval()
        try:
            with Probe(model, keep=16) as probe:
                probe.record_loader(trainer.test_loader, max_batches=batches, progress=False)
        finally:
            model.train(was_training)
        if trainer.run_dir is not None and trainer.is_main:
            probe.save(Path(trainer.run_dir) / "probe", config=trainer.config)
        self._fields = {**frozen_accuracies(trainer, batches), **headline(probe.summary())}

    def result_fields(self, trainer: Any) -> dict[str, Any]:
        return dict(self._fields)
