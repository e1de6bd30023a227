"""Pieces every loader shares: the error and warning types, the result container, WAV reading, pad/crop,
resampling and the skip-and-count bookkeeping for unreadable files.

Conventions used by all loaders:

- Nothing is ever downloaded; every loader reads files from a path the caller gives.
- A path that does not hold the expected layout raises :class:`DatasetLayoutError` naming the path and
  what was expected.
- One unreadable file (corrupt or truncated WAV, wrong format) never stops a load: it is skipped, listed in
  ``LabeledData.skipped`` and reported in ONE :class:`SkippedFilesWarning` per load. A load that ends with no
  sample at all raises :class:`DatasetLayoutError` instead (listing the first reasons), since an empty data
  set is never what the caller wanted.
"""

from __future__ import annotations

import dataclasses
import math
import os
import struct
import warnings
import wave
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

# How many skipped files a warning or error message names before it says "and N more".
NAMES_IN_MESSAGES = 5


class DatasetLayoutError(ValueError):
    """A data set path is missing, empty, or does not hold the files (or file contents) a loader expects."""


class SkippedFilesWarning(UserWarning):
    """Some files of a data set could not be read and were left out (see ``LabeledData.skipped``)."""


class UnreadableFileError(ValueError):
    """One file cannot be used (bad header, truncated data, unsupported sample format or rate)."""


# Errors that mean "this one file is unusable" rather than "the program is wrong": caught per file.
# wave raises wave.Error for a bad header and EOFError (often with an empty message) for a cut-off header;
# struct.error comes from short chunk fields; OSError from unreadable files (permissions, I/O errors).
_FILE_ERRORS = (UnreadableFileError, wave.Error, EOFError, struct.error, OSError)


@dataclasses.dataclass(frozen=True)
class SkippedFile:
    """A file a loader left out, and why."""

    path: str
    reason: str


@dataclasses.dataclass(frozen=True, eq=False)
class LabeledData:
    """What every array loader returns.

    Attributes:
        x: the samples, one per row (dtype and shape documented by each loader).
        y: ``int32 [N]`` class indices into ``classes``.
        classes: class names; ``classes[y[i]]`` is the name of sample ``i``'s class.
        sample_rate: Hz for audio, ``None`` for images.
        sources: per-sample origin (file name, or ``file@offset`` for a cut-out window), aligned with ``x``;
            empty when the data set has no per-sample file (IDX, embedded MNIST).
        metadata: extra per-sample ``[N]`` arrays documented by each loader (e.g. ``"speaker"``, ``"take"``,
            ``"machine_id"``).
        skipped: the files that could not be read and were left out.

    ``x, y = data`` unpacks the two arrays.
    """

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    sample_rate: int | None = None
    sources: tuple[str, ...] = ()
    metadata: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    skipped: tuple[SkippedFile, ...] = ()

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.x, self.y))

    @property
    def num_skipped(self) -> int:
        """How many unreadable files were left out."""
        return len(self.skipped)

    def __repr__(self) -> str:
        rate = f", sample_rate={self.sample_rate}" if self.sample_rate else ""
        return (f"LabeledData(x={self.x.dtype}{list(self.x.shape)}, y={self.y.dtype}{list(self.y.shape)}, "
                f"classes={len(self.classes)}{rate}, skipped={self.num_skipped})")


# --- paths ------------------------------------------------------------------------------------------------------
def require_dir(path: str | os.PathLike, expected: str) -> Path:
    """``path`` as a Path if it is an existing folder; else DatasetLayoutError saying what was expected."""
    folder = Path(path)
    if not folder.exists():
        raise DatasetLayoutError(f"{folder} does not exist; expected {expected}")
    if not folder.is_dir():
        raise DatasetLayoutError(f"{folder} is not a folder; expected {expected}")
    return folder


def wav_files(folder: Path) -> list[Path]:
    """The ``*.wav`` files directly in ``folder`` (case-insensitive extension), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".wav" and p.is_file())


def describe_folder(folder: Path, limit: int = 8) -> str:
    """A short listing of a folder's entries for error messages ("empty" if it has none)."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "it is empty"
    more = f", … ({len(names)} entries)" if len(names) > limit else ""
    return "it holds " + ", ".join(names[:limit]) + more


# --- WAV --------------------------------------------------------------------------------------------------------
def _pcm_to_float(data: bytes, sample_width: int) -> np.ndarray:
    """Little-endian PCM bytes → float32 in [-1, 1): full scale is 2**(bits-1)."""
    if sample_width == 1:  # 8-bit WAV is unsigned, centred on 128
        return ((np.frombuffer(data, np.uint8).astype(np.float32) - 128.0) / 128.0)
    if sample_width == 2:
        return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
    if sample_width == 3:  # no 24-bit dtype: put each sample in the top 3 bytes of an int32
        padded = np.zeros((len(data) // 3, 4), np.uint8)
        padded[:, 1:] = np.frombuffer(data, np.uint8).reshape(-1, 3)
        return (padded.view("<i4")[:, 0].astype(np.float64) / 2.0**31).astype(np.float32)
    if sample_width == 4:
        return (np.frombuffer(data, "<i4").astype(np.float64) / 2.0**31).astype(np.float32)
    raise UnreadableFileError(f"unsupported sample width {8 * sample_width} bits (expected 8/16/24/32-bit PCM)")


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a PCM WAV file with the ``wave`` module.

    Returns ``(samples, sample_rate)``: ``samples`` is float32 ``[num_frames]`` in [-1, 1) (8-bit unsigned,
    16/24/32-bit signed PCM, divided by full scale). Multichannel files are averaged over channels (so no side
    of a stereo recording is lost). Raises :class:`UnreadableFileError` (or ``wave.Error``/``EOFError``) for a
    file with no samples, truncated sample data (fewer bytes than the header announces) or a format ``wave``
    cannot read (float or WAVE_FORMAT_EXTENSIBLE files on Python 3.11).
    """
    with wave.open(os.fspath(path), "rb") as reader:
        channels, width = reader.getnchannels(), reader.getsampwidth()
        announced = reader.getnframes()
        data = reader.readframes(announced)
        rate = reader.getframerate()
    frames = len(data) // (channels * width)
    if frames < announced:
        raise UnreadableFileError(f"truncated: header announces {announced} frames, file holds {frames}")
    if frames == 0:
        raise UnreadableFileError("no samples")
    samples = _pcm_to_float(data[: frames * channels * width], width).reshape(frames, channels)
    return (samples[:, 0] if channels == 1 else samples.mean(axis=1, dtype=np.float32)), rate


def read_wav_at_rate(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """``read_wav`` samples, or UnreadableFileError if the file is not at ``sample_rate`` Hz.

    A data set's clips all share one rate; a file at another rate is a stray, not something to convert silently.
    """
    samples, rate = read_wav(path)
    if rate != sample_rate:
        raise UnreadableFileError(f"sample rate {rate} Hz, expected {sample_rate} Hz")
    return samples


def fit_length(samples: np.ndarray, num_samples: int) -> np.ndarray:
    """Pad (zeros at the end) or crop (keep the centre) a ``[n]`` waveform to exactly ``num_samples``.

    Zeros go at the end, as TensorFlow's speech_commands reader does; a long clip keeps its centre because
    trimmed recordings (FSDD) have the word in the middle, not at the start.
    """
    length = samples.shape[0]
    if length >= num_samples:
        start = (length - num_samples) // 2
        return samples[start: start + num_samples]
    return np.pad(samples, (0, num_samples - length))


def samples_for(seconds: float, sample_rate: int) -> int:
    """Number of samples in ``seconds`` at ``sample_rate`` (must be a positive whole number)."""
    count = seconds * sample_rate
    if not count > 0 or abs(count - round(count)) > 1e-6:
        raise ValueError(f"{seconds} s at {sample_rate} Hz is not a positive whole number of samples")
    return int(round(count))


def resample(waveforms: np.ndarray, from_rate: int, to_rate: int, chunk: int = 256) -> np.ndarray:
    """Resample ``[N, n]`` float32 waveforms along axis 1 with ``scipy.signal.resample_poly``.

    The result is float32 ``[N, ceil(n * to_rate / from_rate)]``, clipped to [-1, 1] (the anti-aliasing filter can
    overshoot full scale slightly). Rows are processed ``chunk`` at a time because resample_poly works in float64.
    """
    if from_rate == to_rate:
        return waveforms
    from scipy.signal import resample_poly  # scipy only needed when resampling

    divisor = math.gcd(int(from_rate), int(to_rate))
    up, down = to_rate // divisor, from_rate // divisor
    out_length = -(-waveforms.shape[1] * up // down)
    out = np.empty((waveforms.shape[0], out_length), np.float32)
    for start in range(0, waveforms.shape[0], chunk):
        block = resample_poly(waveforms[start: start + chunk], up, down, axis=1)
        out[start: start + chunk] = np.clip(block, -1.0, 1.0)
    return out


# --- skip and count ---------------------------------------------------------------------------------------------
def _reason(error: BaseException) -> str:
    message = str(error).strip()
    if isinstance(error, EOFError):
        return "file ends early" + (f" ({message})" if message else "")
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return message or type(error).__name__


class SkipLog:
    """Collects the files one load could not use, and reports them in one warning.

    ``attempt(read, path, ...)`` calls ``read`` and returns its result, or records ``(path, reason)`` and
    returns None when the file is unusable. Paths are shown relative to ``root`` in messages.
    """

    def __init__(self, dataset: str, root: str | os.PathLike):
        self.dataset = dataset
        self.root = Path(root)
        self.entries: list[SkippedFile] = []

    def _name(self, path: str | os.PathLike) -> str:
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return os.fspath(path)

    def add(self, path: str | os.PathLike, reason: str) -> None:
        self.entries.append(SkippedFile(self._name(path), reason))

    def attempt(self, read: Callable, path: str | os.PathLike, *args):
        try:
            return read(path, *args)
        except _FILE_ERRORS as error:
            self.add(path, _reason(error))
            return None

    def summary(self) -> str:
        """The first few entries as ``a.wav (reason), b.wav (reason) and 3 more``."""
        shown = ", ".join(f"{e.path} ({e.reason})" for e in self.entries[:NAMES_IN_MESSAGES])
        rest = len(self.entries) - NAMES_IN_MESSAGES
        return shown + (f" and {rest} more" if rest > 0 else "")

    def warn(self, stacklevel: int = 3) -> None:
        """One SkippedFilesWarning naming the first few files and the count (nothing if none was skipped).

        The default stacklevel points at the code that called the public loader which calls ``warn``.
        """
        if self.entries:
            warnings.warn(
                SkippedFilesWarning(f"{self.dataset}: skipped {len(self.entries)} unreadable file(s) in "
                                    f"{self.root}: {self.summary()}"),
                stacklevel=stacklevel,
            )

    def require_samples(self, count: int, expected: str) -> None:
        """DatasetLayoutError if a load produced no sample at all (with the skip reasons, if any)."""
        if count == 0:
            because = f"; every file was unreadable: {self.summary()}" if self.entries else ""
            raise DatasetLayoutError(f"{self.dataset}: no samples in {self.root}; expected {expected}{because}")

    def as_tuple(self) -> tuple[SkippedFile, ...]:
        return tuple(self.entries)


def read_clips(paths: Sequence[Path], sample_rate: int, num_samples: int,
               skipped: SkipLog) -> tuple[np.ndarray, list[int]]:
    """Read WAV files at ``sample_rate`` into one float32 ``[kept, num_samples]`` array (``fit_length``).

    Unreadable files are recorded in ``skipped`` and left out; returns ``(waveforms, kept)`` where ``kept``
    lists the indices into ``paths`` of the rows, in order.
    """
    # Preallocate rather than stack a list: big splits (Speech Commands train) would need twice the memory.
    waveforms = np.zeros((len(paths), num_samples), np.float32)
    kept: list[int] = []
    for index, path in enumerate(paths):
        samples = skipped.attempt(read_wav_at_rate, path, sample_rate)
        if samples is not None:
            waveforms[len(kept)] = fit_length(samples, num_samples)
            kept.append(index)
    return waveforms[: len(kept)], kept


def check_choice(name: str, value, choices: Iterable) -> None:
    """ValueError unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
