"""``verify(out_dir, steps=10)``: the same training steps in Keras, LiteRT and the tflite-micro interpreter.

Backends, all fed the same batches:
- keras: ``reference.keras`` (the sparsified, BatchNorm-folded model) trained with a GradientTape loop and the
  Keras optimizer of the manifest, forward in inference mode (as the exported step: Dropout off);
- litert: ``train_litert.tflite`` through its ``train`` signature; weights read back with ``save``;
- tflm: ``train.tflite`` in the tflite-micro interpreter (in a child process: it may abort on a bad model)
  with the measured arena, exactly as shipped;
- tflm_probe: a copy of ``train.tflite`` whose entry subgraph also outputs every weight (only the I/O lists
  are edited, see ``flatbuffer.with_variable_outputs``): TFLM has no API to read resource variables and its
  preserve-all-tensors mode is capped at 1024 tensors, so this is how the TFLM weights are compared.

Compared: loss per step, every weight after the last step (max abs and max relative difference, relative to
the tensor's largest magnitude), the model output of an inference call after training, and k: per sample
and exactly between LiteRT and TFLM, and per step (sum over the batch) and overall min/max against the Keras
layers' accounting.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

import tinyprop_tf  # noqa: F401  (registers the sparse layers for loading reference.keras)
from tinyprop_tf import layers as layers_lib
from tinyprop_tf.converters import flatbuffer, step, tflm, tflm_runner
from tinyprop_tf.converters.export import MODE_INFER, MODE_TRAIN


class VerificationError(AssertionError):
    """The backends disagree beyond the tolerance."""

    def __init__(self, result):
        super().__init__(result.summary())
        self.result = result


@dataclasses.dataclass
class VerifyResult:
    out_dir: str
    steps: int
    rtol: float
    losses: dict  # backend -> [steps]
    loss_max_abs_diff: dict  # backend -> float (vs keras)
    loss_max_rel_diff: dict
    weight_max_abs_diff: dict  # backend -> {path: float}
    weight_max_rel_diff: dict
    output_max_abs_diff: dict  # backend -> float (inference output after training, vs keras)
    k: dict  # backend -> [steps, layers, batch] (litert, tflm); keras: [steps, layers] sums over the batch
    k_layers: list
    k_mismatches: list
    arena_bytes: int | None
    failures: list
    notes: list = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def returncode(self) -> int:
        return 0 if self.ok else 1

    def max_weight_abs_diff(self, backend):
        return max(self.weight_max_abs_diff[backend].values(), default=0.0)

    def max_weight_rel_diff(self, backend):
        return max(self.weight_max_rel_diff[backend].values(), default=0.0)

    def summary(self) -> str:
        lines = [f"verify {self.out_dir}: {self.steps} steps, tolerance {self.rtol:g} relative"]
        for b in ("litert", "tflm", "tflm_probe", "tflm_fast"):
            if b not in self.loss_max_abs_diff:
                continue
            line = (f"  {b:14s} vs keras: loss max abs {self.loss_max_abs_diff[b]:.3g} "
                    f"(rel {self.loss_max_rel_diff[b]:.3g})")
            if b in self.weight_max_abs_diff:
                line += (f", weights max abs {self.max_weight_abs_diff(b):.3g} "
                         f"(rel {self.max_weight_rel_diff(b):.3g})")
            if b in self.output_max_abs_diff:
                line += f", infer output max abs {self.output_max_abs_diff[b]:.3g}"
            lines.append(line)
        k = self.k.get("litert")
        if k is not None and len(self.k_layers):
            means = ", ".join(f"{name} {k[:, i].mean():.2f}" for i, name in enumerate(self.k_layers))
            lines.append(f"  mean k per sample: {means}")
        lines.append(f"  k: {'identical' if not self.k_mismatches else '; '.join(self.k_mismatches[:5])}")
        if self.arena_bytes:
            lines.append(f"  TFLM arena: {self.arena_bytes} bytes")
        lines.extend(f"  note: {n}" for n in self.notes)
        lines.append("  PASS" if self.ok else "  FAIL: " + "; ".join(self.failures[:10]))
        return "\n".join(lines)

    def __str__(self):
        return self.summary()


def _read(out_dir, name):
    path = os.path.join(out_dir, name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found (is {out_dir!r} an export directory?)")
    with open(path, "rb") as f:
        return f.read()


def load_export(out_dir):
    """(manifest, tflm bytes, litert bytes), validated: a malformed or modified .tflite raises
    ``InvalidModelError`` with the reason, before any interpreter sees it."""
    try:
        manifest = json.loads(_read(out_dir, "manifest.json"))
    except json.JSONDecodeError as e:
        raise flatbuffer.InvalidModelError(f"{out_dir}/manifest.json is not valid JSON: {e}") from None
    if manifest.get("format") != "tinyprop-train/1":
        raise flatbuffer.InvalidModelError(f"{out_dir}/manifest.json: unknown format {manifest.get('format')!r}")
    blobs = {}
    for name in ("train.tflite", "train_litert.tflite"):
        data = _read(out_dir, name)
        flatbuffer.load(data, name)  # structure first: the clearer message for a truncated file
        expected = manifest["files"].get(name, {}).get("sha256")
        if expected and hashlib.sha256(data).hexdigest() != expected:
            raise flatbuffer.InvalidModelError(
                f"{name}: contents do not match manifest.json (modified or truncated after export)")
        blobs[name] = data
    return manifest, blobs["train.tflite"], blobs["train_litert.tflite"]


def make_batches(manifest, steps, seed=0, x=None, y=None):
    b = manifest["batch_size"]
    in_shape = manifest["input"]["shape"][1:]
    target = manifest["target"]
    rng = np.random.default_rng(seed)
    if x is None:
        xs = rng.normal(size=(steps, b, *in_shape)).astype(np.float32)
    else:
        x = np.asarray(x, np.float32).reshape(-1, *in_shape)
        idx = np.arange(steps * b) % len(x)
        xs = x[idx].reshape(steps, b, *in_shape)
    if y is None:
        if target["dtype"] == "int32":
            classes = manifest["output_shape"][-1]
            ys = rng.integers(0, classes, size=(steps, b)).astype(np.int32)
        else:
            ys = rng.normal(size=(steps, b, *target["shape"][1:])).astype(np.float32)
    else:
        y = np.asarray(y, np.int32 if target["dtype"] == "int32" else np.float32).reshape(-1, *target["shape"][1:])
        idx = np.arange(steps * b) % len(y)
        ys = y[idx].reshape(steps, b, *target["shape"][1:])
    return xs, ys


# --------------------------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------------------------
def run_keras(out_dir, manifest, xs, ys):
    ref = keras.models.load_model(os.path.join(out_dir, "reference.keras"), compile=False)
    opt = step.OptimizerConfig(**{k: v for k, v in manifest["optimizer"].items() if k != "amsgrad"}).to_keras()
    if manifest["loss"] == "sparse_categorical_crossentropy":
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        loss_fn = keras.losses.MeanSquaredError()
    trainable = ref.trainable_variables
    sparse = {layer.name: layer for layer in layers_lib.sparse_layers(ref)}
    order = [sparse[name] for name in manifest["sparse_layers"]]
    k_index = layers_lib.STAT_SUMS.index("k_sum")
    losses, k_sums = [], []
    for xb, yb in zip(xs, ys):
        before = np.array([layer.sparsity_state.sums.numpy()[k_index] for layer in order])
        with tf.GradientTape() as tape:
            out = ref(xb, training=False)
            loss = loss_fn(yb, out)
        grads = tape.gradient(loss, trainable)
        opt.apply_gradients(zip(grads, trainable))
        after = np.array([layer.sparsity_state.sums.numpy()[k_index] for layer in order])
        losses.append(float(loss.numpy()))
        k_sums.append(after - before)
    k_idx = layers_lib.STAT_EXTREMES.index("k")
    k_min = np.array([layer.sparsity_state.minima.numpy()[k_idx] for layer in order])
    k_max = np.array([layer.sparsity_state.maxima.numpy()[k_idx] for layer in order])
    weights = {step.weight_key(layer.name, w): np.asarray(w.numpy())
               for layer in ref.layers for w in layer.trainable_weights}
    output = np.asarray(ref(xs[0], training=False))
    return {"losses": np.array(losses), "k_sum": np.array(k_sums), "k_min": k_min, "k_max": k_max,
            "weights": weights, "output": output}


def run_litert(data, manifest, xs, ys):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data)
    train = interp.get_signature_runner("train")
    losses, ks = [], []
    for xb, yb in zip(xs, ys):
        out = train(x=xb, y=yb)
        losses.append(float(out["loss"]))
        ks.append(np.array(out["k"]))
    saved = interp.get_signature_runner("save")()
    by_name = {e["name"]: e["path"] for e in manifest["weights"]}
    weights = {by_name[k]: np.array(v) for k, v in saved.items()}
    output = np.array(interp.get_signature_runner("infer")(x=xs[0])["output"])
    return {"losses": np.array(losses), "k": np.array(ks), "weights": weights, "output": output,
            "interpreter": interp}


def _tflm_inputs(manifest, xs, ys):
    arrays = {}
    for d in manifest["tflm"]["inputs"]:
        for s in range(len(xs)):
            arrays[f"in{d['index']}_s{s}"] = {"x": xs[s], "y": ys[s], "mode": np.array(MODE_TRAIN, np.int32)}[d["name"]]
        arrays[f"in{d['index']}_infer"] = {"x": xs[0], "y": ys[0], "mode": np.array(MODE_INFER, np.int32)}[d["name"]]
    return arrays


def run_tflm(data, manifest, xs, ys, probe: bool):
    """The shipped model with the measured arena (probe=False), or its probe copy that also outputs the weights
    (probe=True; see ``flatbuffer.with_variable_outputs``), arena measured for it."""
    outputs = {d["name"]: d["index"] for d in manifest["tflm"]["outputs"]}
    n_in, n_out = len(manifest["tflm"]["inputs"]), len(manifest["tflm"]["outputs"])
    var_names = [step.safe_name(e["path"]) for e in manifest["weights"]]
    if probe:
        data = flatbuffer.with_variable_outputs(data, var_names)
    inputs = _tflm_inputs(manifest, xs, ys)
    with tempfile.TemporaryDirectory(prefix="tinyprop-verify-") as tmp:
        path = os.path.join(tmp, "train.tflite")
        with open(path, "wb") as f:
            f.write(data)
        n_out_run = n_out + (len(var_names) if probe else 0)
        arena = manifest["tflm"]["arena_bytes"]
        if probe or not arena:
            arena = tflm.measure_arena(path, inputs, n_in, n_out_run)
        res = tflm.run(path, arena, inputs, n_in, n_out_run, len(xs))
    steps = len(xs)
    result = {
        "losses": np.array([float(res[f"out{outputs['loss']}_s{s}"]) for s in range(steps)]),
        "k": np.array([res[f"out{outputs['k']}_s{s}"] for s in range(steps)]),
        "output": res[f"out{outputs['output']}_infer"],
    }
    if probe:
        result["weights"] = {e["path"]: res[f"out{n_out + i}_infer"] for i, e in enumerate(manifest["weights"])}
    return result


def run_tflm_fast(data, manifest, xs, ys, runner):
    """train_fast.tflite (TinyProp custom ops) in ``tinyprop_tflm_runner``: the probe copy (weights as extra
    outputs), ``steps`` train invokes then one infer invoke."""
    outputs = {d["name"]: d["index"] for d in manifest["tflm"]["outputs"]}
    n_out = len(manifest["tflm"]["outputs"])
    data = flatbuffer.with_variable_outputs(data, [step.safe_name(e["path"]) for e in manifest["weights"]])
    inputs = _tflm_inputs(manifest, xs, ys)  # the feeds of the tflite-micro runs, by input index and step
    steps = len(xs)
    n_in = len(manifest["tflm"]["inputs"])
    feeds = [[inputs[f"in{i}_{step}"] for i in range(n_in)] for step in [f"s{s}" for s in range(steps)] + ["infer"]]
    res, arena_used = tflm_runner.run(runner, data, feeds)
    return {
        "losses": np.array([float(res[s][outputs["loss"]]) for s in range(steps)]),
        "k": np.array([res[s][outputs["k"]] for s in range(steps)]),
        "output": res[steps][outputs["output"]],
        "weights": {e["path"]: res[steps][n_out + i] for i, e in enumerate(manifest["weights"])},
        "arena_used": arena_used,
    }


# --------------------------------------------------------------------------------------------------------------
def _rel(diff, ref):
    scale = float(np.max(np.abs(ref))) if np.size(ref) else 0.0
    return diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


def verify(out_dir, steps: int = 10, rtol: float = 1e-5, seed: int = 0, x=None, y=None, check: bool = True,
           backends=("litert", "tflm", "tflm_fast")) -> VerifyResult:
    """Train ``steps`` identical steps in Keras, LiteRT and TFLM and compare (see the module doc).

    Args:
      out_dir: an ``export_training_model`` directory.
      steps: training steps (each on its own batch).
      rtol: tolerance, relative: per step for the loss, per tensor (to its largest magnitude) for weights
        and the inference output.
      seed, x, y: the batches: random (normal inputs, uniform labels / normal targets) from ``seed``, or taken
        in order (cycled) from arrays ``x`` [n, *input_shape], ``y`` [n] or [n, *output_shape].
      check: raise ``VerificationError`` past tolerance (otherwise inspect ``result.ok``/``returncode``).

    Raises:
      InvalidModelError: a missing, truncated or malformed .tflite (before any interpreter runs).
      TFLMError: the tflite-micro interpreter failed or crashed (it runs in a child process).
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    manifest, tflm_data, litert_data = load_export(out_dir)
    xs, ys = make_batches(manifest, int(steps), seed, x, y)
    runs = {"keras": run_keras(out_dir, manifest, xs, ys)}
    if "litert" in backends:
        runs["litert"] = run_litert(litert_data, manifest, xs, ys)
    if "tflm" in backends:
        runs["tflm"] = run_tflm(tflm_data, manifest, xs, ys, probe=False)
        runs["tflm_probe"] = run_tflm(tflm_data, manifest, xs, ys, probe=True)
    fast_note = None
    if "tflm_fast" in manifest:
        runner = tflm_runner.find_runner() if "tflm_fast" in backends else None
        if runner is None:
            fast_note = f"train_fast.tflite not run: {tflm_runner.HOW_TO}"
        else:
            runs["tflm_fast"] = run_tflm_fast(_read(out_dir, "train_fast.tflite"), manifest, xs, ys, runner)
            fast_note = (f"train_fast.tflite ran in tinyprop_tflm_runner ({runner}): arena used "
                         f"{runs['tflm_fast']['arena_used']} bytes (64-bit host)")
    ref = runs["keras"]
    failures, k_mismatches = [], []
    loss_abs, loss_rel, w_abs, w_rel, out_abs = {}, {}, {}, {}, {}
    for name, run in runs.items():
        if name == "keras":
            continue
        d = np.abs(run["losses"] - ref["losses"])
        loss_abs[name] = float(d.max())
        loss_rel[name] = float(np.max(d / np.maximum(np.abs(ref["losses"]), 1e-30)))
        if not np.all(np.isfinite(run["losses"])):
            failures.append(f"{name}: non-finite loss")
        if loss_rel[name] > rtol:
            failures.append(f"{name}: loss differs by {loss_rel[name]:.3g} relative")
        if "weights" in run:
            w_abs[name], w_rel[name] = {}, {}
            missing = sorted(set(ref["weights"]) - set(run["weights"]))
            if missing:
                failures.append(f"{name}: weights not read back: {missing}")
            for path, value in run["weights"].items():
                diff = float(np.max(np.abs(value - ref["weights"][path])))
                w_abs[name][path] = diff
                w_rel[name][path] = _rel(diff, ref["weights"][path])
                if w_rel[name][path] > rtol:
                    failures.append(f"{name}: weight {path} differs by {w_rel[name][path]:.3g} relative")
        diff = float(np.max(np.abs(run["output"] - ref["output"])))
        out_abs[name] = diff
        if _rel(diff, ref["output"]) > rtol:
            failures.append(f"{name}: inference output differs by {_rel(diff, ref['output']):.3g} relative")
        # k: per step sums against the Keras accounting; overall extremes.
        k = run["k"]
        if not np.array_equal(k.sum(axis=2), ref["k_sum"]):
            bad = np.argwhere(k.sum(axis=2) != ref["k_sum"])[:3]
            k_mismatches.append(f"{name} vs keras: k sums differ at (step, layer) {bad.tolist()}")
        if not (np.array_equal(k.min(axis=(0, 2)), ref["k_min"]) and np.array_equal(k.max(axis=(0, 2)), ref["k_max"])):
            k_mismatches.append(f"{name} vs keras: k min/max differ")
    if "litert" in runs:
        for name in ("tflm", "tflm_probe", "tflm_fast"):
            if name in runs and not np.array_equal(runs[name]["k"], runs["litert"]["k"]):
                k_mismatches.append(f"{name} vs litert: per-sample k differ")
    if k_mismatches:
        failures.append("k differs")
    k = {name: run["k"] for name, run in runs.items() if "k" in run}
    k["keras"] = ref["k_sum"]
    result = VerifyResult(
        out_dir=str(out_dir), steps=int(steps), rtol=rtol,
        losses={name: run["losses"] for name, run in runs.items()},
        loss_max_abs_diff=loss_abs, loss_max_rel_diff=loss_rel, weight_max_abs_diff=w_abs,
        weight_max_rel_diff=w_rel, output_max_abs_diff=out_abs, k=k, k_layers=list(manifest["sparse_layers"]),
        k_mismatches=k_mismatches, arena_bytes=manifest["tflm"]["arena_bytes"], failures=failures,
        notes=[fast_note] if fast_note else [],
    )
    if check and not result.ok:
        raise VerificationError(result)
    return result


def main(argv=None) -> int:
    """``verify`` as a command (for the ``tinyprop verify`` CLI): prints the summary, returns the exit code
    (0 pass, 1 past tolerance, 2 unreadable export, interpreter or tinyprop_tflm_runner failure)."""
    import argparse

    parser = argparse.ArgumentParser(prog="tinyprop verify", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rtol", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        result = verify(args.out_dir, steps=args.steps, rtol=args.rtol, seed=args.seed, check=False)
    except (flatbuffer.InvalidModelError, FileNotFoundError, tflm.TFLMError, tflm_runner.RunnerError) as e:
        print(f"tinyprop verify: {e}")
        return 2
    print(result.summary())
    return result.returncode
