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


def test_memory_fit_counts_weights_gradients_adam_state_and_kept_activations():
    from tinyprop_tf import estimates, models

    model = models.mlp()  # 784-32-16-10
    assert estimates.kept_activation_elements(model) == 784 + 32 + 16 + 10
    params = 784 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    fit = estimates.memory_fit(model, batch_size=4, optimizer="adam")
    # weights + gradients + 2 Adam moments (+ 4 B step counter) + activations of 4 samples, all float32
    assert fit["nrf52840"]["ram_bytes"] == 4 * params * 4 + 4 + 4 * (784 + 32 + 16 + 10) * 4
    # 426,564 B against usable RAM: nRF52840 256 KiB, nRF5340 448 KiB, ESP32 320 KiB, S3 512 KiB, C3 384 KiB.
    assert {name: row["fits"] for name, row in fit.items()} == {
        "nrf52840": False, "nrf5340": True, "esp32": False, "esp32s3": True, "esp32c3": False}


@pytest.mark.slow
def test_demo_end_to_end_writes_report_plots_and_models(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "tinyprop_tf.cli", "demo", "--out", str(out), "--epochs", "3", "--pretrain-epochs", "4"],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is True  # every step finished, the export and board project included
    runs = {run["name"]: run for run in report["runs"]}
    assert list(runs) == list(demo.DEMO_POLICIES)
    dense, static, tinyprop = runs["dense"], runs["static top-k 0.2"], runs["TinyProp"]
    budget = runs["BudgetProp"]
    assert dense["bwd_ratio"] == pytest.approx(1.0)
    assert 0 < tinyprop["bwd_ratio"] < 0.5 and 0 < static["bwd_ratio"] < 0.5 and 0 < budget["bwd_ratio"] < 0.5
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
    fit = report["memory_fit"]
    assert set(fit) == {"nrf52840", "nrf5340", "esp32", "esp32s3", "esp32c3"}
    short = fit["nrf52840"]  # 256 KiB cannot hold a batch of 32 MNIST activations plus Adam state
    assert not short["fits"] and short["margin_bytes"] < 0 and "short by" in short["message"]
    assert f"short by {-short['margin_bytes']:,} B" in proc.stdout
    # Step 6: the pretrained model exported, verified and turned into an nRF52840 DK project on the fast ops.
    export = report["export"]
    assert export["verify_ok"] and export["verify_max_rel_diff"] <= 1e-5
    assert set(export["device_ops"]) == {"TINYPROP_DENSE_FORWARD", "TINYPROP_RELU_BACKWARD", "TINYPROP_SELECT_UNITS",
                                         "TINYPROP_DENSE_BACKWARD_SGD",  # SGD: fused into the backward
                                         "TINYPROP_COUNT_STEP"}  # the step counter, in place
    assert (out / "export" / "train_fast.tflite").exists() and (out / "export" / "train.tflite").exists()
    project = out / "nrf52840dk_project"
    assert (project / "src" / "main.cpp").exists() and (project / "prj.conf").exists()
    assert ('X("TINYPROP_DENSE_BACKWARD_SGD", Register_TINYPROP_DENSE_BACKWARD_SGD)'
            in (project / "src" / "tinyprop_app_config.h").read_text())
    assert "5 exported training steps vs float64" in proc.stdout and "PASS" in proc.stdout
    # The board's time for the exported step from its whole-step instruction count, where the emulator is there (in
    # CI: ../shared's TFLM tree, the Arm compiler and QEMU).
    measured = export["measured_step"]
    if measured is None:
        from tinyprop_tf.converters import tflm_host_runner

        assert not os.environ.get("TINYPROP_TFLM_DIR") or tflm_host_runner.m4_missing_tools(), "no measured step"
    else:
        assert measured["board"] == "nrf52840" and measured["ram"]["ram_bytes"] == 256 * 1024
        assert 1e5 < measured["instructions_per_step"] < 1e8
        assert measured["seconds_per_step"] == pytest.approx(measured["instructions_per_step"] / 64e6)
        assert measured["steps_per_epoch"] == -(-report["data"]["finetune"] // demo.EXPORT_BATCH)
        per_epoch = measured["seconds_per_step"] * measured["steps_per_epoch"]
        assert measured["seconds_per_epoch"] == pytest.approx(per_epoch)
        assert "instructions, not cycles" in measured["source"] and "measured whole step" in proc.stdout


FSDD = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "fsdd")


def _cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "tinyprop_tf.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def _error_line(command, text):
    return f"tinyprop {command}: error: {text}\n"


def _usage(command, text):
    return _error_line(command, f"{text} (see 'tinyprop {command} --help')")


# Each: (command line, exact stderr). {tmp} is an empty folder, {fsdd} the shared FSDD data; all are refused before
# TensorFlow loads (but the loader's own check on an empty folder, which must read the folder first).
CLI_ERRORS = [
    (["finetune", "--data", "/no/such/folder", "--task", "fsdd"],
     _error_line("finetune", "--data /no/such/folder: no such file or folder")),
    (["finetune", "--data", "{tmp}", "--task", "fsdd"],
     _error_line("finetune", "expected <root>/recordings/{digit}_{speaker}_{take}.wav (or the recordings/ folder "
                             "itself); found no such clip in {tmp}")),
    (["finetune", "--data", "{tmp}", "--task", "speech"],
     _usage("finetune", "argument --task: invalid choice: 'speech' (choose from 'mnist', 'fsdd', 'kws', 'dcase')")),
    (["finetune", "--data", "{tmp}", "--task", "fsdd", "--batchnorm", "freeze"],
     _usage("finetune", "argument --batchnorm: invalid choice: 'freeze' (choose from 'train', 'fold', 'adapt')")),
    (["finetune", "--data", "{tmp}", "--task", "mnist", "--policy", "tinyprob"],
     _error_line("finetune", "--policy: unknown policy 'tinyprob' in 'tinyprob'; expected one of ['budget', "
                             "'dense', 'ssprop', 'static', 'tinyprop', 'tinyprop_skip']")),
    (["finetune", "--data", "{tmp}", "--task", "mnist", "--policy", "static:1.5"],
     _error_line("finetune", "--policy: ratio must be in (0.0, 1.0], got 1.5")),
    (["finetune", "--data", "{tmp}", "--task", "dcase"],
     _error_line("finetune", "--task dcase needs --machine (a machine type folder, e.g. fan, slider)")),
    (["finetune", "--data", "{fsdd}", "--task", "fsdd", "--model", "/no/model.keras"],
     _error_line("finetune", "--model /no/model.keras: no such file (expected a .keras model file)")),
    (["finetune", "--data", "{tmp}", "--task", "fsdd", "--model", "mobilenet"],
     _error_line("finetune", "--model mobilenet: expected a .keras file or one of mlp, cnn, ds_cnn, autoencoder")),
    # Observation 5: numbers that made no sense were accepted or failed late.
    (["finetune", "--data", "{tmp}", "--task", "fsdd", "--epochs", "0"],
     _usage("finetune", "argument --epochs: expected an integer >= 1, got 0")),
    (["finetune", "--data", "{tmp}", "--task", "fsdd", "--epochs", "-1"],
     _usage("finetune", "argument --epochs: expected an integer >= 1, got -1")),
    (["finetune", "--data", "{tmp}", "--task", "fsdd", "--batch-size", "0"],
     _usage("finetune", "argument --batch-size: expected an integer >= 1, got 0")),
    (["finetune", "--data", "{tmp}", "--task", "fsdd", "--learning-rate", "-1"],
     _usage("finetune", "argument --learning-rate: expected a number in (0, inf), got -1")),
    (["finetune", "--data", "{tmp}", "--task", "fsdd", "--learning-rate", "0"],
     _usage("finetune", "argument --learning-rate: expected a number in (0, inf), got 0")),
    (["finetune", "--data", "{tmp}", "--task", "fsdd", "--learning-rate", "fast"],
     _usage("finetune", "argument --learning-rate: expected a number or auto, got 'fast'")),
    (["finetune", "--data", "{tmp}", "--task", "fsdd", "--learning-rate", "nan"],
     _usage("finetune", "argument --learning-rate: expected a number in (0, inf), got nan")),
    (["finetune", "--data", "{tmp}", "--task", "fsdd", "--pretrain-epochs", "0"],
     _usage("finetune", "argument --pretrain-epochs: expected an integer >= 1, got 0")),
    (["finetune", "--data", "{tmp}", "--task", "fsdd", "--pretrain-epochs", "-2"],
     _usage("finetune", "argument --pretrain-epochs: expected an integer >= 1, got -2")),
    (["demo", "--epochs", "0"], _usage("demo", "argument --epochs: expected an integer >= 1, got 0")),
    (["demo", "--board", "arduino"],
     _error_line("demo", "--board: unknown board 'arduino'; valid boards: esp32s3, esp32c3, nrf52840dk, nrf5340dk")),
    (["verify", "{tmp}", "--rtol", "-1"], _usage("verify", "argument --rtol: expected a number in (0, 1), got -1")),
    (["verify", "{tmp}", "--steps", "1000000"],
     _usage("verify", "argument --steps: expected an integer from 1 to 10,000, got 1000000")),
    (["verify", "{tmp}"],
     _error_line("verify", "{tmp}/manifest.json not found (is '{tmp}' a folder written by tinyprop export?)")),
    (["export", "{tmp}/m.keras", "--out", "{tmp}/o", "--momentum", "2"],
     _usage("export", "argument --momentum: expected a number in [0, 1], got 2")),
    (["frobnicate"],
     "tinyprop: error: argument command: invalid choice: 'frobnicate' (choose from 'demo', 'finetune', 'sweep', "
     "'export', 'verify') (see 'tinyprop --help')\n"),
]


@pytest.mark.parametrize("args, expected", CLI_ERRORS, ids=[" ".join(a)[:60] for a, _ in CLI_ERRORS])
def test_cli_errors_are_exactly_one_line_and_write_nothing(tmp_path, args, expected, no_tensorflow):
    if any("{fsdd}" in a for a in args) and not os.path.isdir(FSDD):
        pytest.skip(f"shared FSDD data not found at {FSDD}")
    fill = lambda text: text.replace("{tmp}", str(tmp_path)).replace("{fsdd}", FSDD)  # noqa: E731
    # Every check but the FSDD loader's (it reads the folder with the audio code) runs before TensorFlow loads.
    needs_tensorflow = args[:5] == ["finetune", "--data", "{tmp}", "--task", "fsdd"] and len(args) == 5
    proc = subprocess.run([sys.executable, "-m", "tinyprop_tf.cli", *map(fill, args)], capture_output=True,
                          text=True, timeout=300, env=None if needs_tensorflow else no_tensorflow)
    assert (proc.returncode, proc.stderr) == (2, fill(expected))
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_multi_line_errors_are_reported_on_one_line(capsys):
    from tinyprop_tf import cli

    assert cli._report("export", "conversion failed:\n  op FOO\n\n  op BAR ") == 2
    assert capsys.readouterr().err == "tinyprop export: error: conversion failed: | op FOO | op BAR\n"


def test_verify_names_a_malformed_manifest_in_one_line(tmp_path, no_tensorflow):
    (tmp_path / "manifest.json").write_text('{"format": "tinyprop-train/1", "files": {}}')
    proc = subprocess.run([sys.executable, "-m", "tinyprop_tf.cli", "verify", str(tmp_path)], capture_output=True,
                          text=True, timeout=120, env=no_tensorflow)
    assert (proc.returncode, proc.stderr) == (2, _error_line(
        "verify", f"{tmp_path / 'manifest.json'}: 'batch_size' is missing or not a int (export again)"))


def test_export_reads_legacy_h5_files_but_refuses_what_is_not_hdf5(tmp_path, no_tensorflow):
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    proc = subprocess.run([sys.executable, "-m", "tinyprop_tf.cli", "export", str(tmp_path / "bad.h5"), "--out",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=120, env=no_tensorflow)
    assert (proc.returncode, proc.stderr) == (2, _error_line(
        "export", f"{tmp_path / 'bad.h5'}: not an HDF5 file (empty, truncated or corrupt)"))
    (tmp_path / "good.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))  # passes the check, then Keras reads it
    proc = _cli("export", str(tmp_path / "good.h5"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"tinyprop export: error: {tmp_path / 'good.h5'}: cannot load as a Keras model (")


@pytest.mark.parametrize("content, message", [
    (b"", "not a Keras model file (a .keras file is a zip archive; this one is empty, truncated or corrupt)"),
    (None, "not a Keras model file (a .keras file is a zip archive; this one is empty, truncated or corrupt)"),
    ("no-config", "a zip archive without config.json, not a Keras 3 .keras file"),
])
def test_damaged_keras_files_are_named_as_such_before_tensorflow_loads(tmp_path, content, message):
    """Observation 5: a corrupt, empty or truncated .keras said 'File not found' although it exists."""
    import zipfile

    from tinyprop_tf import models

    path = tmp_path / "bad.keras"
    if content is None:  # truncated: the first 3,000 bytes of a real model
        models.mlp(input_shape=(16,), num_classes=4, hidden=(12,)).save(tmp_path / "good.keras")
        path.write_bytes((tmp_path / "good.keras").read_bytes()[:3000])
    elif content == "no-config":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("model.weights.h5", b"x")
    else:
        path.write_bytes(content)
    for command, args in (("finetune", ["--data", str(tmp_path), "--task", "fsdd", "--model", str(path)]),
                          ("export", [str(path), "--out", str(tmp_path / "o")])):
        label = "--model " if command == "finetune" else ""
        proc = _cli(command, *args, timeout=300)
        assert (proc.returncode, proc.stderr) == (2, _error_line(command, f"{label}{path}: {message}"))
    assert not (tmp_path / "o").exists()


def test_out_that_is_a_file_or_cannot_be_created_is_refused_before_any_work(tmp_path):
    """Observation 5: --out pointing at a file (or where nothing can be written) failed with a traceback, after
    the training."""
    (tmp_path / "file").write_text("x")
    proc = _cli("finetune", "--data", str(tmp_path), "--task", "fsdd", "--out", str(tmp_path / "file"))
    assert (proc.returncode, proc.stderr) == (2, _error_line("finetune", f"--out {tmp_path / 'file'}: exists and "
                                                                       "is not a folder"))
    proc = _cli("demo", "--out", str(tmp_path / "file" / "sub"))
    assert (proc.returncode, proc.stderr) == (2, _error_line("demo", f"--out {tmp_path / 'file' / 'sub'}: cannot be "
                                                                   f"created ({tmp_path / 'file'} is not a folder)"))
    proc = _cli("demo", "--out", "/proc/tinyprop-out")  # a pseudo file system: nothing can be created there
    assert (proc.returncode, proc.stderr) == (2, _error_line("demo", "--out /proc/tinyprop-out: cannot write in /proc "
                                                                   "(No such file or directory)"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_out_on_a_read_only_file_system_is_refused_before_any_work(tmp_path):
    """Observation 5: --out on a read-only file system gave a traceback, sometimes after the whole training."""
    mount_point = tmp_path / "ro"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        for command, args in (("finetune", ["--data", str(tmp_path), "--task", "fsdd"]), ("demo", [])):
            out = mount_point / "run"
            proc = _cli(command, *args, "--out", str(out))
            assert (proc.returncode, proc.stderr) == (2, _error_line(
                command, f"--out {out}: cannot write in {mount_point} (Read-only file system)"))
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


@pytest.mark.slow
def test_finetune_cli_personalises_fsdd_to_a_new_speaker(tmp_path):
    if not os.path.isdir(FSDD):
        pytest.skip(f"shared FSDD data not found at {FSDD}")
    out = tmp_path / "ft"
    proc = _cli("finetune", "--data", FSDD, "--task", "fsdd", "--model", "mlp", "--epochs", "3",
                "--pretrain-epochs", "4", "--policy", "dense", "--policy", "tinyprop", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert [run["name"] for run in report["runs"]] == ["dense", "tinyprop"] and report["complete"] is True
    dense, tinyprop = report["runs"]
    assert len(dense["metric"]) == 3 and tinyprop["bwd_ratio"] < 0.5 and dense["bwd_ratio"] == pytest.approx(1.0)
    assert dense["final_metric"] > dense["initial_metric"]  # fine-tuning on the new speaker helps
    # --seed covers everything, the pretrained model's initial weights included: a second run is identical.
    again = tmp_path / "again"
    proc = _cli("finetune", "--data", FSDD, "--task", "fsdd", "--model", "mlp", "--epochs", "3",
                "--pretrain-epochs", "4", "--policy", "dense", "--out", str(again))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rerun = json.loads((again / "report.json").read_text())["runs"][0]
    assert (rerun["initial_metric"], rerun["metric"]) == (dense["initial_metric"], dense["metric"])
    import keras

    model = keras.models.load_model(out / "finetuned-tinyprop.keras")
    assert model.input_shape[1:] == (49, 40, 1)
    # Observation 6: report.json says how to compute the model's inputs. From the raw test clips and only what
    # the report says, the fine-tuned model scores exactly the accuracy the report gives.
    from tinyprop_tf import audio
    from tinyprop_tf.datasets import load_fsdd

    features = report["features"]
    config = audio.LogMelConfig(**features["log_mel_config"])
    clips = load_fsdd(FSDD, speakers=["yweweler"], takes=range(5), sample_rate=config.sample_rate)
    assert clips.x.shape[1] == features["clip_samples"]
    scaling = features["standardisation"]
    inputs = (audio.log_mel(clips.x, config).numpy()[..., None] - scaling["mean"]) / scaling["std"]
    predicted = np.argmax(model.predict(inputs.astype("float32"), verbose=0), axis=-1)
    assert float(np.mean(predicted == clips.y)) == pytest.approx(tinyprop["final_metric"], abs=1e-9)
    assert (out / "pretrained.keras").exists() and (out / "kept_ratio_per_layer.png").exists()


@pytest.mark.slow
def test_export_then_verify_cli_and_a_truncated_model(tmp_path):
    from tinyprop_tf import models

    models.mlp(input_shape=(16,), num_classes=4, hidden=(12,)).save(tmp_path / "m.keras")
    out = tmp_path / "export"
    proc = _cli("export", str(tmp_path / "m.keras"), "--policy", "tinyprop", "--optimizer", "adam",
                "--batch-size", "4", "--out", str(out), "--fast")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "TFLM arena" in proc.stdout and (out / "train.tflite").exists() and (out / "manifest.json").exists()
    assert "2x TINYPROP_SELECT_UNITS, 2x TINYPROP_DENSE_BACKWARD" in proc.stdout and (out / "train_fast.tflite").exists()
    proc = _cli("verify", str(out), "--steps", "5")
    assert proc.returncode == 0 and "PASS" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    # Without a TFLM tree the fast graph is not run, and verify says so (with one, the tflm_fast row appears).
    assert ("tflm_fast" in proc.stdout) != ("train_fast.tflite not run" in proc.stdout)
    (out / "train.tflite").write_bytes((out / "train.tflite").read_bytes()[:2000])
    proc = _cli("verify", str(out))
    assert proc.returncode == 2 and "corrupt or truncated" in proc.stderr and "Traceback" not in proc.stderr


def test_export_cli_rejects_missing_and_non_keras_files(tmp_path):
    proc = _cli("export", str(tmp_path / "none.keras"), "--out", str(tmp_path / "o"))
    assert (proc.returncode, proc.stderr) == (2, _error_line("export", f"{tmp_path / 'none.keras'}: no such file "
                                                                       "(expected a .keras model file)"))
    # A valid archive that Keras cannot load (a config naming no known class) gets Keras' reason, in one line.
    import zipfile

    with zipfile.ZipFile(tmp_path / "bad.keras", "w") as archive:
        archive.writestr("config.json", '{"class_name": "NoSuchModel", "config": {}}')
    proc = _cli("export", str(tmp_path / "bad.keras"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"tinyprop export: error: {tmp_path / 'bad.keras'}: cannot load as a Keras model (")
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------------------------------------------
# Output folders: a used one is refused unless --overwrite, which replaces the whole run; reports say whether
# the run completed
# --------------------------------------------------------------------------------------------------------------
def _previous_run(path):
    path.mkdir()
    (path / "finetuned-dense.keras").write_text("the previous run's model")
    (path / "report.json").write_text(json.dumps({"complete": True, "runs": [{"name": "dense"}]}))
    return path


def _tinyprop_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.startswith("tinyprop ")]


@pytest.mark.parametrize("command", [["demo", "--board", "esp32s3"],
                                     ["finetune", "--data", "{data}", "--task", "mnist"], ["export", "{model}"]])
def test_a_used_output_folder_is_refused_before_any_work(tmp_path, tiny_mnist, command):
    out = _previous_run(tmp_path / "out")
    args = [a.replace("{data}", tiny_mnist[0]).replace("{model}", tiny_mnist[1]) for a in command]
    proc = _cli(*args, "--out", str(out), timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert _tinyprop_lines(proc) == [
        f"tinyprop {command[0]}: error: output folder {out} already holds files (finetuned-dense.keras, report.json), "
        "e.g. a previous export or run: pass --overwrite (overwrite=True) to replace it, or choose another folder"]
    assert "Traceback" not in proc.stderr and sorted(os.listdir(out)) == ["finetuned-dense.keras", "report.json"]
    assert os.listdir(tmp_path) == ["out"]


def test_finetune_overwrite_replaces_the_previous_run_as_a_whole(tmp_path, tiny_mnist):
    """Observation: a finetune into a used folder kept the previous run's finetuned-*.keras next to a report.json
    that listed only the new run."""
    data, model = tiny_mnist
    out = _previous_run(tmp_path / "out")
    proc = _cli("finetune", "--data", data, "--task", "mnist", "--model", model, "--epochs", "1",
                "--policy", "tinyprop", "--out", str(out), "--overwrite", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is True and [run["name"] for run in report["runs"]] == ["tinyprop"]
    assert sorted(name for name in os.listdir(out) if name.endswith(".keras")) == ["finetuned-tinyprop.keras"]
    assert report["runs"][0]["model_path"] == str(out / "finetuned-tinyprop.keras")  # where it ended up
    assert all(os.path.exists(path) for path in report["plots"])
    assert os.listdir(tmp_path) == ["out"]  # nothing staged or set aside is left


@pytest.mark.slow  # about 20 s on its own: a real run, interrupted after its first policy
def test_sigint_leaves_a_report_that_says_incomplete_with_the_finished_runs(tmp_path, tiny_mnist):
    """Observation: an interrupted run left a valid report.json with 2 of 3 runs and no mark."""
    import signal
    import time

    data, model = tiny_mnist
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinyprop_tf.cli", "finetune", "--data", data, "--task", "mnist", "--model", model,
         "--epochs", "15", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            try:
                if len(json.loads((out / "report.json").read_text())["runs"]) >= 1:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert "tinyprop finetune: interrupted" in stderr
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is False and 1 <= len(report["runs"]) < 3
    assert all(os.path.exists(run["model_path"]) for run in report["runs"])
    assert not [name for name in os.listdir(out) if name.startswith(".tmp-")]


def test_a_crash_mid_comparison_keeps_the_finished_runs_marked_incomplete(tmp_path):
    from tinyprop_tf import experiment, models, policies

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 16)).astype("float32"), rng.integers(0, 4, 32).astype("int32")
    model = models.mlp(input_shape=(16,), num_classes=4, hidden=(12,))
    out = tmp_path / "run"
    runs = {"dense": policies.DenseBackprop(), "broken": "no-such-policy"}
    with pytest.raises(ValueError, match="no-such-policy"):
        experiment.compare(model, runs, (x, y), experiment.accuracy_evaluator(x, y), str(out), epochs=1,
                           print_fn=lambda *a: None)
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is False and [run["name"] for run in report["runs"]] == ["dense"]
    assert (out / "finetuned-dense.keras").exists()
    # Over a previous run (overwrite): the previous run stays whole, this one's finished part lies beside it.
    with pytest.raises(ValueError, match="no-such-policy"):
        experiment.compare(model, runs, (x, y), experiment.accuracy_evaluator(x, y), str(out), epochs=1,
                           overwrite=True, print_fn=lambda *a: None)
    assert json.loads((out / "report.json").read_text()) == report
    partial = [p for p in tmp_path.iterdir() if p.name.startswith("run.partial-")]
    assert len(partial) == 1
    again = json.loads((partial[0] / "report.json").read_text())
    assert again["complete"] is False and os.path.exists(again["runs"][0]["model_path"])
    assert str(partial[0]) in again["runs"][0]["model_path"]  # the partial report names files where they are
    finished = experiment.compare(model, {"dense": policies.DenseBackprop()}, (x, y),
                                  experiment.accuracy_evaluator(x, y), str(out), epochs=1, overwrite=True,
                                  print_fn=lambda *a: None)
    written = json.loads((out / "report.json").read_text())
    assert finished["complete"] is written["complete"] is True and written["runs"] == finished["runs"]
    assert written["runs"][0]["model_path"] == str(out / "finetuned-dense.keras")
    assert sorted(os.listdir(out)) == sorted(["finetuned-dense.keras", "report.json", "accuracy_vs_epoch.png",
                                              "backward_compute_vs_epoch.png", "kept_ratio_per_layer.png",
                                              "accuracy_vs_backward_compute.png"])
