"""Weight averaging (EMA, SWA) never changes a model's temperature (issue 31, item 1).

timm's ``ModelEmaV2/V3`` lerp every floating ``state_dict()`` value in place and ``AveragedModel(use_buffers=
True)`` every ``buffers()`` entry; when the temperature was a buffer, an EMA copy moved towards the live
model's temperature (0.346 with the live model at 0). The temperature is now a tensor attribute with its own
``state_dict`` entry: an EMA copy keeps the temperature that :func:`kwlab.set_temperature` set on it (or,
before that, the one it was copied with), and its outputs equal a hand-averaged reference at that temperature.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import kwlab
from kwlab._compat import import_timm

DECAY = 0.6
LIVE_TAUS = (0.9, 0.5, 0.0, 0.3)  # the live model's schedule while the EMA is updated


def _model(method: str) -> nn.Module:
    torch.manual_seed(0)
    return kwlab.create_model("resnet20_cifar", method=method, num_classes=10, widths=[8, 16, 32])


def _train_step(model: nn.Module, tau: float, step: int) -> None:
    """What a training step does to the state the EMA reads: new weights and BatchNorm statistics."""
    kwlab.set_temperature(model, tau)
    gen = torch.Generator().manual_seed(100 + step)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 16, 16, generator=gen))


def _averaged_state(states: list[dict], *, first_copies: bool) -> dict:
    """The hand-computed EMA of a list of state_dicts (floating entries lerped by 1 - DECAY, others copied);
    ``first_copies``: the first update copies (AveragedModel), else the start is states[0] (timm)."""
    ref = {k: v.clone() for k, v in states[0].items()}
    for i, state in enumerate(states[1:]):
        for k, v in state.items():
            if first_copies and i == 0 or not v.is_floating_point():
                ref[k] = v.clone()
            else:
                ref[k] = ref[k] + (1 - DECAY) * (v - ref[k])
    return ref


def _check_ema(method: str, make_ema, update, ema_module, *, first_copies: bool) -> None:
    live = _model(method)
    ema = make_ema(live)
    assert kwlab.get_temperature(ema_module(ema)) == kwlab.get_temperature(live)  # a copy of the live model
    kwlab.set_temperature(ema_module(ema), 0.0)  # evaluate the EMA at the end of the anneal
    states = [{k: v.clone() for k, v in live.state_dict().items()}]
    for step, tau in enumerate(LIVE_TAUS):
        _train_step(live, tau, step)
        states.append({k: v.clone() for k, v in live.state_dict().items()})
        update(ema, live)
        # the averaging changed neither the EMA's temperature nor the live one's
        assert kwlab.get_temperature(ema_module(ema)) == 0.0, (method, step)
        assert kwlab.get_temperature(live) == pytest.approx(tau, abs=1e-7)
        for _, layer in kwlab.layers.base.dynamic_layers(ema_module(ema)):
            assert float(layer.attention.temperature) == layer.attention.temperature_contract.value(0.0)

    ref_model = _model(method)
    ref_state = _averaged_state(states, first_copies=first_copies)
    ref_state = {k: v for k, v in ref_state.items() if not k.endswith("attention.temperature")}
    missing, unexpected = ref_model.load_state_dict(ref_state, strict=False)
    assert not unexpected and all(k.endswith("attention.temperature") for k in missing)
    kwlab.set_temperature(ref_model, 0.0)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        got = ema_module(ema).eval()(x)
        want = ref_model.eval()(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # the EMA's own state_dict records its own temperature, the live model's its own
    key = next(k for k in live.state_dict() if k.endswith("attention.temperature"))
    assert float(ema_module(ema).state_dict()[key]) == ema_module(ema).get_submodule(
        key[: -len(".temperature")]
    ).temperature_contract.value(0.0)  # noqa: E501


METHODS_WITH_TEMPERATURE = ("kw", "odconv")


@pytest.mark.parametrize("method", METHODS_WITH_TEMPERATURE)
def test_timm_model_ema_v3_keeps_the_temperature_set_on_it(method, one_thread):
    timm_utils = import_timm().utils
    _check_ema(
        method,
        lambda m: timm_utils.ModelEmaV3(m, decay=DECAY),
        lambda ema, m: ema.update(m),
        lambda ema: ema.module,
        first_copies=False,
    )


def test_timm_model_ema_v2_keeps_the_temperature_set_on_it(one_thread):
    timm_utils = import_timm().utils
    _check_ema(
        "kw",
        lambda m: timm_utils.ModelEmaV2(m, decay=DECAY),
        lambda ema, m: ema.update(m),
        lambda ema: ema.module,
        first_copies=False,
    )


@pytest.mark.parametrize("method", METHODS_WITH_TEMPERATURE)
def test_averaged_model_with_buffers_keeps_the_temperature_set_on_it(method, one_thread):
    _check_ema(
        method,
        lambda m: AveragedModel(m, multi_avg_fn=get_ema_multi_avg_fn(DECAY), use_buffers=True),
        lambda ema, m: ema.update_parameters(m),
        lambda ema: ema.module,
        first_copies=True,
    )


def test_timm_load_checkpoint_restores_each_copy_its_own_temperature(tmp_path, one_thread):
    """timm's checkpoint holds ``state_dict`` and ``state_dict_ema``; ``load_checkpoint`` (EMA weights by
    default) brings back the EMA's temperature, ``use_ema=False`` the live one's, and the same logits."""
    timm = import_timm()
    live = _model("kw")
    ema = timm.utils.ModelEmaV3(live, decay=DECAY)
    kwlab.set_temperature(ema.module, 0.0)
    for step, tau in enumerate((0.5, 0.25)):
        _train_step(live, tau, step)
        ema.update(live)
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 1, "state_dict": live.state_dict(), "state_dict_ema": ema.module.state_dict()}, path)
    x = torch.randn(2, 3, 16, 16)
    for use_ema, source, tau in ((True, ema.module, 0.0), (False, live, 0.25)):
        fresh = _model("kw")
        assert kwlab.get_temperature(fresh) == 1.0
        timm.models.load_checkpoint(fresh, str(path), use_ema=use_ema, strict=True)
        assert kwlab.get_temperature(fresh) == pytest.approx(tau, abs=1e-7)
        with torch.no_grad():
            assert torch.equal(fresh.eval()(x), source.eval()(x))


def test_temperature_is_state_but_not_a_buffer(one_thread):
    """The layout a buffer had: the key in state_dict (after the module's own parameters, as before), moved
    by ``.to()``, restored by a strict load, reported missing when absent; never in ``buffers()``."""
    model = _model("kw")
    keys = list(model.state_dict())
    temps = [k for k in keys if k.endswith("attention.temperature")]
    assert temps and not [n for n, _ in model.named_buffers() if n.endswith("temperature")]
    # a buffer's place: right before the attention's init_pattern buffer
    for k in temps:
        assert keys[keys.index(k) + 1] == k.replace("temperature", "init_pattern")
    kwlab.set_temperature(model, 0.25)
    state = model.state_dict()
    state[temps[0]].fill_(0.75)  # a copy: writing into it (what an EMA does) leaves the model alone
    assert kwlab.get_temperature(model) == 0.25
    other = _model("kw")
    other.load_state_dict(model.state_dict())
    assert kwlab.get_temperature(other) == 0.25
    with pytest.raises(RuntimeError, match="Missing key.*attention.temperature"):
        other.load_state_dict({k: v for k, v in model.state_dict().items() if k != temps[0]})
    with pytest.raises(RuntimeError, match="size mismatch for .*attention.temperature"):
        other.load_state_dict({**model.state_dict(), temps[0]: torch.zeros(2)})
    double = copy.deepcopy(model).to(torch.float64)
    assert double.get_submodule(temps[0][: -len(".temperature")]).temperature.dtype == torch.float64
    empty = _model("kw").to_empty(device="cpu")
    empty.load_state_dict(model.state_dict())
    assert kwlab.get_temperature(empty) == 0.25


@pytest.mark.parametrize("name", ["kw1x_layer_resnet20_8-16-32", "static_resnet20_8-16-32"])
def test_committed_checkpoints_load_with_their_temperature_and_layout(name):
    """Every committed checkpoint loads (weights_only=True, strict) into the same state_dict layout, key for
    key in the same order and value for value (the temperature included), so its logits are unchanged."""
    from kwlab.teaching import checkpoints_dir, load_checkpoint

    saved = torch.load(checkpoints_dir() / name / "model.pt", map_location="cpu", weights_only=True)
    model, _, _ = load_checkpoint(name)
    state = model.state_dict()
    assert list(state) == list(saved)
    for key, value in saved.items():
        assert torch.equal(state[key], value), key
    temps = [k for k in saved if k.endswith("attention.temperature")]
    assert bool(temps) == name.startswith("kw")
    for key in temps:  # restored into the layer, not only reported by state_dict
        assert float(model.get_submodule(key[: -len(".temperature")]).temperature) == float(saved[key])
