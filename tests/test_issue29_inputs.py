"""Issue 29, items 3 and 4 (and their cases of item 5): sweeps that always finish, and inputs checked by type
before any work. Each test is a case of the issue, named as a user meets it; each failed on the code before
the fix."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from torch import nn

import kwlab
from kwlab.experiments.config import ConfigError, RunConfig
from kwlab.experiments.executors import make_executor
from kwlab.experiments.reproduce import recorded_config, reproduce
from kwlab.experiments.results import collect_results
from kwlab.experiments.rundir import hold_run_dir
from kwlab.experiments.spec import SweepSpec, load_sweep, parse_overrides
from kwlab.experiments.sweep import run_sweep
from kwlab.experiments.train import fit
from kwlab.methods import OptionError
from kwlab.testing import tiny_run
from kwlab.utils import read_table

TINY = tiny_run(train_samples=32, test_samples=16, epochs=1)
QUIET = dict(progress=False, log=lambda *_: None)

pytestmark = pytest.mark.usefixtures("one_thread")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


def _state(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _spec(**changes) -> SweepSpec:
    d = {"name": "i29", "seeds": 1, "base": dict(TINY), "runs": [{"method": "static"}]}
    d.update(changes)
    return SweepSpec.from_dict(d)


# ======================================================================== 3. sweeps that always finish
def test_a_sweep_mixing_amp_false_and_bf16_and_channels_last_true_and_always_finishes(tmp_path):
    spec = _spec(
        runs=[{"amp": False, "channels_last": True}, {"amp": "bf16", "channels_last": "always"}],
    )
    df = run_sweep(spec, tmp_path / "s", **QUIET)  # ArrowInvalid after each run before
    assert len(df) == 2
    table = read_table(tmp_path / "s" / "results")  # parquet where pyarrow is installed, else csv
    assert sorted(map(str, table["amp"])) == ["False", "bf16"]
    assert sorted(map(str, table["channels_last"])) == ["True", "always"]
    # every row reads back as the config it was (CSV and Parquet alike)
    for source in (pd.read_csv(tmp_path / "s" / "results.csv"), table):
        configs = {recorded_config(row).training_hash() for _, row in source.iterrows()}
        assert configs == set(df["config_hash"])


def test_reproduce_reads_amp_false_back_as_the_boolean_it_was(tmp_path):
    row = pd.Series({**{k: v for k, v in TINY.items() if k != "model_kwargs"}, "amp": "False"})
    row["model_kwargs"] = json.dumps(TINY["model_kwargs"])
    row["channels_last"] = "always"
    config = recorded_config(row)  # "amp='False' is not allowed ... Did you mean 'False'?" before
    assert config.amp is False and config.channels_last == "always"
    row["amp"], row["channels_last"] = "True", "False"
    assert recorded_config(row).amp is True and recorded_config(row).channels_last is False


def test_amp_given_as_the_string_false_is_refused_with_a_useful_message():
    with pytest.raises(ConfigError, match="amp='False' is a string.*unquoted"):
        RunConfig.from_dict({**TINY, "amp": "False"})


def test_reproduce_of_an_fp32_row_of_a_mixed_amp_sweep_trains_it_again(tmp_path):
    spec = _spec(runs=[{"amp": False}, {"amp": "bf16"}])
    df = run_sweep(spec, tmp_path / "s", **QUIET)
    fp32 = df[df["amp"].astype(str) == "False"]["run_id"].iloc[0]
    table = reproduce(tmp_path / "s", fp32, tmp_path / "again", progress=False, log=lambda *_: None)
    assert (table["difference"] == 0).all()


def test_reproduce_out_at_the_recorded_runs_own_directory_is_refused(tmp_path):
    df = run_sweep(_spec(), tmp_path / "s", **QUIET)
    run_id = df["run_id"].iloc[0]
    with pytest.raises(ConfigError, match="recorded run's own directory"):
        reproduce(tmp_path / "s", run_id, tmp_path / "s" / "runs" / run_id, **QUIET)


CORRUPTIONS = {
    "results.json is {}": ("results.json", "{}"),
    "results.json is []": ("results.json", "[]"),
    "results.json is truncated": ("results.json", '{"final_acc": 0.5, "config_h'),
    "config.json is truncated": ("config.json", '{"config": {"arch": "res'),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_a_corrupted_run_record_is_named_and_retrained_never_counted(tmp_path, case):
    name, text = CORRUPTIONS[case]
    out = tmp_path / "s"
    df = run_sweep(_spec(), out, **QUIET)
    run_dir = out / "runs" / df["run_id"].iloc[0]
    good = json.loads((run_dir / "results.json").read_text())
    (run_dir / name).write_text(text)
    with pytest.warns(UserWarning, match=str(run_dir / name).replace("\\", "\\\\")):
        assert len(collect_results(out, write=False)) == 0  # not counted as a finished seed
    lines: list[str] = []
    again = run_sweep(_spec(), out, progress=False, log=lines.append)  # a JSONDecodeError before
    assert any(str(run_dir / name) in line and "trained again" in line for line in lines), lines
    assert len(again) == 1 and (run_dir / f"{name}.corrupt").exists()
    assert json.loads((run_dir / "results.json").read_text())["final_acc"] == good["final_acc"]


def test_fit_refuses_an_empty_results_json_naming_it(tmp_path):
    config = RunConfig.from_dict(TINY)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"results\.json is not a finished run's record.*delete it"):
        fit(config, tmp_path / "run", progress=False)


def test_a_run_directory_written_by_another_live_process_is_refused(tmp_path):
    config = RunConfig.from_dict(TINY)
    with hold_run_dir(tmp_path / "run"):  # as a live torchrun rank of a killed sweep would
        with pytest.raises(ConfigError, match="being written by another live process"):
            fit(config, tmp_path / "run", progress=False)
    assert fit(config, tmp_path / "run", progress=False)["epochs_done"] == 1  # free again


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_sigkill_of_a_torchrun_sweep_takes_torchrun_with_it(tmp_path):
    """The torchrun executor's child (here a stand-in for torchrun that records its pid and sleeps) dies when
    the sweep process is killed outright."""
    pid_file = tmp_path / "torchrun.pid"
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from kwlab.experiments.config import RunConfig
        from kwlab.experiments.executors import Torchrun

        class Standin(Torchrun):
            def command(self, config_file, run_dir):
                code = "import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
                code += "time.sleep(120)"
                return [sys.executable, "-c", code]

        config = RunConfig.from_dict({TINY!r})
        Standin().run([(config, Path({str(tmp_path / "run")!r}))], lambda *a: None, log=lambda *a: None)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(kwlab.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    sweep = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.time() + 120
        while not (pid_file.exists() and pid_file.read_text()) and time.time() < deadline:
            assert sweep.poll() is None, "the sweep process ended early"
            time.sleep(0.1)
        child = int(pid_file.read_text())
        sweep.send_signal(signal.SIGKILL)
        sweep.wait()
        deadline = time.time() + 20
        while _alive(child) and time.time() < deadline:
            time.sleep(0.1)
        alive = _alive(child)
        if alive:
            os.kill(child, signal.SIGKILL)
        assert not alive, "torchrun outlived the sweep that started it"
    finally:
        if sweep.poll() is None:
            sweep.kill()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


# ======================================================================== 4. inputs checked by type
STRING_BOOLEANS = [
    ("kw", {"classifier": "false"}),
    ("kw", {"zero_cell": "no"}),
    ("kw", {"spatial_partition": "False"}),
    ("kw", {"squeeze_excitation": "0"}),
    ("fdconv", {"near_identity": "no"}),
    ("dcd", {"classifier": "false"}),
]


@pytest.mark.parametrize(("method", "options"), STRING_BOOLEANS, ids=lambda v: str(v))
def test_convert_refuses_a_boolean_given_as_a_string_and_leaves_the_model_as_it_was(method, options):
    net = _net()
    before = _state(net)
    name = next(iter(options))
    with pytest.raises(OptionError, match=rf"{name}=.*type str.*True or False"):
        kwlab.convert(net, method, max_param_ratio=None, **options) if method == "kw" else kwlab.convert(
            net, method, **options
        )
    assert all(isinstance(m, (nn.Conv2d, nn.Linear)) for m in net if list(m.parameters()))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


BAD_OPTIONS = [
    ("kw", "nonlocal_basis_ratio", math.nan, r"\(0, 1\]"),
    ("kw", "nonlocal_basis_ratio", 0, r"\(0, 1\]"),
    ("kw", "warehouse_order", "042", "list of warehouse keys"),
    ("kw", "budget", "1", "finite number > 0"),
    ("fdconv", "kernel_num", 0, "integer >= 1"),
    ("fdconv", "kernel_num", "4", "integer >= 1"),
    ("fdconv", "param_ratio", 0, "integer >= 1"),
    ("fdconv", "reduction", math.nan, r"\(0, 1\]"),
    ("dyconv", "reduction", "x", r"\(0, 1\]"),
    ("odconv", "num_kernels", 2.5, "integer >= 1"),
    ("condconv", "num_experts", True, "integer >= 1"),
    ("dcd", "latent_dim", "8", "integer >= 1"),
]


@pytest.mark.parametrize(("method", "name", "value", "allowed"), BAD_OPTIONS, ids=lambda v: str(v))
def test_a_method_option_of_the_wrong_type_is_refused_by_name(method, name, value, allowed):
    """FDConv's kernel_num=0 / '4', param_ratio=0 and reduction=nan said "finds no conv to convert"; the KW
    non-local basis took NaN (off) and 0 (empty layers); warehouse_order='042' was split into characters."""
    net = _net()
    before = _state(net)
    with pytest.raises(OptionError, match=rf"{name}=.*type .*{name} must be .*{allowed}"):
        kwlab.convert(net, method, **{name: value})
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_create_model_refuses_a_string_boolean_by_name():
    with pytest.raises(OptionError, match="zero_cell='no'"):
        kwlab.create_model("resnet20_cifar", method="kw", zero_cell="no", num_classes=10)


def test_kernelwarehouse_and_its_plan_refuse_a_string_boolean():
    with pytest.raises(OptionError, match="classifier='false'"):
        kwlab.kernelwarehouse(_net(), classifier="false", max_param_ratio=None)
    with pytest.raises(OptionError, match="spatial_partition='False'"):
        kwlab.plan_kernelwarehouse(_net(), spatial_partition="False")


BAD_FIELDS = [
    ({"probe_samples": -5}, r"probe_samples=-5.*allowed: an integer >= 0"),
    ({"min_lr": 1.0, "lr": 0.1}, r"min_lr=1.0 exceeds lr=0.1"),
    ({"momentum": 5}, r"momentum=5.0.*\[0, 1\)"),
    ({"seed": 2**70}, r"seed=.*allowed: an integer in \[0, "),
    ({"drop_path_rate": 2}, r"drop_path_rate=2.0.*\[0, 1\)"),
    ({"image_size": 100000}, r"image_size=100000.*allowed"),
    (
        {"method": "static", "temperature_steps": 10},
        r"temperature_steps=10 does not apply to method='static'",
    ),
    ({"method": "condconv", "temperature_steps": 10}, r"does not apply to method='condconv'"),
    ({"method": "dcd", "temperature_steps": 10}, r"does not apply to method='dcd'"),
    ({"method": "kw", "temperature_epochs": 1e6}, r"temperature_epochs=1000000.0 is more than 100x the run"),
]


@pytest.mark.parametrize(("changes", "message"), BAD_FIELDS, ids=lambda v: str(v))
def test_a_run_config_field_out_of_range_is_refused_by_name(changes, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict({**TINY, **changes})


def test_an_anneal_a_million_steps_longer_than_the_run_is_refused_before_training(tmp_path):
    config = RunConfig.from_dict({**TINY, "method": "kw", "temperature_steps": 10**6})
    with pytest.raises(ConfigError, match=r"temperature_steps=1000000 is more than 100x the run"):
        fit(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "results.json").exists()


def test_image_size_100000_is_refused_before_any_image_is_made(tmp_path):
    from kwlab.cli import main

    code = main(
        ["train", "--set", "data=synthetic", "--set", "image_size=100000", "--out", str(tmp_path / "r")]
    )
    assert code == 2 and not (tmp_path / "r").exists()


def test_a_method_option_is_given_flat_and_held_by_its_row():
    """``--set kernel_num=4`` with method=fdconv is FDConv's knob (held in ``options``, checked by its row);
    with another method it is refused, naming the method it belongs to."""
    config = RunConfig.from_dict({**TINY, "method": "fdconv", "kernel_num": 4})
    assert config.options == {"kernel_num": 4} and config.method_options()[1] == {"kernel_num": 4}
    with pytest.raises(ConfigError, match=r"option kernel_num=2.5 of method 'fdconv' has type float"):
        RunConfig.from_dict({**TINY, "method": "fdconv", "kernel_num": 2.5})
    owner = r"unknown config field 'kernel_num'.*option of method 'fdconv', not of "
    with pytest.raises(ConfigError, match=owner):
        RunConfig.from_dict({**TINY, "method": "kw", "kernel_num": 4})


def test_a_sweep_whose_base_seed_is_not_an_integer_is_refused_by_name(tmp_path):
    for seed, message in (("abc", "seed='abc' has type str"), (1.7, "seed=1.7 has type float")):
        with pytest.raises(ConfigError, match=message):
            _spec(base={**TINY, "seed": seed})


def test_a_sweep_lock_that_is_a_directory_gets_kwlabs_error(tmp_path):
    out = tmp_path / "s"
    (out / ".sweep.lock").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"\.sweep\.lock is a directory"):
        run_sweep(_spec(), out, **QUIET)


def test_torchrun_args_null_gets_kwlabs_error():
    with pytest.raises(ConfigError, match="torchrun_args must be a list of strings, got None"):
        make_executor({"kind": "torchrun", "torchrun_args": None})


@pytest.mark.parametrize("kind", ["sequential", "processes", "submitit", "submitit-local"])  # torchrun did
def test_every_executor_refuses_an_unknown_key(kind):
    with pytest.raises(ConfigError, match=rf"executor {kind} does not take \['wokers'\]"):
        make_executor({"kind": kind, "wokers": 2})


def test_a_sweep_file_with_two_runs_sections_is_refused(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: d\nbase: {data: synthetic}\nruns:\n  - {method: static}\nruns:\n  - {method: kw}\n"
    )
    with pytest.raises(ConfigError, match=r"duplicate key 'runs'.*line 3.*line 5"):
        load_sweep(path)


def test_a_train_config_with_a_duplicate_key_is_refused(tmp_path, capsys):
    from kwlab.cli import main

    path = tmp_path / "run.yaml"
    path.write_text("lr: 0.1\nepochs: 1\nlr: 0.2\n")
    assert main(["train", str(path), "--out", str(tmp_path / "r")]) == 2
    assert "duplicate key 'lr'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"runs": [{"method": "kw", "budget": []}]}, r"runs\[0\] gives budget: \[\]"),
        ({"runs": {}}, "'runs' must be a non-empty list"),
        ({"runs": []}, "'runs' must be a non-empty list"),
    ],
    ids=["budget: []", "runs: {}", "runs: []"],
)
def test_a_sweep_file_with_an_empty_list_is_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        _spec(**changes)


def test_set_seed_empty_list_is_refused():
    with pytest.raises(ConfigError, match=r"--set seed=\[\]"):
        from kwlab.experiments.spec import apply_overrides

        apply_overrides(_spec(), parse_overrides(["seed=[]"]))


def test_a_sweep_yaml_with_an_empty_list_is_refused_when_it_loads(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "d", "base": TINY, "runs": [{"method": "kw", "budget": []}]}))
    with pytest.raises(ConfigError, match="budget"):
        load_sweep(path)


# ======================================================================== 5. the README's claims
def test_plan_frame_is_a_dataframe_as_the_readme_says():
    plan = kwlab.plan_kernelwarehouse(_net(), budget=1, max_param_ratio=None)
    frame = plan.frame()
    assert isinstance(frame, pd.DataFrame) and frame.index.name == "warehouse"
    assert frame.attrs["totals"] == plan.totals()
    family = kwlab.methods.plan_family(_net(), "dyconv").frame()
    assert isinstance(family, pd.DataFrame) and family.index.name == "layer"


def test_probe_samples_zero_still_turns_the_final_probe_off():
    """0 is the documented "no final probe" (notebooks 05-09 train that way); only negatives are refused."""
    assert RunConfig.from_dict({**TINY, "probe_samples": 0}).probe_samples == 0
