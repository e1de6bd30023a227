"""Callbacks and helpers for training sparse models with plain ``model.fit`` (or a GradientTape loop).

- ``UpdateSparsity``: like tfmot's ``UpdatePruningStep``; resets the running maxima when a training run starts
  and moves ssProp's keep fraction along its schedule (per epoch or per iteration).
- ``BackpropStats``: reads the per-layer accounting after every epoch (optionally every step), puts
  ``bwd_macs_ratio`` into the logs and per-layer detail into ``history``, and can write CSV/JSON files,
  rewritten after each epoch so nothing is lost if training dies.

In a custom loop call ``reset_sparsity_state(model)`` before training and ``update_keep(model, epoch, epochs,
iteration)`` when the schedule should move.
"""

from __future__ import annotations

import csv
import json

import keras

from tinyprop_tf import accounting, outdir
from tinyprop_tf.sparsity_state import sparse_layers


def reset_sparsity_state(model) -> None:
    """Start of a training run: running maxima back to their initial value, keep fractions and stats reset."""
    for layer in sparse_layers(model):
        state = layer.sparsity_state
        state.reset_running_max()
        state.keep.assign(layer.policy.initial_keep())
        state.reset_stats()


def update_keep(model, epoch: int, epochs: int, iteration: int = 0) -> None:
    """Set every scheduled (ssProp) layer's keep fraction for this epoch/iteration."""
    for layer in sparse_layers(model):
        schedule = getattr(layer.policy, "schedule", None)
        if schedule is not None:
            layer.sparsity_state.keep.assign(schedule.keep(epoch, epochs, iteration))


def _has_per_iteration_schedule(model) -> bool:
    return any(
        getattr(getattr(layer.policy, "schedule", None), "per_iteration", False)
        for layer in sparse_layers(model)
    )


class UpdateSparsity(keras.callbacks.Callback):
    """Resets sparse-training state when ``fit`` starts and applies ssProp keep schedules."""

    def __init__(self, reset_state: bool = True):
        super().__init__()
        self.reset_state = reset_state
        self._iteration = 0
        self._epoch = 0

    def on_train_begin(self, logs=None):
        if self.reset_state:
            reset_sparsity_state(self.model)
        self._iteration = 0
        self._per_iteration = _has_per_iteration_schedule(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        update_keep(self.model, epoch, self.params.get("epochs", 1) or 1, self._iteration)

    def on_train_batch_begin(self, batch, logs=None):
        if self._per_iteration:
            update_keep(self.model, self._epoch, self.params.get("epochs", 1) or 1, self._iteration)
        self._iteration += 1


PER_LAYER_KEYS = ("k_mean", "k_min", "k_max", "bpr_mean", "kept_ratio", "bwd_macs_sparse", "bwd_macs_dense")


class BackpropStats(keras.callbacks.Callback):
    """Per-epoch backward-compute accounting of a sparse model.

    After each epoch: ``logs["bwd_macs_ratio"]`` (sparse / dense backward MACs over all sparse layers), and in
    ``model.history.history`` also ``fwd_macs``, ``bwd_macs_dense``, ``bwd_macs_sparse``, ``select_ops`` and
    ``"<layer>/<key>"`` for each key of ``PER_LAYER_KEYS``. ``self.epochs`` keeps one dict per epoch
    (``{"epoch", "totals", "layers"}``); ``self.steps`` one per step when ``per_step=True``.

    Args:
      csv_path: one row per epoch and layer (rewritten after every epoch).
      json_path: the full per-epoch records (rewritten after every epoch).
      per_step: also record totals after every training step (reads the counters each step: slower).
    """

    def __init__(self, csv_path: str | None = None, json_path: str | None = None, per_step: bool = False):
        super().__init__()
        self.csv_path, self.json_path, self.per_step = csv_path, json_path, per_step
        self.epochs: list[dict] = []
        self.steps: list[dict] = []

    def on_train_begin(self, logs=None):
        self.epochs, self.steps = [], []
        accounting.reset_stats(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        accounting.reset_stats(self.model)
        self._previous_step_totals = None

    def on_train_batch_end(self, batch, logs=None):
        if not self.per_step:
            return
        running = accounting.totals(accounting.read_stats(self.model))
        previous = self._previous_step_totals or dict.fromkeys(running, 0.0)
        step = {key: running[key] - previous[key] for key in ("fwd_macs", "bwd_macs_dense", "bwd_macs_sparse")}
        step["bwd_macs_ratio"] = step["bwd_macs_sparse"] / step["bwd_macs_dense"] if step["bwd_macs_dense"] else 0.0
        self.steps.append({"step": len(self.steps), **step})
        self._previous_step_totals = running

    def on_epoch_end(self, epoch, logs=None):
        stats = accounting.read_stats(self.model)
        total = accounting.totals(stats)
        record = {"epoch": epoch, "totals": total, "layers": stats}
        if logs is not None:
            record["logs"] = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}
            logs["bwd_macs_ratio"] = total["bwd_macs_ratio"]
        self.epochs.append(record)

        history = getattr(getattr(self.model, "history", None), "history", None)
        if history is not None:
            for key in ("fwd_macs", "bwd_macs_dense", "bwd_macs_sparse", "select_ops"):
                history.setdefault(key, []).append(total[key])
            for name, row in stats.items():
                for key in PER_LAYER_KEYS:
                    history.setdefault(f"{name}/{key}", []).append(row[key])
        self._write_files()

    def _write_files(self):
        if self.json_path:
            outdir.atomic_write(self.json_path, lambda f: json.dump(self.epochs, f, indent=1))
        if self.csv_path:
            def write_csv(handle):
                writer = None
                for record in self.epochs:
                    for name, row in record["layers"].items():
                        flat = {"epoch": record["epoch"], "layer": name, **row}
                        if writer is None:
                            writer = csv.DictWriter(handle, fieldnames=list(flat))
                            writer.writeheader()
                        writer.writerow(flat)

            outdir.atomic_write(self.csv_path, write_csv)
