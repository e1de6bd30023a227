"""What fine-tuning costs on each board, from the counts a run or an export gives: time and energy per epoch, the
training state's RAM, a board project's RAM and flash budget, and the arena to plan with.

The figures of a board and the formulas that price plain counts are ``mcu_profiles``'; this module applies them to
what the project produces: ``RunResult``s (``demo``, ``finetune``, ``sweep``), a Keras model (its training state),
a board project's parts (``converters.board_projects``, which ``--board`` planning reads) and a measured arena
(``converters.export``). Loading it loads no TensorFlow (board projects are written without it).
"""

from __future__ import annotations

import numpy as np

from tinyprop_tf import mcu_profiles


def board_estimates(results, boards=None) -> dict:
    """Per run (``RunResult``) and board: estimated (seconds, joules) of one fine-tuning epoch's training work."""
    names = boards or list(mcu_profiles.PROFILES)
    estimates = {}
    for r in results:
        epochs = len(r.epochs)
        macs = (np.sum(r.fwd_macs) + np.sum(r.bwd_macs_sparse)) / epochs
        ops = np.sum(r.select_ops) / epochs
        estimates[r.name] = {
            name: tuple(float(v) for v in mcu_profiles.estimate_time_energy(mcu_profiles.get_board(name), macs, ops))
            for name in names
        }
    return estimates


def kept_activation_elements(model) -> int:
    """Per sample, the tensors the backward pass keeps: the model input and every layer's output (each is
    the next layer's input or an activation derivative's argument). A deliberately simple upper-side count."""
    import keras

    elements = int(np.prod(model.input_shape[1:]))
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        shape = layer.output.shape if hasattr(layer, "output") else None
        if shape is not None and all(d is not None for d in shape[1:]):
            elements += int(np.prod(shape[1:]))
    return elements


def memory_fit(model, batch_size: int, optimizer: str = "adam", boards=None,
               trained: list[str] | None = None) -> dict:
    """Per board: does fine-tuning ``model`` (float32 weights, gradients, optimizer state, kept activations
    for ``batch_size`` samples) fit its usable RAM and flash? ``{board: {"fits", "margin_bytes", "message",
    "ram_bytes"}}``. ``trained``: the names of the layers that train (default: its trainable weights). The TFLM
    arena and stack are not included (``--board`` planning measures them: ``converters/planning.py``)."""
    weights = (model.trainable_weights if trained is None else
               [w for layer in model.layers if layer.name in trained for w in layer.trainable_weights])
    breakdown = mcu_profiles.training_memory(
        params=int(model.count_params()),
        trainable_params=int(sum(np.prod(w.shape) for w in weights)),
        activation_elements=kept_activation_elements(model), batch_size=batch_size, optimizer=optimizer)
    report = {}
    for name in boards or list(mcu_profiles.PROFILES):
        ok, margin, message = mcu_profiles.fits(name, breakdown)
        report[name] = {"fits": bool(ok), "margin_bytes": int(margin), "message": message,
                        "ram_bytes": int(breakdown.ram_bytes)}
    return report


def project_budget(board, ram: list[tuple[str, int]], flash: list[tuple[str, int]]) -> dict:
    """A board project's memory budget: ``ram`` and ``flash`` are its parts, (what, bytes), against ``board``'s usable
    RAM and flash (``mcu_profiles``). Returns the totals, margins, ``fits``, a one-line ``verdict``, a Markdown
    ``table`` and where the usable RAM figure comes from."""
    profile = mcu_profiles.get_board(board)
    ram_need = sum(v for _, v in ram)
    flash_need = sum(v for _, v in flash)
    checks = [("RAM", profile.usable_ram_bytes, ram_need), ("flash", profile.flash_bytes, flash_need)]
    short = [f"{what} short by {need - have:,} B (needs {need:,} B of {have:,} B)"
             for what, have, need in checks if need > have]
    fits = not short
    verdict = (f"FITS {profile.name}: RAM {ram_need:,} of {profile.usable_ram_bytes:,} B usable "
               f"({profile.usable_ram_bytes - ram_need:,} B left), flash {flash_need:,} of {profile.flash_bytes:,} B "
               f"({profile.flash_bytes - flash_need:,} B left before code)"
               if fits else f"DOES NOT FIT {profile.name}: " + "; ".join(short))
    lines = ["| RAM | bytes |", "|---|---:|"]
    lines += [f"| {what} | {v:,} |" for what, v in ram]
    lines += [f"| **total** | **{ram_need:,}** |",
              f"| board usable RAM ({profile.key}) | {profile.usable_ram_bytes:,} |",
              "", "| flash | bytes |", "|---|---:|"]
    lines += [f"| {what} | {v:,} |" for what, v in flash]
    lines += [f"| **total** (code not included) | **{flash_need:,}** |",
              f"| board flash ({profile.key}) | {profile.flash_bytes:,} |"]
    return {
        "board_profile": profile.key, "ram": dict(ram), "flash": dict(flash), "ram_bytes": ram_need,
        "flash_bytes": flash_need, "usable_ram_bytes": profile.usable_ram_bytes,
        "board_flash_bytes": profile.flash_bytes,
        "ram_margin": profile.usable_ram_bytes - ram_need, "flash_margin": profile.flash_bytes - flash_need,
        "fits": fits, "verdict": verdict, "table": "\n".join(lines),
        "usable_ram_source": profile.source_of("usable_ram_bytes").source,
    }


# Arena headroom over the one measured on the 64-bit host: pointer sizes and arena alignment differ on the device.
ARENA_MARGIN = 1.05


def recommended_arena_bytes(measured: int | None) -> int | None:
    """The arena to plan a device with: the measured one plus ``ARENA_MARGIN``, rounded up to 1 KiB (None: not
    measured)."""
    return None if measured is None else int(-(-int(measured * ARENA_MARGIN) // 1024) * 1024)
