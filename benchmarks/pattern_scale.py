"""How ``attention_init="pattern"``'s scale was chosen: what each scale does to a KW net at init.

For KW 1x (layer sharing) on ResNet-20 8-16-32 at init, on one batch of random images (attention norms with
batch statistics, as in training), this prints per pattern scale s (the last bias = s x the expected L1 norm
of the learned logits x the one-hot pattern; "official" = the official zero bias):

* ``own_share``: the learned attention's weight on the pattern's cell (1 = it reproduces the pattern);
* ``kernel_diff``: ||W(tau=0) - W(tau=1)|| / ||W(tau=1)|| of each layer's per-sample kernels, mean over layers
  (how far the net without the pattern is from the net with it);
* ``sample_variation`` and ``learned_sample_variation`` at tau = 0: how much the attention differs between
  samples (1 - mean cosine to the batch mean; 0 = static).

Usage: ``python benchmarks/pattern_scale.py [--seeds 3]`` (one torch thread, about a minute).
"""

from __future__ import annotations

import argparse

import torch

import kwlab
from kwlab.experiments.handover import kernel_change
from kwlab.layers.attention import KWAttention


def measure(scale: float | None, seed: int) -> dict[str, float]:
    torch.manual_seed(seed)
    model = kwlab.create_model(
        "resnet20_cifar",
        method="kw",
        num_classes=10,
        widths=[8, 16, 32],
        sharing="layer",
        attention_init="official" if scale is None else "pattern",
    ).train()
    if scale is not None:
        for module in model.modules():
            if isinstance(module, KWAttention):
                module.pattern_scale = scale
                module.reset_parameters()
    x = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    change = kernel_change(model, x, 1.0, 0.0)  # leaves the model at tau = 0
    with kwlab.Probe(model) as probe:
        probe.record(x)
    s = probe.summary()
    return {
        "own_share": float(s["learned_own_share"].mean()),
        "kernel_diff": change,
        "sample_variation": float(s["sample_variation"].mean()),
        "learned_sample_variation": float(s["learned_sample_variation"].mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"KW 1x layer, ResNet-20 8-16-32, at init; mean over {args.seeds} seeds")
    print(f"{'scale':>9} {'own_share':>10} {'kernel_diff':>12} {'sample_var':>11} {'learned_sv':>11}")
    for scale in (None, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0):
        rows = [measure(scale, seed) for seed in range(args.seeds)]
        mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
        name = "official" if scale is None else f"{scale:g}"
        print(
            f"{name:>9} {mean['own_share']:>10.3f} {mean['kernel_diff']:>12.3f} "
            f"{mean['sample_variation']:>11.4f} {mean['learned_sample_variation']:>11.4f}"
        )


if __name__ == "__main__":
    main()
