"""Board profiles: every figure sourced, time/energy and memory closed forms, fit checks, measured overrides."""

import dataclasses
import json
import os
import math

import numpy as np
import pytest

from tinyprop_tf import mcu_profiles

BOARD_KEYS = ["nrf52840", "nrf5340", "esp32", "esp32s3", "esp32c3"]


def test_the_five_boards_are_profiled():
    assert sorted(mcu_profiles.PROFILES) == sorted(BOARD_KEYS)
    for key, profile in mcu_profiles.PROFILES.items():
        assert profile.key == key


@pytest.mark.parametrize("key", BOARD_KEYS)
def test_every_figure_has_a_non_empty_source(key):
    profile = mcu_profiles.PROFILES[key]
    for figure, _value, source in profile.figures():
        assert source.figure == figure
        assert isinstance(source.source, str) and source.source.strip(), f"{key}.{figure} has no source"
    measured_boards = set()
    if os.path.isfile(mcu_profiles.MEASURED_CYCLES_PATH):
        with open(mcu_profiles.MEASURED_CYCLES_PATH, encoding="utf-8") as handle:
            measured_boards = set(json.load(handle))
    for cost in (profile.cycles_per_mac, profile.cycles_per_select_op):
        assert cost.source.strip()
        # Documented figures, except the boards the package's measured_cycles.json (QEMU counts) overrides.
        assert cost.measured is (key in measured_boards)
    # Every figure the dataclass says needs a source has exactly one.
    named = [s.figure for s in profile.sources]
    assert sorted(set(named)) == sorted(named)
    assert set(mcu_profiles.BoardProfile.FIGURES) <= set(named)


def test_a_profile_without_a_source_for_a_figure_is_refused():
    profile = mcu_profiles.PROFILES["esp32"]
    without_clock = tuple(s for s in profile.sources if s.figure != "clock_hz")
    with pytest.raises(ValueError, match="clock_hz"):
        dataclasses.replace(profile, sources=without_clock)
    blank = tuple(dataclasses.replace(s, source="  ") if s.figure == "flash_bytes" else s for s in profile.sources)
    with pytest.raises(ValueError, match="flash_bytes"):
        dataclasses.replace(profile, sources=blank)


def test_figures_that_matter_for_float32_training():
    # The ESP32-C3 has no FPU (RV32IMC): its software float must cost far more per MAC than the FPU cores.
    c3 = mcu_profiles.get_board("esp32c3")
    assert not c3.has_fpu
    for key in ("nrf52840", "nrf5340", "esp32", "esp32s3"):
        other = mcu_profiles.get_board(key)
        assert other.has_fpu
        assert c3.cycles_per_mac.value > 10 * other.cycles_per_mac.value
    assert mcu_profiles.get_board("esp32").usable_ram_bytes == 320 * 1024  # ESP-IDF: 320 KB DRAM of 520 KB SRAM
    assert mcu_profiles.get_board("nrf5340").usable_ram_bytes == 448 * 1024  # 64 KB shared with the network core
    for profile in mcu_profiles.PROFILES.values():
        assert profile.usable_ram_bytes <= profile.ram_bytes
        assert profile.active_power_w == pytest.approx(profile.supply_v * profile.active_current_a)


@pytest.mark.parametrize("key", BOARD_KEYS)
def test_time_and_energy_closed_form(key):
    board = mcu_profiles.get_board(key)
    macs, ops = 3_456_789, 12_345
    seconds, joules = mcu_profiles.estimate_time_energy(board, macs, ops)
    expected = (macs * board.cycles_per_mac.value + ops * board.cycles_per_select_op.value) / board.clock_hz
    assert seconds == pytest.approx(expected, rel=1e-12)
    assert joules == pytest.approx(expected * board.active_power_w, rel=1e-12)
    # MACs alone: time = macs x cycles per MAC / clock; energy = time x power.
    t, e = mcu_profiles.estimate_time_energy(key, macs)
    assert t == pytest.approx(macs * board.cycles_per_mac.value / board.clock_hz, rel=1e-12)
    assert e == pytest.approx(t * board.supply_v * board.active_current_a, rel=1e-12)
    assert mcu_profiles.estimate_time_energy(board, 0) == (0.0, 0.0)


def test_time_and_energy_take_numpy_numbers_and_return_named_fields():
    # The demo passes numpy sums (float64) of per-epoch counts.
    board = mcu_profiles.get_board("nrf52840")  # documented 7 / 5 cycles, or the package's measured figures
    result = mcu_profiles.estimate_time_energy("nrf52840", np.float64(1e6), np.int64(1000))
    assert result.seconds == pytest.approx(
        (1e6 * board.cycles_per_mac.value + 1000 * board.cycles_per_select_op.value) / 64e6)
    assert result.joules == pytest.approx(result.seconds * 3.0 * 3.3e-3)


def test_a_whole_step_measured_in_instructions_is_one_cycle_each_at_the_board_clock():
    # The demo export's step on the emulated Cortex-M4F (~1.77 M instructions) on the nRF52840: 1.77e6 / 64 MHz.
    seconds, joules = mcu_profiles.step_time_energy("nrf52840", 1_770_000)
    assert mcu_profiles.STEP_CYCLES_PER_INSTRUCTION == 1.0
    assert seconds == pytest.approx(1_770_000 / 64e6) and joules == pytest.approx(seconds * 3.0 * 3.3e-3)
    assert mcu_profiles.step_time_energy("nrf5340", 0) == (0.0, 0.0)
    with pytest.raises(ValueError, match="instructions"):
        mcu_profiles.step_time_energy("nrf52840", -1)


def test_nrf52840_worked_example():
    # 1 M MACs at 7 cycles / 64 MHz = 0.109375 s; x (3.0 V x 3.3 mA = 9.9 mW) = 1.0828 mJ. With the documented
    # figure (the package's measured_cycles.json overrides PROFILES at import).
    documented = dataclasses.replace(mcu_profiles.get_board("nrf52840"),
                                     cycles_per_mac=mcu_profiles.CycleCost(7.0, "Arm Cortex-M4 TRM estimate"))
    seconds, joules = mcu_profiles.estimate_time_energy(documented, 1_000_000)
    assert seconds == pytest.approx(0.109375)
    assert joules == pytest.approx(0.109375 * 9.9e-3)


@pytest.mark.parametrize(
    "optimizer, state_slots, counter",
    [("sgd", 0, 0), ("momentum", 1, 0), ("sgd+momentum", 1, 0), ("SGD_Momentum", 1, 0), ("adam", 2, 4), ("Adam", 2, 4)],
)
def test_memory_closed_forms(optimizer, state_slots, counter):
    params, trainable, acts, batch, arena = 10_000, 4_000, [784, 32, 16, 10], 8, 12_345
    m = mcu_profiles.training_memory(params=params, trainable_params=trainable, activation_elements=acts,
                               batch_size=batch, optimizer=optimizer, arena_bytes=arena)
    assert m.weights_bytes == 4 * params
    assert m.gradients_bytes == 4 * trainable
    assert m.optimizer_state_bytes == state_slots * 4 * trainable + counter
    assert m.activations_bytes == 4 * sum(acts) * batch
    assert m.arena_bytes == arena
    assert m.ram_bytes == (4 * params + 4 * trainable + state_slots * 4 * trainable + counter
                           + 4 * sum(acts) * batch + arena)
    assert m.flash_bytes == 4 * params
    assert m.as_dict()["ram_bytes"] == m.ram_bytes


def test_memory_defaults_and_options():
    m = mcu_profiles.training_memory(params=100, activation_elements=50)
    # All weights trainable, batch 1, SGD, no arena.
    assert (m.weights_bytes, m.gradients_bytes, m.optimizer_state_bytes, m.activations_bytes) == (400, 400, 0, 200)
    assert m.ram_bytes == 1000
    adam = mcu_profiles.training_memory(params=100, activation_elements=50, optimizer="adam")
    assert adam.ram_bytes - m.ram_bytes == 2 * 4 * 100 + mcu_profiles.ADAM_STEP_COUNTER_BYTES
    sized = mcu_profiles.training_memory(params=100, activation_elements=(), model_flash_bytes=5_000)
    assert sized.flash_bytes == 5_000 and sized.activations_bytes == 0


def test_fits_margin_sign_and_message():
    board = mcu_profiles.get_board("nrf52840")
    usable = board.usable_ram_bytes
    small = mcu_profiles.training_memory(params=1_000, activation_elements=100)
    ok, margin, message = mcu_profiles.fits(board, small)
    assert ok and margin == usable - small.ram_bytes > 0
    assert "fits nrf52840" in message

    # Exactly at the limit still fits, with margin 0.
    exact = mcu_profiles.training_memory(params=0, activation_elements=0, arena_bytes=usable)
    assert mcu_profiles.fits("nrf52840", exact)[:2] == (True, 0)

    too_big = mcu_profiles.training_memory(params=0, activation_elements=0, arena_bytes=usable + 1234)
    ok, margin, message = mcu_profiles.fits("nrf52840", too_big)
    assert not ok and margin == -1234
    assert "does not fit nrf52840" in message and "RAM" in message and "short by 1,234 B" in message


def test_fits_reports_flash_when_flash_is_short():
    board = mcu_profiles.get_board("nrf52840")
    need = mcu_profiles.training_memory(params=10, activation_elements=0, model_flash_bytes=board.flash_bytes + 10)
    ok, margin, message = mcu_profiles.fits(board, need)
    assert not ok and margin == -10
    assert "flash" in message and "short by 10 B" in message and "RAM:" not in message


def test_measured_override_marks_measured_and_leaves_the_profile_alone():
    original = mcu_profiles.get_board("nrf52840")
    source = "QEMU mps2-an386 -icount: instructions, not cycles"
    measured = mcu_profiles.with_measured_cycles_per_mac("nrf52840", 6.25, source)
    assert measured.cycles_per_mac.measured is True
    assert measured.cycles_per_mac.value == 6.25
    assert "QEMU" in measured.cycles_per_mac.source
    assert measured.source_of("cycles_per_mac").estimate is False
    assert mcu_profiles.PROFILES["nrf52840"] is original and original.cycles_per_mac.value != 6.25
    seconds, _ = mcu_profiles.estimate_time_energy(measured, 64_000_000)
    assert seconds == pytest.approx(6.25)
    selected = mcu_profiles.with_measured_cycles_per_select_op(measured, 3.0, "QEMU mps2-an386")
    assert selected.cycles_per_select_op.measured and selected.cycles_per_mac.value == 6.25


def test_measured_overrides_from_json(tmp_path):
    path = tmp_path / "measured.json"
    path.write_text(json.dumps({
        "nrf5340": {"cycles_per_mac": 5.5, "source": "QEMU mps2-an505 instruction count"},
        "ESP32-C3": {"cycles_per_select_op": 11.0, "source": "QEMU riscv32 instruction count"},
    }))
    profiles = mcu_profiles.load_cycle_overrides(str(path))
    assert profiles["nrf5340"].cycles_per_mac.value == 5.5 and profiles["nrf5340"].cycles_per_mac.measured
    assert profiles["esp32c3"].cycles_per_select_op.measured and not profiles["esp32c3"].cycles_per_mac.measured
    assert profiles["esp32"] is mcu_profiles.PROFILES["esp32"]
    assert mcu_profiles.PROFILES["nrf5340"].cycles_per_mac.value != 5.5  # the module's table is untouched


@pytest.mark.parametrize(
    "content, param",
    [
        ({"nrf9999": {"cycles_per_mac": 1.0, "source": "x"}}, "unknown board"),
        ({"esp32": {"cycles_per_mac": 1.0}}, "source"),
        ({"esp32": {"source": "x"}}, "cycles_per_mac"),
        ({"esp32": {"cycles_per_mac": -1.0, "source": "x"}}, "value"),
        ({"esp32": {"cycles": 1.0, "source": "x"}}, "keys"),
    ],
)
def test_bad_override_files(tmp_path, content, param):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=param):
        mcu_profiles.load_cycle_overrides(str(path))


def test_get_board_normalises_names_and_lists_valid_ones():
    assert mcu_profiles.get_board("ESP32-S3").key == "esp32s3"
    assert mcu_profiles.get_board("nRF5340").key == "nrf5340"
    assert mcu_profiles.get_board("esp32_c3").key == "esp32c3"
    with pytest.raises(ValueError) as excinfo:
        mcu_profiles.get_board("stm32f4")
    text = str(excinfo.value)
    assert "stm32f4" in text
    for key in BOARD_KEYS:
        assert key in text


@pytest.mark.parametrize(
    "call, param",
    [
        (lambda: mcu_profiles.estimate_time_energy("esp32", -1), "macs"),
        (lambda: mcu_profiles.estimate_time_energy("esp32", math.nan), "macs"),
        (lambda: mcu_profiles.estimate_time_energy("esp32", math.inf), "macs"),
        (lambda: mcu_profiles.estimate_time_energy("esp32", "100"), "macs"),
        (lambda: mcu_profiles.estimate_time_energy("esp32", 10, -5), "other_ops"),
        (lambda: mcu_profiles.estimate_time_energy("esp33", 10), "unknown board"),
        (lambda: mcu_profiles.training_memory(params=10, activation_elements=1, optimizer="rmsprop"), "optimizer"),
        (lambda: mcu_profiles.training_memory(params=10, activation_elements=1, optimizer=None), "optimizer"),
        (lambda: mcu_profiles.training_memory(params=-1, activation_elements=1), "params"),
        (lambda: mcu_profiles.training_memory(params=10, activation_elements=1, batch_size=0), "batch_size"),
        (lambda: mcu_profiles.training_memory(params=10, activation_elements=[1, -2]), "activation_elements"),
        (lambda: mcu_profiles.training_memory(params=10, activation_elements=1.5), "activation_elements"),
        (lambda: mcu_profiles.training_memory(params=10, activation_elements=1, trainable_params=11),
         "trainable_params"),
        (lambda: mcu_profiles.training_memory(params=10, activation_elements=1, arena_bytes=-1), "arena_bytes"),
        (lambda: mcu_profiles.fits("nrf52840", {"ram_bytes": 1}), "breakdown"),
        (lambda: mcu_profiles.with_measured_cycles_per_mac("esp32", 0, "QEMU"), "value"),
        (lambda: mcu_profiles.with_measured_cycles_per_mac("esp32", 3.0, ""), "source"),
        (lambda: mcu_profiles.PROFILES["esp32"].source_of("colour"), "figure"),
    ],
)
def test_bad_inputs_name_the_parameter(call, param):
    with pytest.raises(ValueError, match=param):
        call()


def test_unknown_optimizer_message_lists_the_allowed_ones():
    with pytest.raises(ValueError) as excinfo:
        mcu_profiles.training_memory(params=10, activation_elements=1, optimizer="lion")
    for name in ("sgd", "momentum", "adam", "lion"):
        assert name in str(excinfo.value)


def test_package_measured_cycles_are_applied_at_import():
    """tinyprop_tf/measured_cycles.json (written by benchmarks/micro_qemu.py) overrides its boards in PROFILES."""
    path = mcu_profiles.MEASURED_CYCLES_PATH
    assert os.path.dirname(path) == os.path.dirname(os.path.abspath(mcu_profiles.__file__))
    if not os.path.isfile(path):
        pytest.skip("tinyprop_tf/measured_cycles.json not written yet (python benchmarks/micro_qemu.py)")
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    assert data, "measured_cycles.json is empty"
    for name, entry in data.items():
        board = mcu_profiles.get_board(name)
        if "cycles_per_mac" in entry:
            assert board.cycles_per_mac.measured is True and board.cycles_per_mac.value == entry["cycles_per_mac"]
        if "cycles_per_select_op" in entry:
            assert board.cycles_per_select_op.measured is True
            assert board.cycles_per_select_op.value == entry["cycles_per_select_op"]
        assert board.source_of("cycles_per_mac").estimate is not board.cycles_per_mac.measured
    assert mcu_profiles.PROFILES["nrf52840"].cycles_per_mac.measured is True
