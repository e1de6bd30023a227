"""``verify(out_dir, steps=10)``: the same training steps in every runtime, judged against float64.

Runtimes, all fed the same batches:
- keras: ``reference.keras`` (the sparsified, BatchNorm-folded model) trained with a GradientTape loop and the
  Keras optimizer of the manifest, forward in inference mode (as the exported step: Dropout off);
- litert: ``train_litert.tflite`` through its ``train`` signature; weights read back with ``save``;
- tflm: ``train.tflite`` in the tflite-micro interpreter (in a child process: it may abort on a bad model)
  with the measured arena, exactly as shipped;
- tflm_probe: a copy of ``train.tflite`` whose entry subgraph also outputs every weight (only the I/O lists
  are edited, see ``flatbuffer.with_variable_outputs``): TFLM has no API to read resource variables and its
  preserve-all-tensors mode is capped at 1024 tensors, so this is how the TFLM weights are compared;
- tflm_fast: ``train_fast.tflite`` in ``tinyprop_tflm_runner`` (TFLM with the TinyProp operators), when one is
  available;
- tflm_m4: ``train_fast.tflite`` in the same runner built for an emulated Cortex-M4F (QEMU mps2-an386, newlib's
  libm, the RAM limited to ``m4_ram_bytes``), when a TFLM tree, the Arm cross compiler and QEMU are there.

The oracle is not any of them. Keras' float32 step is itself one rounding of the step among others (its sums
run in another order on a CPU with oneDNN or AVX-512 than without), so every runtime is compared with the same
steps computed in float64: ``step.TrainStep`` in double precision, from the exported float32 weights and
constants, keeping in every layer and step exactly the entries Keras kept (``layers.kept_observer``), so that
selection, which is decided in float32, cannot make the references part. Measured per runtime: the loss of
each step, every weight after the last step and the output of an inference call after it, each as the error
relative to the float64 value (per tensor: to its largest magnitude).

What float32 can reach is measured too: the same ``TrainStep`` run by TensorFlow in float32 (same kept sets)
has an error against float64 that is float32's rounding for this model, these weights and these batches. A
runtime passes when every error is within ``float32_spread(manifest)`` times that error, or within ``rtol`` where the
rounding error is smaller: a badly conditioned step (Adam's 1 / sqrt(v), a cancelling bias gradient) gets a
bound to match, a well conditioned one keeps a tight bound, and a runtime that computes something else fails.
k is checked separately: per sample, every runtime's kept count must equal Keras'.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

import tinyprop_tf  # noqa: F401  (registers the sparse layers for loading reference.keras)
from tinyprop_tf import policies as policies_lib
from tinyprop_tf._quiet import native_stderr_filtered
from tinyprop_tf.sparsity_state import sparse_layers
from tinyprop_tf.converters import (artifacts, c_sources, device_ops, flatbuffer, graph, step, tflm_host_runner,
                                    tflm_pip)

# A float32 runtime's error may exceed TensorFlow's own float32 error by a factor: two float32 evaluations that
# round in other orders land apart, while a runtime that computes another step is off by orders of magnitude.
# TensorFlow's CPU kernels sum in blocks (pairwise-like); an interpreter's reference kernels sum sequentially,
# whose rounding error on n terms of either sign grows about sqrt(n) times faster. Measured: LiteRT 10x TensorFlow's
# (oneDNN off) on a bias gradient summed over 500 terms (DS-CNN, Adam). So the factor is sqrt of the longest sum
# in the step, and at least FLOAT32_SPREAD_MIN.
FLOAT32_SPREAD_MIN = 8.0


def longest_sum(manifest) -> int:
    """Terms in the step's longest float32 sum: a weight gradient over batch x output positions, a forward
    output over a kernel's fan-in, an input gradient over its fan-out."""
    batch, longest = manifest["batch_size"], 1
    kernels = {e["path"].rsplit("/", 1)[0]: e["shape"] for e in manifest["weights"] if e["path"].endswith("/kernel")}
    for layer in manifest["layers"]:
        if "needs_input_grad" not in layer:  # not an affine layer (Dense, Conv1D/2D, DepthwiseConv2D)
            continue
        longest = max(longest, batch * math.prod(layer["output_shape"][:-1]))
        shape = kernels.get(layer["name"])  # [.., fan-in, out]; depthwise [kh, kw, C, multiplier]
        if shape:
            taps = math.prod(shape[:-2])  # kernel positions (1 for Dense)
            fan_in = taps if layer["kind"] == "depthwise" else taps * shape[-2]
            longest = max(longest, fan_in)
            if layer["needs_input_grad"]:
                longest = max(longest, taps * shape[-1])
    return longest


def float32_spread(manifest) -> float:
    return max(FLOAT32_SPREAD_MIN, math.sqrt(longest_sum(manifest)))
RUNTIMES = ("keras", "litert", "tflm", "tflm_probe", "tflm_fast", "tflm_m4")


class VerificationError(AssertionError):
    """A runtime is further from the float64 steps than float32 rounding explains."""

    def __init__(self, result):
        super().__init__(result.summary())
        self.result = result


@dataclasses.dataclass
class VerifyResult:
    out_dir: str
    steps: int
    rtol: float
    losses: dict  # runtime -> [steps]; "float64" and "tf_float32" too
    errors: dict  # runtime -> {"loss": rel, "output": rel, "weights": {path: rel}}, vs float64 ("tf_float32" too)
    bounds: dict  # {"loss": rel, "output": rel, "weights": {path: rel}}: what each runtime must stay within
    k: dict  # runtime -> [steps, layers, batch] per-sample k (keras: the kept sets the references replay)
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

    def max_error(self, runtime) -> float:
        """The runtime's largest relative error against float64 (loss, any weight, output)."""
        e = self.errors[runtime]
        return max([e["loss"], e["output"], *e.get("weights", {}).values()])

    def worst_share(self, runtime) -> float:
        """The runtime's largest error as a share of its bound (<= 1 passes)."""
        e, b = self.errors[runtime], self.bounds
        shares = [e["loss"] / b["loss"], e["output"] / b["output"]]
        shares += [value / b["weights"][path] for path, value in e.get("weights", {}).items()]
        return max(shares)

    def summary(self) -> str:
        lines = [f"verify {self.out_dir}: {self.steps} steps, each runtime against the same steps in float64 "
                 f"(kept sets as Keras chose them)",
                 f"  {'relative error':18s} {'loss':>9s} {'weights':>9s} {'output':>9s}   share of bound"]

        def row(name, e, share=None):
            weights = max(e["weights"].values(), default=0.0) if "weights" in e else None
            cells = [f"{e['loss']:9.2e}", f"{weights:9.2e}" if weights is not None else f"{'-':>9s}",
                     f"{e['output']:9.2e}"]
            return f"  {name:18s} {' '.join(cells)}" + (f"   {share:.2f}" if share is not None else "")

        b = self.bounds
        lines.append(row("bound", {"loss": b["loss"], "weights": b["weights"], "output": b["output"]}))
        lines.append(row("tf float32 (scale)", self.errors["tf_float32"]))
        for name in RUNTIMES:
            if name in self.errors:
                lines.append(row(name, self.errors[name], self.worst_share(name)))
        k = self.k.get("keras")
        if k is not None and len(self.k_layers):
            means = ", ".join(f"{name} {k[:, i].mean():.2f}" for i, name in enumerate(self.k_layers))
            lines.append(f"  mean k per sample: {means}")
        lines.append(f"  k: {'identical in every runtime' if not self.k_mismatches else '; '.join(self.k_mismatches[:5])}")
        if self.arena_bytes:
            lines.append(f"  TFLM arena: {self.arena_bytes} bytes")
        lines.extend(f"  note: {n}" for n in self.notes)
        lines.append("  PASS" if self.ok else "  FAIL: " + "; ".join(self.failures[:10]))
        return "\n".join(lines)

    def __str__(self):
        return self.summary()


def _read(out_dir, name):
    with open(os.path.join(out_dir, name), "rb") as f:
        return f.read()


def load_export(out_dir):
    """(manifest, tflm bytes, litert bytes) once every artefact the manifest lists is present, intact and
    well-formed (``artifacts.check_export``: raises ``ArtifactError`` naming the file, before any interpreter
    sees it)."""
    manifest = artifacts.check_export(out_dir)
    return manifest, _read(out_dir, "train.tflite"), _read(out_dir, "train_litert.tflite")


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
def _optimizer(manifest):
    return step.OptimizerConfig(**{k: v for k, v in manifest["optimizer"].items() if k != "amsgrad"})


def run_keras(out_dir, manifest, xs, ys):
    """Keras' float32 steps, recording per step and sparse layer the kept entries and per-sample k."""
    ref = keras.models.load_model(os.path.join(out_dir, "reference.keras"), compile=False)
    opt = _optimizer(manifest).to_keras()
    if manifest["loss"] == "sparse_categorical_crossentropy":
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        loss_fn = keras.losses.MeanSquaredError()
    trainable = ref.trainable_variables
    names = list(manifest["sparse_layers"])
    batch = manifest["batch_size"]
    kept_now = {}

    def observe(layer, kept, k):
        kept_now[layer.name] = (None if kept is None else np.asarray(kept), np.asarray(k, np.int32))

    for layer in sparse_layers(ref):
        layer.kept_observer = observe
    losses, kept_steps = [], []
    for xb, yb in zip(xs, ys):
        kept_now.clear()
        with tf.GradientTape() as tape:
            out = ref(xb, training=False)
            loss = loss_fn(yb, out)
        grads = tape.gradient(loss, trainable)
        opt.apply_gradients(zip(grads, trainable))
        losses.append(float(loss.numpy()))
        kept_steps.append(dict(kept_now))
    # a sparse layer whose backward never runs (frozen, nothing below needs its input gradient) keeps nothing
    k = np.array([[kept.get(name, (None, np.zeros(batch, np.int32)))[1] for name in names] for kept in kept_steps])
    weights = {step.weight_key(layer.name, w): np.asarray(w.numpy())
               for layer in ref.layers for w in layer.trainable_weights}
    output = np.asarray(ref(xs[0], training=False))
    return {"losses": np.array(losses), "k": k.reshape(len(xs), len(names), batch), "weights": weights,
            "output": output, "kept": kept_steps}


def run_reference(out_dir, manifest, xs, ys, kept_steps, dtype):
    """The exported step (``step.TrainStep``, builtins formulation) run eagerly by TensorFlow in ``dtype``,
    replaying Keras' kept sets: float64 is the oracle, float32 measures what float32 rounding costs."""
    ref = keras.models.load_model(os.path.join(out_dir, "reference.keras"), compile=False)
    nodes, input_id, output_id = graph.plan(ref)
    module = step.TrainStep(nodes, input_id, output_id, policies_lib.get(manifest["policy"]), _optimizer(manifest),
                            manifest["loss"], manifest["batch_size"], manifest["input"]["shape"][1:],
                            manifest["output_shape"][1:], dtype=dtype)
    np_dtype = module.dtype.as_numpy_dtype
    as_target = (lambda y: tf.constant(y)) if manifest["target"]["dtype"] == "int32" else (
        lambda y: tf.constant(np.asarray(y, np_dtype)))
    losses = []
    for xb, yb, kept in zip(xs, ys, kept_steps):
        module.forced_selection = {name: kept.get(name, (None, np.zeros(len(xb), np.int32)))
                                   for name in module.sparse_names}
        loss, _, _ = module.train_impl(tf.constant(np.asarray(xb, np_dtype)), as_target(yb))
        losses.append(float(loss.numpy()))
    weights = {p: np.asarray(v.numpy(), np.float64) for p, v in zip(module.weight_paths, module.weight_vars)}
    output = np.asarray(module.infer_impl(tf.constant(np.asarray(xs[0], np_dtype)))[1].numpy(), np.float64)
    return {"losses": np.array(losses), "weights": weights, "output": output}


def run_litert(data, manifest, xs, ys):
    from ai_edge_litert.interpreter import Interpreter

    with native_stderr_filtered():  # LiteRT announces its XNNPACK delegate on stderr when a signature first runs
        interp = Interpreter(model_content=data)
        train = interp.get_signature_runner("train")
        losses, ks = [], []
        for xb, yb in zip(xs, ys):
            out = train(x=xb, y=yb)
            losses.append(float(out["loss"]))
            ks.append(np.array(out["k"]))
        saved = interp.get_signature_runner("save")()
        output = np.array(interp.get_signature_runner("infer")(x=xs[0])["output"])
    by_name = {e["name"]: e["path"] for e in manifest["weights"]}
    weights = {by_name[k]: np.array(v) for k, v in saved.items()}
    return {"losses": np.array(losses), "k": np.array(ks), "weights": weights, "output": output,
            "interpreter": interp}


def run_tflm(data, manifest, xs, ys, probe: bool):
    """The shipped model with the measured arena (probe=False), or its probe copy that also outputs the weights
    (probe=True; see ``flatbuffer.with_variable_outputs``), arena measured for it."""
    outputs = {d["name"]: d["index"] for d in manifest["tflm"]["outputs"]}
    n_in, n_out = len(manifest["tflm"]["inputs"]), len(manifest["tflm"]["outputs"])
    var_names = [c_sources.safe_name(e["path"]) for e in manifest["weights"]]
    if probe:
        data = flatbuffer.with_variable_outputs(data, var_names)
    inputs = tflm_pip.step_inputs(manifest["tflm"]["inputs"], xs, ys)
    with tempfile.TemporaryDirectory(prefix="tinyprop-verify-") as tmp:
        path = os.path.join(tmp, "train.tflite")
        with open(path, "wb") as f:
            f.write(data)
        n_out_run = n_out + (len(var_names) if probe else 0)
        arena = manifest["tflm"]["arena_bytes"]
        if probe or not arena:
            arena = tflm_pip.measure_arena(path, inputs, n_in, n_out_run)
        res = tflm_pip.run(path, arena, inputs, n_in, n_out_run, len(xs))
    steps = len(xs)
    result = {
        "losses": np.array([float(res[f"out{outputs['loss']}_s{s}"]) for s in range(steps)]),
        "k": np.array([res[f"out{outputs['k']}_s{s}"] for s in range(steps)]),
        "output": res[f"out{outputs['output']}_infer"],
    }
    if probe:
        result["weights"] = {e["path"]: res[f"out{n_out + i}_infer"] for i, e in enumerate(manifest["weights"])}
    return result


def run_tflm_fast(data, manifest, xs, ys, runner, weights):
    """train_fast.tflite (TinyProp custom ops) in ``tinyprop_tflm_runner``: the exported initial state set
    through the state outputs, ``steps`` train invokes then one infer invoke; the weights are read from the same
    outputs."""
    return _run_fast(data, manifest, xs, ys, weights,
                     lambda model, feeds, state: tflm_host_runner.run(runner, model, feeds, state=state))


def run_tflm_m4(data, manifest, xs, ys, elf, weights):
    """``run_tflm_fast`` on the emulated Cortex-M4F (``tflm_host_runner.run_m4``); "measures" holds what it printed."""
    return _run_fast(data, manifest, xs, ys, weights,
                     lambda model, feeds, state: tflm_host_runner.run_m4(elf, model, feeds, state=state))


def runner_feeds(manifest, xs, ys, fast: bool = True) -> list[list[np.ndarray]]:
    """The inputs of each invoke for ``tflm_host_runner.run``/``run_m4``: one train invoke per batch, then an infer
    invoke on the first, in the input order of train_fast.tflite (``fast``) or train.tflite."""
    inputs = tflm_pip.step_inputs(manifest["tflm"]["inputs"], xs, ys)  # by train.tflite input index
    train_index = {d["name"]: d["index"] for d in manifest["tflm"]["inputs"]}
    order = manifest["tflm_fast" if fast else "tflm"]["inputs"]
    return [[inputs[f"in{train_index[d['name']]}_{step}"] for d in order]
            for step in [f"s{s}" for s in range(len(xs))] + ["infer"]]


def _run_fast(data, manifest, xs, ys, weights, execute):
    fast = manifest["tflm_fast"]
    outputs = {d["name"]: d["index"] for d in fast["outputs"]}
    steps = len(xs)
    state_rows = fast["state"]
    res, measured = execute(data, runner_feeds(manifest, xs, ys), device_ops.initial_state(state_rows, weights))
    by_name = {r["name"]: r["output"] for r in state_rows}
    return {
        "losses": np.array([float(res[s][outputs["loss"]]) for s in range(steps)]),
        "k": np.array([res[s][outputs["k"]] for s in range(steps)]),
        "output": res[steps][outputs["output"]],
        "weights": {e["path"]: res[steps][by_name[e["name"]]].reshape(e["shape"]) for e in manifest["weights"]},
        "arena_used": measured if isinstance(measured, int) else measured.arena_used_bytes,
        "measures": None if isinstance(measured, int) else measured,
    }


def _run_m4_row(runs, out_dir, manifest, xs, ys, ram_bytes):
    """Adds runs["tflm_m4"] when it can run; returns (note, whether the note is a failure)."""
    ram = tflm_host_runner.M4_MAX_RAM if ram_bytes is None else ram_bytes
    elf = tflm_host_runner.find_m4_runner(ram)
    if elf is None:
        missing = tflm_host_runner.m4_missing_tools()
        why = f"{', '.join(missing)} not found; " if missing else ""
        return f"tflm_m4 not run: {why}{tflm_host_runner.M4_HOW_TO}", False
    try:
        runs["tflm_m4"] = run = run_tflm_m4(_read(out_dir, "train_fast.tflite"), manifest, xs, ys, elf,
                                            artifacts.exported_weights(out_dir, manifest))
    except tflm_host_runner.RamError as e:
        return f"tflm_m4: {e}", ram_bytes is not None
    m = run["measures"]
    train = np.mean(m.invoke_instructions[:-1])
    return (f"train_fast.tflite ran on the emulated Cortex-M4F (QEMU mps2-an386, {m.ram_bytes:,} bytes of RAM): arena "
            f"{m.arena_used_bytes:,} of {m.arena_available_bytes:,} bytes available, stack high-water "
            f"{m.stack_high_water_bytes:,} of {m.stack_bytes:,}, .data {m.data_bytes:,}, .bss {m.bss_bytes:,}; "
            f"{train:,.0f} instructions per train step, {m.invoke_instructions[-1]:,.0f} per infer (instruction counts "
            "under -icount, not cycles)"), False


# --------------------------------------------------------------------------------------------------------------
def _rel_error(value, reference) -> float:
    """max |value - reference| relative to the reference's largest magnitude (absolute where that is 0)."""
    reference = np.asarray(reference, np.float64)
    diff = float(np.max(np.abs(np.asarray(value, np.float64) - reference))) if reference.size else 0.0
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    return diff / scale if scale > 0 else diff


def _errors(run, oracle) -> dict:
    losses, ref_losses = np.asarray(run["losses"], np.float64), oracle["losses"]
    rel = np.abs(losses - ref_losses) / np.maximum(np.abs(ref_losses), np.finfo(np.float32).tiny)
    errors = {"loss": float(rel.max()) if np.all(np.isfinite(losses)) else float("inf"),
              "output": _rel_error(run["output"], oracle["output"])}
    if "weights" in run:
        errors["weights"] = {path: _rel_error(run["weights"][path], value) if path in run["weights"] else float("inf")
                             for path, value in oracle["weights"].items()}
    return errors


def verify(out_dir, steps: int = 10, rtol: float = 1e-5, seed: int = 0, x=None, y=None, check: bool = True,
           backends=("litert", "tflm", "tflm_fast", "tflm_m4"), m4_ram_bytes: int | None = None,
           other_runs: dict | None = None) -> VerifyResult:
    """Train ``steps`` identical steps in Keras, LiteRT and TFLM and judge each against float64 (module doc).

    Args:
      out_dir: an ``export_training_model`` directory.
      steps: training steps (each on its own batch).
      rtol: the floor of every bound, relative: per step for the loss, per tensor (to its largest magnitude)
        for the weights and the inference output. A bound is ``max(float32_spread(manifest) * float32 error,
        rtol)``.
      seed, x, y: the batches: random (normal inputs, uniform labels / normal targets) from ``seed``, or taken
        in order (cycled) from arrays ``x`` [n, *input_shape], ``y`` [n] or [n, *output_shape].
      check: raise ``VerificationError`` past a bound (otherwise inspect ``result.ok``/``returncode``).
      m4_ram_bytes: the RAM of the emulated Cortex-M4F (``tflm_m4``), e.g. a board's ``usable_ram_bytes``; a model
        that does not fit it fails verify. None: all of AN386's 4 MiB, and a model too big for that is a note.
      other_runs: {name: run(manifest, xs, ys)} of runtimes outside this module (the on-device app on the emulated
        board: tests/test_m4_app.py), each returning {"losses": [steps], "k": [steps, sparse layers, batch],
        "output": the inference on xs[0] after the steps, "weights": {path: array}}: judged like every other row.

    Raises:
      ArtifactError: a missing, altered or malformed artefact (before any interpreter runs).
      TFLMError: the tflite-micro interpreter failed or crashed (it runs in a child process).
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not 0 < rtol < 1:
        raise ValueError(f"rtol must be a number in (0, 1), got {rtol!r}")
    manifest, tflm_data, litert_data = load_export(out_dir)
    artifacts.check_verify_steps(manifest, int(steps))
    xs, ys = make_batches(manifest, int(steps), seed, x, y)
    # TensorFlow's own runs on the CPU in true float32: a GPU's TensorFloat-32 matmuls would inflate the float32
    # scale (and so every bound) tenfold.
    tf32_was_on = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    try:
        with tf.device("/CPU:0"):
            runs = {"keras": run_keras(out_dir, manifest, xs, ys)}
            kept = runs["keras"].pop("kept")
            oracle = run_reference(out_dir, manifest, xs, ys, kept, tf.float64)
            tf32 = run_reference(out_dir, manifest, xs, ys, kept, tf.float32)
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(tf32_was_on)
    if "litert" in backends:
        runs["litert"] = run_litert(litert_data, manifest, xs, ys)
    if "tflm" in backends:
        runs["tflm"] = run_tflm(tflm_data, manifest, xs, ys, probe=False)
        runs["tflm_probe"] = run_tflm(tflm_data, manifest, xs, ys, probe=True)
    fast_note = None
    if "tflm_fast" in manifest:
        runner = tflm_host_runner.find_runner() if "tflm_fast" in backends else None
        if runner is None:
            fast_note = f"train_fast.tflite not run: {tflm_host_runner.HOW_TO}"
        else:
            runs["tflm_fast"] = run_tflm_fast(_read(out_dir, "train_fast.tflite"), manifest, xs, ys, runner,
                                              artifacts.exported_weights(out_dir, manifest))
            fast_note = (f"train_fast.tflite ran in tinyprop_tflm_runner ({runner}): arena used "
                         f"{runs['tflm_fast']['arena_used']} bytes (64-bit host)")

    for name, execute in (other_runs or {}).items():
        runs[name] = execute(manifest, xs, ys)
    m4_note, m4_failure = None, False
    if "tflm_fast" in manifest and "tflm_m4" in backends:
        m4_note, m4_failure = _run_m4_row(runs, out_dir, manifest, xs, ys, m4_ram_bytes)
    scale = _errors(tf32, oracle)
    spread = float32_spread(manifest)
    bounds = {"loss": max(spread * scale["loss"], rtol), "output": max(spread * scale["output"], rtol),
              "weights": {path: max(spread * e, rtol) for path, e in scale["weights"].items()}}
    errors = {"tf_float32": scale}
    failures, k_mismatches = [], []
    if not all(np.isfinite([scale["loss"], scale["output"], *scale["weights"].values()])):
        failures.append("TensorFlow's float32 run of the step diverged (non-finite error against float64): no bound "
                        "can be derived; use fewer steps or a smaller learning rate")
    for name, run in runs.items():
        errors[name] = e = _errors(run, oracle)
        for quantity in ("loss", "output"):
            if not e[quantity] <= bounds[quantity]:
                what = "loss" if quantity == "loss" else "inference output"
                failures.append(f"{name}: {what} {e[quantity]:.3g} from float64 (bound {bounds[quantity]:.3g})")
        for path, value in e.get("weights", {}).items():
            if not value <= bounds["weights"][path]:
                failures.append(f"{name}: weight {path} {value:.3g} from float64 (bound {bounds['weights'][path]:.3g})")
        if name != "keras" and not np.array_equal(run["k"], runs["keras"]["k"]):
            bad = np.argwhere(run["k"] != runs["keras"]["k"])[:3]
            k_mismatches.append(f"{name} vs keras: per-sample k differ at (step, layer, sample) {bad.tolist()}")
    if k_mismatches:
        failures.append("k differs")
    if m4_note and m4_failure:
        failures.append(m4_note)
    notes = [n for n in (fast_note, m4_note) if n]
    if any(": weight " in f for f in failures) and not k_mismatches:
        notes.append("k is identical, but a near-tie between two scores can still make a runtime keep another "
                     "entry with the same k; a weight far outside its bound in one layer points there")
    result = VerifyResult(
        out_dir=str(out_dir), steps=int(steps), rtol=float(rtol),
        losses={"float64": oracle["losses"], "tf_float32": tf32["losses"],
                **{name: run["losses"] for name, run in runs.items()}},
        errors=errors, bounds=bounds, k={name: run["k"] for name, run in runs.items()},
        k_layers=list(manifest["sparse_layers"]), k_mismatches=k_mismatches,
        arena_bytes=manifest["tflm"]["arena_bytes"], failures=failures, notes=notes,
    )
    if check and not result.ok:
        raise VerificationError(result)
    return result
