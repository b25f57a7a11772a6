"""kwlab in timm's ``train.py`` loop (or any loop that counts optimizer updates as timm does).

timm's loop keeps ``num_updates`` (optimizer steps so far) and calls ``lr_scheduler.step_update(num_updates=
num_updates)`` after every update and ``lr_scheduler.step(epoch + 1, metric)`` after every epoch.
:class:`TimmTemperature` has the same two methods, so it goes beside the lr scheduler (two lines), and needs
no state of its own to resume: the position is a function of ``num_updates``, which timm recomputes from the
resumed epoch. It also keeps the EMA copy (``ModelEmaV3``) at its evaluation temperature and, with
``probe_every``, records the probe every ``probe_every`` updates (:class:`kwlab.ProbeCallback`)::

    temperature = TimmTemperature(model, total_steps=20 * updates_per_epoch, model_ema=model_ema)
    ...                                   # inside timm's train_one_epoch, per batch:
    temperature.before_update(num_updates) # before the forward pass
    ...forward, backward, optimizer.step(), model_ema.update(model, step=num_updates)...
    num_updates += 1
    lr_scheduler.step_update(num_updates=num_updates)
    temperature.step_update(num_updates=num_updates)
"""

from __future__ import annotations

from typing import Any

from torch import nn

from kwlab.layers.base import check_tau, set_temperature
from kwlab.methods.temperature import TemperatureSchedule

__all__ = ["TimmTemperature"]


class TimmTemperature:
    """The temperature anneal (and optionally the probe) in timm's scheduler protocol.

    Args:
        model: the model being trained.
        total_steps: the anneal span in optimizer updates (e.g. ``20 * updates_per_epoch``, KW's official).
        start, end: anneal positions (default 1 -> 0).
        model_ema: timm's ``ModelEmaV2/V3`` (or ``AveragedModel``, or the EMA model itself): set once to
            ``ema_tau``; averaging never changes it (kwlab's temperature is not an averaged buffer).
        ema_tau: the EMA copy's anneal position (default 0: every method's evaluation temperature).
        probe_every: record the probe every this many updates (0: off); :attr:`probe` holds the callback.
        num_updates: the updates done so far (a resumed run: ``start_epoch * updates_per_epoch``).
    """

    def __init__(
        self,
        model: nn.Module,
        total_steps: int,
        *,
        start: float = 1.0,
        end: float = 0.0,
        model_ema: Any = None,
        ema_tau: float = 0.0,
        probe_every: int = 0,
        num_updates: int = 0,
    ) -> None:
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 0:
            raise ValueError(
                f"total_steps must be a whole number >= 0 (optimizer updates), got {total_steps!r}"
            )
        self.model = model
        self.schedule = TemperatureSchedule(
            steps=total_steps, start=check_tau(start, "start"), end=check_tau(end, "end")
        )
        if model_ema is not None:
            ema = getattr(model_ema, "module", model_ema)
            if not isinstance(ema, nn.Module):
                raise ValueError(
                    f"model_ema must be an EMA wrapper (.module) or a model, got {type(model_ema).__name__}"
                )
            set_temperature(ema, check_tau(ema_tau, "ema_tau"))
        self.probe = None
        if probe_every:
            from kwlab.experiments.callbacks import ProbeCallback  # noqa: PLC0415 - kwlab.experiments needs pandas (the lab extra)

            self.probe = ProbeCallback(every=probe_every)
        self.num_updates = -1
        self.step_update(num_updates)

    def tau(self) -> float:
        """The anneal position of the update about to run."""
        return self.schedule.at_step(self.num_updates)

    def step_update(self, num_updates: int, metric: Any = None) -> None:
        """After ``num_updates`` optimizer updates: set the position of the next one (timm's call)."""
        if self.probe is not None and self.num_updates >= 0:
            self.probe.on_step_end(self.model, self.num_updates)
        self.num_updates = int(num_updates)
        set_temperature(self.model, self.tau())

    def before_update(self, num_updates: int | None = None) -> None:
        """Before the forward pass of update ``num_updates`` (starts the probe on recorded updates)."""
        if self.probe is not None:
            self.probe.on_step_start(
                self.model, self.num_updates if num_updates is None else int(num_updates)
            )

    def step(self, epoch: int, metric: Any = None) -> None:
        """timm's per-epoch call: nothing to do (the anneal is per update)."""

    def state_dict(self) -> dict[str, Any]:
        return {"num_updates": self.num_updates, "total_steps": self.schedule.total_steps,
                "start": self.schedule.start, "end": self.schedule.end}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.schedule = TemperatureSchedule(
            steps=int(state["total_steps"]), start=state["start"], end=state["end"]
        )
        self.step_update(int(state["num_updates"]))
