"""kwlab.instruments.probe: recorded statistics vs a hand-walked reference, hook hygiene, tables, save/load,
callback."""

import dataclasses
import math

import pandas as pd
import pytest
import torch
from torch import nn

from kwlab.experiments.callbacks import ProbeCallback, load_history
from kwlab.instruments import load, metrics
from kwlab.instruments.probe import Probe, capture
from kwlab.testing import MixtureConv2d, TinyDynamicNet, hook_count, reference_forward

LAYERS = ["stem", "layer1.0.conv", "layer1.1.conv"]


def make_net(signed=True, seed=0):
    torch.manual_seed(seed)
    return TinyDynamicNet(signed=signed)


def batches(k=2, b=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(b, 3, 8, 8, generator=g), torch.randint(0, 3, (b,), generator=g)) for _ in range(k)]


def test_summary_matches_reference_statistics():
    net = make_net()
    data = batches(3)
    with Probe(net, keep=4) as probe:
        for x, y in data:
            probe.record(x, y)
    with torch.no_grad():
        fulls = [reference_forward(net, x)[1] for x, _ in data]
    summary = probe.summary().set_index("layer")
    usage = probe.cell_usage()
    hist = probe.histogram()
    assert list(summary.index) == LAYERS
    for name in LAYERS:
        full = torch.cat([f[name] for f in fulls])  # (15, m, n + 1)
        alpha = full[..., :-1]  # zero cell dropped
        row = summary.loc[name]
        assert row["n_samples"] == 15
        assert row["neg_frac"] == pytest.approx(metrics.negative_fraction(alpha).item(), rel=1e-5)
        assert row["neg_mass"] == pytest.approx(metrics.negative_mass(alpha).item(), rel=1e-5)
        assert row["zero_mass"] == pytest.approx(metrics.zero_cell_mass(full).item(), rel=1e-5)
        assert row["entropy"] == pytest.approx(metrics.attention_entropy(alpha).mean().item(), rel=1e-5)
        assert row["effective_cells"] == pytest.approx(metrics.effective_cells(alpha).mean().item(), rel=1e-5)
        assert row["effective_cell_fraction"] == pytest.approx(
            metrics.effective_cells(alpha).mean().item() / alpha.shape[-1], rel=1e-5
        )
        # per batch, the kernels the layer mixed from its cells for each sample, then the mean over batches
        layer = dict(net.named_modules())[name]
        per_batch = [
            metrics.kernel_variation(layer.weight_from_alpha(f[name][..., :-1])).item() for f in fulls
        ]
        assert row["kernel_variation"] == pytest.approx(sum(per_batch) / len(per_batch), rel=1e-5)
        assert row["kernel_batches_skipped"] == 0
        div = sum(metrics.pairwise_cosine_distance(f[name][..., :-1].double()).item() for f in fulls) / len(
            fulls
        )
        assert row["diversity"] == pytest.approx(div, rel=1e-5)
        ys = torch.cat([y for _, y in data])
        means, _ = metrics.class_means(alpha.double(), ys, num_classes=3)
        assert row["class_distance"] == pytest.approx(metrics.between_class_distance(means).item(), rel=1e-5)
        assert row["temperature"] == 0.0
        assert row["num_mixtures"] == alpha.shape[1] and row["num_cells"] == alpha.shape[2]
        u = usage[usage["layer"] == name].sort_values("cell")
        assert u["mean_abs"].to_numpy() == pytest.approx(metrics.cell_mean_abs(alpha).numpy(), rel=1e-5)
        assert u["top_count"].tolist() == metrics.top_cell_counts(alpha).tolist()
        h = hist[hist["layer"] == name]
        assert h["count"].tolist() == metrics.signed_histogram(alpha).tolist()
        assert torch.allclose(probe.mean_alpha()[name], alpha.mean(0), atol=1e-6)
        assert torch.allclose(probe.kept(name), alpha[:4], atol=1e-6)
        pc = probe.per_class()
        pc = pc[(pc["layer"] == name) & (pc["label"] == int(ys[0]))].sort_values(["mixture", "cell"])
        assert pc["mean_alpha"].to_numpy() == pytest.approx(means[int(ys[0])].reshape(-1).numpy(), rel=1e-5)
    # the two body layers share one warehouse; the stem has its own bank named after it
    assert summary["bank"].tolist() == ["stem", "layer1", "layer1"]
    assert set(usage["warehouse"]) == {"stem", "layer1"}


def test_softmax_layers_without_zero_cell():
    net = make_net(signed=False)
    x, _ = batches(1)[0]
    with Probe(net) as probe:
        net(x)
    s = probe.summary()
    assert (s["neg_frac"] == 0).all() and (s["neg_mass"] == 0).all()
    assert s["zero_mass"].isna().all()
    assert (s["temperature"] == 1.0).all()
    # effective cells never exceed the number of cells
    assert (s["effective_cells"] <= s["num_cells"] + 1e-6).all() and (s["effective_cells"] >= 1).all()


def test_recording_changes_neither_outputs_nor_gradients():
    net = make_net()
    x, y = batches(1)[0]

    def run():
        net.zero_grad()
        out = net(x)
        nn.functional.cross_entropy(out, y).backward()
        return out.detach().clone(), [p.grad.clone() for p in net.parameters()]

    out0, grads0 = run()
    with Probe(net, keep=2):
        out1, grads1 = run()
    assert torch.equal(out0, out1)
    assert all(torch.equal(a, b) for a, b in zip(grads0, grads1))


class Boom(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = make_net()

    def forward(self, x):
        self.net(x)
        raise RuntimeError("boom")


def test_hooks_removed_after_normal_and_failing_runs():
    model = Boom()
    x, _ = batches(1)[0]
    assert hook_count(model) == 0
    probe = Probe(model)
    with probe:
        assert hook_count(model) == 3 * len(LAYERS)  # attention, tap and the kernel hook per layer
    assert hook_count(model) == 0
    with pytest.raises(RuntimeError, match="boom"):
        with Probe(model):
            model(x)
    assert hook_count(model) == 0
    with pytest.raises(RuntimeError, match="boom"):
        Probe(model).record(x)
    assert hook_count(model) == 0
    probe.start()
    with pytest.raises(RuntimeError, match="already started"):
        probe.start()
    probe.stop()
    probe.stop()
    assert hook_count(model) == 0


def test_every_and_layer_selection():
    net = make_net()
    data = batches(4, b=3)
    with Probe(net, layers="layer1.*", every=2) as probe:
        for x, _ in data:
            net(x)
    assert probe.layers == ["layer1.0.conv", "layer1.1.conv"]
    s = probe.summary()
    assert s["n_samples"].tolist() == [6, 6]  # calls 0 and 2 of 4
    with torch.no_grad():
        ref = torch.cat([reference_forward(net, data[i][0])[1]["layer1.0.conv"][..., :-1] for i in (0, 2)])
    assert s.loc[0, "neg_frac"] == pytest.approx(metrics.negative_fraction(ref).item(), rel=1e-6)
    assert Probe(net, layers=["stem", "layer1.1.*"]).layers == ["stem", "layer1.1.conv"]


def test_bad_input_errors():
    net = make_net()
    with pytest.raises(ValueError, match="matches no dynamic layer.*stem.*layer1.0.conv"):
        Probe(net, layers="layer9.*")
    with pytest.raises(ValueError, match="no dynamic layers"):
        Probe(nn.Sequential(nn.Conv2d(3, 4, 3)))
    with pytest.raises(ValueError, match="every"):
        Probe(net, every=0)
    with pytest.raises(ValueError, match="keep"):
        Probe(net, keep=-1)
    x, y = batches(1)[0]
    probe = Probe(net)
    probe.record(x)
    with pytest.raises(RuntimeError, match="per_class\\(\\) needs labels"):
        probe.per_class()
    with pytest.raises(RuntimeError, match="keep=N"):
        probe.samples()
    with pytest.raises(ValueError, match="batch of 5"):
        probe.record(x, y[:3])
    assert hook_count(net) == 0
    with pytest.raises(ValueError, match="1-d integer"):
        probe.set_labels(torch.rand(5))


def test_samples_table_and_record_loader():
    net = make_net()
    data = batches(3, b=4)
    probe = Probe(net, keep=6).record_loader(data, max_batches=2, progress=False)
    assert probe.summary()["n_samples"].tolist() == [8, 8, 8]
    s = probe.samples()
    with torch.no_grad():
        ref = torch.cat([reference_forward(net, x)[1]["layer1.0.conv"][..., :-1] for x, _ in data[:2]])[:6]
    part = s[s["layer"] == "layer1.0.conv"].sort_values(["sample", "mixture", "cell"])
    assert part["alpha"].to_numpy() == pytest.approx(ref.reshape(-1).numpy(), abs=1e-6)
    labels = torch.cat([y for _, y in data[:2]])[:6]
    assert part.groupby("sample")["label"].first().tolist() == labels.tolist()


@dataclasses.dataclass
class Cfg:
    arch: str = "tiny"
    budget: float = 1.0


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_save_and_load_roundtrip(tmp_path, monkeypatch, fmt):
    import kwlab.instruments.probe_store as store

    monkeypatch.setattr(store, "table_format", lambda: fmt)
    net = make_net()
    probe = Probe(net, keep=2)
    for x, y in batches(2):
        probe.record(x, y)
    probe.save(tmp_path / "p", config=Cfg())
    assert (tmp_path / "p" / f"summary.{fmt}").exists()
    res = load(tmp_path / "p")
    assert res.config == {"arch": "tiny", "budget": 1.0}
    for name in ("summary", "cell_usage", "histogram", "per_class", "samples"):
        got, want = getattr(res, name)(), getattr(probe, name)()
        pd.testing.assert_frame_equal(
            got.reset_index(drop=True), want.reset_index(drop=True), check_dtype=False, atol=1e-6
        )


class FakeTrainer:
    """Drives a callback exactly as the trainer's loop does (on_step_start -> forward/backward/step ->
    end)."""

    def __init__(self, model, run_dir):
        self.model, self.run_dir, self.step, self.epoch = model, run_dir, 0, 0

    def fit(self, callback, data, steps):
        callback.on_fit_start(self)
        refs = {}
        for step in range(steps):
            self.step, self.epoch = step, step // 4
            x, y = data[step % len(data)]
            with torch.no_grad():
                refs[step] = reference_forward(self.model, x)[1]
            callback.on_step_start(self, step)
            logits = self.model(x)
            loss = nn.functional.cross_entropy(logits, y)
            self.model.zero_grad()
            loss.backward()
            with torch.no_grad():  # plain SGD step (torch.optim's first import is slow)
                for p in self.model.parameters():
                    p -= 0.1 * p.grad
            callback.on_step_end(self, step, x, y, logits, loss.item())
        callback.on_fit_end(self)
        return refs


def test_probe_callback_history(tmp_path):
    net = make_net()
    cb = ProbeCallback(every=3)
    refs = FakeTrainer(net, tmp_path).fit(cb, batches(3), steps=8)
    h = cb.history()
    assert list(h.columns[:3]) == ["step", "epoch", "layer"]
    assert sorted(set(h["step"])) == [0, 3, 6]
    assert h[h["step"] == 6]["epoch"].unique().tolist() == [1]
    for step in (0, 3, 6):
        for name in LAYERS:
            want = metrics.negative_fraction(refs[step][name][..., :-1]).item()
            got = h[(h["step"] == step) & (h["layer"] == name)]["neg_frac"].item()
            assert got == pytest.approx(want, rel=1e-6)
    assert hook_count(net) == 0
    # saved by on_fit_end into run_dir, and through state_dict with weights_only loading
    pd.testing.assert_frame_equal(load_history(tmp_path), h, check_dtype=False)
    torch.save(cb.state_dict(), tmp_path / "cb.pt")
    cb2 = ProbeCallback(every=3)
    cb2.load_state_dict(torch.load(tmp_path / "cb.pt", weights_only=True))
    pd.testing.assert_frame_equal(cb2.history(), h)
    with pytest.raises(ValueError, match="every"):
        ProbeCallback(every=0)


def test_whole_kernel_layer_alone():
    """A bare dynamic layer (m = 1, softmax) is a model of its own: the probe names it ''."""
    torch.manual_seed(0)
    layer = MixtureConv2d(3, 4, num_cells=3)
    x = torch.randn(4, 3, 6, 6)
    with Probe(layer) as probe:
        layer(x)
    s = probe.summary()
    alpha = layer.attention.coefficients(x).detach()
    assert s["layer"].tolist() == [""] and s["num_mixtures"].item() == 1
    assert s["diversity"].item() == pytest.approx(
        metrics.pairwise_cosine_distance(alpha.double()).item(), rel=1e-5
    )
    assert not math.isnan(s["entropy"].item())


def test_kw_resnet20_statistics_match_reference(kw_resnet20):
    from kwlab.layers.base import dynamic_layers

    model = kw_resnet20
    torch.manual_seed(1)
    x, y = torch.randn(6, 3, 16, 16), torch.randint(0, 10, (6,))
    probe = Probe(model, layers=["layer2.*", "layer3.0.*"])
    probe.record(x, y)
    inputs = capture(model, x)
    layers = dict(dynamic_layers(model))
    s = probe.summary().set_index("layer")
    usage = probe.cell_usage()
    assert list(s.index) == [n for n in layers if n.startswith("layer2.") or n.startswith("layer3.0.")]
    for name in s.index:
        with torch.no_grad():
            full = layers[name].attention.coefficients(inputs[name])
        alpha = full[..., :-1]
        assert s.loc[name, "neg_frac"] == pytest.approx(metrics.negative_fraction(alpha).item(), rel=1e-5)
        assert s.loc[name, "neg_mass"] == pytest.approx(metrics.negative_mass(alpha).item(), rel=1e-5)
        assert s.loc[name, "zero_mass"] == pytest.approx(metrics.zero_cell_mass(full).item(), rel=1e-5)
        assert s.loc[name, "effective_cells"] == pytest.approx(
            metrics.effective_cells(alpha).mean().item(), rel=1e-5
        )
        assert s.loc[name, "temperature"] == pytest.approx(0.3)
        with torch.no_grad():  # the kernels assembled from the warehouse for each sample, by ops directly
            from kwlab.ops import assemble_kernel, mix_cells

            kernels = assemble_kernel(mix_cells(alpha, layers[name].warehouse.cells), layers[name].layout)
        assert s.loc[name, "kernel_variation"] == pytest.approx(
            metrics.kernel_variation(kernels).item(), rel=1e-5
        )
        assert s.loc[name, "bank"] == layers[name].bank
        u = usage[usage["layer"] == name].sort_values("cell")
        assert u["top_count"].tolist() == metrics.top_cell_counts(alpha).tolist()
    assert 0 < s["neg_frac"].min() and s["neg_frac"].max() < 1  # CAF is signed
    # layers of one warehouse index the same cells
    for _bank, part in usage.groupby("warehouse"):
        assert part.groupby("layer")["cell"].count().nunique() == 1


def test_kernel_hook_changes_no_state_in_train_mode():
    """The kernel hook reruns each layer's attention (KW's attention BatchNorm in train mode): outputs,
    BatchNorm statistics and the RNG are as without the probe, and its other hooks count one call."""
    import copy

    import kwlab

    torch.manual_seed(0)
    model = kwlab.create_model("resnet20_cifar", method="kw", preset="1x", num_classes=10).train()
    kwlab.set_temperature(model, 0.3)
    twin = copy.deepcopy(model)
    x = torch.randn(6, 3, 16, 16)
    torch.manual_seed(5)
    plain = twin(x)
    plain.square().sum().backward()  # the saved tensors of the graph are intact (no in-place write)
    after_plain = torch.rand(3)
    torch.manual_seed(5)
    with Probe(model) as probe:
        probed = model(x)
    probed.square().sum().backward()
    after_probed = torch.rand(3)
    assert torch.equal(plain, probed) and torch.equal(after_plain, after_probed)
    for (k, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(p.grad, q.grad), k
    for (k, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), k
    s = probe.summary()
    assert (s["n_samples"] == 6).all() and (s["kernel_batches_skipped"] == 0).all()
    assert s["kernel_variation"].notna().all() and (s["kernel_variation"] > 0).all()
    assert hook_count(model) == 0


def test_non_finite_kernels_are_left_out_and_counted():
    net = make_net()
    with torch.no_grad():
        net.stem.get_cells().zero_()  # the stem's mean kernel is 0: no scale, its statistic is NaN
    with Probe(net) as probe:
        for x, y in batches(3):
            probe.record(x, y)
    s = probe.summary().set_index("layer")
    assert math.isnan(s.loc["stem", "kernel_variation"]) and s.loc["stem", "kernel_batches_skipped"] == 3
    assert (s.loc[["layer1.0.conv", "layer1.1.conv"], "kernel_batches_skipped"] == 0).all()
    assert s.loc[["layer1.0.conv", "layer1.1.conv"], "kernel_variation"].notna().all()


def test_a_layer_without_a_kernel_form_records_nan_not_an_error():
    from kwlab.layers.dcd import DCDConv2d

    torch.manual_seed(0)
    layer = DCDConv2d(8, 8, 3, padding=1, groups=2, latent_dim=2, squeeze=4)  # grouped: no dense latent path
    with pytest.raises(NotImplementedError, match="groups"):
        layer.effective_kernels(torch.randn(2, 8, 6, 6))
    with Probe(layer) as probe:
        layer(torch.randn(4, 8, 6, 6))
    row = probe.summary().iloc[0]
    assert math.isnan(row["kernel_variation"]) and row["n_samples"] == 4 and hook_count(layer) == 0
