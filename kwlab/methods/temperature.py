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

from kwlab.layers.attention import KWAttention

__all__ = [
    "TemperatureSchedule",
    "OFFICIAL_ANNEAL_STEPS",
    "SHORT_ANNEAL_STEPS",
    "anneal_note",
    "anneal_summary",
]

#: The official KW ResNet/ConvNeXt ImageNet recipe anneals over 20 epochs of ceil(1,281,167 / 4096) = 313
#: optimizer steps (total batch 4096): 6,260 steps, of 93,900 in its 300 epochs. (Its MobileNetV2 recipe:
#: 15 epochs at batch 256, ~75,000 steps.)
OFFICIAL_ANNEAL_STEPS = 20 * 313

#: An anneal shorter than this many steps (a quarter of the official one) gets a warning in the log, the
#: results and the report.
SHORT_ANNEAL_STEPS = OFFICIAL_ANNEAL_STEPS // 4


_ANNEAL_ADVICE = (
    "far fewer than the official {official:,} (ResNet recipe): the learned attention has few steps to take "
    "over the function of the one-hot init pattern before tau reaches 0, so accuracy can drop at the end of "
    "the anneal (watch test_acc_tau0); use temperature_steps or temperature_epochs for a longer anneal, or "
    "attention_init='pattern'"
)


def anneal_note(anneal_steps: int | None, total_steps: int) -> str | None:
    """A warning for a KW anneal far shorter than the official one (None when it is not)."""
    if anneal_steps is None or anneal_steps >= SHORT_ANNEAL_STEPS:
        return None
    return (
        f"the temperature anneal spans {anneal_steps} optimizer steps of {total_steps}, "
        + _ANNEAL_ADVICE.format(official=OFFICIAL_ANNEAL_STEPS)
    )


def _span(values: Sequence[int]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo}" if lo == hi else f"{lo} to {hi}"


def anneal_summary(spans: Iterable[tuple[int, int]], runs: int) -> str | None:
    """One warning for the runs of a sweep whose anneal is short (None when none is).

    Args:
        spans: ``(anneal_steps, total_steps)`` of each run that has an :func:`anneal_note`.
        runs: the number of runs of the sweep.
    """
    spans = list(spans)
    if not spans:
        return None
    anneals, totals = [a for a, _ in spans], [t for _, t in spans]
    return (
        f"{len(spans)} of {runs} runs: the temperature anneal spans {_span(anneals)} optimizer steps of "
        f"{_span(totals)}, " + _ANNEAL_ADVICE.format(official=OFFICIAL_ANNEAL_STEPS)
    )


@dataclass(frozen=True)
class TemperatureSchedule:
    """Linear temperature anneal, evaluated per training iteration.

    Args:
        iters_per_epoch: training iterations per epoch (len of the train loader).
        epochs: anneal span in epochs (may be fractional for short runs); None: KW's official span, from
            its temperature contract (``KWAttention.temperature_contract.epochs``).
        start: value at step 0; kwlab schedules the anneal position tau, which starts at 1.0 for every
            method (``kwlab.set_temperature`` maps it to each method's own temperature: KW's blend weight
            tau, DY-Conv's and ODConv's divisor T = 1 + 29 tau, i.e. 30 at tau = 1).
        end: value after the span (tau = 0.0: KW's blend 0, DY-Conv's and ODConv's T = 1).
        steps: the span in optimizer steps; given, it replaces ``epochs`` (``RunConfig.temperature_steps``).
    """

    iters_per_epoch: int
    epochs: float | None = None
    start: float = 1.0
    end: float = 0.0
    steps: int | None = None

    def __post_init__(self) -> None:
        if self.epochs is None:
            object.__setattr__(self, "epochs", float(KWAttention.temperature_contract.epochs))
        if self.iters_per_epoch < 1:
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
        return self.at_step(epoch * self.iters_per_epoch + iteration)
