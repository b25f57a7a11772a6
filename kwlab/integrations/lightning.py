"""A PyTorch Lightning callback for kwlab models: the temperature anneal, the probe and logging.

Importing this module does not import Lightning; the class :class:`KWLabCallback` is built on first access
(``from kwlab.integrations.lightning import KWLabCallback``) from ``lightning.pytorch`` (or the older
``pytorch_lightning``), and an ImportError names the package when neither is installed::

    from kwlab.integrations.lightning import KWLabCallback
    trainer = lightning.Trainer(max_steps=..., callbacks=[KWLabCallback(total_steps=20 * len(loader))])

Per optimizer step (``trainer.global_step``, the 0-based index of the step about to run, read once at the
batch's start so that the end of the batch logs the same step) it sets the LightningModule's anneal position
(:class:`kwlab.methods.temperature.TemperatureSchedule`, the positions of kwlab's own trainer), logs it as
``kwlab/tau``, and with ``probe_every`` records :class:`kwlab.ProbeCallback` (its :attr:`probe`; the
headline statistics, means over layers, are logged as ``kwlab/<statistic>``). Its state (the schedule and
the probe history) is saved in Lightning's checkpoints and restored on resume. An EMA copy kept by another
callback keeps its own temperature (set it with ``kwlab.set_temperature``).
"""

from __future__ import annotations

from typing import Any

from kwlab._compat import import_module
from kwlab.layers.base import check_tau, set_temperature
from kwlab.methods.temperature import TemperatureSchedule

__all__ = ["KWLabCallback", "lightning_callback_base"]  # noqa: F822 (built on first access)


def lightning_callback_base() -> type:
    """``lightning.pytorch.Callback`` (or ``pytorch_lightning.Callback``); ImportError when neither exists.

    Imported through kwlab's torchvision guard (:func:`kwlab._compat.import_module`): Lightning imports
    torchmetrics, which imports torchvision."""
    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            return import_module(name).Callback
        except ImportError:
            continue
    raise ImportError(
        "kwlab.integrations.lightning needs PyTorch Lightning: pip install lightning (or pytorch-lightning)"
    )


def _build() -> type:
    class KWLabCallback(lightning_callback_base()):
        """Anneal the temperature per optimizer step, log it, and optionally probe the attention.

        Args:
            total_steps: the anneal span in optimizer steps.
            start, end: anneal positions (default 1 -> 0).
            probe_every: record the probe every this many optimizer steps (0: off).
            log: log ``kwlab/tau`` (and the probe's headline statistics) with ``pl_module.log``.
        """

        def __init__(
            self,
            total_steps: int,
            *,
            start: float = 1.0,
            end: float = 0.0,
            probe_every: int = 0,
            log: bool = True,
        ) -> None:
            super().__init__()
            if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 0:
                raise ValueError(
                    f"total_steps must be a whole number >= 0 (optimizer steps), got {total_steps!r}"
                )
            self.schedule = TemperatureSchedule(
                steps=total_steps, start=check_tau(start, "start"), end=check_tau(end, "end")
            )
            self.log = bool(log)
            self.probe = None
            if probe_every:
                from kwlab.experiments.callbacks import ProbeCallback  # noqa: PLC0415 - kwlab.experiments needs pandas (the lab extra)

                self.probe = ProbeCallback(every=probe_every)
            self._step: int | None = None
            self.taus: list[tuple[int, float]] = []  # (step, tau) of every training batch

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
            step = int(trainer.global_step)
            self._step = step
            tau = self.schedule.at_step(step)
            set_temperature(pl_module, tau)
            self.taus.append((step, tau))
            if self.probe is not None:
                self.probe.on_step_start(pl_module, step)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            step = self._step
            if step is None:
                return
            if self.log:
                pl_module.log("kwlab/tau", self.schedule.at_step(step), on_step=True, on_epoch=False)
            if self.probe is not None:
                before = len(self.probe._rows)
                self.probe.on_step_end(pl_module, step)
                rows = self.probe._rows[before:]
                if rows and self.log:
                    from kwlab.instruments.statistics import HEADLINE  # noqa: PLC0415 - kwlab.instruments needs pandas (the lab extra)

                    for column in HEADLINE:
                        values = [
                            r[column]
                            for r in rows
                            if isinstance(r.get(column), float) and r[column] == r[column]
                        ]
                        if values:
                            pl_module.log(f"kwlab/{column}", sum(values) / len(values), on_step=True)

        def on_fit_end(self, trainer, pl_module) -> None:  # noqa: ANN001
            if self.probe is not None:
                self.probe.on_fit_end(pl_module)

        def state_dict(self) -> dict[str, Any]:
            s = self.schedule
            state = {"total_steps": s.total_steps, "start": s.start, "end": s.end}
            if self.probe is not None:
                state["probe"] = self.probe.state_dict()
            return state

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            self.schedule = TemperatureSchedule(
                steps=int(state_dict["total_steps"]), start=state_dict["start"], end=state_dict["end"]
            )
            if self.probe is not None and "probe" in state_dict:
                self.probe.load_state_dict(state_dict["probe"])

    return KWLabCallback


_CACHE: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    if name == "KWLabCallback":
        if name not in _CACHE:
            _CACHE[name] = _build()
        return _CACHE[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
