"""Ctrl-C that a long command never loses.

Python's own SIGINT handler raises KeyboardInterrupt wherever the main thread happens to be; raised inside a
finalizer or a callback that C code runs (TensorFlow and Keras run many), it is printed as "Exception ignored" and
dropped, and the command runs on. ``install()`` (the CLI's) also remembers the request, and ``check()``, called
by the training loops after every batch (``experiment.finetune``), raises it again there.
"""

from __future__ import annotations

import signal

_requested = False


def _handler(signum, frame):
    global _requested
    _requested = True
    raise KeyboardInterrupt


def install() -> None:
    """Take over SIGINT (main thread only, as ``signal.signal`` requires)."""
    global _requested
    _requested = False
    signal.signal(signal.SIGINT, _handler)


def check() -> None:
    """Raise KeyboardInterrupt if SIGINT arrived since ``install()``."""
    if _requested:
        raise KeyboardInterrupt
