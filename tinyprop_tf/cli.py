"""``tinyprop`` command line.

Every check of what the user gave (options, numbers, paths, files) runs before TensorFlow is imported, which
takes seconds: a usage error is reported at once. An error is one line on stderr, ``tinyprop <command>: error:
...`` naming the option or file and what is expected, exit code 2, and nothing is written. Exit code 1 is kept
for ``verify`` finding the runtimes apart; 130 for an interrupt.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile


class UsageError(Exception):
    """A problem with the user's input: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (argparse's own print the whole usage first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# -- argument types (argparse reports their message with the option's name) ----------------------------------------
def _int_at_least(minimum: int, maximum: int | None = None):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"from {minimum} to {maximum:,}" if maximum is not None else f">= {minimum}"
            raise argparse.ArgumentTypeError(f"expected an integer {bound}, got {value}")
        return value

    return parse


def _real(low: float, high: float, *, low_open: bool = True, high_open: bool = False):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        below = value <= low if low_open else value < low
        above = value >= high if high_open else value > high
        if not math.isfinite(value) or below or above:
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"expected a number in {interval}, got {text}")
        return value

    return parse


_positive_rate = _real(0.0, math.inf, high_open=True)


def _rate_or_auto(text):
    if text == "auto":
        return text
    try:
        float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, got {text!r}") from None
    return _positive_rate(text)


ARCHITECTURES = ("auto", "mlp", "cnn", "ds_cnn", "autoencoder")
OVERWRITE_HELP = ("replace what --out holds (a previous export or run) as a whole, once this one has finished "
                  "(default: a non-empty --out is refused)")
TRAIN_LAST_HELP = ("train only the last N Dense/Conv1D/Conv2D/DepthwiseConv2D layers (each with the BatchNormalization "
                   "after it); the layers before them are frozen: forward only, no backward (default: all train)")
PLAN_HELP = ("which --train-last N and batch sizes (1-32) fit the board's RAM, each exported and its arena measured by "
             "TFLM's planner")
DEFAULT_POLICIES = ["dense", "static:0.2", "tinyprop:s_min=0.1,s_max=0.9,zeta=0.5", "budget"]
# verify keeps every step's batch in memory (and hands copies to the interpreters)
VERIFY_MAX_STEPS = 10_000


# -- checks that need no TensorFlow --------------------------------------------------------------------------------
def _check_keras_file(label: str, path: str) -> None:
    from tinyprop_tf.converters import artifacts  # no TensorFlow

    try:
        artifacts.check_keras_archive(path, label)
    except artifacts.ArtifactError as error:
        raise UsageError(str(error)) from None


def _check_hdf5_file(path: str) -> None:
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such file (expected a .keras or .h5 model file)")
    with open(path, "rb") as f:
        if f.read(8) != b"\x89HDF\r\n\x1a\n":
            raise UsageError(f"{path}: not an HDF5 file (empty, truncated or corrupt)")


def _check_board(board) -> None:
    from tinyprop_tf.converters import board_projects  # no TensorFlow

    try:
        board_projects.check_board(board)
    except board_projects.BoardProjectError as error:
        raise UsageError(f"--board: {error}") from None


def _check_out_dir(label: str, path: str) -> None:
    """``path`` is, or can be created as, a writable folder."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{label}{path}: exists and is not a folder")
    parent = os.path.abspath(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"{label}{path}: cannot be created ({parent} is not a folder)")
    try:  # the real test (permissions, a read-only file system, a pseudo file system); leaves nothing behind
        os.rmdir(tempfile.mkdtemp(prefix=".tinyprop-write-test-", dir=parent))
    except OSError as error:
        raise UsageError(f"{label}{path}: cannot write in {parent} ({error.strerror})") from None


def _check_out_free(args, regenerate=(), inputs=()) -> None:
    """``--out`` holds no previous export or run, unless ``--overwrite`` (``tinyprop_tf.outdir``)."""
    from tinyprop_tf import outdir  # no TensorFlow

    try:
        outdir.check(args.out, args.overwrite, regenerate=regenerate, inputs=inputs)
    except outdir.OutDirError as error:
        raise UsageError(str(error)) from None


def _project_dir_name(board):
    from tinyprop_tf import outdir

    return outdir.project_dir_name(board)


def _check_train_last(args, keras_file: str | None) -> None:
    """``--train-last N`` against the affine layers a .keras file's config lists (no TensorFlow); for an
    architecture name or an .h5 file the count is known once the model is built, and checked there."""
    if args.train_last is None or keras_file is None:
        return
    from tinyprop_tf import trainable  # no TensorFlow

    count = trainable.affine_layers_in_keras_file(keras_file)
    try:
        trainable.check_train_last(args.train_last, count, keras_file)
    except ValueError as error:
        raise UsageError(f"--train-last: {error}") from None


def _check_policies(specs) -> dict:
    from tinyprop_tf import policies  # no TensorFlow

    try:
        return {spec: policies.from_spec(spec) for spec in specs}
    except ValueError as error:
        raise UsageError(f"--policy: {error}") from None


def _check_demo(args):
    if args.board != "none":
        _check_board(args.board)
    if args.out:
        _check_out_dir("--out ", args.out)
        _check_out_free(args, regenerate=[_project_dir_name(args.board)])


def _check_finetune(args):
    if not os.path.exists(args.data):
        raise UsageError(f"--data {args.data}: no such file or folder")
    if args.model.endswith(".keras"):
        _check_keras_file("--model ", args.model)
    elif args.model not in ARCHITECTURES:
        raise UsageError(f"--model {args.model}: expected a .keras file or one of {', '.join(ARCHITECTURES[1:])}")
    if args.task == "dcase" and not args.machine:
        raise UsageError("--task dcase needs --machine (a machine type folder, e.g. fan, slider)")
    _check_train_last(args, args.model if args.model.endswith(".keras") else None)
    args.policies = _check_policies(args.policy or DEFAULT_POLICIES)
    if args.board:
        _check_board(args.board)
    if args.out:
        _check_out_dir("--out ", args.out)
        _check_out_free(args, inputs=[args.data, args.model])


def _check_export(args):
    if args.model.lower().endswith((".h5", ".hdf5")):  # a legacy Keras 2 file: Keras reads it, if it is HDF5
        _check_hdf5_file(args.model)
    else:
        _check_keras_file("", args.model)
        _check_train_last(args, args.model)
    if args.policy:
        _check_policies([args.policy])
    if args.momentum and args.optimizer != "sgd":
        raise UsageError(f"--momentum is for --optimizer sgd, not {args.optimizer}")
    if args.recompute and not args.fast:
        raise UsageError("--recompute is for --fast (the step on the TinyProp TFLM ops)")
    if args.board:
        _check_board(args.board)
    _check_out_dir("--out ", args.out)
    _check_out_free(args, regenerate=[_project_dir_name(args.board)], inputs=[args.model])


def _check_verify(args):
    from tinyprop_tf.converters import artifacts  # no TensorFlow

    try:
        manifest = artifacts.check_export(args.out_dir)
        artifacts.check_verify_steps(manifest, args.steps)
    except artifacts.ArtifactError as error:
        raise UsageError(str(error)) from None


def _check_sweep(args):
    import importlib.util
    import json

    from tinyprop_tf import sweep_spec  # no TensorFlow, no Ray

    try:
        args.spec = sweep_spec.parse(args.spec_file)
    except sweep_spec.SpecError as error:
        raise UsageError(f"{args.spec_file}: {error}") from None
    if args.address and args.num_cpus:
        raise UsageError("--num-cpus sizes the local Ray instance; a cluster (--address) has its own CPUs")
    _check_out_dir("--out ", args.out)
    base_file = os.path.join(args.out, sweep_spec.BASE_FILE)
    if os.path.isfile(base_file):
        with open(base_file) as handle:
            if json.load(handle) != args.spec.base:
                raise UsageError(f"--out {args.out}: holds a sweep of another task or model ([task] and [model] of "
                                 f"{os.path.join(args.out, 'spec.toml')}); use another --out")
    elif args.resume:
        raise UsageError(f"--resume: {args.out} holds no sweep to resume (no {sweep_spec.BASE_FILE})")
    elif os.path.isdir(args.out) and os.listdir(args.out):
        raise UsageError(f"--out {args.out}: not empty and not a sweep's folder (no {sweep_spec.BASE_FILE})")
    if importlib.util.find_spec("ray") is None:
        raise UsageError("tinyprop sweep runs on Ray, which is not installed: pip install -e '.[sweep]'")


# -- the commands --------------------------------------------------------------------------------------------------
def _demo(args):
    from tinyprop_tf import models
    from tinyprop_tf.demo import run_demo

    if args.train_last is not None:
        _train_last_usage(models.mlp(), args.train_last, apply=False)  # the demo's model
    run_demo(out_dir=args.out, epochs=args.epochs, pretrain_epochs=args.pretrain_epochs, seed=args.seed,
             board=None if args.board == "none" else args.board, overwrite=args.overwrite,
             train_last=args.train_last)


def _finetune(args):
    import datetime

    import keras

    from tinyprop_tf import experiment, outdir, tasks

    task = tasks.load_task(args.task, args.data, new_speaker=args.speaker, machine=args.machine,
                           machine_id=args.machine_id)
    out_dir = args.out or os.path.join(
        "tinyprop_out", f"finetune-{args.task}-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    print(f"Task {task.name}: {task.description}; {len(task.finetune[0])} samples to fine-tune, "
          f"{len(task.test[0])} to test, input {task.input_shape}")
    if args.model.endswith(".keras"):
        pretrained = _load_keras("--model ", args.model)
        expected = tuple(pretrained.input_shape[1:])
        if expected != tuple(task.input_shape):
            raise UsageError(f"--model {args.model} takes inputs {expected}, but task {task.name} gives "
                             f"{tuple(task.input_shape)}")
    else:
        keras.utils.set_random_seed(args.seed)  # the initial weights too: --seed makes the whole run repeatable
        model = tasks.build_model(args.model, task)
        if args.train_last is not None:
            _train_last_usage(model, args.train_last, apply=False)  # before pretraining
        pretrained = experiment.pretrain(model, task.pretrain, loss=task.loss, epochs=args.pretrain_epochs,
                                         seed=args.seed)
    about = {"what": f"fine-tune on {task.description}", "task": task.name, "data": args.data,
             "model": args.model, "policies": list(args.policies), "features": task.features}
    learning_rate, chosen = args.learning_rate, None
    if learning_rate == "auto":
        chosen = experiment.choose_learning_rate(
            pretrained, args.policies, task.finetune, loss=task.loss, epochs=args.epochs, batch_size=args.batch_size,
            optimizer=args.optimizer, seed=args.seed, train_last=args.train_last, batchnorm=args.batchnorm)
        learning_rate = chosen["learning_rate"]
    about["learning_rate"] = {"value": learning_rate, "chosen_on_held_out_samples": chosen}
    with outdir.replacing(out_dir, args.overwrite, keep_partial=True) as folder:
        report = experiment.compare_into(
            folder, pretrained, args.policies, task.finetune, task.evaluate, metric_name=task.metric_name,
            loss=task.loss, epochs=args.epochs, batch_size=args.batch_size, learning_rate=learning_rate,
            optimizer=args.optimizer,
            seed=args.seed, about=about, save_pretrained=not args.model.endswith(".keras"),
            train_last=args.train_last, batchnorm=args.batchnorm, finish=not args.board)
        if args.board:
            from tinyprop_tf.converters import planning

            policy = planning.planning_policy(args.policies.values())
            print(f"\nPlanning on-device fine-tuning of the pretrained model for {args.board} ({policy!r}, SGD, "
                  "as tinyprop export exports it) ...")
            plan = planning.plan_board(pretrained, args.board, policy, optimizer="sgd",
                                       loss="mse" if task.loss == "mse" else "sparse_categorical_crossentropy")
            _print_plan(plan, args.train_last)
            report["board_plan"] = plan
            experiment.write_report(folder, report, complete=True)


def _print_plan(plan: dict, train_last: int | None) -> None:
    print(plan["text"])
    if train_last is not None:
        row = plan["rows"][train_last - 1]
        print(f"  --train-last {train_last}: " + (f"fits up to batch {row['largest_batch']}" if row["largest_batch"]
                                                  else "fits no batch"))


def _train_last_usage(model, n, apply: bool = True) -> list[str]:
    """``trainable.train_last`` (``trained_layers`` without ``apply``) with its error as the option's."""
    from tinyprop_tf import trainable

    try:
        return (trainable.train_last if apply else trainable.trained_layers)(model, n)
    except ValueError as error:
        raise UsageError(f"--train-last: {error}") from None


def _load_keras(label: str, path: str):
    import keras

    try:
        return keras.models.load_model(path)
    except Exception as error:  # Keras raises many types for a bad file; the user needs the one line
        raise UsageError(f"{label}{path}: cannot load as a Keras model ({type(error).__name__}: {error})") from None


def _sweep(args):
    from tinyprop_tf import sweep

    sweep.run(args.spec, args.out, address=args.address, num_cpus=args.num_cpus)


def _export(args):
    from tinyprop_tf import outdir, policies, trainable
    from tinyprop_tf.converters import board_projects, export_training_model, planning

    model = _load_keras("", args.model)
    if args.train_last is not None:
        trained = _train_last_usage(model, args.train_last)
        print(f"Training the last {args.train_last} affine layer(s): {', '.join(trained)}; the others are frozen "
              "(constants in flash, forward only)")
    if args.policy:
        policy = policies.from_spec(args.policy)
    else:  # a sparsified model keeps its own policy; a plain one gets TinyProp's defaults, as --help says
        from tinyprop_tf.sparsity_state import sparse_layers

        policy = None if sparse_layers(model) else policies.TinyProp()
    options = {"momentum": args.momentum} if args.optimizer == "sgd" else {}
    project_name = outdir.project_dir_name(args.board)
    # The export and its board project are one set: staged together, swapped in together (an edited main file of
    # the project is carried over by write_board_project).
    with outdir.replacing(args.out, args.overwrite, regenerate=[project_name], inputs=[args.model]) as folder:
        manifest = export_training_model(model, policy, optimizer=args.optimizer, learning_rate=args.learning_rate,
                                         loss=args.loss, batch_size=args.batch_size, out_dir=folder.path,
                                         fast=args.fast, recompute=args.recompute, **options)
        if args.board:
            board = board_projects.check_board(args.board).key
            project = board_projects.write_board_project(
                folder.path, board, os.path.join(folder.path, project_name),
                previous_dir=os.path.join(args.out, project_name), overwrite=args.overwrite)
            print(f"Planning {board}: which trainable sets and batch sizes fit ...", file=sys.stderr)
            n = args.train_last or len(trainable.affine_layers(model))
            plan = planning.plan_board(model, board, policy, optimizer=args.optimizer,
                                       learning_rate=args.learning_rate, loss=args.loss,
                                       requested=(n, args.batch_size), **options)
            outdir.write_json(os.path.join(folder.path, "plan.json"), plan)
    arena = manifest["tflm"].get("arena_bytes")
    print(f"Wrote {args.out}/: train.tflite (TFLM), train_litert.tflite (LiteRT signatures), weights, C arrays, "
          f"manifest.json" + (f"; TFLM arena {arena} bytes" if arena else ""))
    if args.fast:
        ops = ", ".join(f"{n}x {op}" for op, n in manifest["tflm_fast"]["device_ops"].items())
        fast_arena = manifest["tflm_fast"].get("arena_bytes")
        print(f"Wrote {args.out}/train_fast.tflite: the same step on the TinyProp TFLM ops ({ops}), training state "
              "in place" + (f"; TFLM arena {fast_arena} bytes" if fast_arena else "")
              + "; register micro/tflm/tinyprop_tflm.h in your MicroMutableOpResolver")
    print(f"Check it: tinyprop verify {args.out} --steps 10")
    if args.board:
        project_dir = os.path.join(args.out, project_name)
        print(f"Wrote {project_dir}/ ({project.platform} project, build instructions in README.md): "
              f"{project.budget_text}")
        _print_plan(plan, None)
        if plan["arena_source"].startswith("train_fast") and not args.fast:
            print("  (the plan measured train_fast.tflite; the project above runs train.tflite: export with --fast "
                  "for the planned figures)")
        print(f"Wrote {os.path.join(args.out, 'plan.json')}")


def _verify(args):
    from tinyprop_tf.converters.verification import verify

    ram = None if args.m4_ram_kib is None else args.m4_ram_kib * 1024
    result = verify(args.out_dir, steps=args.steps, rtol=args.rtol, seed=args.seed, check=False, m4_ram_bytes=ram)
    print(result.summary())
    return result.returncode


def build_parser() -> argparse.ArgumentParser:
    from tinyprop_tf._validate import AUTO_LEARNING_RATES, OPTIMIZERS  # no TensorFlow
    from tinyprop_tf.batchnorm import BATCHNORM_MODES  # NumPy only

    parser = _Parser(prog="tinyprop", description="Sparse on-device fine-tuning, simulated in Keras.")
    sub = parser.add_subparsers(dest="command", required=True)
    epochs, seed = _int_at_least(1), _int_at_least(0)

    demo = sub.add_parser("demo", help="pretrain on MNIST, fine-tune on shifted MNIST with dense/static/TinyProp")
    demo.add_argument("--out", help="output folder (default: tinyprop_out/demo-<time>)")
    demo.add_argument("--epochs", type=epochs, default=12, help="fine-tuning epochs (default 12)")
    demo.add_argument("--pretrain-epochs", type=epochs, default=15)
    demo.add_argument("--seed", type=seed, default=0)
    demo.add_argument("--board", default="nrf52840dk",
                      help="board project written at the end: esp32s3 | esp32c3 | nrf52840dk | nrf5340dk, or none "
                           "(default nrf52840dk)")
    demo.add_argument("--train-last", type=_int_at_least(1), metavar="N", help=TRAIN_LAST_HELP)
    demo.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    demo.set_defaults(run=_demo, check=_check_demo)

    ft = sub.add_parser("finetune", help="fine-tune a model on your data with several back-propagation policies")
    ft.add_argument("--data", required=True, help="data folder (layout per --task)")
    ft.add_argument("--task", required=True, choices=["mnist", "fsdd", "kws", "dcase"])
    ft.add_argument("--model", default="auto",
                    help="a pretrained .keras file, or an architecture to pretrain first: mlp, cnn, ds_cnn, "
                         "autoencoder (default: cnn for mnist, ds_cnn for audio, autoencoder for dcase)")
    ft.add_argument("--policy", action="append",
                    help="repeatable: dense | static:RATIO | tinyprop[:s_min=..,s_max=..,zeta=..,"
                         "per_sample_max=0|1,ymax_decay=..] | budget[:BUDGET,mode=auto|entries|samples,decay=..,"
                         "min_kept=..,skip_below=..] (BudgetProp, "
                         f"the project's policy) | tinyprop_skip:tau=.. | ssprop:KEEP (default: "
                         f"{' '.join(DEFAULT_POLICIES)})")
    ft.add_argument("--out", help="output folder (default: tinyprop_out/finetune-<task>-<time>)")
    ft.add_argument("--epochs", type=epochs, default=10)
    ft.add_argument("--pretrain-epochs", type=epochs, default=15)
    ft.add_argument("--batch-size", type=_int_at_least(1), default=32)
    ft.add_argument("--learning-rate", type=_rate_or_auto, default="auto",
                    help="a number, or auto (default): every policy fine-tunes a quarter of the fine-tuning samples "
                         f"held out at each of {', '.join(f'{r:g}' for r in AUTO_LEARNING_RATES)}; the rate with the "
                         "best mean held-out score over the policies is used for the comparison (never the test "
                         "split; 4x the work). No one rate suits every model: benchmarks/RESULTS.md")
    ft.add_argument("--optimizer", choices=OPTIMIZERS, default="adam",
                    help="lazy_adam: Adam that leaves weights with a zero gradient and their moments alone; "
                         "momentum: SGD with momentum 0.9 (default adam)")
    ft.add_argument("--seed", type=seed, default=0)
    ft.add_argument("--speaker", help="fsdd: the new speaker to personalise to (default yweweler)")
    ft.add_argument("--machine", help="dcase: machine type folder (fan, pump, slider, valve, ToyCar, ToyConveyor)")
    ft.add_argument("--machine-id", help="dcase: the machine id to fine-tune to (default: the last one)")
    ft.add_argument("--train-last", type=_int_at_least(1), metavar="N", help=TRAIN_LAST_HELP)
    ft.add_argument("--batchnorm", choices=BATCHNORM_MODES, default="fold",
                    help="BatchNormalization while fine-tuning: fold = folded with the pretrained statistics, as "
                         "the exported step trains it (default); adapt = statistics re-estimated on the "
                         "fine-tuning data (forward passes), then folded; train = Keras's batch statistics "
                         "(host only: the device never normalises with batch statistics)")
    ft.add_argument("--board", help="also plan on-device fine-tuning for esp32s3 | esp32c3 | nrf52840dk | "
                                    f"nrf5340dk: {PLAN_HELP}; the table goes into report.json (board_plan)")
    ft.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    ft.set_defaults(run=_finetune, check=_check_finetune)

    sw = sub.add_parser("sweep", help="fine-tune over grids of policies, optimizer settings, trained layers and "
                                      "seeds as Ray tasks (local, or on a cluster)")
    sw.add_argument("spec_file", metavar="SPEC", help="a TOML sweep spec (see README: tinyprop sweep)")
    sw.add_argument("--out", required=True, help="output folder: trials/<trial>.json, sweep.json, sweep.md, "
                                                 "sweep.png, pretrained.keras")
    sw.add_argument("--address", help="a running Ray cluster (ray://HOST:10001, HOST:PORT, or auto); default: a "
                                      "local Ray instance")
    sw.add_argument("--num-cpus", type=_int_at_least(1), help="CPUs of the local instance, one trial each "
                                                              "(default: all cores; not with --address)")
    sw.add_argument("--resume", action="store_true",
                    help="continue the sweep in --out (rerunning without it does the same): finished trials are "
                         "skipped, failed ones run again")
    sw.set_defaults(run=_sweep, check=_check_sweep)

    ex = sub.add_parser("export", help="write a training-capable .tflite (TFLM and LiteRT) of a Keras model")
    ex.add_argument("model", help="a .keras model (plain or sparsified; a legacy .h5 file is read too)")
    ex.add_argument("--policy", help="dense | static:RATIO | tinyprop[:...] | budget[:...] (default: the model's "
                                     "own, else TinyProp)")
    ex.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    ex.add_argument("--learning-rate", type=_positive_rate)
    ex.add_argument("--momentum", type=_real(0.0, 1.0, low_open=False), default=0.0, help="sgd only, in [0, 1]")
    ex.add_argument("--loss", choices=["sparse_categorical_crossentropy", "mse"],
                    default="sparse_categorical_crossentropy")
    ex.add_argument("--batch-size", type=_int_at_least(1), default=8)
    ex.add_argument("--fast", action="store_true",
                    help="also write train_fast.tflite: sparse layers select and back-propagate with the "
                         "TinyProp TFLM custom operators (micro/tflm) instead of masked dense builtins")
    ex.add_argument("--recompute", action="store_true",
                    help="with --fast: run the first trained layer, a Conv2D -> ReLU -> global pooling block after "
                         "a frozen prefix (e.g. a DS-CNN's last pointwise conv with --train-last 2), sample by "
                         "sample, recomputing the prefix for its backward: none of its batch-sized activations, "
                         "for a second forward pass of the prefix per step (the same numbers)")
    ex.add_argument("--train-last", type=_int_at_least(1), metavar="N", help=TRAIN_LAST_HELP)
    ex.add_argument("--out", required=True, help="output folder")
    ex.add_argument("--board",
                    help="also write a ready-to-build project for esp32s3 | esp32c3 (ESP-IDF) | "
                         f"nrf52840dk | nrf5340dk (Zephyr) into OUT/<board>_project, and plan: {PLAN_HELP} "
                         "(OUT/plan.json)")
    ex.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP + "; an edited main file of the "
                    "board project is kept, the new one written beside it as .new")
    ex.set_defaults(run=_export, check=_check_export)

    ve = sub.add_parser("verify", help="train N identical steps in Keras, LiteRT and TFLM and compare them with "
                                       "the same steps in float64")
    ve.add_argument("out_dir", help="a folder written by tinyprop export")
    ve.add_argument("--steps", type=_int_at_least(1, VERIFY_MAX_STEPS), default=10)
    ve.add_argument("--rtol", type=_real(0.0, 1.0, high_open=True), default=1e-5,
                    help="floor of the tolerance, relative (default 1e-5); see converters/README.md")
    ve.add_argument("--seed", type=seed, default=0)
    ve.add_argument("--m4-ram-kib", type=_int_at_least(64, 4096), default=None,
                    help="RAM of the emulated Cortex-M4F run (tflm_m4 row), KiB: e.g. 256 (nRF52840); a model that "
                         "does not fit fails (default: all 4096 KiB of QEMU's mps2-an386)")
    ve.set_defaults(run=_verify, check=_check_verify)
    return parser


def _one_line(text) -> str:
    """An error message as one line: a multi-line one (a converter's op list, an interpreter's output tail) has
    its lines joined with ' | '."""
    return " | ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _report(command: str, message) -> int:
    print(f"tinyprop {command}: error: {_one_line(message)}", file=sys.stderr)
    return 2


def _run(args) -> int:
    try:
        args.check(args)  # no TensorFlow yet: a usage error is reported at once, before anything is written
    except UsageError as error:
        return _report(args.command, error)
    from tinyprop_tf._quiet import import_tensorflow

    import_tensorflow()
    import tensorflow as tf

    from tinyprop_tf.converters.tflm_pip import TFLMError
    from tinyprop_tf.converters.tflm_host_runner import RunnerError

    try:
        return args.run(args) or 0
    except (UsageError, ValueError, TFLMError, RunnerError) as error:  # ValueError: ours and Keras' input checks
        return _report(args.command, error)
    except tf.errors.OpError as error:  # e.g. the sparse layers' NaN check: training diverged
        return _report(args.command, f"TensorFlow: {error.message}")


def main(argv=None) -> int:
    from tinyprop_tf import interrupt

    args = build_parser().parse_args(argv)
    interrupt.install()
    try:
        return _run(args)
    except OSError as error:  # a file or folder the command could not read or write
        where = f"{error.filename}: " if error.filename else ""
        return _report(args.command, f"{where}{error.strerror or error}")
    except KeyboardInterrupt:
        print(f"tinyprop {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
