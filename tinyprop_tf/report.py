"""Tables and plots of fine-tuning comparisons (``RunResult``s)."""

from __future__ import annotations

import os

import numpy as np

from tinyprop_tf.run_result import RunResult


def _reference(results: list[RunResult]) -> RunResult:
    """The dense run if there is one (compute is reported relative to it), else the first."""
    return next((r for r in results if r.policy.startswith("DenseBackprop")), results[0])


def comparison_table(results: list[RunResult], board_estimates: dict | None = None) -> str:
    """Plain-text table: metric before/after, backward MACs vs dense, mean kept ratio per layer.

    ``board_estimates``: optional ``{run name: {board: (seconds, joules) per epoch}}`` appended as columns.
    """
    reference = _reference(results)
    dense_total = float(np.sum(reference.bwd_macs_dense))
    layer_names = list(results[0].layers)
    boards = sorted({b for est in (board_estimates or {}).values() for b in est})
    width = max(22, *(len(r.name) + 1 for r in results))
    head = f"{'run':<{width}} {results[0].metric_name + ' before→after':>22} {'bwd MACs':>10} {'vs dense':>9}"
    head += "".join(f" {name[:9]:>9}" for name in layer_names)
    head += "".join(f" {b[:12]:>14}" for b in boards)
    lines = [head]
    sub = f"{'':<{width}} {'':>22} {'(total)':>10} {'':>9}" + "".join(f" {'kept':>9}" for _ in layer_names)
    sub += "".join(f" {'s, mJ / epoch':>14}" for _ in boards)
    lines += [sub, "-" * len(head)]
    for r in results:
        total = float(np.sum(r.bwd_macs_sparse))
        row = (
            f"{r.name:<{width}} {f'{r.initial_metric:.3f} → {r.final_metric:.3f}':>22} {total / 1e6:>9.1f}M "
            f"{total / dense_total:>8.3f}x"
        )
        row += "".join(f" {np.nanmean(r.layers[name]['kept_ratio']):>9.3f}" for name in layer_names)
        for b in boards:
            seconds, joules = (board_estimates or {}).get(r.name, {}).get(b, (float("nan"), float("nan")))
            row += f" {f'{seconds:.2f}s {joules * 1e3:.0f}mJ':>14}"
        lines.append(row)
    return "\n".join(lines)


def plot_comparison(results: list[RunResult], out_dir: str) -> list[str]:
    """Write accuracy_vs_epoch.png, backward_compute_vs_epoch.png, kept_ratio_per_layer.png,
    accuracy_vs_backward_compute.png; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    reference = _reference(results)
    dense_per_epoch = np.asarray(reference.bwd_macs_dense)

    def save(fig, name):
        path = os.path.join(out_dir, name)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        ax.plot([0] + r.epochs, [r.initial_metric] + r.metric, marker="o", label=r.name)
    ax.set(xlabel="fine-tuning epoch", ylabel=f"test {results[0].metric_name}", title="Test metric per epoch")
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, "accuracy_vs_epoch.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        ax.plot(r.epochs, np.asarray(r.bwd_macs_sparse) / dense_per_epoch, marker="o", label=r.name)
    ax.set(xlabel="fine-tuning epoch", ylabel="backward MACs / dense", title="Backward compute per epoch")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    save(fig, "backward_compute_vs_epoch.png")

    sparse_runs = [r for r in results if r is not reference] or results
    fig, axes = plt.subplots(1, len(sparse_runs), figsize=(4.5 * len(sparse_runs), 3.8), squeeze=False)
    for ax, r in zip(axes[0], sparse_runs):
        for layer, info in r.layers.items():
            ax.plot(r.epochs, info["kept_ratio"], marker=".", label=f"{layer} (p={info['depth']})")
        ax.set(xlabel="epoch", ylabel="mean kept ratio k/M", title=r.name, ylim=(0, 1.05))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    save(fig, "kept_ratio_per_layer.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        ax.scatter(float(np.sum(r.bwd_macs_sparse)) / float(np.sum(reference.bwd_macs_dense)), r.final_metric,
                   s=60, label=r.name)
    ax.set(xscale="log", xlabel="backward MACs relative to dense (log)", ylabel=f"final test {results[0].metric_name}",
           title="Accuracy vs backward compute")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    save(fig, "accuracy_vs_backward_compute.png")
    return paths
