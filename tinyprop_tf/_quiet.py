"""Keep TensorFlow's native start-up chatter off the user's terminal, and nothing else.

TensorFlow's C++ libraries log through absl before anything can configure it: ``TF_CPP_MIN_LOG_LEVEL`` does not
reach the "All log messages before absl::InitializeLog()" warning nor oneDNN's "custom operations are on" line,
and LiteRT prints "Created TensorFlow Lite XNNPACK delegate" when an interpreter is made. ``native_stderr_filtered``
points file descriptor 2 at a temporary file while such code runs, then writes back every line that is not one
of these known notices: a real error (a failed import, a crash report) is still shown, only later.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

NOTICES = tuple(re.compile(pattern) for pattern in (
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
    r"[IW]\d{4} [\d:.]+ +\d+ (port|cpu_feature_guard)\.cc:\d+\] ",
    r"To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\.$",
    r"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$",
))


def is_notice(line: str) -> bool:
    return any(pattern.match(line) for pattern in NOTICES)


@contextlib.contextmanager
def native_stderr_filtered():
    """Within the block, native (C/C++) writes to stderr are held back and replayed without the known notices."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to keep clean
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode(errors="replace").splitlines() if not is_notice(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()


def import_tensorflow():
    """Import TensorFlow and Keras without their start-up notices (idempotent)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_stderr_filtered():
        import keras  # noqa: F401  (imports TensorFlow: Keras' backend)
        import tensorflow  # noqa: F401
