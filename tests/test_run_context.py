"""The run directory's records read a typed RunContext, never the Trainer."""

from __future__ import annotations

import dataclasses
import json

import pytest

from kwlab.experiments import RunConfig, Trainer
from kwlab.experiments.rundir import RunContext, config_record, write_config_record
from kwlab.testing import tiny_run


def test_config_json_is_the_record_of_the_trainers_context(tmp_path):
    trainer = Trainer(RunConfig.from_dict(tiny_run(method="kw")), tmp_path / "r", progress=False)
    context = trainer.run_context()
    assert isinstance(context, RunContext)
    with pytest.raises(dataclasses.FrozenInstanceError):
        context.total_steps = 0  # type: ignore[misc]
    stored = json.loads((tmp_path / "r" / "config.json").read_text())
    record = json.loads(json.dumps(config_record(context), default=str))
    assert stored["config"] == record["config"] and stored["resolved"] == record["resolved"]
    assert stored["resolved"]["num_classes"] == trainer.data.num_classes
    assert stored["resolved"]["iters_per_epoch"] == trainer.iters_per_epoch


def test_a_context_without_a_run_dir_writes_nothing():
    trainer = Trainer(RunConfig.from_dict(tiny_run()), progress=False)
    with pytest.raises(ValueError, match="no run_dir"):
        write_config_record(trainer.run_context())
