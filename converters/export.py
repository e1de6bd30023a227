"""``export_training_model``: a Keras model + back-propagation policy -> on-device training artefacts.

Files written to ``out_dir`` (all checks run first; nothing is written when the export is refused; the set is
staged beside ``out_dir`` and appears complete, replacing a previous export only with ``overwrite=True``):

- ``train.tflite``: the TFLM model. ONE entry subgraph (subgraph 0) with inputs ``x``, ``y``, ``mode`` (int32
  scalar: 1 = train step, anything else = inference) and outputs ``loss`` (scalar), ``output`` (the model
  output for ``x``; in train mode computed before the update) and ``k`` ([sparse layers, batch] int32: entries
  kept per sample, 0 for a sample with zero error; zeros in inference mode). In inference mode ``loss`` is the
  loss of ``x`` against ``y`` (evaluation). ``tf.cond`` -> IF; TFLite builtins that TFLM implements only.
  Tensor order in the flatbuffer is not the names' order: the manifest gives each input/output index.
- ``train_litert.tflite``: the LiteRT variant with signatures ``train(x, y) -> loss, output, k``,
  ``infer(x) -> output``, ``save() -> one tensor per weight`` and ``restore(<one tensor per weight>)``
  (names = weight paths with '/' -> '_'). No Flex ops.
- ``weights.bin``: the trainable weights (after BatchNorm folding), raw little-endian float32, concatenated in
  the manifest's ``weights`` order (layer order; kernel then bias).
- ``weights.h`` (C array of the weights, with per-weight offsets), ``model_data.h`` / ``model_data.cc`` (the
  TFLM flatbuffer as a 16-byte aligned C array, input/output indices and the measured arena size).
- ``reference.keras``: the Keras model the exported step reproduces (sparsified, BatchNorm folded), used by
  ``verify``.
- ``manifest.json``: everything above described (see ``_manifest``).

Documented choices of the exported step:
- BatchNormalization is folded into the Dense/Conv layer before it using its *moving* statistics; the step
  trains the folded kernel and bias (gamma, beta and the statistics no longer exist on the device).
- Dropout is the identity (the step runs the model in inference mode; Keras' own step would drop units).
- The loss is the batch mean: softmax cross-entropy on logits (integer labels) or mean squared error.
- Adam's ``beta**t`` is computed as ``exp(t * log(beta))`` (TFLM has no POW): equal to Keras' to float32
  rounding.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf

import tinyprop_tf
from tinyprop_tf import estimates, outdir, selection
from tinyprop_tf.converters import artifacts, c_sources, device_ops, flatbuffer, graph, step, tflm_pip
from tinyprop_tf.converters.graph import AFFINE_KINDS, ExportError



def _convert(module, functions, what: str, device_op_placeholders: bool = False) -> bytes:
    """Concrete functions of the module (plain tf.Variables, no Keras objects) -> TFLite, builtins only.

    ``device_op_placeholders``: let the converter pass the TinyProp device-op placeholders through as custom ops
    (``device_ops.finalize`` turns them into the real ones and refuses any other custom op).
    """
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [f.get_concrete_function() for f in functions], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.allow_custom_ops = device_op_placeholders
    converter.experimental_enable_resource_variables = True
    try:
        return converter.convert()
    except Exception as e:  # ConverterError lists the ops that are not builtins
        msg = str(e).strip().splitlines()
        detail = "\n".join(line for line in msg if "error" in line.lower() or "op" in line.lower())[:2000]
        raise ExportError(
            f"TFLite conversion of {what} with TFLITE_BUILTINS only failed:\n{detail or msg[:20]}") from None


def _probe_inputs(module, details, seed=0):
    """Inputs by index for the worker (``tflm_pip.step_inputs``): one train step and an infer step of random data."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(module.batch_size, *module.input_shape)).astype(np.float32)
    if module._loss == "sparse_categorical_crossentropy":
        y = (np.arange(module.batch_size) % module.output_shape[-1]).astype(np.int32)
    else:
        y = rng.normal(size=(module.batch_size, *module.output_shape)).astype(np.float32)
    return tflm_pip.step_inputs(details, [x], [y])


def export_training_model(
    model,
    policy=None,
    optimizer="sgd",
    learning_rate=None,
    loss="sparse_categorical_crossentropy",
    batch_size=32,
    out_dir="export",
    selection_mode=None,
    measure_arena=True,
    fast=False,
    overwrite=False,
    recompute=False,
    **optimizer_kwargs,
):
    """Export ``model`` for sparse on-device training with ``policy``; returns the manifest (dict).

    Args:
      model: a built Sequential/Functional Keras model (plain, or already ``sparsify``-ed: then it is stripped
        and re-sparsified, and ``policy`` defaults to its layers' policy).
      policy: ``DenseBackprop()``, ``StaticTopK(...)`` or ``TinyProp(...)`` (or a short name).
      optimizer: "sgd" or "adam" (or a ``keras.optimizers.SGD``/``Adam`` without schedules, clipping, decay);
        extra options as keywords: ``momentum``, ``nesterov`` (SGD), ``beta_1``, ``beta_2``, ``epsilon`` (Adam).
      learning_rate: float (default: Keras' default of the optimizer).
      loss: "sparse_categorical_crossentropy" (logits output, integer labels) or "mse".
      batch_size: the fixed batch size of the exported graphs (TFLM needs static shapes).
      out_dir: directory for the files. A non-empty one is refused (``tinyprop_tf.outdir.OutDirError``, a
        ValueError) before any work unless ``overwrite``.
      selection_mode: "channel" (default) or "element" selection for conv layers (as ``sparsify``).
      measure_arena: measure the TFLM arena (a few seconds; it also proves TFLM can allocate and run it).
      fast: also write ``train_fast.tflite``, the same step with the sparse layers' selection and backward
        done by the TinyProp TFLM custom operators (``micro/tflm``; see ``device_ops``). It runs in a TFLM
        build that registers them (the board projects, ``tinyprop_tflm_runner``), not in the pip interpreter.
      recompute: (with ``fast``) run the first trained layer, a Conv2D -> ReLU -> global average pooling block
        after a frozen prefix (DS-CNN trained from its last pointwise conv), sample by sample and recompute the
        prefix for its backward (``step.RecomputedBlock``): none of the block's batch-sized activations exist, for
        a second forward pass of the prefix per training step; the same numbers. An ExportError says why a model
        cannot be exported this way.
      overwrite: replace a previous export in ``out_dir`` as a whole: the files are staged in a sibling folder and
        swapped in, so nothing of the previous export (an old ``train_fast.tflite``, a board project) survives.
        Refused when that would delete a board project's edited main file (write it again with
        ``write_board_project``, see ``tinyprop export --board``).

    Raises:
      ExportError: the model, an option or the converted graph cannot be exported (before any file is written).
    """
    outdir.check(out_dir, overwrite)  # before the conversion work
    if recompute and not fast:
        raise ExportError("recompute=True needs fast=True: only the TinyProp-op step runs a recomputed block")
    if loss not in step.LOSSES:
        raise ExportError(f"loss must be one of {step.LOSSES}, got {loss!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ExportError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch_size = int(batch_size)
    opt = step.optimizer_config(optimizer, learning_rate, **optimizer_kwargs)
    ref, policy, folded_bn = graph.reference_model(model, policy, selection_mode or "channel")
    nodes, input_id, output_id = graph.plan(ref)
    input_shape = tuple(int(d) for d in ref.inputs[0].shape[1:])
    output_shape = tuple(int(d) for d in ref.outputs[0].shape[1:])
    if ref.inputs[0].dtype not in ("float32", None):
        raise ExportError(f"model input dtype {ref.inputs[0].dtype} (only float32)")
    if loss == "sparse_categorical_crossentropy" and len(output_shape) != 1:
        raise ExportError(f"sparse_categorical_crossentropy needs a [batch, classes] logits output, got "
                          f"{(None,) + output_shape}")
    module = step.TrainStep(nodes, input_id, output_id, policy, opt, loss, batch_size, input_shape, output_shape)
    if not module.weight_vars:
        raise ExportError(f"model '{model.name}' has no trainable weights")
    max_entries = max(int(np.prod(n.out_shape)) for n in nodes if n.kind in AFFINE_KINDS)

    with tempfile.TemporaryDirectory(prefix="tinyprop-export-") as tmp:
        functions = module.make_functions()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tflm_data = _convert(module, [functions["step"]], "the TFLM train step")
            litert_data = _convert(module, [functions[k] for k in ("train", "infer", "save", "restore")],
                                   "the LiteRT signatures")

        fast_data = fast_counts = None
        if fast:
            fast_data, fast_counts, fast_state, fast_model = _fast_variant(
                nodes, input_id, output_id, policy, opt, loss, batch_size, input_shape, output_shape,
                max_entries * batch_size, recompute)

        # TFLM: type legalisation, then refuse anything TFLM cannot run.
        tflm_data, legal_notes, tflm_model = flatbuffer.legalize_for_tflm(tflm_data, max_count=max_entries * batch_size)
        bad = flatbuffer.non_tflm_ops(tflm_model)
        if bad:
            raise ExportError(f"the converted TFLM graph uses ops TFLM does not implement: {bad}")
        problems = flatbuffer.int32_problems(tflm_model)
        if problems:
            raise ExportError(f"the converted TFLM graph has int32 ops TFLM's kernels reject: {problems}")
        if len(tflm_model.signatureDefs or []) != 1 or tflm_model.signatureDefs[0].subgraphIndex != 0:
            raise ExportError("internal: the TFLM graph's entry is not subgraph 0")
        litert_model = flatbuffer.load(litert_data, "train_litert.tflite")
        custom = [op for op in flatbuffer.ops_used(litert_model) if op.startswith("CUSTOM") or op.startswith("UNKNOWN")]
        if custom:
            raise ExportError(f"the LiteRT graph uses non-builtin (Flex/custom) ops: {custom}")
        signatures = sorted(s.signatureKey.decode() for s in litert_model.signatureDefs or [])
        if signatures != ["infer", "restore", "save", "train"]:
            raise ExportError(f"internal: unexpected LiteRT signatures {signatures}")

        tflm_inputs, tflm_outputs = flatbuffer.io_details(tflm_model, 0)
        if sorted(d["name"] for d in tflm_inputs) != ["mode", "x", "y"]:
            raise ExportError(f"internal: unexpected TFLM inputs {tflm_inputs}")
        model_path = os.path.join(tmp, "train.tflite")
        with open(model_path, "wb") as f:
            f.write(tflm_data)
        arena = None
        probe_inputs = _probe_inputs(module, tflm_inputs)
        if measure_arena:
            try:
                arena, arena_detail = tflm_pip.measure_arena(model_path, probe_inputs,
                                                         len(tflm_inputs), len(tflm_outputs), detail=True)
            except tflm_pip.TFLMError as e:
                raise ExportError(f"the tflite-micro interpreter cannot run the exported step: {e}") from None

        # Everything checked: assemble the files.
        weights = [np.asarray(v.numpy(), np.float32) for v in module.weight_vars]
        entries, offset = [], 0
        for path, w in zip(module.weight_paths, weights):
            entries.append({"path": path, "name": c_sources.safe_name(path), "shape": list(w.shape),
                            "offset": offset, "size": int(w.size)})
            offset += int(w.size) * 4
        weights_bin = b"".join(w.astype("<f4").tobytes() for w in weights)
        manifest = _manifest(model, ref, nodes, module, policy, opt, loss, folded_bn, tflm_model, litert_model,
                             tflm_inputs, tflm_outputs, arena, legal_notes, entries, len(weights_bin))
        if arena is not None:
            manifest["tflm"]["arena_detail"] = arena_detail
        header, source = c_sources.model_data_files(tflm_data, manifest)
        files = {
            "train.tflite": tflm_data, "train_litert.tflite": litert_data, "weights.bin": weights_bin,
            "weights.h": c_sources.weights_header(weights, entries).encode(), "model_data.h": header.encode(),
            "model_data.cc": source.encode(),
        }
        if fast_data is not None:
            files["train_fast.tflite"] = fast_data
            manifest["files"]["train_fast.tflite"] = {}
            fast_inputs, fast_outputs = flatbuffer.io_details(fast_model, 0)
            fast_arena = _fast_arena(fast_data, fast_inputs, probe_inputs, tflm_inputs, fast_state,
                                     {e["name"]: w for e, w in zip(entries, weights)}) if measure_arena else None
            manifest["tflm_fast"] = {
                "file": "train_fast.tflite",
                "recompute": bool(recompute),
                "arena_bytes": fast_arena,
                "arena_bytes_recommended": estimates.recommended_arena_bytes(fast_arena),
                "arena_note": "measured in tinyprop_tflm_runner (64-bit host) when one was available at export "
                              "(TINYPROP_TFLM_RUNNER, or a runner already built from TINYPROP_TFLM_DIR); else null",
                "device_ops": fast_counts,
                "inputs": fast_inputs,
                "outputs": fast_outputs,
                "state": fast_state,
                "state_note": "training state in place: TFLM variable tensors (persistent, zeroed by AllocateTensors) "
                              "that are also these outputs; set each to its initial value (weights.bin, or "
                              "'fill') through interpreter.output(i) before the first invoke, save/restore the "
                              "same way. No IF: the ops take mode (1 = train); inference keeps nothing.",
                "ops": flatbuffer.ops_used(fast_model),
                "note": "sparse layers select and back-propagate with the TinyProp custom operators "
                        "(register micro/tflm/tinyprop_tflm.h with MicroMutableOpResolver::AddCustom); other "
                        "layers as in train.tflite",
            }
        with outdir.replacing(out_dir, overwrite) as folder:
            for name, data in files.items():
                with open(os.path.join(folder.path, name), "wb") as f:
                    f.write(data)
            ref.save(os.path.join(folder.path, "reference.keras"))
            for name in manifest["files"]:  # every artefact but the manifest itself: verify checks them all
                if name != artifacts.MANIFEST:
                    manifest["files"][name]["sha256"] = outdir.sha256_file(os.path.join(folder.path, name))
            with open(os.path.join(folder.path, "manifest.json"), "w") as f:
                json.dump(manifest, f, indent=2)
    return manifest


def _fast_variant(nodes, input_id, output_id, policy, opt, loss, batch_size, input_shape, output_shape,
                  max_count, recompute=False):
    """train_fast.tflite: the TFLM step with the TinyProp device ops (bytes, {op: count}, its in-place state rows,
    the parsed model)."""
    module = step.TrainStep(nodes, input_id, output_id, policy, opt, loss, batch_size, input_shape, output_shape,
                            fast=True, recompute=recompute)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = _convert(module, [module.make_functions()["step"]], "the fast TFLM train step",
                        device_op_placeholders=True)
    try:
        data, counts = device_ops.finalize(data, module.device_op_shapes)
    except flatbuffer.InvalidModelError as e:
        raise ExportError(f"the fast train step: {e}") from None
    if not set(counts) & {device_ops.SELECT_UNITS, device_ops.SELECT_CHANNELS}:
        raise ExportError(f"fast=True: no sparse layer to run on the TinyProp ops (policy {policy!r}); "
                          "export without fast")
    weight_names = [c_sources.safe_name(p) for p in module.weight_paths]
    try:
        data, state = device_ops.in_place_state(data, weight_names)
    except flatbuffer.InvalidModelError as e:
        raise ExportError(f"the fast train step: {e}") from None
    # Initial values: the weights from weights.bin; running maxima YMAX_INIT; optimizer slots, step counter 0.
    ymax_names = {_variable_name(v) for v in module.ymax_vars.values()}
    for row in state:
        if row["name"] not in weight_names:
            row["fill"] = float(np.float32(selection.YMAX_INIT)) if row["name"] in ymax_names else 0
    data, _, fast_model = flatbuffer.legalize_for_tflm(data, max_count=max_count)
    bad = [op for op in flatbuffer.non_tflm_ops(fast_model) if op[len("CUSTOM:"):] not in device_ops.DEVICE_OPS]
    if bad:
        raise ExportError(f"the fast TFLM graph uses ops TFLM does not implement: {bad}")
    return data, counts, state, fast_model


def _variable_name(var) -> str:
    """A tf.Variable's shared name in the converted graph ('fc1_ymax:0' -> 'fc1_ymax')."""
    return var.name.split(":", 1)[0]


def _fast_arena(fast_data: bytes, fast_inputs: list, probe_inputs: dict, tflm_inputs: list, state: list,
                weights: dict):
    """Arena bytes train_fast.tflite used in tinyprop_tflm_runner for a train and an infer invoke (the feeds
    ``_probe_inputs`` made for train.tflite, matched by name; the exported initial state); None without a runner.
    A first build takes minutes, so export never starts one; an earlier build of the tree is brought up to date
    (seconds: only the TinyProp sources change)."""
    from tinyprop_tf.converters import tflm_host_runner

    try:
        runner = tflm_host_runner.find_runner(build="update")
    except tflm_host_runner.RunnerError:
        return None
    if runner is None:
        return None
    index = {d["name"]: d["index"] for d in tflm_inputs}
    feeds = [[probe_inputs[f"in{index[d['name']]}_{step}"] for d in fast_inputs] for step in ("s0", "infer")]
    try:
        _, used = tflm_host_runner.run(runner, fast_data, feeds, state=device_ops.initial_state(state, weights))
    except tflm_host_runner.RunnerError as e:
        raise ExportError(f"train_fast.tflite does not run in {runner}: {e}") from None
    return used if used > 0 else None


def _layer_entries(ref, nodes, folded_bn):
    rows = []
    for n in nodes:
        row = {
            "name": n.name, "type": type(n.layer).__name__, "kind": n.kind, "activation": n.activation,
            "input_shape": [list(s) for s in n.in_shapes], "output_shape": list(n.out_shape),
            "trainable": n.trainable, "sparse": n.sparse,
        }
        if n.kind in AFFINE_KINDS:
            row["needs_input_grad"] = n.needs_input_grad
        if n.sparse:
            row["depth"] = n.depth
            row["selection"] = n.layer.selection
            row["entries"] = int(np.prod(n.out_shape)) if n.layer.selection == "element" else int(n.out_shape[-1])
            rule = n.layer.policy.rule(n.depth)
            if rule is not None:  # the layer's selection parameters, as its TFLM select op holds them
                row["select_params"] = dict(zip(device_ops.SELECT_PARAMS, device_ops.select_params(rule)))
        if n.name in folded_bn:
            row["folded_batchnorm"] = folded_bn[n.name]
        rows.append(row)
    return rows


def _manifest(model, ref, nodes, module, policy, opt, loss, folded_bn, tflm_model, litert_model, tflm_inputs,
              tflm_outputs, arena, legal_notes, entries, weights_bytes):
    sig_io = {}
    for sig in litert_model.signatureDefs or []:
        key = sig.signatureKey.decode()
        ins, outs = flatbuffer.io_details(litert_model, sig.subgraphIndex, key)
        sig_io[key] = {"subgraph": sig.subgraphIndex, "inputs": ins, "outputs": outs}
    return {
        "format": artifacts.FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"tinyprop_tf": tinyprop_tf.__version__, "tensorflow": tf.__version__,
                     "keras": keras.__version__},
        "model_name": model.name,
        "batch_size": module.batch_size,
        "input": {"name": "x", "shape": [module.batch_size, *module.input_shape], "dtype": "float32"},
        "target": {"name": "y", "shape": module.y_spec().shape.as_list(), "dtype": module.y_spec().dtype.name},
        "output_shape": [module.batch_size, *module.output_shape],
        "loss": loss,
        "optimizer": opt.to_dict(),
        "policy": keras.saving.serialize_keras_object(policy),
        "policy_repr": repr(policy),
        "ymax_init": selection.YMAX_INIT,
        "kth_largest": "selection.kth_largest_pairwise",
        "sparse_layers": list(module.sparse_names),
        "layers": _layer_entries(ref, nodes, folded_bn),
        "folded_batchnorm": folded_bn,
        "weights": entries,
        "weights_bin": {"dtype": "float32", "byte_order": "little", "bytes": weights_bytes,
                        "order": "layer order (graph topological), kernel then bias; offsets in bytes"},
        "tflm": {
            "file": "train.tflite",
            "entry_subgraph": 0,
            "inputs": tflm_inputs,
            "outputs": tflm_outputs,
            "modes": {"train": artifacts.MODE_TRAIN, "infer": artifacts.MODE_INFER},
            "ops": flatbuffer.ops_used(tflm_model),
            "subgraphs": len(tflm_model.subgraphs),
            "resource_variables": len(flatbuffer.variable_names(tflm_model)),
            "variables": flatbuffer.variable_names(tflm_model),
            "arena_bytes": arena,
            "arena_bytes_recommended": estimates.recommended_arena_bytes(arena),
            "arena_note": "bytes the tflite-micro Python interpreter's RecordingMicroAllocator used (64-bit host) "
                          "after a train and an infer invoke; checked by allocating and running with exactly "
                          "that arena. recommended = +5% rounded up to 1 KiB (pointer sizes and arena alignment "
                          "differ on the device)",
            "legalization": legal_notes,
        },
        "litert": {"file": "train_litert.tflite", "signatures": sig_io, "ops": flatbuffer.ops_used(litert_model)},
        "files": {
            "train.tflite": {}, "train_litert.tflite": {}, "weights.bin": {}, "weights.h": {}, "model_data.h": {},
            "model_data.cc": {}, "reference.keras": {}, "manifest.json": {},
        },
        "notes": [
            "BatchNormalization folded into the preceding layer with its moving statistics; the folded kernel "
            "and bias are trained.",
            "Dropout is the identity in the exported step (inference-mode forward).",
            "Loss: batch mean of softmax cross-entropy on logits (int32 labels) or of the squared error (MSE).",
            "Selection: per sample, per sparse layer, as tinyprop_tf.layers (running max updated before use, "
            "zeta**depth, k = clamp(floor(M*bpr), 1, M), ties to the lower index); bias gradient dense.",
            "k output: entries kept per sample (0 for a sample with zero error); zeros in inference mode.",
            "Adam: beta**t as exp(t*log(beta)) (TFLM has no POW).",
        ],
    }
