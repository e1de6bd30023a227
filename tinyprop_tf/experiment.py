"""Fine-tuning comparisons: one pretrained model, several back-propagation policies, same data and seed.

Used by ``tinyprop demo``, ``tinyprop finetune`` and ``benchmarks/paper_comparison.py``.
"""

from __future__ import annotations

import os
import time

import keras
import numpy as np

from tinyprop_tf import batchnorm as batchnorm_lib
from tinyprop_tf import cloning, estimates, interrupt, outdir, report, trainable
from tinyprop_tf import policies as policies_lib
from tinyprop_tf._validate import AUTO_LEARNING_RATES, OPTIMIZERS
from tinyprop_tf.cloning import sparsify
from tinyprop_tf.run_result import RunResult
from tinyprop_tf.sparsity_state import sparse_layers
from tinyprop_tf.training import BackpropStats, UpdateSparsity


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
    train_last: int | None = None,
    batchnorm: str = "fold",
) -> RunResult:
    """Fine-tune a sparse clone of ``pretrained`` with ``policy``; evaluate after every epoch.

    ``evaluate(model) -> float`` is the test metric (``accuracy_evaluator`` for classifiers).
    ``train_last``: train only the last N affine layers, the rest frozen (``trainable.train_last``); default the
    trainable flags ``pretrained`` has.
    ``batchnorm``: how BatchNormalization layers take part (``batchnorm.BATCHNORM_MODES``): ``"fold"`` (default)
    folded as the exported step trains them, ``"adapt"`` re-estimated on ``train``'s inputs, then folded,
    ``"train"`` as Keras trains them (batch statistics; host only).
    ``loss``: any Keras loss; default sparse categorical cross-entropy on logits.
    ``progress``: an optional callable ``progress(epoch, logs)`` called after every epoch (a tqdm hook).
    """
    policy = policies_lib.get(policy)
    keras.utils.set_random_seed(seed)
    model = sparsify(batchnorm_lib.for_finetuning(pretrained, batchnorm, train[0]), policy, verbose=False)
    if train_last is not None:
        trainable.train_last(model, train_last)
    notes = []
    if hasattr(policy, "choice_text"):  # BudgetProp: how it spends the budget on this model's trained layers
        notes.append(f"{name or type(policy).__name__}: {type(policy).__name__} "
                     + policy.choice_text(cloning.backward_costs(sparse_layers(model))))
    if loss is None:  # classifiers here output logits
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(make_optimizer(optimizer, learning_rate), loss)
    initial = float(evaluate(model))
    stats = BackpropStats()
    evaluator = _EvaluateEachEpoch(evaluate)
    # A Ctrl-C that a callback run from C swallowed is raised again at the next batch (``interrupt``).
    callbacks = [UpdateSparsity(), stats, evaluator,
                 keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: interrupt.check())]
    if progress is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=progress))
    history = model.fit(*train, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=callbacks, shuffle=True)

    rows = stats.epochs[0]["layers"] if stats.epochs else {}
    layer_names = [name for name, row in rows.items() if not row["frozen"]]
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
        frozen_layers=[name for name, row in rows.items() if row["frozen"]],
        notes=notes,
    )


def held_out_split(data, fraction: float, seed: int = 0):
    """(rest, held out): ``fraction`` of the samples of ``data`` (x, y), a ``seed``-drawn subset, held out."""
    x, y = data
    held = int(round(fraction * len(x)))
    if not 1 <= held < len(x):
        raise ValueError(f"validation: {fraction:g} of {len(x)} fine-tuning samples holds out {held}; choose a "
                         "fraction that leaves at least one sample on each side")
    order = np.random.default_rng(seed).permutation(len(x))
    keep, out = np.sort(order[held:]), np.sort(order[:held])
    return (x[keep], y[keep]), (x[out], y[out])


def best_rate(rates, mean_scores):
    """``choose_learning_rate``'s rule: the rate of the best mean score; among equal scores the smaller rate."""
    return min(zip(rates, mean_scores), key=lambda pair: (-pair[1], pair[0]))[0]


def choose_learning_rate(pretrained: keras.Model, policies: dict, train, *, rates=AUTO_LEARNING_RATES,
                         validation: float = 0.25, loss=None, print_fn=print, **options) -> dict:
    """The fine-tuning rate chosen on held-out fine-tuning samples, never on a test split.

    Holds out ``validation`` of ``train`` (drawn by ``options["seed"]``), fine-tunes every policy at every rate on
    the rest (``finetune`` with ``options``: epochs, batch size, optimizer, seed, train_last, batchnorm) and scores
    the held-out samples after the last epoch: accuracy for a classifier, minus the mean squared error for an
    autoencoder (``loss="mse"``). The chosen rate has the best mean score over the policies (ties: the smaller): one
    rate for the whole comparison, at which the policies train well together. Returns {"learning_rate",
    "rates", "validation": {policy: [score per rate]}, "held_out": n, "metric"}."""
    rates = list(rates)
    rest, (x_held, y_held) = held_out_split(train, validation, options.get("seed", 0))
    if loss == "mse":
        metric = "minus mean squared error"

        def score(model):
            return -float(np.mean((model.predict(x_held, batch_size=256, verbose=0) - y_held) ** 2))
    else:
        metric, score = "accuracy", accuracy_evaluator(x_held, y_held)
    epochs = options.get("epochs", 5)
    scores = {}
    bar = progress_bar(epochs * len(rates) * len(policies), f"learning rate: {len(rates)} rates on held-out samples")
    try:
        for name, policy in policies.items():
            scores[name] = [finetune(pretrained, policy, rest, score, name=name, loss=loss, learning_rate=rate,
                                     progress=lambda e, logs: bar.update(1), **options).final_metric
                            for rate in rates]
    finally:
        bar.close()
    means = [float(np.mean([row[i] for row in scores.values()])) for i in range(len(rates))]
    best = rates.index(best_rate(rates, means))
    print_fn(f"Learning rate chosen on {len(x_held)} held-out fine-tuning samples ({metric}, mean over "
             f"{len(policies)} policies): " + ", ".join(f"{r:g}: {m:.3f}" for r, m in zip(rates, means))
             + f" -> {rates[best]:g}")
    return {"learning_rate": float(rates[best]), "rates": [float(r) for r in rates], "validation": scores,
            "mean": means, "held_out": len(x_held), "metric": metric}


def make_optimizer(name: str, learning_rate: float):
    """A Keras optimizer by name: ``adam``, ``lazy_adam`` (``optimizers.LazyAdam``), ``sgd``, ``momentum``
    (SGD with momentum 0.9)."""
    from tinyprop_tf.optimizers import LazyAdam

    makers = {"adam": keras.optimizers.Adam, "lazy_adam": LazyAdam, "sgd": keras.optimizers.SGD,
              "momentum": lambda lr: keras.optimizers.SGD(lr, momentum=0.9)}
    if name not in makers:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {name!r}")
    return makers[name](learning_rate)


def progress_bar(total: int, desc: str, disable: bool = False):
    """A tqdm bar counting epochs (to stderr, cleared when done)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="epoch", leave=False, dynamic_ncols=True, disable=disable)


def pretrain(model: keras.Model, data, *, loss=None, epochs: int = 15, batch_size: int = 32,
             learning_rate: float = 1e-3, seed: int = 0, progress: bool = True) -> keras.Model:
    """Dense training of a fresh model (Adam), with a progress bar unless not ``progress``."""
    keras.utils.set_random_seed(seed)
    model.compile(keras.optimizers.Adam(learning_rate),
                  loss if loss is not None else keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    bar = progress_bar(epochs, "pretrain (dense)", disable=not progress)
    model.fit(*data, epochs=epochs, batch_size=batch_size, verbose=0,
              callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: bar.update(1))])
    bar.close()
    return model


def compare(pretrained: keras.Model, policies: dict, finetune_data, evaluate, out_dir: str, *,
            overwrite: bool = False, **options) -> dict:
    """Fine-tune ``pretrained`` once per policy (same data, same seed), then print the comparison table, write
    the plots, the fine-tuned models and ``report.json`` to ``out_dir``. Returns the report.

    ``out_dir`` must be free (missing or empty) unless ``overwrite``: then the previous run is replaced as a whole
    when this one finishes (``tinyprop_tf.outdir.replacing``); if this one stops early, the previous run stays and
    this one's finished part is left beside it. ``options``: those of ``compare_into``."""
    with outdir.replacing(out_dir, overwrite, keep_partial=True) as folder:
        return compare_into(folder, pretrained, policies, finetune_data, evaluate, **options)


def compare_into(folder: outdir.Folder, pretrained: keras.Model, policies: dict, finetune_data, evaluate, *,
                 metric_name: str = "accuracy", loss=None, epochs: int = 10, batch_size: int = 32,
                 learning_rate: float = 1e-3, seed: int = 0, boards=None, about: dict | None = None,
                 print_fn=print, save_pretrained: bool = False, finish: bool = True,
                 train_last: int | None = None, optimizer: str = "adam", batchnorm: str = "fold") -> dict:
    """``compare`` into a folder the caller holds (``outdir.replacing``). ``save_pretrained``: also save
    ``pretrained`` there as ``pretrained.keras``. ``report.json`` says ``"complete": false`` from the start and
    after every finished run (an interrupted comparison keeps what finished), and ``true`` at the end if ``finish``
    (False: the caller adds to the report and finishes it with ``write_report``). ``train_last``: every run trains
    only the last N affine layers (``trainable.train_last``; checked before any run). ``optimizer``: one of
    ``OPTIMIZERS``, for every run. ``batchnorm``: ``finetune``'s, applied once to ``pretrained`` for every run
    (and to the ``pretrained.keras`` saved)."""
    make_optimizer(optimizer, learning_rate)  # a bad name fails here, before any work
    started = time.time()
    about = {**(about or {}), "batchnorm": batchnorm}
    pretrained = batchnorm_lib.for_finetuning(pretrained, batchnorm, finetune_data[0])
    trained = None
    if train_last is not None:
        trained = trainable.trained_layers(pretrained, train_last)  # a bad N fails here, before any work
        frozen = [layer.name for layer in trainable.affine_layers(pretrained) if layer.name not in trained]
        about["train_last"] = {"n": train_last, "trained_layers": trained, "frozen_layers": frozen}
        print_fn(f"Training the last {train_last} affine layer(s) ({', '.join(trained)}); frozen, forward only: "
                 f"{', '.join(frozen) or 'none'}")
    if save_pretrained:
        pretrained.save(os.path.join(folder.path, "pretrained.keras"))
    results = []
    write_report(folder, {**about, "runs": []}, complete=False)
    for name, policy in policies.items():
        bar = progress_bar(epochs, f"fine-tune: {name}")
        try:
            results.append(finetune(
                pretrained, policy, finetune_data, evaluate, name=name, metric_name=metric_name, loss=loss,
                epochs=epochs, batch_size=batch_size, seed=seed, learning_rate=learning_rate,
                progress=lambda e, logs: bar.update(1), train_last=train_last, optimizer=optimizer,
                batchnorm=batchnorm,
                save_path=os.path.join(folder.path, f"finetuned-{_file_safe(name)}.keras"),
            ))
        finally:
            bar.close()  # also when the run stops: the messages after it start on a clean line
        write_report(folder, {**about, "runs": [r.to_dict() for r in results]}, complete=False)

    per_board = estimates.board_estimates(results, boards)
    fit = estimates.memory_fit(pretrained, batch_size, optimizer, boards, trained=trained)
    print_fn("")
    print_fn(report.comparison_table(results, per_board))
    for note in (note for result in results for note in result.notes):
        print_fn(note)
    print_fn(f"\nTraining state in RAM (float32 weights, gradients, {optimizer} state, activations of a batch of "
             f"{batch_size}; TFLM arena and stack not included):")
    for name, row in fit.items():
        print_fn(f"  {name:<9} {row['message']}")
    plots = report.plot_comparison(results, folder.path)
    payload = {**about, "runs": [r.to_dict() for r in results], "board_estimates": per_board,
               "memory_fit": fit,
               "plots": plots, "seconds": time.time() - started}
    payload = write_report(folder, payload, complete=finish)
    print_fn(f"\nWrote {os.path.join(folder.final, 'report.json')}, plots "
             f"{', '.join(os.path.basename(p) for p in plots)} and the fine-tuned models to {folder.final}/")
    return payload


def write_report(folder: outdir.Folder, payload: dict, complete: bool) -> dict:
    """Write ``folder``'s ``report.json`` atomically with ``"complete"`` first; a complete report names every file
    where it ends up (``folder.final``), an incomplete one where it is now. Returns what was written."""
    payload = {"complete": complete, **{k: v for k, v in payload.items() if k != "complete"}}
    if complete:
        payload = folder.final_paths(payload)
    outdir.write_json(os.path.join(folder.path, "report.json"), payload)
    return payload


def _file_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
