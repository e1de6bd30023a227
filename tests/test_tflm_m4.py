"""train_fast.tflite on an emulated Cortex-M4F: the runner program cross-compiled for QEMU's mps2-an386 with the
RAM limited to a board's usable RAM (converters/tflm_host_runner.py ``find_m4_runner`` / ``run_m4``).

Always: the image cache's key covers the RAM size and the image's own sources, and the host runner's key does not
depend on them. With a TFLM tree, the Arm cross compiler and QEMU (``make test`` builds the images from
``../shared/tflm/esp-tflite-micro``, as in CI, where a missing image then fails these tests instead of skipping
them): exported steps run N steps on the emulated board and pass verify's float64 bounds with Keras' k; the RAM
limit limits (an arena too big for 256 KiB is one clear error naming needed vs available, and the same model runs
with 448 KiB); the measures (stack high-water mark, RAM map, instruction counts) are the run's own. The on-device
training app itself (micro/app, with a generated nRF52840 project's data) runs there too (``m4_app``): two boots on
one flash file match float64 within verify's bounds; its image links the runner images' TFLM build.
"""

from __future__ import annotations

import os
import re

import keras
import numpy as np
import pytest
from _build import fake_runner_cache, m4_image_or_skip

import tinyprop_tf as tp
from tinyprop_tf import models
from tinyprop_tf.mcu_profiles import KIB
from tinyprop_tf.converters import (artifacts, device_ops, export_training_model, flatbuffer, m4_app, tflm_host_runner,
                                    verification)
from tinyprop_tf.converters.board_projects import write_board_project
from tinyprop_tf.converters.verification import verify

NRF52840_RAM, NRF5340_RAM = 256 * KIB, 448 * KIB
CASES = {
    "mlp_tinyprop_sgd": (lambda: models.mlp(input_shape=(20,), num_classes=5, hidden=(16, 12)),
                         lambda: tp.TinyProp(0.1, 0.9, 0.5), "sgd"),
    "mlp_static_adam": (lambda: models.mlp(input_shape=(20,), num_classes=5, hidden=(16,)),
                        lambda: tp.StaticTopK(0.3), "adam"),
    "cnn_tinyprop_sgd": (lambda: models.small_cnn(input_shape=(12, 12, 1), num_classes=4, filters=(6, 8)),
                         lambda: tp.TinyProp(0.1, 0.9, 0.5), "sgd"),
    "conv1d_static_sgd": (lambda: models.conv1d_net(input_shape=(16, 5), num_classes=3, filters=(6, 8)),
                          lambda: tp.StaticTopK(0.4), "sgd"),
}


# ---- the cache (no build) ------------------------------------------------------------------------------------
@pytest.fixture
def fake(tmp_path, monkeypatch):
    """micro/'s sources copied, a minimal "TFLM tree", an empty cache, a stand-in build that records each call."""
    micro, _, _, builds = fake_runner_cache(tmp_path, monkeypatch, tflm_host_runner.M4_SOURCES)
    monkeypatch.setattr(tflm_host_runner, "m4_missing_tools", lambda: [])
    return micro, builds


def test_one_image_per_ram_size_and_sources_and_the_host_runner_ignores_the_image_files(fake):
    micro, builds = fake
    host = tflm_host_runner.find_runner()
    small, large = tflm_host_runner.find_m4_runner(NRF52840_RAM), tflm_host_runner.find_m4_runner(NRF5340_RAM)
    assert len({host, small, large}) == 3 and small.endswith(".elf") and len(builds) == 3
    assert tflm_host_runner.find_m4_runner(NRF52840_RAM) == small and len(builds) == 3  # cached
    m4_sources = builds[1][2]
    assert "mps2/startup.c" in m4_sources and "mps2/sections.ld" in m4_sources
    assert "tflm/mps2/runner_platform_mps2.cc" in m4_sources and "cmake/arm-cortex-m4f.cmake" in m4_sources
    assert not [p for p in builds[0][2] if "mps2" in p]  # the host runner is not built from the image's files

    (micro / "mps2" / "sections.ld").write_text((micro / "mps2" / "sections.ld").read_text() + "/* changed */\n")
    assert tflm_host_runner.find_m4_runner(NRF52840_RAM, build=False) is None  # never the image of the old script
    assert tflm_host_runner.find_runner(build=False) == host


def test_the_app_image_is_built_in_the_runner_images_tree_and_keyed_by_the_project_data(fake, tmp_path):
    """The app links the TFLM library of the runner images: same CMake tree and sources, its data files copied
    beside them; another project's data is another image, the same data the cached one."""
    micro, builds = fake
    data = tmp_path / "src"
    data.mkdir()
    for name in tflm_host_runner.M4_APP_DATA_FILES:
        (data / name).write_text(f"// {name}\n")
    runner = tflm_host_runner.find_m4_runner(NRF52840_RAM)
    app = tflm_host_runner.find_m4_app(str(data), NRF52840_RAM)
    assert app != runner and os.path.basename(app).startswith("tinyprop_app_m4-") and len(builds) == 2
    assert tflm_host_runner.find_m4_app(str(data), NRF52840_RAM) == app and len(builds) == 2  # cached
    runner_flavor, app_flavor = tflm_host_runner._m4_flavor(NRF52840_RAM), tflm_host_runner._m4_app_flavor(NRF52840_RAM)
    assert (runner_flavor.src, runner_flavor.build) == (app_flavor.src, app_flavor.build)
    assert set(builds[1][2]) - set(builds[0][2]) == {f"app-data/{n}" for n in tflm_host_runner.M4_APP_DATA_FILES}
    assert "app/mps2/main.cc" in builds[0][2] and "app/src/training_loop.cc" in builds[0][2]

    (data / "samples.cc").write_text("// other samples\n")
    assert tflm_host_runner.find_m4_app(str(data), NRF52840_RAM, build=False) is None
    assert tflm_host_runner.find_m4_runner(NRF52840_RAM, build=False) == runner  # the runner does not take the data
    (data / "samples.cc").unlink()
    with pytest.raises(tflm_host_runner.RunnerError, match="has no samples.cc"):
        tflm_host_runner.find_m4_app(str(data), NRF52840_RAM)


def test_ram_size_is_checked():
    for bad in (0, -1, 32 * KIB, 5 << 20, 256.0, True):
        with pytest.raises(ValueError, match="ram_bytes"):
            tflm_host_runner.find_m4_runner(bad)


def test_a_stack_with_no_paint_left_is_an_error():
    lines = {"ram_bytes": [262144], "stack_bytes": [16384], "data_bytes": [1], "bss_bytes": [1], "heap_bytes": [8192],
             "arena_available_bytes": [1000], "arena_used_bytes": [10], "heap_used_bytes": [5],
             "invoke_ticks": [0, 80, 1, 40]}
    measures = tflm_host_runner._measures({**lines, "stack_high_water_bytes": [7000]}, 2)
    assert measures.invoke_instructions == [50.0, 25.0]
    with pytest.raises(tflm_host_runner.RunnerError, match="used all of its 16,384-byte stack"):
        tflm_host_runner._measures({**lines, "stack_high_water_bytes": [16384]}, 2)


def test_measure_lines_are_parsed_and_other_output_ignored():
    out = ("arena_used_bytes 1234\nFailed to allocate tail memory. Requested: 10\n\n"
           "invoke_ticks 0 80\nop_ticks 0 1 30 TINYPROP_SELECT_UNITS\nop_ticks 0 0 40 MUL\ninvoke_ticks 1 96\n"
           "op_ticks 1 0 50 MUL\n")
    assert tflm_host_runner._values(out) == {"arena_used_bytes": [1234], "invoke_ticks": [0, 80, 1, 96]}
    assert tflm_host_runner._op_ticks(out, 2) == ((("MUL", 40), ("TINYPROP_SELECT_UNITS", 30)), (("MUL", 50),))


# ---- on the emulated board -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            build, policy, opt = CASES[name]
            keras.utils.set_random_seed(0)
            out = tmp_path_factory.mktemp(name)
            manifest = export_training_model(build(), policy(), opt, 0.05, batch_size=4, out_dir=str(out),
                                             measure_arena=False, fast=True)
            cache[name] = (str(out), manifest)
        return cache[name]

    return get


@pytest.mark.slow
@pytest.mark.tflm_runner
@pytest.mark.parametrize("name", sorted(CASES))
def test_exported_step_runs_on_the_emulated_m4_within_verify_bounds_and_with_keras_k(exported, name):
    m4_image_or_skip(NRF52840_RAM)
    out, manifest = exported(name)
    result = verify(out, steps=6, check=False, backends=("tflm_m4",), m4_ram_bytes=NRF52840_RAM)
    assert "tflm_m4" in result.losses, result.notes
    assert result.ok, result.summary()
    assert result.worst_share("tflm_m4") <= 1.0
    assert set(result.errors["tflm_m4"]["weights"]) == {e["path"] for e in manifest["weights"]}
    np.testing.assert_array_equal(result.k["tflm_m4"], result.k["keras"])
    assert any("emulated Cortex-M4F (QEMU mps2-an386, 262,144 bytes of RAM)" in n for n in result.notes), result.notes


@pytest.mark.slow
@pytest.mark.tflm_runner
def test_verify_fails_an_m4_run_that_computes_something_else(exported, monkeypatch):
    """The row is judged: the emulated run's weights nudged by 1e-3 relative fail the bound."""
    m4_image_or_skip(NRF52840_RAM)
    out, _ = exported("mlp_tinyprop_sgd")
    real = verification.run_tflm_m4

    def off(*args):
        run = real(*args)
        run["weights"] = {p: w * np.float32(1.001) for p, w in run["weights"].items()}
        return run

    monkeypatch.setattr(verification, "run_tflm_m4", off)
    result = verify(out, steps=3, check=False, backends=("tflm_m4",), m4_ram_bytes=NRF52840_RAM)
    assert not result.ok and any(f.startswith("tflm_m4: weight") for f in result.failures), result.summary()


@pytest.mark.slow
@pytest.mark.tflm_runner
def test_measures_are_the_runs_own_and_instruction_counts_repeat(exported):
    elf = m4_image_or_skip(NRF52840_RAM)
    out, manifest = exported("cnn_tinyprop_sgd")
    with open(os.path.join(out, "train_fast.tflite"), "rb") as f:
        data = f.read()
    xs, ys = verification.make_batches(manifest, 3)
    weights = artifacts.exported_weights(out, manifest)
    first = verification.run_tflm_m4(data, manifest, xs, ys, elf, weights)["measures"]
    second = verification.run_tflm_m4(data, manifest, xs, ys, elf, weights)["measures"]
    assert first == second  # -icount: the same instructions every run
    m = first
    assert m.ram_bytes == NRF52840_RAM and m.stack_bytes == tflm_host_runner.M4_STACK_BYTES
    assert 0 < m.stack_high_water_bytes < m.stack_bytes
    assert m.data_bytes > 0 and m.bss_bytes > 0
    assert 0 < m.heap_used_bytes <= m.heap_bytes == tflm_host_runner.M4_HEAP_BYTES
    assert 0 < m.arena_used_bytes <= m.arena_available_bytes
    # Everything in RAM is inside the limit: stack, .data, .bss, heap, arena region (up to alignment padding).
    static = m.stack_bytes + m.data_bytes + m.bss_bytes + m.heap_bytes
    assert 0 <= m.ram_bytes - static - m.arena_available_bytes < 32
    assert len(m.invoke_ticks) == 4 and all(t > 0 for t in m.invoke_ticks)
    train, infer = m.invoke_instructions[:3], m.invoke_instructions[3]
    assert min(train) > infer > 1000  # a train step does the forward and the backward
    assert m.invoke_instructions[0] == m.invoke_ticks[0] * 0.625
    # Per operator: every invoke lists the graph's operators in order, and they take most of the invoke.
    model = flatbuffer.load(data)
    graph_ops = [flatbuffer.op_name(model.operatorCodes[op.opcodeIndex]).removeprefix("CUSTOM:")
                 for op in model.subgraphs[0].operators]
    assert [[name for name, _ in ops] for ops in m.op_ticks] == [graph_ops] * 4
    for i, ops in enumerate(m.op_ticks):
        assert all(t > 0 for _, t in ops) and 0.9 * m.invoke_ticks[i] < sum(t for _, t in ops) < m.invoke_ticks[i]
    per_op = m.op_instructions(0)
    assert sum(per_op.values()) == pytest.approx(m.invoke_instructions[0]) and per_op["(between ops)"] > 0
    backward = per_op["TINYPROP_CONV2D_BACKWARD"]  # a train invoke back-propagates; the infer invoke skips it
    assert m.op_instructions(3)["TINYPROP_CONV2D_BACKWARD"] < backward / 10
    # The printed RAM map is the ELF's own (its linker symbols): the section sizes agree.
    import subprocess

    sections = {}
    for line in subprocess.run(["arm-none-eabi-size", "-A", elf], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit():
            sections[parts[0]] = int(parts[1])
    assert (sections[".data"], sections[".bss"], sections[".stack"]) == (m.data_bytes, m.bss_bytes, m.stack_bytes)
    assert sections[".arena"] - m.arena_available_bytes in range(16)


def _mlp_arena(width, elf, tmp_path):
    """(model bytes, feeds, M4 measures, initial state) of the demo's MLP shape 784-width-16-10 at batch 8, measured
    on ``elf``."""
    keras.utils.set_random_seed(0)
    out = str(tmp_path / f"mlp{width}")
    manifest = export_training_model(models.mlp(hidden=(width, 16)), tp.TinyProp(0.1, 0.9, 0.5), "sgd", 0.01,
                                     batch_size=8, out_dir=out, measure_arena=False, fast=True)
    with open(os.path.join(out, "train_fast.tflite"), "rb") as f:
        data = f.read()
    feeds = verification.runner_feeds(manifest, *verification.make_batches(manifest, 1))  # a train, an infer
    state = device_ops.initial_state(manifest["tflm_fast"]["state"], artifacts.exported_weights(out, manifest))
    return data, feeds, tflm_host_runner.run_m4(elf, data, feeds, state=state)[1], state


@pytest.mark.slow
@pytest.mark.tflm_runner
def test_the_ram_limit_limits(tmp_path):
    """A model whose arena exceeds what 256 KiB leaves fails there with one line naming needed vs available, and
    runs with 448 KiB. The model is sized from measurements (arena ~ affine in the hidden width), not from
    today's arena figures."""
    small, large, big = (m4_image_or_skip(r) for r in (NRF52840_RAM, NRF5340_RAM, tflm_host_runner.M4_MAX_RAM))
    tiny_data, tiny_feeds, _, tiny_state = _mlp_arena(4, big, tmp_path)
    fits_small = tflm_host_runner.run_m4(small, tiny_data, tiny_feeds, state=tiny_state)[1].arena_available_bytes
    fits_large = tflm_host_runner.run_m4(large, tiny_data, tiny_feeds, state=tiny_state)[1].arena_available_bytes
    assert fits_small < fits_large
    target = (fits_small + fits_large) / 2
    points = [(w, _mlp_arena(w, big, tmp_path)[2].arena_used_bytes) for w in (8, 24)]
    for _ in range(3):  # secant steps towards the middle of the window
        (w0, a0), (w1, a1) = sorted(points, key=lambda p: abs(p[1] - target))[:2]
        width = max(1, round(w0 + (target - a0) * (w1 - w0) / (a1 - a0)))
        data, feeds, measured, state = _mlp_arena(width, big, tmp_path)
        needed = measured.arena_used_bytes
        if fits_small < needed <= fits_large:
            break
        points.append((width, needed))
    assert fits_small < needed <= fits_large, (points, width, needed, fits_small, fits_large)

    with pytest.raises(tflm_host_runner.RamError) as info:
        tflm_host_runner.run_m4(small, data, feeds, state=state)
    message = str(info.value)
    assert "\n" not in message and info.value.needed == needed and info.value.available == fits_small
    assert re.search(rf"does not fit 262,144 bytes .* arena needs {needed:,} bytes, {fits_small:,} bytes are "
                     "available", message), message
    outputs, m = tflm_host_runner.run_m4(large, data, feeds, state=state)
    assert m.arena_used_bytes == needed and m.ram_bytes == NRF5340_RAM
    reference, _ = tflm_host_runner.run_m4(big, data, feeds, state=state)
    for got, want in zip(outputs, reference):  # the same program: the RAM size changes nothing else
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@pytest.mark.tflm_runner
def test_verify_cli_fails_a_model_that_does_not_fit_the_given_ram_in_one_line(tmp_path):
    """64 KiB leaves ~34 KB for the arena; a 20-512-5 MLP's weights alone are 51 KB, whatever the step's layout."""
    import subprocess
    import sys

    m4_image_or_skip(64 * KIB)
    keras.utils.set_random_seed(0)
    out = str(tmp_path / "wide")
    export_training_model(models.mlp(input_shape=(20,), num_classes=5, hidden=(512,)), tp.TinyProp(0.1, 0.9, 0.5),
                          "sgd", 0.05, batch_size=2, out_dir=out, measure_arena=False, fast=True)
    proc = subprocess.run([sys.executable, "-m", "tinyprop_tf.cli", "verify", out, "--steps", "2",
                           "--m4-ram-kib", "64"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if "does not fit 65,536 bytes (64 KiB) of RAM" in line]
    assert lines and re.search(r"arena needs [\d,]+ bytes, [\d,]+ bytes are available", lines[0]), proc.stdout[-3000:]
    assert "FAIL" in proc.stdout and not [line for line in proc.stdout.splitlines() if line.startswith("  tflm_m4 ")]


@pytest.mark.slow
@pytest.mark.tflm_runner
def test_the_demo_step_with_every_layer_trained_runs_in_256_kib(tmp_path):
    """The demo's export (MLP 784-32-16-10, TinyProp, SGD, batch 8, all three layers trained) links and trains on
    the emulated Cortex-M4F with 256 KiB of RAM for everything (stack, .data, .bss, heap, arena), its arena at most
    160 KB (the training state in place), and matches float64 within verify's bounds with Keras' k."""
    m4_image_or_skip(NRF52840_RAM)
    keras.utils.set_random_seed(0)
    out = str(tmp_path / "demo")
    export_training_model(models.mlp(), tp.TinyProp(0.1, 0.9, 0.5), "sgd", 0.01, batch_size=8, out_dir=out,
                          measure_arena=False, fast=True)
    result = verify(out, steps=3, check=False, backends=("tflm_m4",), m4_ram_bytes=NRF52840_RAM)
    assert result.ok and "tflm_m4" in result.errors, result.summary()
    np.testing.assert_array_equal(result.k["tflm_m4"], result.k["keras"])
    note = next(n for n in result.notes if "emulated Cortex-M4F" in n)
    arena, available = (int(v.replace(",", "")) for v in re.search(r"arena ([\d,]+) of ([\d,]+) bytes", note).groups())
    assert "262,144 bytes of RAM" in note and arena <= 160_000 < available, note


@pytest.mark.slow
@pytest.mark.tflm_runner
def test_ds_cnn_kws_with_its_last_2_layers_trained_at_batch_4_runs_in_256_kib_recomputed(tmp_path):
    """DS-CNN KWS (49x10, 64 channels, 4 blocks), the last pointwise conv and the logits trained, TinyProp, SGD,
    batch 4: the batched step's arena is over 500 KB; with the trained conv block recomputed sample by sample it is
    at most 200 KB and the step trains on the emulated Cortex-M4F with 256 KiB of RAM, matching float64 within
    verify's bounds with Keras' k."""
    m4_image_or_skip(NRF52840_RAM)
    keras.utils.set_random_seed(0)
    out = str(tmp_path / "kws")
    model = models.ds_cnn()
    tp.train_last(model, 2)
    export_training_model(model, tp.TinyProp(0.1, 0.9, 0.5), "sgd", 0.01, batch_size=4, out_dir=out,
                          measure_arena=False, fast=True, recompute=True)
    result = verify(out, steps=3, check=False, backends=("tflm_m4",), m4_ram_bytes=NRF52840_RAM)
    assert result.ok and "tflm_m4" in result.errors, result.summary()
    np.testing.assert_array_equal(result.k["tflm_m4"], result.k["keras"])
    assert result.k["tflm_m4"].sum() > 0
    note = next(n for n in result.notes if "emulated Cortex-M4F" in n)
    arena = int(re.search(r"arena ([\d,]+) of", note).group(1).replace(",", ""))
    assert "262,144 bytes of RAM" in note and arena <= 200_000, note


# ---- the on-device training app (micro/app) on the emulated board ---------------------------------------------
APP_STEPS = 3  # per boot


@pytest.mark.slow
@pytest.mark.tflm_runner
def test_the_app_trains_saves_restores_and_matches_float64_on_the_emulated_m4(tmp_path):
    """micro/app with the nRF52840 project's own data files, linked for 256 KiB of RAM: two boots of 3 steps on one
    flash file (the second restores the first's state and continues) give the loss, k per sample, final weights
    (from the saved record) and inference output of 6 float64 reference steps within verify's bounds, with Keras'
    k; the traced weight sums are those of the state each boot saved."""
    keras.utils.set_random_seed(0)
    out = str(tmp_path / "export")
    build, policy, opt = CASES["mlp_tinyprop_sgd"]
    manifest = export_training_model(build(), policy(), opt, 0.05, batch_size=4, out_dir=out, fast=True)
    rng = np.random.default_rng(1)
    n = APP_STEPS * manifest["batch_size"]  # one boot's steps cover the samples once: the second boot repeats them
    x = rng.normal(size=(n, *manifest["input"]["shape"][1:])).astype(np.float32)
    y = (np.arange(n) % manifest["output_shape"][-1]).astype(np.int32)
    project = write_board_project(out, "nrf52840dk", str(tmp_path / "nrf52840dk"), samples=x, labels=y,
                                  steps=APP_STEPS)
    elf = m4_image_or_skip(NRF52840_RAM, lambda: m4_app.build(project))
    flash = str(tmp_path / "flash.bin")
    boots = []

    runs = []

    def run_app(manifest_, xs, ys):
        boots.extend(m4_app.boot(elf, flash) for _ in range(2))
        runs.append({"losses": np.concatenate([b.losses for b in boots]), "k": np.concatenate([b.k for b in boots]),
                     "output": boots[-1].output,
                     "weights": m4_app.saved_weights(m4_app.saved_records(flash, project.partition_bytes // 2)[-1],
                                                     project, manifest_)})
        return runs[0]

    result = verify(out, steps=2 * APP_STEPS, x=x, y=y, check=False, backends=(), other_runs={"m4_app": run_app})
    assert result.ok and "m4_app" in result.errors, result.summary()
    assert set(result.errors["m4_app"]["weights"]) == {e["path"] for e in manifest["weights"]}
    np.testing.assert_array_equal(result.k["m4_app"], result.k["keras"])
    # The row is judged: the same run with its saved weights nudged by 1e-3 relative fails.
    nudged = {**runs[0], "weights": {p: w * np.float32(1.001) for p, w in runs[0]["weights"].items()}}
    off = verify(out, steps=2 * APP_STEPS, x=x, y=y, check=False, backends=(),
                 other_runs={"m4_app": lambda *_: nudged})
    assert not off.ok and any(f.startswith("m4_app: weight") for f in off.failures), off.summary()
    first, second = boots
    assert (first.steps, second.steps) == ((1, 2, 3), (4, 5, 6)) and not first.restored and second.restored

    records = m4_app.saved_records(flash, project.partition_bytes // 2)
    assert [(r["generation"], r["step"]) for r in records] == [(1, APP_STEPS), (2, 2 * APP_STEPS)]
    layout = project.state_variables
    for boot, record in zip(boots, records):
        saved = [np.frombuffer(record["payload"][layout[t]["offset"]:layout[t]["offset"] + layout[t]["bytes"]], "<f4")
                 for t in boot.weight_tensors]
        sums = [float(np.cumsum(w.astype(np.float64))[-1]) for w in saved]  # index order, as the app sums
        assert boot.weight_sums[-1].tolist() == sums
    assert len(first.weight_tensors) == len(manifest["weights"])

    # The RAM map: everything inside the nRF52840's 256 KiB, the arena the app's static array.
    for boot in boots:
        ram = boot.ram
        assert ram["ram_bytes"] == NRF52840_RAM and 0 < ram["stack_high_water_bytes"] < ram["stack_bytes"]
        assert boot.arena_bytes == project.budget["ram"][next(k for k in project.budget["ram"] if "arena" in k)]
        assert 0 < boot.arena_used_bytes <= boot.arena_bytes < ram["bss_bytes"]
        assert ram["stack_bytes"] + ram["data_bytes"] + ram["bss_bytes"] + ram["heap_bytes"] <= NRF52840_RAM
        assert all(t > 1000 for t in boot.step_ticks)

    # The prediction printout after the final inference (the batch from sample 0): the labels the app fed, not what
    # y's buffer holds after the invoke (TFLM's planner may reuse it), beside the output's argmax.
    for boot in boots:
        printed = re.findall(r"^  sample (\d+): predicted class (\d+), label (-?\d+)$", boot.stdout, re.M)
        assert [tuple(map(int, p)) for p in printed] == [
            (b, int(np.argmax(boot.output[b])), int(y[b])) for b in range(manifest["batch_size"])], boot.stdout[-2000:]
