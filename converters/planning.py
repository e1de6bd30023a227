"""Board planning: which trainable sets (the last N affine layers) and device batch sizes fit a board's RAM.

Like MIT tiny-training's per-budget update configurations, but measured rather than estimated: every candidate
(N, batch) is exported (``export_training_model`` into a temporary folder), its arena measured by the real TFLM
planner, and written as the board's project (``write_board_project``), whose memory budget is the verdict:

- **arena**: ``train_fast.tflite`` in ``tinyprop_tflm_runner`` (TFLM with the TinyProp operators) when a runner is
  available (``converters/tflm_host_runner.py``) and the policy selects; ``train.tflite`` in the pip tflite-micro
  interpreter otherwise. The plan says which.
- **static RAM** the application adds, as the generated project has it (``board_projects._budget``): the main
  task stack the project configures and, for ``train.tflite`` (resource variables), a save/load scratch of its
  largest variable (the training state itself is in the arena; the app streams it to flash). Training samples are ``const`` (flash); a batch is
  copied into the model's input tensors, which are in the arena.
- **usable RAM**: the board profile's (``tinyprop_tf.mcu_profiles``, with its source).

What is measured is only what the answer needs. For each N (from 1) the largest fitting batch of ``BATCHES`` is
found by bisection, starting from the previous N's (a larger trainable set never needs less: more weights in RAM,
more backward); a candidate whose trained weights and optimizer slots alone exceed the usable RAM is not
measured, and once no batch fits an N no larger N is tried. Progress goes to stderr.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile

import numpy as np

from tinyprop_tf import mcu_profiles
from tinyprop_tf import policies as policies_lib
from tinyprop_tf import trainable

BATCHES = (1, 2, 4, 8, 16, 32)
FORMAT = "tinyprop-plan/1"


@dataclasses.dataclass
class Measurement:
    """One exported candidate: its arena and the project's RAM and flash budget on the board."""

    n: int
    batch: int
    arena_bytes: int
    arena_source: str
    ram: dict  # {what (as the project's budget names it): bytes}
    ram_bytes: int
    flash_bytes: int
    fits: bool
    verdict: str
    recompute: bool = False  # measured with its first trained conv block recomputed (export's recompute=True)

    def to_dict(self):
        return dataclasses.asdict(self)


def _progress(message: str) -> None:
    print(f"  plan: {message}", file=sys.stderr, flush=True)


def planning_policy(policies):
    """The policy a plan exports with: the first exportable one that selects (TinyProp, static top-k), else the
    first exportable one (dense), else TinyProp's defaults. ``policies``: policy objects (or short names)."""
    from tinyprop_tf.converters import graph

    exportable = []
    for policy in policies:
        try:
            exportable.append(graph.check_policy(policies_lib.get(policy)))
        except ValueError:
            continue
    return next((p for p in exportable if p.selects), exportable[0] if exportable else policies_lib.TinyProp())


def _state_lower_bound(model, n: int, slots: int) -> int:
    """Bytes the trained kernels and their optimizer slots need in RAM for the last ``n``: a lower bound of any
    candidate's RAM (biases, running maxima, the arena's tensors and the stack come on top)."""
    names = set(trainable.trained_layers(model, n))
    kernels = sum(int(np.prod(layer.kernel.shape)) for layer in trainable.affine_layers(model) if layer.name in names)
    return kernels * mcu_profiles.BYTES_PER_FLOAT32 * (1 + slots)


def plan_board(model, board, policy=None, *, optimizer="sgd", learning_rate=None,
               loss="sparse_categorical_crossentropy", batches=BATCHES, requested=None, progress=_progress,
               **optimizer_kwargs) -> dict:
    """Which last-N trainable sets and batch sizes of ``model``'s exported step fit ``board`` (a board project key:
    ``tinyprop_tf.converters.board_projects.BOARDS``). Returns the plan (JSON-ready; ``"text"`` is the table).

    ``policy``, ``optimizer``, ``learning_rate``, ``loss`` and ``optimizer_kwargs`` as for ``export_training_model``
    (policy default: TinyProp's defaults). ``requested``: ``(n, batch)`` to measure and report as well (what the
    caller exports). ``model``'s trainable flags are left as they were."""
    from tinyprop_tf.converters import board_projects, tflm_host_runner
    from tinyprop_tf.sparsity_state import sparse_layers

    target = board_projects.check_board(board)
    profile = mcu_profiles.get_board(target.profile)
    usable = profile.usable_ram_bytes
    policy = policies_lib.get(policy) if policy is not None else (
        None if sparse_layers(model) else policies_lib.TinyProp())
    batches = sorted({int(b) for b in batches})
    if not batches or batches[0] < 1:
        raise ValueError(f"batches must be positive integers, got {batches}")
    affine = trainable.affine_layers(model)
    if requested is not None:
        trainable.check_train_last(requested[0], len(affine), f"model '{model.name}'")
    try:
        runner = tflm_host_runner.find_runner(build="update")
    except tflm_host_runner.RunnerError:
        runner = None
    selects = policy.selects if policy is not None else sparse_layers(model)[0].policy.selects
    fast = runner is not None and selects
    arena_source = ("train_fast.tflite measured in tinyprop_tflm_runner (TFLM with the TinyProp operators, 64-bit "
                    "host)" if fast else
                    "train.tflite measured in the pip tflite-micro interpreter (64-bit host; " +
                    ("the policy does not select: no TinyProp operators)" if runner is not None else
                     "no tinyprop_tflm_runner built for this TFLM tree and micro/ sources to measure "
                     "train_fast.tflite: make tflm-runner builds it)" if os.environ.get("TINYPROP_TFLM_DIR") else
                     f"no tinyprop_tflm_runner to measure train_fast.tflite: {tflm_host_runner.HOW_TO})"))
    name = (optimizer if isinstance(optimizer, str) else type(optimizer).__name__).lower()
    slots = mcu_profiles.OPTIMIZER_STATE_SLOTS[
        "momentum" if name == "sgd" and optimizer_kwargs.get("momentum") else name]

    flags = {layer.name: layer.trainable for layer in model.layers}
    input_grads = {layer.name: layer.needs_input_grad for layer in sparse_layers(model)}
    measured: dict[tuple[int, int], Measurement] = {}
    skipped: dict[int, int] = {}  # n -> state lower bound, when it alone exceeds the usable RAM

    def measure(n: int, batch: int) -> Measurement:
        if (n, batch) in measured:
            return measured[(n, batch)]
        from tinyprop_tf.converters.graph import ExportError

        trainable.train_last(model, n)
        result = export_and_budget(n, batch, recompute=False)
        # A step that does not fit may fit with its trained conv block recomputed (half the arena or less for a
        # DS-CNN's last pointwise conv, for a second forward of the frozen prefix); tried once per N where it applies.
        if fast and batch > 1 and not result.fits and not_recomputable.get(n) is None:
            try:
                recomputed = export_and_budget(n, batch, recompute=True)
            except ExportError as error:  # this trainable set has no such block: say so once
                not_recomputable[n] = str(error)
            else:
                result = recomputed if recomputed.ram_bytes < result.ram_bytes else result
        measured[(n, batch)] = result
        progress(f"{target.key}: last {n}, batch {batch}: arena {result.arena_bytes:,} B"
                 f"{' (recomputed block)' if result.recompute else ''}, RAM {result.ram_bytes:,} "
                 f"of {usable:,} B usable: {'fits' if result.fits else 'does not fit'} ({len(measured)} measured)")
        return result

    not_recomputable: dict[int, str] = {}  # n -> why its step has no recomputed block

    def export_and_budget(n: int, batch: int, recompute: bool) -> Measurement:
        from tinyprop_tf.converters import export_training_model, write_board_project

        work = tempfile.mkdtemp(prefix="tinyprop-plan-")
        try:
            manifest = export_training_model(model, policy, optimizer=optimizer, learning_rate=learning_rate,
                                             loss=loss, batch_size=batch, out_dir=os.path.join(work, "export"),
                                             fast=fast, recompute=recompute, **optimizer_kwargs)
            project = write_board_project(os.path.join(work, "export"), target.key, os.path.join(work, "project"),
                                          print_fn=lambda *a, **k: None)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        budget = project.budget
        fast_arena = (manifest.get("tflm_fast") or {}).get("arena_bytes")
        return Measurement(
            n=n, batch=batch, arena_bytes=int(fast_arena or manifest["tflm"]["arena_bytes"]),
            arena_source="train_fast.tflite" if fast_arena else "train.tflite",
            ram={k: int(v) for k, v in budget["ram"].items()}, ram_bytes=int(budget["ram_bytes"]),
            flash_bytes=int(budget["flash_bytes"]), fits=bool(budget["fits"]), verdict=budget["verdict"],
            recompute=recompute)

    rows = []
    try:
        ceiling = len(batches)  # batches[:ceiling] may still fit
        for n in range(1, len(affine) + 1):
            bound = _state_lower_bound(model, n, slots)
            best = None
            if bound > usable:
                skipped[n] = bound
                if ceiling:
                    progress(f"{target.key}: last {n}: trained kernels and optimizer slots alone take {bound:,} B > "
                             f"{usable:,} B usable: not measured")
                ceiling = 0
            elif ceiling:
                # Largest i < ceiling with batches[i] fitting; the previous N's best is tried first.
                lo, hi = -1, ceiling
                first = ceiling - 1 if n > 1 else None
                while hi - lo > 1:
                    mid = first if first is not None else (lo + hi) // 2
                    first = None
                    if measure(n, batches[mid]).fits:
                        lo = mid
                    else:
                        hi = mid
                best = lo if lo >= 0 else None
                ceiling = 0 if best is None else best + 1
            rows.append((n, best))
        if requested is not None:
            measure(*requested)
        if not any(m.fits for m in measured.values()) and (1, batches[0]) not in measured and 1 not in skipped:
            measure(1, batches[0])
    finally:
        for layer in model.layers:
            layer.trainable = flags[layer.name]
        for layer in sparse_layers(model):
            layer.needs_input_grad = input_grads[layer.name]
    return _report(model, target, profile, policy, optimizer, batches, arena_source, rows, measured, skipped,
                   requested)


def _report(model, target, profile, policy, optimizer, batches, arena_source, rows, measured, skipped, requested):
    usable = profile.usable_ram_bytes
    table_rows = []
    for n, best in rows:
        names = trainable.trained_layers(model, n)
        row = {"train_last": n, "trained_layers": names, "largest_batch": None if best is None else batches[best]}
        if best is not None:
            m = measured[(n, batches[best])]
            row.update(arena_bytes=m.arena_bytes, ram_bytes=m.ram_bytes, margin_bytes=usable - m.ram_bytes,
                       recompute=m.recompute)
        elif n in skipped:
            row["state_lower_bound_bytes"] = skipped[n]
        else:
            smallest = measured.get((n, batches[0]))
            if smallest is not None:
                row["smallest_ram_bytes"] = smallest.ram_bytes
        table_rows.append(row)
    fitting = [m for m in measured.values() if m.fits]
    smallest = min(measured.values(), key=lambda m: m.ram_bytes, default=None)
    lines = [f"Board plan for {target.key} ({profile.name}): {usable:,} B usable RAM; arena: {arena_source}; "
             f"RAM = arena (which holds the training state) + main stack (+ a save/load scratch for train.tflite; "
             f"board project budget)"]
    lines.append(f"  {'last N':>6}  {'largest batch':>13}  {'arena':>11}  {'RAM':>11}  {'margin':>10}  trained")
    affine = [layer.name for layer in trainable.affine_layers(model)]
    for row in table_rows:
        trained = affine[-row["train_last"]:]
        trained = ", ".join(trained) if len(trained) <= 3 else f"{trained[0]} ... {trained[-1]}"
        if row["largest_batch"] is not None:
            lines.append(f"  {row['train_last']:>6}  {row['largest_batch']:>13}  {row['arena_bytes']:>9,} B  "
                         f"{row['ram_bytes']:>9,} B  {row['margin_bytes']:>8,} B  {trained}"
                         + ("  (export --recompute)" if row["recompute"] else ""))
        else:
            why = (f"state alone >= {row['state_lower_bound_bytes']:,} B" if "state_lower_bound_bytes" in row else
                   f"batch {batches[0]} needs {row['smallest_ram_bytes']:,} B" if "smallest_ram_bytes" in row else
                   f"not measured: the last {row['train_last'] - 1} fit no batch")
            lines.append(f"  {row['train_last']:>6}  {'none':>13}  ({why})  {trained}")
    if fitting:
        best = max(fitting, key=lambda m: (m.n, m.batch))
        lines.append(f"  Fits: up to the last {best.n} layer(s) at batch {best.batch}; batches tried: "
                     f"{', '.join(map(str, batches))}.")
    else:
        need = (f"the smallest step (last {smallest.n}, batch {smallest.batch}) needs {smallest.ram_bytes:,} B"
                if smallest is not None else
                f"the last layer's kernel and optimizer slots alone take {skipped.get(1, 0):,} B")
        lines.append(f"  NOTHING FITS {target.key}: {need} of RAM, {usable:,} B usable.")
    if requested is not None:
        m = measured[tuple(requested)]
        lines.append(f"  Requested (last {m.n}, batch {m.batch}): RAM {m.ram_bytes:,} B: "
                     f"{'fits' if m.fits else 'does not fit'} ({m.verdict})"
                     + (" with its conv block recomputed (export --fast --recompute)" if m.recompute else ""))
    shown = measured[tuple(requested)] if requested is not None else (
        max(fitting, key=lambda m: (m.n, m.batch)) if fitting else smallest)
    if shown is not None:
        lines.append(f"  RAM of (last {shown.n}, batch {shown.batch}), as its project counts it: " +
                     " + ".join(f"{what} {value:,} B" for what, value in shown.ram.items()) +
                     f"; arena measured {shown.arena_bytes:,} B ({shown.arena_source})")
    return {
        "format": FORMAT,
        "board": target.key, "board_profile": profile.key, "usable_ram_bytes": usable,
        "usable_ram_source": profile.source_of("usable_ram_bytes").source,
        "policy": repr(policy), "optimizer": optimizer if isinstance(optimizer, str) else type(optimizer).__name__,
        "batches": batches, "arena_source": arena_source,
        "ram_parts": "TFLM arena (measured; holds the training state) + main task stack (the project's configured "
                     "size) + for train.tflite a save/load scratch of its largest resource variable; samples are "
                     "const, in flash "
                     "(converters/board_projects.py budget)",
        "method": "per N, bisection over batches from the previous N's largest; candidates whose trained kernels "
                  "and optimizer slots alone exceed the usable RAM are not measured",
        "rows": table_rows, "fits": bool(fitting),
        "smallest_need_bytes": None if smallest is None else smallest.ram_bytes,
        "requested": None if requested is None else measured[tuple(requested)].to_dict(),
        "measured": [m.to_dict() for m in sorted(measured.values(), key=lambda m: (m.n, m.batch))],
        "text": "\n".join(lines),
    }
