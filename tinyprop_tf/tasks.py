"""Fine-tuning tasks on the user's data: splits, features, metric and loss for each supported layout.

Each task returns a ``Task`` with three splits — ``pretrain`` (used only when the model must be trained from
scratch first), ``finetune`` and ``test`` — of model-ready arrays:

- ``mnist``: IDX files (MNIST or Fashion-MNIST). Pretrain on the first half of the training split, fine-tune
  on the second half, test on the test split. Inputs [28, 28, 1] in [0, 1].
- ``fsdd``: Free Spoken Digit Dataset; pretrain on every speaker but ``new_speaker``, fine-tune on that
  speaker's takes 5-49, test on their takes 0-4 (personalisation). Log-mel features at 8 kHz [49, 40, 1].
- ``kws``: Speech Commands layout (10 words + silence + unknown): pretrain on ``train``, fine-tune on
  ``validation``, test on ``test``. Log-mel features at 16 kHz [49, 40, 1].
- ``dcase``: DCASE2020 Task 2 layout for one machine type: an autoencoder on 5-frame log-mel context vectors;
  pretrain on the normal training clips of the other machine ids, fine-tune on ``machine_id``'s, test
  (AUC of the reconstruction error) on ``machine_id``'s test clips.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

TASKS = ("mnist", "fsdd", "kws", "dcase")


@dataclasses.dataclass
class Task:
    name: str
    pretrain: tuple[np.ndarray, np.ndarray]
    finetune: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    num_classes: int | None  # None for the autoencoder
    metric_name: str
    evaluate: Callable  # evaluate(model) -> float on the test split
    loss: object = None  # None: sparse categorical cross-entropy on logits
    description: str = ""
    # How raw inputs become model inputs, as a device front end must reproduce them (None: no front end).
    features: dict | None = None

    @property
    def input_shape(self):
        return self.finetune[0].shape[1:]


def _features(waveforms: np.ndarray, config, batch: int = 256, kind: str = "log_mel") -> np.ndarray:
    """``audio.log_mel`` (or ``audio.mfcc``) of every clip, [N, frames, bands, 1]."""
    from tinyprop_tf import audio

    transform = audio.mfcc if kind == "mfcc" else audio.log_mel
    parts = [transform(waveforms[i:i + batch], config).numpy() for i in range(0, len(waveforms), batch)]
    return np.concatenate(parts)[..., None].astype("float32")


def _standardised(pieces):
    """Scale every split with the pretrain split's scalar mean and std: raw log-mels (mean about -8, std 6 on
    FSDD) stall BatchNorm's moving statistics. A device applies the same two constants after its front end."""
    mean, std = float(pieces[0][0].mean()), float(pieces[0][0].std()) or 1.0
    return [((x - mean) / std, y) for x, y in pieces], (mean, std)


def _log_mel_front_end(config, clip_samples: int | None, scaling=None, context_frames: int | None = None) -> dict:
    """Everything a device needs to compute the model's inputs from audio as training did."""
    description = {
        "front_end": "tinyprop_tf.audio.log_mel",
        "log_mel_config": dataclasses.asdict(config),
        "clip_samples": clip_samples,  # None: clips of any length (frames are not padded)
        "on_device": "tinyprop_tf.audio.export_frontend(LogMelConfig(**log_mel_config), clip_samples, path) writes "
                     "this front end as a TFLM graph (Hann window, DFT as matmul, mel filterbank, log(mel + "
                     "log_offset)); clips are zero-padded / centre-cropped to clip_samples, frames not padded",
    }
    if context_frames is not None:
        description["context_frames"] = context_frames
        description["model_input"] = (f"each run of {context_frames} consecutive frames concatenated "
                                      "(datasets.stack_frames)")
    if scaling is not None:
        mean, std = scaling
        description["standardisation"] = {"mean": mean, "std": std, "model_input": "(log_mel - mean) / std",
                                          "from": "the pretrain split (one scalar mean and std)"}
    return description


def _classification(name, pretrain, finetune, test, num_classes, description, features=None):
    from tinyprop_tf.experiment import accuracy_evaluator

    return Task(name, pretrain, finetune, test, num_classes, "accuracy", accuracy_evaluator(*test),
                description=description, features=features)


def mnist_task(path: str) -> Task:
    from tinyprop_tf.datasets import load_mnist

    train, test = load_mnist(path, "train"), load_mnist(path, "test")
    scale = lambda images: (images.astype("float32") / 255.0)[..., None]  # noqa: E731
    x, y = scale(train.x), train.y
    half = len(x) // 2
    return _classification("mnist", (x[:half], y[:half]), (x[half:], y[half:]), (scale(test.x), test.y),
                           len(train.classes), f"IDX files in {path}")


def fsdd_task(path: str, new_speaker: str = "yweweler", features: str = "log_mel", test_takes=None) -> Task:
    """``features``: "log_mel" (40 bands, standardised with one scalar) or "mfcc" (13 coefficients, each
    standardised with the pretrain split's mean and std over clips and frames; the host's ``audio.mfcc``, no device
    front end is recorded); inputs [49, bands, 1].
    ``test_takes``: (first, last) takes of the new speaker to test on (default 0-4)."""
    from tinyprop_tf.audio import LogMelConfig
    from tinyprop_tf.datasets import speaker_split

    takes = {} if test_takes is None else {"test_takes": range(test_takes[0], test_takes[1] + 1)}
    split = speaker_split(path, new_speaker=new_speaker, **takes)
    config = LogMelConfig.fsdd_8k()
    tested = f"takes {test_takes[0]}-{test_takes[1]}" if test_takes is not None else "takes 0-4"
    about = f"FSDD in {path}, personalising to speaker {new_speaker!r} (tested on {tested})"
    if features == "mfcc":
        pieces = [(_features(part.x, config, batch=500, kind="mfcc"), part.y) for part in split]
        mean = pieces[0][0].mean(axis=(0, 1))
        std = pieces[0][0].std(axis=(0, 1)) + 1e-6
        pieces = [(((x - mean) / std).astype("float32"), y) for x, y in pieces]
        return _classification("fsdd", *pieces, 10, about + ", 13 MFCCs standardised per coefficient")
    if features != "log_mel":
        raise ValueError(f"features: expected 'log_mel' or 'mfcc', got {features!r}")
    pieces, scaling = _standardised([(_features(part.x, config), part.y) for part in split])
    return _classification("fsdd", *pieces, 10, about, _log_mel_front_end(config, int(split[0].x.shape[1]), scaling))



def kws_task(path: str) -> Task:
    from tinyprop_tf.audio import LogMelConfig
    from tinyprop_tf.datasets import load_speech_commands

    config = LogMelConfig.kws_16k()
    parts = [load_speech_commands(path, split) for split in ("train", "validation", "test")]
    pieces, scaling = _standardised([(_features(part.x, config), part.y) for part in parts])
    return _classification("kws", *pieces, len(parts[0].classes), f"Speech Commands in {path}",
                           _log_mel_front_end(config, int(parts[0].x.shape[1]), scaling))


def dcase_task(path: str, machine: str, machine_id: str | None = None) -> Task:
    from tinyprop_tf.datasets import context_vectors, default_log_mel_config, load_dcase, roc_auc

    train = load_dcase(path, machine, "train")
    ids = sorted(set(train.metadata["machine_id"].tolist()))
    machine_id = machine_id or ids[-1]
    if machine_id not in ids:
        raise ValueError(f"machine_id {machine_id!r} not found for {machine!r} in {path}; found {ids}")
    test = load_dcase(path, machine, "test", machine_ids=[machine_id])

    def vectors(clips):
        return [context_vectors(w, train.sample_rate) for w in clips]

    is_target = train.metadata["machine_id"] == machine_id
    others = np.concatenate(vectors(train.x[~is_target])) if (~is_target).any() else None
    own = np.concatenate(vectors(train.x[is_target]))
    test_vectors = vectors(test.x)
    labels = np.asarray(test.y)

    def evaluate(model):
        # Anomaly score of a clip: mean reconstruction error over its context vectors.
        scores = [float(np.mean((model.predict(v, verbose=0, batch_size=512) - v) ** 2)) for v in test_vectors]
        return roc_auc(labels, scores)

    pretrain = (others, others) if others is not None else (own, own)
    flat_test = np.concatenate(test_vectors)
    return Task("dcase", pretrain, (own, own), (flat_test, flat_test), None, "AUC", evaluate, loss="mse",
                description=f"DCASE2020 {machine} in {path}, fine-tuning to machine id {machine_id}",
                features=_log_mel_front_end(default_log_mel_config(train.sample_rate), None, context_frames=5))


def mnist_demo_task(seed: int = 0) -> Task:
    """``tinyprop demo``'s data as a task: the embedded MNIST digits, fine-tuned and tested shifted
    (``demo.demo_data``; ``seed`` orders the digits before they are split)."""
    from tinyprop_tf.demo import demo_data

    pretrain, finetune, test = demo_data(seed)
    return _classification("mnist_demo", pretrain, finetune, test, 10,
                           "the embedded MNIST digits, fine-tuned and tested shifted as in tinyprop demo")


def mnist_embedded_task(seed: int = 0, train_size: int = 4000) -> Task:
    """The 5,000 embedded MNIST digits, unshifted: ``seed`` orders them; the first ``train_size`` train, the last
    1,000 test (the TinyProp authors' C MNIST setup from scratch has 6,000 / 1,000). Inputs [784] in [0, 1]; the
    pretrain split is the training split (for a model pretrained on it: from scratch, pretrain_epochs = 0)."""
    from tinyprop_tf.datasets import load_mnist_embedded

    images, labels = load_mnist_embedded()
    x = images.reshape(-1, 784).astype("float32")
    x = x / 255.0 if x.max() > 1.0 else x
    y = labels.astype("int32")
    order = np.random.default_rng(seed).permutation(len(x))
    train, test = order[:train_size], order[len(x) - 1000:]
    return _classification(
        "mnist_embedded", (x[train], y[train]), (x[train], y[train]), (x[test], y[test]), 10,
        f"the embedded MNIST digits: {train_size} to train, 1,000 to test (seed {seed} orders them)")


def held_out(task: Task, fraction: float, seed: int = 0) -> Task:
    """The task with a validation split in place of the test split: ``fraction`` of the fine-tuning samples
    (a ``seed``-drawn subset) are held out and evaluated, the rest fine-tuned on; the test split is not used.
    Settings (a learning rate, a policy's budget) chosen this way never saw the test set."""
    if task.num_classes is None:
        raise ValueError(f"validation: task {task.name!r} is scored by a test split of its own (labels of "
                         "anomalies); a fraction of its fine-tuning data cannot stand in for it")
    from tinyprop_tf.experiment import held_out_split

    rest, held = held_out_split(task.finetune, fraction, seed)
    return _classification(task.name, task.pretrain, rest, held, task.num_classes,
                           f"{task.description}; validation: {len(held[0])} of the {len(task.finetune[0])} "
                           "fine-tuning samples held out (the test split unused)", task.features)


def load_task(name: str, path: str, **options) -> Task:
    """The named task on the data at ``path`` (errors name the path and the expected layout)."""
    builders = {"mnist": mnist_task, "fsdd": fsdd_task, "kws": kws_task, "dcase": dcase_task}
    if name not in builders:
        raise ValueError(f"unknown task {name!r}; expected one of {list(builders)}")
    return builders[name](path, **{k: v for k, v in options.items() if v is not None})


def build_model(architecture: str, task: Task, hidden=None, filters=None):
    """A reference model (``tinyprop_tf.models``) shaped for the task; ``hidden`` (mlp) and ``filters`` (cnn,
    ds_cnn: channels; conv1d: per layer) instead of the defaults."""
    from tinyprop_tf import models

    shape = task.input_shape
    if task.num_classes is None:
        if architecture not in ("autoencoder", "auto"):
            raise ValueError(f"task {task.name!r} trains an autoencoder; use --model autoencoder or a .keras file")
        return models.autoencoder(input_dim=int(np.prod(shape)))
    n = task.num_classes
    builders = {
        "mlp": lambda: models.mlp(input_shape=shape, num_classes=n, hidden=tuple(hidden or (64, 32))),
        "cnn": lambda: models.small_cnn(input_shape=shape, num_classes=n,
                                        **({"filters": (filters, 2 * filters)} if filters else {})),
        "ds_cnn": lambda: models.ds_cnn(input_shape=shape, num_classes=n, filters=filters or 32),
        "conv1d": lambda: models.conv1d_net(input_shape=shape, num_classes=n, filters=tuple(filters or (32, 32))),
    }
    if architecture == "auto":
        architecture = "cnn" if task.name == "mnist" else "ds_cnn"
    if architecture not in builders:
        raise ValueError(f"unknown model {architecture!r}; expected a .keras file or one of {sorted(builders)}")
    return builders[architecture]()
