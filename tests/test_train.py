"""kwlab.experiments.train: typed configs, schedules, exact resume, MACs, results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from kwlab.experiments.callbacks import Callback
from kwlab.experiments.config import ConfigError, RunConfig
from kwlab.experiments.train import Trainer, fit
from kwlab.layers.base import get_temperature
from kwlab.methods.temperature import TemperatureSchedule
from kwlab.testing import tiny_run
from kwlab.utils import count_macs

TINY = tiny_run(epochs=3)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: thread sync would dominate
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------- config
def test_unknown_field_suggests_the_closest():
    with pytest.raises(ConfigError, match="unknown config field 'epoch'.*(?i:did you mean) 'epochs'"):
        RunConfig.from_dict({"epoch": 3})


def test_types_are_checked_and_ints_accepted_for_floats():
    with pytest.raises(ConfigError, match="epochs='ten'.*expected int"):
        RunConfig.from_dict({"epochs": "ten"})
    with pytest.raises(ConfigError, match="lr=True"):
        RunConfig.from_dict({"lr": True})
    cfg = RunConfig.from_dict({"lr": 1, "budget": 2, "method": "kw"})
    assert isinstance(cfg.lr, float) and cfg.lr == 1.0 and isinstance(cfg.budget, float)


def test_impossible_combinations_and_choices():
    with pytest.raises(ConfigError, match="preset='1x': not a field of method='static'"):
        RunConfig.from_dict({"method": "static", "preset": "1x"})
    with pytest.raises(ConfigError, match="optimizer='adam'.*(?i:did you mean) 'adamw'"):
        RunConfig.from_dict({"optimizer": "adam"})
    with pytest.raises(ConfigError, match="preset='3x'"):
        RunConfig.from_dict({"method": "kw", "preset": "3x"})
    with pytest.raises(ConfigError, match="warmup_epochs"):
        RunConfig.from_dict({"epochs": 2, "warmup_epochs": 5})


def test_recipes_fill_fields_and_explicit_values_win():
    cfg = RunConfig.from_recipe("cifar", epochs=3)
    assert (cfg.lr, cfg.batch_size, cfg.weight_decay, cfg.optimizer, cfg.epochs) == (0.1, 128, 5e-4, "sgd", 3)
    r = RunConfig.from_recipe("imagenet_resnet", arch="resnet18", method="kw", preset="1x")
    assert (
        r.optimizer,
        r.lr,
        r.batch_size,
        r.weight_decay,
        r.warmup_epochs,
        r.label_smoothing,
        r.epochs,
    ) == ("adamw", 4e-3, 4096, 0.05, 20, 0.1, 300)
    m = RunConfig.from_recipe("imagenet_mobilenetv2", arch="mobilenetv2_100")
    assert (m.optimizer, m.lr, m.weight_decay, m.temperature_epochs, m.epochs) == ("sgd", 0.05, 4e-5, 15, 150)
    with pytest.raises(ConfigError, match="recipe='cifr'.*(?i:did you mean) 'cifar"):
        RunConfig.from_dict({"recipe": "cifr"})


def test_temperature_span_rule():
    assert RunConfig(method="kw", epochs=300).resolved_temperature() == (1.0, 0.0, 20.0)  # official
    assert RunConfig(method="kw", epochs=8).resolved_temperature() == (1.0, 0.0, 2.0)  # a quarter of the run
    assert RunConfig(method="kw", epochs=8, temperature_epochs=5).resolved_temperature() == (1.0, 0.0, 5.0)
    assert RunConfig(method="kw", arch="mobilenetv2_100", epochs=200).resolved_temperature()[2] == 15.0
    assert RunConfig(method="static").resolved_temperature() is None


# ------------------------------------------------------------------------------------------- loop
class _Recorder(Callback):
    def __init__(self, stop_at: int | None = None) -> None:
        self.temps: list[float] = []
        self.lrs: list[float] = []
        self.stop_at = stop_at

    def on_step_start(self, trainer, step):
        if self.stop_at is not None and step == self.stop_at:
            raise KeyboardInterrupt("simulated kill")
        self.temps.append(get_temperature(trainer.model))
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])


def test_lr_and_temperature_follow_their_formulas():
    cfg = RunConfig.from_dict(
        {
            **TINY,
            "method": "kw",
            "preset": "1x",
            "warmup_epochs": 1,
            "min_lr": 0.01,
            "temperature_epochs": 2,
            "epochs": 3,
        }
    )
    rec = _Recorder()
    trainer = Trainer(cfg, None, callbacks=[rec], progress=False)
    trainer.fit()
    ipe = trainer.iters_per_epoch  # 64 / 16 = 4
    assert ipe == 4 and len(rec.lrs) == 12
    total, warm = 12, 4
    for step, lr in enumerate(rec.lrs):
        if step < warm:
            ref = 0.05 * (step + 1) / warm
        else:
            ref = 0.01 + (0.05 - 0.01) * 0.5 * (1 + math.cos(math.pi * (step - warm) / (total - warm)))
        assert lr == pytest.approx(ref, rel=1e-9)
    for step, tau in enumerate(rec.temps):  # official: tau = max(0, (T - (t + 1)) / T), T = 8 iterations
        assert tau == pytest.approx(max(0.0, (8 - (step + 1)) / 8), abs=1e-6)
    assert rec.temps == pytest.approx([TemperatureSchedule(4, 2).at_step(s) for s in range(12)], abs=1e-6)


def test_resume_is_exact(tmp_path):
    cfg = RunConfig.from_dict({**TINY, "method": "kw", "preset": "1x", "probe_every": 3, "probe_samples": 16})
    full = fit(cfg, tmp_path / "a", progress=False)
    with pytest.raises(KeyboardInterrupt):
        Trainer(
            cfg, tmp_path / "b", callbacks=[_Recorder(stop_at=9)], progress=False
        ).fit()  # dies in epoch 3
    assert not (tmp_path / "b" / "results.json").exists()
    resumed_trainer = Trainer(cfg, tmp_path / "b", progress=False)
    assert resumed_trainer.resumed_from == 2
    resumed = resumed_trainer.fit()
    for key in (
        "final_acc",
        "best_acc",
        "final_loss",
        "final_train_loss",
        "params",
        "macs",
        "probe_neg_frac",
    ):
        assert resumed[key] == full[key], key
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    hist = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    hist_b = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [h["test_loss"] for h in hist] == [h["test_loss"] for h in hist_b]
    # the clean train accuracy's history survives the resume, every epoch of it
    assert [h["train_acc_clean"] for h in hist] == [h["train_acc_clean"] for h in hist_b]
    assert all(isinstance(h["train_acc_clean"], float) for h in hist_b) and len(hist_b) == 3
    assert resumed["final_train_acc_clean"] == full["final_train_acc_clean"] == hist[-1]["train_acc_clean"]
    import pandas as pd

    from kwlab.experiments.callbacks import load_history

    pd.testing.assert_frame_equal(load_history(tmp_path / "a"), load_history(tmp_path / "b"))
    # finished runs are not trained again
    assert fit(cfg, tmp_path / "a", progress=False) == json.loads(
        (tmp_path / "a" / "results.json").read_text()
    )


def test_run_dir_holds_config_with_git_revision(tmp_path):
    cfg = RunConfig.from_dict({**TINY, "epochs": 1})
    results = fit(cfg, tmp_path / "r", progress=False)
    info = json.loads((tmp_path / "r" / "config.json").read_text())
    assert info["config"] == cfg.to_dict()
    assert isinstance(info["git_revision"], str) and info["git_revision"]
    assert RunConfig.from_dict(info["config"]) == cfg
    model = Trainer(cfg, None, progress=False).model
    assert results["params"] == sum(p.numel() for p in model.parameters())
    assert results["macs"] == count_macs(model, (1, 3, 8, 8))


def test_count_macs_matches_hand_count():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    assert count_macs(model, (1, 3, 8, 8)) == 8 * 8 * 4 * 3 * 9 + 4 * 8 * 8 * 5


def test_static_cnn_learns_synthetic_data(one_thread):
    cfg = RunConfig.from_dict(
        {
            **TINY,
            "model_kwargs": {"widths": [8, 16, 16]},
            "image_size": 12,
            "train_samples": 600,
            "test_samples": 200,
            "batch_size": 32,
            "epochs": 6,
            "lr": 0.1,
        }
    )
    results = fit(cfg, None, progress=False)
    # What learning guarantees, not what one CPU happened to reach: accuracy on 200 test images lies more
    # than 5 binomial standard deviations above chance (0.1 + 5 * sqrt(0.1 * 0.9 / 200) = 0.21; a model
    # at chance exceeds it with probability < 1e-6), and the training loss falls below ln(10), the loss
    # of a uniform prediction. The measured values on two CPUs were 0.26-0.30.
    chance = 0.1
    assert results["best_acc"] > chance + 5 * math.sqrt(chance * (1 - chance) / 200)
    assert results["final_train_loss"] < math.log(10) - 0.2


# ------------------------------------------------------------------------------ clean train accuracy
def test_train_eval_samples_is_checked_and_resolved():
    from kwlab.experiments.setup import TRAIN_EVAL_SEED, train_eval_indices

    for bad in (-1, "many", True, 2.5):
        with pytest.raises(ConfigError, match="train_eval_samples"):
            RunConfig.from_dict({"train_eval_samples": bad})
    with pytest.raises(ConfigError, match="train_eval_samples"):
        RunConfig(train_eval_samples=-3).validate()
    assert RunConfig.from_dict({"train_eval_samples": 3.0}).train_eval_samples == 3
    # default: min(train set, max(test set, 2000)); 0 = off; a cap above the train set takes all of it
    assert len(train_eval_indices(50_000, 10_000, None)) == 10_000
    assert len(train_eval_indices(5_000, 1_000, None)) == 2_000
    assert len(train_eval_indices(64, 32, None)) == 64
    assert len(train_eval_indices(64, 32, 10**6)) == 64
    assert train_eval_indices(64, 32, 0) is None
    # a fixed subset from a private generator: the same every call, sorted, distinct, and the global RNG
    # untouched (it is not drawn from the run's seed)
    before = torch.get_rng_state()
    a = train_eval_indices(50_000, 10_000, 500)
    assert torch.equal(before, torch.get_rng_state())
    torch.manual_seed(123)
    assert torch.equal(a, train_eval_indices(50_000, 10_000, 500))
    assert torch.equal(a, a.sort().values) and len(a.unique()) == 500 and int(a.max()) < 50_000
    assert torch.equal(
        a,
        torch.randperm(50_000, generator=torch.Generator().manual_seed(TRAIN_EVAL_SEED))[:500].sort().values,
    )


def test_new_fields_keep_the_hashes_of_committed_results():
    """train_eval_samples at its default (None) leaves every committed training hash unchanged: the rows of
    data/results/*/results.csv that store a config_hash and data/checkpoints/*/run.json."""
    import pandas as pd

    from kwlab.experiments.reproduce import recorded_config

    root = Path(__file__).parents[1] / "data"
    checked = 0
    for table in sorted(root.glob("results/*/results.csv")):
        for _, row in pd.read_csv(table).iterrows():
            config = recorded_config(row)
            stored = row.get("config_hash")
            if not isinstance(stored, str):  # a table written before results stored their hash
                continue
            assert config.training_hash() == stored, (table, row["run_id"])
            assert config.replace(train_eval_samples=100).training_hash() != config.training_hash()
            # results made before the field existed hold it at its default, and their hashes are unchanged
            checked += config.train_eval_samples is None
    for record in sorted(root.glob("checkpoints/*/run.json")):
        stored = json.loads(record.read_text())
        if "config_hash" in stored:
            assert RunConfig.from_dict(stored["config"]).training_hash() == stored["config_hash"], record
            checked += 1
    assert checked >= 40
    assert "train_eval_samples" not in RunConfig().training_dict()
    assert RunConfig().training_hash() == "b410ee1fb73d3a26"


class _Snapshots(Callback):
    """The model's weights and temperature at the end of every epoch (after the epoch's measurements)."""

    def __init__(self) -> None:
        self.states: list[tuple[dict[str, torch.Tensor], float | None]] = []

    def on_epoch_end(self, trainer, epoch, metrics):
        state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        self.states.append((state, metrics["temperature"]))


def _clean_accuracy_by_hand(cfg: RunConfig, state: dict, tau: float | None, samples: int) -> float:
    """A fresh model with ``state``, in eval mode at temperature ``tau``, over the first ``samples`` images of
    the fixed permutation, normalised by hand (no loader), in batches of 7."""
    from kwlab.experiments.setup import TRAIN_EVAL_SEED, build_model, load_config_data
    from kwlab.layers.base import set_temperature

    data = load_config_data(cfg)
    model = build_model(cfg, data.num_classes)
    model.load_state_dict(state)
    model.eval()
    if tau is not None:
        set_temperature(model, tau)
    n = len(data.train_labels)
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(TRAIN_EVAL_SEED))[:samples]
    x = data.train_images[idx].permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(data.mean).view(1, 3, 1, 1)) / torch.tensor(data.std).view(1, 3, 1, 1)
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + 7]).argmax(1) for i in range(0, samples, 7)])
    return float((pred == data.train_labels[idx]).float().mean())


def test_clean_train_accuracy_changes_no_training_and_equals_a_hand_computation(tmp_path):
    # KW (BatchNorm, a temperature still > 0 at the end), augmentation on, 40 of the 128 training images
    cfg = RunConfig.from_dict(
        {
            **TINY,
            "method": "kw",
            "preset": "1x",
            "temperature_epochs": 4,
            "train_eval_samples": 40,
            "train_samples": 128,
            "optimizer": "adamw",
            "lr": 0.01,
        }
    )
    snapshots = _Snapshots()
    on = Trainer(cfg, tmp_path / "on", callbacks=[snapshots], progress=False).fit()
    off = fit(cfg.replace(train_eval_samples=0), tmp_path / "off", progress=False)
    a = torch.load(tmp_path / "on" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "off" / "checkpoint.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:  # weights and BatchNorm running statistics, bit for bit
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    for key in ("final_acc", "final_loss", "final_train_loss", "final_train_acc", "min_acc_tau0_recal"):
        assert on[key] == off[key], key
    hist_on = [json.loads(line) for line in (tmp_path / "on" / "metrics.jsonl").read_text().splitlines()]
    hist_off = [json.loads(line) for line in (tmp_path / "off" / "metrics.jsonl").read_text().splitlines()]
    assert [h["train_acc_clean"] for h in hist_off] == [None] * 3 and off["final_train_acc_clean"] is None
    assert on["final_train_acc_clean"] == hist_on[-1]["train_acc_clean"]
    assert 0 < hist_on[-1]["temperature"] < 1  # measured at the evaluation temperature, not at tau = 0
    # every epoch's value equals the hand computation on that epoch's weights (the values move: 0.125, 0.25,
    # 0.1 when written)
    by_hand = [_clean_accuracy_by_hand(cfg, state, tau, 40) for state, tau in snapshots.states]
    assert [h["train_acc_clean"] for h in hist_on] == pytest.approx(by_hand, abs=1e-6)
    assert len(set(by_hand)) > 1
    final = torch.load(tmp_path / "on" / "checkpoint.pt", weights_only=True)["model"]
    assert on["final_train_acc_clean"] == pytest.approx(
        _clean_accuracy_by_hand(cfg, final, hist_on[-1]["temperature"], 40), abs=1e-6
    )
    resolved = json.loads((tmp_path / "on" / "config.json").read_text())["resolved"]
    assert resolved["train_eval_samples"] == 40


def test_clean_train_accuracy_defaults_on_and_restores_train_mode(tmp_path):
    cfg = RunConfig.from_dict({**TINY, "epochs": 1})
    trainer = Trainer(cfg, None, progress=False)
    assert trainer.train_eval_loader.num_samples == 64  # min(64 train images, max(32, 2000))
    trainer.model.train()
    from kwlab.experiments.accuracies import clean_train_accuracy

    value = clean_train_accuracy(trainer)["train_acc_clean"]
    assert trainer.model.training and 0 <= value <= 1
    trainer.model.eval()
    assert clean_train_accuracy(trainer)["train_acc_clean"] == value and not trainer.model.training


# --------------------------------------------------------------- test_acc_tau0_recal over the anneal
class _RecalByHand(Callback):
    """At each epoch's end: the model at tau = 0 with every BatchNorm's statistics measured again (reset,
    cumulative average over the first 20 batches of the epoch's training loader, train mode, no gradient),
    then its test accuracy -- written out here, not through kwlab.experiments.accuracies."""

    def __init__(self) -> None:
        self.values: list[float | None] = []

    def on_epoch_end(self, trainer, epoch, metrics):
        import copy

        from kwlab.layers.base import set_temperature

        if metrics["temperature"] in (None, 0.0):
            self.values.append(None)
            return
        net = copy.deepcopy(trainer.model)
        set_temperature(net, 0.0)
        norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        net.train()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            for i, (x, _) in enumerate(trainer.train_loader):
                if i == 20:
                    break
                net(x)
            net.eval()
            correct = total = 0
            for x, y in trainer.test_loader:
                correct += int((net(x).argmax(1) == y).sum())
                total += len(y)
        self.values.append(correct / total)


def test_tau0_recal_accuracy_is_recorded_every_epoch_of_the_anneal(tmp_path):
    cfg = RunConfig.from_dict(
        {**TINY, "method": "kw", "preset": "1x", "epochs": 4, "temperature_epochs": 3.5, "train_samples": 128}
    )
    by_hand = _RecalByHand()
    results = Trainer(cfg, tmp_path / "r", callbacks=[by_hand], progress=False).fit()
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    taus = [r["temperature"] for r in rows]
    assert taus[:3] == sorted(taus[:3], reverse=True) and taus[2] > 0 and taus[3] == 0.0
    curve = [r["test_acc_tau0_recal"] for r in rows]
    assert all(isinstance(v, float) for v in curve)  # a point for every epoch, against its tau
    assert curve[:3] == pytest.approx(by_hand.values[:3], abs=1e-9)
    assert curve[3] == rows[3]["test_acc"]  # after the anneal the net is at tau = 0
    assert results["min_acc_tau0_recal"] == min(curve)
