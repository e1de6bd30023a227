"""``tinyprop_tf.interrupt``: a SIGINT that Python drops (raised inside a finalizer) is raised again at the
next ``check()``, so a long command still stops."""

import os
import signal
import sys

import pytest

from tinyprop_tf import interrupt


class _InterruptedWhileFinalised:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)  # the handler runs here: its KeyboardInterrupt is "ignored"
        for _ in range(1000):
            pass


def test_a_sigint_dropped_in_a_finalizer_is_raised_at_the_next_check(monkeypatch):
    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: dropped.append(unraisable.exc_type))
    previous = signal.getsignal(signal.SIGINT)
    try:
        interrupt.install()
        interrupt.check()  # nothing requested yet
        _InterruptedWhileFinalised()  # collected at once: the interrupt is raised and dropped inside __del__
        assert dropped == [KeyboardInterrupt]  # what Python reports as "Exception ignored in ..." and drops
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
        interrupt.install()  # a new command starts with no request
        interrupt.check()
    finally:
        signal.signal(signal.SIGINT, previous)
