"""The ``kwlab`` command line: ``train``, ``sweep``, ``report``, ``recipes``, ``reproduce``.

Examples::

    python -m kwlab train --set arch=resnet20_cifar --set method=kw --set preset=1x --set epochs=5
    python -m kwlab train configs/cifar10_resnet20.yaml --set recipe=cifar_short --out runs/r20
    python -m kwlab sweep configs/demo.yaml --out runs/demo --set data=cifar10
    python -m kwlab report runs/demo
    python -m kwlab reproduce data/results/cifar10_resnet20_b_sharing --run RUN_ID --out runs/repro

``--set key=value`` values are parsed as YAML (``0.1`` is a float, ``[0, 1]`` a list, ``1/2x`` a string).
For ``sweep`` a scalar is forced on every run and a list becomes a grid axis.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    from kwlab.experiments.executors import EXECUTORS

    parser = argparse.ArgumentParser(
        prog="kwlab", description="KernelWarehouse lab bench: train, sweep, report."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
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
    p.add_argument("--executor", choices=list(EXECUTORS))
    p.add_argument(
        "--workers", type=int, help="parallel runs for --executor processes (processes per run for torchrun)"
    )
    p.add_argument("--no-report", action="store_true", help="do not draw the report at the end")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("report", help="draw the plots and the HTML page of a sweep directory")
    p.add_argument("dir", help="sweep directory (holding results.csv)")
    p.add_argument("--out", help="report directory (default DIR/report)")

    sub.add_parser("recipes", help="list the named recipes")

    p = sub.add_parser("reproduce", help="re-run one recorded run and compare its numbers with the record")
    p.add_argument("folder", help="folder holding results.csv (a sweep directory or data/results/<name>)")
    p.add_argument("--run", required=True, metavar="RUN_ID", help="the run_id column of results.csv")
    p.add_argument("--out", required=True, help="run directory for the reproduction (gets results.json)")
    p.add_argument("--threads", type=int, help="torch threads (default: the recorded thread count)")
    p.add_argument("--no-progress", action="store_true")
    return parser


def _check_out(value: str | None, option: str = "--out") -> None:
    """Refuse an output directory that is a file, or lies under one, before any work starts."""
    from kwlab.experiments.config import ConfigError

    if value is None:
        return
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {value!r} is a file; allowed: a directory (new or existing)")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(
                    f"{option} {value!r} lies under {str(parent)!r}, which is a file; allowed: a directory "
                    "(new or existing) whose parents are directories"
                )
            break


def _train(args: argparse.Namespace) -> int:
    from kwlab.experiments import RunConfig, fit
    from kwlab.experiments.config import ConfigError
    from kwlab.experiments.spec import load_yaml, parse_overrides

    if os.environ.get("KWLAB_DIE_WITH_PARENT") == "1":  # a rank of the torchrun executor: dies with torchrun
        from kwlab.experiments.executors import die_with_parent

        die_with_parent()
    _check_out(args.out)
    values: dict = {}
    if args.config:
        with open(args.config) as f:
            loaded = load_yaml(f, args.config) or {}  # a YAMLError names the file and line (_describe_error)
        if not isinstance(loaded, dict):
            raise ConfigError(f"{args.config} must be a mapping of RunConfig fields")
        values = dict(loaded.get("base", loaded)) if "name" in loaded and "base" in loaded else dict(loaded)
    values.update(parse_overrides(args.overrides))
    config = RunConfig.from_dict(values)
    from kwlab.experiments.spec import config_hash
    from kwlab.experiments.sweep import check_configs

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
    from kwlab.experiments.spec import load_sweep
    from kwlab.experiments.sweep import run_sweep

    _check_out(args.out)
    spec = load_sweep(args.config, args.overrides)
    df = run_sweep(
        spec, args.out, executor=args.executor, workers=args.workers, progress=not args.no_progress
    )
    print(f"{len(df)} finished runs -> {Path(args.out) / 'results.csv'}")
    if not args.no_report and len(df):
        from kwlab.experiments.report import make_report

        page = make_report(args.out)
        print(f"report: {page}")
        print((page.parent / "finding.md").read_text() if (page.parent / "finding.md").exists() else "")
    return 0


def _report(args: argparse.Namespace) -> int:
    from kwlab.experiments.report import make_report

    _check_out(args.out)
    _check_results_table(Path(args.dir))
    page = make_report(args.dir, args.out)
    print(f"report: {page}")
    return 0


def _check_results_table(folder: Path) -> None:
    """Refuse a results.csv that is not a kwlab results table, before any plotting."""
    import pandas as pd

    from kwlab.experiments.config import ConfigError

    table = folder / "results.csv"
    if not table.is_file():
        return  # make_report says what is missing
    try:
        df = pd.read_csv(table)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise ConfigError(f"{table} is not a CSV table ({type(err).__name__}: {err})") from None
    missing = [c for c in ("run_id", "method", "arch") if c not in df.columns]
    if missing and len(df.columns):
        raise ConfigError(
            f"{table} is not a kwlab results table: no {missing} column(s) (it has {list(df.columns)[:6]}); "
            f"give a sweep directory written by `kwlab sweep`"
        )


def _reproduce(args: argparse.Namespace) -> int:
    from kwlab.experiments.reproduce import reproduce

    _check_out(args.out)
    reproduce(args.folder, args.run, args.out, threads=args.threads, progress=not args.no_progress)
    return 0


def _recipes(args: argparse.Namespace) -> int:
    from kwlab.experiments.recipes import RECIPES

    for name, fields in sorted(RECIPES.items()):
        print(f"{name:22s} " + ", ".join(f"{k}={v}" for k, v in fields.items()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kwlab`` console script and ``python -m kwlab``.

    Every error ends as one line ``kwlab <command>: error: ...`` on stderr and a non-zero exit code: 2 for bad
    input (config, files, data, checkpoints), 1 for failed runs and unexpected errors, 128 + the signal
    number for an interrupted sweep. ``--debug`` (anywhere on the line, or ``KWLAB_DEBUG=1``) shows the
    traceback instead.
    """
    import os

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("KWLAB_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    args = build_parser().parse_args(argv)
    from kwlab.logs import install_stderr_handler

    install_stderr_handler()  # the run's notes and warnings: "kwlab: ..." lines on stderr
    handler = {
        "train": _train,
        "sweep": _sweep,
        "report": _report,
        "recipes": _recipes,
        "reproduce": _reproduce,
    }[args.command]
    try:
        return handler(args)
    except BaseException as err:
        if debug or isinstance(err, SystemExit):
            raise
        code, text = _describe_error(err)
        print(f"kwlab {args.command}: error: {text}", file=sys.stderr)
        return code


def _describe_error(err: BaseException) -> tuple[int, str]:
    """Exit code and one-line message of an error that ends a command."""
    import yaml

    from kwlab.experiments.config import ConfigError
    from kwlab.experiments.sweep import SweepInterrupted

    def one_line(text: str) -> str:
        return "; ".join(line.strip() for line in text.splitlines() if line.strip()) or type(err).__name__

    if isinstance(err, SweepInterrupted):
        return 128 + err.signum, one_line(str(err))
    if isinstance(err, KeyboardInterrupt):
        return 130, "interrupted (finished epochs are checkpointed; re-run the same command to resume)"
    if isinstance(err, yaml.YAMLError):
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        name = getattr(mark, "name", None) if mark is not None else None
        source = f" in {name}" if name and not name.startswith("<") else ""
        problem = getattr(err, "problem", None) or one_line(str(err))
        return 2, f"cannot parse YAML{source}{where}: {problem}"
    if isinstance(err, ConfigError):
        return 2, one_line(str(err))
    if isinstance(err, (FileNotFoundError, ValueError, OSError, ImportError)):
        return 2, f"{type(err).__name__}: {one_line(str(err))}"
    if isinstance(err, RuntimeError):
        return 1, one_line(str(err))
    return 1, f"unexpected {type(err).__name__}: {one_line(str(err))} (run with --debug for the traceback)"
