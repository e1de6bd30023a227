"""DCASE2020 Task 2 (unsupervised anomalous machine-sound detection) from its on-disk layout.

Layout (the extracted dev/eval archives; nothing is downloaded)::

    <root>/<machine>/train/normal_id_XX_NNNNNNNN.wav             only normal sounds
    <root>/<machine>/test/{normal,anomaly}_id_XX_NNNNNNNN.wav    labels in the names

with machines fan, pump, slider, valve (MIMII) and ToyCar, ToyConveyor (ToyADMOS), 16 kHz mono 16-bit, about
10 s per clip (≈ 640 KB of float32 each, so ``iter_dcase`` streams one file at a time). Labels: 0 normal,
1 anomaly; ``machine_id`` is the ``XX`` of ``id_XX`` (one model is usually trained per machine type and scored
per id).

The classic (baseline) model input: log-mel frames (128 mels, 1024-sample frames, hop 512) stacked five at a
time into 640-dim vectors: :func:`context_vectors` / :func:`stack_frames`. Evaluation: :func:`roc_auc` per
machine id on per-file anomaly scores.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ._common import (DatasetLayoutError, LabeledData, SkipLog, SkippedFile, check_choice, read_clips,
                      read_wav_at_rate, require_dir, samples_for, wav_files)

DCASE_SAMPLE_RATE = 16000
DCASE_MACHINES = ("fan", "pump", "slider", "valve", "ToyCar", "ToyConveyor")
DCASE_CLASSES = ("normal", "anomaly")
DCASE_SPLITS = ("train", "test")
_FILE_NAME = re.compile(r"^(normal|anomaly)_id_(\d+)_.*\.wav$", re.IGNORECASE)
_EXPECTED = "<root>/<machine>/train/normal_id_XX_*.wav and <root>/<machine>/test/{normal,anomaly}_id_XX_*.wav"


@dataclasses.dataclass(frozen=True)
class DcaseFile:
    """One clip as named on disk: ``label`` 0 normal / 1 anomaly, ``machine_id`` from ``id_XX``."""

    path: Path
    machine_id: int
    label: int


@dataclasses.dataclass(frozen=True)
class DcaseClip:
    """One clip as read: ``waveform`` float32 ``[samples]`` in [-1, 1) at ``sample_rate`` (native length)."""

    waveform: np.ndarray
    sample_rate: int
    machine_id: int
    label: int
    path: Path


def list_dcase(root: str | os.PathLike, machine: str, split: str = "train", *,
               machine_ids: Iterable[int] | None = None, skipped: SkipLog | None = None) -> list[DcaseFile]:
    """The clips of ``<root>/<machine>/<split>/`` (sorted by name), optionally only some machine ids.

    Misnamed ``.wav`` files are recorded in ``skipped`` (if given). DatasetLayoutError if the folder is
    missing or holds no ``{normal,anomaly}_id_XX_*.wav`` clip.
    """
    check_choice("split", split, DCASE_SPLITS)
    folder = _split_dir(root, machine, split)
    files = []
    for path in wav_files(folder):
        match = _FILE_NAME.match(path.name)
        if match:
            files.append(DcaseFile(path, int(match[2]), DCASE_CLASSES.index(match[1].lower())))
        elif skipped is not None:
            skipped.add(path, "name is not {normal,anomaly}_id_XX_*.wav")
    if not files:
        raise DatasetLayoutError(f"expected {_EXPECTED}; found no such clip in {folder}")
    if machine_ids is not None:
        wanted = set(machine_ids)
        available = sorted({f.machine_id for f in files})
        if not wanted & set(available):
            raise ValueError(f"machine_ids {sorted(wanted)} not in {folder}; available: {available}")
        files = [f for f in files if f.machine_id in wanted]
    return files


def _split_dir(root, machine: str, split: str) -> Path:
    folder = require_dir(root, _EXPECTED)
    if not (folder / machine).is_dir():
        machines = sorted(p.name for p in folder.iterdir() if (p / "train").is_dir() or (p / "test").is_dir())
        raise DatasetLayoutError(f"expected {_EXPECTED}; found no folder {machine!r} in {folder} "
                                 f"(machine folders there: {', '.join(machines) or 'none'})")
    return require_dir(folder / machine / split, _EXPECTED)


class DcaseClips:
    """Iterable over the clips of one machine and split, reading one file per step (real clips are large).

    ``files`` lists what will be read (``len()`` is its length). Iterating yields :class:`DcaseClip` objects;
    unreadable files are skipped and, when an iteration finishes, reported in one warning and kept in
    ``skipped`` (a tuple of SkippedFile, reset on every iteration).
    """

    def __init__(self, files: list[DcaseFile], root: Path, misnamed: tuple[SkippedFile, ...] = ()):
        self.files = files
        self.root = root
        self.sample_rate = DCASE_SAMPLE_RATE
        self._misnamed = misnamed  # found while listing; reported with each iteration's unreadable files
        self.skipped: tuple[SkippedFile, ...] = ()

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[DcaseClip]:
        log = SkipLog("DCASE2020 Task 2", self.root)
        log.entries.extend(self._misnamed)
        for file in self.files:
            waveform = log.attempt(read_wav_at_rate, file.path, self.sample_rate)
            if waveform is not None:
                yield DcaseClip(waveform, self.sample_rate, file.machine_id, file.label, file.path)
        self.skipped = log.as_tuple()
        log.warn(stacklevel=3)  # 3: the frame that advanced this generator (the for loop)


def iter_dcase(root: str | os.PathLike, machine: str, split: str = "train", *,
               machine_ids: Iterable[int] | None = None) -> DcaseClips:
    """Stream the clips of ``<root>/<machine>/<split>/`` one file at a time (see :class:`DcaseClips`)."""
    misnamed = SkipLog("DCASE2020 Task 2", Path(root))
    files = list_dcase(root, machine, split, machine_ids=machine_ids, skipped=misnamed)
    return DcaseClips(files, Path(root), misnamed.as_tuple())


def load_dcase(root: str | os.PathLike, machine: str, split: str = "train", *,
               machine_ids: Iterable[int] | None = None, clip_seconds: float = 10.0) -> LabeledData:
    """Load all clips of one machine type and split into memory (≈ 640 KB per 10 s clip).

    Returns:
        LabeledData with ``x`` float32 ``[N, clip_seconds × 16000]`` in [-1, 1) (padded with zeros at the end /
        cropped around the centre), ``y`` int32 ``[N]`` (0 normal, 1 anomaly; ``classes`` ("normal",
        "anomaly")), ``sample_rate`` 16000, ``sources`` (file names) and ``metadata["machine_id"]`` int32
        ``[N]``. Rows are sorted by file name.
    """
    root_dir = Path(root)
    skipped = SkipLog("DCASE2020 Task 2", root_dir)
    files = list_dcase(root, machine, split, machine_ids=machine_ids, skipped=skipped)
    num_samples = samples_for(clip_seconds, DCASE_SAMPLE_RATE)
    waveforms, kept = read_clips([f.path for f in files], DCASE_SAMPLE_RATE, num_samples, skipped)
    files = [files[i] for i in kept]
    skipped.require_samples(len(files), _EXPECTED)
    skipped.warn()
    return LabeledData(
        x=waveforms,
        y=np.array([f.label for f in files], np.int32),
        classes=DCASE_CLASSES,
        sample_rate=DCASE_SAMPLE_RATE,
        sources=tuple(f.path.name for f in files),
        metadata={"machine_id": np.array([f.machine_id for f in files], np.int32)},
        skipped=skipped.as_tuple(),
    )


# --- features ---------------------------------------------------------------------------------------------------
def default_log_mel(waveform: np.ndarray, sample_rate: int, *, n_mels: int = 128, frame_length: int = 1024,
                    hop_length: int = 512) -> np.ndarray:
    """The project's audio front end with the DCASE preset: ``[frames, n_mels]`` float32 natural-log mel power.

    ``tinyprop_tf.audio.log_mel`` with ``LogMelConfig.dcase_16k`` (Hann-windowed 1024-sample frames, hop 512,
    128 HTK mel bands over the power spectrum, ``log(mel + 1e-10)``), so host training and the exported front
    end compute the same numbers. The DCASE2020 baseline uses librosa's Slaney bands and dB; the features differ
    by band shapes and a constant factor, not in kind. Frames are not centred (``1 + (n - frame_length) //
    hop_length`` of them).
    """
    from tinyprop_tf import audio  # imports TensorFlow: only for this default front end

    config = default_log_mel_config(sample_rate, n_mels=n_mels, frame_length=frame_length, hop_length=hop_length)
    return audio.log_mel(np.asarray(waveform, np.float32)[None, :], config).numpy()[0]


def default_log_mel_config(sample_rate: int, *, n_mels: int = 128, frame_length: int = 1024, hop_length: int = 512):
    """The ``LogMelConfig`` of :func:`default_log_mel` (what a device front end must reproduce)."""
    from tinyprop_tf import audio

    return audio.LogMelConfig.dcase_16k(sample_rate=sample_rate, n_mels=n_mels, frame_length=frame_length,
                                        hop_length=hop_length, fft_length=frame_length, f_max=sample_rate / 2)


def stack_frames(frames: np.ndarray, n_frames: int = 5) -> np.ndarray:
    """Concatenate each run of ``n_frames`` consecutive frames: ``[T, M]`` → float32 ``[T - n_frames + 1,
    n_frames × M]``, where row ``t`` is ``frames[t], frames[t + 1], …, frames[t + n_frames - 1]`` (the DCASE
    baseline's layout). ValueError if there are fewer than ``n_frames`` frames.
    """
    frames = np.asarray(frames, np.float32)
    if frames.ndim != 2:
        raise ValueError(f"frames must be [frames, features], got shape {frames.shape}")
    if isinstance(n_frames, bool) or int(n_frames) != n_frames or n_frames < 1:
        raise ValueError(f"n_frames must be a whole number >= 1, got {n_frames!r}")
    if frames.shape[0] < n_frames:
        raise ValueError(f"{frames.shape[0]} frames are fewer than n_frames={n_frames}; use a longer clip")
    # sliding_window_view gives [T - n + 1, M, n]; move the window axis before the features, then flatten.
    windows = np.lib.stride_tricks.sliding_window_view(frames, n_frames, axis=0)
    return np.ascontiguousarray(windows.transpose(0, 2, 1)).reshape(windows.shape[0], -1)


def context_vectors(waveform: np.ndarray, sample_rate: int = DCASE_SAMPLE_RATE, *,
                    features: Callable[[np.ndarray, int], np.ndarray] = default_log_mel,
                    n_frames: int = 5) -> np.ndarray:
    """One clip's model inputs: ``stack_frames(features(waveform, sample_rate), n_frames)``.

    ``features(waveform, sample_rate) -> [frames, mels]`` is the audio front end (default
    :func:`default_log_mel`); with 128 mels and 5 frames the result is float32 ``[vectors, 640]``.
    """
    return stack_frames(np.asarray(features(waveform, sample_rate)), n_frames)


# --- evaluation -------------------------------------------------------------------------------------------------
def roc_auc(labels, scores) -> float:
    """Area under the ROC curve of ``scores`` (higher = more anomalous) for binary ``labels`` (1 anomaly).

    Computed as the Mann-Whitney U statistic with average ranks for ties, i.e. the probability that a random
    anomaly scores higher than a random normal clip, ties counting one half; equals
    ``sklearn.metrics.roc_auc_score``. ValueError unless both classes are present and scores are finite.
    """
    labels = np.asarray(labels).ravel()
    scores = np.asarray(scores, np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels and scores differ in length: {labels.size} vs {scores.size}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (normal) or 1 (anomaly)")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    positive = labels == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs both normal (0) and anomaly (1) labels")
    _, group, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # 1-based rank of a group of tied scores = the mean of the positions it occupies.
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum = average_rank[group.ravel()][positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
