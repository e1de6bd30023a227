"""The main job end to end: `tinyprop demo` writes a report, plots and models; CLI errors are one line."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tinyprop_tf import demo


def test_shift_images_translates_without_wrapping():
    images = np.arange(2 * 28 * 28, dtype=np.float32).reshape(2, 28, 28)
    shifted = demo.shift_images(images, 3, 2)
    np.testing.assert_array_equal(shifted[:, 3:, 2:], images[:, :25, :26])
    assert not shifted[:, :3, :].any() and not shifted[:, :, :2].any()


@pytest.mark.slow
def test_demo_end_to_end_writes_report_plots_and_models(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "tinyprop_tf.cli", "demo", "--out", str(out), "--epochs", "3", "--pretrain-epochs", "4"],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    runs = {run["name"]: run for run in report["runs"]}
    assert list(runs) == list(demo.DEMO_POLICIES)
    dense, static, tinyprop = runs["dense"], runs["static top-k 0.2"], runs["TinyProp"]
    assert dense["bwd_ratio"] == pytest.approx(1.0)
    assert 0 < tinyprop["bwd_ratio"] < 0.5 and 0 < static["bwd_ratio"] < 0.5
    for run in runs.values():
        assert len(run["metric"]) == 3 and 0.1 < run["final_metric"] <= 1.0
        assert os.path.exists(run["model_path"])
    # The fine-tuning actually helps on the shifted digits.
    assert dense["final_metric"] > dense["initial_metric"]
    for name in ("accuracy_vs_epoch.png", "backward_compute_vs_epoch.png", "kept_ratio_per_layer.png",
                 "accuracy_vs_backward_compute.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert "TinyProp" in proc.stdout and "vs dense" in proc.stdout


def test_cli_unknown_command_fails_with_usage():
    proc = subprocess.run([sys.executable, "-m", "tinyprop_tf.cli", "frobnicate"], capture_output=True, text=True)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr and "Traceback" not in proc.stderr
