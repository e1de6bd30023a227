"""The exported train step on the TinyProp TFLM operators (``train_fast.tflite``) against the builtins-only one.

    TINYPROP_TFLM_DIR=/path/to/esp-tflite-micro .venv/bin/python benchmarks/fast_step.py [--steps 10]

For each model: export with ``fast=True``, run ``verify`` (Keras, LiteRT, the tflite-micro interpreter and
``train_fast.tflite`` in ``tinyprop_tflm_runner``, each against the float64 steps) and record the largest
relative errors and the TFLM
arenas: ``train.tflite``'s from the tflite-micro wheel's RecordingMicroAllocator, ``train_fast.tflite``'s from
the runner (``MicroInterpreter::arena_used_bytes``; a different TFLM build, the user's tree). Both on a 64-bit
host: pointer-sized allocations shrink on a 32-bit MCU. Needs a TFLM tree or runner (see
``converters/tflm_host_runner.py``); without one it says so and writes nothing.
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

import tinyprop_tf as tp  # noqa: E402
from tinyprop_tf import models  # noqa: E402
from tinyprop_tf.converters import export_training_model, tflm_host_runner  # noqa: E402
from tinyprop_tf.converters.verification import verify  # noqa: E402

TINYPROP = (0.1, 0.9, 0.5)
CASES = {
    "MNIST MLP 784-32-16-10, batch 8, SGD": (lambda: models.mlp(), "sgd", 8, TINYPROP),
    "DCASE autoencoder 640-128-64-8-64-128-640, batch 4, SGD (MSE)": (lambda: models.autoencoder(), "sgd", 4,
                                                                       TINYPROP),
    "small CNN 28x28 (8, 16 filters), batch 8, SGD": (lambda: models.small_cnn(), "sgd", 8, TINYPROP),
    # s_max = 1, zeta = 1: the sample that sets the running max keeps every unit, M * bpr = M exactly; the former
    # ratio order (y * d) / ymax put it one ulp either side of M depending on y's last bit, i.e. on the runtime.
    "small CNN 28x28 (8, 16 filters), batch 8, SGD, TinyProp(0.1, 1.0, 1.0)": (lambda: models.small_cnn(), "sgd", 8,
                                                                                (0.1, 1.0, 1.0)),
    "DS-CNN KWS 49x10, 64 ch, 4 blocks, batch 4, Adam": (lambda: models.ds_cnn(filters=64), "adam", 4, TINYPROP),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--no-write", action="store_true", help="print only, don't update RESULTS.md")
    args = parser.parse_args(argv)
    runner = tflm_host_runner.find_runner()
    if runner is None:
        print(f"no TFLM runner: {tflm_host_runner.HOW_TO}")
        return 1
    rows = ["| model | fast ops | verify (10 steps) | max rel. error (loss, weights, output) vs float64: LiteRT / TFLM / fast "
            "| arena train.tflite | arena train_fast.tflite |", "|---|---|---|---|---:|---:|"]
    for name, (build, optimizer, batch, tinyprop) in CASES.items():
        keras.utils.set_random_seed(0)  # the same initial weights every run
        with tempfile.TemporaryDirectory(prefix="tinyprop-fast-bench-") as out:
            loss = "mse" if "MSE" in name else "sparse_categorical_crossentropy"
            manifest = export_training_model(build(), tp.TinyProp(*tinyprop), optimizer, 1e-3 if optimizer ==
                                             "adam" else 0.01, loss=loss, batch_size=batch, out_dir=out, fast=True)
            result = verify(out, steps=args.steps, check=False)
        diffs = " / ".join(
            f"{result.max_error(b):.1e}"
            for b in ("litert", "tflm_probe", "tflm_fast"))
        ops = ", ".join(f"{n}x {op.replace('TINYPROP_', '')}" for op, n in manifest["tflm_fast"]["device_ops"].items())
        rows.append(f"| {name} | {ops} | {'pass' if result.ok else 'FAIL'}, k identical: "
                    f"{'yes' if not result.k_mismatches else 'no'} | {diffs} | {manifest['tflm']['arena_bytes']:,} "
                    f"| {manifest['tflm_fast']['arena_bytes']:,} |")
        print(rows[-1], flush=True)
    body = (
        f"TinyProp{TINYPROP} unless the row says otherwise, {args.steps} training steps on random batches. TFLM "
        f"tree of the runner: `{os.environ.get('TINYPROP_TFLM_DIR') or os.environ.get('TINYPROP_TFLM_RUNNER')}`. "
        "Arenas in bytes on a 64-bit host (train.tflite: tflite-micro wheel; train_fast.tflite: the runner), each "
        "enough for a train and an infer invoke. The fast graph drops the selection's [B, M, M] comparison tensors, "
        "the masked dense gradient algebra and every BATCH_MATMUL (its Dense forwards run on TINYPROP_DENSE_FORWARD: "
        "TFLM's BATCH_MATMUL keeps a persistent transposed copy of each kernel, per op and per IF branch); with plain "
        "SGD the Dense update is fused into TINYPROP_DENSE_BACKWARD_SGD (no dW tensor); ReLU's backward is one "
        "op (TINYPROP_RELU_BACKWARD) instead of a mask kept from forward to backward. What remains large is "
        "weight-sized: the variables, their READ_VARIABLE copies and the new values assigned back (plus dW and the "
        "update's products for Adam, momentum and conv layers).\n\n" + "\n".join(rows) + "\n\n"
        "k identical means every sample's k in every step agrees between Keras and each runtime. The runtimes "
        "round the backward pass differently in the last bit (their matmuls and reductions sum in other orders), "
        "so a layer's per-sample error y differs by an ulp or so. The ratio divides first (q = y / ymax, then "
        "s_min + q * d): the sample that set the running max gets q = 1 exactly everywhere (the s_max = 1 row is "
        "the case where the former order, (y * d) / ymax, fell below M for about one y in ten, so runtimes whose y differ in the last bit disagreed). Another sample's k can still "
        "differ by one when M * bpr falls within an ulp of an integer by chance. A FAIL with identical k and "
        "~1e-4: Adam's amplification of rounding (converters/README.md).\n"
    )
    if not args.no_write:
        _results.write_section("Exported step on the TinyProp TFLM operators", "TINYPROP_TFLM_DIR=<tree> python "
                               "benchmarks/fast_step.py", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
