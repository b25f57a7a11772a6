"""Training-step slowdown caused by the attention probe.

Times one SGD training step (forward, backward, update) of resnet20_cifar KW 1x on random CIFAR-sized data:
  * no probe;
  * ProbeCallback(every=1): hooks on, statistics streamed and the summary row taken every step;
  * ProbeCallback(every=10): the same every tenth step (hooks are off on the other steps);
  * Probe(every=1) left running: streaming only, no per-step summary.
Configurations are interleaved step by step (so background load hits them alike) and the median per
configuration is reported as a ratio to "no probe". Target: <= 1.10 at every=10.

    OMP_NUM_THREADS=2 python benchmarks/bench_probe.py --steps 30
"""

from __future__ import annotations

import argparse
import statistics
import time
import types

import torch
from torch import nn

import kwlab
from kwlab.experiments.callbacks import ProbeCallback
from kwlab.instruments.probe import Probe, capture


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet20_cifar")
    ap.add_argument("--preset", default="1x")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30, help="timed steps per configuration")
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = kwlab.create_model(args.arch, method="kw", preset=args.preset, num_classes=10).train()
    kwlab.set_temperature(model, 0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch,))
    trainer = types.SimpleNamespace(model=model, step=0, epoch=0, run_dir=None)

    def train_step() -> tuple[torch.Tensor, float]:
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return logits, loss.item()

    callbacks = {"callback every=1": ProbeCallback(every=1), "callback every=10": ProbeCallback(every=10)}
    for cb in callbacks.values():
        cb.on_fit_start(trainer)
    streaming = Probe(model, every=1)
    steps = {name: 0 for name in ["no probe", *callbacks, "Probe(every=1), no summary"]}
    times: dict[str, list[float]] = {name: [] for name in steps}

    def run(name: str) -> float:
        step = steps[name]
        steps[name] += 1
        t0 = time.perf_counter()
        if name in callbacks:
            cb = callbacks[name]
            cb.on_step_start(trainer, step)
            logits, loss = train_step()
            cb.on_step_end(trainer, step, x, y, logits, loss)
        elif name.startswith("Probe"):
            with streaming:
                train_step()
        else:
            train_step()
        return time.perf_counter() - t0

    for _ in range(args.warmup):
        for name in steps:
            run(name)
    for name in steps:
        steps[name] = 0
    for _ in range(args.steps):
        for name in steps:
            times[name].append(run(name))
    base = statistics.median(times["no probe"])
    print(
        f"{args.arch} KW {args.preset}, batch {args.batch}, {args.threads} threads, {args.steps} steps each "
        f"(torch {torch.__version__})"
    )
    print(f"{'configuration':<30} {'median s/step':>14} {'mean s/step':>12} {'vs no probe':>12}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<30} {med:>14.4f} {statistics.mean(ts):>12.4f} {med / base:>11.3f}x")
    rows = sum(len(cb.history()) for cb in callbacks.values())
    print(
        f"(history rows recorded: {rows}; every=10 is within target: "
        f"{statistics.median(times['callback every=10']) / base <= 1.10})"
    )

    # The probe's own work, timed in isolation (robust to background load): replay one step's coefficients
    # through every layer's accumulators, and take the summary.
    probe = Probe(model)
    captured = capture(model, x, what="coefficients")
    update_t, summary_t = [], []
    for _ in range(5):
        t0 = time.perf_counter()
        for name, layer in probe._layers:
            full = captured[name]
            alpha = full[..., : layer.attention.num_cells]
            probe._stats[name].update(alpha, full, None, layer.attention.temperature)
        t1 = time.perf_counter()
        probe.summary()
        summary_t.append(time.perf_counter() - t1)
        update_t.append(t1 - t0)
    upd, summ = statistics.median(update_t), statistics.median(summary_t)
    print(
        f"probe work per recorded step: {1e3 * upd:.1f} ms streaming ({len(probe.layers)} layers) + "
        f"{1e3 * summ:.1f} ms summary -> estimated overhead every=1: {(upd + summ) / base:.2%}, "
        f"every=10: {(upd + summ) / 10 / base:.2%} of a {base:.2f} s step"
    )


if __name__ == "__main__":
    main()
