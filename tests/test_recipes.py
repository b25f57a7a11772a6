"""The README's recipes, proven: a new method (one layer file plus one row), a new model (one file that
registers itself) and a new statistic (one Statistic entry) each show up everywhere (issue 21). Each toy is
written into a temporary module, and the tables are restored afterwards."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest
import torch

import kwlab
from kwlab.experiments.config import ConfigError, RunConfig
from kwlab.experiments.spec import SweepSpec
from kwlab.experiments.sweep import check_configs, run_sweep
from kwlab.instruments.probe import Probe
from kwlab.layers.base import DynamicLayer
from kwlab.methods import METHODS, Method, Wiring, family, methods_markdown
from kwlab.models import registry
from kwlab.testing import tiny_run

pytestmark = pytest.mark.usefixtures("one_thread")

TOY_LAYER = '''
from kwlab.layers.dyconv import DynamicConv2d


class ToyConv2d(DynamicConv2d):
    """A toy method's layer: DY-Conv's mixture under another name (enough to follow it through kwlab)."""
'''

TOY_MODEL = '''
from torch import nn

from kwlab.models.registry import ModelEntry, register_model


def toy_net(num_classes=10, width=32):
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes),
    )


register_model(ModelEntry("toy_net", toy_net, ("width",), input_size=(3, 8, 8), description="a toy"))
'''


def _module(tmp_path, monkeypatch, name: str, source: str):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    module = importlib.import_module(name)
    monkeypatch.setitem(sys.modules, name, module)  # removed again after the test
    return module


def test_a_new_method_is_a_layer_file_plus_one_row(tmp_path, monkeypatch, register):
    toy = _module(tmp_path, monkeypatch, "kwlab_toy_method", TOY_LAYER)
    row = Method(
        "toy",
        toy.ToyConv2d,
        None,  # derived from the wiring: the family's conversion
        "count",
        ("num_kernels", "reduction", "include", "exclude"),
        ("preset", "reduction"),
        count_option="num_kernels",
        description="a toy method",
        wiring=Wiring({"num_kernels": 2}),
    )
    register(METHODS, "toy", row)  # METHODS.register, undone after the test

    assert family.WIRING["toy"] is row.wiring  # the family's table is derived from the row

    assert "toy" in kwlab.list_methods() and "| `toy` | a toy method |" in methods_markdown()
    two_convs = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 4, 3))
    assert list(family.plan_family(two_convs, "toy").layers) == ["1"]  # the stem stays static
    model = kwlab.create_model("resnet20_cifar", method="toy", preset="3x", num_classes=10, widths=(4, 8, 8))
    layers = [m for m in model.modules() if isinstance(m, toy.ToyConv2d)]
    assert layers and all(m.num_kernels == 3 for m in layers)
    converted = kwlab.convert(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 4, 3)), "toy")
    assert isinstance(converted[1], toy.ToyConv2d) and not isinstance(converted[0], toy.ToyConv2d)
    with Probe(model) as probe:
        model.eval()(torch.randn(2, 3, 8, 8))
    assert len(probe.summary()) == len(layers)

    config = RunConfig.from_dict(tiny_run(method="toy", preset="2x", reduction=0.5))
    assert "reduction" in RunConfig.model_fields()
    with pytest.raises(ConfigError, match="budget=2.0: not a field of method='toy'"):
        config.replace(budget=2)
    check_configs([config, config.replace(reduction=0.25)])
    spec = SweepSpec.from_dict({"name": "toy", "seeds": 1, "base": tiny_run(), "runs": [{"method": "toy"}]})
    df = run_sweep(spec, tmp_path / "sweep", progress=False, log=lambda *_: None)
    assert list(df["method"]) == ["toy"] and df["params"].iloc[0] > 0


def test_a_new_model_is_one_file_that_registers_itself(tmp_path, monkeypatch, request):
    _module(tmp_path, monkeypatch, "kwlab_toy_model", TOY_MODEL)
    request.addfinalizer(lambda: registry._MODELS.unregister("toy_net"))  # the registration is undone

    assert "toy_net" in kwlab.list_models()
    static = kwlab.create_model("toy_net", num_classes=5, width=32)
    for method in ("kw", "dyconv", "odconv", "condconv"):
        model = kwlab.create_model("toy_net", method=method, num_classes=5, width=32)
        assert any(isinstance(m, DynamicLayer) for m in model.modules()), method
        assert model(torch.randn(2, 3, 8, 8)).shape == static(torch.randn(2, 3, 8, 8)).shape == (2, 5)
    config = RunConfig.from_dict(
        tiny_run(arch="toy_net", method="kw", preset="1x", model_kwargs={"width": 32}, epochs=1)
    )
    assert config.resolved_temperature()[2] == min(METHODS["kw"].temperature.epochs, 0.25)
    check_configs([config])
    spec = SweepSpec.from_dict(
        {"name": "toy", "seeds": 1, "base": tiny_run(arch="toy_net", model_kwargs={"width": 32}),
         "runs": [{"method": "static"}, {"method": "kw", "preset": "1x", "sharing": "layer"}]}
    )
    df = run_sweep(spec, tmp_path / "sweep", progress=False, log=lambda *_: None)
    assert sorted(df["method"]) == ["kw", "static"]
    assert df.set_index("method").loc["kw", "probe_neg_frac"] >= 0


GAIN_LAYER = '''
from kwlab.layers.dyconv import DynamicConv2d


class GainConv2d(DynamicConv2d):
    """A toy method with a knob no other method has: DY-Conv's output times ``gain``."""

    def __init__(self, *args, gain: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.gain = gain

    def forward(self, x):
        return self.gain * super().forward(x)
'''


def test_a_new_method_with_a_new_knob_needs_no_edit_outside_its_layer_and_row(
    tmp_path, monkeypatch, register
):
    """Issue 30 item 1: a toy method declares a knob that is no RunConfig field and no other method's option
    (``gain``); it is typed by its layer, checked, swept flat like a field, and kept apart in the results,
    the summary, the labels, the verdicts, the findings and the report, with nothing edited but the toy's
    layer file and its row."""
    from kwlab.experiments.findings import finding_text
    from kwlab.experiments.report import make_report
    from kwlab.experiments.stats import config_labels

    toy = _module(tmp_path, monkeypatch, "kwlab_gain_method", GAIN_LAYER)
    row = Method(
        "gainy",
        toy.GainConv2d,
        None,
        "count",
        ("num_kernels", "gain", "include", "exclude"),
        ("preset",),
        count_option="num_kernels",
        description="DY-Conv times a gain",
        wiring=Wiring({"num_kernels": 2}),
    )
    register(METHODS, "gainy", row)  # METHODS.register, undone after the test
    assert "gain" not in RunConfig.field_names()

    # the row's options type: derived from the layer's keywords (the new knob typed float, default 1.0)
    fields = {f.name: f for f in __import__("dataclasses").fields(row.options_type)}
    assert fields["gain"].type is float and fields["gain"].default == 1.0
    assert fields["num_kernels"].default == 2  # the wiring's default wins over the layer's

    # a config holds it as the row's checked option, given flat like a field
    config = RunConfig.from_dict(tiny_run(method="gainy", gain=2.0))
    assert config.options == {"gain": 2.0} and config.method_options() == (None, {"gain": 2.0})
    assert config.training_hash() != config.replace(gain=0.5).training_hash()
    assert RunConfig.from_dict(tiny_run()).training_hash() == RunConfig.from_dict(tiny_run()).replace(
        options={}
    ).training_hash()
    with pytest.raises(ConfigError, match=r"gain='2'.*has type str: gain must be a finite float"):
        RunConfig.from_dict(tiny_run(method="gainy", gain="2"))
    with pytest.raises(ConfigError, match=r"unknown config field 'gain'.*option of method 'gainy'"):
        RunConfig.from_dict(tiny_run(method="dyconv", gain=2.0))
    model = kwlab.create_model("resnet20_cifar", method="gainy", num_classes=10, widths=(4, 8, 8), gain=3.0)
    gains = {m.gain for m in model.modules() if isinstance(m, toy.GainConv2d)}
    assert gains == {3.0}

    # swept flat, kept apart everywhere, compared by a declared verdict that names the knob
    spec = SweepSpec.from_dict(
        {
            "name": "gain",
            "seeds": 2,
            "base": tiny_run(),
            "runs": [{"method": "gainy", "gain": [0.5, 2.0]}],
            "verdicts": {"margin": 0.05, "comparisons": [[{"gain": 0.5}, {"gain": 2.0}]]},
        }
    )
    out = tmp_path / "sweep"
    df = run_sweep(spec, out, progress=False, log=lambda *_: None)
    assert sorted(df["gain"]) == [0.5, 0.5, 2.0, 2.0]
    labels = config_labels(df)
    assert set(labels) == {"gainy gain=0.5 4-8-8", "gainy gain=2 4-8-8"}
    summary = __import__("pandas").read_csv(out / "summary.csv")
    assert sorted(summary["label"]) == ["gainy gain=0.5 4-8-8", "gainy gain=2 4-8-8"]
    assert list(summary["n_seeds"]) == [2, 2]
    text = finding_text(out)
    assert "gainy gain=0.5 4-8-8" in text and "gainy gain=2 4-8-8" in text
    assert "gainy gain=0.5 4-8-8 vs gainy gain=2 4-8-8: final_acc difference" in text  # the declared verdict
    report = make_report(out)
    html = report.read_text()
    assert "gainy gain=0.5 4-8-8" in html and "gainy gain=2 4-8-8" in html
