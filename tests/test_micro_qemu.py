"""micro/bench under QEMU: the bare-metal image runs, counts instructions repeatably, and sparse beats dense.

A small configuration of benchmarks/micro_qemu.py (the full run writes benchmarks/RESULTS.md). Build directories
are micro/build-pytest-bench-<target> (gitignored, reused). Skipped, with the reason, only when cmake, the Arm
cross compiler or qemu-system-arm is missing (micro/install_toolchains.sh installs them).
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "micro"


def _load_driver():
    spec = importlib.util.spec_from_file_location("micro_qemu", ROOT / "benchmarks" / "micro_qemu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mq = _load_driver()

# Dense 128 -> 64 at ratio 1 and 0.1 (k = floor(6.4) = 6), batch 2 at k = 6; a 5x5x16 depthwise-separable block.
FC_IN, FC_OUT, K_FC = 128, 64, 6
CONV_H, CONV_W, CONV_C, K_CONV = 5, 5, 16, 1
JOBS = (f"calib fc 1 {FC_IN} {FC_OUT} 1 {FC_OUT} {K_FC} fc 2 {FC_IN} {FC_OUT} 1 {K_FC} "
        f"conv {CONV_H} {CONV_W} {CONV_C} {CONV_C} {K_CONV}")


def _build(target: str) -> Path:
    missing = mq.missing_tools()
    if missing:
        pytest.skip(f"{', '.join(missing)} not found; run micro/install_toolchains.sh")
    build_dir = MICRO / f"build-pytest-bench-{target}"
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / ".pytest-build.lock", "w") as lock:  # serialise builds across pytest-xdist workers
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return mq.build(target, build_dir)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["m4", "m33"])
def test_bench_runs_repeatably_and_sparse_beats_dense(target):
    elf = _build(target)
    runs = []
    for _ in range(2):
        status, out = mq.run_qemu(target, elf, JOBS, timeout=120)
        assert status == 0, out[-3000:]
        assert "0 check failure(s)" in out, out[-3000:]
        runs.append(mq.parse(out))
    first, second = runs
    assert first == second, "tick counts differ between two QEMU runs of the same image"
    assert len(first) > 20 and all(a > 0 and b > 0 for a, b in first.values())

    counts = mq.Counts(target, first)  # raises unless every calibration loop gives the expected factor
    assert counts.factor == pytest.approx(mq.TARGETS[target]["nominal"], rel=1e-3)

    fc = mq.fc_prefix(1, FC_IN, FC_OUT)
    dense = counts[f"{fc}.dense_ref"]
    # The two calls inside one run agree to a few instructions (quantisation, an occasional SysTick interrupt).
    for name, (a, b) in first.items():
        assert abs(a - b) * counts.factor <= 16, (name, a, b)
    # A dense 128 -> 64 backward is tens of thousands of instructions: at least 2 per MAC, at most 40.
    macs = mq.fc_macs(1, FC_IN, FC_OUT)
    assert 2 * macs < dense < 40 * macs
    sparse = counts[f"{fc}.k{K_FC}.select"] + counts[f"{fc}.k{K_FC}.sparse_all"]
    sparse_add = (counts[f"{fc}.k{K_FC}.select"] + counts[f"{fc}.k{K_FC}.sparse_dwdx_add"]
                  + counts[f"{fc}.k{K_FC}.bias"] + counts[f"{fc}.k{K_FC}.clear_add"]
                  + counts[f"{fc}.k{K_FC}.sgd_cols"] - counts[f"{fc}.k{K_FC}.sgd_cols_plain"])
    assert sparse < dense / 2, (sparse, dense)
    assert sparse_add < sparse  # clearing 6 kept columns in the optimizer is cheaper than clearing all of dW
    # The dense reference is no slower than the straightforward loop; the sparse kernel with every unit kept is
    # cheaper per MAC than the straightforward sparse loop (index load per MAC) it must match bit for bit.
    assert dense <= counts[f"{fc}.naive"]
    assert counts[f"{fc}.k{FC_OUT}.sparse_dwdx_add"] < counts[f"{fc}.k{FC_OUT}.naive_sparse_add"]
    # Fewer kept units, fewer instructions; selection is a small part at ratio 0.1.
    assert counts[f"{fc}.k{K_FC}.sparse_all"] < counts[f"{fc}.k{FC_OUT}.sparse_all"]
    assert counts[f"{fc}.k{K_FC}.select"] < 0.2 * sparse
    fc2 = mq.fc_prefix(2, FC_IN, FC_OUT)
    assert counts[f"{fc2}.k{K_FC}.sparse_all"] > counts[f"{fc}.k{K_FC}.sparse_all"]  # batch 2 costs more

    conv = mq.conv_prefix(CONV_H, CONV_W, CONV_C)
    conv_dense = counts[f"{conv}.dw.dense_ref"] + counts[f"{conv}.pw.dense_ref"]
    conv_sparse = sum(counts[f"{conv}.{layer}.k{K_CONV}.{what}"] for layer in ("dw", "pw")
                      for what in ("select", "sparse_all"))
    assert conv_sparse < conv_dense


@pytest.mark.slow
def test_bench_reports_failures_through_the_exit_status():
    elf = _build("m4")
    status, out = mq.run_qemu("m4", elf, "fc 1 8 4 1 9", timeout=60)  # k = 9 > 4 units: a failed check
    assert status == 1 and "CHECK FAILED" in out, out
    status, out = mq.run_qemu("m4", elf, "nonsense 3", timeout=60)
    assert status == 2, out


def test_measured_cycles_json_loads_as_board_overrides():
    path = ROOT / "tinyprop_tf" / "measured_cycles.json"  # the one copy: shipped in the package, read by mcu_profiles
    assert mq.MEASURED_JSON == path
    assert not (ROOT / "benchmarks" / "measured_cycles.json").exists(), "stale second copy of the measurements"
    if not path.exists():
        pytest.skip("tinyprop_tf/measured_cycles.json not written yet (python benchmarks/micro_qemu.py)")
    from tinyprop_tf import mcu_profiles

    profiles = mcu_profiles.load_cycle_overrides(str(path))
    data = json.loads(path.read_text())
    assert set(data) == {"nrf52840", "nrf5340"}
    for key, entry in data.items():
        board = profiles[key]
        assert board.cycles_per_mac.measured and board.cycles_per_mac.value == entry["cycles_per_mac"]
        assert board.cycles_per_select_op.measured
        assert "not cycles" in board.cycles_per_mac.source and "QEMU" in board.cycles_per_mac.source
