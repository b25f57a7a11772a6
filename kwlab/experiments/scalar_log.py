"""A run's scalars to TensorBoard and W&B: ``log_to`` in :class:`~kwlab.experiments.RunConfig`.

:class:`ScalarWriter` writes named scalars at a step to each target: ``"tensorboard"``
(``torch.utils.tensorboard.SummaryWriter`` into ``<log_dir>/tensorboard``) and ``"wandb"`` (a W&B run in
offline mode, its files under ``<log_dir>/wandb``; ``wandb sync`` uploads it later).
:class:`ScalarLogCallback` is what the trainer adds for ``log_to`` (after the other instruments); the step of
every scalar is the optimizer step (``trainer.step``), as in Lightning's and timm's logs:

* after every epoch, the epoch's metrics (the rows of ``metrics.jsonl``: ``test_acc``, ``train_acc``,
  ``train_acc_clean``, ``train_loss``, ``test_loss``, ``temperature``, ``lr``, ``test_acc_tau0`` where
  measured, ``epoch``, ...);
* at every step the training probe records (``probe_every``), its headline statistics as
  ``probe/<statistic>`` (means over layers: ``probe/neg_frac``, ``probe/effective_cells``, ...);
* after the final probe, its results as ``final/<field>`` (``final/probe_neg_frac``,
  ``final/final_acc_frozen``).

Only rank 0 logs. A run without a run directory (``run_dir=None``) logs nothing and says so.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kwlab.experiments.callbacks import Callback, FinalProbeCallback, ProbeCallback
from kwlab.experiments.config import log_targets
from kwlab.logs import get_logger

__all__ = ["ScalarWriter", "ScalarLogCallback"]

_log = get_logger("train")


def _tensorboard_writer(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 - optional dependency (tensorboard)
    except ImportError:
        raise ImportError(
            "log_to='tensorboard' needs the tensorboard package: pip install tensorboard (kwlab's dev extra)"
        ) from None
    return SummaryWriter(log_dir=str(log_dir))


def _wandb_run(log_dir: Path, name: str | None, config: Mapping[str, Any] | None) -> Any:
    try:
        import wandb  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise ImportError(
            "log_to='wandb' needs the wandb package: pip install wandb (kwlab's dev extra)"
        ) from None
    log_dir.mkdir(parents=True, exist_ok=True)
    return wandb.init(
        mode="offline",
        dir=str(log_dir),
        project="kwlab",
        name=name,
        config=dict(config) if config is not None else None,
        reinit="create_new",
        settings=wandb.Settings(silent=True, console="off"),
    )


class ScalarWriter:
    """Named scalars at a step, to TensorBoard and/or W&B (offline).

    Args:
        log_to: :data:`kwlab.experiments.config.LOG_TARGETS`: ``"tensorboard"``, ``"wandb"`` or a
            list of them.
        log_dir: the folder of the logs (a run directory): TensorBoard writes ``log_dir/tensorboard``, W&B
            ``log_dir/wandb``.
        name: the W&B run name (default: the folder's name).
        config: recorded as the W&B run's config (a :meth:`RunConfig.to_dict`).

    Raises:
        ConfigError: ``log_to`` names another target.
        ImportError: a target's package is not installed (named).
    """

    def __init__(
        self,
        log_to: str | Sequence[str],
        log_dir: str | os.PathLike,
        *,
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.targets = log_targets(log_to)
        self.log_dir = Path(log_dir)
        self.tensorboard = (
            _tensorboard_writer(self.log_dir / "tensorboard") if "tensorboard" in self.targets else None
        )
        self.wandb = (
            _wandb_run(self.log_dir, name or self.log_dir.name, config) if "wandb" in self.targets else None
        )

    def add_scalars(self, values: Mapping[str, Any], step: int) -> dict[str, float]:
        """Write every number of ``values`` (None, text and booleans are left out; NaN is written) at
        ``step``; returns what was written."""
        scalars = {
            k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        if not scalars:
            return scalars
        if self.tensorboard is not None:
            for tag, value in scalars.items():
                self.tensorboard.add_scalar(tag, value, global_step=int(step))
        if self.wandb is not None:
            self.wandb.log(scalars, step=int(step))
        return scalars

    def flush(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.flush()

    def close(self) -> None:
        """Flush and close every target (the W&B run is finished)."""
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


class ScalarLogCallback(Callback):
    """The trainer's ``log_to``: its epochs' metrics, the training probe and the final probe as scalars
    (see the module docstring).

    Args:
        log_to: ``"tensorboard"``, ``"wandb"`` or a list of them
            (:data:`kwlab.experiments.config.LOG_TARGETS`).
    """

    def __init__(self, log_to: str | Sequence[str]) -> None:
        self.targets = log_targets(log_to)
        self.writer: ScalarWriter | None = None

    def on_fit_start(self, trainer: Any) -> None:
        if not getattr(trainer, "is_main", True) or self.writer is not None:
            return
        if trainer.run_dir is None:
            _log.warning("log_to=%s writes into the run directory; this run has none: nothing is logged",
                         list(self.targets))  # fmt: skip
            return
        self.writer = ScalarWriter(
            self.targets, trainer.run_dir, name=Path(trainer.run_dir).name, config=trainer.config.to_dict()
        )

    def _probe(self, trainer: Any) -> ProbeCallback | None:
        return next((cb for cb in trainer.callbacks if isinstance(cb, ProbeCallback)), None)

    def on_step_end(self, trainer: Any, step: int, *args: Any) -> None:
        probe = self._probe(trainer) if self.writer is not None else None
        if probe is None or step % probe.every:
            return
        stats = probe.step_headline(step)
        self.writer.add_scalars({f"probe/{k.removeprefix('probe_')}": v for k, v in stats.items()}, step)

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
        if self.writer is not None:
            self.writer.add_scalars(metrics, trainer.step)
            self.writer.flush()

    def on_fit_end(self, trainer: Any) -> None:
        if self.writer is None:
            return
        final: dict[str, Any] = {}
        for cb in trainer.callbacks:
            if isinstance(cb, FinalProbeCallback):
                final.update(cb.result_fields(trainer))
        self.writer.add_scalars(
            {f"final/{k}": v for k, v in final.items() if not _nan_or_none(v)}, trainer.step
        )
        self.writer.close()
        self.writer = None


def _nan_or_none(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))
