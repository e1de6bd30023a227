"""Parent side of the tflite-micro worker: arena measurement and runs, each in a child process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile

import numpy as np

from tinyprop_tf.converters import artifacts

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_tflm_pip_worker.py")
MAX_ARENA = 256 << 20


def step_inputs(details, xs, ys) -> dict:
    """The inputs of ``run``: per input (``details``: name x, y or mode, and index) and train step s the array
    "in<index>_s<s>" (``xs[s]``, ``ys[s]``, mode train), and "in<index>_infer" (``xs[0]``, ``ys[0]``, mode infer)."""

    def value(detail, x, y, mode):
        return {"x": x, "y": y, "mode": np.array(mode, np.int32)}[detail["name"]]

    arrays = {}
    for d in details:
        for s in range(len(xs)):
            arrays[f"in{d['index']}_s{s}"] = value(d, xs[s], ys[s], artifacts.MODE_TRAIN)
        arrays[f"in{d['index']}_infer"] = value(d, xs[0], ys[0], artifacts.MODE_INFER)
    return arrays


class TFLMError(RuntimeError):
    """The tflite-micro interpreter failed (or crashed) on the model."""


def _call(request: dict, timeout: float):
    with tempfile.TemporaryDirectory(prefix="tinyprop-tflm-") as tmp:
        req_path = os.path.join(tmp, "request.json")
        out = os.path.join(tmp, "result" + (".npz" if request["task"] == "run" else ".json"))
        request = {**request, "out": out}
        inputs = request.pop("input_arrays")
        request["inputs"] = os.path.join(tmp, "inputs.npz")
        np.savez(request["inputs"], **inputs)
        with open(req_path, "w") as f:
            json.dump(request, f)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        try:
            proc = subprocess.run([sys.executable, WORKER, req_path], capture_output=True, text=True,
                                  timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise TFLMError(f"tflite-micro interpreter timed out after {timeout:.0f} s") from None
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or "").strip().splitlines()[-12:])
            if proc.returncode < 0:
                sig = signal.Signals(-proc.returncode).name
                raise TFLMError(f"tflite-micro interpreter crashed ({sig}) on {os.path.basename(request['model'])}"
                                f"; its last messages:\n{tail}")
            raise TFLMError(f"tflite-micro interpreter failed (exit {proc.returncode}):\n{tail}")
        if request["task"] == "run":
            with np.load(out) as z:
                return {k: z[k] for k in z.files}, proc.stderr
        with open(out) as f:
            return json.load(f), proc.stderr


def measure_arena(model_path: str, inputs: dict, n_inputs: int, n_outputs: int, timeout: float = 600,
                  detail: bool = False):
    """Arena bytes the model needs in the tflite-micro interpreter to allocate and run a train and an infer
    invoke (the RecordingMicroAllocator's total, confirmed by running with exactly that). ``inputs`` as for
    ``run`` (steps "s0" and "infer"). With ``detail``: (bytes, {"total", "head", "tail", "method"})."""
    result, log = _call({"task": "arena", "model": model_path, "start": 1 << 20, "max": MAX_ARENA,
                         "n_inputs": n_inputs, "n_outputs": n_outputs, "input_arrays": inputs}, timeout)
    if result["arena"] is None:
        tail = "\n".join(result["detail"].get("log", "").strip().splitlines()[-8:])
        raise TFLMError(f"the tflite-micro interpreter cannot allocate or run the model even with "
                        f"{MAX_ARENA >> 20} MiB of arena:\n{tail}")
    return (int(result["arena"]), result["detail"]) if detail else int(result["arena"])


def run(model_path: str, arena: int, inputs: dict, n_inputs: int, n_outputs: int, steps: int, timeout: float = 900):
    """``steps`` train invokes then one infer invoke; inputs by index and step ("in<i>_s<step>", "in<i>_infer");
    returns the outputs as "out<i>_s<step>" / "out<i>_infer"."""
    result, _ = _call({"task": "run", "model": model_path, "arena": int(arena), "steps": int(steps),
                       "n_inputs": n_inputs, "n_outputs": n_outputs, "input_arrays": inputs}, timeout)
    return result
