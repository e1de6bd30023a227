"""Instruction counts of the micro/ kernels on emulated Cortex-M4F and Cortex-M33 (QEMU -icount + SysTick).

    .venv/bin/python benchmarks/micro_qemu.py [--epochs 5] [--no-trace] [--no-write]

What it does:

1. Builds ``micro/bench`` (bare-metal image: own vector table, linker script, semihosting, SysTick counter;
   the kernel library exactly as ``micro/CMakeLists.txt`` builds it, Release = -O3) with the Cortex-M4F and the
   Cortex-M33 toolchain files, in ``micro/build-bench-m4`` / ``micro/build-bench-m33``.
2. Runs it under ``qemu-system-arm -M mps2-an386`` (Cortex-M4) and ``-M mps2-an505`` (Cortex-M33) with
   ``-icount shift=6``: every guest instruction advances virtual time by 64 ns, and SysTick counts the CPU clock
   (25 MHz on AN386, 20 MHz on AN505), so instructions = ticks x 0.625 (AN386) and ticks / 1.28 (AN505).
   The factor is verified in every run with loops of exactly 10 instructions per iteration (NOP, VFP, LDR/STR).
   Each target runs twice; the two outputs must be identical.
3. Fine-tunes ``models.mlp(hidden=(256, 128))`` with TinyProp on the demo's shifted-MNIST data (short run) and
   counts the instructions of the three layers' backward passes at each epoch's mean kept k.
4. Writes its section of ``benchmarks/RESULTS.md`` and ``tinyprop_tf/measured_cycles.json`` (the format of
   ``tinyprop_tf.mcu_profiles.load_cycle_overrides``; shipped in the package and applied to ``mcu_profiles.PROFILES`` at
   import, the one copy of the measured figures).

These are instruction counts, not cycles: QEMU has no pipeline, cache, flash wait-state or FPU-latency model
(e.g. a VLDR is 2 cycles and a VDIV 14 on a Cortex-M4F; here every instruction counts 1).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "micro"
BENCH_SRC = MICRO / "bench"
MEASURED_JSON = ROOT / "tinyprop_tf" / "measured_cycles.json"
COMMAND = "python benchmarks/micro_qemu.py"
SECTION = "Kernel instruction counts under QEMU (Cortex-M4F, Cortex-M33)"

TARGETS = {
    "m4": {
        "cpu": "Cortex-M4F", "machine": "mps2-an386", "toolchain": "arm-cortex-m4f.cmake",
        "flags": "-mcpu=cortex-m4 -mthumb -mfpu=fpv4-sp-d16 -mfloat-abi=hard", "clock_hz": 25_000_000,
        "nominal": 0.625, "board": "nrf52840",
    },
    "m33": {
        "cpu": "Cortex-M33", "machine": "mps2-an505", "toolchain": "arm-cortex-m33.cmake",
        "flags": "-mcpu=cortex-m33 -mthumb -mfpu=fpv5-sp-d16 -mfloat-abi=hard", "clock_hz": 20_000_000,
        "nominal": 1 / 1.28, "board": "nrf5340",
    },
}
ICOUNT_SHIFT = 6
RATIOS = (1.0, 0.5, 0.2, 0.1, 0.05)
FC = (256, 128)  # in, out
FC_BATCHES = (1, 8)
CONV = (25, 5, 64)  # H, W, C (DS-CNN KWS block size)
CALIB_ITERATIONS = 100_000  # hi - lo iterations of the 10-instruction calibration loops
TARGET_FRACTION = 0.9  # issue: speedup >= 0.9 x (1 / ratio) down to ratio 0.1
TRACE_MODEL = (784, 256, 128, 10)


# ------------------------------------------------------------------------------------------------------------
# Building and running

def _run(cmd, timeout=900, env=None):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
                           f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def missing_tools() -> list[str]:
    return [tool for tool in ("cmake", "arm-none-eabi-g++", "qemu-system-arm") if shutil.which(tool) is None]


def build(target: str, build_dir: Path | None = None) -> Path:
    """Configures and builds micro/bench for one target; returns the ELF."""
    spec = TARGETS[target]
    build_dir = Path(build_dir or MICRO / f"build-bench-{target}")
    _run(["cmake", "-S", BENCH_SRC, "-B", build_dir, f"-DCMAKE_TOOLCHAIN_FILE={MICRO / 'cmake' / spec['toolchain']}",
          "-DCMAKE_BUILD_TYPE=Release"])
    _run(["cmake", "--build", build_dir, "-j", str(max(1, min(4, os.cpu_count() or 1)))])
    elf = build_dir / "tinyprop_qemu_bench"
    if not elf.is_file():
        raise RuntimeError(f"{elf} was not built")
    return elf


def qemu_command(target: str, elf: Path, jobs: str) -> list[str]:
    return ["qemu-system-arm", "-M", TARGETS[target]["machine"], "-nographic", "-semihosting-config",
            "enable=on,target=native", "-icount", f"shift={ICOUNT_SHIFT}", "-monitor", "none", "-serial", "none",
            "-kernel", str(elf), "-append", jobs]


def run_qemu(target: str, elf: Path, jobs: str, timeout: float = 600) -> tuple[int, str]:
    """Runs the bench once; returns (exit status, stdout)."""
    proc = subprocess.run(qemu_command(target, elf, jobs), capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def parse(output: str) -> dict[str, tuple[int, int]]:
    """``M name ticks1 ticks2`` lines -> {name: (ticks1, ticks2)}."""
    found = {}
    for line in output.splitlines():
        match = re.fullmatch(r"M (\S+) (\d+) (\d+)", line.strip())
        if match:
            found[match.group(1)] = (int(match.group(2)), int(match.group(3)))
    return found


def calibrate(target: str, ticks: dict[str, tuple[int, int]]) -> dict[str, float]:
    """Instructions per tick from the 10-instruction loops (hi - lo iterations), per loop kind."""
    result = {}
    for kind in ("nop", "fp", "mem"):
        hi, lo = min(ticks[f"calib.{kind}.hi"]), min(ticks[f"calib.{kind}.lo"])
        result[kind] = 10 * CALIB_ITERATIONS / (hi - lo)
    nominal = TARGETS[target]["nominal"]
    for kind, factor in result.items():
        if abs(factor / nominal - 1) > 1e-3:
            raise RuntimeError(f"{target}: {kind} loop gives {factor:.5f} instructions/tick, expected {nominal:.5f}")
    return result


class Counts:
    """Instruction counts of one target's run: ``counts[name]`` (float instructions, min of the two calls)."""

    def __init__(self, target: str, ticks: dict[str, tuple[int, int]]):
        self.target = target
        self.ticks = ticks
        self.calibration = calibrate(target, ticks)
        self.factor = self.calibration["nop"]

    def __getitem__(self, name: str) -> float:
        return min(self.ticks[name]) * self.factor

    def __contains__(self, name: str) -> bool:
        return name in self.ticks


def run_bench(target: str, elf: Path, jobs: str, repeats: int = 2, timeout: float = 600) -> Counts:
    """Runs ``calib`` + jobs ``repeats`` times; every run must exit 0 and print the same tick counts."""
    outputs = []
    for _ in range(repeats):
        status, out = run_qemu(target, elf, "calib " + jobs, timeout)
        if status != 0:
            raise RuntimeError(f"{target}: bench exited with {status}:\n{out[-4000:]}")
        outputs.append(parse(out))
    if any(o != outputs[0] for o in outputs[1:]):
        diff = [k for k in outputs[0] if any(o.get(k) != outputs[0][k] for o in outputs[1:])]
        raise RuntimeError(f"{target}: tick counts differ between QEMU runs: {diff[:10]}")
    return Counts(target, outputs[0])


# ------------------------------------------------------------------------------------------------------------
# What to run

def k_of(ratio: float, n: int) -> int:
    """k = clamp(floor(n * ratio), 1, n), the library's rule."""
    return max(1, min(n, math.floor(n * ratio + 1e-9)))


def fc_prefix(batch, n_in, n_out, dx=True):
    return f"fc.b{batch}.i{n_in}.o{n_out}.dx{int(dx)}"


def conv_prefix(h, w, c):
    return f"conv.h{h}.w{w}.c{c}"


def fc_job(batch, n_in, n_out, ks, dx=True) -> str:
    return f"fc {batch} {n_in} {n_out} {int(dx)} " + " ".join(str(k) for k in sorted(set(ks), reverse=True))


def conv_job(h, w, c, ks) -> str:
    return f"conv {h} {w} {c} " + " ".join(str(k) for k in sorted(set(ks), reverse=True))


def trace_ks(trace) -> list[str]:
    """Jobs for the fine-tuning trace: each layer at floor/ceil of every epoch's mean k."""
    jobs = []
    for i, layer in enumerate(trace["layers"]):
        n_in, n_out = TRACE_MODEL[i], TRACE_MODEL[i + 1]
        ks = set()
        for k_mean in layer["k_mean"]:
            lo = max(1, min(n_out, math.floor(k_mean)))
            ks.update({lo, min(n_out, lo + 1)})
        jobs.append(fc_job(1, n_in, n_out, ks, dx=i > 0))
    return jobs


# ------------------------------------------------------------------------------------------------------------
# Analyses

def fc_macs(batch, n_in, n_out, dx=True, k=None):
    k = n_out if k is None else k
    return batch * n_in * k * (2 if dx else 1)


def fc_rows(c: Counts, batch, n_in, n_out, dx=True, ratios=RATIOS):
    p = fc_prefix(batch, n_in, n_out, dx)
    dense, naive = c[f"{p}.dense_ref"], c[f"{p}.naive"]
    rows = []
    for ratio in ratios:
        k = k_of(ratio, n_out)
        q = f"{p}.k{k}"
        sel, ow, add, clear_dx, bias, whole = (c[f"{q}.{x}"] for x in ("select", "sparse_dwdx", "sparse_dwdx_add",
                                                                        "clear_add", "bias", "sparse_all"))
        # Clearing for the next kAdd step: dx (caller) + dW's used columns, which SgdUpdateColumns clears as it
        # consumes them (its cost over the same loop without the clearing).
        zero = max(c[f"{q}.sgd_cols"] - c[f"{q}.sgd_cols_plain"], 0.0)
        clear = clear_dx + zero
        total_ow, kernel_add = sel + whole, sel + add + bias
        total_add = kernel_add + clear
        rows.append(dict(ratio=ratio, k=k, select=sel, dwdx=ow, dwdx_add=add, clear=clear, bias=bias, whole=whole,
                         total_ow=total_ow, total_add=total_add, kernel_add=kernel_add, ideal=n_out / k,
                         speedup_ow=dense / total_ow, speedup_add=dense / total_add,
                         speedup_kernel_add=dense / kernel_add, speedup_naive_add=naive / total_add,
                         naive_sparse=c[f"{q}.naive_sparse_add"], clear_dx=clear_dx, zero=zero,
                         sgd=c[f"{q}.sgd_cols"], sel_share_ow=sel / total_ow,
                         sel_share_add=sel / total_add))
    return dense, naive, rows


def conv_rows(c: Counts, h, w, ch, ratios=RATIOS):
    p = conv_prefix(h, w, ch)
    dense = {layer: c[f"{p}.{layer}.dense_ref"] for layer in ("dw", "pw")}
    naive = {layer: c[f"{p}.{layer}.naive"] for layer in ("dw", "pw")}
    rows = []
    for ratio in ratios:
        k = k_of(ratio, ch)
        row = dict(ratio=ratio, k=k, ideal=ch / k)
        for layer in ("dw", "pw"):
            q = f"{p}.{layer}.k{k}"
            for x in ("select", "sparse_dwdx", "sparse_dwdx_add", "clear_add", "bias", "sparse_all"):
                row[f"{layer}_{x}"] = c[f"{q}.{x}"]
            # clearing = dx + the dW columns SgdUpdateColumns clears in passing (its cost over the plain update)
            row[f"{layer}_clear_add"] += max(c[f"{q}.sgd_cols"] - c[f"{q}.sgd_cols_plain"], 0.0)
            row[f"{layer}_total_ow"] = row[f"{layer}_select"] + row[f"{layer}_sparse_all"]
            row[f"{layer}_total_add"] = (row[f"{layer}_select"] + row[f"{layer}_sparse_dwdx_add"]
                                         + row[f"{layer}_bias"] + row[f"{layer}_clear_add"])
        row["total_ow"] = row["dw_total_ow"] + row["pw_total_ow"]
        row["total_add"] = row["dw_total_add"] + row["pw_total_add"]
        row["select"] = row["dw_select"] + row["pw_select"]
        row["speedup_ow"] = sum(dense.values()) / row["total_ow"]
        row["speedup_add"] = sum(dense.values()) / row["total_add"]
        row["sel_share_ow"] = row["select"] / row["total_ow"]
        rows.append(row)
    return dense, naive, rows


def conv_macs(h, w, ch):
    """Backward MACs (dW + dx) as the Python accounting counts them (padded taps included)."""
    positions = h * w
    return {"dw": 2 * positions * 9 * ch, "pw": 2 * positions * ch * ch}


def select_ops(n: int, k: int, out_elements: int | None = None) -> float:
    """The Python accounting's selection ops for one sample: read every error element + M * ceil(log2(k + 1))."""
    out_elements = n if out_elements is None else out_elements
    return out_elements + n * max(math.ceil(math.log2(k + 1)), 1)


def heap_comparisons(n: int, k: int) -> float:
    return n * max(math.ceil(math.log2(k + 1)), 1)


# ------------------------------------------------------------------------------------------------------------
# The fine-tuning trace

def finetune_trace(epochs: int, seed: int = 0) -> dict:
    """TinyProp fine-tuning of the MLP 784-256-128-10 on the demo's shifted MNIST; per-layer mean k per epoch."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from tinyprop_tf import demo, experiment, models, policies

    (x_pre, y_pre), (x_ft, y_ft), (x_test, y_test) = demo.demo_data(seed)
    keras.utils.set_random_seed(seed)
    base = models.mlp(hidden=TRACE_MODEL[1:-1])
    base.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    base.fit(x_pre, y_pre, epochs=5, batch_size=32, verbose=0)
    evaluate = experiment.accuracy_evaluator(x_test, y_test)
    policy = policies.TinyProp(s_min=0.1, s_max=0.9, zeta=0.5)
    result = experiment.finetune(base, policy, (x_ft, y_ft), evaluate, epochs=epochs, batch_size=32, seed=seed)
    layers = []
    for i, (name, layer) in enumerate(result.layers.items()):
        if layer["entries"] != TRACE_MODEL[i + 1]:
            raise RuntimeError(f"unexpected layer {name}: {layer['entries']} units")
        layers.append(dict(name=name, depth=layer["depth"], entries=layer["entries"],
                           kept_ratio=list(layer["kept_ratio"]), k_mean=list(layer["k_mean"])))
    return dict(policy=repr(policy), epochs=epochs, initial_accuracy=result.initial_metric,
                accuracy=list(result.metric), layers=layers,
                mac_speedup=[d / s for d, s in zip(result.bwd_macs_dense, result.bwd_macs_sparse)],
                data=f"demo_data(seed={seed}): pretrain {len(x_pre)} MNIST digits (5 epochs, dense), fine-tune "
                     f"{len(x_ft)} shifted digits, test {len(x_test)}")


def trace_rows(c: Counts, trace) -> list[dict]:
    rows = []
    for e in range(trace["epochs"]):
        dense = sparse_ow = sparse_add = naive = 0.0
        ks = []
        for i, layer in enumerate(trace["layers"]):
            n_in, n_out, dx = TRACE_MODEL[i], TRACE_MODEL[i + 1], i > 0
            p = fc_prefix(1, n_in, n_out, dx)
            dense += c[f"{p}.dense_ref"]
            naive += c[f"{p}.naive"]
            k_mean = layer["k_mean"][e]
            lo = max(1, min(n_out, math.floor(k_mean)))
            hi = min(n_out, lo + 1)
            frac = min(max(k_mean - lo, 0.0), 1.0) if hi > lo else 0.0

            def at(k, what):
                q = f"{p}.k{k}"
                if what == "ow":
                    return c[f"{q}.select"] + c[f"{q}.sparse_all"]
                return c[f"{q}.select"] + c[f"{q}.sparse_dwdx_add"] + c[f"{q}.bias"] + c[f"{q}.clear_add"]

            for what in ("ow", "add"):
                value = (1 - frac) * at(lo, what) + frac * at(hi, what)
                if what == "ow":
                    sparse_ow += value
                else:
                    sparse_add += value
            ks.append(k_mean)
        rows.append(dict(epoch=e + 1, ks=ks, dense=dense, naive=naive, sparse_ow=sparse_ow, sparse_add=sparse_add,
                         accuracy=trace["accuracy"][e], mac_speedup=trace["mac_speedup"][e]))
    return rows


# ------------------------------------------------------------------------------------------------------------
# Report

def fmt(x: float) -> str:
    return f"{x:,.0f}"


def fc_verdict(r) -> str:
    if r["ratio"] < 0.1 - 1e-9:
        return "n/a"
    need = TARGET_FRACTION * r["ideal"]
    met = [name for name, key in (("overwrite", "speedup_ow"), ("kAdd", "speedup_add"),
                                  ("kAdd kernel", "speedup_kernel_add")) if r[key] >= need]
    return ", ".join(met) if met else "missed"


def fc_table(c: Counts, batch, n_in, n_out) -> list[str]:
    dense, naive, rows = fc_rows(c, batch, n_in, n_out)
    out = [f"Dense reference (`DenseBackwardReference`, dW + dx + db): **{fmt(dense)}** instructions; straightforward "
           f"loop in the bench (`NaiveDenseBackward`): {fmt(naive)}.",
           "",
           "| kept ratio | k | selection | sparse dW+dx (overwrite) | sparse dW+dx (kAdd) | clearing (dx + dW columns) | "
           "dense bias | total (overwrite) | total (kAdd) | ideal n/k | speedup (overwrite) | speedup (kAdd) | "
           "speedup (kAdd kernel only) | kAdd / ideal | selection share (kAdd) | target met by |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---|"]
    for r in rows:
        out.append(f"| {r['ratio']:g} | {r['k']} | {fmt(r['select'])} | {fmt(r['dwdx'])} | {fmt(r['dwdx_add'])} | "
                   f"{fmt(r['clear'])} | {fmt(r['bias'])} | {fmt(r['total_ow'])} | {fmt(r['total_add'])} | "
                   f"{r['ideal']:.2f} | {r['speedup_ow']:.2f} | {r['speedup_add']:.2f} | "
                   f"{r['speedup_kernel_add']:.2f} | {r['speedup_add'] / r['ideal']:.2f} | "
                   f"{100 * r['sel_share_add']:.1f}% | {fc_verdict(r)} |")
    return out


def dense_ratio(counts: dict[str, Counts], batch: int, target: str = "m4") -> float:
    """Library dense reference / straightforward loop for the Dense 256->128 layer."""
    p = fc_prefix(batch, *FC)
    return counts[target][f"{p}.dense_ref"] / counts[target][f"{p}.naive"]


def analyse(counts: dict[str, Counts], trace: dict | None) -> tuple[str, dict, dict]:
    """Markdown body, measured_cycles.json payload and a summary dict of the target checks."""
    m4 = counts["m4"]
    lines = []
    summary = {}
    def first_line(cmd):
        return subprocess.run(cmd, capture_output=True, text=True).stdout.split("\n")[0]

    qemu_version = first_line(["qemu-system-arm", "--version"])
    gcc_version = first_line(["arm-none-eabi-gcc", "--version"])
    lines += [
        "**These are instruction counts, not cycles.** QEMU (`-icount`) advances its virtual clock by a fixed time "
        "per executed instruction; it models no pipeline, no cache or flash wait states and no FPU latency (on a "
        "real Cortex-M4F a VLDR takes 2 cycles, a VDIV 14, a taken branch 2-4; here each is one instruction). "
        "Use the figures to compare kernels and ratios, not as run times.",
        "",
        f"Setup: `micro/bench` (own vector table, linker script, semihosting via newlib rdimon, SysTick wrap counter), "
        f"library built by `micro/CMakeLists.txt` in Release (-O3, `-ffp-contract=off -fno-math-errno`), "
        f"{gcc_version}, {qemu_version}. Cortex-M4F: `{TARGETS['m4']['flags']}` on `-M mps2-an386`; Cortex-M33: "
        f"`{TARGETS['m33']['flags']}` on `-M mps2-an505`; both `-icount shift={ICOUNT_SHIFT}`. float32, batch 1 "
        "unless stated, random data (fixed LCG seed). Every kernel call runs twice in a run (minimum taken; the two "
        "differ by at most a few instructions, from the SysTick wrap interrupt), the whole bench runs twice per target "
        "and the tick counts must match exactly (they did). The bench also checks its results: naive loops == "
        "library reference bit for bit, `DenseBackwardSparse(kAdd)` == the straightforward sparse loop bit for bit, "
        "sparse with every unit kept == reference, kept dW columns == reference, unkept 0, kept units == the "
        "top-|delta| ones, `SgdUpdateColumns` leaves the gradient cleared.",
        "",
        "Calibration (loops of exactly 10 instructions per iteration, 100,000 iterations difference):",
        "",
        "| target | QEMU board | CPU clock | NOP loop | VFP loop (VMUL/VADD) | LDR/STR loop | expected |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for target, c in counts.items():
        spec = TARGETS[target]
        cal = c.calibration
        lines.append(f"| {spec['cpu']} | {spec['machine']} | {spec['clock_hz'] / 1e6:g} MHz | "
                     f"{cal['nop']:.4f} instr/tick | {cal['fp']:.4f} | {cal['mem']:.4f} | "
                     f"{spec['nominal']:.4f} (= 2^{ICOUNT_SHIFT} ns per instruction / {1e9 / spec['clock_hz']:g} ns "
                     "per tick) |")
    lines += ["", "The measured factors equal the expected ones to 4 digits: instructions = ticks x 0.625 (AN386), "
              "ticks / 1.28 (AN505).", ""]

    # --- 1. FC layer
    n_in, n_out = FC
    fc_summary = {}
    for target, c in counts.items():
        for batch in FC_BATCHES:
            if target == "m33" and batch != 1:
                continue
            lines += [f"### Dense {n_in}->{n_out} backward, batch {batch}, {TARGETS[target]['cpu']} (instructions)", ""]
            lines += fc_table(c, batch, n_in, n_out)
            lines.append("")
            dense, naive, rows = fc_rows(c, batch, n_in, n_out)
            fc_summary[(target, batch)] = (dense, naive, rows)
    lines += [
        "Columns: *selection* = `SelectUnits` (local error, adaptive k, size-k heap over |delta|, sort of the kept "
        "indices); *sparse dW+dx (overwrite)* = `DenseBackwardSparse(..., Accumulate::kOverwrite)` without bias, which "
        "first clears all of dW (in x out floats, a cost independent of k; overwrite semantics require it); "
        "*(kAdd)* = the same with `Accumulate::kAdd` (the fast path: no clearing); *clearing* = what a kAdd caller "
        "pays to start the next step from zero: dx (a plain loop) plus the dW columns it used, which "
        "`SgdUpdateColumns` clears as it consumes them (measured as `KeptUnion` + `SgdUpdateColumns` minus the same "
        "update loop without the clearing); *dense bias* = the kernel's db "
        "part alone (`BiasGrad::kDense`, sum of the full error). *total (overwrite)* = selection + one "
        "`DenseBackwardSparse` call with dW, dx and db; *total (kAdd)* = selection + kAdd dW+dx + bias + clearing; "
        "*kAdd kernel only* leaves the clearing out. The optimizer update itself is not counted (dense training "
        "runs one too). Speedup = dense reference / total. Target (issue): speedup >= 0.9 x ideal (n/k) "
        "for ratios down to 0.1.",
        "",
    ]

    # --- dense vs naive, instructions per MAC
    lines += ["### Dense kernels vs a straightforward loop; instructions per MAC", "",
              "| target | kernel | MACs (dW + dx) | library dense | straightforward loop | library / loop | "
              "instr/MAC library | instr/MAC loop |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    per_mac = {}
    for target, c in counts.items():
        cases = [(f"Dense {n_in}->{n_out} b{b}", fc_prefix(b, n_in, n_out), fc_macs(b, n_in, n_out))
                 for b in FC_BATCHES if f"{fc_prefix(b, n_in, n_out)}.dense_ref" in c]
        h, w, ch = CONV
        macs = conv_macs(h, w, ch)
        cases += [(f"DepthwiseConv2D 3x3 {h}x{w}x{ch}", f"{conv_prefix(h, w, ch)}.dw", macs["dw"]),
                  (f"Conv2D 1x1 {ch}->{ch} on {h}x{w}", f"{conv_prefix(h, w, ch)}.pw", macs["pw"])]
        for label, p, mac in cases:
            lib, loop = c[f"{p}.dense_ref"], c[f"{p}.naive"]
            per_mac[(target, label)] = lib / mac
            lines.append(f"| {TARGETS[target]['cpu']} | {label} | {fmt(mac)} | {fmt(lib)} | {fmt(loop)} | "
                         f"{lib / loop:.2f} | {lib / mac:.2f} | {loop / mac:.2f} |")
    lines += ["", "Depthwise MACs count the padded taps, as the Python accounting does (the SAME padding skips 16% "
              "of them). Instructions include the bias and the output clearing.", ""]

    # --- sparse kernel vs the straightforward sparse loop
    lines += ["### Sparse Dense kernel vs the straightforward sparse loop", "",
              "`NaiveDenseBackwardSparseAdd` in `micro/bench/naive.cc` is the straightforward sparse loop (per input "
              "row, per kept unit, an index load per MAC; the library's loop before it walked dW by blocks of four "
              "kept columns with the kept deltas in registers). The library's `DenseBackwardSparse(kAdd)` must match "
              "it bit for bit (checked on non-zero outputs).", "",
              "| target | batch | k | kept MACs (dW + dx) | library dW+dx (kAdd) | straightforward sparse loop | "
              "library / loop | instr/kept MAC library | instr/kept MAC loop |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (target, batch), (dense, naive, rows) in fc_summary.items():
        for r in rows:
            macs = fc_macs(batch, n_in, n_out, k=r["k"])
            lines.append(f"| {TARGETS[target]['cpu']} | {batch} | {r['k']} | {fmt(macs)} | {fmt(r['dwdx_add'])} | "
                         f"{fmt(r['naive_sparse'])} | {r['dwdx_add'] / r['naive_sparse']:.2f} | "
                         f"{r['dwdx_add'] / macs:.2f} | {r['naive_sparse'] / macs:.2f} |")
    lines.append("")

    # --- 2. conv block
    h, w, ch = CONV
    for target, c in counts.items():
        dense, naive, rows = conv_rows(c, h, w, ch)
        lines += [f"### Depthwise-separable block ({h}x{w}x{ch}: DepthwiseConv2D 3x3 SAME + Conv2D 1x1 {ch}->{ch}), "
                  f"channel-sparse backward, {TARGETS[target]['cpu']} (instructions)", "",
                  f"Dense references: depthwise {fmt(dense['dw'])}, pointwise {fmt(dense['pw'])}, block "
                  f"**{fmt(dense['dw'] + dense['pw'])}** (straightforward loops: {fmt(naive['dw'])}, "
                  f"{fmt(naive['pw'])}).", "",
                  "| kept ratio | k | dw selection | dw sparse (overwrite) | dw bias | pw selection | "
                  "pw sparse (overwrite) | pw bias | dw + pw sparse (kAdd) | dw + pw clearing | "
                  "block total (overwrite) | block total (kAdd) | ideal | speedup (overwrite) | speedup (kAdd) | "
                  "target |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
        for r in rows:
            ok = r["speedup_add"] >= TARGET_FRACTION * r["ideal"] or r["speedup_ow"] >= TARGET_FRACTION * r["ideal"]
            verdict = ("met" if ok else "missed") if r["ratio"] >= 0.1 - 1e-9 else "n/a"
            lines.append(f"| {r['ratio']:g} | {r['k']} | {fmt(r['dw_select'])} | {fmt(r['dw_sparse_all'])} | "
                         f"{fmt(r['dw_bias'])} | {fmt(r['pw_select'])} | {fmt(r['pw_sparse_all'])} | "
                         f"{fmt(r['pw_bias'])} | {fmt(r['dw_sparse_dwdx_add'] + r['pw_sparse_dwdx_add'])} | "
                         f"{fmt(r['dw_clear_add'] + r['pw_clear_add'])} | "
                         f"{fmt(r['total_ow'])} | {fmt(r['total_add'])} | {r['ideal']:.2f} | "
                         f"{r['speedup_ow']:.2f} | {r['speedup_add']:.2f} | {verdict} |")
            summary[(target, "conv", r["ratio"])] = ok
        lines.append("")
    lines += ["Selection = `SelectChannels` (channel scores over all positions, adaptive k, heap); the *sparse* "
              "columns "
              "are one `...BackwardSparse(kOverwrite)` call with dW, dx and db; *dw/pw bias* is that call's dense-bias "
              "part alone (it runs over every position and channel, whatever k); *kAdd* = the same without bias in "
              "`Accumulate::kAdd`; *clearing* = zeroing dx plus what `SgdUpdateColumns` spends clearing the kept dW "
              "columns it consumes; "
              "block total (kAdd) = selections + kAdd + biases + clearing.", ""]

    # --- selection cost per op
    lines += ["### Selection cost per operation", "",
              "| target | layer | n | k | selection instr | accounting select_ops (reads + n*ceil(log2(k+1))) | "
              "instr / select_op | heap comparisons n*ceil(log2(k+1)) | instr / heap comparison |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    select_points = {}
    for target, c in counts.items():
        pts = []
        for ratio in RATIOS[1:]:
            k = k_of(ratio, n_out)
            sel = c[f"{fc_prefix(1, n_in, n_out)}.k{k}.select"]
            pts.append(("Dense", n_out, k, sel, select_ops(n_out, k), heap_comparisons(n_out, k)))
        for ratio in RATIOS[1:]:
            k = k_of(ratio, ch)
            sel = c[f"{conv_prefix(h, w, ch)}.pw.k{k}.select"]
            pts.append(("Conv 1x1 (channel)", ch, k, sel, select_ops(ch, k, h * w * ch), heap_comparisons(ch, k)))
        for layer, n, k, sel, ops, heap in pts:
            lines.append(f"| {TARGETS[target]['cpu']} | {layer} | {n} | {k} | {fmt(sel)} | {fmt(ops)} | "
                         f"{sel / ops:.2f} | {fmt(heap)} | {sel / heap:.2f} |")
        select_points[target] = pts
    lines += ["", "The accounting's `select_ops` (what `estimate_time_energy` multiplies by `cycles_per_select_op`) "
              "counts one read per error element plus n*ceil(log2(k+1)) heap comparisons; it leaves out the final "
              "O(k log k) sort of the kept indices, which is why the cost per op grows with k.", ""]

    # --- 3. trace
    if trace is not None:
        for target, c in counts.items():
            rows = trace_rows(c, trace)
            names = [layer["name"] for layer in trace["layers"]]
            lines += [f"### TinyProp fine-tuning trace, MLP 784-256-128-10, {TARGETS[target]['cpu']}", "",
                      f"{trace['data']}; {trace['policy']}, Adam 1e-3, batch 32, {trace['epochs']} epochs "
                      f"(accuracy {trace['initial_accuracy']:.3f} before). Per epoch the per-layer mean kept k "
                      "(`BackpropStats`/`read_stats`, zero-error samples count as k = 0); each layer's backward is "
                      "counted at batch 1 at floor(k) and ceil(k) and interpolated linearly. Dense = the three "
                      "layers' `DenseBackwardReference` (no dx for the first layer); the MAC-count speedup is the "
                      "Python accounting's dense / sparse backward MACs of that epoch.", "",
                      "| epoch | accuracy | mean k "
                      + " / ".join(f"{n} ({TRACE_MODEL[i + 1]})" for i, n in enumerate(names))
                      + " | dense | sparse (overwrite) | sparse (kAdd + clearing) | speedup (overwrite) | "
                      "speedup (kAdd) | speedup (kAdd) vs straightforward dense loops | "
                      "MAC-count speedup (Python accounting) |",
                      "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
            for r in rows:
                lines.append(f"| {r['epoch']} | {r['accuracy']:.3f} | " + " / ".join(f"{k:.2f}" for k in r["ks"])
                             + f" | {fmt(r['dense'])} | {fmt(r['sparse_ow'])} | {fmt(r['sparse_add'])} | "
                             f"{r['dense'] / r['sparse_ow']:.2f} | {r['dense'] / r['sparse_add']:.2f} | "
                             f"{r['naive'] / r['sparse_add']:.2f} | {r['mac_speedup']:.2f} |")
            lines.append("")
        summary["trace"] = trace_rows(m4, trace)

    # --- targets
    lines += ["### Targets", ""]
    target_lines = []
    for (target, batch), (dense, naive, rows) in fc_summary.items():
        for r in rows:
            if r["ratio"] < 0.1 - 1e-9 or r["ratio"] == 1.0:
                continue
            need = TARGET_FRACTION * r["ideal"]
            summary[(target, "fc", batch, r["ratio"])] = (r["speedup_ow"] >= need, r["speedup_add"] >= need)
        band = [r for r in rows if 0.1 - 1e-9 <= r["ratio"] < 1]

        def verdict(key, base=dense):
            ok = all(base / r[key] >= TARGET_FRACTION * r["ideal"] for r in band)
            fractions = ", ".join(f"{base / r[key] / r['ideal']:.2f}" for r in band)
            return ("met" if ok else "missed") + f" ({fractions})"

        target_lines.append(
            f"- Dense {n_in}->{n_out}, batch {batch}, {TARGETS[target]['cpu']}, speedup >= 0.9 x n/k at ratios "
            f"0.5/0.2/0.1 (speedup / ideal in brackets). Against the library's dense reference: overwrite mode "
            f"**{verdict('total_ow')}**, kAdd with clearing **{verdict('total_add')}**, kAdd kernel only "
            f"**{verdict('kernel_add')}**. Against the straightforward dense loop: kAdd with clearing "
            f"**{verdict('total_add', naive)}**. Dense reference vs straightforward loop: "
            f"{dense / naive:.2f}x the loop's instructions (**{'no slower' if dense <= naive else 'slower'}**).")
    for target, c in counts.items():
        dense, naive, rows = conv_rows(c, *CONV)
        shown = [r for r in rows if 0.1 - 1e-9 <= r["ratio"] < 1]
        target_lines.append(
            f"- Depthwise-separable block, {TARGETS[target]['cpu']}: speedup / ideal at ratios 0.5-0.1 = "
            + ", ".join(f"{max(r['speedup_ow'], r['speedup_add']) / r['ideal']:.2f}" for r in shown)
            + f" -> **{'met' if all(summary[(target, 'conv', r['ratio'])] for r in shown) else 'missed'}**; "
            f"selection share {100 * min(r['sel_share_ow'] for r in shown):.1f}-"
            f"{100 * max(r['sel_share_ow'] for r in shown):.1f}%. Dense references vs straightforward loops: "
            f"depthwise {dense['dw'] / naive['dw']:.2f}x, pointwise {dense['pw'] / naive['pw']:.2f}x.")
    # The bound: selection under 10 % of the step down to ratio 0.1 (ratio 0.05 shown, outside it).
    for (target, batch), (_, _, rows) in fc_summary.items():
        in_scope = [r for r in rows if 0.1 - 1e-9 <= r["ratio"] < 1]
        beyond = [r for r in rows if r["ratio"] < 0.1 - 1e-9]
        target_lines.append(
            f"- Selection share of the kAdd total, Dense 256->128, batch {batch}, {TARGETS[target]['cpu']}, at ratios "
            "0.5/0.2/0.1: " + ", ".join(f"{100 * r['sel_share_add']:.1f}%" for r in in_scope)
            + f" (**{'under' if all(r['sel_share_add'] < 0.1 for r in in_scope) else 'not under'} 10%**)"
            + "".join(f"; {100 * r['sel_share_add']:.1f}% at {r['ratio']:g}" for r in beyond) + ".")
    if trace is not None:
        rows = summary["trace"]
        target_lines.append(
            "- Fine-tuning trace (Cortex-M4F): per-epoch backward speedup against the library's dense reference "
            + ", ".join(f"{r['dense'] / r['sparse_add']:.1f}" for r in rows) + " (kAdd with clearing), "
            + ", ".join(f"{r['dense'] / r['sparse_ow']:.1f}" for r in rows) + " (overwrite); against the "
            "straightforward dense loops " + ", ".join(f"{r['naive'] / r['sparse_add']:.1f}" for r in rows)
            + " (kAdd with clearing); the MAC-count "
            "speedups " + ", ".join(f"{r['mac_speedup']:.1f}" for r in rows) + " the Python accounting reports.")
    lines += target_lines + [""]

    # --- why (numbers from the Cortex-M4F run)
    _, naive1, rows1 = fc_summary[("m4", 1)]
    full = next(r for r in rows1 if r["k"] == n_out)
    tenth = next(r for r in rows1 if abs(r["ratio"] - 0.1) < 1e-9)
    h, w, ch = CONV
    cp = conv_prefix(h, w, ch)
    k_small = k_of(RATIOS[-1], ch)
    pw_full = m4[f"{cp}.pw.k{ch}.sparse_dwdx_add"] / conv_macs(h, w, ch)["pw"]
    pw_small = m4[f"{cp}.pw.k{k_small}.sparse_dwdx_add"] / (2 * h * w * ch * k_small)
    dw_small = m4[f"{cp}.dw.k{k_small}.sparse_dwdx_add"] / (2 * h * w * 9 * k_small)
    conv10 = next(r for r in conv_rows(m4, h, w, ch)[2] if abs(r["ratio"] - 0.1) < 1e-9)
    fixed10 = conv10["select"] + conv10["dw_bias"] + conv10["pw_bias"]
    lines += [
        "### Where the instructions go (Cortex-M4F figures)", "",
        f"- `DenseBackwardReference` runs the straightforward loop order (`for b, for i, for j`, bit-identical to the "
        f"old batch-innermost order): {dense_ratio(counts, 1):.2f}x the bench's straightforward loop at batch 1, "
        f"{dense_ratio(counts, 8):.2f}x at batch 8.",
        f"- `DenseBackwardSparse` walks dW by blocks of four kept columns (the kept deltas in registers, x and the dx "
        f"row sums loaded once per block; dx row sums in a fixed 64-float stack buffer in kAdd mode): with every unit "
        f"kept {full['dwdx_add'] / fc_macs(1, n_in, n_out):.1f} instructions per MAC, against "
        f"{full['naive_sparse'] / fc_macs(1, n_in, n_out):.1f} for the straightforward sparse loop and "
        f"{naive1 / fc_macs(1, n_in, n_out):.1f} for the straightforward dense loop.",
        f"- `Accumulate::kOverwrite` must still clear the whole dW (in x out floats) whatever k is: "
        f"{fmt(tenth['dwdx'] - tenth['dwdx_add'])} of the {fmt(tenth['dwdx'])} instructions at ratio 0.1, so kAdd is "
        f"the fast path. Its clearing costs {fmt(tenth['clear'])} instructions at ratio 0.1 "
        f"({fmt(tenth['clear_dx'])} for dx, {fmt(tenth['zero'])} for the dW columns inside `SgdUpdateColumns`).",
        f"- Conv layers: the pointwise sparse kernel costs {pw_full:.1f} instructions per kept MAC with all channels "
        f"kept and {pw_small:.1f} at k = {k_small}, the depthwise one {dw_small:.1f} at k = {k_small} (padded taps "
        f"counted; sparse depthwise runs channel-outer: per kept channel and kernel tap one pass over the positions "
        f"with the dW sum and the weight in registers, bit-identical to the position-outer reference). Channel "
        f"selection and the dense bias run over every position whatever k (column sums eight channels at a time): "
        f"{fmt(fixed10)} instructions of the block at ratio 0.1, against an ideal block total of "
        f"{fmt((conv10['speedup_ow'] * conv10['total_ow']) / conv10['ideal'])}.",
        "- Selection caches each kept entry's score as an order-preserving integer key in the output row's unused "
        "half (when 2k <= n), keeps a list sorted best first for k <= 20 and a size-k heap beyond, and sorts the "
        "kept indices by insertion for k <= 32.",
        "",
    ]
    body = "\n".join(lines)

    # --- measured_cycles.json
    payload = {}
    sparse_mac = {t: next(r for r in fc_summary[(t, 1)][2] if r["k"] == n_out)["dwdx_add"] / fc_macs(1, n_in, n_out)
                  for t in counts}
    for target, c in counts.items():
        spec = TARGETS[target]
        label = f"Dense {n_in}->{n_out} b1"
        mac = per_mac[(target, label)]
        pts = [p for p in select_points[target] if p[0] == "Dense" and p[2] <= k_of(0.2, n_out)]
        per_op = sum(p[3] for p in pts) / sum(p[4] for p in pts)
        others = ", ".join(f"{lab}: {v:.2f}" for (t, lab), v in per_mac.items() if t == target and lab != label)
        all_ops = [p[3] / p[4] for p in select_points[target]]
        command = " ".join(qemu_command(target, Path(f"micro/build-bench-{target}/tinyprop_qemu_bench"),
                                       "calib fc 1 256 128 1 ..."))
        payload[spec["board"]] = {
            "cycles_per_mac": round(mac, 3),
            "cycles_per_select_op": round(per_op, 3),
            "source": (f"QEMU {spec['machine']} -icount instruction count of micro/ kernels ({spec['cpu']}, "
                       f"{spec['flags']}, Release -O3), not cycles; command: {COMMAND} (runs: {command})"),
            "note": (f"Instructions, not cycles: no pipeline, wait-state or FPU-latency model, so real cycles are "
                     f"higher. cycles_per_mac = DenseBackwardReference {n_in}->{n_out} batch 1 (dW + dx + db) / "
                     f"(dW + dx MACs); other dense kernels: {others}. Per kept MAC the sparse Dense kernel costs "
                     f"{sparse_mac[target]:.2f} (all units kept, kAdd), see benchmarks/RESULTS.md. cycles_per_select_op = SelectUnits instructions / accounting "
                     f"select_ops (n reads + n*ceil(log2(k+1))) pooled over n = {n_out}, k = "
                     f"{', '.join(str(p[2]) for p in pts)}; over all measured points it ranges "
                     f"{min(all_ops):.1f}-{max(all_ops):.1f}."),
        }
    return body, payload, summary


# ------------------------------------------------------------------------------------------------------------

def all_jobs(trace: dict | None) -> str:
    n_in, n_out = FC
    jobs = [fc_job(b, n_in, n_out, [k_of(r, n_out) for r in RATIOS]) for b in FC_BATCHES]
    h, w, ch = CONV
    jobs.append(conv_job(h, w, ch, [k_of(r, ch) for r in RATIOS]))
    if trace is not None:
        jobs += trace_ks(trace)
    return " ".join(jobs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs of the adaptive-ratio trace")
    parser.add_argument("--no-trace", action="store_true", help="skip the fine-tuning trace (no TensorFlow)")
    parser.add_argument("--no-write", action="store_true", help="print only; don't touch RESULTS.md / the JSON")
    args = parser.parse_args(argv)
    missing = missing_tools()
    if missing:
        sys.exit(f"missing tools: {', '.join(missing)}; run micro/install_toolchains.sh")

    trace = None
    if not args.no_trace:
        print(f"fine-tuning trace ({args.epochs} epochs) ...", flush=True)
        trace = finetune_trace(args.epochs)
    jobs = all_jobs(trace)
    counts = {}
    for target in TARGETS:
        print(f"building and running {target} ...", flush=True)
        elf = build(target)
        counts[target] = run_bench(target, elf, jobs)
    body, payload, _ = analyse(counts, trace)
    print(body)
    if not args.no_write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import _results

        _results.write_section(SECTION, COMMAND + ("" if trace is not None else " --no-trace"), body)
        with open(MEASURED_JSON, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2)
            handle.write("\n")
        print(f"\nwrote {_results.RESULTS} and {MEASURED_JSON}")


if __name__ == "__main__":
    main()
