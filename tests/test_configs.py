"""The recipe files the README and the CLI name exist and train (issue 31, item 5); ``RunConfig.from_dict``
takes any mapping; a loop over methods passes one keyword set to ``kwlab.convert``."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import kwlab
from kwlab.cli import main
from kwlab.experiments import RunConfig
from kwlab.experiments.recipes import get_recipe

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
RUN_FILES = sorted(p.name for p in CONFIGS.glob("*.yaml") if "runs" not in yaml.safe_load(p.read_text()))
#: one optimizer step on a few synthetic images; everything else comes from the file and its recipe
ONE_STEP = dict(
    data="synthetic",
    image_size=32,
    train_samples=4,
    test_samples=4,
    batch_size=4,
    epochs=1,
    warmup_epochs=0,
    device="cpu",
    probe_samples=4,
    checkpoint=False,
)


def test_every_config_the_docs_name_exists():
    named = set()
    for doc in (ROOT / "README.md", ROOT / "kwlab" / "cli.py", ROOT / "Makefile"):
        named |= {w.split("configs/")[1] for w in doc.read_text().split() if w.startswith("configs/")}
    named = {n.rstrip("`).,") for n in named if n.endswith((".yaml", ".yaml`"))}
    assert "cifar10_resnet20.yaml" in named
    for name in named:
        assert (CONFIGS / name).is_file(), name
    # the recipes the README names: CIFAR-10 ResNet-20 and ResNet-18, and the official ImageNet recipes
    recipes = {yaml.safe_load((CONFIGS / f).read_text()).get("recipe") for f in RUN_FILES}
    assert {"cifar", "imagenet_resnet", "imagenet_mobilenetv2"} <= recipes
    assert {f"imagenet_kerneldna_{a}" for a in ("resnet18", "resnet50", "mobilenetv2")} <= recipes
    assert {"cifar10_resnet20.yaml", "cifar10_resnet18.yaml"} <= set(RUN_FILES)


@pytest.mark.parametrize("name", RUN_FILES)
def test_config_file_trains_one_step(name, tmp_path, capsys, one_thread):
    path = CONFIGS / name
    file_values = yaml.safe_load(path.read_text())
    sets = [f"--set={k}={json.dumps(v)}" for k, v in ONE_STEP.items()]
    rc = main(["train", str(path), *sets, "--out", str(tmp_path / "run"), "--no-progress"])
    assert rc == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    # the file's fields, its recipe's fields (where --set did not override them) and the one-step overrides
    for key, value in file_values.items():
        if key not in ONE_STEP:
            assert saved[key] == value, key
    for key, value in get_recipe(file_values["recipe"]).items():
        if key not in ONE_STEP:
            assert saved[key] == pytest.approx(value) if isinstance(value, float) else saved[key] == value, (
                key
            )
    assert saved["data"] == "synthetic" and results["total_steps"] == 1
    assert torch.isfinite(torch.tensor(results["final_train_loss"]))


def test_sweep_files_parse():
    from kwlab.experiments.spec import load_sweep

    for path in CONFIGS.glob("*.yaml"):
        if path.name not in RUN_FILES:
            assert load_sweep(str(path), []).name


def test_from_dict_accepts_any_mapping():
    plain = {
        "arch": "resnet20_cifar",
        "method": "kw",
        "preset": "1x",
        "model_kwargs": {"widths": [8, 16, 32]},
    }
    want = RunConfig.from_dict(plain)
    proxy = types.MappingProxyType({**plain, "model_kwargs": types.MappingProxyType({"widths": (8, 16, 32)})})
    got = RunConfig.from_dict(proxy)
    assert got == RunConfig.from_dict({**plain, "model_kwargs": {"widths": (8, 16, 32)}})
    assert type(got.model_kwargs) is dict and got.training_hash() == want.training_hash()
    with pytest.raises(ValueError, match="values must be a mapping"):
        RunConfig.from_dict([("arch", "resnet20_cifar")])


def test_from_dict_accepts_an_omegaconf_dictconfig():
    omegaconf = pytest.importorskip("omegaconf")
    plain = {
        "arch": "resnet20_cifar",
        "method": "kw",
        "preset": "1x",
        "model_kwargs": {"widths": [8, 16, 32]},
    }
    got = RunConfig.from_dict(omegaconf.OmegaConf.create(plain))
    assert got == RunConfig.from_dict(plain)
    assert type(got.model_kwargs["widths"]) is list
    structured = omegaconf.OmegaConf.structured(RunConfig(method="kw", model_kwargs={"widths": [8, 16, 32]}))
    assert (
        RunConfig.from_dict(structured).training_hash()
        == RunConfig.from_dict({"method": "kw", "model_kwargs": {"widths": [8, 16, 32]}}).training_hash()
    )


def _net() -> nn.Module:
    torch.manual_seed(0)
    return kwlab.create_model("resnet20_cifar", num_classes=10, widths=[32, 32, 64])


METHOD_OPTIONS = {"kerneldna": {"wiring": "pairing"}, "fdconv": {"kernel_num": 4}}


@pytest.mark.parametrize("method", [m for m in kwlab.list_methods() if m != "static"])
def test_convert_takes_example_input_for_every_method(method, one_thread):
    """The same keyword set for every method: ``example_input`` changes nothing where the method does not
    trace (the same model as without it), and a batch the model cannot take is refused by name."""
    x = torch.randn(2, 3, 16, 16)
    options = METHOD_OPTIONS.get(method, {})
    torch.manual_seed(1)
    with_input = kwlab.convert(_net(), method, example_input=x, **options)
    torch.manual_seed(1)
    without = kwlab.convert(_net(), method, **options)
    assert list(with_input.state_dict()) == list(without.state_dict())
    for (k, a), b in zip(with_input.state_dict().items(), without.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="example_input"):
        kwlab.convert(_net(), method, example_input=torch.randn(2, 5, 16, 16), **options)


def test_a_loop_over_methods_passes_one_keyword_set(one_thread):
    """Options of other methods are accepted where they change nothing (None, KW's warning threshold) and
    refused by name where they would change something."""
    x = torch.randn(2, 3, 16, 16)
    shared = dict(example_input=x, attention_share_warning=None)
    kwlab.convert(_net(), "kw", **shared, num_kernels=None)  # a family option left unset
    for method in ("condconv", "odconv"):
        torch.manual_seed(1)
        got = kwlab.convert(_net(), method, **shared, sharing=None, budget=None)  # KW options left unset
        torch.manual_seed(1)
        want = kwlab.convert(_net(), method)
        for (k, a), b in zip(got.state_dict().items(), want.state_dict().values()):
            assert torch.equal(a, b), k
    with pytest.raises(ValueError, match=r"option\(s\) \['sharing'\] do not apply to method='condconv'"):
        kwlab.convert(_net(), "condconv", sharing="layer")
