"""Device profiles and cost estimates: what a training step costs on a microcontroller, and whether it fits.

Every number in a profile carries its source (document, section or table, URL) in ``BoardProfile.sources``;
figures that are reasoned rather than read off a document say so (``FigureSource.estimate``) and give the
reasoning. A profile refuses to be built without a non-empty source for every figure.

Cycles per float32 MAC start as documented estimates (``CycleCost.measured`` is False). When the project has
measured its own kernels (e.g. instruction counts under QEMU), replace them with
``with_measured_cycles_per_mac(board, value, source)`` or ``load_cycle_overrides(path)``; the result is marked
``measured=True``. Note that QEMU counts instructions, not cycles: say so in the source string. The package's
own ``measured_cycles.json`` (``MEASURED_CYCLES_PATH``, written by ``benchmarks/micro_qemu.py``) is applied to
``PROFILES`` at import when present.

Those kernel figures price MAC and selection counts. A step measured whole (the on-device app on the emulated
Cortex-M4F, ``converters.m4_app.measured_step``: everything a step runs, the interpreter's work included) is priced
by ``step_time_energy(board, instructions)``: one cycle per instruction, a lower bound (QEMU counts instructions).

    board = get_board("nrf52840")
    seconds, joules = estimate_time_energy(board, macs=2.5e6, other_ops=1e5)
    seconds, joules = step_time_energy(board, instructions=1.78e6)
    need = training_memory(params=25_818, activation_elements=[784, 32, 16, 10], batch_size=8, optimizer="adam")
    ok, margin, message = fits(board, need)
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
from typing import Iterable, NamedTuple

from tinyprop_tf._validate import check_finite, check_int

BYTES_PER_FLOAT32 = 4
# On the device the Adam step counter is one 32-bit integer (Keras keeps an int64, but a device needs no more).
ADAM_STEP_COUNTER_BYTES = 4
KIB = 1024
MIB = 1024 * KIB


# --------------------------------------------------------------------------------------------------------
# Parameter checks: each error names the parameter and what is allowed.

def _check_non_negative(name: str, value) -> float:
    value = check_finite(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _check_positive(name: str, value) -> float:
    value = check_finite(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def _check_text(name: str, value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string saying where the figure comes from, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class FigureSource:
    """Where one figure of a profile comes from.

    ``figure`` names the ``BoardProfile`` field; ``source`` is the document, section/table and URL;
    ``estimate`` is True when the value is reasoned or derived rather than read off the document (the
    reasoning is in ``source`` or ``note``).
    """

    figure: str
    source: str
    estimate: bool = False
    note: str = ""


@dataclasses.dataclass(frozen=True)
class CycleCost:
    """Cycles one operation costs on a board, where the number comes from, and whether it was measured.

    ``measured=False``: a documented figure or estimate (``source`` says which). ``measured=True``: the
    project's own measurement of its kernels (``source`` says how, e.g. "QEMU mps2-an386 -icount,
    instructions not cycles").
    """

    value: float
    source: str
    measured: bool = False
    note: str = ""

    def __post_init__(self):
        _check_positive("value", self.value)
        _check_text("source", self.source)


class TimeEnergy(NamedTuple):
    """Estimated wall time (s) and energy (J) of some work on one board."""

    seconds: float
    joules: float


@dataclasses.dataclass(frozen=True)
class BoardProfile:
    """One microcontroller as the estimates see it: one core running the training kernels from flash.

    ``ram_bytes`` is the chip's SRAM; ``usable_ram_bytes`` is what an application can plan with after what
    the SDK or the other core reserves (see its source). ``active_current_a`` is the datasheet's current with
    the CPU running at ``clock_hz`` from flash, radio off, at ``supply_v``; ``active_power_w`` is their product.
    ``cycles_per_select_op`` prices one step of the top-k selection (read/compare an error score).
    """

    key: str
    name: str
    core: str
    has_fpu: bool
    clock_hz: int
    ram_bytes: int
    usable_ram_bytes: int
    flash_bytes: int
    supply_v: float
    active_current_a: float
    sleep_current_a: float | None
    cycles_per_mac: CycleCost
    cycles_per_select_op: CycleCost
    sources: tuple[FigureSource, ...]
    notes: tuple[str, ...] = ()

    # Figures that must each carry a source (the two CycleCosts carry their own).
    FIGURES = ("core", "has_fpu", "clock_hz", "ram_bytes", "usable_ram_bytes", "flash_bytes", "supply_v",
               "active_current_a", "sleep_current_a")

    def __post_init__(self):
        for name in ("clock_hz", "ram_bytes", "usable_ram_bytes", "flash_bytes"):
            check_int(name, getattr(self, name), 1)
        if self.usable_ram_bytes > self.ram_bytes:
            raise ValueError(f"usable_ram_bytes ({self.usable_ram_bytes}) must be <= ram_bytes ({self.ram_bytes})")
        _check_positive("supply_v", self.supply_v)
        _check_positive("active_current_a", self.active_current_a)
        if self.sleep_current_a is not None:
            _check_positive("sleep_current_a", self.sleep_current_a)
        by_figure = {s.figure: s for s in self.sources}
        for figure in self.FIGURES:
            if figure not in by_figure or not by_figure[figure].source.strip():
                raise ValueError(f"board {self.key!r}: figure {figure!r} has no source")

    @property
    def active_power_w(self) -> float:
        """Power with the CPU running the kernels: supply voltage x datasheet active current."""
        return self.supply_v * self.active_current_a

    def source_of(self, figure: str) -> FigureSource:
        """The source of one figure (``active_power_w`` combines the current's and the voltage's)."""
        if figure == "active_power_w":
            current, supply = self.source_of("active_current_a"), self.source_of("supply_v")
            return FigureSource(
                "active_power_w", f"supply_v x active_current_a. Current: {current.source} Voltage: {supply.source}",
                estimate=current.estimate or supply.estimate)
        if figure in ("cycles_per_mac", "cycles_per_select_op"):
            cost = getattr(self, figure)
            return FigureSource(figure, cost.source, estimate=not cost.measured, note=cost.note)
        for source in self.sources:
            if source.figure == figure:
                return source
        allowed = ", ".join(self.FIGURES + ("active_power_w", "cycles_per_mac", "cycles_per_select_op"))
        raise ValueError(f"figure must be one of {allowed}; got {figure!r}")

    def figures(self) -> list[tuple[str, object, FigureSource]]:
        """(figure, value, source) for every figure, for reports."""
        rows = [(name, getattr(self, name), self.source_of(name)) for name in self.FIGURES]
        rows.append(("active_power_w", self.active_power_w, self.source_of("active_power_w")))
        rows += [(name, getattr(self, name).value, self.source_of(name))
                 for name in ("cycles_per_mac", "cycles_per_select_op")]
        return rows


# --------------------------------------------------------------------------------------------------------
# Sources shared by several profiles.

_ZEPHYR = "https://github.com/zephyrproject-rtos/zephyr/blob/main/"
_NRF52840_PS = "nRF52840 Product Specification (Nordic Semiconductor), docs.nordicsemi.com bundle ps_nrf52840"
_NRF5340_CONDITIONS = (
    "nRF5340 Product Specification, Current consumption, Table 1 'Current consumption scenarios, common "
    "conditions': Supply 3 V on VDD/VDDH, 25 C, HFCLK = HFINT @ 64 MHz, regulator DC/DC. "
    "https://infocenter.nordicsemi.com/topic/ps_nrf5340/chapters/current_consumption/doc/current_consumption.html")
_ESP32_DS = ("ESP32 Series Datasheet v5.2 (Espressif), "
             "https://www.espressif.com/sites/default/files/documentation/esp32_datasheet_en.pdf")
_ESP32S3_DS = ("ESP32-S3 Series Datasheet v2.2 (Espressif), "
               "https://www.espressif.com/sites/default/files/documentation/esp32-s3_datasheet_en.pdf")
_ESP32C3_DS = ("ESP32-C3 Family Datasheet V1.0 (Espressif), "
               "https://www.espressif.com/sites/default/files/documentation/esp32-c3_datasheet_en.pdf")
_ESP_IDF_MEMORY = ("ESP-IDF Programming Guide, API Guides > Memory Types, DRAM section, "
                   "https://docs.espressif.com/projects/esp-idf/en/latest/esp32/api-guides/memory-types.html")
_ESP_DSP_BENCH = ("ESP-DSP Library Benchmarks table, row 'dsps_dotprod_f32 for N=256 points' (CPU cycles), "
                  "https://docs.espressif.com/projects/esp-dsp/en/latest/esp-dsp-benchmarks.html")
_M4F_FPU_TABLE = (
    "Cortex-M4F FPU instruction cycle table, reproduced in TI SWCU192 (CC13x2/CC26x2 TRM) Table 3-27 "
    "'instruction set of the FPU': load single float 2, multiply float 1, (fused) multiply-accumulate float 3, "
    "compare 1, FP status to core register 1; "
    "https://www.ti.com/document-viewer/lit/html/SWCU192/GUID-D95473EB-E5C1-45ED-93D0-B6EB1B58EEB2 "
    "(same figures as the Arm Cortex-M4 TRM FPU instruction table)")
_SEGGER_RV32 = ("SEGGER Knowledge Base, 'Bench Arith FE310-G002 2p6p0 Speed' (emFloat v2.6.0 on RV32IMAC, "
                "libgcc API): __addsf3 avg 42.9, __mulsf3 avg 43.9, __ltsf2 avg 12.0 cycles; "
                "https://kb.segger.com/Bench_Arith_FE310-G002_2p6p0_Speed")

# Estimates shared by the Arm cores: operand loads plus the multiply-accumulate, loop overhead left out
# because an unrolled inner loop amortises it; zero wait states (both Nordic parts run from flash via cache).
_M4F_MAC = CycleCost(
    7.0, f"Estimate: VLDR.F32 weight (2) + VLDR.F32 activation (2) + VFMA.F32 (3) = 7 cycles per MAC. {_M4F_FPU_TABLE}",
    note="Loop overhead and flash wait states not included; replace with the QEMU measurement.")
_M4F_SELECT = CycleCost(
    5.0, f"Estimate: VLDR.F32 (2) + VCMP.F32 (1) + VMRS (1) + not-taken branch (~1) = 5 cycles per comparison. "
         f"{_M4F_FPU_TABLE}")


def _src(figure: str, source: str, estimate: bool = False, note: str = "") -> FigureSource:
    return FigureSource(figure, source, estimate, note)


PROFILES: dict[str, BoardProfile] = {}


def _register(profile: BoardProfile) -> None:
    PROFILES[profile.key] = profile


_register(BoardProfile(
    key="nrf52840",
    name="Nordic nRF52840",
    core="Arm Cortex-M4F (ARMv7E-M, single-precision FPU)",
    has_fpu=True,
    clock_hz=64_000_000,
    ram_bytes=256 * KIB,
    usable_ram_bytes=256 * KIB,
    flash_bytes=1024 * KIB,
    supply_v=3.0,
    active_current_a=3.3e-3,
    sleep_current_a=0.4e-6,
    cycles_per_mac=_M4F_MAC,
    cycles_per_select_op=_M4F_SELECT,
    sources=(
        _src("core", f"Zephyr {_ZEPHYR}dts/arm/nordic/nrf52840.dtsi: cpu@0 compatible 'arm,cortex-m4f'; Zephyr "
                     "nRF52840 DK board page ('Nordic Semiconductor nRF52840 ARM Cortex-M4F CPU'), "
                     "https://docs.zephyrproject.org/latest/boards/nordic/nrf52840dk/doc/index.html"),
        _src("has_fpu", "Cortex-M4F (the F is the FPU): same Zephyr devicetree; Zephyr Kconfig SOC_NRF52840 "
                        "selects CPU_HAS_FPU, https://docs.zephyrproject.org/2.1.0/reference/kconfig/"
                        "CONFIG_SOC_NRF52840.html"),
        _src("clock_hz", f"Zephyr {_ZEPHYR}dts/arm/nordic/nrf52840.dtsi: hfxo clock-frequency = <64000000>"),
        _src("ram_bytes", f"Zephyr {_ZEPHYR}dts/arm/nordic/nrf52840_qiaa.dtsi: sram0 DT_SIZE_K(256)"),
        _src("usable_ram_bytes", "Upper bound = all 256 KiB: no SDK reservation applied here. A Bluetooth stack "
                                 "(SoftDevice / SoftDevice Controller) and the RTOS take part of it when used.",
             estimate=True),
        _src("flash_bytes", f"Zephyr {_ZEPHYR}dts/arm/nordic/nrf52840_qiaa.dtsi: flash0 DT_SIZE_K(1024)"),
        _src("supply_v", f"Assumption: Nordic gives its current figures at 3 V ({_NRF5340_CONDITIONS}; nRF52832 PS "
                         "v1.1 'Current consumption scenarios, common conditions: VDD 3 V'). The nRF52840 page "
                         "with its own common conditions was not retrieved.", estimate=True),
        _src("active_current_a",
             f"Derived estimate, CPU running CoreMark from flash at 64 MHz, DC/DC, 3 V: {_NRF52840_PS}, "
             "Electrical specification > Compounded, IS0 'CPU running CoreMark from flash, Radio transmitting @ 0 "
             "dBm, 1 Mbps BLE, Clock = HFXO, Regulator = DC/DC' = 8.1 mA, minus the radio's 0 dBm TX current of "
             "4.8 mA (Nordic's figure in earlier PS revisions / product brief) = 3.3 mA, matching the 52 uA/MHz x "
             "64 MHz quoted for the nRF52840 in secondary sources. "
             "https://docs.nordicsemi.com/r/bundle/ps_nrf52840/page/_tmp/nrf52840/autodita/current/"
             "parameters.i_compounded.html",
             estimate=True,
             note="The PS 'CPU running' table itself was not retrieved; the current PS radio table lists 6.40 mA "
                  "for 0 dBm TX, which would make the difference 1.7 mA. Check against PS > CPU running (ICPU0)."),
        _src("sleep_current_a", "Nordic DevZone blog 'Optimizing Power on nRF52 Designs': SYSTEM_OFF draws 400 nA "
                                "(nRF52840), https://devzone.nordicsemi.com/nordic/nordic-blog/b/blog/posts/"
                                "optimizing-power-on-nrf52-designs",
             note="System OFF wakes through reset; RAM is not retained unless configured."),
    ),
    notes=("Estimates assume the kernels run from flash with the instruction cache on and the radio off.",),
))

_register(BoardProfile(
    key="nrf5340",
    name="Nordic nRF5340 (application core)",
    core="Arm Cortex-M33F application core (ARMv8-M, single-precision FPU); a second M33 (network core) runs the radio",
    has_fpu=True,
    clock_hz=64_000_000,
    ram_bytes=512 * KIB,
    usable_ram_bytes=448 * KIB,
    flash_bytes=1024 * KIB,
    supply_v=3.0,
    active_current_a=2.7e-3,
    sleep_current_a=None,
    cycles_per_mac=dataclasses.replace(
        _M4F_MAC, source="Assumption: Cortex-M33 FPU timing taken equal to the Cortex-M4F's (no Cortex-M33 FPU "
                         "cycle table found). " + _M4F_MAC.source),
    cycles_per_select_op=dataclasses.replace(
        _M4F_SELECT, source="Assumption: Cortex-M33 taken equal to Cortex-M4F. " + _M4F_SELECT.source),
    sources=(
        _src("core", f"Zephyr {_ZEPHYR}dts/arm/nordic/nrf5340_cpuapp.dtsi: cpu@0 compatible 'arm,cortex-m33f'; "
                     "nRF5340 PS, CPU chapter, https://docs.nordicsemi.com/r/bundle/ps_nrf5340/page/chapters/cpu/doc/"
                     "cpu.html"),
        _src("has_fpu", "nRF5340 PS, CPU chapter: 'Single-precision floating-point unit (FPU)', "
                        "https://docs.nordicsemi.com/r/bundle/ps_nrf5340/page/chapters/cpu/doc/cpu.html"),
        _src("clock_hz", f"64 MHz, the default application-core clock in the current figures ({_NRF5340_CONDITIONS}). "
                         "128 MHz is possible but raises the internal voltage and power (nRF5340 PS, Power and clock "
                         "management, https://infocenter.nordicsemi.com/topic/ps_nrf5340/chapters/pmu/doc/pmu.html); "
                         "no 128 MHz current figure was retrieved, so the profile stays at 64 MHz."),
        _src("ram_bytes", f"Zephyr {_ZEPHYR}dts/arm/nordic/nrf5340_cpuapp_qkaa.dtsi: sram0 DT_SIZE_K(512)"),
        _src("usable_ram_bytes", "Zephyr nRF5340 DK default SRAM planning: sram0_image DT_SIZE_K(448); 'Upper 64 kB "
                                 "SRAM allocated as Shared memory' with the network core (IPC). "
                                 f"{_ZEPHYR}boards/arm/nrf5340dk_nrf5340/nrf5340_cpuapp_partition_conf.dtsi"),
        _src("flash_bytes", f"Zephyr {_ZEPHYR}dts/arm/nordic/nrf5340_cpuapp_qkaa.dtsi: flash0 DT_SIZE_K(1024)"),
        _src("supply_v", _NRF5340_CONDITIONS),
        _src("active_current_a",
             "Nordic PS page 'The application CPU running parameters...', ICPU0_FLASH 'CPU running CoreMark @64 MHz "
             "from flash, clock = HFINT, cache enabled' = 2.7 mA typ (CoreMark = 247, 91 CoreMark/mA), "
             "https://docs.nordicsemi.com/r/8x61OyWhjf9N2ZuIjPOCUA/4oPAcukyR8VQdWHH1~8hPg",
             note="The stored page does not print the product name; it is attributed to the nRF5340 PS by its "
                  "'application CPU' wording and -mcmse/fpv5 flags. Cross-check: the nRF5340 network core (M33, "
                  "64 MHz) draws 2.4 mA running CoreMark from flash (INETCPU1), "
                  "https://docs.nordicsemi.com/r/jji3tsD71OQEGmAf3zhPOQ/LpiHKAzAXFh66Z~OVdsuZw"),
        _src("sleep_current_a", "Not collected (no sleep figure retrieved for the nRF5340)."),
    ),
    notes=("The network core and its radio stack are assumed idle (forced off in Nordic's common conditions).",),
))

_register(BoardProfile(
    key="esp32",
    name="Espressif ESP32 (e.g. ESP32-D0WD-V3)",
    core="Xtensa LX6, dual core (the training kernels use one core)",
    has_fpu=True,
    clock_hz=240_000_000,
    ram_bytes=520 * KIB,
    usable_ram_bytes=320 * KIB,
    flash_bytes=4 * MIB,
    supply_v=3.3,
    active_current_a=68e-3,
    sleep_current_a=10e-6,
    cycles_per_mac=CycleCost(
        1311 / 256, f"{_ESP_DSP_BENCH}: 'ANSI Xtensa' column (plain C, -O2) 1311 cycles / 256 MACs = 5.12 cycles "
                    "per MAC. The table does not name the Xtensa chip of that column.",
        note="ESP-DSP's assembly version on the ESP32 takes 1047 cycles (4.09 per MAC)."),
    cycles_per_select_op=CycleCost(
        5.0, "Assumption: taken equal to the Cortex-M4F estimate (load + compare + branch); no Xtensa LX6 FPU "
             "cycle table found."),
    sources=(
        _src("core", f"{_ESP32_DS}, section 4.1.1 CPU: 'one or two low-power Xtensa 32-bit LX6 microprocessor(s)'"),
        _src("has_fpu", f"{_ESP32_DS}, section 4.1.1 CPU: 'Support for Floating Point Unit'",
             note="The datasheet does not state the precision; float32 is what the kernels use."),
        _src("clock_hz", f"{_ESP32_DS}, section 4.1.1: 'clock frequency of up to 240 MHz'"),
        _src("ram_bytes", f"{_ESP32_DS}, section 4.1.2 Internal Memory: '520 KB of on-chip SRAM for data and "
                          "instructions'"),
        _src("usable_ram_bytes", f"{_ESP_IDF_MEMORY}: '520 KB of available SRAM (320 KB of DRAM and 200 KB of IRAM)'; "
                                 "at most 160 KB of DRAM can be statically allocated, the rest only as heap; the DRAM "
                                 "region shrinks by 64 KB when the Bluetooth stack is used."),
        _src("flash_bytes", f"Assumption: a 4 MB flash, e.g. ESP32-U4WDH's in-package 4 MB ({_ESP32_DS}, Table 1-1); "
                            "other parts use external QSPI flash, up to 16 MB mappable (section 4.1.3).",
             estimate=True),
        _src("supply_v", f"Assumption: 3.3 V. Table 4-2 states no supply; the datasheet's electrical "
                         f"characteristics are given at 3.3 V ({_ESP32_DS}, section 5.3 'DC Characteristics (3.3 V, "
                         "25 C)'), and the ESP32-S3/-C3 datasheets measure their current tables at 3.3 V.",
             estimate=True),
        _src("active_current_a", f"{_ESP32_DS}, Table 4-2 Power Consumption by Power Modes, Modem-sleep (CPU powered "
                                 "up, radio off), 240 MHz, dual-core chips: 30 mA ~ 68 mA",
             note="The upper end of the range is taken (conservative); the datasheet gives no single-core-busy "
                  "figure."),
        _src("sleep_current_a", f"{_ESP32_DS}, Table 4-2, Deep-sleep, RTC timer + RTC memory: 10 uA"),
    ),
    notes=("Optional external PSRAM is not counted in RAM.",),
))

_register(BoardProfile(
    key="esp32s3",
    name="Espressif ESP32-S3 (e.g. ESP32-S3FN8)",
    core="Xtensa LX7, dual core (the training kernels use one core)",
    has_fpu=True,
    clock_hz=240_000_000,
    ram_bytes=512 * KIB,
    usable_ram_bytes=512 * KIB,
    flash_bytes=8 * MIB,
    supply_v=3.3,
    active_current_a=51.2e-3,
    sleep_current_a=7e-6,
    cycles_per_mac=CycleCost(
        1311 / 256, f"{_ESP_DSP_BENCH}: 'ANSI Xtensa' column (plain C, -O2) 1311 cycles / 256 MACs = 5.12 cycles "
                    "per MAC, shared by the Xtensa chips (the table does not name the chip of that column).",
        note="ESP-DSP's assembly version using the S3's SIMD takes 432 cycles (1.69 per MAC)."),
    cycles_per_select_op=CycleCost(
        5.0, "Assumption: taken equal to the Cortex-M4F estimate (load + compare + branch); no Xtensa LX7 FPU "
             "cycle table found."),
    sources=(
        _src("core", f"{_ESP32S3_DS}, Features > CPU and Memory: 'Xtensa dual-core 32-bit LX7 microprocessor'"),
        _src("has_fpu", f"{_ESP32S3_DS}, Features > CPU and Memory: 'Single precision floating point unit (FPU)'"),
        _src("clock_hz", f"{_ESP32S3_DS}, Features > CPU and Memory: 'Clock speed: up to 240 MHz'"),
        _src("ram_bytes", f"{_ESP32S3_DS}, section 4.1.2.1 Internal Memory: '512 KB on-chip SRAM: for data and "
                          "instructions'"),
        _src("usable_ram_bytes", f"Upper bound = all 512 KB. {_ESP_IDF_MEMORY}: on chips other than the ESP32 'the "
                                 "maximum statically allocated DRAM size is reduced by the IRAM size of the compiled "
                                 "application', so the real figure depends on the build.", estimate=True),
        _src("flash_bytes", f"Assumption: the ESP32-S3FN8 variant, 8 MB in-package flash ({_ESP32S3_DS}, Table 1-1); "
                            "the plain ESP32-S3 uses external flash.", estimate=True),
        _src("supply_v", f"{_ESP32S3_DS}, section 5.6.1: 'measurements are taken with a 3.3 V supply at 25 C'"),
        _src("active_current_a", f"{_ESP32S3_DS}, Table 5-9 Current Consumption in Modem-sleep Mode, 240 MHz, 'Single "
                                 "core running 32-bit data access instructions, the other core in idle state', all "
                                 "peripheral clocks disabled: 51.2 mA typ",
             note="Chips with in-package PSRAM may draw more (datasheet note to section 5.6.2)."),
        _src("sleep_current_a", f"{_ESP32S3_DS}, Table 5-10, Deep-sleep, 'RTC memory is powered up. RTC peripherals "
                                "are powered down': 7 uA"),
    ),
    notes=("Optional PSRAM (e.g. 8 MB octal on ESP32-S3R8) is not counted in RAM.",),
))

_register(BoardProfile(
    key="esp32c3",
    name="Espressif ESP32-C3 (e.g. ESP32-C3FH4)",
    core="RISC-V RV32IMC, single core, no FPU: float32 is emulated in software",
    has_fpu=False,
    clock_hz=160_000_000,
    ram_bytes=400 * KIB,
    usable_ram_bytes=384 * KIB,
    flash_bytes=4 * MIB,
    supply_v=3.3,
    active_current_a=23e-3,
    sleep_current_a=5e-6,
    cycles_per_mac=CycleCost(
        92.0, f"Estimate: software __mulsf3 (43.9) + __addsf3 (42.9) = 86.8 cycles, plus ~5 for two loads, pointer "
              f"updates and the loop branch = 92 cycles per MAC. {_SEGGER_RV32}",
        note="Measured on SEGGER's optimised emFloat on another RV32IMAC core (SiFive E31); ESP-IDF links libgcc's "
             "soft-float, which SEGGER reports as slower, so this is likely a lower bound."),
    cycles_per_select_op=CycleCost(
        15.0, f"Estimate: software __ltsf2 (12.0) + load + branch (~3) = 15 cycles per comparison. {_SEGGER_RV32}"),
    sources=(
        _src("core", f"{_ESP32C3_DS}, section 3.1.1 CPU: '32-bit RISC-V single-core microprocessor', 'RV32IMC ISA'"),
        _src("has_fpu", f"{_ESP32C3_DS}, section 3.1.1: RV32IMC ISA, i.e. no F (single-precision float) extension"),
        _src("clock_hz", f"{_ESP32C3_DS}, section 3.1.1: 'clock frequency of up to 160 MHz'"),
        _src("ram_bytes", f"{_ESP32C3_DS}, section 3.1.2 Internal Memory: '400 KB of on-chip SRAM'"),
        _src("usable_ram_bytes", f"{_ESP32C3_DS}, section 3.1.2: 'Of the 400 KB SRAM, 16 KB is configured for cache' "
                                 "-> 384 KB; an upper bound, since ESP-IDF also places IRAM code there "
                                 f"({_ESP_IDF_MEMORY}).", estimate=True),
        _src("flash_bytes", f"{_ESP32C3_DS}, Table 1 Family Member Comparison: ESP32-C3FN4 / ESP32-C3FH4 have 4 MB "
                            "embedded flash (the plain ESP32-C3 uses external flash)."),
        _src("supply_v", f"{_ESP32C3_DS}, section 4.6: 'measurements are taken with a 3.3 V supply at 25 C'"),
        _src("active_current_a", "ESP32-C3-MINI-1 & MINI-1U Datasheet v2.2 (Espressif), Table 6-6 Current Consumption "
                                 "in Modem-sleep Mode (excerpted from the ESP32-C3 Series Datasheet), 160 MHz, 'CPU is "
                                 "running', all peripheral clocks disabled: 23 mA typ; https://www.espressif.com/sites/"
                                 "default/files/documentation/esp32-c3-mini-1_datasheet_en.pdf",
             note="The V1.0 chip datasheet (Table 16) gives 20 mA at 160 MHz with the CPU on and the cache idle; "
                  "accessing flash can add current (table note 3)."),
        _src("sleep_current_a", f"{_ESP32C3_DS}, Table 16, Deep-sleep, RTC timer + RTC memory: 5 uA"),
    ),
))


# --------------------------------------------------------------------------------------------------------
# Looking boards up and replacing estimated cycle costs with measured ones.

def _normalise(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def get_board(name: str | BoardProfile, profiles: dict[str, BoardProfile] | None = None) -> BoardProfile:
    """The profile for ``name`` (``"nrf52840"``, ``"ESP32-S3"``, ...; case, dashes and underscores ignored).

    A ``BoardProfile`` is returned as it is, so functions here take either.
    """
    if isinstance(name, BoardProfile):
        return name
    profiles = PROFILES if profiles is None else profiles
    if isinstance(name, str):
        wanted = _normalise(name)
        for key, profile in profiles.items():
            if _normalise(key) == wanted:
                return profile
    raise ValueError(f"unknown board {name!r}; valid boards: {', '.join(sorted(profiles))}")


def with_measured_cycles_per_mac(board: str | BoardProfile, value: float, source: str, note: str = "") -> BoardProfile:
    """A copy of ``board`` whose cycles per MAC is the project's own measurement (``measured=True``)."""
    board = get_board(board)
    return dataclasses.replace(board, cycles_per_mac=CycleCost(value, source, measured=True, note=note))


def with_measured_cycles_per_select_op(board: str | BoardProfile, value: float, source: str,
                                       note: str = "") -> BoardProfile:
    """A copy of ``board`` whose cycles per selection comparison is measured (``measured=True``)."""
    board = get_board(board)
    return dataclasses.replace(board, cycles_per_select_op=CycleCost(value, source, measured=True, note=note))


def load_cycle_overrides(path: str, profiles: dict[str, BoardProfile] | None = None) -> dict[str, BoardProfile]:
    """Profiles with measured cycle costs read from a JSON file; boards not in the file are unchanged.

    Format: ``{"nrf52840": {"cycles_per_mac": 6.2, "cycles_per_select_op": 4.8, "source": "..."}}``, where
    ``source`` is required and at least one of the two costs is given.
    """
    profiles = dict(PROFILES if profiles is None else profiles)
    with open(path, encoding="utf-8") as handle:
        overrides = json.load(handle)
    if not isinstance(overrides, dict):
        raise ValueError(f"{path}: expected a JSON object of board -> measured costs")
    allowed = {"cycles_per_mac", "cycles_per_select_op", "source", "note"}
    for name, entry in overrides.items():
        board = get_board(name, profiles)
        if not isinstance(entry, dict) or set(entry) - allowed:
            raise ValueError(f"{path}: entry for {name!r} must be an object with keys from {sorted(allowed)}")
        if "cycles_per_mac" not in entry and "cycles_per_select_op" not in entry:
            raise ValueError(f"{path}: entry for {name!r} needs cycles_per_mac or cycles_per_select_op")
        source, note = entry.get("source", ""), entry.get("note", "")
        if "cycles_per_mac" in entry:
            board = with_measured_cycles_per_mac(board, entry["cycles_per_mac"], source, note)
        if "cycles_per_select_op" in entry:
            board = with_measured_cycles_per_select_op(board, entry["cycles_per_select_op"], source, note)
        profiles[board.key] = board
    return profiles


# The project's own measurements, shipped with the package: ``measured_cycles.json`` next to this module
# (written by ``benchmarks/micro_qemu.py``: QEMU instruction counts of the micro/ kernels, not cycles). When the
# file is present its boards replace their documented cycle costs at import (``measured=True``).
MEASURED_CYCLES_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "measured_cycles.json")
if os.path.isfile(MEASURED_CYCLES_PATH):
    PROFILES.update(load_cycle_overrides(MEASURED_CYCLES_PATH))


# --------------------------------------------------------------------------------------------------------
# Time and energy.

def estimate_time_energy(board: str | BoardProfile, macs: float, other_ops: float = 0) -> TimeEnergy:
    """Seconds and joules for ``macs`` float32 MACs plus ``other_ops`` selection operations on one core.

    seconds = (macs x cycles_per_mac + other_ops x cycles_per_select_op) / clock_hz;
    joules = seconds x active_power_w. Idle and sleep time between steps are not included.
    """
    board = get_board(board)
    macs = _check_non_negative("macs", macs)
    other_ops = _check_non_negative("other_ops", other_ops)
    cycles = macs * board.cycles_per_mac.value + other_ops * board.cycles_per_select_op.value
    seconds = cycles / board.clock_hz
    return TimeEnergy(seconds, seconds * board.active_power_w)


# QEMU's -icount counts instructions; taking one cycle per instruction is what turns them into time. Real cycles are
# higher (flash wait states, pipeline refills on branches, FPU and load latencies), so the time is a lower bound.
STEP_CYCLES_PER_INSTRUCTION = 1.0


def step_time_energy(board: str | BoardProfile, instructions: float) -> TimeEnergy:
    """Seconds and joules of a training step measured whole as ``instructions`` (the on-device app's step on the
    emulated Cortex-M4F: ``converters.m4_app``), where ``estimate_time_energy`` prices MAC and selection counts with
    kernel figures: cycles = instructions x ``STEP_CYCLES_PER_INSTRUCTION`` (a lower bound, see there);
    seconds = cycles / clock_hz; joules = seconds x active_power_w."""
    board = get_board(board)
    instructions = _check_non_negative("instructions", instructions)
    seconds = instructions * STEP_CYCLES_PER_INSTRUCTION / board.clock_hz
    return TimeEnergy(seconds, seconds * board.active_power_w)


# --------------------------------------------------------------------------------------------------------
# Memory.

OPTIMIZER_STATE_SLOTS = {"sgd": 0, "momentum": 1, "adam": 2, "lazy_adam": 2}
_OPTIMIZER_ALIASES = {"sgd+momentum": "momentum", "sgd_momentum": "momentum", "sgdmomentum": "momentum"}


@dataclasses.dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes fine-tuning needs in RAM, by part, and the flash the model occupies.

    ``activations_bytes`` is what the forward pass keeps for the backward pass; ``arena_bytes`` is the
    inference runtime's arena and other fixed overhead passed in by the caller. Not included: the stack,
    the backward pass's error-signal scratch, the training data.
    """

    weights_bytes: int
    gradients_bytes: int
    optimizer_state_bytes: int
    activations_bytes: int
    arena_bytes: int
    flash_bytes: int
    optimizer: str
    batch_size: int

    @property
    def ram_bytes(self) -> int:
        """Total RAM: weights + gradients + optimizer state + activations + arena/overhead."""
        return (self.weights_bytes + self.gradients_bytes + self.optimizer_state_bytes + self.activations_bytes
                + self.arena_bytes)

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "ram_bytes": self.ram_bytes}


def training_memory(*, params: int, activation_elements: int | Iterable[int], batch_size: int = 1,
                    optimizer: str = "sgd", trainable_params: int | None = None, arena_bytes: int = 0,
                    model_flash_bytes: int | None = None) -> MemoryBreakdown:
    """RAM (and flash) fine-tuning a float32 model needs, from plain counts (no Keras needed).

    - weights: ``params`` x 4 B (float32, in RAM because they change);
    - gradients: ``trainable_params`` x 4 B (one accumulated gradient per trainable weight; default all);
    - optimizer state: SGD none, SGD with momentum 1 x trainable x 4 B, Adam 2 x trainable x 4 B plus a
      4-byte step counter;
    - activations: sum of ``activation_elements`` (per sample, the layer inputs/outputs the backward pass
      needs) x ``batch_size`` x 4 B;
    - arena: ``arena_bytes`` (runtime arena and other overhead, if known).

    Flash: ``model_flash_bytes`` if given (e.g. the .tflite file size), else ``params`` x 4 B.
    """
    params = check_int("params", params, 0)
    batch_size = check_int("batch_size", batch_size, 1)
    trainable = params if trainable_params is None else check_int("trainable_params", trainable_params, 0)
    if trainable > params:
        raise ValueError(f"trainable_params must be <= params ({params}), got {trainable}")
    arena_bytes = check_int("arena_bytes", arena_bytes, 0)
    if isinstance(activation_elements, numbers.Integral):
        per_sample = check_int("activation_elements", activation_elements, 0)
    else:
        try:
            counts = list(activation_elements)
        except TypeError:
            raise ValueError(f"activation_elements must be an integer or a list of integers >= 0, "
                             f"got {activation_elements!r}") from None
        per_sample = sum(check_int("activation_elements", count, 0) for count in counts)
    if not isinstance(optimizer, str):
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZER_STATE_SLOTS)}, got {optimizer!r}")
    name = _OPTIMIZER_ALIASES.get(optimizer.lower(), optimizer.lower())
    if name not in OPTIMIZER_STATE_SLOTS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZER_STATE_SLOTS)} "
                         f"(or sgd+momentum), got {optimizer!r}")
    optimizer_bytes = OPTIMIZER_STATE_SLOTS[name] * trainable * BYTES_PER_FLOAT32
    if name == "adam":
        optimizer_bytes += ADAM_STEP_COUNTER_BYTES
    flash = params * BYTES_PER_FLOAT32 if model_flash_bytes is None else check_int(
        "model_flash_bytes", model_flash_bytes, 0)
    return MemoryBreakdown(
        weights_bytes=params * BYTES_PER_FLOAT32,
        gradients_bytes=trainable * BYTES_PER_FLOAT32,
        optimizer_state_bytes=optimizer_bytes,
        activations_bytes=per_sample * batch_size * BYTES_PER_FLOAT32,
        arena_bytes=arena_bytes,
        flash_bytes=flash,
        optimizer=name,
        batch_size=batch_size,
    )


def fits(board: str | BoardProfile, breakdown: MemoryBreakdown) -> tuple[bool, int, str]:
    """Whether ``breakdown`` fits ``board``'s usable RAM and flash.

    Returns ``(ok, margin_bytes, message)``: ``margin_bytes`` is the smaller of the RAM and flash margins
    (usable minus needed), negative when short by that many bytes; the message names the resource.
    """
    board = get_board(board)
    if not isinstance(breakdown, MemoryBreakdown):
        raise ValueError(f"breakdown must be a MemoryBreakdown from training_memory(), got {type(breakdown).__name__}")
    checks = [("RAM", board.usable_ram_bytes, breakdown.ram_bytes),
              ("flash", board.flash_bytes, breakdown.flash_bytes)]
    margins = [(have - need, resource, have, need) for resource, have, need in checks]
    margin, resource, have, need = min(margins)
    short = [f"{res}: needs {n:,} B, {h:,} B usable, short by {n - h:,} B" for m, res, h, n in margins if m < 0]
    if short:
        return False, margin, f"does not fit {board.key}: " + "; ".join(short)
    return True, margin, (f"fits {board.key}: RAM {breakdown.ram_bytes:,} of {board.usable_ram_bytes:,} B usable, "
                          f"flash {breakdown.flash_bytes:,} of {board.flash_bytes:,} B; tightest margin "
                          f"{margin:,} B ({resource})")
