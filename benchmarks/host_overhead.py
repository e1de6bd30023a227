"""Host overhead of the sparse layers: training-step time vs the plain Keras model, same data, one run.

    .venv/bin/python benchmarks/host_overhead.py [--steps 40] [--repeats 5]

Each variant is timed over ``--repeats`` passes of ``--steps`` steps after a warm-up pass, the passes of all
variants interleaved (so that slow phases of the machine hit every variant); the best pass counts. Both plain
and sparse models run without XLA (the sparse layers opt out of XLA; on this CPU XLA made the plain DS-CNN ~10x
slower, see README).
Target (issue 2): TinyProp <= 1.5x plain Keras.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _results  # noqa: E402

import tinyprop_tf as tp  # noqa: E402
from tinyprop_tf import models  # noqa: E402

BATCH = 32


def compiled(model, x, y):
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=False)
    model.fit(x[: 2 * BATCH], y[: 2 * BATCH], batch_size=BATCH, epochs=1, verbose=0)  # trace and warm up
    return model


def step_times_ms(models_by_name, x, y, steps: int, repeats: int) -> dict:
    """Best ms per step of each model; passes are interleaved so that drift of the machine hits all alike."""
    n = steps * BATCH
    best = {name: float("inf") for name in models_by_name}
    for _ in range(repeats):
        for name, model in models_by_name.items():
            start = time.perf_counter()
            model.fit(x[:n], y[:n], batch_size=BATCH, epochs=1, verbose=0, shuffle=False)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: 1000.0 * t / steps for name, t in best.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only, don't update RESULTS.md")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(0)
    cases = {
        "MLP 784-32-16-10": (models.mlp(), (784,)),
        "DS-CNN KWS (49x10, 64 ch, 4 blocks)": (models.ds_cnn(filters=64), (49, 10, 1)),
    }
    variants = {
        "DenseBackprop": tp.DenseBackprop(),
        "StaticTopK(0.2)": tp.StaticTopK(0.2),
        "TinyProp(0.1,0.9,0.5)": tp.TinyProp(0.1, 0.9, 0.5),
        "SsProp(0.5)": tp.SsProp(0.5),
    }
    rows = ["| model | variant | ms / step | x plain Keras |", "|---|---|---:|---:|"]
    for case, (base, shape) in cases.items():
        x = rng.normal(size=(args.steps * BATCH,) + shape).astype("float32")
        y = rng.integers(0, base.output_shape[-1], len(x))
        candidates = {"plain Keras": compiled(keras.models.clone_model(base), x, y)}
        for name, policy in variants.items():
            if isinstance(policy, tp.SsProp) and case.startswith("MLP"):
                continue  # ssProp converts 2-D convolutions only
            candidates[name] = compiled(tp.sparsify(base, policy, verbose=False), x, y)
        times = step_times_ms(candidates, x, y, args.steps, args.repeats)
        for name, ms in times.items():
            rows.append(f"| {case} | {name} | {ms:.2f} | {ms / times['plain Keras']:.2f} |")
            print(rows[-1], flush=True)
    load_after = os.getloadavg()[0]
    body = (
        f"Training-step time, batch {BATCH}, Adam, best of {args.repeats} interleaved passes of {args.steps} steps. "
        "Target: TinyProp <= 1.5x plain Keras.\n\n" + "\n".join(rows) + "\n\n"
        f"Machine load (1-min average) {load_before:.1f} before, {load_after:.1f} after the run, on "
        f"{os.cpu_count()} cores: above ~1 the MLP rows (2-4 ms steps) move by tens of percent between runs. "
        "StaticTopK and TinyProp execute the same ops (only the ratio formula's inputs differ), so a large "
        "gap between them is noise, not cost."
    )
    if not args.no_write:
        _results.write_section("Host overhead of the sparse layers", "python benchmarks/host_overhead.py", body)


if __name__ == "__main__":
    main()
