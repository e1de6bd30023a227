"""The on-device training app (``micro/app``) on the emulated Cortex-M4F (QEMU ``mps2-an386``).

The ESP-IDF and Zephyr projects of ``board_projects`` build the app's sources with their generated data; here the
same sources and the same data files are cross-compiled (``micro/app/mps2``) against the TFLM library, kernels and
glue of the runner images (``tflm_host_runner.find_m4_app``: same CMake tree, same cache), with the linker script's RAM
set to a board's usable RAM. The app's arena is its static array, so a model that does not fit does not link.

    project = write_board_project(export_dir, "nrf52840dk", project_dir, samples=x, labels=y, steps=3)
    elf = m4_app.build(project)                       # None without a TFLM tree, the Arm compiler or QEMU
    first = m4_app.boot(elf, flash)                   # trains 3 steps, saves to the flash file
    second = m4_app.boot(elf, flash)                  # restores, trains 3 more
    newest = m4_app.saved_records(flash, project.partition_bytes // 2)[-1]
    weights = m4_app.saved_weights(newest, project, manifest)   # the state it saved, as {weight path: array}

A boot runs ``RunTflmTraining`` once (initial state, restore, the project's steps, inference, save) with the state's
flash partition in a host file (``SemihostedFileFlash``: NOR semantics, so micro/persist writes what it writes on the
board) and every step traced (``TINYPROP_TRACE_STEPS``): the loss's float32 bits, each sample's k per layer, the
sum of every weight tensor (double bits), SysTick ticks per step (instructions = ticks x 0.625 under ``-icount
shift=6``: instruction counts, not cycles) and the final inference output.
"""

from __future__ import annotations

import dataclasses
import os
import re
import struct
import subprocess
import tempfile
import zlib

import numpy as np

from tinyprop_tf.converters import tflm_host_runner

PERSIST_HEADER = struct.Struct("<IHHIIIIII")  # micro/persist: magic, version, header size, generation, payload size,
PERSIST_MAGIC = 0x57505054                   # payload CRC, model id, step, header CRC ("TPPW")
PERSIST_HEADER_AREA = 32  # max(kHeaderSize, the write block): SemihostedFileFlash writes 4-byte words


class AppError(tflm_host_runner.RunnerError):
    """The app failed on the emulated board, or printed something this module cannot read."""


@dataclasses.dataclass(frozen=True)
class AppBoot:
    """What one boot of the app printed."""
    steps: tuple                 # the step numbers trained in this boot (1-based, restored steps counted)
    losses: np.ndarray           # float32 per step
    k: np.ndarray                # int32 [steps, sparse layers, batch]: entries kept per sample
    weight_sums: np.ndarray      # float64 [steps, weight tensors]: each tensor's elements summed in index order
    weight_tensors: tuple        # the state-layout index of each weight_sums column
    step_ticks: np.ndarray       # SysTick ticks per step: the batch copied into the inputs and the train invoke
    output: np.ndarray           # float32 [batch, outputs]: the inference after training, on the first batch
    ram: dict                    # "name value" lines: ram/stack/data/bss/heap bytes, stack high water, heap used
    arena_bytes: int             # the app's static arena (TINYPROP_ARENA_BYTES, in .bss)
    arena_used_bytes: int        # what TFLM's allocator took of it
    restored: bool               # the boot restored a saved state
    stdout: str

    @property
    def step_instructions(self) -> np.ndarray:
        """Instructions per step (ticks x 0.625 on AN386 under -icount shift=6): not cycles."""
        return self.step_ticks * tflm_host_runner.INSTRUCTIONS_PER_TICK


def build(project, ram_bytes: int | None = None, build_missing: bool = True) -> str | None:
    """The app's image for ``project`` (a ``BoardProject``) with the RAM of its board's profile (``ram_bytes``
    overrides), or None without a TFLM tree or the tools (``tflm_host_runner.M4_HOW_TO``)."""
    ram = project.budget["usable_ram_bytes"] if ram_bytes is None else ram_bytes
    return tflm_host_runner.find_m4_app(project.data_dir, ram, build_missing)


def boot(elf: str, flash_path: str, timeout: float = 600) -> AppBoot:
    """One boot of the app under ``qemu-system-arm -M mps2-an386`` with its state partition in ``flash_path``
    (created erased when missing; a later boot restores what this one saved)."""
    flash_path = os.path.abspath(flash_path)
    if " " in flash_path:
        raise ValueError(f"the flash file's path must have no spaces (the semihosting command line): {flash_path}")
    cmd = [*tflm_host_runner.QEMU_COMMAND, "-kernel", elf, "-append", flash_path]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AppError(f"the app on the emulated Cortex-M4F did not finish within {timeout:g} s") from None
    if proc.returncode != 0 or "tinyprop: done" not in proc.stdout:
        raise AppError(f"the app on the emulated Cortex-M4F failed (exit {proc.returncode}): "
                       f"{(proc.stdout[-1500:] + proc.stderr[-500:]).strip()}")
    return parse_boot(proc.stdout)


def parse_boot(stdout: str) -> AppBoot:
    """The trace lines (micro/app training_loop.cc) and the measures of one boot's output."""
    steps, losses, ticks, k, sums, output = [], [], [], {}, {}, {}
    for line in stdout.splitlines():
        word, *rest = line.split() or [""]
        if word == "trace_step":
            steps.append(int(rest[0]))
            losses.append(_float32(rest[2]))
            ticks.append(int(rest[4], 16))
        elif word == "trace_k":
            k.setdefault(int(rest[0]), []).append([int(v) for v in rest[2:]])
        elif word == "trace_weight_sum":
            sums.setdefault(int(rest[0]), {})[int(rest[1])] = _float64(rest[2])
        elif word == "trace_output":
            output[int(rest[0])] = [_float32(v) for v in rest[1:]]
    arena = re.search(r"tinyprop: arena (\d+) of (\d+) bytes used", stdout)
    if not steps or arena is None or not output:
        raise AppError(f"the app printed no step trace, arena or output: {stdout[-1500:]}")
    tensors = tuple(sorted(sums[steps[0]]))
    ram = {name: int(value) for name, value in re.findall(r"^([a-z_]+_bytes) (\d+)$", stdout, re.M)}
    return AppBoot(
        steps=tuple(steps), losses=np.array(losses, np.float32),
        k=np.array([k.get(s, []) for s in steps], np.int32).reshape(len(steps), -1, len(output)),
        weight_sums=np.array([[sums[s][t] for t in tensors] for s in steps], np.float64), weight_tensors=tensors,
        step_ticks=np.array(ticks, np.int64), output=np.array([output[b] for b in sorted(output)], np.float32),
        ram=ram, arena_used_bytes=int(arena.group(1)), arena_bytes=int(arena.group(2)),
        restored="restored the training state" in stdout, stdout=stdout)


def _float32(hex_bits: str) -> float:
    return struct.unpack("<f", int(hex_bits, 16).to_bytes(4, "little"))[0]


def _float64(hex_bits: str) -> float:
    return struct.unpack("<d", int(hex_bits, 16).to_bytes(8, "little"))[0]


def saved_records(flash_path: str, slot_bytes: int) -> list[dict]:
    """The valid micro/persist records of the two-slot partition in ``flash_path``, oldest first: {"generation",
    "step", "model_id", "payload"} (the state image)."""
    with open(flash_path, "rb") as f:
        image = f.read()
    records = []
    for base in (0, slot_bytes):
        raw = image[base:base + PERSIST_HEADER.size]
        if len(raw) < PERSIST_HEADER.size:
            continue
        magic, version, header, generation, size, payload_crc, model_id, step, header_crc = PERSIST_HEADER.unpack(raw)
        payload = image[base + PERSIST_HEADER_AREA:base + PERSIST_HEADER_AREA + size]
        if (magic, version, header) == (PERSIST_MAGIC, 1, 32) and zlib.crc32(raw[:28]) == header_crc and \
                len(payload) == size and zlib.crc32(payload) == payload_crc:
            records.append({"generation": generation, "step": step, "model_id": model_id, "payload": payload})
    return sorted(records, key=lambda r: r["generation"])


def saved_weights(record: dict, project, manifest: dict) -> dict:
    """{weight path: float32 array} of a saved record's state image (at the project's layout offsets)."""
    by_name = {v["name"]: v for v in project.state_variables}
    out = {}
    for e in manifest["weights"]:
        v = by_name[e["name"]]
        raw = record["payload"][v["offset"]:v["offset"] + v["bytes"]]
        out[e["path"]] = np.frombuffer(raw, "<f4").reshape(e["shape"])
    return out


def measured_step(project, timeout: float = 600) -> dict | None:
    """The project's training step measured whole on the emulated Cortex-M4F and priced on its board: one boot of
    the app (a fresh flash file), the mean instructions of its steps, and ``mcu_profiles.step_time_energy`` of that (one
    cycle per instruction: a lower bound). None when there is nothing to measure: a board that is not one of
    ``tflm_host_runner.M4_BOARDS`` (Cortex-M), a project that does not fit it, or no TFLM tree / Arm compiler / QEMU."""
    from tinyprop_tf import mcu_profiles

    profile = project.budget["board_profile"]
    if profile not in tflm_host_runner.M4_BOARDS or not project.fits:
        return None
    elf = build(project)
    if elf is None:
        return None
    with tempfile.TemporaryDirectory(prefix="tinyprop-m4-app-") as tmp:
        run = boot(elf, os.path.join(tmp, "flash.bin"), timeout)
    instructions = float(np.mean(run.step_instructions))
    seconds, joules = mcu_profiles.step_time_energy(profile, instructions)
    return {
        "board": profile, "instructions_per_step": instructions, "steps": len(run.steps),
        "seconds_per_step": seconds, "joules_per_step": joules, "ram": run.ram,
        "arena_used_bytes": run.arena_used_bytes,
        "source": f"micro/app with this project's data on QEMU mps2-an386 (Cortex-M4F, {run.ram['ram_bytes']:,} B of "
                  "RAM), -icount shift=6: instructions (SysTick ticks x 0.625) per step, batch copy and invoke, "
                  "on the project's compiled-in samples (its k, not a fine-tuning run's); "
                  f"cycles = instructions x {mcu_profiles.STEP_CYCLES_PER_INSTRUCTION:g} (QEMU counts instructions, "
                  "not cycles: flash wait states and FPU latencies make a real step slower)",
    }
