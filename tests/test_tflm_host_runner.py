"""Where ``tinyprop_tflm_runner`` lives: the runner cache (converters/tflm_host_runner.py), without building TFLM.

A cached runner is reused only for the same TFLM tree and the same micro/ runner sources (content, so a fresh
clone of the same code reuses it); any change gives another key and so a build, never a stale runner. The real
build and runs are the runner tests of test_fast_export.py.
"""

from __future__ import annotations

import os

import pytest
from _build import fake_runner_cache

from tinyprop_tf.converters import tflm_host_runner


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A copy of micro/'s runner sources, a minimal "TFLM tree", an empty cache, and a stand-in build that
    publishes a dummy executable and records each call."""
    return fake_runner_cache(tmp_path, monkeypatch, tflm_host_runner.RUNNER_SOURCES)


def test_a_runner_is_built_once_per_tree_and_sources_and_found_in_the_cache(fake):
    micro, tree, cache, builds = fake
    assert tflm_host_runner.find_runner(build=False) is None and not builds
    first = tflm_host_runner.find_runner()
    assert os.path.dirname(first) == str(cache) and len(builds) == 1
    assert tflm_host_runner.find_runner() == tflm_host_runner.find_runner(build=False) == first and len(builds) == 1

    glue = micro / "tflm" / "tinyprop_tflm.cc"
    original = glue.read_bytes()
    glue.write_bytes(original + b"// changed\n")
    changed = tflm_host_runner.find_runner(build=False)
    assert changed is None  # never the runner of the old sources
    assert tflm_host_runner.find_runner() not in (None, first) and len(builds) == 2
    glue.write_bytes(original)  # same content again (a fresh clone): the first runner, mtime or not
    assert tflm_host_runner.find_runner() == first and len(builds) == 2

    header = tree / "tensorflow" / "lite" / "micro" / "micro_interpreter.h"
    header.write_text("// interpreter, updated\n")  # the tree changed: rebuild
    assert tflm_host_runner.find_runner(build=False) is None
    (tree / "tensorflow" / "lite" / "micro" / "new_kernel.cc").write_text("\n")
    assert tflm_host_runner.find_runner() != first and len(builds) == 3


def test_only_sources_count_in_the_key(fake):
    micro, _, _, builds = fake
    first = tflm_host_runner.find_runner()
    (micro / "tflm" / "notes.txt").write_text("not compiled\n")
    assert tflm_host_runner.find_runner() == first and len(builds) == 1


def test_update_builds_only_when_the_cache_built_that_tree_before(fake):
    _, tree, cache, builds = fake
    assert tflm_host_runner.find_runner(build="update") is None and not builds  # a first build takes minutes
    built = cache / "build" / tflm_host_runner.BUILT_TREE
    built.parent.mkdir(parents=True)
    built.write_text(tflm_host_runner._tree_digest("/some/other/tree"))
    assert tflm_host_runner.find_runner(build="update") is None and not builds
    built.write_text(tflm_host_runner._tree_digest(os.path.realpath(tree)))  # only the TinyProp sources to compile
    assert tflm_host_runner.find_runner(build="update") is not None and len(builds) == 1


def test_the_given_runner_wins_and_a_bad_setting_is_named(fake, monkeypatch, tmp_path):
    monkeypatch.setenv("TINYPROP_TFLM_RUNNER", "/bin/true")
    assert tflm_host_runner.find_runner() == "/bin/true"
    monkeypatch.setenv("TINYPROP_TFLM_RUNNER", str(tmp_path / "missing"))
    with pytest.raises(tflm_host_runner.RunnerError, match="is not an executable file"):
        tflm_host_runner.find_runner()
    monkeypatch.delenv("TINYPROP_TFLM_RUNNER")
    monkeypatch.setenv("TINYPROP_TFLM_DIR", str(tmp_path))
    with pytest.raises(tflm_host_runner.RunnerError, match="is not a TFLM tree"):
        tflm_host_runner.find_runner()
    monkeypatch.delenv("TINYPROP_TFLM_DIR")
    assert tflm_host_runner.find_runner() is None


def test_sync_rewrites_only_changed_files_and_drops_removed_ones(tmp_path):
    src = tmp_path / "src"
    tflm_host_runner._sync({"a.cc": b"a", "tflm/b.h": b"b"}, str(src))
    os.utime(src / "a.cc", ns=(1, 1))
    tflm_host_runner._sync({"a.cc": b"a", "tflm/b.h": b"b2", "c.h": b"c"}, str(src))
    assert (src / "a.cc").stat().st_mtime_ns == 1  # unchanged: the build keeps its object
    assert (src / "tflm" / "b.h").read_bytes() == b"b2" and (src / "c.h").read_bytes() == b"c"
    tflm_host_runner._sync({"c.h": b"c"}, str(src))
    assert sorted(p.name for p in src.rglob("*") if p.is_file()) == ["c.h"]
