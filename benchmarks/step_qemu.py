"""The whole exported training step on an emulated Cortex-M4F (QEMU mps2-an386): instructions and RAM.

    TINYPROP_TFLM_DIR=/path/to/esp-tflite-micro .venv/bin/python benchmarks/step_qemu.py [--steps 5] [--no-write]

Two models, each exported several ways and run in ``tinyprop_tflm_runner`` built for the Cortex-M4F
(``converters/tflm_host_runner.py``: ``find_m4_runner``, ``run_m4``):

- the demo's MLP 784-32-16-10 with its device settings (SGD 0.01, batch 8): TinyProp(0.1, 0.9, 0.5) on the fast path
  (``train_fast.tflite``: the TinyProp TFLM operators), the demo's export; the same with fc1 frozen; dense on the
  fast path (StaticTopK(1.0): every unit kept, the same operators); dense with TFLM builtins only (DenseBackprop,
  ``train.tflite``); TinyProp and dense on the fast path at batch 1 too;
- DS-CNN KWS (49x10 MFCC, 64 channels, 4 depthwise-separable blocks, 12 classes), SGD 0.01, batch 4, only the last
  layer or the last 2 affine layers trained (``tp.train_last``: the frozen prefix forward only, streamed sample by
  sample): TinyProp and dense (StaticTopK(1.0)) on the fast path.

Each runs ``--steps`` train invokes and one infer invoke on the image with all of AN386's 4 MiB of RAM (so that every
variant runs), per-invoke instructions from SysTick under ``-icount shift=6`` (instructions = ticks x 0.625; an
instruction count, not cycles: QEMU models no pipeline, cache, flash wait states or FPU latency). Then each is run
on the images limited to the nRF52840's (256 KiB) and nRF5340's (448 KiB) usable RAM: the RAM map (stack
high-water mark, .data, .bss, heap, arena used / available) or the one-line "does not fit" error.
Inputs: random normal batches and uniform labels (``verification.make_batches``, seed 0) on the exported initial
weights (Keras' seed 0), so TinyProp's kept counts are those of an untrained model, not of a fine-tuning.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import tempfile
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _results  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import tinyprop_tf as tp  # noqa: E402
from tinyprop_tf import models  # noqa: E402
from tinyprop_tf.converters import (  # noqa: E402
    artifacts, device_ops, export_training_model, flatbuffer, step, tflm_host_runner, verification)

SECTION = "Whole training step on the emulated Cortex-M4F (QEMU mps2-an386)"
COMMAND = "TINYPROP_TFLM_DIR=<tree> python benchmarks/step_qemu.py"
LR = 0.01


@dataclasses.dataclass(frozen=True)
class Variant:
    model: object  # () -> keras.Model
    policy: object  # () -> policy
    batch: int
    frozen: tuple = ()  # layer names set trainable=False
    train_last: int | None = None  # tp.train_last(model, n)
    file: str = "train_fast.tflite"
    dense: str = "dense: StaticTopK(1.0), fast ops"  # the row of its group it is compared with
    # The fast graph's conv forwards and pooling on TFLM's CONV_2D / DEPTHWISE_CONV_2D / MEAN instead of the
    # TinyProp forward ops (as exported before those ops): what they save, measured (the exporter has no such switch).
    builtin_conv_forward: bool = False
    recompute: bool = False  # export_training_model(recompute=True): the trained conv block per sample, recomputed


def _tinyprop():
    return tp.TinyProp(0.1, 0.9, 0.5)


def _dense_fast():
    return tp.StaticTopK(1.0)


def _partial_ds_cnn() -> dict:
    """TinyProp and dense, each with the last layer and the last 2 layers trained, compared within a trainable set."""
    rows = {}
    for n, trained, recompute in ((1, "last layer trained", False), (2, "last 2 layers trained", False),
                                  (2, "last 2 layers trained, recomputed", True)):
        for label, policy in (("TinyProp", _tinyprop), ("dense: StaticTopK(1.0)", _dense_fast)):
            rows[f"{label}, fast ops, {trained}"] = Variant(models.ds_cnn, policy, 4, train_last=n,
                                                            dense=f"dense: StaticTopK(1.0), fast ops, {trained}",
                                                            recompute=recompute)
    rows["TinyProp, fast ops but TFLM's builtin conv forward and pooling, last layer trained"] = Variant(
        models.ds_cnn, _tinyprop, 4, train_last=1, dense="dense: StaticTopK(1.0), fast ops, last layer trained",
        builtin_conv_forward=True)
    return rows


BATCH_1_DENSE = "dense: StaticTopK(1.0), fast ops, batch 1"
GROUPS = {  # model: {row: Variant}
    "Demo MLP 784-32-16-10, batch 8": {
        "TinyProp, fast ops (demo export)": Variant(models.mlp, _tinyprop, 8),
        "TinyProp, fast ops, fc1 frozen": Variant(models.mlp, _tinyprop, 8, frozen=("fc1",)),
        "dense: StaticTopK(1.0), fast ops": Variant(models.mlp, _dense_fast, 8),
        "dense: DenseBackprop, builtins (train.tflite)": Variant(models.mlp, tp.DenseBackprop, 8,
                                                                 file="train.tflite"),
    },
    # At batch 1 a kept unit's weight column is written for one sample's products, as dense writes each column for
    # one: what the batch-8 rows' fused update shares among the samples keeping a unit is out of the comparison.
    "Demo MLP 784-32-16-10, batch 1": {
        "TinyProp, fast ops, batch 1": Variant(models.mlp, _tinyprop, 1, dense=BATCH_1_DENSE),
        BATCH_1_DENSE: Variant(models.mlp, _dense_fast, 1, dense=BATCH_1_DENSE),
    },
    "DS-CNN KWS 49x10, 64 channels, batch 4": _partial_ds_cnn(),
}


def export(variant: Variant, out):
    keras.utils.set_random_seed(0)
    model = variant.model()
    for layer in model.layers:
        if layer.name in variant.frozen:
            layer.trainable = False
    if variant.train_last is not None:
        tp.train_last(model, variant.train_last)
    fast = variant.file == "train_fast.tflite"
    with mock.patch.object(step.TrainStep, "_device_forward_applies", lambda *_: False) \
            if variant.builtin_conv_forward else contextlib.nullcontext():
        manifest = export_training_model(model, variant.policy(), "sgd", LR, batch_size=variant.batch, out_dir=out,
                                         measure_arena=False, fast=fast, recompute=variant.recompute)
    with open(os.path.join(out, variant.file), "rb") as f:
        data = f.read()
    state = None  # train_fast.tflite's training state is in place: its initial value goes in through its outputs
    if fast:
        state = device_ops.initial_state(manifest["tflm_fast"]["state"], artifacts.exported_weights(out, manifest))
    return manifest, data, state


def feeds(manifest, steps, fast):
    """The batches in the input order of the file run (train_fast.tflite has its own)."""
    return verification.runner_feeds(manifest, *verification.make_batches(manifest, steps), fast=fast)


@dataclasses.dataclass(frozen=True)
class LayerWork:
    """One sparse layer's backward in a train step, mean over the steps: the work counts each multiply-add (dW, and
    dx where the layer's input needs it) and each weight the update writes as one."""

    units_updated: float  # the union of the batch's kept units: the weight columns the fused update writes
    dense_macs: float  # batch x C (C: the layer's dense backward MACs per sample)
    sparse_macs: float  # C / M per kept unit and sample (M: its units)
    dense_work: float  # dense_macs and every weight
    sparse_work: float  # sparse_macs and the weights of the units updated


def backward_work(out, manifest, steps) -> dict[str, LayerWork]:
    """Per sparse layer, from Keras' run of the same steps: its kept sets (the runtimes keep the same k, which
    ``tinyprop verify`` checks)."""
    import keras

    from tinyprop_tf import accounting

    xs, ys = verification.make_batches(manifest, steps)
    kept_steps = verification.run_keras(out, manifest, xs, ys)["kept"]
    model = keras.models.load_model(os.path.join(out, "reference.keras"), compile=False)
    layers = {layer.name: layer for layer in model.layers}
    work = {}
    for name in manifest["sparse_layers"]:
        layer = layers[name]
        cost, units = accounting.dense_backward_macs_per_sample(layer), accounting.selectable_entries(layer)
        weights = int(np.prod(layer.kernel.shape)) if layer.trainable else 0
        unions, macs = [], []
        for kept in kept_steps:
            if name not in kept:  # the layer's backward never ran
                continue
            mask, k = kept[name]
            unions.append(units if mask is None else int(np.asarray(mask).reshape(len(k), units).any(axis=0).sum()))
            macs.append(float(np.sum(k)) * cost / units)
        if unions:
            union, sparse_macs, dense_macs = float(np.mean(unions)), float(np.mean(macs)), manifest["batch_size"] * cost
            work[name] = LayerWork(union, dense_macs, sparse_macs, dense_macs + weights,
                                   sparse_macs + weights * union / units)
    return work


def measure(name, variant, steps, images, rams, ram_rows):
    """Run one export on the 4 MiB image (instructions, k, arena) and on each board's image (a RAM map row each)."""
    with tempfile.TemporaryDirectory(prefix="tinyprop-step-qemu-") as out:
        manifest, data, state = export(variant, out)
        work = backward_work(out, manifest, steps)
    runs = feeds(manifest, steps, state is not None)
    outputs, m = tflm_host_runner.run_m4(images["mps2-an386"], data, runs, state=state)
    k_index = {d["name"]: d["index"] for d in manifest["tflm_fast" if state is not None else "tflm"]["outputs"]}["k"]
    k = np.array([o[k_index] for o in outputs[:-1]])  # [steps, layers, batch]
    train = float(np.mean(m.invoke_instructions[:-1]))
    names = manifest["sparse_layers"]
    k_text = ", ".join(f"{layer} {k[:, i].mean():.1f}" for i, layer in enumerate(names)) if k.size else "-"
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
    print(name, f"train {train:,.0f} infer {m.invoke_instructions[-1]:,.0f} arena {m.arena_used_bytes:,}", flush=True)
    layers = {layer["name"]: layer["entries"] for layer in manifest["layers"] if layer.get("sparse")}
    mean_k = {layer: float(k[:, i].mean()) for i, layer in enumerate(names)} if k.size else {}
    profile = Profile(m, _op_layers(data, list(layers)), layers, mean_k, work)
    return train, m.invoke_instructions[-1], k_text, m.arena_used_bytes, profile


@dataclasses.dataclass
class Profile:
    measures: object  # tflm_host_runner.Measures
    op_layers: list  # per operator of the graph: the layer it works for, or None
    entries: dict  # sparse layer -> units/channels
    mean_k: dict  # sparse layer -> mean kept per sample over the train invokes
    work: dict  # sparse layer -> LayerWork


def _op_layers(data: bytes, layers: list[str]) -> list:
    """Per operator: the layer whose device op it is, from its first output's name (a TinyProp op's placeholder
    name "<OP>__<layer>_<n>", or an in-place state tensor "<layer>_kernel" / "<layer>_ymax"), else None."""
    model = flatbuffer.load(data)
    sg = model.subgraphs[0]
    found = []
    for op in sg.operators:
        if op.outputs is None or len(op.outputs) == 0:
            found.append(None)
            continue
        name = flatbuffer.tensor_name(sg.tensors[op.outputs[0]]).split("__", 1)[-1]
        matches = [layer for layer in layers if name.startswith(layer + "_")]
        is_device = flatbuffer.op_name(model.operatorCodes[op.opcodeIndex]).startswith("CUSTOM:TINYPROP_")
        found.append(max(matches, key=len) if matches and is_device else None)
    return found


def per_layer_backward_table(profiles, sparse: str, dense: str) -> str:
    """Per sparse layer, its selection and backward (and ReLU backward) operators' instructions in a train invoke,
    TinyProp against dense, beside the ideal n / k."""
    def per_layer(profile):
        m, totals = profile.measures, {}
        for i in range(len(m.invoke_ticks) - 1):
            for (name, ticks), layer in zip(m.op_ticks[i], profile.op_layers):
                if layer is not None and "FORWARD" not in name:
                    totals[layer] = totals.get(layer, 0.0) + ticks * tflm_host_runner.INSTRUCTIONS_PER_TICK
        return {layer: v / (len(m.invoke_ticks) - 1) for layer, v in totals.items()}

    a, b, p = per_layer(profiles[sparse]), per_layer(profiles[dense]), profiles[sparse]
    rows = ["| layer | units | mean k | units updated (union) | ideal n / k | ideal, updates counted | TinyProp: "
            "select + backward | dense | dense / TinyProp | of n / k | of ideal, updates counted |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    totals = []
    for layer, n in p.entries.items():
        k = p.mean_k.get(layer, 0.0)
        if layer not in a or k == 0:
            continue
        ratio = b[layer] / a[layer]
        w = p.work[layer]
        counted = w.dense_work / w.sparse_work
        rows.append(f"| {layer} | {n} | {k:.1f} | {w.units_updated:.1f} | {n / k:.1f} | {counted:.1f} | "
                    f"{a[layer]:,.0f} | {b[layer]:,.0f} | {ratio:.2f} | {ratio / (n / k):.2f} | "
                    f"{ratio / counted:.2f} |")
        totals.append((a[layer], b[layer], w.dense_work, w.sparse_work, w.dense_macs, w.sparse_macs))
    # The whole backward: its ideals weigh each layer by its work (MACs alone for n / k).
    sparse_ins, dense_ins, dense_work, sparse_work, dense_macs, sparse_macs = (sum(t) for t in zip(*totals))
    ratio = dense_ins / sparse_ins
    rows.append(f"| **all layers** | | | | {dense_macs / sparse_macs:.1f} | {dense_work / sparse_work:.1f} | "
                f"{sparse_ins:,.0f} | {dense_ins:,.0f} | {ratio:.2f} | {ratio / (dense_macs / sparse_macs):.2f} | "
                f"{ratio / (dense_work / sparse_work):.2f} |")
    return (f"Per layer ({sparse} against {dense}): its TinyProp operators but the forward (selection, backward "
            "with the fused update, ReLU backward), mean of the train invokes. *units updated*: the units some sample "
            "of the batch kept, whose weight column the fused SGD update writes (Keras' kept sets on the same steps). "
            "*ideal, updates counted*: dense over sparse work with each multiply-add (dW, dx) and each weight written "
            "counted as one (`backward_work`); n / k leaves the update out. Why they differ: dense writes each weight "
            "once per step for all the batch's products, the fused sparse update writes a kept unit's column for the "
            "few samples that kept it (batch x mean k / units updated of them on average), so at batch 8 a written "
            "weight carries fewer multiply-adds than in the dense step; at batch 1 both write a column per sample's "
            "products and the two ideals agree:\n\n" + "\n".join(rows) + "\n\n")


def _train_op_instructions(m) -> dict[str, float]:
    """Instructions per operator name, mean over the train invokes (every invoke but the last)."""
    train = [m.op_instructions(i) for i in range(len(m.invoke_ticks) - 1)]
    return {name: float(np.mean([t.get(name, 0.0) for t in train])) for name in train[0]}


def per_op_table(profiles, sparse: str, dense: str) -> str:
    """Where a train invoke's instructions go, per operator (TFLM's per-operator profiler on the emulated M4)."""
    a, b = (_train_op_instructions(profiles[row].measures) for row in (sparse, dense))
    rows = [f"| operator | {sparse} | {dense} | dense / sparse |", "|---|---:|---:|---:|"]
    for name in sorted(set(a) | set(b), key=lambda n: (-max(a.get(n, 0.0), b.get(n, 0.0)), n)):
        x, y = a.get(name, 0.0), b.get(name, 0.0)
        rows.append(f"| {name} | {x:,.0f} | {y:,.0f} | {y / x:.2f} |" if x > 0 else f"| {name} | 0 | {y:,.0f} | - |")
    return (f"Per operator, mean of the train invokes (instructions; TFLM's per-operator profiler events, every use of "
            f"an operator summed; \"(between ops)\" is the interpreter between them and the profiler's own tick "
            f"reads):\n\n" + "\n".join(rows) + "\n\n")


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
    ram_rows = ["| export | RAM limit | fits | arena used / available | stack high-water / size | .data | .bss "
                "| heap used / size |", "|---|---|---|---:|---:|---:|---:|---:|"]
    tables, results, profiles = [], {}, {}  # row: (train instructions, arena bytes), its Measures
    for group, variants in GROUPS.items():
        rows = ["| export | train step (instructions, mean) | infer (instructions) | train - infer | dense / this: "
                "train step | dense / this: train - infer | mean k per sample | arena (bytes) |",
                "|---|---:|---:|---:|---:|---:|---|---:|"]
        measured = []
        for name, variant in variants.items():
            train, infer, k_text, arena, profile = measure(name, variant, args.steps, images, rams, ram_rows)
            results[name] = (train, arena)
            profiles[name] = profile
            measured.append((name, train, infer, k_text, arena))
        by_name = {m[0]: m for m in measured}
        for name, train, infer, k_text, arena in measured:
            reference = by_name[variants[name].dense]
            rows.append(f"| {name} | {train:,.0f} | {infer:,.0f} | {train - infer:,.0f} | {reference[1] / train:.2f} | "
                        f"{(reference[1] - reference[2]) / (train - infer):.2f} | {k_text} | {arena:,} |")
        tables.append(f"**{group}**\n\n" + "\n".join(rows))
    device, builtin = (results[f"TinyProp, fast ops{via}, last layer trained"]
                       for via in ("", " but TFLM's builtin conv forward and pooling"))
    conv_ratio = (builtin[0] / device[0], builtin[1] - device[1])
    batched, recomputed = (results[f"TinyProp, fast ops, last 2 layers trained{how}"] for how in ("", ", recomputed"))
    dense = results["dense: StaticTopK(1.0), fast ops"][0]
    builtins = results["dense: DenseBackprop, builtins (train.tflite)"][0]
    tinyprop = results["TinyProp, fast ops (demo export)"][0]
    body = (
        f"SGD {LR}, {args.steps} train invokes then one infer invoke, on the image with all 4 MiB of AN386's RAM; the "
        "images of every RAM size are the same program and TFLM build (only the linker script's RAM differs). "
        "Instructions from SysTick under `-icount shift=6` (x 0.625): instruction counts, not cycles (no pipeline, "
        "cache, flash wait-state or FPU-latency model). Random normal inputs and uniform labels on the initial "
        "weights: TinyProp's k are an untrained model's. \"train - infer\" is what the train invoke does beyond the "
        "infer invoke's forward (loss, selection, backward, update); \"dense / this\" is the StaticTopK(1.0) row's "
        "figure (the same trainable set) over this row's. TFLM tree: "
        f"`{os.environ.get('TINYPROP_TFLM_DIR')}`.\n\n" + "\n\n".join(tables) + "\n\n"
        f"The demo MLP's TinyProp train step is {dense / tinyprop:.2f}x fewer instructions than the dense step on the "
        f"same operators and {builtins / tinyprop:.2f}x fewer than the builtins-only dense step. The whole step also "
        "runs the forward pass and TFLM's own work, which sparsity does not shrink: the infer invoke alone (the "
        "forward) costs most of a TinyProp train step; with a frozen DS-CNN prefix nearly all of it. What the train "
        "invoke adds beyond it (loss, selection, backward, update) is the \"train - infer\" column.\n\n"
        f"The fast graph's conv forwards run on the TinyProp forward ops (TINYPROP_CONV2D_FORWARD / "
        "_DEPTHWISE_FORWARD, ReLU fused), its global pooling on TINYPROP_GLOBAL_AVERAGE_POOL; on TFLM's builtin "
        "CONV_2D / DEPTHWISE_CONV_2D / MEAN instead (the row saying so, the same export otherwise) the DS-CNN step "
        f"with the last layer trained takes {conv_ratio[0]:.2f}x the instructions and {conv_ratio[1]:,} bytes more "
        "arena (per op and per streamed sample TFLM keeps 2 x 4 bytes per channel of quantization arrays a float "
        "model never reads).\n\n"
        "With the last 2 layers trained, the trained pointwise conv (pw4) and its ReLU and pooling run as a "
        "recomputed block (`export_training_model(recompute=True)`, the rows saying \"recomputed\"): per sample the "
        "frozen prefix and pw4's forward keep only the pooled values and a bit per ReLU output; the selection "
        "scores come from those bits and the pooling's gradient; the backward runs per sample on the prefix "
        "computed again, dW added up sample after sample (the same numbers as the batched step, bit for bit: "
        f"tests/test_fast_export.py). Arena {batched[1]:,} -> {recomputed[1]:,} bytes for "
        f"{recomputed[0] / batched[0]:.2f}x the train step's instructions (the prefix's forward twice); the infer "
        "invoke skips the second prefix pass (its forward ops take the mode).\n\n"
        + per_op_table(profiles, "TinyProp, fast ops (demo export)", "dense: StaticTopK(1.0), fast ops")
        + per_layer_backward_table(profiles, "TinyProp, fast ops (demo export)", "dense: StaticTopK(1.0), fast ops")
        + per_layer_backward_table(profiles, "TinyProp, fast ops, batch 1", BATCH_1_DENSE)
        + per_op_table(profiles, "TinyProp, fast ops, last 2 layers trained",
                       "dense: StaticTopK(1.0), fast ops, last 2 layers trained") +
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
