"""The whole exported training step on an emulated Cortex-M4F (QEMU mps2-an386): instructions and RAM.

    TINYPROP_TFLM_DIR=/path/to/esp-tflite-micro .venv/bin/python benchmarks/step_qemu.py [--steps 5] [--no-write]

The demo's model and device settings (MLP 784-32-16-10, SGD 0.01, batch 8) exported four ways and run in
``tinyprop_tflm_runner`` built for the Cortex-M4F (``converters/tflm_host_runner.py``: ``find_m4_runner``, ``run_m4``):

- TinyProp(0.1, 0.9, 0.5) on the fast path (``train_fast.tflite``: the TinyProp TFLM operators), the demo's export;
- the same with fc1 frozen (``trainable=False``: fine-tune the last two layers);
- dense on the fast path: StaticTopK(1.0) (every unit kept, the same operators);
- dense with TFLM builtins only: DenseBackprop, ``train.tflite``.

Each runs ``--steps`` train invokes and one infer invoke on the image with all of AN386's 4 MiB of RAM (so that every
variant runs), per-invoke instructions from SysTick under ``-icount shift=6`` (instructions = ticks x 0.625; an
instruction count, not cycles: QEMU models no pipeline, cache, flash wait states or FPU latency). Then each is run
on the images limited to the nRF52840's (256 KiB) and nRF5340's (448 KiB) usable RAM: the RAM map (stack
high-water mark, .data, .bss, heap, arena used / available) or the one-line "does not fit" error.
Inputs: random normal batches and uniform labels (``verification.make_batches``, seed 0) on the exported initial
weights (Keras' seed 0), so TinyProp's kept counts are those of an untrained model, not of the demo's fine-tuning.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _results  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import tinyprop_tf as tp  # noqa: E402
from tinyprop_tf import models  # noqa: E402
from tinyprop_tf.converters import (  # noqa: E402
    artifacts, device_ops, export_training_model, tflm_host_runner, verification)

SECTION = "Whole training step on the emulated Cortex-M4F (QEMU mps2-an386)"
COMMAND = "TINYPROP_TFLM_DIR=<tree> python benchmarks/step_qemu.py"
BATCH, LR = 8, 0.01
VARIANTS = {  # name: (policy, frozen layers, file)
    "TinyProp, fast ops (demo export)": (lambda: tp.TinyProp(0.1, 0.9, 0.5), (), "train_fast.tflite"),
    "TinyProp, fast ops, fc1 frozen": (lambda: tp.TinyProp(0.1, 0.9, 0.5), ("fc1",), "train_fast.tflite"),
    "dense: StaticTopK(1.0), fast ops": (lambda: tp.StaticTopK(1.0), (), "train_fast.tflite"),
    "dense: DenseBackprop, builtins (train.tflite)": (lambda: tp.DenseBackprop(), (), "train.tflite"),
}


def export(name, out):
    policy, frozen, file = VARIANTS[name]
    keras.utils.set_random_seed(0)
    model = models.mlp()
    for layer in model.layers:
        if layer.name in frozen:
            layer.trainable = False
    manifest = export_training_model(model, policy(), "sgd", LR, batch_size=BATCH, out_dir=out, measure_arena=False,
                                     fast=file == "train_fast.tflite")
    with open(os.path.join(out, file), "rb") as f:
        data = f.read()
    state = None  # train_fast.tflite's training state is in place: its initial value goes in through its outputs
    if file == "train_fast.tflite":
        state = device_ops.initial_state(manifest["tflm_fast"]["state"], artifacts.exported_weights(out, manifest))
    return manifest, data, state


def feeds(manifest, steps, fast):
    """The batches in the input order of the file run (train_fast.tflite has its own)."""
    return verification.runner_feeds(manifest, *verification.make_batches(manifest, steps), fast=fast)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only, don't update RESULTS.md")
    args = parser.parse_args(argv)
    rams = tflm_host_runner.m4_ram_sizes()  # {board: bytes}, "mps2-an386": all 4 MiB
    images = {board: tflm_host_runner.find_m4_runner(ram) for board, ram in rams.items()}
    if None in images.values():
        print(f"no emulated Cortex-M4F runner: {tflm_host_runner.M4_HOW_TO}")
        return 1
    count_rows = ["| export | train step (instructions, mean) | infer (instructions) | train - infer | dense / this: "
                  "train step | dense / this: train - infer | mean k per sample | arena (bytes) |",
                  "|---|---:|---:|---:|---:|---:|---|---:|"]
    ram_rows = ["| export | RAM limit | fits | arena used / available | stack high-water / size | .data | .bss "
                "| heap used / size |", "|---|---|---|---:|---:|---:|---:|---:|"]
    results = {}
    for name in VARIANTS:
        with tempfile.TemporaryDirectory(prefix="tinyprop-step-qemu-") as out:
            manifest, data, state = export(name, out)
        runs = feeds(manifest, args.steps, state is not None)
        outputs, m = tflm_host_runner.run_m4(images["mps2-an386"], data, runs, state=state)
        k_index = {d["name"]: d["index"] for d in manifest["tflm_fast" if state is not None else "tflm"]["outputs"]}["k"]
        k = np.array([o[k_index] for o in outputs[:-1]])  # [steps, layers, batch]
        train = float(np.mean(m.invoke_instructions[:-1]))
        results[name] = (train, m)
        names = manifest["sparse_layers"]
        k_text = ", ".join(f"{layer} {k[:, i].mean():.1f}" for i, layer in enumerate(names)) if k.size else "-"
        count_rows.append([name, train, m.invoke_instructions[-1], k_text, m.arena_used_bytes])
        for board, ram in rams.items():
            if board == "mps2-an386":
                continue
            try:
                _, mb = tflm_host_runner.run_m4(images[board], data, runs[:1] + runs[-1:], state=state)
            except tflm_host_runner.RamError as e:
                ram_rows.append(f"| {name} | {board} {ram // 1024} KiB | no: needs {e.needed:,}, {e.available:,} "
                                f"available | - | - | - | - | - |")
                continue
            ram_rows.append(f"| {name} | {board} {ram // 1024} KiB | yes | {mb.arena_used_bytes:,} / "
                            f"{mb.arena_available_bytes:,} | {mb.stack_high_water_bytes:,} / {mb.stack_bytes:,} | "
                            f"{mb.data_bytes:,} | {mb.bss_bytes:,} | {mb.heap_used_bytes:,} / {mb.heap_bytes:,} |")
        print(name, f"train {train:,.0f} infer {m.invoke_instructions[-1]:,.0f} arena {m.arena_used_bytes:,}",
              flush=True)
    dense, dense_m = results["dense: StaticTopK(1.0), fast ops"]
    dense_back = dense - dense_m.invoke_instructions[-1]
    rows = count_rows[:2]
    for name, train, infer, k_text, arena in count_rows[2:]:
        rows.append(f"| {name} | {train:,.0f} | {infer:,.0f} | {train - infer:,.0f} | {dense / train:.2f} | "
                    f"{dense_back / (train - infer):.2f} | {k_text} | {arena:,} |")
    builtins = results["dense: DenseBackprop, builtins (train.tflite)"][0]
    tinyprop = results["TinyProp, fast ops (demo export)"][0]
    body = (
        f"Demo MLP 784-32-16-10, SGD {LR}, batch {BATCH}, {args.steps} train invokes then one infer invoke, on the "
        "image with all 4 MiB of AN386's RAM; the images of every RAM size are the same program and TFLM build (only "
        "the linker script's RAM differs). Instructions from SysTick under `-icount shift=6` (x 0.625): instruction "
        "counts, not cycles (no pipeline, cache, flash wait-state or FPU-latency model). Random normal inputs and "
        "uniform labels on the initial weights: TinyProp's k are an untrained model's. \"train - infer\" is what "
        "the train invoke does beyond the infer invoke's forward (loss, selection, backward, update); \"dense / this\" "
        "is StaticTopK(1.0)'s figure over this row's. TFLM tree: "
        f"`{os.environ.get('TINYPROP_TFLM_DIR')}`.\n\n" + "\n".join(rows) + "\n\n"
        f"TinyProp's whole train step is {dense / tinyprop:.2f}x fewer instructions than the dense step on the same "
        f"operators and {builtins / tinyprop:.2f}x fewer than the builtins-only dense step. The whole step also runs "
        "the forward pass and TFLM's own work (READ_VARIABLE copies, IF copying its operands into the branch), which "
        "sparsity does not shrink: the infer invoke alone (the forward, ~200K MACs at batch 8) costs most of a "
        "TinyProp train step. What the train invoke adds beyond it (loss, selection, backward, update) is the "
        "\"train - infer\" column.\n\n"
        "RAM map per board (each image's RAM limited to the board's usable RAM in the linker script: stack, .data, "
        ".bss, heap and the arena all inside it; the model is read into code memory, not RAM). Stack high-water from "
        "the painted stack after a train and an infer invoke.\n\n" + "\n".join(ram_rows) + "\n"
    )
    print(body)
    if not args.no_write:
        _results.write_section(SECTION, COMMAND, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
