"""benchmarks/gpu_check.py, reduced (--quick) on this CPU: the one command a GPU user runs cannot rot."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import kwlab
from kwlab.utils import git_revision

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_quick_writes_one_consistent_record(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--quick", "--device", "cpu"]
    cmd += ["--data", "synthetic", "--threads", "1", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = list(tmp_path.glob("gpu_check-cpu-quick-*.json"))
    assert len(files) == 1
    record = json.loads(files[0].read_text())
    env_rec = record["environment"]
    assert env_rec["device"] == "cpu" and env_rec["git_revision"] == git_revision()
    assert env_rec["torch"] and env_rec["python"]
    # speed: every planned row ran, and each ratio is the ratio of its two measurements
    assert [(r["mode"], r["batch"]) for r in record["speed"]] == [("fp32", 16), ("bf16", 16)]
    for row in record["speed"]:
        assert "error" not in row["static"] and "error" not in row["kw"], row
        assert math.isclose(row["train_ratio"], row["kw"]["train_img_s"] / row["static"]["train_img_s"])
        assert math.isclose(row["memory_ratio"], row["kw"]["peak_bytes"] / row["static"]["peak_bytes"])
    probe = record["probe"]
    assert math.isclose(probe["overhead_ratio"], probe["median_s_probe"] / probe["median_s"])
    # one short run per method, with the trainer's resolved switches (CPU defaults: off)
    assert [r["method"] for r in record["methods"]] == kwlab.list_methods()
    for row in record["methods"]:
        assert "error" not in row, row
        assert row["data"] == "synthetic" and row["train_samples"] == 32
        if row["nonfinite"]:
            # a 2-step DCD net gives NaN in eval mode by the official design: flagged, explained, no accuracy
            assert row["method"] == "dcd" and "DCD" in row["notes"] and math.isnan(row["final_acc"]), row
        else:
            assert 0 <= row["final_acc"] <= 1 and math.isfinite(row["final_train_loss"])
        assert row["amp_dtype"] is None and row["channels_last_used"] is False
    assert record["seconds"]["total"] > 0
