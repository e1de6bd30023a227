"""Read and write TinyProp test-vector files (``.tpv``, text; format in ``micro/tests/golden/README.md``).

Pure Python + NumPy, no TensorFlow. Typical use::

    from tpv import write_tpv
    write_tpv("micro/tests/golden/selection.tpv", [
        ("k_small", "adaptive_k", {"y": np.float32([1, 4]), "ymax": np.float32([2]), "s_min": np.float32([0.1]),
                                   "s_max": np.float32([0.9]), "zeta_pow": np.float32([0.5]),
                                   "n": np.int32([100]), "rounding": np.int32([0]),
                                   "ymax_out": ..., "bpr": ..., "k": ...}),
    ])
"""

from __future__ import annotations

import numpy as np

_TYPES = {np.dtype(np.int32): "i32", np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
_DTYPES = {v: k for k, v in _TYPES.items()}


def _format(value, type_name: str) -> str:
    if type_name == "i32":
        return str(int(value))
    if np.isnan(value):
        return "nan"
    if np.isinf(value):
        return "inf" if value > 0 else "-inf"
    # 9 significant digits round-trip float32 exactly, 17 round-trip float64.
    return f"{float(value):.9g}" if type_name == "f32" else f"{float(value):.17g}"


def write_tpv(path, cases) -> None:
    """cases: iterable of (case_name, kernel, {array_name: numpy array of int32/float32/float64})."""
    lines = ["tpv 1"]
    for name, kernel, arrays in cases:
        if any(ch.isspace() for ch in name + kernel):
            raise ValueError(f"case and kernel names may not contain whitespace: {name!r} {kernel!r}")
        lines.append(f"case {name} {kernel}")
        for array_name, value in arrays.items():
            arr = np.asarray(value)
            if arr.dtype not in _TYPES:
                raise TypeError(f"{name}/{array_name}: dtype {arr.dtype} is not int32, float32 or float64")
            type_name = _TYPES[arr.dtype]
            flat = arr.reshape(-1)
            lines.append(f"{type_name} {array_name} {flat.size}")
            for start in range(0, flat.size, 8):
                lines.append("  " + " ".join(_format(v, type_name) for v in flat[start:start + 8]))
        lines.append("end")
    with open(path, "w", encoding="ascii") as f:
        f.write("\n".join(lines) + "\n")


def read_tpv(path):
    """Returns a list of (case_name, kernel, {array_name: 1-D numpy array})."""
    tokens = []
    with open(path, encoding="ascii") as f:
        for line in f:
            tokens.extend(line.split("#", 1)[0].replace(",", " ").split())
    if tokens[:2] != ["tpv", "1"]:
        raise ValueError(f"{path}: not a 'tpv 1' file")
    pos, cases = 2, []
    while pos < len(tokens):
        if tokens[pos] != "case":
            raise ValueError(f"{path}: expected 'case', got {tokens[pos]!r}")
        name, kernel = tokens[pos + 1], tokens[pos + 2]
        pos += 3
        arrays = {}
        while tokens[pos] != "end":
            type_name, array_name, count = tokens[pos], tokens[pos + 1], int(tokens[pos + 2])
            values = tokens[pos + 3:pos + 3 + count]
            arrays[array_name] = np.array(values if type_name != "i32" else [int(v) for v in values],
                                          dtype=_DTYPES[type_name])
            pos += 3 + count
        cases.append((name, kernel, arrays))
        pos += 1
    return cases
