"""Run directories write ``model.safetensors`` beside the kept ``checkpoint.pt`` (issue 31, item 4): a fresh
model loads it with ``safetensors.torch.load_file`` and computes the trained model's logits exactly, at the
trained model's temperature."""

from __future__ import annotations

import pytest
import torch

import kwlab
from kwlab.experiments import RunConfig, Trainer
from kwlab.testing import tiny_run

safetensors_torch = pytest.importorskip("safetensors.torch")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("method", ["kw", "odconv"])
def test_model_safetensors_rebuilds_the_trained_model_exactly(method, tmp_path):
    config = RunConfig.from_dict(
        tiny_run(method=method, epochs=2, temperature_steps=6)
    )  # 8 steps: tau ends at 0
    trainer = Trainer(config, tmp_path / "run", progress=False)
    trainer.fit()
    path = tmp_path / "run" / "model.safetensors"
    assert path.exists() and (tmp_path / "run" / "checkpoint.pt").exists()
    state = safetensors_torch.load_file(str(path))
    trained = trainer.model.eval()
    assert state.keys() == trained.state_dict().keys()
    assert any(k.endswith("attention.temperature") for k in state)  # the temperature travels with it
    with open(path, "rb") as f:  # the header names the run
        assert config.training_hash().encode() in f.read(4096)

    fresh = kwlab.create_model(config.arch, method=method, num_classes=10, **config.model_kwargs)
    kwlab.set_temperature(fresh, 0.7)  # another temperature: the file must set it back
    fresh.load_state_dict(state, strict=True)
    fresh.eval()
    assert kwlab.get_temperature(fresh) == kwlab.get_temperature(trained)
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(fresh(x), trained(x))  # difference 0


def test_no_model_file_when_the_checkpoint_is_not_kept(tmp_path):
    config = RunConfig.from_dict(tiny_run(method="kw", checkpoint=False))
    Trainer(config, tmp_path / "run", progress=False).fit()
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    assert not (tmp_path / "run" / "model.safetensors").exists()
