"""Free Spoken Digit Dataset (FSDD) from its on-disk layout, with take and speaker splits.

Layout: ``<root>/recordings/{digit}_{speaker}_{take}.wav`` (the repository checkout) or the ``recordings/``
folder itself; 8 kHz mono 16-bit clips of 0.14-1.3 s. The 2,500-clip release has speakers george, jackson,
lucas, nicolas and yweweler, each saying every digit 50 times (takes 0-49); speakers are discovered from the
file names, so later releases with more speakers work too.

Splits: the conventional one is by take, takes 0-4 for test and 5-49 for train (``FSDD_TEST_TAKES`` /
``FSDD_TRAIN_TAKES``). ``speaker_split`` adds the on-device personalization setup: pretrain on the other
speakers, fine-tune on a new speaker's train takes, test on that speaker's test takes.

Clips are padded with zeros at the end / cropped around the centre to ``clip_seconds`` (default 1 s, which
crops 16 of the 2,500 clips, the longest by 0.15 s on each side), optionally resampled to another rate.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np

from ._common import (DatasetLayoutError, LabeledData, SkipLog, read_clips, require_dir, resample, samples_for,
                      wav_files)

FSDD_SAMPLE_RATE = 8000
FSDD_CLASSES = tuple("0123456789")
FSDD_TEST_TAKES = range(0, 5)
FSDD_TRAIN_TAKES = range(5, 50)
_FILE_NAME = re.compile(r"^(\d)_([^_]+)_(\d+)\.wav$", re.IGNORECASE)
_EXPECTED = "<root>/recordings/{digit}_{speaker}_{take}.wav (or the recordings/ folder itself)"


@dataclasses.dataclass(frozen=True)
class FsddClip:
    """One recording as named on disk."""

    path: Path
    digit: int
    speaker: str
    take: int


class SpeakerSplit(NamedTuple):
    """``speaker_split``'s result; each part is a :class:`LabeledData` from :func:`load_fsdd`."""

    pretrain: LabeledData  # the other speakers
    finetune: LabeledData  # the new speaker's train takes
    test: LabeledData  # the new speaker's test takes


def recordings_dir(root: str | os.PathLike) -> Path:
    """The folder holding the clips: ``<root>/recordings`` if it exists, else ``root`` if it holds clips."""
    folder = require_dir(root, _EXPECTED)
    if (folder / "recordings").is_dir():
        folder = folder / "recordings"
    if not any(_FILE_NAME.match(p.name) for p in wav_files(folder)):
        raise DatasetLayoutError(f"expected {_EXPECTED}; found no such clip in {folder}")
    return folder


def list_fsdd(root: str | os.PathLike, skipped: SkipLog | None = None) -> list[FsddClip]:
    """Every clip whose name parses, sorted by (speaker, digit, take); misnamed ``.wav`` files go to ``skipped``."""
    folder = recordings_dir(root)
    clips = []
    for path in wav_files(folder):
        match = _FILE_NAME.match(path.name)
        if match:
            clips.append(FsddClip(path, int(match[1]), match[2], int(match[3])))
        elif skipped is not None:
            skipped.add(path, "name is not {digit}_{speaker}_{take}.wav")
    return sorted(clips, key=lambda c: (c.speaker, c.digit, c.take))


def load_fsdd(root: str | os.PathLike, *, speakers: Iterable[str] | None = None, takes: Iterable[int] | None = None,
              sample_rate: int = FSDD_SAMPLE_RATE, clip_seconds: float = 1.0) -> LabeledData:
    """Load the FSDD clips of the chosen speakers and takes.

    Args:
        root: the FSDD checkout or its ``recordings/`` folder.
        speakers: speaker names to keep (None: all); a name not in the data raises ValueError.
        takes: take numbers to keep (None: all), e.g. ``FSDD_TRAIN_TAKES`` (5-49) or ``FSDD_TEST_TAKES`` (0-4).
        sample_rate: output rate in Hz; 8000 is the native rate, others are resampled (scipy's resample_poly).
        clip_seconds: every clip is padded/cropped to this duration.

    Returns:
        LabeledData with ``x`` float32 ``[N, clip_seconds × sample_rate]`` in [-1, 1], ``y`` int32 ``[N]`` digits
        (``classes`` "0".."9"), ``sample_rate``, ``sources`` (file names) and ``metadata["speaker"]`` (str
        ``[N]``) and ``metadata["take"]`` (int32 ``[N]``). Rows are sorted by (speaker, digit, take).
    """
    skipped = SkipLog("FSDD", recordings_dir(root))
    clips = _select(list_fsdd(root, skipped), speakers, takes)
    native_samples = samples_for(clip_seconds, FSDD_SAMPLE_RATE)
    output_samples = samples_for(clip_seconds, sample_rate)
    waveforms, kept = read_clips([c.path for c in clips], FSDD_SAMPLE_RATE, native_samples, skipped)
    clips = [clips[i] for i in kept]
    skipped.require_samples(len(clips), _EXPECTED)
    skipped.warn()
    # Fix the length at the native rate, then resample: the output length is exact for whole-sample durations.
    waveforms = resample(waveforms, FSDD_SAMPLE_RATE, sample_rate)[:, :output_samples]
    return LabeledData(
        x=waveforms,
        y=np.array([c.digit for c in clips], np.int32),
        classes=FSDD_CLASSES,
        sample_rate=sample_rate,
        sources=tuple(c.path.name for c in clips),
        metadata={"speaker": np.array([c.speaker for c in clips]),
                  "take": np.array([c.take for c in clips], np.int32)},
        skipped=skipped.as_tuple(),
    )


def speaker_split(root: str | os.PathLike, new_speaker: str = "yweweler", *,
                  test_takes: Iterable[int] = FSDD_TEST_TAKES, pretrain_takes: Iterable[int] | None = None,
                  sample_rate: int = FSDD_SAMPLE_RATE, clip_seconds: float = 1.0) -> SpeakerSplit:
    """Pretrain / fine-tune / test sets for personalizing a digit model to ``new_speaker``.

    - ``pretrain``: every other speaker, takes ``pretrain_takes`` (None: all 50; their test takes are never
      used to evaluate the new speaker, so nothing leaks);
    - ``finetune``: ``new_speaker``'s takes not in ``test_takes`` (5-49 by default, 450 clips);
    - ``test``: ``new_speaker``'s ``test_takes`` (0-4 by default, 50 clips).

    Each part is a :class:`LabeledData` as :func:`load_fsdd` returns (same rate and clip length).
    """
    clips = list_fsdd(root)
    all_speakers = sorted({c.speaker for c in clips})
    _check_known("new_speaker", [new_speaker], all_speakers)
    test_takes = sorted(set(test_takes))
    new_speaker_takes = sorted({c.take for c in clips if c.speaker == new_speaker} - set(test_takes))
    options = dict(sample_rate=sample_rate, clip_seconds=clip_seconds)
    others = [s for s in all_speakers if s != new_speaker]
    if not others:
        raise DatasetLayoutError(f"{recordings_dir(root)} holds only speaker {new_speaker}: nobody to pretrain on")
    return SpeakerSplit(
        pretrain=load_fsdd(root, speakers=others, takes=pretrain_takes, **options),
        finetune=load_fsdd(root, speakers=[new_speaker], takes=new_speaker_takes, **options),
        test=load_fsdd(root, speakers=[new_speaker], takes=test_takes, **options),
    )


def _check_known(name: str, requested: list, available: list) -> None:
    unknown = [value for value in requested if value not in available]
    if unknown:
        raise ValueError(f"{name}: {', '.join(map(str, unknown))} not in the data; available: "
                         f"{', '.join(map(str, available))}")


def _select(clips: list[FsddClip], speakers, takes) -> list[FsddClip]:
    """The clips of ``speakers`` and ``takes`` (None: all); ValueError for unknown speakers or an empty result."""
    if speakers is not None:
        speakers = [speakers] if isinstance(speakers, str) else list(speakers)
        _check_known("speakers", speakers, sorted({c.speaker for c in clips}))
        clips = [c for c in clips if c.speaker in speakers]
    if takes is not None:
        takes = set(takes)
        clips = [c for c in clips if c.take in takes]
    if not clips:
        raise ValueError(f"no FSDD clip matches speakers={speakers}, takes={sorted(takes) if takes else takes}")
    return clips
