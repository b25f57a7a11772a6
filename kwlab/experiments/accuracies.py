"""Accuracies beyond the plain test accuracy: the clean train accuracy, the test accuracy at temperature 0
while the anneal runs, with the attention frozen after training, and the BatchNorm recalibration the last
two use.

Each function takes the :class:`~kwlab.experiments.train.Trainer` (its ``model``, ``evaluate``,
``loss_and_accuracy``, ``train_loader``, ``train_eval_loader``, ``test_loader`` and ``temperature``) and
leaves the trained model as it found it: changed
statistics are measured on a copy, and the training RNG is not touched.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from kwlab.experiments.columns import Column
from kwlab.instruments.freeze import NonFiniteAttentionError, freeze_attention
from kwlab.layers.base import set_temperature
from kwlab.layers.dcd import DCD_REMEDY, DCDConv2d, DCDLinear

__all__ = [
    "NONFINITE_COLUMNS",
    "NONFINITE_FIELDS",
    "RECALIBRATION_BATCHES",
    "clean_train_accuracy",
    "finite",
    "frozen_accuracies",
    "nan_min",
    "nonfinite_notes",
    "recalibrate_batchnorm",
    "tau0_accuracies",
]

#: Training batches that :func:`recalibrate_batchnorm` runs for ``test_acc_tau0_recal`` and
#: ``final_acc_frozen_recal``.
RECALIBRATION_BATCHES = 20


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader: Iterable, batches: int) -> nn.Module:
    """Measure every BatchNorm's running statistics again: reset them, then run ``batches`` batches of
    ``loader`` through ``model`` in train mode (cumulative averages, no gradient, the global RNG restored
    afterwards). Returns ``model`` in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.random.fork_rng(devices=[]):
        for i, batch in enumerate(loader):
            if i >= batches:
                break
            model(batch[0] if isinstance(batch, (tuple, list)) else batch)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()


def clean_train_accuracy(trainer: Any) -> dict[str, float | None]:
    """``train_acc_clean``: the accuracy of the trained model on a fixed subset of the training set
    (``trainer.train_eval_loader``, see :func:`kwlab.experiments.setup.train_eval_indices`), measured like
    the test accuracy -- eval mode (BatchNorm running statistics, nothing updated), no augmentation, the
    model's current temperature, sharded over DDP ranks and summed. Reads no RNG; the model's train/eval
    mode is restored. None when the measurement is off (``train_eval_samples=0``).
    """
    loader = getattr(trainer, "train_eval_loader", None)
    if loader is None:
        return {"train_acc_clean": None}
    was_training = trainer.model.training
    try:
        _, acc = trainer.loss_and_accuracy(loader)
    finally:
        trainer.model.train(was_training)
    return {"train_acc_clean": acc}


def tau0_accuracies(trainer: Any, metrics: dict[str, Any]) -> dict[str, float | None]:
    """Test accuracy at tau = 0 while the anneal runs (the net without its init pattern), twice:

    * ``test_acc_tau0``: the trained model at tau = 0 with its BatchNorm running statistics, which were
      collected at tau > 0 (what the net gives if the anneal stopped here);
    * ``test_acc_tau0_recal``: a copy of it whose BatchNorm statistics are measured again at tau = 0 on
      :data:`RECALIBRATION_BATCHES` training batches (no gradient, the training RNG untouched): the
      function the learned attention carries, apart from the statistics it was trained with.

    ``metrics`` is the epoch's row (its ``temperature`` and ``test_acc``). After the anneal both equal
    ``test_acc`` (not measured again); None for methods without a temperature.
    """
    tau = metrics.get("temperature")
    if trainer.temperature is None or tau is None:
        return {"test_acc_tau0": None, "test_acc_tau0_recal": None}
    if tau == 0.0:
        return {"test_acc_tau0": metrics["test_acc"], "test_acc_tau0_recal": metrics["test_acc"]}
    try:
        set_temperature(trainer.model, 0.0)
        plain = trainer.evaluate()["test_acc"]
    finally:
        set_temperature(trainer.model, tau)
    net = copy.deepcopy(trainer.model)
    set_temperature(net, 0.0)
    recalibrate_batchnorm(net, trainer.train_loader, RECALIBRATION_BATCHES)
    return {"test_acc_tau0": plain, "test_acc_tau0_recal": trainer.evaluate(net)["test_acc"]}


def frozen_accuracies(trainer: Any, batches: int) -> dict[str, float]:
    """Test accuracy with every dynamic layer's attention frozen to its mean over the first ``batches`` test
    batches (:func:`kwlab.freeze_attention`): the net made static, twice.

    ``final_acc_frozen`` keeps the BatchNorm statistics the net was trained with (dynamic kernels);
    ``final_acc_frozen_recal`` measures them again for the frozen net (:func:`recalibrate_batchnorm`, on a
    copy). ``final_acc - final_acc_frozen_recal`` is what the input-dependence of the attention adds (the
    *dynamic gain*); the gap to ``final_acc_frozen`` also counts the stale statistics.
    """
    try:
        frozen = freeze_attention(trainer.model, trainer.test_loader, max_batches=batches)
    except NonFiniteAttentionError:  # NaN attention: no frozen net to measure (nonfinite_notes says so)
        return {"final_acc_frozen": math.nan, "final_acc_frozen_recal": math.nan}
    with frozen:
        plain = trainer.evaluate()["test_acc"]
        net = copy.deepcopy(trainer.model)  # keeps the frozen attention
    recalibrate_batchnorm(net, trainer.train_loader, RECALIBRATION_BATCHES)
    return {"final_acc_frozen": plain, "final_acc_frozen_recal": trainer.evaluate(net)["test_acc"]}


def finite(value: Any) -> bool:
    """Whether ``value`` is a finite number (None, NaN, inf and non-numbers are not)."""
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def nan_min(values: Iterable[Any]) -> float | None:
    """Minimum of the values that are not None; NaN if any of them is NaN (Python's ``min`` would return
    whichever value comes first); None if there are none."""
    kept = [float(v) for v in values if v is not None]
    if not kept:
        return None
    return math.nan if any(math.isnan(v) for v in kept) else min(kept)


#: results field -> what went non-finite when it is NaN or infinite (:func:`nonfinite_notes`)
NONFINITE_FIELDS = {
    "final_loss": "test loss",
    "final_acc": "test logits",
    "final_train_loss": "train loss",
    "final_acc_tau0": "test logits at tau = 0",
    "min_acc_tau0": "test logits at tau = 0",
    "min_acc_tau0_recal": "test logits at tau = 0 after BatchNorm recalibration",
    "final_acc_frozen": "frozen accuracy (attention means or logits with the attention frozen)",
    "final_acc_frozen_recal": "frozen accuracy after BatchNorm recalibration",
}

#: what to do when a DCD model's eval-mode outputs are not finite


#: The columns :func:`nonfinite_notes` writes (it also appends to the trainer's ``notes``).
NONFINITE_COLUMNS = (
    Column("nonfinite", "record", "numbers from non-finite values"),
    Column("nonfinite_what", "record", "what went non-finite"),
)


def nonfinite_notes(
    results: dict[str, Any], history: list[dict[str, Any]], model: Any = None
) -> dict[str, Any]:
    """Mark a run whose numbers come from non-finite values: ``results["nonfinite"]`` (bool),
    ``results["nonfinite_what"]`` (what went non-finite, comma-separated; None when all is finite), and a
    sentence in ``results["notes"]`` saying what went non-finite, where and from which epoch. An accuracy
    read from non-finite logits is already NaN (:meth:`Trainer.evaluate`); ``final_train_acc`` of a
    non-finite train loss is made NaN here. A model with DCD layers gets
    :data:`kwlab.layers.dcd.DCD_REMEDY`. Returns ``results``."""
    what: list[str] = []
    for field, where in NONFINITE_FIELDS.items():
        value = results.get(field)
        if value is not None and not finite(value) and where not in what:
            what.append(where)
    if not finite(results.get("final_train_loss")) and results.get("final_train_loss") is not None:
        results["final_train_acc"] = math.nan  # the argmax of NaN logits is not an accuracy
    results["nonfinite"] = bool(what)
    results["nonfinite_what"] = ", ".join(what) or None
    if what:
        first = {
            key: next((m["epoch"] for m in history if m.get(key) is not None and not finite(m[key])), None)
            for key in ("test_loss", "train_loss", "test_acc")
        }
        since = "; ".join(f"{k.replace('_', ' ')} from epoch {e}" for k, e in first.items() if e is not None)
        note = (
            f"non-finite numbers (NaN or inf): {', '.join(what)}"
            + (f" ({since} of {len(history)})" if since else "")
            + "; the accuracies measured from them are NaN, and summaries, findings and plots leave this "
            "run out"
        )
        if model is not None and _has_dcd(model):
            note += ". " + DCD_REMEDY
        results["notes"] = "; ".join(n for n in (results.get("notes"), note) if n)
    return results


def _has_dcd(model: Any) -> bool:
    return any(isinstance(m, (DCDConv2d, DCDLinear)) for m in model.modules())
