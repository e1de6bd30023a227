"""``tinyprop`` command line. Errors in what the user gave are one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import os
import sys


class UsageError(Exception):
    """A problem with the user's input: reported as one line, exit code 2."""


def _demo(args):
    from tinyprop_tf import outdir

    outdir.check(args.out, args.overwrite, regenerate=[outdir.project_dir_name(args.board)])
    from tinyprop_tf.demo import run_demo

    if args.board != "none":
        from tinyprop_tf.converters import board_projects

        board_projects.check_board(args.board)  # a typo fails now, not after the training
    run_demo(out_dir=args.out, epochs=args.epochs, pretrain_epochs=args.pretrain_epochs, seed=args.seed,
             board=None if args.board == "none" else args.board, overwrite=args.overwrite)


DEFAULT_POLICIES = ["dense", "static:0.2", "tinyprop:s_min=0.1,s_max=0.9,zeta=0.5"]
OVERWRITE_HELP = ("replace what --out holds (a previous export or run) as a whole, once this one has finished "
                  "(default: a non-empty --out is refused)")


def _finetune(args):
    from tinyprop_tf import outdir

    outdir.check(args.out, args.overwrite, inputs=[args.data, args.model])
    import datetime

    import keras

    from tinyprop_tf import experiment, policies, tasks

    if not os.path.exists(args.data):
        raise UsageError(f"--data {args.data}: no such file or folder")
    chosen = {spec: policies.from_spec(spec) for spec in (args.policy or DEFAULT_POLICIES)}
    if args.task == "dcase" and not args.machine:
        raise UsageError("--task dcase needs --machine (a machine type folder, e.g. fan, slider)")
    task = tasks.load_task(args.task, args.data, new_speaker=args.speaker, machine=args.machine,
                           machine_id=args.machine_id)
    out_dir = args.out or os.path.join(
        "tinyprop_out", f"finetune-{args.task}-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    print(f"Task {task.name}: {task.description}; {len(task.finetune[0])} samples to fine-tune, "
          f"{len(task.test[0])} to test, input {task.input_shape}")
    if args.model.endswith(".keras"):
        if not os.path.isfile(args.model):
            raise UsageError(f"--model {args.model}: no such file")
        pretrained = keras.models.load_model(args.model)
        expected = tuple(pretrained.input_shape[1:])
        if expected != tuple(task.input_shape):
            raise UsageError(f"--model {args.model} takes inputs {expected}, but task {task.name} gives "
                             f"{tuple(task.input_shape)}")
    else:
        keras.utils.set_random_seed(args.seed)  # the initial weights too: --seed makes the whole run repeatable
        pretrained = experiment.pretrain(tasks.build_model(args.model, task), task.pretrain, loss=task.loss,
                                         epochs=args.pretrain_epochs, seed=args.seed)
    about = {"what": f"fine-tune on {task.description}", "task": task.name, "data": args.data,
             "model": args.model, "policies": list(chosen)}
    experiment.compare(pretrained, chosen, task.finetune, task.evaluate, out_dir, metric_name=task.metric_name,
                       loss=task.loss, epochs=args.epochs, batch_size=args.batch_size,
                       learning_rate=args.learning_rate, seed=args.seed, about=about, overwrite=args.overwrite,
                       save_pretrained=not args.model.endswith(".keras"))


def _export(args):
    from tinyprop_tf import outdir

    project_name = outdir.project_dir_name(args.board)
    outdir.check(args.out, args.overwrite, regenerate=[project_name], inputs=[args.model])
    import keras

    from tinyprop_tf import policies
    from tinyprop_tf.converters import board_projects, export_training_model

    if args.board:
        board_projects.check_board(args.board)  # before the export: a typo fails fast, listing the valid boards
    if not os.path.isfile(args.model):
        raise UsageError(f"{args.model}: no such model file (expected a .keras file)")
    try:
        model = keras.models.load_model(args.model)
    except Exception as error:  # Keras raises many types for a bad file; the user needs the one line
        raise UsageError(f"{args.model}: cannot load as a Keras model ({type(error).__name__}: {error})") from None
    if args.policy:
        policy = policies.from_spec(args.policy)
    else:  # a sparsified model keeps its own policy; a plain one gets TinyProp's defaults, as --help says
        from tinyprop_tf.layers import sparse_layers

        policy = None if sparse_layers(model) else policies.TinyProp()
    options = {"momentum": args.momentum} if args.optimizer == "sgd" else {}
    # The export and its board project are one set: staged together, swapped in together (an edited main file of
    # the project is carried over by write_board_project).
    with outdir.replacing(args.out, args.overwrite, regenerate=[project_name], inputs=[args.model]) as folder:
        manifest = export_training_model(model, policy, optimizer=args.optimizer, learning_rate=args.learning_rate,
                                         loss=args.loss, batch_size=args.batch_size, out_dir=folder.path,
                                         fast=args.fast, **options)
        if args.board:
            board = board_projects.check_board(args.board).key
            project = board_projects.write_board_project(
                folder.path, board, os.path.join(folder.path, project_name),
                previous_dir=os.path.join(args.out, project_name), overwrite=args.overwrite)
    arena = manifest["tflm"].get("arena_bytes")
    print(f"Wrote {args.out}/: train.tflite (TFLM), train_litert.tflite (LiteRT signatures), weights, C arrays, "
          f"manifest.json" + (f"; TFLM arena {arena} bytes" if arena else ""))
    if args.fast:
        ops = ", ".join(f"{n}x {op}" for op, n in manifest["tflm_fast"]["device_ops"].items())
        print(f"Wrote {args.out}/train_fast.tflite: the same step on the TinyProp TFLM ops ({ops}); register "
              "micro/tflm/tinyprop_tflm.h in your MicroMutableOpResolver")
    print(f"Check it: tinyprop verify {args.out} --steps 10")
    if args.board:
        project_dir = os.path.join(args.out, project_name)
        print(f"Wrote {project_dir}/ ({project.platform} project, build instructions in README.md): "
              f"{project.budget_text}")


def _verify(args):
    from tinyprop_tf.converters.verify import verify

    result = verify(args.out_dir, steps=args.steps, rtol=args.rtol, seed=args.seed, check=False)
    print(result.summary())
    return result.returncode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinyprop", description="Sparse on-device fine-tuning, simulated in Keras.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="pretrain on MNIST, fine-tune on shifted MNIST with dense/static/TinyProp")
    demo.add_argument("--out", help="output folder (default: tinyprop_out/demo-<time>)")
    demo.add_argument("--epochs", type=int, default=12, help="fine-tuning epochs (default 12)")
    demo.add_argument("--pretrain-epochs", type=int, default=15)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--board", default="nrf52840dk",
                      help="board project written at the end: esp32s3 | esp32c3 | nrf52840dk | nrf5340dk, or none "
                           "(default nrf52840dk)")
    demo.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    demo.set_defaults(run=_demo)

    ft = sub.add_parser("finetune", help="fine-tune a model on your data with several back-propagation policies")
    ft.add_argument("--data", required=True, help="data folder (layout per --task)")
    ft.add_argument("--task", required=True, choices=["mnist", "fsdd", "kws", "dcase"])
    ft.add_argument("--model", default="auto",
                    help="a pretrained .keras file, or an architecture to pretrain first: mlp, cnn, ds_cnn, "
                         "autoencoder (default: cnn for mnist, ds_cnn for audio, autoencoder for dcase)")
    ft.add_argument("--policy", action="append",
                    help="repeatable: dense | static:RATIO | tinyprop[:s_min=..,s_max=..,zeta=..] | "
                         f"tinyprop_skip:tau=.. | ssprop:KEEP (default: {' '.join(DEFAULT_POLICIES)})")
    ft.add_argument("--out", help="output folder (default: tinyprop_out/finetune-<task>-<time>)")
    ft.add_argument("--epochs", type=int, default=10)
    ft.add_argument("--pretrain-epochs", type=int, default=15)
    ft.add_argument("--batch-size", type=int, default=32)
    ft.add_argument("--learning-rate", type=float, default=1e-3)
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--speaker", help="fsdd: the new speaker to personalise to (default yweweler)")
    ft.add_argument("--machine", help="dcase: machine type folder (fan, pump, slider, valve, ToyCar, ToyConveyor)")
    ft.add_argument("--machine-id", help="dcase: the machine id to fine-tune to (default: the last one)")
    ft.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    ft.set_defaults(run=_finetune)

    ex = sub.add_parser("export", help="write a training-capable .tflite (TFLM and LiteRT) of a Keras model")
    ex.add_argument("model", help="a .keras model (plain or sparsified)")
    ex.add_argument("--policy", help="dense | static:RATIO | tinyprop[:...] (default: the model's own, else "
                                     "TinyProp)")
    ex.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    ex.add_argument("--learning-rate", type=float)
    ex.add_argument("--momentum", type=float, default=0.0, help="sgd only")
    ex.add_argument("--loss", choices=["sparse_categorical_crossentropy", "mse"],
                    default="sparse_categorical_crossentropy")
    ex.add_argument("--batch-size", type=int, default=8)
    ex.add_argument("--fast", action="store_true",
                    help="also write train_fast.tflite: sparse layers select and back-propagate with the "
                         "TinyProp TFLM custom operators (micro/tflm) instead of masked dense builtins")
    ex.add_argument("--out", required=True, help="output folder")
    ex.add_argument("--board", help="also write a ready-to-build project for esp32s3 | esp32c3 (ESP-IDF) | "
                                    "nrf52840dk | nrf5340dk (Zephyr) into OUT/<board>_project")
    ex.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP + "; an edited main file of the "
                    "board project is kept, the new one written beside it as .new")
    ex.set_defaults(run=_export)

    ve = sub.add_parser("verify", help="train N identical steps in Keras, LiteRT and TFLM and compare")
    ve.add_argument("out_dir", help="a folder written by tinyprop export")
    ve.add_argument("--steps", type=int, default=10)
    ve.add_argument("--rtol", type=float, default=1e-5)
    ve.add_argument("--seed", type=int, default=0)
    ve.set_defaults(run=_verify)
    return parser


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    from tinyprop_tf.converters.flatbuffer import InvalidModelError
    from tinyprop_tf.converters.tflm import TFLMError
    from tinyprop_tf.converters.tflm_runner import RunnerError

    try:
        code = args.run(args)
    except (UsageError, ValueError, FileNotFoundError, NotADirectoryError, InvalidModelError, TFLMError,
            RunnerError) as error:
        print(f"tinyprop {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tinyprop {args.command}: interrupted", file=sys.stderr)
        return 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
