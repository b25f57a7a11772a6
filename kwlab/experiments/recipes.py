"""Named training recipes: dictionaries of :class:`kwlab.experiments.config.RunConfig` fields.

Use one with ``RunConfig.from_recipe("cifar", arch="resnet20_cifar", method="kw", preset="1x")`` or
``recipe: cifar`` in a YAML config / ``--set recipe=cifar`` on the command line; fields given
explicitly win over the recipe.

The ImageNet recipes are the official KernelWarehouse ones (main.py defaults + configs/*.json, see
/work/shared/reference/dynamic-conv-family.md section 1.8). kwlab's trainer implements their optimiser,
schedule, label smoothing and temperature anneal, not their heavy augmentation (RandAugment, mixup,
cutmix, random erasing, EMA): numbers from these recipes are comparable with each other, not with
the paper's table.
"""

from __future__ import annotations

from typing import Any

from kwlab.models import model_entry
from kwlab.utils import suggest

__all__ = ["RECIPES", "get_recipe", "list_recipes"]


def _official_anneal_epochs(arch: str) -> float:
    """KW's official anneal span on ``arch`` in epochs, read from its registry entry
    (:meth:`kwlab.models.ModelEntry.anneal_span`); a whole number is an int, as the
    recipes wrote it."""
    span = model_entry(arch).anneal_span("kw")
    return int(span) if span.is_integer() else span


RECIPES: dict[str, dict[str, Any]] = {
    # --- official ImageNet recipes -------------------------------------------------------------------
    # Both anneal tau over the official span of their arch (ModelEntry.anneal_span; in optimizer steps for
    # ResNet at total batch 4096: kwlab.methods.temperature.OFFICIAL_ANNEAL_STEPS). Optimiser "sgd" is timm's,
    # with Nesterov momentum.
    "imagenet_resnet": dict(  # ResNet18/50 (and ConvNeXt-T), 300 epochs
        epochs=300,
        optimizer="adamw",
        lr=4e-3,
        batch_size=4096,
        weight_decay=0.05,
        warmup_epochs=20,  # official: 20 warmup epochs, then cosine down to min_lr
        min_lr=1e-6,  # official main.py default (RunConfig keeps 0: committed results keep their hash)
        label_smoothing=0.1,
        temperature_epochs=_official_anneal_epochs("resnet18"),
        image_size=224,
    ),
    "imagenet_mobilenetv2": dict(  # MobileNetV2 1.0 / 0.5, 150 epochs
        epochs=150,
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        batch_size=256,
        weight_decay=4e-5,
        warmup_epochs=0,  # official: no warmup
        min_lr=1e-6,  # official main.py default
        label_smoothing=0.0,
        temperature_epochs=_official_anneal_epochs("mobilenetv2_100"),
        image_size=224,
    ),
    # --- official KernelDNA ImageNet recipes (haiduo/KernelDNA README + main.py) ------------------------
    # SGD momentum 0.9, weight decay on all parameters, plain cross-entropy, per-epoch linear warmup then
    # cosine to 0, no temperature. Upstream main.py trains one batch per epoch (a stray ``break`` at the
    # end of its batch loop); kwlab trains full epochs. Use with create_model(arch, method="kerneldna").
    "imagenet_kerneldna_resnet18": dict(
        epochs=90,
        optimizer="sgd",
        lr=0.1,
        momentum=0.9,
        batch_size=256,
        weight_decay=1e-4,
        warmup_epochs=0,
        min_lr=0.0,
        label_smoothing=0.0,
        temperature_epochs=None,
        image_size=224,
    ),
    "imagenet_kerneldna_resnet50": dict(
        epochs=300,
        optimizer="sgd",
        lr=0.1,
        momentum=0.9,
        batch_size=256,
        weight_decay=1e-4,
        warmup_epochs=20,
        min_lr=0.0,
        label_smoothing=0.0,
        temperature_epochs=None,
        image_size=224,
    ),
    "imagenet_kerneldna_mobilenetv2": dict(  # width 1.0 and 0.5
        epochs=150,
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        batch_size=256,
        weight_decay=4e-5,
        warmup_epochs=0,
        min_lr=0.0,
        label_smoothing=0.0,
        temperature_epochs=None,
        image_size=224,
    ),
    # --- CIFAR ----------------------------------------------------------------------------------------
    "cifar": dict(  # the standard CIFAR-10/100 ResNet recipe
        epochs=200,
        optimizer="sgd",
        lr=0.1,
        momentum=0.9,
        batch_size=128,
        weight_decay=5e-4,
        warmup_epochs=0,
        label_smoothing=0.0,
        temperature_epochs=20,
    ),
    "cifar_short": dict(  # 30 epochs: a GPU afternoon for a whole ablation
        epochs=30,
        optimizer="sgd",
        lr=0.1,
        momentum=0.9,
        batch_size=128,
        weight_decay=5e-4,
        warmup_epochs=1,
        label_smoothing=0.0,
        temperature_epochs=None,
    ),
    # --- quick CPU recipes (teaching, tests, demos) -----------------------------------------------------
    "cpu_quick": dict(
        epochs=4,
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        batch_size=64,
        weight_decay=5e-4,
        warmup_epochs=0.5,
        train_samples=2000,
        test_samples=500,
        temperature_epochs=None,
        amp=False,
    ),
    "cpu_tiny": dict(
        epochs=2,
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        batch_size=32,
        weight_decay=5e-4,
        warmup_epochs=0,
        train_samples=256,
        test_samples=128,
        temperature_epochs=None,
        amp=False,
    ),
}


def list_recipes() -> list[str]:
    """Names of the known recipes."""
    return sorted(RECIPES)


def get_recipe(name: str) -> dict[str, Any]:
    """A copy of recipe ``name``'s RunConfig fields."""
    if name not in RECIPES:
        raise ValueError(f"recipe={name!r} is unknown; allowed: {list_recipes()}.{suggest(name, RECIPES)}")
    return dict(RECIPES[name])
