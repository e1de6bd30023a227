"""One summary line for the tests that run ``tinyprop_tflm_runner`` (marker ``tflm_runner``): whether they ran,
so a CI log shows it without listing every passed test."""

from __future__ import annotations

import os

import pytest

_RANK = {"passed": 0, "skipped": 1, "failed": 2}


def pytest_terminal_summary(terminalreporter):
    outcome = {}  # per test: its worst phase (a skip or failure in setup, call or teardown), else passed
    for reports in terminalreporter.stats.values():
        for r in reports:
            if not isinstance(r, pytest.TestReport) or "tflm_runner" not in r.keywords:
                continue
            if (r.when == "call" or r.outcome != "passed") and _RANK[r.outcome] >= _RANK.get(outcome.get(r.nodeid), -1):
                outcome[r.nodeid] = r.outcome
    if outcome:
        counts = ", ".join(f"{list(outcome.values()).count(o)} {o}" for o in _RANK)
        source = os.environ.get("TINYPROP_TFLM_RUNNER") or os.environ.get("TINYPROP_TFLM_DIR") or "no TFLM tree"
        terminalreporter.write_line(f"tinyprop_tflm_runner tests: {counts} ({source})")


@pytest.fixture(scope="module")
def no_tensorflow(tmp_path_factory):
    """A PYTHONPATH under which importing TensorFlow or Keras fails: what runs with it ran without them."""
    root = tmp_path_factory.mktemp("no_tensorflow")
    for name in ("tensorflow", "keras"):
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(f"raise ImportError('{name} imported before the arguments were "
                                                 "checked')\n")
    return {**os.environ, "PYTHONPATH": str(root)}
