"""kwlab's KW ResNets under timm's names (issue 31, item 4): ``timm.create_model("kw_resnet18.1x")`` after
importing :mod:`kwlab.integrations.timm_models` builds kwlab's KW model of that preset, and timm's local
Hugging Face round trip (``save_for_hf`` -> ``create_model("local-dir:...")``) gives the same logits. Skipped
where timm is not installed."""

from __future__ import annotations

import pytest
import torch

import kwlab
from kwlab._compat import import_timm

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def timm():
    try:
        module = import_timm()
    except ImportError:
        pytest.skip("timm is not installed")
    import kwlab.integrations.timm_models  # noqa: F401 - registers kw_<arch>

    return module


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("tag,preset", [("1x", "1x"), ("1_2x", "1/2x"), ("4x", "4x")])
def test_timm_name_builds_kwlabs_kw_model_of_the_preset(timm, tag, preset):
    assert f"kw_resnet20_cifar.{tag}" in timm.list_models("kw_resnet20_cifar*", include_tags=True)
    torch.manual_seed(0)
    got = timm.create_model(f"kw_resnet20_cifar.{tag}", num_classes=10)
    torch.manual_seed(0)
    want = kwlab.create_model("resnet20_cifar", method="kw", preset=preset, num_classes=10)
    assert got.state_dict().keys() == want.state_dict().keys() and _params(got) == _params(want)
    assert got.pretrained_cfg["tag"] == tag and got.pretrained_cfg["architecture"] == "kw_resnet20_cifar"
    assert any(isinstance(m, kwlab.KWConv2d) for m in got.modules())
    got.load_state_dict(want.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(got.eval()(x), want.eval()(x))


def test_default_tag_and_unknown_tag(timm):
    assert timm.create_model("kw_resnet8_cifar").pretrained_cfg["tag"] == "1x"
    with pytest.raises(ValueError, match=r"kw_resnet8_cifar: unknown tag '3x'; the KW presets: \['1_2x'"):
        timm.create_model("kw_resnet8_cifar.3x")


def test_save_for_hf_round_trip_gives_the_same_logits(timm, tmp_path):
    from timm.models._hub import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model("kw_resnet20_cifar.1_2x", num_classes=10).eval()
    kwlab.set_temperature(model, 0.25)  # a temperature that is not the default travels with the weights
    save_for_hf(model, str(tmp_path / "hf"))
    again = timm.create_model(f"local-dir:{tmp_path / 'hf'}", pretrained=True).eval()
    assert again.pretrained_cfg["architecture"] == "kw_resnet20_cifar" and _params(again) == _params(model)
    assert kwlab.get_temperature(again) == 0.25
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
