"""Issue 22: bad inputs across the API and the CLI, each answered by one clear error.

Every case asserts the error type, that the message names the parameter (and, where there is a short list,
the allowed values), and, for calls that would change something, that nothing changed: the model's module
types and state_dict, or the files on disk.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import kwlab
from kwlab.experiments.config import ConfigError
from kwlab.methods import family, plan_kernelwarehouse
from kwlab.methods.official import OfficialCheckpointError, load_official, to_official
from kwlab.methods.temperature import TemperatureSchedule
from kwlab.testing import tiny_run

pytestmark = pytest.mark.usefixtures("one_thread")

X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def snapshot(model: nn.Module):
    return (
        [(n, type(m)) for n, m in model.named_modules()],
        {k: v.detach().clone() for k, v in model.state_dict().items()},
    )


def assert_unchanged(model: nn.Module, before) -> None:
    types, state = before
    assert [(n, type(m)) for n, m in model.named_modules()] == types
    now = model.state_dict()
    assert list(now) == list(state) and all(torch.equal(now[k], v) for k, v in state.items())


def net(last: nn.Module | None = None) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        last if last is not None else nn.Conv2d(16, 16, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 2),
    )


def kw_net(**options) -> nn.Module:
    """``net()`` in KW, one warehouse per layer ("0", "2", "4"; "2" and "4" have cells of the same shape)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return kwlab.convert(net(), "kw", sharing="layer", example_input=X, **options)


def dy_net() -> nn.Module:
    return kwlab.convert(net(), "dyconv", include=["*"])


def official_sd() -> dict:
    """An official-layout state_dict of ``kw_net`` whose warehouses were created in the order 0, 4, 2."""
    return to_official(kw_net(warehouse_order=["0", "4", "2"]))


def with_nan(sd: dict) -> dict:
    sd = dict(sd)
    sd["7.weight"] = sd["7.weight"].clone().fill_(float("nan"))
    return sd


def meta_kw() -> nn.Module:
    with torch.device("meta"):
        return kw_net()


def convert(method, **options):
    return lambda m: kwlab.convert(m, method, **options)


# (id, model builder, call on the model, error type, words the message must contain)
API_CASES = [
    ("set_temperature-str", kw_net, lambda m: kwlab.set_temperature(m, "0.5"), ValueError, ["tau", "str"]),
    ("set_temperature-bool", kw_net, lambda m: kwlab.set_temperature(m, True), ValueError, ["tau", "bool"]),
    ("set_temperature-nan", kw_net, lambda m: kwlab.set_temperature(m, float("nan")), ValueError, ["tau"]),
    ("set_temperature-1.5", kw_net, lambda m: kwlab.set_temperature(m, 1.5), ValueError, ["tau", "[0, 1]"]),
    ("set_temperature-None", kw_net, lambda m: kwlab.set_temperature(m, None), ValueError, ["tau"]),
    (
        "set_temperature-vector",
        kw_net,
        lambda m: kwlab.set_temperature(m, torch.tensor([0.1, 0.2])),
        ValueError,
        ["tau", "[0, 1]"],
    ),
    ("get_temperature-meta", meta_kw, kwlab.get_temperature, ValueError, ["model", "meta device"]),
    ("convert-unknown-method", net, convert("kw2"), ValueError, ["method", "allowed", "'kw'"]),
    ("convert-static", net, convert("static"), ValueError, ["method='static'", "condconv"]),
    ("convert-method-None", net, lambda m: kwlab.convert(m, None), ValueError, ["method", "allowed"]),
    ("convert-bad-preset", net, convert("dyconv", preset="fast"), ValueError, ["preset", "'Nx'"]),
    (
        "convert-option-of-another-method",
        net,
        convert("condconv", num_kernels=4),
        ValueError,
        ["num_kernels", "allowed", "num_experts"],
    ),
    ("convert-include-no-match", net, convert("condconv", include="nomatch*"), ValueError, ["include"]),
    ("convert-exclude-not-str", net, convert("odconv", exclude=5), ValueError, ["exclude", "glob"]),
    ("convert-num_kernels-0", net, convert("dyconv", num_kernels=0), ValueError, ["num_kernels", ">= 1"]),
    ("convert-temperature-0", net, convert("dyconv", temperature=0), ValueError, ["temperature", "> 0"]),
    ("convert-reduction-neg", net, convert("odconv", reduction=-1), ValueError, ["reduction", "(0, 1]"]),
    (
        "convert-reflect",
        lambda: net(nn.Conv2d(16, 16, 3, padding=1, padding_mode="reflect")),
        convert("condconv"),
        ValueError,
        ["padding_mode", "'zeros'", "exclude=['4']"],
    ),
    (
        "convert-even-same",
        lambda: net(nn.Conv2d(16, 16, 2, padding="same")),
        convert("dyconv"),
        ValueError,
        ["padding='same'", "kernel_size=(2, 2)", "exclude=['4']"],
    ),
    (
        "convert-conv1d-only",
        lambda: nn.Sequential(nn.Conv1d(3, 8, 3), nn.ReLU(), nn.Conv1d(8, 8, 3)),
        convert("condconv"),
        ValueError,
        ["would convert no layer", "0: Conv1d", "2: Conv1d", "nn.Conv2d"],
    ),
    ("convert-already-dynamic", dy_net, convert("dyconv"), ValueError, ["already a dynamic layer"]),
    ("convert-kerneldna-wiring", net, convert("kerneldna"), ValueError, ["wiring", "'pairing'"]),
    (
        "convert-kerneldna-bad-wiring",
        net,
        convert("kerneldna", wiring="pairings"),
        ValueError,
        ["wiring", "'official'", "'pairing'"],
    ),
    (
        "convert-kerneldna-stages",
        net,
        convert("kerneldna", wiring="pairing", stages="mid"),
        ValueError,
        ["stages", "'late'", "'all'"],
    ),
    ("convert-kw-budget", net, convert("kw", budget=1.5), ValueError, ["budget"]),
    ("convert-kw-sharing", net, convert("kw", sharing="block"), ValueError, ["sharing", "'stage'"]),
    ("convert-kw-init", net, convert("kw", init="zeros"), ValueError, ["init", "'static'", "'kaiming'"]),
    ("convert-kw-attention", net, convert("kw", attention="relu"), ValueError, ["attention must be one of"]),
    ("convert-kw-max_param_ratio-0", net, convert("kw", max_param_ratio=0), ValueError, ["max_param_ratio"]),
    (
        "convert-kw-attention_share_warning",
        net,
        convert("kw", attention_share_warning=2),
        ValueError,
        ["attention_share_warning", "[0, 1]"],
    ),
    ("convert-kw-temperature", net, convert("kw", temperature=2), ValueError, ["temperature", "[0, 1]"]),
    ("convert-kw-include", net, convert("kw", include=["nomatch"]), ValueError, ["include", "'nomatch'"]),
    (
        "convert-kw-guard",
        net,
        convert("kw", sharing="layer", example_input=X, max_param_ratio=1.01),
        ValueError,
        ["max_param_ratio=1.01"],
    ),
    (
        "convert-kw-memory",
        net,
        convert("kw", max_memory_bytes=-1),
        ValueError,
        ["max_memory_bytes", "'auto'"],
    ),
    ("convert-kw-twice", kw_net, convert("kw"), ValueError, ["model already contains KernelWarehouse"]),
    ("convert-kw-example_input", net, convert("kw", example_input="x"), ValueError, ["example_input"]),
    (
        "plan-kw-attention_ratio",
        net,
        lambda m: plan_kernelwarehouse(m, attention_ratio=0),
        ValueError,
        ["attention_ratio"],
    ),
    ("plan-family-method", net, lambda m: family.plan_family(m, "kw"), ValueError, ["method", "'dyconv'"]),
    (
        "create_model-num_classes",
        net,
        lambda m: kwlab.create_model("resnet20_cifar", num_classes=0),
        ValueError,
        ["num_classes"],
    ),
    (
        "create_model-arch",
        net,
        lambda m: kwlab.create_model("resnet21_cifar"),
        ValueError,
        ["arch", "resnet20"],
    ),
    (
        "create_model-preset",
        net,
        lambda m: kwlab.create_model("resnet20_cifar", method="kw", preset="3x"),
        ValueError,
        ["preset", "'1x'"],
    ),
    (
        "load_official-temperature-str",
        lambda: kw_net(warehouse_order=["0", "4", "2"]),
        lambda m: load_official(m, official_sd(), temperature="hot"),
        ValueError,
        ["temperature", "'eval'"],
    ),
    (
        "load_official-temperature-bool",
        lambda: kw_net(warehouse_order=["0", "4", "2"]),
        lambda m: load_official(m, official_sd(), temperature=True),
        ValueError,
        ["temperature", "[0, 1]"],
    ),
    (
        "load_official-order-unknown-key",
        kw_net,
        lambda m: load_official(m, official_sd(), warehouse_order=["0", "4", "x"]),
        ValueError,
        ["warehouse_order", "['0', '2', '4']"],
    ),
    (
        "load_official-order-str",
        kw_net,
        lambda m: load_official(m, official_sd(), warehouse_order="0"),
        ValueError,
        ["warehouse_order", "list of warehouse keys"],
    ),
    (
        "load_official-swappable",
        kw_net,
        lambda m: load_official(m, official_sd()),
        OfficialCheckpointError,
        ["warehouse_order", "'2' and '4'", "same shape"],
    ),
    (
        "load_official-nan",
        lambda: kw_net(warehouse_order=["0", "4", "2"]),
        lambda m: load_official(m, with_nan(official_sd())),
        OfficialCheckpointError,
        ["NaN", "7.weight"],
    ),
    (
        "load_official-other-budget",
        lambda: kw_net(budget=2, warehouse_order=["0", "4", "2"]),
        lambda m: load_official(m, official_sd()),
        OfficialCheckpointError,
        ["shape differs", "warehouse.cells", "warehouse_order"],
    ),
    (
        "load_official-not-a-state-dict",
        kw_net,
        lambda m: load_official(m, {"epoch": 3}),
        OfficialCheckpointError,
        ["no state_dict", "'model'"],
    ),
    (
        "probe-summary-before-forward",
        kw_net,
        lambda m: kwlab.Probe(m).summary(),
        RuntimeError,
        ["Probe.summary()", "nothing recorded", "forward"],
    ),
    (
        "schedule-iters_per_epoch",
        net,
        lambda m: TemperatureSchedule(iters_per_epoch=0),
        ValueError,
        ["iters_per_epoch", ">= 1"],
    ),
]


@pytest.mark.parametrize("make,call,error,words", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_bad_input(make, call, error, words):
    model = make()
    before = snapshot(model) if not any(p.is_meta for p in model.parameters()) else None
    with pytest.raises(error) as err, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        call(model)
    text = str(err.value)
    for word in words:
        assert word in text, f"{word!r} not in {text!r}"
    if before is not None:
        assert_unchanged(model, before)


# ----------------------------------------------------------------------------- checkpoint files
def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _code(path: Path) -> Path:
    import pickle

    class Call:
        def __reduce__(self):
            import os

            return (os.getcwd, ())

    path.write_bytes(pickle.dumps({"model": Call()}, protocol=4))
    return path


FILE_CASES = [
    ("empty", _empty, OfficialCheckpointError, ["empty", "0 bytes"]),
    ("directory", _folder, OfficialCheckpointError, ["is a directory", "path of the file"]),
    ("missing", lambda p: p, FileNotFoundError, ["checkpoint not found"]),
    ("code", _code, OfficialCheckpointError, ["holds code", "posix.getcwd", "refuses"]),
]


@pytest.mark.parametrize("make,error,words", [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES])
def test_checkpoint_file_bad_input(tmp_path, make, error, words):
    path = make(tmp_path / "ckpt.pth")
    model = kw_net(warehouse_order=["0", "4", "2"])
    before = snapshot(model)
    listing = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(error) as err:
        load_official(model, path)
    for word in words:
        assert word in str(err.value)
    assert "corrupt" not in str(err.value) or make is not _code
    assert_unchanged(model, before)
    assert sorted(p.name for p in tmp_path.rglob("*")) == listing


# ----------------------------------------------------------------------------- the CLI
def _sweep_file(tmp: Path) -> Path:
    path = tmp / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "bad", "base": tiny_run(), "runs": [{"method": "static"}]}))
    return path


def _a_file(tmp: Path) -> Path:
    path = tmp / "taken.txt"
    path.write_text("keep me\n")
    return path


CLI_CASES = [
    (
        "train-out-is-file",
        lambda t: ["train", "--set", "epochs=1", "--out", str(_a_file(t))],
        ["--out", "is a file"],
    ),
    (
        "train-out-under-file",
        lambda t: ["train", "--set", "epochs=1", "--out", str(_a_file(t) / "run")],
        ["--out", "which is a file"],
    ),
    ("train-method", lambda t: ["train", "--set", "method=kw3", "--out", str(t / "r")], ["method", "kw"]),
    (
        "sweep-workers-0",
        lambda t: ["sweep", str(_sweep_file(t)), "--out", str(t / "o"), "--workers", "0"],
        ["workers", ">= 1"],
    ),
    (
        "sweep-out-is-file",
        lambda t: ["sweep", str(_sweep_file(t)), "--out", str(_a_file(t))],
        ["--out", "is a file"],
    ),
    (
        "reproduce-threads-0",
        lambda t: ["reproduce", str(t), "--run", "x", "--out", str(t / "o"), "--threads", "0"],
        ["--threads", ">= 1"],
    ),
    (
        "reproduce-threads-neg",
        lambda t: ["reproduce", str(t), "--run", "x", "--out", str(t / "o"), "--threads", "-1"],
        ["--threads", ">= 1", "-1"],
    ),
    (
        "reproduce-out-is-file",
        lambda t: ["reproduce", str(t), "--run", "x", "--out", str(_a_file(t))],
        ["--out", "is a file"],
    ),
    ("report-out-is-file", lambda t: ["report", str(t), "--out", str(_a_file(t))], ["--out", "is a file"]),
]


@pytest.mark.parametrize("argv,words", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(tmp_path, capsys, argv, words):
    from kwlab.cli import main

    args = argv(tmp_path)
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and len(err.strip().splitlines()) == 1  # one clear line
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files  # nothing written
    assert not (tmp_path / "o").exists() and not (tmp_path / "r").exists()


def test_reproduce_api_threads_refused_before_any_work(tmp_path):
    from kwlab.experiments.reproduce import reproduce

    for bad in (0, -1, True, 1.5):
        with pytest.raises(ConfigError, match="threads"):
            reproduce(tmp_path / "nothing", "x", tmp_path / "out", threads=bad)
    assert list(tmp_path.iterdir()) == []


def test_condconv_probe_temperature_is_nan_and_dyconv_is_not():
    from kwlab.instruments.probe import Probe

    for method, has in (("condconv", False), ("dyconv", True)):
        model = kwlab.convert(net(), method).eval()
        with Probe(model) as probe, torch.no_grad():
            model(X)
        temps = probe.summary()["temperature"]
        assert len(temps) == 2
        assert temps.notna().all() if has else temps.isna().all()
        if has:
            assert json.loads(json.dumps(float(temps.iloc[0]))) == pytest.approx(
                30.0
            )  # DY-Conv starts at T=30
