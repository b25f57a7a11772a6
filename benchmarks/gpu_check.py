"""One prepared check for a machine with a GPU: one command, one JSON record.

    python benchmarks/gpu_check.py                 # on a CUDA machine: about 6-8 minutes
    python benchmarks/gpu_check.py --quick         # reduced, on any device (CI runs it on CPU)

It measures, and writes to ``benchmarks/results/gpu_check-<device>-<time>.json`` (``--out``):

1. ``speed``: training throughput and peak memory of KW 1x vs the static net (resnet20_cifar and
   resnet18_cifar; batch 128 and 256; fp32, bf16 autocast, and ``torch.compile`` at batch 128), each row in
   its own process through ``benchmarks/bench_speed.py``, with the ratios to static;
2. ``probe``: the training-step slowdown of a streaming :class:`kwlab.instruments.probe.Probe` (every=1)
   on KW 1x resnet20_cifar, median of interleaved steps;
3. ``methods``: a short training run of every method on resnet20_cifar (CIFAR-10 where kwlab finds it,
   synthetic with a notice otherwise), with the trainer's own device switches (amp, channels_last);
   accuracy, loss, throughput and the resolved switches of each.

The record holds the device name, torch/CUDA/cuDNN/Python versions, the git revision and the time each
section took. ``--quick`` shrinks every section (one arch, small batch, a few steps, 32 training images per
method, no compilation) so that CI runs the whole script on a CPU and it cannot rot; its numbers are
not measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_speed  # noqa: E402  (benchmarks/ is not a package)

import kwlab  # noqa: E402
from kwlab.experiments.config import RunConfig  # noqa: E402
from kwlab.experiments.train import Trainer  # noqa: E402
from kwlab.instruments.probe import Probe  # noqa: E402
from kwlab.utils import atomic_write_text, git_revision  # noqa: E402


def _plan(quick: bool, device: str, compile_: bool) -> dict[str, Any]:
    if quick:
        return dict(
            archs=["resnet20_cifar"],
            batches=[16],
            modes=["fp32", "bf16"] + (["compiled"] if compile_ else []),
            compile_batches=[16],
            steps=2,
            size=16,
            probe_batch=16,
            probe_steps=3,
            methods=dict(train_samples=32, test_samples=32, epochs=1, batch_size=16, image_size=16),
        )
    return dict(
        archs=["resnet20_cifar", "resnet18_cifar"],
        batches=[128, 256],
        modes=["fp32", "bf16"] + (["compiled"] if compile_ else []),
        compile_batches=[128],
        steps=20 if device == "cuda" else 3,
        size=32,
        probe_batch=128,
        probe_steps=20,
        methods=dict(train_samples=5000, test_samples=2000, epochs=2, batch_size=128),
    )


def _speed(plan: dict[str, Any], device: str, threads: int) -> list[dict[str, Any]]:
    rows = []
    for arch in plan["archs"]:
        for mode in plan["modes"]:
            for batch in plan["compile_batches"] if mode == "compiled" else plan["batches"]:
                base = dict(
                    batch=batch,
                    size=plan["size"],
                    steps=plan["steps"],
                    threads=threads,
                    device=device,
                    amp=mode == "bf16",
                    compile=mode == "compiled",
                    channels_last=device == "cuda",
                )
                static = bench_speed._run(dict(base, kind="static", arch=arch), timeout=600)
                kw = bench_speed._run(
                    dict(base, kind="kw", arch=arch, preset="1x", algorithm="auto"), timeout=600
                )
                row: dict[str, Any] = dict(arch=arch, batch=batch, mode=mode, static=static, kw=kw)
                if "error" not in static and "error" not in kw:
                    row["train_ratio"] = kw["train_img_s"] / static["train_img_s"]
                    row["eval_ratio"] = kw["eval_img_s"] / static["eval_img_s"]
                    row["memory_ratio"] = kw["peak_bytes"] / static["peak_bytes"]
                print(_speed_line(row), flush=True)
                rows.append(row)
    return rows


def _speed_line(row: dict[str, Any]) -> str:
    head = f"speed  {row['arch']:15s} batch {row['batch']:4d} {row['mode']:9s}"
    if "train_ratio" not in row:
        return f"{head} error: {row['static'].get('error') or row['kw'].get('error')}"
    return (
        f"{head} KW 1x {row['kw']['train_img_s']:9.1f} img/s = {row['train_ratio']:.2f}x static, "
        f"memory {row['memory_ratio']:.2f}x"
    )


def _probe(plan: dict[str, Any], device: torch.device) -> dict[str, Any]:
    torch.manual_seed(0)
    model = kwlab.create_model("resnet20_cifar", method="kw", preset="1x", num_classes=10).to(device).train()
    kwlab.set_temperature(model, 0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(plan["probe_batch"], 3, 32, 32, device=device)
    y = torch.randint(0, 10, (plan["probe_batch"],), device=device)
    probe = Probe(model, every=1)

    def step(with_probe: bool) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        if with_probe:
            with probe:
                loss = torch.nn.functional.cross_entropy(model(x), y)
        else:
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    step(False), step(True)  # warm-up
    plain, probed = [], []
    for _ in range(plan["probe_steps"]):  # interleaved, so that background load hits both alike
        plain.append(step(False))
        probed.append(step(True))
    out = dict(
        batch=plan["probe_batch"],
        steps=plan["probe_steps"],
        median_s=statistics.median(plain),
        median_s_probe=statistics.median(probed),
    )
    out["overhead_ratio"] = out["median_s_probe"] / out["median_s"]
    print(f"probe  streaming every=1: {out['overhead_ratio']:.3f}x a training step", flush=True)
    return out


#: Builder options of the short per-method runs on resnet20_cifar: FDConv's 64 bands do not divide its small
#: spectra (the class default 4 does); KernelDNA's official wiring exists only for its four official archs.
_METHOD_KWARGS: dict[str, dict[str, Any]] = {"fdconv": {"kernel_num": 4}, "kerneldna": {"wiring": "pairing"}}


def _methods(plan: dict[str, Any], device: str, data: str) -> list[dict[str, Any]]:
    rows = []
    for method in kwlab.list_methods():
        fields = dict(
            arch="resnet20_cifar",
            method=method,
            data=data,
            device=device,
            lr=0.1,
            warmup_epochs=0.0,
            probe_samples=64,
            **plan["methods"],
        )
        extra = _METHOD_KWARGS.get(method)
        if extra:
            fields["model_kwargs"] = {**fields.get("model_kwargs", {}), **extra}
        start = time.perf_counter()
        try:
            trainer = Trainer(RunConfig.from_dict(fields), progress=False)
            results = trainer.fit()
        except Exception as err:  # noqa: BLE001 - one failing method is recorded, the others still run
            rows.append(dict(method=method, error=f"{type(err).__name__}: {err}"[:300]))
            print(f"method {method:9s} error: {rows[-1]['error']}", flush=True)
            continue
        row = dict(
            method=method,
            data=trainer.data.name,
            train_samples=len(trainer.data.train_labels),
            epochs=results["epochs_done"],
            final_acc=results["final_acc"],
            final_train_loss=results["final_train_loss"],
            throughput=results["throughput"],
            amp_dtype=results["amp_dtype"],
            channels_last_used=results["channels_last_used"],
            nonfinite=bool(results.get("nonfinite", False)),
            notes=results.get("notes"),
            seconds=time.perf_counter() - start,
        )
        rows.append(row)
        print(
            f"method {method:9s} {row['data']} acc {row['final_acc']:.3f} "
            f"loss {row['final_train_loss']:.3f} {row['throughput']:.0f} img/s "
            f"(amp {row['amp_dtype']}, channels_last {row['channels_last_used']})",
            flush=True,
        )
    return rows


def _environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = dict(
        device=str(device),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
        or platform.machine(),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        python=platform.python_version(),
        host=platform.node(),
        cpus=os.cpu_count(),
        threads=torch.get_num_threads(),
        git_revision=git_revision(),
    )
    if device.type == "cuda":
        env["gpu_memory_bytes"] = torch.cuda.get_device_properties(device).total_memory
    return env


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="reduced sizes (CI on CPU); not a measurement")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--data", default="auto", help="data of the method runs (RunConfig.data; default auto)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    ap.add_argument("--threads", type=int, help="torch threads (default: all cores, 2 if quick)")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder of the JSON record")
    args = ap.parse_args(argv)
    device_name = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device_name == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch.cuda.is_available() is False")
    device = torch.device(device_name)
    threads = args.threads or (2 if args.quick else os.cpu_count() or 1)
    torch.set_num_threads(threads)
    compile_ = not args.no_compile and not (args.quick and device.type == "cpu")
    plan = _plan(args.quick, device.type, compile_)
    record: dict[str, Any] = dict(
        kind="kwlab gpu_check",
        quick=args.quick,
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        environment=_environment(device),
        plan=plan,
        seconds={},
    )
    name = record["environment"]["device_name"]
    print(f"gpu_check on {name} ({device}), torch {torch.__version__}", flush=True)
    for name, run in (
        ("speed", lambda: _speed(plan, device.type, threads)),
        ("probe", lambda: _probe(plan, device)),
        ("methods", lambda: _methods(plan, device.type, args.data)),
    ):
        start = time.perf_counter()
        record[name] = run()
        record["seconds"][name] = time.perf_counter() - start
    record["seconds"]["total"] = sum(record["seconds"].values())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out / f"gpu_check-{device.type}{'-quick' if args.quick else ''}-{stamp}.json"
    atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")
    print(f"wrote {path} ({record['seconds']['total']:.0f} s)", flush=True)
    return path


if __name__ == "__main__":
    main()
