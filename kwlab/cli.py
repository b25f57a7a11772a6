"""The ``kwlab`` command line: ``train``, ``sweep``, ``report``, ``recipes``.

Examples::

    python -m kwlab train --set arch=resnet20_cifar --set method=kw --set preset=1x --set epochs=5
    python -m kwlab train configs/cifar10_resnet20.yaml --set recipe=cifar_short --out runs/r20
    python -m kwlab sweep configs/demo.yaml --out runs/demo --set data=cifar10
    python -m kwlab report runs/demo

``--set key=value`` values are parsed as YAML (``0.1`` is a float, ``[0, 1]`` a list, ``1/2x`` a string).
For ``sweep`` a scalar is forced on every run and a list becomes a grid axis.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kwlab", description="KernelWarehouse lab bench: train, sweep, report."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one run (a YAML of RunConfig fields and/or --set overrides)")
    p.add_argument("config", nargs="?", help="YAML file with RunConfig fields (or a sweep file's 'base')")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", help="run directory (default runs/train/<arch>-<method>-<hash>)")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("sweep", help="run or resume an ablation sweep")
    p.add_argument("config", help="sweep YAML (name, base, grid, runs, executor)")
    p.add_argument("--out", required=True, help="sweep directory")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--executor", choices=["sequential", "processes", "submitit", "submitit-local"])
    p.add_argument("--workers", type=int, help="parallel runs for --executor processes")
    p.add_argument("--no-report", action="store_true", help="do not draw the report at the end")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("report", help="draw the plots and the HTML page of a sweep directory")
    p.add_argument("dir", help="sweep directory (holding results.csv)")
    p.add_argument("--out", help="report directory (default DIR/report)")

    sub.add_parser("recipes", help="list the named recipes")
    return parser


def _train(args: argparse.Namespace) -> int:
    import yaml

    from kwlab.experiments import RunConfig, fit
    from kwlab.experiments.sweep import parse_overrides

    values: dict = {}
    if args.config:
        with open(args.config) as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, dict):
            raise SystemExit(f"kwlab train: {args.config} must be a mapping of RunConfig fields")
        values = dict(loaded.get("base", loaded)) if "name" in loaded and "base" in loaded else dict(loaded)
    values.update(parse_overrides(args.overrides))
    config = RunConfig.from_dict(values)
    from kwlab.experiments.sweep import check_configs, config_hash

    check_configs([config])
    out = (
        Path(args.out)
        if args.out
        else Path("runs/train") / f"{config.arch}-{config.method}-{config_hash(config)}"
    )
    results = fit(config, out, progress=not args.no_progress)
    print(json.dumps(results, indent=2))
    print(f"run directory: {out}", file=sys.stderr)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from kwlab.experiments.sweep import load_sweep, run_sweep

    spec = load_sweep(args.config, args.overrides)
    df = run_sweep(
        spec, args.out, executor=args.executor, workers=args.workers, progress=not args.no_progress
    )
    print(f"{len(df)} finished runs -> {Path(args.out) / 'results.csv'}")
    if not args.no_report and len(df):
        from kwlab.experiments.report import make_report

        page = make_report(args.out)
        print(f"report: {page}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from kwlab.experiments.report import make_report

    page = make_report(args.dir, args.out)
    print(f"report: {page}")
    return 0


def _recipes(args: argparse.Namespace) -> int:
    from kwlab.experiments.recipes import RECIPES

    for name, fields in sorted(RECIPES.items()):
        print(f"{name:22s} " + ", ".join(f"{k}={v}" for k, v in fields.items()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kwlab`` console script and ``python -m kwlab``."""
    from kwlab.experiments.config import ConfigError

    args = build_parser().parse_args(argv)
    handler = {"train": _train, "sweep": _sweep, "report": _report, "recipes": _recipes}[args.command]
    try:
        return handler(args)
    except (ConfigError, FileNotFoundError) as err:
        print(f"kwlab {args.command}: error: {err}", file=sys.stderr)
        return 2
