"""Keep TensorFlow's native start-up chatter off the user's terminal, and nothing else.

TensorFlow's C++ libraries log through absl before anything can configure it: ``TF_CPP_MIN_LOG_LEVEL`` does not
reach the "All log messages before absl::InitializeLog()" warning nor oneDNN's "custom operations are on" line,
and LiteRT prints "Created TensorFlow Lite XNNPACK delegate" when an interpreter is made. Within
``native_stderr_filtered`` file descriptor 2 is a pipe into a small filter process (``python -m
tinyprop_tf._quiet``) that copies every line but these known notices to the real stderr as it arrives. Being a
process of its own, it still passes on what a crashing parent wrote last (an abort, a fatal CPU-feature check).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading

NOTICES = tuple(re.compile(pattern) for pattern in (
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
    r"[IW]\d{4} [\d:.]+ +\d+ (port|cpu_feature_guard)\.cc:\d+\] ",
    r"To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\.$",
    r"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$",
))

_lock = threading.Lock()  # fd 2 is one per process: one filter at a time


def is_notice(line: str) -> bool:
    return any(pattern.match(line) for pattern in NOTICES)


@contextlib.contextmanager
def native_stderr_filtered():
    """Within the block, every write to fd 2 (native code's and Python's) passes the filter process."""
    with _lock:
        try:
            if sys.stderr is not None:
                sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no usable stderr: nothing to keep clean
            yield
            return
        try:
            child = subprocess.Popen([sys.executable, "-m", "tinyprop_tf._quiet"], stdin=subprocess.PIPE,
                                     stdout=saved, stderr=saved, close_fds=True)
        except OSError:
            os.close(saved)
            yield
            return
        os.dup2(child.stdin.fileno(), 2)
        try:
            yield
        finally:
            if sys.stderr is not None:
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            child.stdin.close()
            child.wait()


def _forward(source=None, sink=None) -> None:
    """The filter process: stdin to stdout, line by line, without the notices."""
    source = source or sys.stdin.buffer
    sink = sink or sys.stdout.buffer
    for raw in source:
        if not is_notice(raw.decode(errors="replace").rstrip("\r\n")):
            sink.write(raw)
            sink.flush()


def import_tensorflow():
    """Import TensorFlow and Keras without their start-up notices (idempotent)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "keras" in sys.modules and "tensorflow" in sys.modules:
        return
    with native_stderr_filtered():
        import keras  # noqa: F401  (imports TensorFlow: Keras' backend)
        import tensorflow  # noqa: F401


if __name__ == "__main__":
    _forward()
