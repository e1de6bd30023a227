"""Google Speech Commands (v0.01 / v0.02) from its official on-disk layout, in the usual 12-class KWS setup.

Layout (the extracted archive; nothing is downloaded)::

    <root>/<label>/<speaker>_nohash_<n>.wav     1 s or shorter, 16 kHz, 16-bit mono
    <root>/validation_list.txt                  paths relative to <root>, e.g. "yes/0a7c2a8d_nohash_0.wav"
    <root>/testing_list.txt
    <root>/_background_noise_/*.wav             long noise recordings (white/pink noise, running tap, …)

Classes: ``("_silence_", "_unknown_", *words)`` with ``words`` = yes no up down left right on off stop go by
default (the order TensorFlow's speech_commands scripts and the TFLM micro_speech model use).

- A word clip's split is ``validation`` if its path is in validation_list.txt, ``test`` if in testing_list.txt,
  else ``train``.
- ``_unknown_``: clips of every other word in the split, subsampled to ``unknown_fraction`` of them
  (``round(fraction × count)`` clips, chosen with ``seed``).
- ``_silence_``: ``num_silence`` 1 s windows cut at random (``seed``) from the background-noise clips, as they
  are (no volume scaling). Each split cuts from its own time range of every noise clip (train the first 80 %,
  validation the next 10 %, test the last 10 %), so no noise audio appears in two splits.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._common import (DatasetLayoutError, LabeledData, SkipLog, check_choice, read_clips, read_wav_at_rate,
                      require_dir, wav_files)

SPEECH_COMMANDS_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SILENCE_LABEL = "_silence_"
UNKNOWN_LABEL = "_unknown_"
BACKGROUND_NOISE_DIR = "_background_noise_"
SPEECH_COMMANDS_SAMPLE_RATE = 16000
CLIP_SAMPLES = 16000  # 1 s at 16 kHz
SPLITS = ("train", "validation", "test")
SPLIT_LISTS = {"validation": "validation_list.txt", "test": "testing_list.txt"}
# Share of each background-noise clip a split cuts its silence from: disjoint, so splits share no noise audio.
NOISE_SHARE = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}

_EXPECTED = (f"<root>/<label>/*.wav folders with validation_list.txt and testing_list.txt "
             f"(and {BACKGROUND_NOISE_DIR}/*.wav for silence)")


def load_speech_commands(root: str | os.PathLike, split: str = "train", *,
                         words: tuple[str, ...] = SPEECH_COMMANDS_WORDS, unknown_fraction: float = 0.1,
                         num_silence: int | None = None, seed: int = 0) -> LabeledData:
    """Load one split of Speech Commands as 1 s clips at 16 kHz.

    Args:
        root: the extracted data set folder.
        split: ``"train"``, ``"validation"`` or ``"test"`` (see the module docstring).
        words: the target words; each needs a ``<root>/<word>/`` folder.
        unknown_fraction: share of the split's other-word clips kept as ``_unknown_`` (0 to 1).
        num_silence: number of ``_silence_`` windows; None: as many as the split's target words have clips on
            average (TensorFlow's default of 10 % silence with its 10 words).
        seed: seeds the ``_unknown_`` subsample and the silence windows (each split uses its own stream).

    Returns:
        LabeledData with ``x`` float32 ``[N, 16000]`` in [-1, 1) (shorter clips zero-padded at the end, longer
        ones cropped to their centre second),
        ``y`` int32 ``[N]`` indices into ``classes = ("_silence_", "_unknown_", *words)``, ``sample_rate``
        16000 and ``sources`` (``<label>/<file>.wav``, or ``_background_noise_/<file>.wav@<offset>`` for
        silence). Rows come in order: target words (sorted by path), unknown (sorted), silence; not shuffled.
        Listed files missing from disk and unreadable files are skipped and reported in one warning.
    """
    check_choice("split", split, SPLITS)
    _check_options(words, unknown_fraction, num_silence)
    folder = require_dir(root, _EXPECTED)
    labels = _label_folders(folder)
    missing_words = [w for w in words if w not in labels]
    if missing_words:
        raise DatasetLayoutError(
            f"no <root>/<word>/*.wav folder for {', '.join(missing_words)} in {folder}; "
            f"label folders found: {', '.join(sorted(labels))}")
    skipped = SkipLog("Speech Commands", folder)
    clips = _split_clips(folder, labels, split, skipped)
    word_clips = [c for c in clips if c.split("/")[0] in words]
    other_clips = [c for c in clips if c.split("/")[0] not in words]
    split_index = SPLITS.index(split)
    unknown_clips = _subsample(other_clips, unknown_fraction, np.random.default_rng([seed, split_index, 0]))
    num_silence = round(len(word_clips) / len(words)) if num_silence is None else int(num_silence)

    classes = (SILENCE_LABEL, UNKNOWN_LABEL, *words)  # the order TensorFlow's speech_commands scripts use
    to_read = word_clips + unknown_clips
    waveforms, kept = read_clips([folder / c for c in to_read], SPEECH_COMMANDS_SAMPLE_RATE, CLIP_SAMPLES, skipped)
    names = [to_read[i] for i in kept]
    silence, silence_sources = _cut_silence(folder, split, num_silence,
                                            np.random.default_rng([seed, split_index, 1]), skipped)
    skipped.require_samples(len(names) + len(silence), _EXPECTED)
    skipped.warn()
    class_indices = [_class_index(name, classes) for name in names] + [classes.index(SILENCE_LABEL)] * len(silence)
    return LabeledData(
        x=np.concatenate([waveforms, silence]) if len(silence) else waveforms,
        y=np.array(class_indices, np.int32),
        classes=classes,
        sample_rate=SPEECH_COMMANDS_SAMPLE_RATE,
        sources=tuple(names + silence_sources),
        skipped=skipped.as_tuple(),
    )


def _check_options(words, unknown_fraction, num_silence) -> None:
    if isinstance(words, str) or not words or len(set(words)) != len(words) or {SILENCE_LABEL, UNKNOWN_LABEL} & set(words):
        raise ValueError(f"words must be distinct word labels (not {SILENCE_LABEL}/{UNKNOWN_LABEL}); got {words!r}")
    if not 0.0 <= unknown_fraction <= 1.0:
        raise ValueError(f"unknown_fraction must be between 0 and 1, got {unknown_fraction!r}")
    if num_silence is not None and (isinstance(num_silence, bool) or int(num_silence) != num_silence
                                    or num_silence < 0):
        raise ValueError(f"num_silence must be a whole number >= 0 or None, got {num_silence!r}")


def _label_folders(folder: Path) -> set[str]:
    """Names of the ``<root>/<label>/`` folders holding WAV files; DatasetLayoutError if the layout is wrong."""
    missing_lists = [name for name in SPLIT_LISTS.values() if not (folder / name).is_file()]
    labels = {p.name for p in folder.iterdir()
              if p.is_dir() and p.name != BACKGROUND_NOISE_DIR and wav_files(p)}
    problems = (["no <label>/*.wav folder"] if not labels else []) + [f"no {name}" for name in missing_lists]
    if problems:
        raise DatasetLayoutError(f"expected {_EXPECTED}; found {' and '.join(problems)} in {folder}")
    return labels


def _class_index(clip: str, classes: tuple[str, ...]) -> int:
    """Index of a ``<label>/<file>.wav`` clip's class: its word, or ``_unknown_`` for any other label."""
    label = clip.split("/")[0]
    return classes.index(label) if label in classes[2:] else classes.index(UNKNOWN_LABEL)


def _read_list(folder: Path, name: str) -> set[str]:
    """The relative paths listed in a split file (``/``-separated, blank lines ignored)."""
    lines = (folder / name).read_text(encoding="utf-8").splitlines()
    return {line.strip().replace("\\", "/") for line in lines if line.strip()}


def _split_clips(folder: Path, labels: set[str], split: str, skipped: SkipLog) -> list[str]:
    """Sorted relative paths of the word clips in ``split``; listed-but-missing files are recorded as skipped."""
    listed = {name: _read_list(folder, file) for name, file in SPLIT_LISTS.items()}
    on_disk = {f"{label}/{p.name}" for label in labels for p in wav_files(folder / label)}
    if split == "train":
        return sorted(on_disk - listed["validation"] - listed["test"])
    for missing in sorted(listed[split] - on_disk):
        skipped.add(folder / missing, f"listed in {SPLIT_LISTS[split]} but not found")
    return sorted(listed[split] & on_disk)


def _subsample(names: list[str], fraction: float, rng: np.random.Generator) -> list[str]:
    """``round(fraction × len(names))`` of ``names``, chosen by ``rng``, in their original (sorted) order."""
    count = round(fraction * len(names))
    chosen = rng.choice(len(names), size=count, replace=False) if count else []
    return [names[i] for i in sorted(chosen)]


def _cut_silence(folder: Path, split: str, count: int, rng: np.random.Generator,
                 skipped: SkipLog) -> tuple[np.ndarray, list[str]]:
    """``count`` 1 s windows from this split's share of the noise clips: ``(float32 [count, 16000], sources)``.

    A window's clip is drawn with probability proportional to the number of window positions it offers, so
    every position in every clip is equally likely.
    """
    if count == 0:
        return np.zeros((0, CLIP_SAMPLES), np.float32), []
    noise_dir = folder / BACKGROUND_NOISE_DIR
    if not noise_dir.is_dir() or not wav_files(noise_dir):
        raise DatasetLayoutError(f"{count} silence clips requested but {noise_dir} holds no *.wav noise "
                                 f"recordings; pass num_silence=0 or add {BACKGROUND_NOISE_DIR}/*.wav")
    ranges = []  # (name, samples, first offset, number of offsets)
    for path in wav_files(noise_dir):
        noise = skipped.attempt(read_wav_at_rate, path, SPEECH_COMMANDS_SAMPLE_RATE)
        if noise is None:
            continue
        start, stop = (int(share * len(noise)) for share in NOISE_SHARE[split])
        positions = stop - start - CLIP_SAMPLES + 1
        if positions > 0:
            ranges.append((f"{BACKGROUND_NOISE_DIR}/{path.name}", noise, start, positions))
    if not ranges:
        low, high = NOISE_SHARE[split]
        raise DatasetLayoutError(
            f"no readable noise clip in {noise_dir} is long enough to cut 1 s of {split} silence from its "
            f"{low:.0%}-{high:.0%} share (needs clips of at least {CLIP_SAMPLES / (high - low) / 16000:.0f} s)")
    weights = np.array([r[3] for r in ranges], np.float64)
    clip_choice = rng.choice(len(ranges), size=count, p=weights / weights.sum())
    windows = np.empty((count, CLIP_SAMPLES), np.float32)
    sources = []
    for row, index in enumerate(clip_choice):
        name, noise, start, positions = ranges[index]
        offset = start + int(rng.integers(positions))
        windows[row] = noise[offset: offset + CLIP_SAMPLES]
        sources.append(f"{name}@{offset}")
    return windows, sources
