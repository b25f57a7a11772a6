"""Training/eval speed and peak memory of KW models vs their static nets, per execution algorithm.

Not a test: prints a table. Every configuration runs in its own subprocess so that peak memory (RSS on CPU,
``torch.cuda.max_memory_allocated`` on GPU) is per configuration.

    python benchmarks/bench_speed.py                                  # resnet20_cifar + resnet18_cifar, auto
    python benchmarks/bench_speed.py --archs resnet20_cifar --batch 32 --steps 2
    python benchmarks/bench_speed.py --algorithms all --presets 1x    # every algorithm forced
    python benchmarks/bench_speed.py --official ../KernelWarehouse    # also the official code (needs timm)
    python benchmarks/bench_speed.py --device cuda --amp --compile
    python benchmarks/bench_speed.py --compile-vs-eager --archs resnet20_cifar --presets 1x --algorithms auto

Rows: ``static``; ``kw <preset> <algorithm>`` with the algorithm forced via ``kwlab.ops.use_algorithm``
(``auto`` = the automatic choice); ``naive`` = the official algorithm (full per-sample kernels through
autograd + one grouped conv), run through kwlab's layers.

``--compile-vs-eager`` runs every row twice in one invocation, eager and ``torch.compile``d (inductor), and
prints them side by side: img/s of each and ``compiled/eager``, so the compiled KW and static ratios come
from one run on one machine (see benchmarks/README.md for what was measured).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

ALL_ALGOS = ("auto", "grouped", "loop", "unfold", "contract", "naive")


def _naive_kw_conv():
    """The official algorithm: assemble every per-sample kernel with autograd, one grouped conv."""
    from kwlab.ops import assemble_kernel, conv_nd, mix_cells

    def kw_conv(
        x, alpha, cells, layout, bias=None, stride=1, padding=0, dilation=1, groups=1, algorithm="auto"
    ):
        b = x.shape[0]
        w = assemble_kernel(mix_cells(alpha, cells.to(x.dtype)), layout)
        out = conv_nd(x.dim() - 2)(
            x.reshape(1, -1, *x.shape[2:]),
            w.reshape(-1, *w.shape[2:]),
            None,
            stride,
            padding,
            dilation,
            groups * b,
        )
        out = out.reshape(b, layout.out_channels, *out.shape[2:])
        if bias is not None:
            out = out + bias.reshape(1, -1, *([1] * (out.dim() - 2)))
        return out

    return kw_conv


def _build(cfg):
    if cfg["kind"] == "official":
        sys.path.insert(0, cfg["official"])
        try:
            from models import kw_resnet  # the official checkout, imported at run time
        except ImportError as e:
            raise SystemExit(
                f"--official: cannot import the official models from {cfg['official']}: {e} "
                "(the official code needs timm)"
            ) from e
        model = kw_resnet.kw_resnet18(
            num_classes=10,
            cell_num_ratio=1,
            cell_inplane_ratio=1,
            cell_outplane_ratio=1,
            sharing_range=("layer", "conv"),
        )
        return model
    import kwlab

    if cfg["kind"] == "static":
        return kwlab.create_model(cfg["arch"], method="static", num_classes=10)
    if cfg["algorithm"] == "naive":
        import kwlab.layers.kernelwarehouse as kwmod

        kwmod.kw_conv = _naive_kw_conv()
    else:
        kwlab.ops.use_algorithm(cfg["algorithm"])
    return kwlab.create_model(cfg["arch"], method="kw", preset=cfg["preset"], num_classes=10)


def _worker(cfg) -> dict:
    import torch

    torch.set_num_threads(cfg["threads"])
    dev = torch.device(cfg["device"])
    torch.manual_seed(0)
    model = _build(cfg).to(dev)
    if cfg["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if cfg["compile"] else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    b, size = cfg["batch"], cfg["size"]
    x = torch.randn(b, 3, size, size, device=dev)
    if cfg["channels_last"]:
        x = x.to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (b,), device=dev)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg["amp"])

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def train_step():
        with amp:
            loss = torch.nn.functional.cross_entropy(step_model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    train_step()  # warm-up (and autotune / compile)
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(cfg["steps"]):
        train_step()
    sync()
    train = cfg["steps"] * b / (time.perf_counter() - t)
    peak = (
        torch.cuda.max_memory_allocated()
        if dev.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    model.eval()
    with torch.no_grad(), amp:
        step_model(x)
        sync()
        t = time.perf_counter()
        for _ in range(cfg["steps"]):
            step_model(x)
        sync()
        evals = cfg["steps"] * b / (time.perf_counter() - t)
    return dict(train_img_s=train, eval_img_s=evals, peak_bytes=peak)


def _run(cfg, timeout: float) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(cfg["threads"]), MKL_NUM_THREADS=str(cfg["threads"]))
    try:
        p = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(cfg)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return dict(error=f"timeout {timeout:.0f}s")
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return dict(error=(p.stderr.strip().splitlines() or ["no output"])[-1][:120])


def _machine(args) -> str:
    import torch

    lines = [
        f"python {platform.python_version()}, torch {torch.__version__}, threads {args.threads}, "
        f"device {args.device}"
    ]
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines.append(f"cpu: {cpu} ({os.cpu_count()} logical cores), load average {os.getloadavg()[0]:.1f}")
    if args.device == "cuda":
        lines.append(f"gpu: {torch.cuda.get_device_name()}")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default="resnet20_cifar,resnet18_cifar")
    ap.add_argument("--presets", default="1/2x,1x,4x")
    ap.add_argument("--algorithms", default="auto,naive", help=f"comma list from {ALL_ALGOS} or 'all'")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument(
        "--compile-vs-eager", action="store_true", help="each row eager and compiled, side by side"
    )
    ap.add_argument("--official", default=None, help="path of a local OSVAI/KernelWarehouse checkout")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return
    algos = ALL_ALGOS if args.algorithms == "all" else tuple(args.algorithms.split(","))
    bad = [a for a in algos if a not in ALL_ALGOS]
    if bad:
        ap.error(f"--algorithms: unknown {bad}; allowed: {ALL_ALGOS} or 'all'")
    print(_machine(args))
    print(
        f"batch {args.batch}, {args.size}x{args.size}, {args.steps} timed steps (SGD), amp={args.amp}, "
        f"compile={args.compile}\n"
    )
    base = dict(
        batch=args.batch,
        size=args.size,
        steps=args.steps,
        threads=args.threads,
        device=args.device,
        amp=args.amp,
        compile=args.compile,
        channels_last=args.channels_last,
    )
    configs = []
    for arch in args.archs.split(","):
        configs.append((arch, "static", dict(base, kind="static", arch=arch)))
        for preset in args.presets.split(","):
            for algo in algos:
                configs.append(
                    (
                        arch,
                        f"kw {preset} {algo}",
                        dict(base, kind="kw", arch=arch, preset=preset, algorithm=algo),
                    )
                )
    if args.official:
        configs.append(("resnet18", "official kw 1x", dict(base, kind="official", official=args.official)))
        configs.append(("resnet18", "static", dict(base, kind="static", arch="resnet18")))
        configs.append(
            ("resnet18", "kw 1x auto", dict(base, kind="kw", arch="resnet18", preset="1x", algorithm="auto"))
        )
    if args.compile_vs_eager:
        _compare_compile(configs, args.timeout)
        return
    head = (
        f"{'arch':16s} {'model':22s} {'train img/s':>11s} {'x static':>8s} {'eval img/s':>10s} "
        f"{'x static':>8s} {'peak MB':>8s} {'x static':>8s}"
    )
    print(head)
    print("-" * len(head))
    ref = {}
    for arch, name, cfg in configs:
        r = _run(cfg, args.timeout)
        if "error" in r:
            print(f"{arch:16s} {name:22s} error: {r['error']}", flush=True)
            continue
        if name == "static":
            ref[arch] = r
        s = ref.get(arch)
        ratio = (lambda k, r=r, s=s: f"{r[k] / s[k]:8.2f}") if s else (lambda k: f"{'':8s}")
        print(
            f"{arch:16s} {name:22s} {r['train_img_s']:11.1f} {ratio('train_img_s')} {r['eval_img_s']:10.1f} "
            f"{ratio('eval_img_s')} {r['peak_bytes'] / 2**20:8.0f} {ratio('peak_bytes')}",
            flush=True,
        )


def _compare_compile(configs, timeout: float) -> None:
    """Each configuration eager and compiled (its own subprocess each), one row side by side."""
    head = (
        f"{'arch':16s} {'model':22s} {'train eager':>11s} {'compiled':>9s} {'c/e':>5s} "
        f"{'eval eager':>10s} {'compiled':>9s} {'c/e':>5s}   (img/s)"
    )
    print(head)
    print("-" * len(head))
    for arch, name, cfg in configs:
        eager, compiled = _run(dict(cfg, compile=False), timeout), _run(dict(cfg, compile=True), timeout)
        errors = [f"{k}: {r['error']}" for k, r in (("eager", eager), ("compiled", compiled)) if "error" in r]
        if errors:
            print(f"{arch:16s} {name:22s} error: {'; '.join(errors)}", flush=True)
            continue
        cells = []
        for key in ("train_img_s", "eval_img_s"):
            e, c = eager[key], compiled[key]
            cells.append(f"{e:{11 if key == 'train_img_s' else 10}.1f} {c:9.1f} {c / e:5.2f}")
        print(f"{arch:16s} {name:22s} {cells[0]} {cells[1]}", flush=True)


if __name__ == "__main__":
    main()
