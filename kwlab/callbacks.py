"""The callback protocol of :mod:`kwlab.train` (the probe's training integration implements it).

A callback receives the :class:`~kwlab.train.Trainer` (``trainer.model``, ``trainer.config``,
``trainer.step``, ``trainer.epoch``, ``trainer.run_dir``) at fixed points of the loop. Callbacks with
state implement ``state_dict``/``load_state_dict`` so that a resumed run continues exactly.
"""
from __future__ import annotations

from typing import Any

__all__ = ["Callback"]


class Callback:
    """Base class; every hook is optional."""

    def on_fit_start(self, trainer: Any) -> None:
        """Before the first epoch (also after a resume)."""

    def on_step_start(self, trainer: Any, step: int) -> None:
        """Before the forward pass of global training step ``step``."""

    def on_step_end(self, trainer: Any, step: int, inputs: Any, targets: Any, logits: Any, loss: float) -> None:
        """After the optimizer step of global training step ``step``."""

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
        """After evaluation at the end of ``epoch`` (0-based)."""

    def on_fit_end(self, trainer: Any) -> None:
        """After the last epoch."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
