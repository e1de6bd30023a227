"""Fine-tuning comparisons: one pretrained model, several back-propagation policies, same data and seed.

Used by ``tinyprop demo``, ``tinyprop finetune`` and ``benchmarks/paper_comparison.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os

import keras
import numpy as np

from tinyprop_tf import policies as policies_lib
from tinyprop_tf.cloning import sparsify
from tinyprop_tf.training import BackpropStats, UpdateSparsity


@dataclasses.dataclass
class RunResult:
    """One fine-tuning run: per-epoch metrics and accounting, and the final per-layer statistics."""

    name: str
    policy: str
    epochs: list[int]
    metric_name: str
    metric: list[float]  # per epoch, on the test set
    loss: list[float]  # per epoch, training loss
    bwd_macs_sparse: list[float]
    bwd_macs_dense: list[float]
    fwd_macs: list[float]
    select_ops: list[float]
    layers: dict[str, dict]  # layer -> {"kept_ratio": [...per epoch], "k_mean": [...], "entries": M, "depth": p}
    initial_metric: float
    model_path: str | None = None

    @property
    def final_metric(self) -> float:
        return self.metric[-1]

    @property
    def bwd_ratio(self) -> float:
        """Sparse / dense backward MACs over the whole run."""
        return float(np.sum(self.bwd_macs_sparse) / np.sum(self.bwd_macs_dense))

    def to_dict(self):
        return {**dataclasses.asdict(self), "final_metric": self.final_metric, "bwd_ratio": self.bwd_ratio}


class _EvaluateEachEpoch(keras.callbacks.Callback):
    def __init__(self, evaluate):
        super().__init__()
        self.evaluate = evaluate
        self.values = []

    def on_epoch_end(self, epoch, logs=None):
        self.values.append(float(self.evaluate(self.model)))


def accuracy_evaluator(x_test, y_test, batch_size=256):
    def evaluate(model):
        logits = model.predict(x_test, batch_size=batch_size, verbose=0)
        return float(np.mean(np.argmax(logits, axis=-1) == y_test))

    return evaluate


def finetune(
    pretrained: keras.Model,
    policy,
    train: tuple[np.ndarray, np.ndarray],
    evaluate,
    *,
    name: str | None = None,
    metric_name: str = "accuracy",
    loss=None,
    optimizer: str = "adam",
    learning_rate: float = 1e-3,
    epochs: int = 5,
    batch_size: int = 32,
    seed: int = 0,
    progress=None,
    save_path: str | None = None,
) -> RunResult:
    """Fine-tune a sparse clone of ``pretrained`` with ``policy``; evaluate after every epoch.

    ``evaluate(model) -> float`` is the test metric (``accuracy_evaluator`` for classifiers).
    ``loss``: any Keras loss; default sparse categorical cross-entropy on logits.
    ``progress``: an optional callable ``progress(epoch, logs)`` called after every epoch (a tqdm hook).
    """
    policy = policies_lib.get(policy)
    keras.utils.set_random_seed(seed)
    model = sparsify(pretrained, policy, verbose=False)
    if loss is None:  # classifiers here output logits
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizers = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}
    if optimizer not in optimizers:
        raise ValueError(f"optimizer must be one of {sorted(optimizers)}, got {optimizer!r}")
    model.compile(optimizers[optimizer](learning_rate), loss)
    initial = float(evaluate(model))
    stats = BackpropStats()
    evaluator = _EvaluateEachEpoch(evaluate)
    callbacks = [UpdateSparsity(), stats, evaluator]
    if progress is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=progress))
    history = model.fit(*train, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=callbacks, shuffle=True)

    layer_names = list(stats.epochs[0]["layers"]) if stats.epochs else []
    layers = {
        layer: {
            "kept_ratio": [record["layers"][layer]["kept_ratio"] for record in stats.epochs],
            "k_mean": [record["layers"][layer]["k_mean"] for record in stats.epochs],
            "entries": stats.epochs[-1]["layers"][layer]["entries"],
            "depth": stats.epochs[-1]["layers"][layer]["depth"],
        }
        for layer in layer_names
    }
    column = lambda key: [record["totals"][key] for record in stats.epochs]  # noqa: E731
    if save_path:
        os.makedirs(os.path.dirname(os.path.abspath(save_path)), exist_ok=True)
        model.save(save_path)
    return RunResult(
        name=name or type(policy).__name__,
        policy=repr(policy),
        epochs=list(range(1, epochs + 1)),
        metric_name=metric_name,
        metric=evaluator.values,
        loss=[float(v) for v in history.history["loss"]],
        bwd_macs_sparse=column("bwd_macs_sparse"),
        bwd_macs_dense=column("bwd_macs_dense"),
        fwd_macs=column("fwd_macs"),
        select_ops=column("select_ops"),
        layers=layers,
        initial_metric=initial,
        model_path=save_path,
    )


def write_json(path: str, payload) -> None:
    """Write JSON through a temporary file, so an interrupted run never leaves a truncated report."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(payload, handle, indent=1, default=float)
    os.replace(tmp, path)


def selection_overhead_share(result: RunResult) -> float:
    """Selection ops relative to the sparse backward MACs (a rough overhead indicator)."""
    sparse = float(np.sum(result.bwd_macs_sparse))
    return float(np.sum(result.select_ops)) / sparse if sparse else float("nan")

