"""Issue 22: conversions finish or leave the model untouched, plan tables for every method, small custom CNNs
convert to KW by default, and official checkpoints never load into the wrong warehouse of a custom net."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from torch import nn

import kwlab
from kwlab.layers import KWConv2d
from kwlab.methods import METHODS, family
from kwlab.methods.kw_options import ATTENTION_SHARE_WARNING
from kwlab.methods.official import OfficialCheckpointError, load_official, to_official
from kwlab.testing import tiny_run

pytestmark = pytest.mark.usefixtures("one_thread")

FAMILY = ("condconv", "dyconv", "odconv")


def snapshot(model: nn.Module):
    """Module names and types, and a copy of every state_dict entry."""
    return (
        [(n, type(m)) for n, m in model.named_modules()],
        {k: v.detach().clone() for k, v in model.state_dict().items()},
    )


def assert_unchanged(model: nn.Module, before) -> None:
    types, state = before
    assert [(n, type(m)) for n, m in model.named_modules()] == types
    now = model.state_dict()
    assert list(now) == list(state)
    assert all(torch.equal(now[k], v) for k, v in state.items())


def toy_cnn(num_classes: int = 10) -> nn.Module:
    """A teacher's 3-conv, 16-channel CNN (the course's first conversion)."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, num_classes),
    )


def with_bad_conv(bad: nn.Conv2d) -> nn.Module:
    """Three convertible convs, then ``bad`` last (so an in-place loop would have replaced the others)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.Conv2d(8, 8, 3, padding=1),
        bad,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    )


# ----------------------------------------------------------------------------- the family: all or nothing
@pytest.mark.parametrize("method", FAMILY)
@pytest.mark.parametrize(
    "bad,param",
    [
        (nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"), "padding_mode"),
        (nn.Conv2d(8, 8, 4, padding="same"), "padding='same'"),
        (nn.Conv2d(8, 8, 3, padding="same", dilation=1, groups=8, padding_mode="circular"), "padding_mode"),
    ],
)
def test_family_refusal_leaves_the_model_as_it_was(method, bad, param):
    model = with_bad_conv(bad)
    before = snapshot(model)
    with pytest.raises(ValueError, match=param) as err:
        kwlab.convert(model, method)
    assert_unchanged(model, before)
    assert "'3'" in str(err.value) or "3:" in str(err.value)  # the layer is named
    assert "exclude=['3']" in str(err.value)  # and the fix
    # the fix works: the others convert, the bad one stays, and the model runs
    kwlab.convert(model, method, exclude="3")
    assert type(model[3]) is nn.Conv2d and type(model[1]) is METHODS[method].layer
    assert model.eval()(torch.randn(2, 3, 8, 8)).shape == (2, 2)


@pytest.mark.parametrize(
    "model,method,reasons",
    [
        (nn.Sequential(nn.Conv1d(3, 8, 3), nn.Conv1d(8, 8, 3)), "condconv", ["Conv1d", "Conv1d"]),
        (nn.Sequential(nn.Conv3d(3, 8, 3), nn.Conv3d(8, 8, 3)), "dyconv", ["Conv3d", "Conv3d"]),
        (
            nn.Sequential(nn.Conv2d(3, 8, 3), nn.ConvTranspose2d(8, 8, 3)),
            "odconv",
            ["stem", "ConvTranspose2d"],
        ),
        (nn.Sequential(nn.Linear(3, 8)), "dyconv", []),
    ],
)
def test_family_conversion_that_converts_nothing_raises_with_reasons(model, method, reasons):
    before = snapshot(model)
    with pytest.raises(ValueError, match="would convert no layer") as err:
        kwlab.convert(model, method)
    assert_unchanged(model, before)
    text = str(err.value)
    for i, why in enumerate(reasons):
        assert f"{i}: " in text and why in text
    if not reasons:
        assert "has no conv" in text


def test_family_on_an_already_converted_model_raises():
    model = kwlab.convert(with_bad_conv(nn.Conv2d(8, 8, 3, padding=1)), "dyconv", include=["*"])
    before = snapshot(model)
    with pytest.raises(ValueError, match="already a dynamic layer \\(DynamicConv2d\\)"):
        kwlab.convert(model, "dyconv")
    assert_unchanged(model, before)


@pytest.mark.parametrize("method", [*FAMILY, "kerneldna"])
def test_family_plan_table_is_the_built_model(method):
    from kwlab.models.resnet import BasicBlock, ResNet

    torch.manual_seed(0)
    model = ResNet(BasicBlock, [2, 2], widths=(8, 16), num_classes=3, stem="cifar")
    options = dict(wiring="pairing", stages="all") if method == "kerneldna" else {}
    plan = family.plan_family(model, method, **options)
    frame, totals = plan.frame(), plan.totals()
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert list(frame.index) == convs  # every conv of the model has a row
    assert set(frame[frame.status == "converted"].index) == set(plan.layers) != set()
    assert all(frame.loc[n, "reason"] for n in frame.index if n not in plan.layers)  # a reason each
    assert frame.loc["conv1", "reason"].startswith("the stem")
    before = kwlab.count_parameters(model)
    assert totals["static_model"] == before
    kwlab.convert(model, method, **options)
    assert kwlab.count_parameters(model) == totals["converted_model"]  # the plan is the built model
    assert {n for n, _ in kwlab.dynamic_layers(model)} == set(plan.layers)


# ----------------------------------------------------------------------------- KW
def test_kw_even_same_conv_stays_static_with_its_reason_and_the_model_runs():
    torch.manual_seed(0)
    model = with_bad_conv(nn.Conv2d(8, 8, 4, padding="same")).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ref = model(x)
    plan = kwlab.plan_kernelwarehouse(model, sharing="layer", example_input=x)
    assert plan.left_static["3"].startswith("padding='same' with kernel_size=(4, 4)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        kwlab.convert(model, "kw", sharing="layer", example_input=x)
    assert type(model[3]) is nn.Conv2d and isinstance(model[1], KWConv2d)
    with torch.no_grad():  # tau = 1 with init="static": the static function
        torch.testing.assert_close(model.eval()(x), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["kw", *FAMILY])
def test_a_lone_conv_converts_for_every_method(method):
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, 3, padding=1)
    x = torch.randn(2, 16, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        layer = kwlab.convert(conv, method, **({"example_input": x} if method == "kw" else {}))
    assert type(layer) is {"kw": KWConv2d, **{m: METHODS[m].layer for m in FAMILY}}[method]
    if method in ("kw", "dyconv"):  # both reproduce the static conv at the start (tau = 1, convex mixture)
        with torch.no_grad():
            torch.testing.assert_close(layer.eval()(x), conv(x), rtol=1e-4, atol=1e-5)


def test_small_custom_cnn_converts_to_kw_by_default_with_its_attention_share():
    torch.manual_seed(0)
    model = toy_cnn().eval()
    x = torch.randn(2, 3, 32, 32)
    plan = kwlab.plan_kernelwarehouse(model, example_input=x)
    assert sorted(plan.layers) == ["0", "4", "8"]  # every conv, as the official code converts them
    assert set(plan.left_static) == {"12"}  # the classifier head only
    frame, totals = plan.frame(), plan.totals()
    share = totals["attention"] / (totals["attention"] + totals["warehouse"])
    assert totals["attention_share"] == pytest.approx(share)
    for _, row in frame.iterrows():
        assert row["attention_share"] == pytest.approx(
            row["attention_params"] / (row["attention_params"] + row["warehouse_params"])
        )
    assert totals["ratio"] <= 4  # within the size guard's default
    with torch.no_grad():
        ref = model(x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kwlab.convert(model, "kw", example_input=x)
    shares = [w for w in caught if "attention_share_warning" in str(w.message)]
    assert len(shares) == (1 if share > ATTENTION_SHARE_WARNING else 0)
    if shares:
        assert f"{share:.0%}" in str(shares[0].message)
    assert kwlab.count_parameters(model) == totals["converted_model"]
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), ref, rtol=1e-4, atol=1e-5)
    # the warning follows the stated share: none when the threshold is above it, or switched off
    for limit in (min(1.0, share + 0.01), None):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            kwlab.convert(toy_cnn(), "kw", example_input=x, attention_share_warning=limit)
        assert not [w for w in caught if "attention_share_warning" in str(w.message)]
    with pytest.warns(UserWarning, match="attention_share_warning=0%"):
        kwlab.convert(toy_cnn(), "kw", example_input=x, attention_share_warning=0.0)


def test_size_guard_still_refuses_explosions_and_leaves_the_cnn_untouched():
    model = toy_cnn()
    before = snapshot(model)
    ratio = kwlab.plan_kernelwarehouse(model).totals()["ratio"]
    with pytest.raises(ValueError, match="max_param_ratio"):
        kwlab.convert(model, "kw", max_param_ratio=ratio * 0.99)
    assert_unchanged(model, before)
    big = kwlab.plan_kernelwarehouse(model, budget=4, sharing="layer").totals()["ratio"]
    assert big > 4  # 4x the cells of narrow layers: an explosion the default guard refuses
    with pytest.raises(ValueError, match="max_param_ratio=4.0x"):
        kwlab.convert(model, "kw", budget=4, sharing="layer")
    assert_unchanged(model, before)


def test_cli_trains_a_custom_module_as_kw(tmp_path, monkeypatch, capsys):
    from kwlab.cli import main

    (tmp_path / "kwlab_toy_cnn22.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def build(num_classes=10):
                return nn.Sequential(
                    nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                    nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                    nn.Linear(16, num_classes),
                )
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    base = tiny_run(train_samples=32, test_samples=16)
    sets = [f"{k}={json.dumps(v)}" for k, v in base.items() if k not in ("arch", "model_kwargs")]
    args = ["train", "--set", "arch=kwlab_toy_cnn22:build", "--set", "method=kw", "--no-progress"]
    for s in sets:
        args += ["--set", s]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rc = main([*args, "--out", str(tmp_path / "run")])
    assert rc == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    static = sum(p.numel() for p in __import__("kwlab_toy_cnn22").build().parameters())
    plan = kwlab.plan_kernelwarehouse(__import__("kwlab_toy_cnn22").build())
    assert len(plan.layers) == 3
    assert results["params"] == plan.totals()["converted_model"] != static


# ----------------------------------------------------------------------------- load_official on custom nets
class TwoStage(nn.Module):
    """A network the official repository does not ship: two stages whose warehouses have the same cells."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.a = nn.Conv2d(16, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = torch.relu(self.a(torch.relu(self.stem(x))))
        x = torch.relu(self.b(nn.functional.max_pool2d(x, 2)))
        return self.head(x.mean((2, 3)))


X8 = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))


def _kw(net: nn.Module, **options) -> nn.Module:
    """KW with a warehouse per layer: ``stem`` (cells 16x3), ``a`` and ``b`` (both 9 cells of 16x16)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return kwlab.convert(net, "kw", init="kaiming", sharing="layer", example_input=X8, **options)


def official_two_stage():
    """The official model: the official Warehouse_Manager numbers warehouses in reservation order, and this
    model's __init__ reserved stage b's warehouse before stage a's: emulated with that explicit order, then
    exported in the official layout (``warehouse_manager.weights.{i}``, ``{layer}.attention.*``)."""
    order = ["stem", "b", "a"]
    torch.manual_seed(2)
    model = _kw(TwoStage(), warehouse_order=order).eval()
    with torch.no_grad():
        for p in model.parameters():  # distinct values everywhere (attention included)
            p.add_(torch.randn_like(p) * 0.1)
    return model, to_official(model), order


def test_load_official_refuses_swappable_warehouses_of_a_custom_net_and_loads_with_the_order():
    official, sd, order = official_two_stage()
    assert sorted(k for k in sd if k.startswith("warehouse_manager.")) == [
        f"warehouse_manager.weights.{i}" for i in range(3)
    ]
    assert sd["warehouse_manager.weights.1"].shape == sd["warehouse_manager.weights.2"].shape
    kwlab.set_temperature(official, 0.0)
    with torch.no_grad():
        ref = official(X8)
    user = _kw(TwoStage()).eval()  # converted by default: kwlab's order, not the official one
    assert list(kwlab.warehouses(user)) == ["stem", "a", "b"] == user.kw_warehouse_order
    before = snapshot(user)
    with pytest.raises(OfficialCheckpointError, match="warehouse_order") as err:
        load_official(user, sd)
    assert "same shape" in str(err.value)
    assert_unchanged(user, before)
    load_official(user, sd, warehouse_order=order)
    with torch.no_grad():
        torch.testing.assert_close(user(X8), ref)
    # what the refusal prevents: the positional order loads without a shape error and gives other logits
    wrong = _kw(TwoStage()).eval()
    load_official(wrong, sd, warehouse_order=["stem", "a", "b"])
    with torch.no_grad():
        assert not torch.allclose(wrong(X8), ref, atol=1e-3)
    # a network converted with the official order in the first place loads without it
    again = _kw(TwoStage(), warehouse_order=order).eval()
    load_official(again, sd)
    with torch.no_grad():
        torch.testing.assert_close(again(X8), ref)


def test_load_official_mismatch_on_a_custom_net_names_warehouse_order_not_the_arch():
    _, sd, order = official_two_stage()
    other = _kw(TwoStage(), budget=2, warehouse_order=order)
    with pytest.raises(OfficialCheckpointError) as err:
        load_official(other, sd)
    text = str(err.value)
    assert "warehouse_order" in text and "the same layers KW" in text
    assert "Build the model with the arch and preset" not in text


def test_load_official_refuses_nan_weights_and_leaves_the_model():
    _, sd, order = official_two_stage()
    sd = dict(sd)
    sd["head.weight"] = sd["head.weight"].clone()
    sd["head.weight"][0, 0] = float("nan")
    user = _kw(TwoStage(), warehouse_order=order)
    before = snapshot(user)
    nan_msg = r"NaN or infinite values in 1 tensor\(s\): head\.weight"
    with pytest.raises(OfficialCheckpointError, match=nan_msg):
        load_official(user, sd)
    assert_unchanged(user, before)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo issue22",))


@pytest.mark.parametrize("how", ["pickle2", "pickle4", "torch_zip"])
def test_code_carrying_checkpoints_are_reported_as_code(tmp_path, how):
    path = tmp_path / "evil.pth"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if how == "torch_zip":
            torch.save({"model": _Evil()}, path, pickle_protocol=4)
        else:
            path.write_bytes(pickle.dumps({"model": _Evil()}, protocol=int(how[-1])))
        content = path.read_bytes()
        model = _kw(TwoStage())
        before = snapshot(model)
        with pytest.raises(OfficialCheckpointError) as err:
            load_official(model, path)
    text = str(err.value)
    assert "holds code" in text and "system" in text
    assert "corrupt" not in text and "weights_only` set to `False" not in text and "Re-running" not in text
    assert_unchanged(model, before)
    assert path.read_bytes() == content


# ----------------------------------------------------------------------------- make lab
@pytest.mark.parametrize("uid,expected", [("0", True), ("1000", False)])
def test_make_lab_passes_allow_root_only_for_root(uid, expected):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    # -o: take the install stamp and the Jupyter overrides as made, so only the lab line is printed. (The
    # former STAMP=Makefile made the stamp's rule a rule for the Makefile itself, which make runs even under
    # -n: in a checkout without .venv the test created one and ran pip install until its timeout.)
    venv = ".venv"
    made = [f"{venv}/.installed", f"{venv}/share/jupyter/lab/settings/overrides.json"]
    try:
        out = subprocess.run(
            ["make", "-n", "-s", "lab", f"VENV={venv}", f"LAB_UID={uid}", *(f"--old-file={m}" for m in made)],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except FileNotFoundError:
        pytest.skip("make is not installed")
    line = next(ln for ln in out.stdout.splitlines() if "jupyter lab" in ln)
    assert ("--allow-root" in line) is expected
    assert line.rstrip().endswith("notebooks/")
    assert sys.executable  # the recipe uses the venv's jupyter, not this interpreter
