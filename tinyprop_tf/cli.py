"""``tinyprop`` command line. Errors in what the user gave are one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import os
import sys


class UsageError(Exception):
    """A problem with the user's input: reported as one line, exit code 2."""


def _demo(args):
    from tinyprop_tf.demo import run_demo

    run_demo(out_dir=args.out, epochs=args.epochs, pretrain_epochs=args.pretrain_epochs, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinyprop", description="Sparse on-device fine-tuning, simulated in Keras.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="pretrain on MNIST, fine-tune on shifted MNIST with dense/static/TinyProp")
    demo.add_argument("--out", help="output folder (default: tinyprop_out/demo-<time>)")
    demo.add_argument("--epochs", type=int, default=12, help="fine-tuning epochs (default 12)")
    demo.add_argument("--pretrain-epochs", type=int, default=15)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)
    return parser


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (UsageError, ValueError, FileNotFoundError, NotADirectoryError) as error:
        print(f"tinyprop {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tinyprop {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
