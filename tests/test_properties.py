"""Property-based checks (hypothesis) of kwlab's inputs: generated values fed to ``RunConfig.from_dict``, the
methods' options (``kwlab.convert`` of a tiny net with each method) and the sweep grammar either build or
raise kwlab's own error naming what was wrong -- never a raw TypeError, KeyError or torch error.

Bounded: a few hundred examples in all, well under 30 s on one CPU thread. Counts are drawn up to 64 (a
family layer with 10**9 experts is a real allocation, not a type error).
"""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import kwlab
from kwlab.experiments.config import ConfigError, RunConfig
from kwlab.experiments.spec import SweepSpec, apply_overrides, expand, parse_overrides
from kwlab.methods import METHODS
from kwlab.testing import tiny_run

KWLAB = Path(kwlab.__file__).resolve().parent
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

pytestmark = pytest.mark.usefixtures("one_thread")

#: Values a user can write in a YAML file, a --set or a keyword: every JSON type, the numbers that break
#: arithmetic and the strings that look like other types.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=64),
    st.sampled_from([2**31, 2**70, -(2**40)]),
    st.floats(min_value=-1e6, max_value=1e6),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e30, 1e-30, 0.5, 0.25]),
    st.sampled_from(["", "0", "1", "4", "1e-3", "nan", "inf", "true", "false", "no", "None", "abc", "1x"]),
    st.text(max_size=6),
)
values = st.one_of(
    scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=4), scalars, max_size=2)
)


def _raised_by_kwlab(err: BaseException) -> bool:
    """The innermost frame that raised ``err`` is kwlab's code (not torch's, Python's or a library's)."""
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(KWLAB)


def _check_refusal(err: BaseException, names) -> None:
    assert isinstance(err, ValueError), f"{type(err).__name__}: {err}"
    assert _raised_by_kwlab(err), "".join(traceback.format_exception(err))
    message = str(err)
    assert any(str(n) in message for n in names), f"{message!r} names none of {sorted(map(str, names))}"


# ---------------------------------------------------------------------------------------------- RunConfig
FIELDS = RunConfig.field_names()


@settings(max_examples=150, **SETTINGS)
@given(st.dictionaries(st.sampled_from([*FIELDS, "kernel_num", "lr_typo"]), values, max_size=4))
def test_run_config_builds_or_names_the_field(changes):
    try:
        config = RunConfig.from_dict({**tiny_run(), **changes})
    except Exception as err:  # noqa: BLE001 - the property is about what is raised
        assert isinstance(err, ConfigError), f"{type(err).__name__}: {err}"
        _check_refusal(err, changes)
    else:
        assert isinstance(config, RunConfig)
        assert RunConfig.from_dict(config.to_dict()).training_hash() == config.training_hash()


# ------------------------------------------------------------------------------------------ method options
#: Options a generated value cannot meaningfully fill (patterns, rules, inputs, per-warehouse mappings).
SKIPPED = {"include", "exclude", "example_input", "warehouse_options", "stages", "wiring", "algorithm"}
#: The size guards, which say which option to set when a generated budget is too large.
GUARDS = ("max_param_ratio", "max_memory_bytes", "max_param", "finds no conv", "no layer to convert")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    return kwlab.create_model("resnet20_cifar", num_classes=10, widths=[8, 8, 8])


@pytest.mark.parametrize("method", [m for m in METHODS if m != "static"])
def test_method_options_build_or_name_the_option(method):
    row = METHODS[method]
    names = sorted(set(row.options) - SKIPPED)
    options = {"wiring": "pairing", "stages": "all"} if method == "kerneldna" else {}

    @settings(max_examples=15, **SETTINGS)
    @given(st.dictionaries(st.sampled_from(names), values, min_size=1, max_size=2))
    def check(generated):
        net = _net() if method != "kerneldna" else _resnet()  # KernelDNA pairs the convs of blocks
        before = {k: v.clone() for k, v in net.state_dict().items()}
        try:
            with torch.no_grad():
                kwlab.convert(net, method, **options, **generated)
        except Exception as err:  # noqa: BLE001 - the property is about what is raised
            _check_refusal(err, [*generated, *GUARDS])
            after = net.state_dict()
            assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)

    check()


# ------------------------------------------------------------------------------------------- sweep grammar
SPEC_KEYS = ["name", "base", "grid", "runs", "seeds", "executor", "description", "sweeps"]
run_fields = st.sampled_from(["seed", "lr", "method", "budget", "epochs", "amp", "preset", "kernel_num"])
entries = st.dictionaries(run_fields, values, max_size=2)
spec_values = st.one_of(
    values,
    entries,
    st.lists(entries, max_size=2),
    st.dictionaries(run_fields, st.lists(scalars, max_size=2), max_size=2),
    st.dictionaries(st.sampled_from(["kind", "workers", "threads", "torchrun_args", "wokers"]), values),
)


@settings(max_examples=100, **SETTINGS)
@given(
    st.dictionaries(st.sampled_from(SPEC_KEYS), spec_values, max_size=4),
    st.lists(
        st.sampled_from(["seed=[]", "seed=1.5", "lr=[0.1, 0.2]", "budget=2", "kernel_num=4"]), max_size=2
    ),
)
def test_sweep_grammar_builds_or_raises_a_config_error(d, overrides):
    d = {"name": "p", **d} if "name" not in d or not isinstance(d.get("name"), str) else d
    base = d.get("base")
    if isinstance(base, dict):
        d["base"] = {**tiny_run(), **base}
    try:
        spec = SweepSpec.from_dict(d)
        apply_overrides(spec, parse_overrides(overrides))
        configs = expand(spec)
    except Exception as err:  # noqa: BLE001 - the property is about what is raised
        assert isinstance(err, ConfigError), "".join(traceback.format_exception(err))
        assert _raised_by_kwlab(err)
    else:
        assert configs and all(isinstance(c, RunConfig) for c in configs)
        assert all(isinstance(c.seed, int) and not isinstance(c.seed, bool) for c in configs)
