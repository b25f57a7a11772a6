"""Temperature schedules for dynamic-convolution attention.

KernelWarehouse blends its attention with a one-hot init pattern by a temperature tau that goes
linearly from 1 to 0 over the first ``epochs`` epochs and then stays 0 (official: 20 epochs, 15 for
the MobileNetV2 recipes), updated every iteration. Official formula (engine.get_temperature)::

    T = iters_per_epoch * epochs
    t = iters_per_epoch * epoch + (iteration_in_epoch + 1)
    tau = end + max(0, (start - end) * (T - t) / max(1, T))

so the very first training step already runs at tau slightly below ``start``. Explained in
notebooks/02_kernelwarehouse_anatomy.ipynb and notebooks/03_train_cifar.ipynb.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from kwlab.layers.attention import KWAttention
from kwlab.layers.base import check_tau, get_temperature, set_temperature

__all__ = [
    "TemperatureSchedule",
    "TemperatureScheduler",
    "OFFICIAL_ANNEAL_STEPS",
    "SHORT_ANNEAL_STEPS",
    "anneal_note",
    "anneal_summary",
]

#: Optimizer steps per epoch of the official KW ImageNet recipe: ceil(1,281,167 images / total batch 4096).
_OFFICIAL_STEPS_PER_EPOCH = -(-1_281_167 // 4096)  # 313

#: The official KW ResNet/ConvNeXt ImageNet recipe anneals over KW's contract span (20 epochs, the method
#: row's ``temperature.epochs``) of 313 optimizer steps: 6,260 steps, of 93,900 in its 300 epochs. (Its
#: MobileNetV2 recipe: 15 epochs at batch 256, ~75,000 steps; see ``ModelEntry.anneal_span``.)
OFFICIAL_ANNEAL_STEPS = int(KWAttention.temperature_contract.epochs) * _OFFICIAL_STEPS_PER_EPOCH

#: An anneal shorter than this many steps (a quarter of the official one) gets a warning in the log, the
#: results and the report.
SHORT_ANNEAL_STEPS = OFFICIAL_ANNEAL_STEPS // 4


_ANNEAL_ADVICE = (
    "far fewer than the official {official:,} (ResNet recipe): the learned attention has few steps to take "
    "over the function of the one-hot init pattern before tau reaches 0, so accuracy can drop at the end of "
    "the anneal (watch test_acc_tau0); use temperature_steps or temperature_epochs for a longer anneal"
)
_PATTERN_ADVICE = ", or attention_init='pattern'"  # only for runs that do not use it already


def _advice(pattern_init: bool) -> str:
    return _ANNEAL_ADVICE.format(official=OFFICIAL_ANNEAL_STEPS) + ("" if pattern_init else _PATTERN_ADVICE)


def anneal_note(anneal_steps: int | None, total_steps: int, *, pattern_init: bool = False) -> str | None:
    """A warning for a KW anneal far shorter than the official one (None when it is not).

    ``pattern_init``: the run already starts its learned attention at the pattern
    (``attention_init="pattern"``), so the note does not advise it."""
    if anneal_steps is None or anneal_steps >= SHORT_ANNEAL_STEPS:
        return None
    span = f"the temperature anneal spans {anneal_steps} optimizer steps of {total_steps}, "
    return span + _advice(pattern_init)


def _span(values: Sequence[int]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo}" if lo == hi else f"{lo} to {hi}"


def anneal_summary(spans: Iterable[tuple[int, int]], runs: int, *, pattern_init: bool = False) -> str | None:
    """One warning for the runs of a sweep whose anneal is short (None when none is).

    Args:
        spans: ``(anneal_steps, total_steps)`` of each run that has an :func:`anneal_note`.
        runs: the number of runs of the sweep.
        pattern_init: every one of those runs uses ``attention_init="pattern"`` (not advised again).
    """
    spans = list(spans)
    if not spans:
        return None
    anneals, totals = [a for a, _ in spans], [t for _, t in spans]
    return (
        f"{len(spans)} of {runs} runs: the temperature anneal spans {_span(anneals)} optimizer steps of "
        f"{_span(totals)}, " + _advice(pattern_init)
    )


@dataclass(frozen=True)
class TemperatureSchedule:
    """Linear temperature anneal, evaluated per training iteration.

    Args:
        iters_per_epoch: training iterations per epoch (len of the train loader); may be None when ``steps``
            gives the span (then only :meth:`at_step` is available, not the per-epoch call).
        epochs: anneal span in epochs (may be fractional for short runs); None: KW's official span, from
            its temperature contract (``KWAttention.temperature_contract.epochs``).
        start: value at step 0; kwlab schedules the anneal position tau, which starts at 1.0 for every
            method (``kwlab.set_temperature`` maps it to each method's own temperature: KW's blend weight
            tau, DY-Conv's and ODConv's divisor T = 1 + 29 tau, i.e. 30 at tau = 1).
        end: value after the span (tau = 0.0: KW's blend 0, DY-Conv's and ODConv's T = 1).
        steps: the span in optimizer steps; given, it replaces ``epochs`` (``RunConfig.temperature_steps``).
    """

    iters_per_epoch: int | None = None
    epochs: float | None = None
    start: float = 1.0
    end: float = 0.0
    steps: int | None = None

    def __post_init__(self) -> None:
        if self.epochs is None:
            object.__setattr__(self, "epochs", float(KWAttention.temperature_contract.epochs))
        if self.iters_per_epoch is None:
            if self.steps is None:
                raise ValueError(
                    "iters_per_epoch is needed to turn epochs into steps; give iters_per_epoch=len(loader), "
                    "or steps= (the span in optimizer steps)"
                )
        elif self.iters_per_epoch < 1:
            raise ValueError(f"iters_per_epoch must be >= 1, got {self.iters_per_epoch}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.steps is not None and self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")

    @property
    def total_steps(self) -> int:
        """The anneal span in optimizer steps."""
        if self.steps is not None:
            return int(self.steps)
        return int(round(self.iters_per_epoch * self.epochs))

    def at_step(self, step: int) -> float:
        """Temperature for global iteration ``step`` (0-based: the first iteration is step 0)."""
        total = self.total_steps
        t = step + 1
        return self.end + max(0.0, (self.start - self.end) * (total - t) / max(1, total))

    def __call__(self, epoch: int, iteration: int) -> float:
        """Temperature at ``iteration`` (0-based) of ``epoch`` (0-based), as the official loop computes it."""
        if self.iters_per_epoch is None:
            raise ValueError(
                "calling a schedule with (epoch, iteration) needs iters_per_epoch; use at_step(step)"
            )
        return self.at_step(epoch * self.iters_per_epoch + iteration)


class TemperatureScheduler:
    """Anneal a model's temperature in one's own training loop, as ``torch.optim.lr_scheduler`` does the
    learning rate: call :meth:`step` after each optimizer step; :meth:`state_dict` / :meth:`load_state_dict`
    resume it (save it beside the optimizer's).

    On construction (and on :meth:`load_state_dict`) the model is set to the anneal position of the step
    about to run; each :meth:`step` moves it to the next. The positions are kwlab's trainer's, step for step
    (:meth:`TemperatureSchedule.at_step`: the first step already runs slightly below ``start``, the official
    loop's formula), and :func:`kwlab.set_temperature` maps them onto every dynamic layer's own temperature.

    Args:
        model: the model (or any module holding dynamic layers) to anneal.
        total_steps: the anneal span in optimizer steps; after it the position stays at ``end``.
        start, end: anneal positions in [0, 1] (default 1 -> 0, every method's full anneal).
        epochs, iters_per_epoch: the span as ``epochs`` epochs of ``iters_per_epoch`` steps, instead of
            ``total_steps`` (``epochs=None`` with ``iters_per_epoch``: KW's official 20 epochs).
        last_step: as ``last_epoch`` of an lr scheduler: -1 (default) starts a fresh anneal; after
            construction it is the index of the step about to run (0), and each :meth:`step` adds 1.

    Example::

        scheduler = kwlab.TemperatureScheduler(model, total_steps=1000)
        for x, y in loader:
            loss = criterion(model(x), y)
            optimizer.zero_grad(); loss.backward(); optimizer.step()
            scheduler.step()

    An EMA copy of the model keeps its own temperature (averaging never changes it): set it with
    ``kwlab.set_temperature(ema_model, 0)`` to evaluate it at the end of the anneal.
    """

    def __init__(
        self,
        model: nn.Module,
        total_steps: int | None = None,
        *,
        start: float = 1.0,
        end: float = 0.0,
        epochs: float | None = None,
        iters_per_epoch: int | None = None,
        last_step: int = -1,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
        if total_steps is not None and (isinstance(total_steps, bool) or not isinstance(total_steps, int)):
            raise ValueError(f"total_steps must be a whole number >= 0, got {total_steps!r}")
        if total_steps is not None and (epochs is not None or iters_per_epoch is not None):
            raise ValueError(
                "give the span either as total_steps= or as epochs= with iters_per_epoch=, not both"
            )
        if total_steps is None and iters_per_epoch is None:
            raise ValueError(
                "give the anneal span: total_steps= (optimizer steps), or iters_per_epoch= (and epochs=)"
            )
        if isinstance(last_step, bool) or not isinstance(last_step, int) or last_step < -1:
            raise ValueError(f"last_step must be a whole number >= -1, got {last_step!r}")
        self.model = model
        self.schedule = TemperatureSchedule(
            iters_per_epoch,
            epochs,
            start=check_tau(start, "start"),
            end=check_tau(end, "end"),
            steps=total_steps,
        )
        self.last_step = last_step
        self.step()

    @property
    def total_steps(self) -> int:
        """The anneal span in optimizer steps."""
        return self.schedule.total_steps

    @property
    def tau(self) -> float:
        """The anneal position the model is at now (for the step about to run)."""
        return self.schedule.at_step(self.last_step)

    def get_last_tau(self) -> float:
        """The anneal position set by the last :meth:`step` (as ``get_last_lr``)."""
        return self.tau

    def step(self) -> float:
        """Advance one optimizer step and set the model to the next step's position; returns it."""
        self.last_step += 1
        tau = self.schedule.at_step(self.last_step)
        set_temperature(self.model, tau)
        return tau

    def state_dict(self) -> dict[str, Any]:
        """What :meth:`load_state_dict` needs to resume: the step count and the schedule."""
        s = self.schedule
        return dict(
            last_step=self.last_step,
            total_steps=s.total_steps,
            start=s.start,
            end=s.end,
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`: the schedule and step count are restored, and the model is set to
        the position of the step about to run (a model restored from a checkpoint gets it back too)."""
        missing = [k for k in ("last_step", "total_steps", "start", "end") if k not in state_dict]
        if missing:
            raise ValueError(
                f"state_dict misses {missing}; expected the dict of TemperatureScheduler.state_dict()"
            )
        self.schedule = TemperatureSchedule(
            None,
            start=check_tau(state_dict["start"], "start"),
            end=check_tau(state_dict["end"], "end"),
            steps=int(state_dict["total_steps"]),
        )
        self.last_step = int(state_dict["last_step"])
        set_temperature(self.model, self.tau)

    def __repr__(self) -> str:
        current = get_temperature(self.model)
        return (
            f"TemperatureScheduler(at step {self.last_step} of an anneal over {self.total_steps} steps, "
            f"tau {self.schedule.start:g} -> {self.schedule.end:g}, model at tau {current})"
        )
