"""kwlab in one's own training loop (issue 31, item 3): the temperature scheduler, the probe outside kwlab's
Trainer, the timm and Lightning helpers, and the ``kwlab`` logger."""

from __future__ import annotations

import io
import logging

import pytest
import torch
from torch import nn

import kwlab
from kwlab.experiments.callbacks import ProbeCallback
from kwlab.methods.temperature import TemperatureSchedule


def _model(method: str = "kw") -> nn.Module:
    torch.manual_seed(0)
    return kwlab.create_model("resnet20_cifar", method=method, num_classes=10, widths=[4, 8, 8])


def _official(step: int, total: int, start: float = 1.0, end: float = 0.0) -> float:
    """The official KW formula (engine.get_temperature), written out: t = step + 1."""
    return end + max(0.0, (start - end) * (total - (step + 1)) / max(1, total))


class _Recorder:
    """The anneal position every forward pass of ``model`` ran at."""

    def __init__(self, model: nn.Module) -> None:
        self.seen: list[float] = []
        model.register_forward_pre_hook(lambda m, a: self.seen.append(kwlab.get_temperature(m)))


def _loop(model, steps, after_step):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(steps):
        loss = model(torch.randn(2, 3, 8, 8)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        after_step()


# ---------------------------------------------------------------------------------------- the scheduler
def test_scheduler_gives_each_step_the_official_position(one_thread):
    model = _model()
    rec = _Recorder(model)
    sched = kwlab.TemperatureScheduler(model, total_steps=5)
    _loop(model, 7, sched.step)
    want = [_official(i, 5) for i in range(7)]
    assert rec.seen == pytest.approx(want, abs=1e-7)
    assert want[0] == pytest.approx(0.8) and want[4:] == [0.0, 0.0, 0.0]
    assert want == [TemperatureSchedule(1, steps=5).at_step(i) for i in range(7)]  # kwlab's trainer's


def test_scheduler_maps_the_position_onto_each_method(one_thread):
    model = _model("dyconv")
    kwlab.TemperatureScheduler(model, total_steps=4, start=0.5, end=0.25)
    t = next(m for m in model.modules() if isinstance(m, kwlab.DynamicAttention)).temperature
    assert float(t) == pytest.approx(1 + 29 * _official(0, 4, 0.5, 0.25))


def test_scheduler_resumes_exactly(tmp_path, one_thread):
    straight = _model()
    rec_a = _Recorder(straight)
    sched = kwlab.TemperatureScheduler(straight, total_steps=6)
    _loop(straight, 8, sched.step)

    first = _model()
    sched = kwlab.TemperatureScheduler(first, total_steps=6)
    _loop(first, 3, sched.step)
    torch.save({"model": first.state_dict(), "temperature": sched.state_dict()}, tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    resumed = _model()
    rec_b = _Recorder(resumed)
    again = kwlab.TemperatureScheduler(resumed, total_steps=99)  # the state's schedule wins
    again.load_state_dict(state["temperature"])
    assert kwlab.get_temperature(resumed) == pytest.approx(_official(3, 6))
    _loop(resumed, 5, again.step)
    assert rec_b.seen == pytest.approx(rec_a.seen[3:], abs=1e-7)
    assert again.state_dict() == {"last_step": 8, "total_steps": 6, "start": 1.0, "end": 0.0}


def test_scheduler_by_epochs_equals_the_schedule():
    model = _model()
    sched = kwlab.TemperatureScheduler(model, epochs=2, iters_per_epoch=3)
    assert sched.total_steps == 6 and sched.tau == TemperatureSchedule(3, 2).at_step(0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(total_steps="10"), "total_steps must be a whole number"),
        (dict(total_steps=10, start=2), "start must be in"),
        (dict(total_steps=10, end=float("nan")), "end must be in"),
        (dict(), "give the anneal span"),
        (dict(total_steps=10, epochs=2, iters_per_epoch=3), "not both"),
        (dict(total_steps=10, last_step=-2), "last_step must be"),
    ],
)
def test_scheduler_refuses_bad_arguments_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kwlab.TemperatureScheduler(_model(), **kwargs)


def test_schedule_needs_iters_per_epoch_only_for_epochs():
    assert TemperatureSchedule(steps=4).at_step(1) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="iters_per_epoch is needed"):
        TemperatureSchedule(epochs=2)
    with pytest.raises(ValueError, match="needs iters_per_epoch"):
        TemperatureSchedule(steps=4)(0, 1)


# ------------------------------------------------------------------------------------ the probe, plainly
def test_probe_callback_in_a_plain_loop_equals_a_probe_of_the_same_steps(one_thread):
    model = _model()
    cb = ProbeCallback(every=2)
    batches = [torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(5)]
    reference = {}
    for step, x in enumerate(batches):
        cb.on_step_start(model, step)
        with torch.no_grad():
            model(x)
        cb.on_step_end(model, step)
        if step % 2 == 0:
            with kwlab.Probe(model) as probe, torch.no_grad():
                model(x)
            reference[step] = probe.summary()
    cb.on_fit_end(model)
    history = cb.history()
    assert sorted(set(history["step"])) == [0, 2, 4] and history["epoch"].isna().all()
    for step, want in reference.items():
        got = history[history["step"] == step].reset_index(drop=True)
        assert list(got["layer"]) == list(want["layer"])
        assert got["neg_frac"].to_numpy() == pytest.approx(want["neg_frac"].to_numpy())
    with pytest.raises(ValueError, match="trainer must be the model"):
        ProbeCallback(every=1).on_step_start(object(), 0)


# ------------------------------------------------------------------------------------------------ timm
def test_timm_temperature_in_timms_update_protocol(one_thread):
    from kwlab._compat import import_timm
    from kwlab.integrations.timm import TimmTemperature

    timm = import_timm()
    model = _model()
    ema = timm.utils.ModelEmaV3(model, decay=0.9)
    rec = _Recorder(model)
    temp = TimmTemperature(model, total_steps=4, model_ema=ema, probe_every=2)
    assert kwlab.get_temperature(ema.module) == 0.0
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    num_updates = 0
    for _ in range(6):  # timm's train_one_epoch, reduced to what the helper sees
        temp.before_update(num_updates)
        loss = model(torch.randn(2, 3, 8, 8)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(model, step=num_updates)
        num_updates += 1
        temp.step_update(num_updates=num_updates)
    assert rec.seen == pytest.approx([_official(i, 4) for i in range(6)], abs=1e-7)
    assert kwlab.get_temperature(ema.module) == 0.0
    assert sorted(set(temp.probe.history()["step"])) == [0, 2, 4]
    resumed = TimmTemperature(_model(), total_steps=4, num_updates=3)  # timm resumes by num_updates
    assert kwlab.get_temperature(resumed.model) == pytest.approx(_official(3, 4))


# ------------------------------------------------------------------------------------------- Lightning
def _lightning_pytorch():
    """``lightning.pytorch`` through kwlab's torchvision guard (Lightning imports torchvision, and
    ``pytest.importorskip`` would bypass the guard); skip when Lightning is not installed."""
    from kwlab._compat import import_module

    try:
        return import_module("lightning.pytorch")
    except ImportError:
        pytest.skip("lightning is not installed")


def test_lightning_callback_module_imports_without_lightning():
    import importlib

    from kwlab._compat import import_module

    module = importlib.import_module("kwlab.integrations.lightning")
    try:
        import_module("lightning")
    except ImportError:
        with pytest.raises(ImportError, match="pip install lightning"):
            module.KWLabCallback  # noqa: B018
    else:
        assert issubclass(module.KWLabCallback, import_module("lightning.pytorch").Callback)


def test_lightning_callback_anneals_per_optimizer_step(tmp_path, one_thread):
    pl = _lightning_pytorch()
    from kwlab.integrations.lightning import KWLabCallback

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _model()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            (x,) = batch
            return self(x).square().mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    module = Module()
    rec = _Recorder(module.net)
    data = torch.utils.data.TensorDataset(torch.randn(12, 3, 8, 8))
    cb = KWLabCallback(total_steps=4, probe_every=2)
    trainer = pl.Trainer(
        max_steps=6, callbacks=[cb], logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=2))
    assert rec.seen == pytest.approx([_official(i, 4) for i in range(6)], abs=1e-7)
    assert sorted(set(cb.probe.history()["step"])) == [0, 2, 4]


# --------------------------------------------------------------------------------------------- logging
def test_trainer_notes_are_kwlab_log_records_and_still_reach_stderr(tmp_path, capsys):
    from kwlab.experiments import RunConfig, fit
    from kwlab.logs import StderrHandler
    from kwlab.testing import tiny_run

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("kwlab")
    logger.addHandler(handler)
    try:
        fit(
            RunConfig.from_dict({**tiny_run(), "method": "kw", "preset": "1x"}), tmp_path / "r", progress=True
        )
    finally:
        logger.removeHandler(handler)
    warnings = [r for r in records if r.levelno == logging.WARNING and r.name == "kwlab.train"]
    assert len(warnings) == 1 and "temperature anneal spans" in warnings[0].getMessage()
    assert "kwlab: warning: the temperature anneal spans" in capsys.readouterr().err
    assert any(isinstance(h, StderrHandler) for h in logger.handlers)
    stream = io.StringIO()
    h = StderrHandler()
    import sys

    old, sys.stderr = sys.stderr, stream
    try:
        h.emit(logging.LogRecord("kwlab.x", logging.INFO, "", 0, "hello %s", ("you",), None))
    finally:
        sys.stderr = old
    assert stream.getvalue() == "kwlab: hello you\n"


def test_use_root_logging_hands_kwlab_records_to_the_root_logger(capsys):
    from kwlab.logs import StderrHandler, get_logger, install_stderr_handler, use_root_logging

    records: list[logging.LogRecord] = []
    root_handler = logging.Handler()
    root_handler.emit = records.append
    root = logging.getLogger()
    use_root_logging()
    root.addHandler(root_handler)
    try:
        get_logger("train").warning("short anneal")
        assert [r.getMessage() for r in records] == ["short anneal"]
        assert "kwlab:" not in capsys.readouterr().err  # not written twice
    finally:
        root.removeHandler(root_handler)
        install_stderr_handler()
    assert sum(isinstance(h, StderrHandler) for h in logging.getLogger("kwlab").handlers) == 1
    get_logger("train").warning("again")
    assert capsys.readouterr().err == "kwlab: warning: again\n"
