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
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from kwlab.instruments.freeze import freeze_attention
from kwlab.layers.base import set_temperature

__all__ = [
    "RECALIBRATION_BATCHES",
    "clean_train_accuracy",
    "frozen_accuracies",
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
    with freeze_attention(trainer.model, trainer.test_loader, max_batches=batches):
        plain = trainer.evaluate()["test_acc"]
        net = copy.deepcopy(trainer.model)  # keeps the frozen attention
    recalibrate_batchnorm(net, trainer.train_loader, RECALIBRATION_BATCHES)
    return {"final_acc_frozen": plain, "final_acc_frozen_recal": trainer.evaluate(net)["test_acc"]}
