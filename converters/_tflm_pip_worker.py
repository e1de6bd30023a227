"""Runs the tflite-micro interpreter in a child process (it may abort the process on a bad model).

Standalone on purpose: imports only numpy and tflite_micro (no TensorFlow), so it starts fast.

    python _tflm_pip_worker.py request.json

Request (JSON): {"task": "arena" | "run", "model": path, "out": path, ...}
- arena: {"start": int, "max": int, "inputs": npz path} -> the arena the model needs to allocate and run one
  train and one infer invoke: what the RecordingMicroAllocator reports, checked by running with exactly
  that much; JSON {"arena": n or null, "detail": {...}}.
- run: {"arena": n, "inputs": npz, "steps": N} -> npz with the outputs of N train invokes ("out<i>_s<step>"),
  then of one infer invoke ("out<i>_infer").
The npz of inputs holds arrays named by input *index* ("in0", "in1", ...) per step ("in0_s3") plus the
infer-step inputs ("in0_infer").
"""

import json
import os
import re
import sys
import tempfile

import numpy as np
from tflite_micro.python.tflite_micro import runtime


def _interpreter(data, arena):
    return runtime.Interpreter.from_bytes(data, arena_size=int(arena))


def _invoke(interp, inputs, n_inputs, suffix):
    # Every input is set before every invoke: the planner reuses input buffers.
    for i in range(n_inputs):
        interp.set_input(inputs[f"in{i}_{suffix}"], i)
    interp.invoke()


def _in_child(fn):
    """Run fn() in a forked child (stderr to a file); (ok, stderr text). With some too-small arenas the
    interpreter does not fail cleanly but corrupts its state and crashes: the child absorbs that."""
    with tempfile.TemporaryFile() as log:
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                os.dup2(log.fileno(), 2)
                fn()
                code = 0
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        log.seek(0)
        text = log.read().decode(errors="replace")
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, text


def _fits(data, arena, inputs, n_inputs, report=False):
    def attempt():
        interp = _interpreter(data, arena)
        _invoke(interp, inputs, n_inputs, "s0")
        _invoke(interp, inputs, n_inputs, "infer")
        if report:
            interp.print_allocations()
            sys.stderr.flush()

    return _in_child(attempt)


def _measure(data, inputs, n_inputs, start, max_arena):
    """Bytes the RecordingMicroAllocator used (read from its report), checked by running with exactly that;
    bisection as the fallback. Returns (arena, detail)."""
    big = start
    while True:
        ok, log = _fits(data, big, inputs, n_inputs, report=True)
        if ok:
            break
        if big >= max_arena:
            return None, {"log": log[-2000:]}
        big = min(big * 4, max_arena)
    detail = {}
    for key in ("total", "head", "tail"):
        m = re.search(rf"Arena allocation {key} (\d+) bytes", log)
        if m:
            detail[key] = int(m.group(1))
    used = detail.get("total")
    if used and _fits(data, used, inputs, n_inputs)[0]:
        detail["method"] = "allocator report, checked"
        return used, detail
    # Allocation also needs temporary room (the memory planner's scratch) that the report does not show:
    # the report is a lower bound; bracket, then bisect.
    lo, hi = (used or 0), big
    for factor in (1.25, 1.5, 2.0):
        if used and int(used * factor) < big:
            candidate = -(-int(used * factor) // 16) * 16
            if _fits(data, candidate, inputs, n_inputs)[0]:
                hi = candidate
                break
            lo = candidate
    while hi - lo > 16:
        mid = (lo + hi) // 2 // 16 * 16
        if mid <= lo:
            break
        if _fits(data, mid, inputs, n_inputs)[0]:
            hi = mid
        else:
            lo = mid
    detail["method"] = "bisection (16-byte steps)"
    return hi, detail


def main(path):
    with open(path) as f:
        req = json.load(f)
    with open(req["model"], "rb") as f:
        data = f.read()
    inputs = dict(np.load(req["inputs"]))
    n_inputs = int(req["n_inputs"])
    n_outputs = int(req["n_outputs"])
    if req["task"] == "arena":
        arena, detail = _measure(data, inputs, n_inputs, int(req["start"]), int(req["max"]))
        with open(req["out"], "w") as f:
            json.dump({"arena": arena, "detail": detail}, f)
        return 0
    if req["task"] == "run":
        interp = _interpreter(data, req["arena"])
        result = {}
        for s in range(int(req["steps"])):
            _invoke(interp, inputs, n_inputs, f"s{s}")
            for o in range(n_outputs):
                result[f"out{o}_s{s}"] = np.array(interp.get_output(o))
        _invoke(interp, inputs, n_inputs, "infer")
        for o in range(n_outputs):
            result[f"out{o}_infer"] = np.array(interp.get_output(o))
        np.savez(req["out"], **result)
        return 0
    raise SystemExit(f"unknown task {req['task']!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
