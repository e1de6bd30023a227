"""Output folders (tinyprop_tf.outdir): a used folder is refused unless overwrite; overwrite swaps the whole set in;
an interrupted run keeps what finished; a board project's edited main file survives. Standard library only."""

import json
import os
import stat
import subprocess
import sys

import pytest

from tinyprop_tf import outdir
from tinyprop_tf.outdir import OutDirError


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names)


def _old_export(path):
    path.mkdir()
    for name in ("manifest.json", "train.tflite", "train_fast.tflite"):
        (path / name).write_text("old " + name)
    return path


def test_module_imports_no_tensorflow():
    code = "import sys, tinyprop_tf.outdir; sys.exit('tensorflow' in sys.modules or 'numpy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_used_folder_is_refused_in_one_line_unless_overwrite(tmp_path):
    outdir.check(None)
    outdir.check(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    outdir.check(tmp_path / "empty")
    old = _old_export(tmp_path / "E")
    with pytest.raises(OutDirError) as error:
        outdir.check(old)
    message = str(error.value)
    assert "\n" not in message and str(old) in message and "--overwrite" in message
    assert "choose another folder" in message and "manifest.json" in message
    outdir.check(old, overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutDirError, match="is a file, not a folder"):
        outdir.check(tmp_path / "file", overwrite=True)


def test_overwrite_only_replaces_our_outputs_and_never_an_input_or_the_current_folder(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    with pytest.raises(OutDirError, match="no previous tinyprop export or run"):
        outdir.check(home, overwrite=True)
    old = _old_export(tmp_path / "E")
    (old / "model.keras").write_text("the model being exported")
    with pytest.raises(OutDirError, match="model.keras is inside .*move it out first"):
        outdir.check(old, overwrite=True, inputs=[str(old / "model.keras")])
    monkeypatch.chdir(old)
    with pytest.raises(OutDirError, match="holds the current folder"):
        outdir.check(str(old), overwrite=True)


def test_replacing_swaps_in_the_whole_set(tmp_path):
    old = _old_export(tmp_path / "E")
    with pytest.raises(OutDirError):
        with outdir.replacing(old):
            pass
    with outdir.replacing(old, overwrite=True) as folder:
        assert folder.final == str(old) and os.path.dirname(folder.path) == str(tmp_path)
        (tmp_path / "E" / "manifest.json").read_text()  # the previous set is intact while the new one is written
        with open(os.path.join(folder.path, "manifest.json"), "w") as f:
            f.write("new")
    assert _files(old) == ["manifest.json"] and (old / "manifest.json").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["E"]  # no stage or old copy left beside it
    assert stat.S_IMODE(os.stat(old).st_mode) == 0o777 & ~outdir._UMASK


def test_a_failed_export_leaves_the_previous_one_and_nothing_else(tmp_path):
    old = _old_export(tmp_path / "E")
    with pytest.raises(RuntimeError):
        with outdir.replacing(old, overwrite=True) as folder:
            open(os.path.join(folder.path, "manifest.json"), "w").close()
            raise RuntimeError("conversion failed")
    assert _files(old) == ["manifest.json", "train.tflite", "train_fast.tflite"]
    assert sorted(os.listdir(tmp_path)) == ["E"]
    with pytest.raises(RuntimeError):
        with outdir.replacing(tmp_path / "fresh"):
            raise RuntimeError("conversion failed")
    assert sorted(os.listdir(tmp_path)) == ["E"]


def test_an_interrupted_run_keeps_what_finished(tmp_path, capsys):
    fresh = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        with outdir.replacing(fresh, keep_partial=True) as folder:
            assert folder.path == folder.final == str(fresh)  # a free folder is written directly
            (fresh / "finetuned-dense.keras").write_text("run 1")
            raise KeyboardInterrupt
    assert _files(fresh) == ["finetuned-dense.keras"]
    with pytest.raises(KeyboardInterrupt):  # stopped before anything finished: no empty folder left behind
        with outdir.replacing(tmp_path / "nothing", keep_partial=True):
            raise KeyboardInterrupt
    assert not (tmp_path / "nothing").exists()
    (fresh / "report.json").write_text("{}")
    with pytest.raises(KeyboardInterrupt):
        with outdir.replacing(fresh, overwrite=True, keep_partial=True) as folder:
            open(os.path.join(folder.path, "finetuned-tinyprop.keras"), "w").close()
            raise KeyboardInterrupt
    assert _files(fresh) == ["finetuned-dense.keras", "report.json"]  # the previous run, untouched
    partial = [name for name in os.listdir(tmp_path) if name.startswith("run.partial-")]
    assert len(partial) == 1 and os.listdir(tmp_path / partial[0]) == ["finetuned-tinyprop.keras"]
    assert f"what this run finished is in {tmp_path / partial[0]}" in capsys.readouterr().err


def test_folder_final_paths_rewrites_only_paths_inside_the_stage(tmp_path):
    folder = outdir.Folder(str(tmp_path / "E.partial-x"), str(tmp_path / "E"))
    stage, final, other = tmp_path / "E.partial-x", tmp_path / "E", str(tmp_path / "E.partial-xy")
    report = {"runs": [{"model_path": str(stage / "m.keras")}], "data": other, "plots": (str(stage / "a.png"),)}
    assert folder.final_paths(report) == {"runs": [{"model_path": str(final / "m.keras")}], "data": other,
                                          "plots": (str(final / "a.png"),)}


def test_atomic_write_replaces_or_keeps_never_truncates(tmp_path):
    path = tmp_path / "report.json"
    outdir.write_json(path, {"complete": True})

    def crash(handle):
        handle.write('{"complete": fal')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        outdir.atomic_write(path, crash)
    assert json.loads(path.read_text()) == {"complete": True} and os.listdir(tmp_path) == ["report.json"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~outdir._UMASK


# ---- board projects ---------------------------------------------------------------------------------------------
def _project(path, board="esp32s3", main="generated main", extra=()):
    (path / "main").mkdir(parents=True)
    (path / "main" / "main.cc").write_text(main)
    (path / "CMakeLists.txt").write_text("cmake")
    files = {rel: outdir.sha256_file(path / rel) for rel in ("main/main.cc", "CMakeLists.txt")}
    for rel in extra:
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text("old generated " + rel)
        files[rel] = outdir.sha256_file(path / rel)
    (path / outdir.PROJECT_RECORD).write_text(json.dumps(
        {"format": outdir.PROJECT_FORMAT, "board": board, "files": files, "kept": {}}))
    return path


def _write_new_project(stage, main="new generated main"):
    (stage / "main").mkdir(parents=True)
    (stage / "main" / "main.cc").write_text(main)
    (stage / "CMakeLists.txt").write_text("new cmake")
    return {"main/main.cc", "CMakeLists.txt"}


def test_regenerating_keeps_an_edited_main_and_the_users_files(tmp_path):
    old = _project(tmp_path / "p", extra=["main/tinyprop_kernels/old.cc"])
    assert outdir.read_project(old).edited_user_files() == []
    (old / "main" / "main.cc").write_text("generated main\n// my SetInputs() reads the sensor")
    (old / "build").mkdir()
    (old / "build" / "app.elf").write_text("elf")
    (old / "sdkconfig").write_text("CONFIG_FROM_MENUCONFIG=y")
    assert outdir.read_project(old).edited_user_files() == ["main/main.cc"]
    carry = outdir.previous_project(old, "esp32s3", {"main/main.cc", "CMakeLists.txt"})
    stage = tmp_path / "stage"
    generated = _write_new_project(stage)
    notices = []
    assert carry.apply(stage, generated, notices.append) == {"main/main.cc": "main/main.cc.new"}
    assert (stage / "main" / "main.cc").read_text().endswith("reads the sensor")
    assert (stage / "main" / "main.cc.new").read_text() == "new generated main"
    assert len(notices) == 1 and "main.cc: kept" in notices[0] and "main.cc.new" in notices[0]
    # what the user made comes along; what we generated last time and not now (stale kernels) does not
    assert _files(stage) == ["CMakeLists.txt", "build/app.elf", "main/main.cc", "main/main.cc.new", "sdkconfig"]


def test_an_unchanged_main_is_replaced_and_another_board_needs_overwrite(tmp_path):
    old = _project(tmp_path / "p")
    stage = tmp_path / "stage"
    generated = _write_new_project(stage)
    notices = []
    assert outdir.previous_project(old, "esp32s3", generated).apply(stage, generated, notices.append) == {}
    assert (stage / "main" / "main.cc").read_text() == "new generated main" and notices == []
    with pytest.raises(OutDirError, match="holds a board project for esp32s3, not for esp32c3: pass --overwrite"):
        outdir.previous_project(old, "esp32c3", generated)
    assert outdir.previous_project(old, "esp32c3", generated, overwrite=True).foreign == []
    (old / "main" / "main.cc").write_text("edited")
    with pytest.raises(OutDirError, match=r"main/main.cc differs from what tinyprop generated and a nrf52840dk "
                                          r"project has no such file"):
        outdir.previous_project(old, "nrf52840dk", {"src/main.cpp"}, overwrite=True)


def test_overwrite_refuses_to_delete_an_edited_main_it_does_not_write_again(tmp_path):
    export = _old_export(tmp_path / "E")
    _project(export / "esp32s3_project", main="generated")
    outdir.check(export, overwrite=True)  # unchanged since generated: may go
    (export / "esp32s3_project" / "main" / "main.cc").write_text("edited")
    with pytest.raises(OutDirError) as error:
        outdir.check(export, overwrite=True)
    assert "esp32s3_project/main/main.cc differs from what tinyprop generated" in str(error.value)
    assert "(--board esp32s3)" in str(error.value) and "\n" not in str(error.value)
    outdir.check(export, overwrite=True, regenerate=["esp32s3_project"])


def test_a_project_without_record_counts_as_edited(tmp_path):
    legacy = tmp_path / "E" / "nrf52840dk_project"
    (legacy / "src").mkdir(parents=True)
    (legacy / "src" / "main.cpp").write_text("bool SetInputs() {}")
    (legacy / "README.md").write_text("# TinyProp\n\nGenerated by `tinyprop_tf.converters.board_projects` from ...")
    (tmp_path / "E" / "manifest.json").write_text("{}")
    assert outdir.read_project(legacy).edited_user_files() == ["src/main.cpp"]
    with pytest.raises(OutDirError, match="src/main.cpp differs"):
        outdir.check(tmp_path / "E", overwrite=True)
    assert outdir.read_project(tmp_path / "E") is None
