"""The sweep file grammar: :class:`SweepSpec`, its expansion into validated :class:`RunConfig` objects and the
names of their run directories.

A sweep file::

    name: demo                      # identifies the sweep; an output dir holding another name is refused
    base: {arch: resnet20_cifar, data: synthetic, epochs: 4}      # RunConfig fields shared by every run
    grid: {seed: [0, 1]}            # field -> list of values, cartesian product
    runs:                           # optional: override sets combined with the grid; a list value in an
      - {method: static}            # entry is a sub-grid of that entry only
      - {method: kw, preset: ["1/2x", "1x", "2x"], sharing: [layer, stage]}
    seeds: 3                        # runs per configuration (default 3): seeds 0, 1, 2 unless seed is set
    verdicts:                       # optional, declared before the runs: the comparisons of the finding
      margin: 0.015                 # equivalence margin M in the metric's unit (default 0.015 = 1.5 points)
      metric: final_acc             # the metric compared (default final_acc); alpha: 0.05 (default)
      comparisons:                  # pairs [a, b]; each side a mapping of config fields that picks one
        - [{method: kw, preset: 1x}, {method: static}]      # configuration (default: what findings picks)
    executor: {kind: sequential}    # or processes (workers: N), torchrun (nproc_per_node: N), submitit
                                    # (slurm_* options), submitit-local;
                                    # threads: torch threads per run (processes: 1 per worker process)

Every config is expanded and checked (:func:`expand`) before any training starts; the ``executor`` section
is checked when the spec loads (:func:`kwlab.experiments.executors.make_executor`). A run directory is named
by the hashed fields that vary across the sweep plus the run's :meth:`RunConfig.training_hash`
(:func:`run_ids`); :func:`spec_hash` identifies what a spec trains (and, when declared, its verdicts block).
The ``verdicts`` block never enters a run's ``training_hash``: it says how the runs are compared, not what
they train (:func:`parse_verdicts`, :func:`check_verdicts`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kwlab.experiments.config import ConfigError, RunConfig, _coerce
from kwlab.experiments.executors import make_executor
from kwlab.methods import METHODS
from kwlab.utils import suggest

__all__ = [
    "SweepSpec",
    "DEFAULT_SEEDS",
    "load_sweep",
    "load_yaml",
    "parse_overrides",
    "apply_overrides",
    "expand",
    "config_hash",
    "run_ids",
    "spec_hash",
    "parse_verdicts",
    "check_verdicts",
    "VERDICT_KEYS",
]

_SPEC_KEYS = ("name", "base", "grid", "runs", "seeds", "executor", "description", "verdicts")
#: The keys of a sweep file's ``verdicts`` block.
VERDICT_KEYS = ("margin", "metric", "alpha", "comparisons")
DEFAULT_SEEDS = 3


@dataclass
class SweepSpec:
    """A parsed sweep file (see the module docstring)."""

    name: str
    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    executor: dict[str, Any] = field(default_factory=dict)
    forced: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    seeds: int = DEFAULT_SEEDS
    data_notice: str = ""
    verdicts: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "sweep") -> SweepSpec:
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: a sweep file must be a mapping with keys {list(_SPEC_KEYS)}")
        for key in d:
            if key not in _SPEC_KEYS:
                raise ConfigError(
                    f"{source}: unknown sweep key {key!r}.{suggest(key, _SPEC_KEYS)} (allowed: "
                    f"{list(_SPEC_KEYS)}; run fields go under 'base', 'grid' or 'runs')"
                )
        name = d.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{source}: 'name' (a non-empty string) is required")
        base = d.get("base") or {}
        grid = d.get("grid") or {}
        runs = d.get("runs")
        if runs is None:
            runs = [{}]
        elif not isinstance(runs, list) or not runs:
            raise ConfigError(
                f"{source}: 'runs' must be a non-empty list of mappings (override sets), e.g. runs: "
                f"[{{method: static}}, {{method: kw}}], got {runs!r}; leave it out for one run per grid point"
            )
        executor = d.get("executor") or {}
        if not isinstance(base, dict):
            raise ConfigError(f"{source}: 'base' must be a mapping of RunConfig fields")
        if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
            raise ConfigError(
                f"{source}: 'grid' must map fields to non-empty lists, e.g. grid: {{seed: [0, 1]}}"
            )
        if not all(isinstance(r, dict) for r in runs):
            raise ConfigError(f"{source}: 'runs' must be a list of mappings (override sets)")
        for i, entry in enumerate(runs):
            empty = [k for k, v in entry.items() if isinstance(v, list) and not v and k != "model_kwargs"]
            if empty:
                raise ConfigError(
                    f"{source}: runs[{i}] gives {empty[0]}: [] (an empty list: no run at all); give at least "
                    f"one value, e.g. {empty[0]}: [value]"
                )
        if "seed" in base:
            _check_seed(base["seed"], f"{source}: base")
        if not isinstance(executor, dict):
            raise ConfigError(f"{source}: 'executor' must be a mapping, e.g. {{kind: processes, workers: 2}}")
        try:
            make_executor(executor)  # an unknown kind or bad workers/threads: refused when the spec loads
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
        seeds = d.get("seeds", DEFAULT_SEEDS)
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise ConfigError(
                f"{source}: 'seeds' must be an integer >= 1 (runs per configuration), got {seeds!r}"
            )
        verdicts = parse_verdicts(d.get("verdicts"), source=source)
        return cls(
            verdicts=verdicts,
            seeds=seeds,
            name=name,
            base=dict(base),
            grid=dict(grid),
            runs=[dict(r) for r in runs],
            executor=dict(executor),
            description=str(d.get("description", "")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "base": self.base,
            "grid": self.grid,
            "runs": self.runs,
            "forced": self.forced,
            "seeds": self.seeds,
            "executor": self.executor,
            "description": self.description,
            "data_notice": self.data_notice,
            "verdicts": self.verdicts,
        }


def _check_seed(value: Any, where: str) -> int:
    """A seed given in a sweep file: an integer (the first of the seed axis), never 1.7 or "abc"."""
    try:
        return _coerce("seed", value, int)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err} (seeds are integers)") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a mapping with a key given twice (plain YAML keeps the last one
    silently: two ``runs:`` sections would drop the first)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                continue  # the base loader refuses it with its own message
            if key in seen:
                raise ConfigError(
                    f"duplicate key {key!r} in a mapping (line {seen[key].start_mark.line + 1} and line "
                    f"{key_node.start_mark.line + 1}): a key may be given once; merge the two"
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: Any, source: str = "YAML") -> Any:
    """Parse ``text`` (a string or an open file) with :class:`_UniqueKeyLoader` (duplicate keys refused,
    naming ``source``)."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["lr=0.1", "preset=1/2x", "seed=[0,1]"]`` -> ``{"lr": 0.1, "preset": "1/2x", "seed": [0, 1]}``
    (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            out[key] = load_yaml(raw, f"--set {item!r}") if raw.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: cannot parse the value ({err})") from None
    return out


def load_sweep(path: str | os.PathLike, overrides: dict[str, Any] | Sequence[str] | None = None) -> SweepSpec:
    """Read a sweep YAML file and apply ``--set`` overrides.

    A scalar override is forced on every run (it wins over base, grid and runs); a list override
    becomes (or replaces) a grid axis.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"sweep file {path} does not exist")
    with open(path) as f:  # a YAMLError names the file and line (see kwlab.cli._describe_error)
        spec = SweepSpec.from_dict(load_yaml(f, str(path)), source=str(path))
    if overrides:
        apply_overrides(spec, overrides if isinstance(overrides, dict) else parse_overrides(overrides))
    return spec


def apply_overrides(spec: SweepSpec, overrides: dict[str, Any]) -> SweepSpec:
    for key, value in overrides.items():
        if isinstance(value, list) and not value:
            raise ConfigError(
                f"--set {key}=[]: an empty list leaves no run; give values ({key}=[a, b]) or one value"
            )
        if key == "seed" and not isinstance(value, list) and value is not None:
            _check_seed(value, f"--set seed={value!r}")
        if isinstance(value, list):
            spec.grid[key] = value
            spec.base.pop(key, None)
            for r in spec.runs:
                r.pop(key, None)
        else:
            spec.forced[key] = value
    return spec


def _sub_grid(entry: dict[str, Any]) -> list[dict[str, Any]]:
    keys = list(entry)
    axes = [v if isinstance(v, list) and k != "model_kwargs" else [v] for k, v in entry.items()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*axes)]


def expand(spec: SweepSpec) -> list[RunConfig]:
    """Every run of the sweep as a validated RunConfig, in a stable order (raises ConfigError).

    Each configuration runs ``spec.seeds`` times, with seeds ``s0 .. s0 + seeds - 1`` (``s0`` = the base's
    ``seed``, default 0), unless the grid, the run entry or a ``--set`` gives ``seed`` itself.
    """
    start = _check_seed(spec.base.get("seed", 0) or 0, f"sweep {spec.name!r}, base")
    seed_axis = list(range(start, start + spec.seeds))
    grid_keys = list(spec.grid)
    grid_points = [dict(zip(grid_keys, combo)) for combo in itertools.product(*spec.grid.values())]
    configs: list[RunConfig] = []
    seen: set[str] = set()
    for i, entry in enumerate(spec.runs):
        for sub in _sub_grid(entry):
            for point in grid_points:
                values = {**spec.base, **point, **sub, **spec.forced}
                seeded = any("seed" in d for d in (point, sub, spec.forced))
                for seed in [values.get("seed")] if seeded else seed_axis:
                    try:
                        config = RunConfig.from_dict({**values, "seed": seed} if not seeded else values)
                    except ConfigError as err:
                        where = f"runs[{i}] {sub}" if sub else "base"
                        raise ConfigError(
                            f"sweep {spec.name!r}, {where}{' x ' + str(point) if point else ''}: {err}"
                        ) from None
                    key = config_hash(config)  # configs that differ in runtime fields only are one run
                    if key not in seen:
                        seen.add(key)
                        configs.append(config)
    check_verdicts(spec, configs)
    return configs


def parse_verdicts(block: Any, *, source: str = "sweep") -> dict[str, Any]:
    """Check a sweep file's ``verdicts`` block and fill its defaults: ``margin`` (default
    :data:`kwlab.experiments.significance.DEFAULT_MARGIN`), ``metric`` (default ``final_acc``), ``alpha``
    (default 0.05) and ``comparisons`` (a list of ``[a, b]`` pairs, each a non-empty mapping of config
    fields without ``seed``; absent: the findings' default comparisons). An absent block gives ``{}``.

    Raises:
        ConfigError: naming the key (``verdicts.margin``, ``verdicts.comparisons[1][0].lr``, ...).
    """
    from kwlab.experiments.significance import ALPHA, DEFAULT_MARGIN  # noqa: PLC0415 - scipy
    from kwlab.experiments.stats import METRICS  # noqa: PLC0415 - pandas

    if block is None:
        return {}
    where = f"{source}: verdicts"
    if not isinstance(block, dict):
        raise ConfigError(f"{where} must be a mapping with keys {list(VERDICT_KEYS)}, got {block!r}")
    for key in block:
        if key not in VERDICT_KEYS:
            raise ConfigError(
                f"{where}: unknown key {key!r}.{suggest(key, VERDICT_KEYS)} (allowed: {list(VERDICT_KEYS)})"
            )
    out: dict[str, Any] = {}
    margin = block.get("margin", DEFAULT_MARGIN)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 < margin < float("inf"):
        raise ConfigError(f"{where}.margin must be a positive number in the metric's unit, got {margin!r}")
    out["margin"] = float(margin)
    metric = block.get("metric", "final_acc")
    if metric not in METRICS:
        raise ConfigError(f"{where}.metric: {metric!r} is not a result metric.{suggest(metric, METRICS)}")
    out["metric"] = metric
    alpha = block.get("alpha", ALPHA)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 0.5:
        raise ConfigError(f"{where}.alpha must be a number in (0, 0.5), got {alpha!r}")
    out["alpha"] = float(alpha)
    if "comparisons" in block:
        pairs = block["comparisons"]
        if not isinstance(pairs, list) or not pairs:
            raise ConfigError(f"{where}.comparisons must be a non-empty list of [a, b] pairs, got {pairs!r}")
        fields = RunConfig.field_names()
        knobs = {o for m in METHODS.values() for o in m.options}  # a method's knobs pick too
        checked = []
        for i, pair in enumerate(pairs):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ConfigError(f"{where}.comparisons[{i}] must be a pair [a, b], got {pair!r}")
            for j, side in enumerate(pair):
                at = f"{where}.comparisons[{i}][{j}]"
                if not isinstance(side, dict) or not side:
                    raise ConfigError(f"{at} must be a non-empty mapping of config fields, got {side!r}")
                for key in side:
                    if key == "seed":
                        raise ConfigError(f"{at}: 'seed' cannot pick a configuration (seeds are paired)")
                    if key not in fields and key not in knobs:
                        raise ConfigError(f"{at}: unknown config field {key!r}.{suggest(key, fields)}")
            if pair[0] == pair[1]:
                raise ConfigError(f"{where}.comparisons[{i}] compares a configuration with itself")
            checked.append([dict(pair[0]), dict(pair[1])])
        out["comparisons"] = checked
    return out


def _matches(config: RunConfig, selector: dict[str, Any]) -> bool:
    values = {**config.options, **config.to_dict()}  # fields, and the knobs the config holds
    return all(values.get(k) == v for k, v in selector.items())


def check_verdicts(spec: SweepSpec, configs: Sequence[RunConfig]) -> None:
    """Each side of each declared comparison picks exactly one configuration of the sweep (any number of
    seeds); raises ConfigError naming the comparison otherwise."""
    pairs = (spec.verdicts or {}).get("comparisons") or []
    if not pairs:
        return
    by_config: dict[str, RunConfig] = {}
    for c in configs:
        d = {k: v for k, v in c.training_dict().items() if k != "seed"}
        by_config.setdefault(json.dumps(d, sort_keys=True, default=str), c)
    for i, pair in enumerate(pairs):
        for j, side in enumerate(pair):
            hits = [c for c in by_config.values() if _matches(c, side)]
            if len(hits) != 1:
                what = "no configuration" if not hits else f"{len(hits)} configurations"
                raise ConfigError(
                    f"sweep {spec.name!r}: verdicts.comparisons[{i}][{j}] = {side} picks {what} of the "
                    "sweep; each side must pick exactly one (add config fields to tell them apart)"
                )


def config_hash(config: RunConfig) -> str:
    """The run's identity: :meth:`RunConfig.training_hash` (runtime fields such as ``probe_every``,
    ``checkpoint`` and ``device`` are not part of it, so changing them never retrains a run)."""
    return config.training_hash()


def _slug(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in text)[:40]


def run_ids(configs: Sequence[RunConfig]) -> list[str]:
    """Directory names: the hashed fields that vary across ``configs`` plus :func:`config_hash` (the
    training hash): a run directory is named by what it trains, never by runtime fields."""
    dicts = [c.training_dict() for c in configs]
    hashed = [k for k in RunConfig.field_names() if dicts and k in dicts[0]]
    varying = [
        k for k in hashed if len({json.dumps(d.get(k), sort_keys=True, default=str) for d in dicts}) > 1
    ]
    ids = []
    for c, d in zip(configs, dicts):
        parts = [f"{k}={_slug(d[k])}" for k in varying if d.get(k) is not None]
        ids.append(",".join(parts + [config_hash(c)]))
    return ids


def spec_hash(spec: SweepSpec) -> str:
    """Hash of what a sweep spec trains (everything but ``executor``, ``description`` and notices)."""
    d = {k: v for k, v in spec.to_dict().items() if k not in ("executor", "description", "data_notice")}
    if not d.get(
        "verdicts"
    ):  # a spec without a verdicts block keeps the hash it had before the block existed
        d.pop("verdicts", None)
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]
