"""Where a KW model's training time goes: every KW layer against the static conv of the same shape.

Not a test: prints one table from one run. For each KW layer of ``--arch`` it times one training step of the
layer alone (forward, and backward w.r.t. the input, the coefficients and the cells) with each algorithm of
``--algorithms``, and one of an ``nn.Conv2d`` of the same geometry, interleaved, and prints the ratios
(``x static``: static time / KW time, as bench_speed.py) beside the **FLOP bound** of the layer:

    bound = conv / (conv + mix),   conv = |W| * L,   mix = n * |W|

(per sample and pass: the convolution costs ``|W| * L`` multiply-adds, mixing the cells into the kernel
``n * |W|``; a training step runs each three times). The bound is the best ratio any algorithm that builds
the kernels can reach if its products ran as fast as the static convolution. The attention MLP,
BatchNorm and the optimizer are not in this table; ``bench_speed.py`` measures the whole model.

    python benchmarks/bench_layers.py --arch resnet18_cifar --batch 64
    python benchmarks/bench_layers.py --arch resnet20_cifar --algorithms auto,grouped,unfold,contract

With ``--threads 1`` the times are process CPU time (robust to other load on the machine); otherwise wall
time.
"""

from __future__ import annotations

import argparse
import math
import os
import time


def _time(fn, clock, repeat: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t = clock()
        fn()
        best = min(best, clock() - t)
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet18_cifar")
    ap.add_argument("--preset", default="1x")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--algorithms", default="auto", help="comma list of kwlab.ops.ALGORITHMS")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import torch

    import kwlab
    from kwlab.layers.kernelwarehouse import KW_LAYERS

    torch.set_num_threads(args.threads)
    algos = args.algorithms.split(",")
    bad = [a for a in algos if a not in kwlab.ops.ALGORITHMS]
    if bad:
        ap.error(f"--algorithms: unknown {bad}; allowed: {kwlab.ops.ALGORITHMS}")
    clock = time.process_time if args.threads == 1 else time.perf_counter
    model = kwlab.create_model(args.arch, method="kw", preset=args.preset, num_classes=10)
    kinds = tuple(KW_LAYERS.values())
    layers = {name: m for name, m in model.named_modules() if isinstance(m, kinds) and m.dim == 2}
    inputs: dict[str, torch.Size] = {}
    hooks = [
        m.register_forward_hook(lambda mod, i, o, name=name: inputs.__setitem__(name, i[0].shape))
        for name, m in layers.items()
    ]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.randn(2, 3, args.size, args.size))
    finally:
        for h in hooks:
            h.remove()

    print(
        f"{args.arch} KW {args.preset}, batch {args.batch}, {args.threads} thread(s), "
        f"torch {torch.__version__}, {'CPU' if args.threads == 1 else 'wall'} ms per training step of a layer"
    )
    head = f"{'layer':24s} {'L':>5s} {'n':>3s} {'m':>3s} {'bound':>6s} {'static':>8s}"
    head += "".join(f" {a:>10s} {'x static':>8s}" for a in algos)
    print(head)
    print("-" * len(head))
    totals = dict.fromkeys(["static", *algos], 0.0)
    conv_macs = mix_macs = 0
    for name, layer in layers.items():
        shape = (args.batch, *inputs[name][1:])
        x = torch.randn(shape, requires_grad=True)
        conv = torch.nn.Conv2d(
            layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding, bias=False
        )
        lay, n = layer.layout, layer.warehouse.num_cells
        out_hw = conv(x[:1]).shape[2:]
        L = math.prod(out_hw)
        w = math.prod(lay.weight_shape)
        bound = (w * L) / (w * L + n * w)
        conv_macs, mix_macs = conv_macs + w * L, mix_macs + n * w
        alpha = torch.randn(args.batch, lay.num_mixtures, n, requires_grad=True)
        cells = layer.warehouse.cells.detach().clone().requires_grad_()
        row = {"static": _time(lambda c=conv, x=x: c(x).sum().backward(), clock, args.repeat)}
        geometry = (layer.stride, layer.padding, layer.dilation, layer.groups)
        for algo in algos:

            def step(algo=algo, x=x, alpha=alpha, cells=cells, lay=lay, geometry=geometry):
                kwlab.ops.kw_conv(x, alpha, cells, lay, None, *geometry, algo).sum().backward()

            row[algo] = _time(step, clock, args.repeat)
        for k, v in row.items():
            totals[k] += v
        line = f"{name:24s} {L:5d} {n:3d} {lay.num_mixtures:3d} {bound:6.2f} {row['static'] * 1e3:8.1f}"
        line += "".join(f" {row[a] * 1e3:10.1f} {row['static'] / row[a]:8.2f}" for a in algos)
        print(line, flush=True)
    bound = conv_macs / (conv_macs + mix_macs)
    line = f"{'all KW layers':24s} {'':5s} {'':3s} {'':3s} {bound:6.2f} {totals['static'] * 1e3:8.1f}"
    line += "".join(f" {totals[a] * 1e3:10.1f} {totals['static'] / totals[a]:8.2f}" for a in algos)
    print(line)


if __name__ == "__main__":
    main()
