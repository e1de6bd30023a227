"""Board projects (ESP-IDF / Zephyr) generated from real exports: files, consistency with the manifest, the
micro/app sources copied unchanged, the SDK-independent sources compiled for host, Cortex-M4F and RV32IMC, and the
entry (main.cc / main.cpp) with the app's TFLM part compiled against stub headers of every TFLM / ESP-IDF / Zephyr
function they call. The stubs also carry a small simulated runtime (resource variables, CALL_ONCE initialiser,
RAM-backed NOR flash) so the generated application can be host-run twice: train + save, then restore + train, with
the real micro/persist library. The manifests are validated offline with `compote manifest lint` (idf_component.yml)
and `west manifest --validate` (west.yml). No vendor SDK is used."""

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from _build import run

from tinyprop_tf import mcu_profiles
from tinyprop_tf.converters import BoardProjectError, board_projects, device_ops, write_board_project

BOARDS = ["esp32s3", "esp32c3", "nrf52840dk", "nrf5340dk"]
ESP_FILES = ["CMakeLists.txt", "sdkconfig.defaults", "partitions.csv", "README.md", "main/CMakeLists.txt",
             "main/idf_component.yml", "main/main.cc", "main/model_data.h", "main/model_data.cc", "main/weights.h",
             "main/tinyprop_app_config.h", "main/samples.cc", "main/tinyprop_state.cc",
             "main/tinyprop_app/esp_idf/esp_idf_platform.h",
             "components/tinyprop_persist/CMakeLists.txt", "components/tinyprop_persist/include/tinyprop/persist.h",
             "components/tinyprop_persist/src/persist.cc"]
ZEPHYR_FILES = ["CMakeLists.txt", "prj.conf", "sysbuild.conf", "west.yml", "README.md", "src/main.cpp",
                "src/model_data.h", "src/model_data.cc", "src/weights.h", "src/tinyprop_app_config.h",
                "src/samples.cc", "src/tinyprop_state.cc", "lib/tinyprop_app/zephyr/zephyr_platform.h",
                "lib/tinyprop_persist/include/tinyprop/persist.h", "lib/tinyprop_persist/src/persist.cc"]
MICRO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "micro")
APP_COMMON = ("include", "src", "tflm")  # micro/app folders every project holds (plus its platform folder)
CXXFLAGS = ["-std=c++17", "-Wall", "-Wextra", "-Werror", "-fno-exceptions", "-fno-rtti"]
CROSS = {
    "arm": ["arm-none-eabi-g++", "-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"],
    "riscv": ["riscv64-unknown-elf-g++", "-march=rv32imc", "-mabi=ilp32", "-specs=picolibc.specs"],
}


def _have(tool):
    return shutil.which(tool) is not None


def _src_dir(board):
    return "main" if board.startswith("esp") else "src"


def _main_file(board):
    return "main/main.cc" if board.startswith("esp") else "src/main.cpp"


def _app_dir(board):
    return "main/tinyprop_app" if board.startswith("esp") else "lib/tinyprop_app"


def _platform_dir(board):
    return "esp_idf" if board.startswith("esp") else "zephyr"


def _app_files(board):
    """project-relative -> micro/app path of every app source the project must hold unchanged (main included)."""
    app = os.path.join(MICRO, "app")
    out = {_main_file(board): os.path.join(app, _platform_dir(board), os.path.basename(_main_file(board)))}
    for sub in (*APP_COMMON, _platform_dir(board)):
        for root, _, names in os.walk(os.path.join(app, sub)):
            for name in names:
                rel = os.path.relpath(os.path.join(root, name), app)
                if os.path.join(app, rel) not in out.values():
                    out[f"{_app_dir(board)}/{rel}"] = os.path.join(app, rel)
    return out


# --------------------------------------------------------------------------------------------------------------
# Errors before anything is written (no export needed)
# --------------------------------------------------------------------------------------------------------------
def test_unknown_board_lists_the_valid_ones(tmp_path):
    out = tmp_path / "p"
    with pytest.raises(BoardProjectError, match=r"unknown board 'esp32'.*esp32s3, esp32c3, nrf52840dk, nrf5340dk"):
        write_board_project(str(tmp_path), "esp32", str(out))
    with pytest.raises(ValueError, match="valid boards"):  # BoardProjectError is a ValueError (CLI exit 2)
        board_projects.check_board(None)
    assert not out.exists()


def test_missing_or_incomplete_export_dir(tmp_path):
    out = tmp_path / "p"
    with pytest.raises(BoardProjectError, match=r"does not exist \(run tinyprop export first\)"):
        write_board_project(str(tmp_path / "nope"), "esp32s3", str(out))
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "manifest.json").write_text("{}")
    with pytest.raises(BoardProjectError, match=r"not a complete export: missing train.tflite, model_data.h"):
        write_board_project(str(tmp_path / "half"), "nrf52840dk", str(out))
    assert not out.exists()


def _fake_export(path, ops):
    path.mkdir()
    io = {"inputs": [{"name": n, "index": i} for i, n in enumerate(["x", "y", "mode"])],
          "outputs": [{"name": n, "index": i} for i, n in enumerate(["loss", "output", "k"])], "ops": ops}
    (path / "manifest.json").write_text(json.dumps({"format": "tinyprop-train/1", "tflm": io}))
    for name in ("train.tflite", "model_data.h", "model_data.cc", "weights.h"):
        (path / name).write_text("")
    return path


def test_op_without_resolver_method_is_refused_before_writing(tmp_path):
    export = _fake_export(tmp_path / "export", {"ADD": 1, "TOPK_V2": 1, "CUSTOM:Foo": 1})
    out = tmp_path / "p"
    with pytest.raises(BoardProjectError, match=r"op\(s\) CUSTOM:Foo, TOPK_V2 .*no known tflite::MicroMutableOpResolver"):
        write_board_project(str(export), "esp32c3", str(out))
    assert not out.exists()
    assert board_projects.resolver_methods({"SELECT_V2": 1, "CUMSUM": 2}) == [("CUMSUM", "AddCumSum"),
                                                                              ("SELECT_V2", "AddSelectV2")]


def test_resolver_table_covers_the_exporter_builtins():
    """Every op the exporter lets through (TFLM_BUILTINS) maps to a resolver method, and the method names match
    TFLM's (the stub list below was copied from micro_mutable_op_resolver.h independently)."""
    from tinyprop_tf.converters import TFLM_BUILTINS

    assert set(TFLM_BUILTINS) <= set(board_projects.TFLM_RESOLVER_METHODS)
    assert set(board_projects.TFLM_RESOLVER_METHODS.values()) <= set(TFLM_ADD_METHODS)


# --------------------------------------------------------------------------------------------------------------
# Real exports
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    import keras

    import tinyprop_tf as tp
    from tinyprop_tf.converters import export_training_model

    out = {}
    for name, optimizer, loss in (("ce_sgd", "sgd", "sparse_categorical_crossentropy"), ("mse_adam", "adam", "mse")):
        inp = keras.Input((8,))
        hidden = keras.layers.Dense(6, activation="relu", name="fc1")(inp)
        model = keras.Model(inp, keras.layers.Dense(3, name="fc2")(hidden), name=f"mlp_{name}")
        path = tmp_path_factory.mktemp(name)
        manifest = export_training_model(model, tp.TinyProp(), optimizer=optimizer, learning_rate=0.01, loss=loss,
                                         batch_size=2, out_dir=str(path), measure_arena=True)
        out[name] = (str(path), manifest)
    return out


@pytest.fixture(scope="module")
def projects(exports, tmp_path_factory):
    root = tmp_path_factory.mktemp("projects")
    out = {}
    for export_name, (path, _) in exports.items():
        for board in BOARDS:
            out[export_name, board] = write_board_project(path, board, str(root / f"{export_name}_{board}"))
    return out


def _read(project, rel):
    with open(os.path.join(project.out_dir, rel), encoding="utf-8") as f:
        return f.read()


def _define(text, name):
    m = re.search(rf"#define {name} (\S+)", text)
    assert m, name
    return m.group(1)


def _builtin_ops(config):
    """(resolver method, op, uses) of TINYPROP_BUILTIN_OPS in tinyprop_app_config.h."""
    return re.findall(r"^  X\((Add\w+)\) /\* (\w+) x(\d+) \*/ \\$", config, re.M)


def _custom_ops(config):
    """(op name, registration function, uses) of TINYPROP_CUSTOM_OPS."""
    return re.findall(r'^  X\("(\w+)", (Register_\w+)\) /\* x(\d+) \*/ \\$', config, re.M)


@pytest.mark.slow
@pytest.mark.parametrize("export_name", ["ce_sgd", "mse_adam"])
@pytest.mark.parametrize("board", BOARDS)
def test_project_files_match_the_manifest(projects, exports, export_name, board):
    project = projects[export_name, board]
    export_dir, manifest = exports[export_name]
    expected = ESP_FILES if board.startswith("esp") else ZEPHYR_FILES
    for rel in expected:
        assert os.path.isfile(os.path.join(project.out_dir, rel)), rel
    assert set(expected) <= set(project.files)
    src = _src_dir(board)
    main = _read(project, _main_file(board))
    config = _read(project, f"{src}/tinyprop_app_config.h")
    tflm_part = _read(project, f"{_app_dir(board)}/tflm/tflm_training.cc")

    # the app: every micro/app source of the platform copied unchanged, nothing of the other platform
    for rel, source in _app_files(board).items():
        with open(source, encoding="utf-8") as f:
            assert _read(project, rel) == f.read(), rel
    other = "zephyr" if board.startswith("esp") else "esp_idf"
    assert not any(f"/{other}/" in f or "/tests/" in f for f in project.files)

    # model arrays copied unchanged: indices, arena, batch come from the export
    for name in ("model_data.h", "model_data.cc", "weights.h"):
        with open(os.path.join(export_dir, name), encoding="utf-8") as f:
            assert _read(project, f"{src}/{name}") == f.read(), name
    model_h = _read(project, f"{src}/model_data.h")
    assert int(_define(model_h, "TINYPROP_ARENA_BYTES")) == manifest["tflm"]["arena_bytes_recommended"]
    for d in manifest["tflm"]["inputs"]:
        assert int(_define(model_h, f"TINYPROP_INPUT_{d['name'].upper()}")) == d["index"]
        assert f"TINYPROP_INPUT_{d['name'].upper()}" in tflm_part
    for d in manifest["tflm"]["outputs"]:
        assert int(_define(model_h, f"TINYPROP_OUTPUT_{d['name'].upper()}")) == d["index"]
    assert "g_tensor_arena[TINYPROP_ARENA_BYTES]" in tflm_part

    # exactly the manifest's ops, each listed once, and the resolver sized for them
    ops = manifest["tflm"]["ops"]
    calls = _builtin_ops(config)
    assert sorted(op for _, op, _ in calls) == sorted(ops)
    assert {op: int(n) for _, op, n in calls} == ops
    assert all(board_projects.TFLM_RESOLVER_METHODS[op] == method for method, op, _ in calls)
    assert int(_define(config, "TINYPROP_NUM_OPS")) == len(ops) and _define(config, "TINYPROP_HAS_CUSTOM_OPS") == "0"

    # samples: sizes consistent with the model input / target
    samples_cc = _read(project, f"{src}/samples.cc")
    n = int(_define(config, "TINYPROP_NUM_SAMPLES"))
    elements = int(_define(config, "TINYPROP_SAMPLE_ELEMENTS"))
    assert elements == int(np.prod(manifest["input"]["shape"][1:]))
    values = re.findall(r"[-+]?\d\.?\d*e[-+]\d+f", samples_cc)
    is_label = manifest["target"]["dtype"] == "int32"
    target_elements = int(_define(config, "TINYPROP_TARGET_ELEMENTS"))
    assert target_elements == (1 if is_label else int(np.prod(manifest["output_shape"][1:])))
    assert len(values) == n * elements + (0 if is_label else n * target_elements)
    assert _define(config, "TINYPROP_TARGET_IS_LABEL") == str(int(is_label))
    assert int(_define(config, "TINYPROP_TRAIN_STEPS")) == project.train_steps

    # training state: every resource variable, weights first = weights.bin
    state_h = config
    assert int(_define(state_h, "TINYPROP_NUM_STATE_VARIABLES")) == manifest["tflm"]["resource_variables"]
    assert int(_define(state_h, "TINYPROP_STATE_WEIGHT_BYTES")) == manifest["weights_bin"]["bytes"]
    assert [v["name"] for v in project.state_variables[:len(manifest["weights"])]] == \
        [w["name"] for w in manifest["weights"]]
    assert {v["name"] for v in project.state_variables} == set(manifest["tflm"]["variables"])
    state_bytes = int(_define(state_h, "TINYPROP_STATE_BYTES"))
    assert state_bytes == project.state_bytes >= sum(v["bytes"] for v in project.state_variables)
    assert project.partition_bytes == 2 * int(_define(state_h, "TINYPROP_STATE_SLOT_BYTES"))
    assert project.partition_bytes >= 2 * (32 + state_bytes) and project.partition_bytes % 4096 == 0

    # memory budget against tinyprop_tf.mcu_profiles
    profile = mcu_profiles.get_board(board_projects.BOARDS[board].profile)
    readme = _read(project, "README.md")
    assert project.budget["usable_ram_bytes"] == profile.usable_ram_bytes
    assert project.budget["ram_bytes"] >= manifest["tflm"]["arena_bytes_recommended"] + state_bytes
    assert project.fits and "FITS" in readme and f"{project.budget['ram_bytes']:,}" in readme

    if board.startswith("esp"):
        target = board_projects.BOARDS[board]
        assert "include($ENV{IDF_PATH}/tools/cmake/project.cmake)" in _read(project, "CMakeLists.txt")
        assert re.search(r'espressif/esp-tflite-micro: "\^1\.4\.0"', _read(project, "main/idf_component.yml"))
        cmake = _read(project, "main/CMakeLists.txt")
        for f in ("main.cc", "model_data.cc", "samples.cc", "tinyprop_state.cc"):
            assert f'"{f}"' in cmake
        for rel in _app_files(board):  # every app source is compiled
            if rel.endswith(".cc") and rel != "main/main.cc":
                assert f'"{os.path.relpath(rel, "main")}"' in cmake, rel
        sdk = _read(project, "sdkconfig.defaults")
        assert f'CONFIG_IDF_TARGET="{board}"' in sdk and f"CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ_{target.cpu_mhz}=y" in sdk
        assert "CONFIG_ESP_MAIN_TASK_STACK_SIZE=16384" in sdk and 'CUSTOM_FILENAME="partitions.csv"' in sdk
        row = re.search(r"^(\w+), +data, 0x40, +, +0x([0-9a-f]+),", _read(project, "partitions.csv"), re.M)
        assert int(row.group(2), 16) == project.partition_bytes
        assert row.group(1) == _define(config, "TINYPROP_STATE_PARTITION") == "tinyprop"
        assert f"idf.py set-target {board}" in readme and "idf.py build flash monitor" in readme
        assert ("esp_partition_find_first(ESP_PARTITION_TYPE_DATA, ESP_PARTITION_SUBTYPE_ANY,\n"
                "                               TINYPROP_NAME_OF(TINYPROP_STATE_PARTITION))") in main
    else:
        target = board_projects.BOARDS[board]
        assert "find_package(Zephyr REQUIRED" in _read(project, "CMakeLists.txt")
        prj = _read(project, "prj.conf")
        for option in ("CONFIG_TENSORFLOW_LITE_MICRO=y", "CONFIG_CPP=y", "CONFIG_STD_CPP17=y",
                       "CONFIG_REQUIRES_FULL_LIBCPP=y", "CONFIG_FLASH=y", "CONFIG_FLASH_MAP=y",
                       "CONFIG_MAIN_STACK_SIZE=16384", "CONFIG_HEAP_MEM_POOL_SIZE=0"):
            assert option in prj.splitlines(), option
        west = _read(project, "west.yml")
        assert "- name: tflite-micro" in west and board_projects.ZEPHYR_TFLM_REVISION in west
        assert f"west build -b {target.west_board}" in readme
        assert "FIXED_PARTITION_ID(TINYPROP_STATE_PARTITION)" in main
        assert _define(config, "TINYPROP_STATE_PARTITION") == "storage_partition"  # small state: the board's own
        cmake = _read(project, "CMakeLists.txt")
        for rel in _app_files(board):  # every app source is compiled
            if rel.endswith((".cc", ".cpp")):
                assert f"  {rel}\n" in cmake or f"  {rel})" in cmake, rel
        assert os.path.isfile(os.path.join(project.out_dir, "boards", target.overlay))
        if "REDUCE_MIN" in ops:
            assert "zephyr-v4.4.0" in readme and "REDUCE_MIN" in readme


@pytest.mark.slow
def test_samples_argument_and_a_large_state_partition(exports, tmp_path):
    export_dir, manifest = exports["ce_sgd"]
    x = np.arange(5 * 8, dtype=np.float64).reshape(5, 8) / 10
    project = write_board_project(export_dir, "nrf52840dk", str(tmp_path / "p"), samples=x, labels=[0, 1, 2, 0, 1],
                                  steps=7)
    samples_cc = _read(project, "src/samples.cc")
    assert "#define TINYPROP_NUM_SAMPLES 5" in _read(project, "src/tinyprop_app_config.h")
    assert "3.9e+00f" in samples_cc and "0, 1, 2, 0, 1," in samples_cc
    assert "#define TINYPROP_TRAIN_STEPS 7\n" in _read(project, "src/tinyprop_app_config.h")
    with pytest.raises(BoardProjectError, match=r"labels must be in \[0, 3\)"):
        write_board_project(export_dir, "nrf52840dk", str(tmp_path / "q"), samples=x, labels=[0, 1, 2, 3, 1])
    with pytest.raises(BoardProjectError, match=r"samples must have shape \[N, 8\]"):
        write_board_project(export_dir, "esp32s3", str(tmp_path / "q"), samples=x[:, :4], labels=[0] * 5)
    with pytest.raises(BoardProjectError, match="steps must be a positive integer"):
        write_board_project(export_dir, "esp32s3", str(tmp_path / "q"), steps=0)
    assert not (tmp_path / "q").exists()

    # A state too large for the 32 KiB storage_partition gets its own partition at the end of the flash.
    slot = board_projects._slot_bytes(100_000)
    label, overlay = board_projects._zephyr_partition(board_projects.BOARDS["nrf5340dk"], 100_000, slot, 2 * slot)
    assert label == "tinyprop_partition"
    start = 0x100000 - 2 * slot
    assert f"tinyprop_partition: partition@{start:x}" in overlay
    assert "/delete-node/ &storage_partition;" in overlay and "/delete-node/ &slot1_partition;" in overlay


@pytest.mark.slow
def test_wide_model_gets_its_own_partition_and_does_not_fit_the_nrf52840(tmp_path):
    """128 hidden units + Adam: an 18 KB state (two slots > the 32 KiB storage_partition) and a ~260 KB arena."""
    import keras

    import tinyprop_tf as tp
    from tinyprop_tf.converters import export_training_model

    inp = keras.Input((8,))
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.Dense(128, activation="relu")(inp)))
    export_dir = str(tmp_path / "export")
    export_training_model(model, tp.TinyProp(), optimizer="adam", batch_size=2, out_dir=export_dir)
    project = write_board_project(export_dir, "nrf52840dk", str(tmp_path / "nrf"))
    assert project.partition_bytes > 32 * 1024
    assert _define(_read(project, "src/tinyprop_app_config.h"), "TINYPROP_STATE_PARTITION") == "tinyprop_partition"
    overlay = _read(project, "boards/nrf52840dk_nrf52840.overlay")
    start = 0x100000 - project.partition_bytes
    assert f"reg = <0x{start:08x} 0x{project.partition_bytes:08x}>;" in overlay
    assert "/delete-node/ &storage_partition;" in overlay and "/delete-node/ &slot1_partition;" in overlay
    assert _partition_defines(project) == ["-DTINYPROP_STUB_PARTITION_tinyprop_partition=1"]
    stubs = _write_stubs(tmp_path / "stubs", "nrf52840dk")
    _, includes = _sdk_free_sources(project)
    _compile(["g++"] + CXXFLAGS + [f"-I{stubs}"] + includes + _app_sdk_includes(project) +
             _partition_defines(project) + ["-c", "src/main.cpp", "-o", str(tmp_path / "main.o")], project.out_dir)
    assert not project.fits
    short = project.budget["ram_bytes"] - 256 * 1024
    assert project.budget_text.startswith("DOES NOT FIT") and f"RAM short by {short:,} B" in project.budget_text
    assert "does not fit the board" in _read(project, "README.md")
    esp = write_board_project(export_dir, "esp32s3", str(tmp_path / "esp"))
    assert esp.fits and f"0x{esp.partition_bytes:x}," in _read(esp, "partitions.csv")


@pytest.mark.slow
def test_budget_says_when_it_does_not_fit(exports, tmp_path):
    export_dir, _ = exports["ce_sgd"]
    project = write_board_project(export_dir, "nrf52840dk", str(tmp_path / "p"), arena_bytes=300 * 1024)
    assert not project.fits
    short = project.budget["ram_bytes"] - 256 * 1024
    assert f"RAM short by {short:,} B" in project.budget_text
    assert "does not fit the board" in _read(project, "README.md")


# --------------------------------------------------------------------------------------------------------------
# Compilation
# --------------------------------------------------------------------------------------------------------------
def _compile(cmd, cwd):
    run(cmd, cwd=cwd, timeout=180)


def _sdk_free_sources(project):
    """The sources that need neither TFLM nor an SDK: generated data, micro/persist, micro/app's src/."""
    src, app = _src_dir(project.board), _app_dir(project.board)
    persist = "components/tinyprop_persist" if project.board.startswith("esp") else "lib/tinyprop_persist"
    sources = [f"{src}/model_data.cc", f"{src}/samples.cc", f"{src}/tinyprop_state.cc", f"{persist}/src/persist.cc"]
    sources += sorted(f for f in project.files if f.startswith(f"{app}/src/") and f.endswith(".cc"))
    return sources, [f"-I{src}", f"-I{persist}/include", f"-I{app}/include"]


def _app_sdk_sources(project):
    """The app's TFLM part and the entry: compiled against the stubs."""
    app = _app_dir(project.board)
    return [_main_file(project.board)] + sorted(f for f in project.files if f.startswith(f"{app}/tflm/")
                                                  and f.endswith(".cc"))


def _app_sdk_includes(project):
    app = _app_dir(project.board)
    return [f"-I{app}/tflm", f"-I{app}/{_platform_dir(project.board)}"]


@pytest.mark.slow
@pytest.mark.parametrize("board", BOARDS)
def test_sdk_free_sources_compile_for_host_and_target(projects, board, tmp_path):
    """model/weights arrays, samples, the state table, the persistence library and the app's TFLM-free part,
    -Wall -Wextra -Werror."""
    for export_name in ("ce_sgd", "mse_adam"):
        project = projects[export_name, board]
        sources, includes = _sdk_free_sources(project)
        compilers = [("host", ["g++"]), ("arm", CROSS["arm"])]
        if board == "esp32c3":
            compilers.append(("riscv", CROSS["riscv"]))
        for name, cxx in compilers:
            if not _have(cxx[0]):
                if name == "riscv":
                    continue  # optional
                pytest.skip(f"{cxx[0]} not installed (micro/install_toolchains.sh)")
            for source in sources:
                obj = tmp_path / f"{export_name}_{name}_{os.path.basename(source)}.o"
                _compile(cxx + CXXFLAGS + includes + ["-c", source, "-o", str(obj)], project.out_dir)


@pytest.mark.slow
@pytest.mark.parametrize("board", BOARDS)
def test_main_compiles_against_sdk_stubs(projects, board, tmp_path):
    """main.cc / main.cpp and the app's TFLM part against stub headers with the exact signatures of the TFLM,
    ESP-IDF and Zephyr API they call: an API typo, a wrong argument type or a missing include fails here. Also
    cross-compiled (-c)."""
    stubs = _write_stubs(tmp_path / "stubs", board)
    for export_name in ("ce_sgd", "mse_adam"):
        project = projects[export_name, board]
        _, includes = _sdk_free_sources(project)
        includes = [f"-I{stubs}"] + includes + _app_sdk_includes(project)
        defines = _partition_defines(project)
        cross = CROSS["riscv"] if board == "esp32c3" else CROSS["arm"]
        for source in _app_sdk_sources(project):
            obj = str(tmp_path / os.path.basename(source))
            _compile(["g++"] + CXXFLAGS + includes + defines + ["-c", source, "-o", obj + ".host.o"], project.out_dir)
            if _have(cross[0]):
                _compile(cross + CXXFLAGS + includes + defines + ["-c", source, "-o", obj + ".cross.o"],
                         project.out_dir)


def _partition_defines(project):
    """The Zephyr stub's FIXED_PARTITION_ID only knows the partition labels the project's overlay/board define."""
    if project.board.startswith("esp"):
        return []
    overlay = _read(project, f"boards/{board_projects.BOARDS[project.board].overlay}")
    labels = set(re.findall(r"^\s*(\w+): partition@", overlay, re.M))
    if "/delete-node/ &storage_partition;" not in overlay:
        labels.add("storage_partition")  # defined by the board's own devicetree
    return [f"-DTINYPROP_STUB_PARTITION_{label}=1" for label in sorted(labels)]


@pytest.mark.slow
@pytest.mark.parametrize("export_name", ["ce_sgd", "mse_adam"])
@pytest.mark.parametrize("board", ["esp32c3", "nrf5340dk"])
def test_generated_app_saves_and_restores_state_on_simulated_runtime(projects, exports, export_name, board, tmp_path):
    """Boot twice on the host: the simulated TFLM initialiser sets every variable on the first Invoke (as CALL_ONCE
    does), a train invoke adds 1 to each float and int; flash is a RAM NOR array. Boot 1 trains and saves; boot 2
    must restore after the initialiser and continue, so every weight ends at init + 2 x steps."""
    project = projects[export_name, board]
    _, manifest = exports[export_name]
    stubs = _write_stubs(tmp_path / "stubs", board)
    driver = tmp_path / "driver.cc"
    driver.write_text(_driver_source(project, manifest, stubs))
    main = _main_file(board)
    sources, includes = _sdk_free_sources(project)
    flags = ["g++"] + CXXFLAGS + [f"-I{stubs}"] + includes + _app_sdk_includes(project) + [
        "-g", "-fsanitize=address,undefined", "-fno-sanitize=vptr", "-fno-sanitize-recover=all"]
    objects = []
    for i, source in enumerate([*_app_sdk_sources(project), str(stubs / "stub_runtime.cc"), str(driver), *sources]):
        objects.append(str(tmp_path / f"o{i}.o"))
        extra = _partition_defines(project) + (["-Dmain=tinyprop_app_main"] if source == main else [])
        _compile(flags + extra + ["-c", source, "-o", objects[-1]], project.out_dir)
    exe = tmp_path / "app"
    _compile(flags + objects + ["-o", str(exe)], project.out_dir)
    result = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    boots = out.split("=== boot")
    assert len(boots) == 3
    assert "no saved state in flash" in boots[1] and "saved the training state" in boots[1]
    assert "restored the training state from slot 0" in boots[2] and "to slot 1, generation 2" in boots[2]
    assert f"step {2 * project.train_steps}: loss" in boots[2]
    assert "ALL CHECKS PASSED" in out
    if manifest["target"]["dtype"] == "int32":  # labels: the default samples' are i % classes; printed from sample 0
        classes = manifest["output_shape"][-1]
        for boot in boots[1:]:
            assert re.findall(r"predicted class \d+, label (-?\d+)", boot) == [
                str(i % classes) for i in range(manifest["batch_size"])], boot


# --------------------------------------------------------------------------------------------------------------
# Stubs: declarations copied from the real headers (TFLM commit 90b983c, ESP-IDF 5.x esp_partition.h, Zephyr
# flash_map.h / flash.h), implemented by a tiny simulated runtime for the host run.
# --------------------------------------------------------------------------------------------------------------
# tflite::MicroMutableOpResolver's Add methods at TFLM commit 90b983c (listed independently of board_projects).
TFLM_ADD_METHODS = """
AddAbs AddAdd AddAddN AddArgMax AddArgMin AddAssignVariable AddAveragePool2D AddBatchMatMul AddBatchToSpaceNd
AddBroadcastArgs AddBroadcastTo AddCallOnce AddCast AddCeil AddCircularBuffer AddConcatenation AddConv2D AddCos
AddCumSum AddDecode AddDelay AddDepthToSpace AddDepthwiseConv2D AddDequantize AddDetectionPostprocess AddDiv
AddDynamicUpdateSlice AddEmbeddingLookup AddEnergy AddElu AddEqual AddEthosU AddExp AddExpandDims AddFftAutoScale
AddFill AddFilterBank AddFilterBankLog AddFilterBankSquareRoot AddFilterBankSpectralSubtraction AddFloor AddFloorDiv
AddFloorMod AddFramer AddFullyConnected AddGather AddGatherNd AddGreater AddGreaterEqual AddHardSwish AddIf AddIrfft
AddL2Normalization AddL2Pool2D AddLeakyRelu AddLess AddLessEqual AddLog AddLogicalAnd AddLogicalNot AddLogicalOr
AddLogistic AddLogSoftmax AddMaximum AddMaxPool2D AddMirrorPad AddMean AddMinimum AddMul AddNeg AddNotEqual
AddOverlapAdd AddPack AddPad AddPadV2 AddPCAN AddPrelu AddQuantize AddReadVariable AddReduceAll AddReduceMax
AddReduceMin AddRelu AddRelu6 AddReshape AddResizeBilinear AddResizeNearestNeighbor AddReverseV2 AddRfft AddRound
AddRsqrt AddSelectV2 AddShape AddSin AddSlice AddSoftmax AddSpaceToBatchNd AddSpaceToDepth AddSplit AddSplitV
AddSqueeze AddSqrt AddSquare AddSquaredDifference AddStacker AddStridedSlice AddSub AddSum AddSvdf AddTanh
AddTransposeConv AddTranspose AddUnpack AddUnidirectionalSequenceLSTM AddVarHandle AddWhile AddWindow AddZerosLike
""".split()

_COMMON_H = r"""
#pragma once
#include <stddef.h>
#include <stdint.h>
extern "C" {
typedef enum TfLiteStatus { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;
typedef struct TfLiteContext TfLiteContext;
typedef enum { kTfLiteNoType = 0, kTfLiteFloat32 = 1, kTfLiteInt32 = 2, kTfLiteUInt8 = 3, kTfLiteInt64 = 4,
               kTfLiteString = 5, kTfLiteBool = 6 } TfLiteType;
typedef struct TfLiteIntArray { int size; int data[]; } TfLiteIntArray;
typedef union TfLitePtrUnion { int32_t* i32; uint32_t* u32; int64_t* i64; float* f; char* raw; const char* raw_const;
                               uint8_t* uint8; bool* b; void* data; } TfLitePtrUnion;
typedef struct TfLiteTensor { TfLiteType type; TfLitePtrUnion data; TfLiteIntArray* dims; size_t bytes; } TfLiteTensor;
typedef struct TfLiteEvalTensor { TfLitePtrUnion data; TfLiteIntArray* dims; TfLiteType type; } TfLiteEvalTensor;
}
"""

_SCHEMA_H = r"""
#pragma once
#include <stdint.h>
namespace tflite {
struct Model { uint32_t version() const; };
const Model* GetModel(const void* buf);
}
"""

_ALLOCATOR_H = r"""
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "tensorflow/lite/c/common.h"
namespace tflite {
enum class MemoryPlannerType { kGreedy, kLinear };
class MicroAllocator {
 public:
  static MicroAllocator* Create(uint8_t* tensor_arena, size_t arena_size,
                                MemoryPlannerType memory_planner_type = MemoryPlannerType::kGreedy);
  size_t used_bytes() const;
  uint8_t* arena;
  size_t arena_size;
};
}
"""

_RESOURCE_H = r"""
#pragma once
#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/micro/micro_allocator.h"
namespace tflite {
class MicroResourceVariables {
 public:
  static MicroResourceVariables* Create(MicroAllocator* allocator, int num_variables);
  int CreateIdIfNoneFound(const char* container, const char* shared_name);
  TfLiteStatus Read(int id, const TfLiteEvalTensor* tensor);
  TfLiteStatus Allocate(int id, TfLiteContext* context, const TfLiteTensor* tensor);
  TfLiteStatus Assign(int id, size_t count_bytes, const void* input_buffer);
  TfLiteStatus ResetAll();
  // ---- stub internals ----
  struct Var { const char* name; uint8_t* buffer; size_t bytes; TfLiteType type; };
  Var vars[64];
  int count;
  int max_count;
 private:
  MicroResourceVariables() = default;
};
}
"""

_MICRO_COMMON_H = r"""
#pragma once
#include <stddef.h>
#include "tensorflow/lite/c/common.h"
struct TfLiteNode;
struct TFLMRegistration {
  void* (*init)(TfLiteContext*, const char*, size_t);
  void (*free)(TfLiteContext*, void*);
  TfLiteStatus (*prepare)(TfLiteContext*, TfLiteNode*);
  TfLiteStatus (*invoke)(TfLiteContext*, TfLiteNode*);
  void (*reset)(TfLiteContext*, void*);
  int32_t builtin_code;
  const char* custom_name;
};
"""

_RESOLVER_H = r"""
#pragma once
#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/micro/micro_common.h"
namespace tflite {
class MicroOpResolver { public: virtual ~MicroOpResolver() = default; };
template <unsigned int tOpCount>
class MicroMutableOpResolver : public MicroOpResolver {
 public:
%(methods)s
  TfLiteStatus AddCustom(const char* name, TFLMRegistration* registration) {
    return name != nullptr && registration != nullptr ? Register() : kTfLiteError;
  }
  unsigned int registered = 0;
 private:
  TfLiteStatus Register() { return ++registered <= tOpCount ? kTfLiteOk : kTfLiteError; }
};
}
"""

_INTERPRETER_H = r"""
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/micro/micro_allocator.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/micro/micro_resource_variable.h"
#include "tensorflow/lite/schema/schema_generated.h"
#define TFLITE_SCHEMA_VERSION (3)
namespace tflite {
class MicroProfilerInterface;
class MicroInterpreter {
 public:
  MicroInterpreter(const Model* model, const MicroOpResolver& op_resolver, uint8_t* tensor_arena,
                   size_t tensor_arena_size, MicroResourceVariables* resource_variables = nullptr,
                   MicroProfilerInterface* profiler = nullptr, bool preserve_all_tensors = false);
  MicroInterpreter(const Model* model, const MicroOpResolver& op_resolver, MicroAllocator* allocator,
                   MicroResourceVariables* resource_variables = nullptr, MicroProfilerInterface* profiler = nullptr);
  ~MicroInterpreter();
  MicroInterpreter(const MicroInterpreter&) = delete;
  MicroInterpreter& operator=(const MicroInterpreter&) = delete;
  TfLiteStatus AllocateTensors();
  TfLiteStatus Invoke();
  TfLiteTensor* input(size_t index);
  TfLiteTensor* output(size_t index);
  size_t arena_used_bytes() const;
  // ---- stub internals ----
  MicroAllocator* allocator_;
  MicroResourceVariables* variables_;
  TfLiteTensor inputs_[3];
  TfLiteTensor outputs_[3];
  bool allocated_ = false;
};
}
"""

_ESP_H = {
    "esp_err.h": "#pragma once\n#include <stdint.h>\ntypedef int esp_err_t;\n#define ESP_OK 0\n#define ESP_FAIL -1\n",
    "esp_partition.h": r"""
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "esp_err.h"
extern "C" {
typedef enum { ESP_PARTITION_TYPE_APP = 0x00, ESP_PARTITION_TYPE_DATA = 0x01, ESP_PARTITION_TYPE_ANY = 0xff }
    esp_partition_type_t;
typedef enum { ESP_PARTITION_SUBTYPE_DATA_NVS = 0x02, ESP_PARTITION_SUBTYPE_ANY = 0xff } esp_partition_subtype_t;
typedef struct esp_flash_t esp_flash_t;
typedef struct {
  esp_flash_t* flash_chip;
  esp_partition_type_t type;
  esp_partition_subtype_t subtype;
  uint32_t address;
  uint32_t size;
  uint32_t erase_size;
  char label[17];
  bool encrypted;
  bool readonly;
} esp_partition_t;
const esp_partition_t* esp_partition_find_first(esp_partition_type_t type, esp_partition_subtype_t subtype,
                                                const char* label);
esp_err_t esp_partition_read(const esp_partition_t* partition, size_t src_offset, void* dst, size_t size);
esp_err_t esp_partition_write(const esp_partition_t* partition, size_t dst_offset, const void* src, size_t size);
esp_err_t esp_partition_erase_range(const esp_partition_t* partition, size_t offset, size_t size);
}
""",
    "esp_timer.h": "#pragma once\n#include <stdint.h>\nextern \"C\" int64_t esp_timer_get_time(void);\n",
    "freertos/FreeRTOS.h": "#pragma once\n#include <stdint.h>\ntypedef uint32_t TickType_t;\n"
                           "#define pdMS_TO_TICKS(x) ((TickType_t)(x))\n",
    "freertos/task.h": "#pragma once\n#include \"freertos/FreeRTOS.h\"\nextern \"C\" void vTaskDelay(const TickType_t xTicksToDelay);\n",
}

_ZEPHYR_H = {
    "zephyr/kernel.h": "#pragma once\n#include <stdint.h>\nextern \"C\" {\nint64_t k_uptime_get(void);\nvoid k_yield(void);\n}\n",
    "zephyr/device.h": "#pragma once\nstruct device { const char* name; };\n",
    "zephyr/storage/flash_map.h": r"""
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "zephyr/device.h"
extern "C" {
struct flash_area { uint8_t fa_id; uint8_t fa_device_id; uint16_t pad16; off_t fa_off; size_t fa_size;
                    const struct device* fa_dev; };
int flash_area_open(uint8_t id, const struct flash_area** fa);
void flash_area_close(const struct flash_area* fa);
int flash_area_read(const struct flash_area* fa, off_t off, void* dst, size_t len);
int flash_area_write(const struct flash_area* fa, off_t off, const void* src, size_t len);
int flash_area_erase(const struct flash_area* fa, off_t off, size_t len);
uint32_t flash_area_align(const struct flash_area* fa);
const struct device* flash_area_get_device(const struct flash_area* fa);
}
// Only the partition labels the project's devicetree defines exist (-DTINYPROP_STUB_PARTITION_<label>=1). As in
// Zephyr (FIXED_PARTITION_ID -> DT_NODELABEL -> DT_CAT), the label argument is macro-expanded before pasting.
#define FIXED_PARTITION_ID(label) TINYPROP_STUB_PARTITION_ID(label)
#define TINYPROP_STUB_PARTITION_ID(label) ((uint8_t)TINYPROP_STUB_PARTITION_##label)
""",
    "zephyr/drivers/flash.h": r"""
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "zephyr/device.h"
extern "C" {
struct flash_pages_info { off_t start_offset; size_t size; uint32_t index; };
int flash_get_page_info_by_offs(const struct device* dev, off_t offset, struct flash_pages_info* info);
}
""",
}

# A tiny simulated runtime behind the stubs (host run only).
_STUB_RUNTIME = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "stub_model.h"
#if __has_include("esp_partition.h")
#include "esp_partition.h"
#include "esp_timer.h"
#include "freertos/task.h"
#endif
#if __has_include("zephyr/storage/flash_map.h")
#include "zephyr/drivers/flash.h"
#include "zephyr/kernel.h"
#include "zephyr/storage/flash_map.h"
#endif

#define STUB_CHECK(c) do { if (!(c)) { printf("STUB CHECK FAILED %s:%d: %s\n", __FILE__, __LINE__, #c); abort(); } } while (0)

static size_t TypeSize(TfLiteType t) { return t == kTfLiteInt64 ? 8 : 4; }
static size_t EvalTensorBytes(const TfLiteEvalTensor* t) {
  size_t n = 1;
  for (int i = 0; i < t->dims->size; ++i) n *= (size_t)t->dims->data[i];
  return n * TypeSize(t->type);
}

namespace tflite {
static Model g_model;
uint32_t Model::version() const { return 3; }
const Model* GetModel(const void*) { return &g_model; }

static MicroAllocator g_allocator;
static size_t g_used = 0;
MicroAllocator* MicroAllocator::Create(uint8_t* arena, size_t size, MemoryPlannerType) {
  g_allocator.arena = arena; g_allocator.arena_size = size; g_used = 0; return &g_allocator;
}
size_t MicroAllocator::used_bytes() const { return g_used; }
static uint8_t* Persistent(size_t bytes) {
  bytes = (bytes + 15) / 16 * 16;
  STUB_CHECK(g_used + bytes <= g_allocator.arena_size);
  uint8_t* p = g_allocator.arena + g_allocator.arena_size - g_used - bytes;
  g_used += bytes;
  return p;
}

static MicroResourceVariables* g_vars_storage;
MicroResourceVariables* MicroResourceVariables::Create(MicroAllocator*, int n) {
  static MicroResourceVariables instance;  // one interpreter at a time (each boot creates it anew)
  instance.count = 0; instance.max_count = n; g_vars_storage = &instance;
  return &instance;
}
int MicroResourceVariables::CreateIdIfNoneFound(const char* container, const char* shared_name) {
  for (int i = 0; i < count; ++i)
    if ((container == nullptr || !strcmp(container, "")) && !strcmp(shared_name, vars[i].name)) return i;
  if (count >= max_count) return -1;
  vars[count] = Var{shared_name, nullptr, 0, kTfLiteNoType};
  return count++;
}
TfLiteStatus MicroResourceVariables::Read(int id, const TfLiteEvalTensor* t) {
  STUB_CHECK(id >= 0 && id < count && vars[id].buffer != nullptr);
  STUB_CHECK(EvalTensorBytes(t) == vars[id].bytes && t->type == vars[id].type);
  memcpy(t->data.raw, vars[id].buffer, vars[id].bytes);
  return kTfLiteOk;
}
TfLiteStatus MicroResourceVariables::Assign(int id, size_t count_bytes, const void* input) {
  STUB_CHECK(id >= 0 && id < count && vars[id].buffer != nullptr && count_bytes == vars[id].bytes);
  memcpy(vars[id].buffer, input, count_bytes);
  return kTfLiteOk;
}

static TfLiteTensor MakeTensor(const stub::TensorSpec& s) {
  TfLiteTensor t = {};
  t.type = s.type; t.bytes = s.bytes; t.data.raw = reinterpret_cast<char*>(Persistent(s.bytes));
  return t;
}
MicroInterpreter::MicroInterpreter(const Model*, const MicroOpResolver&, MicroAllocator* allocator,
                                   MicroResourceVariables* variables, MicroProfilerInterface*)
    : allocator_(allocator), variables_(variables) {}
MicroInterpreter::~MicroInterpreter() {}
static bool g_initialised;
TfLiteStatus MicroInterpreter::AllocateTensors() {
  // Prepare: VAR_HANDLE creates every variable, ASSIGN_VARIABLE allocates and zeroes it (TFLM does the same).
  STUB_CHECK(variables_ != nullptr && variables_->max_count == stub::kNumVars);
  for (int i = 0; i < stub::kNumVars; ++i) {
    const int id = variables_->CreateIdIfNoneFound("", stub::kVars[i].name);
    STUB_CHECK(id == i);
    variables_->vars[id].bytes = stub::kVars[i].bytes;
    variables_->vars[id].type = stub::kVars[i].type;
    variables_->vars[id].buffer = Persistent(stub::kVars[i].bytes);
    memset(variables_->vars[id].buffer, 0, stub::kVars[i].bytes);
  }
  for (int i = 0; i < 3; ++i) { inputs_[i] = MakeTensor(stub::kInputs[i]); outputs_[i] = MakeTensor(stub::kOutputs[i]); }
  g_initialised = false;
  allocated_ = true;
  return kTfLiteOk;
}
TfLiteStatus MicroInterpreter::Invoke() {
  STUB_CHECK(allocated_);
  if (!g_initialised) {  // CALL_ONCE: the initialiser assigns the exported values
    for (int i = 0; i < variables_->count; ++i) {
      MicroResourceVariables::Var& v = variables_->vars[i];
      for (size_t e = 0; e < v.bytes / TypeSize(v.type); ++e) {
        if (v.type == kTfLiteFloat32) reinterpret_cast<float*>(v.buffer)[e] = 0.5f;
        else if (v.type == kTfLiteInt32) reinterpret_cast<int32_t*>(v.buffer)[e] = 0;
        else reinterpret_cast<int64_t*>(v.buffer)[e] = 0;
      }
    }
    g_initialised = true;
  }
  const int32_t mode = inputs_[stub::kModeInput].data.i32[0];
  STUB_CHECK(mode == 0 || mode == 1);
  if (mode == 1) {
    for (int i = 0; i < variables_->count; ++i) {
      MicroResourceVariables::Var& v = variables_->vars[i];
      for (size_t e = 0; e < v.bytes / TypeSize(v.type); ++e) {
        if (v.type == kTfLiteFloat32) reinterpret_cast<float*>(v.buffer)[e] += 1.0f;
        else if (v.type == kTfLiteInt32) reinterpret_cast<int32_t*>(v.buffer)[e] += 1;
        else reinterpret_cast<int64_t*>(v.buffer)[e] += 1;
      }
    }
  }
  outputs_[stub::kLossOutput].data.f[0] = 1.0f / (1.0f + (float)stub::StepsTrained(variables_));
  // TFLM's planner may give an input's buffer to other tensors once it has been read: whatever reads an input
  // after Invoke, or invokes without setting every input again, finds all bits set (labels -1, mode -1).
  for (int i = 0; i < 3; ++i) memset(inputs_[i].data.raw, 0xff, inputs_[i].bytes);
  return kTfLiteOk;
}
TfLiteTensor* MicroInterpreter::input(size_t i) { return i < 3 ? &inputs_[i] : nullptr; }
TfLiteTensor* MicroInterpreter::output(size_t i) { return i < 3 ? &outputs_[i] : nullptr; }
size_t MicroInterpreter::arena_used_bytes() const { return g_used; }
}  // namespace tflite

tflite::MicroResourceVariables* stub_variables() { return tflite::g_vars_storage; }

// ---- RAM-backed NOR flash partition (erase -> 0xFF, program ANDs) ------------------------------------------------
static uint8_t g_flash[stub::kPartitionBytes];
static bool g_flash_ready;
static void FlashInit() { if (!g_flash_ready) { memset(g_flash, 0xFF, sizeof(g_flash)); g_flash_ready = true; } }
static int FlashWrite(size_t off, const void* src, size_t n) {
  if (off + n > sizeof(g_flash)) return -22;
  for (size_t i = 0; i < n; ++i) g_flash[off + i] &= static_cast<const uint8_t*>(src)[i];
  return 0;
}

#if __has_include("esp_partition.h")
static esp_partition_t g_partition;
extern "C" const esp_partition_t* esp_partition_find_first(esp_partition_type_t type, esp_partition_subtype_t,
                                                           const char* label) {
  FlashInit();
  if (type != ESP_PARTITION_TYPE_DATA || strcmp(label, "tinyprop") != 0) return nullptr;
  g_partition.size = sizeof(g_flash); g_partition.erase_size = 4096;
  return &g_partition;
}
extern "C" esp_err_t esp_partition_read(const esp_partition_t*, size_t off, void* dst, size_t n) {
  if (off + n > sizeof(g_flash)) return -1;
  memcpy(dst, g_flash + off, n); return ESP_OK;
}
extern "C" esp_err_t esp_partition_write(const esp_partition_t*, size_t off, const void* src, size_t n) {
  return FlashWrite(off, src, n) == 0 ? ESP_OK : -1;
}
extern "C" esp_err_t esp_partition_erase_range(const esp_partition_t*, size_t off, size_t n) {
  if (off % 4096 || n % 4096 || off + n > sizeof(g_flash)) return -1;
  memset(g_flash + off, 0xFF, n); return ESP_OK;
}
extern "C" int64_t esp_timer_get_time(void) { return 0; }
extern "C" void vTaskDelay(const TickType_t) {}
#endif

#if __has_include("zephyr/storage/flash_map.h")
static struct flash_area g_area;
static struct device g_dev;
extern "C" int flash_area_open(uint8_t id, const struct flash_area** fa) {
  FlashInit();
  if (id != 1) return -2;
  g_area.fa_size = sizeof(g_flash); g_area.fa_off = 0xf8000; g_area.fa_dev = &g_dev;
  *fa = &g_area; return 0;
}
extern "C" void flash_area_close(const struct flash_area*) {}
extern "C" int flash_area_read(const struct flash_area*, off_t off, void* dst, size_t n) {
  if ((size_t)off + n > sizeof(g_flash)) return -22;
  memcpy(dst, g_flash + off, n); return 0;
}
extern "C" int flash_area_write(const struct flash_area*, off_t off, const void* src, size_t n) {
  if (off % 4 || n % 4) return -22;
  return FlashWrite((size_t)off, src, n);
}
extern "C" int flash_area_erase(const struct flash_area*, off_t off, size_t n) {
  if (off % 4096 || n % 4096 || (size_t)off + n > sizeof(g_flash)) return -22;
  memset(g_flash + off, 0xFF, n); return 0;
}
extern "C" uint32_t flash_area_align(const struct flash_area*) { return 4; }
extern "C" const struct device* flash_area_get_device(const struct flash_area* fa) { return fa->fa_dev; }
extern "C" int flash_get_page_info_by_offs(const struct device*, off_t, struct flash_pages_info* info) {
  info->size = 4096; info->start_offset = 0; info->index = 0; return 0;
}
extern "C" int64_t k_uptime_get(void) { return 0; }
extern "C" void k_yield(void) {}
#endif
"""


def _write_stubs(root, board):
    root.mkdir(parents=True, exist_ok=True)
    methods = "\n".join(f"  TfLiteStatus {m}() {{ return Register(); }}" for m in TFLM_ADD_METHODS)
    files = {
        "tensorflow/lite/c/common.h": _COMMON_H,
        "tensorflow/lite/schema/schema_generated.h": _SCHEMA_H,
        "tensorflow/lite/micro/micro_allocator.h": _ALLOCATOR_H,
        "tensorflow/lite/micro/micro_resource_variable.h": _RESOURCE_H,
        "tensorflow/lite/micro/micro_mutable_op_resolver.h": _RESOLVER_H % {"methods": methods},
        "tensorflow/lite/micro/micro_common.h": _MICRO_COMMON_H,
        "tensorflow/lite/micro/micro_interpreter.h": _INTERPRETER_H,
        "stub_runtime.cc": _STUB_RUNTIME,
    }
    files.update(_ESP_H if board.startswith("esp") else _ZEPHYR_H)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


_TYPES = {"float32": "kTfLiteFloat32", "int32": "kTfLiteInt32", "int64": "kTfLiteInt64"}


def _driver_source(project, manifest, stubs):
    """stub_model.h (the model's variables and I/O for the simulated runtime) + a main that boots twice."""
    def spec(d):
        bytes_ = int(np.prod(d["shape"])) * (8 if d["dtype"] == "int64" else 4) if d["shape"] else 4
        return f"{{{_TYPES[d['dtype']]}, {bytes_}}}"
    ins = sorted(manifest["tflm"]["inputs"], key=lambda d: d["index"])
    outs = sorted(manifest["tflm"]["outputs"], key=lambda d: d["index"])
    variables = ",\n".join(f'  {{"{v["name"]}", {v["bytes"]}, {_TYPES[v["dtype"]]}}}' for v in project.state_variables)
    stub_model = f"""
#pragma once
#include "tensorflow/lite/micro/micro_resource_variable.h"
namespace stub {{
struct VarSpec {{ const char* name; size_t bytes; TfLiteType type; }};
struct TensorSpec {{ TfLiteType type; size_t bytes; }};
constexpr int kNumVars = {len(project.state_variables)};
constexpr VarSpec kVars[kNumVars] = {{
{variables}
}};
constexpr TensorSpec kInputs[3] = {{{', '.join(spec(d) for d in ins)}}};
constexpr TensorSpec kOutputs[3] = {{{', '.join(spec(d) for d in outs)}}};
constexpr int kModeInput = {next(d['index'] for d in ins if d['name'] == 'mode')};
constexpr int kLossOutput = {next(d['index'] for d in outs if d['name'] == 'loss')};
constexpr size_t kPartitionBytes = {project.partition_bytes};
inline long StepsTrained(tflite::MicroResourceVariables* v) {{
  for (int i = 0; i < v->count; ++i)
    if (!__builtin_strcmp(v->vars[i].name, "iterations")) return *reinterpret_cast<int32_t*>(v->vars[i].buffer);
  return 0;
}}
}}  // namespace stub
"""
    (stubs / "stub_model.h").write_text(stub_model)
    entry = "app_main();" if project.board.startswith("esp") else "if (tinyprop_app_main() != 0) return 1;"
    decl = 'extern "C" void app_main(void);' if project.board.startswith("esp") else "int tinyprop_app_main(void);"
    steps = project.train_steps
    return f"""
#include <stdio.h>
#include <string.h>
#include "tensorflow/lite/micro/micro_resource_variable.h"
#include "stub_model.h"
{decl}
extern tflite::MicroResourceVariables* stub_variables();
int main() {{
  for (int boot = 1; boot <= 2; ++boot) {{
    printf("=== boot %d\\n", boot);
    {entry}
    tflite::MicroResourceVariables* v = stub_variables();
    for (int i = 0; i < v->count; ++i) {{
      const tflite::MicroResourceVariables::Var& var = v->vars[i];
      const double expected = var.type == kTfLiteFloat32 ? 0.5 + boot * {steps} : boot * {steps};
      const double got = var.type == kTfLiteFloat32 ? reinterpret_cast<float*>(var.buffer)[0]
                                                    : reinterpret_cast<int32_t*>(var.buffer)[0];
      if (got != expected) {{
        printf("MISMATCH %s: %f != %f\\n", var.name, got, expected);
        return 1;
      }}
    }}
  }}
  printf("ALL CHECKS PASSED\\n");
  return 0;
}}
"""


# --------------------------------------------------------------------------------------------------------------
# CLI and names
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_export_with_board(tmp_path, capsys):
    import keras

    from tinyprop_tf import cli

    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(2, name="fc")(keras.layers.Dense(5, activation="relu")(inp)))
    path = tmp_path / "m.keras"
    model.save(path)
    out = tmp_path / "export"
    assert cli.main(["export", str(path), "--out", str(out), "--board", "esp8266"]) == 2
    assert "valid boards: esp32s3, esp32c3, nrf52840dk, nrf5340dk" in capsys.readouterr().err
    assert not out.exists()  # refused before the export ran
    assert cli.main(["export", str(path), "--out", str(out), "--batch-size", "2", "--policy", "tinyprop",
                     "--board", "nRF52840DK"]) == 0
    printed = capsys.readouterr().out
    assert f"Wrote {out}/nrf52840dk_project/ (zephyr project" in printed and "FITS" in printed
    assert (out / "nrf52840dk_project" / "src" / "main.cpp").is_file()
    assert (out / "nrf52840dk_project" / "west.yml").is_file()


# --------------------------------------------------------------------------------------------------------------
# Fast projects: train_fast.tflite on the TinyProp TFLM custom operators
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fast_export(tmp_path_factory):
    import tinyprop_tf as tp
    from tinyprop_tf import models
    from tinyprop_tf.converters import export_training_model

    path = tmp_path_factory.mktemp("fast_export")
    model = models.ds_cnn(input_shape=(12, 6, 1), num_classes=3, filters=8, blocks=1)
    manifest = export_training_model(model, tp.TinyProp(), optimizer="sgd", learning_rate=0.01, batch_size=2,
                                     out_dir=str(path), fast=True)
    return str(path), manifest


def _c_array_bytes(source):
    body = source[source.index("g_tinyprop_train_model[] = {"):source.index("};")]
    return bytes(int(v, 16) for v in re.findall(r"0x([0-9a-f]{2})", body))


@pytest.mark.slow
@pytest.mark.parametrize("board", ["esp32s3", "nrf5340dk"])
def test_fast_project_embeds_train_fast_and_registers_the_tinyprop_ops(fast_export, board, tmp_path):
    export_dir, manifest = fast_export
    project = write_board_project(export_dir, board, str(tmp_path / "p"))
    src = _src_dir(board)
    config = _read(project, f"{src}/tinyprop_app_config.h")
    ops = manifest["tflm_fast"]["ops"]
    custom = sorted(op[7:] for op in ops if op.startswith("CUSTOM:"))
    # Dense, Conv2D and depthwise layers with plain SGD: every op but the unfused Dense backward, the generic
    # state assignment (every layer selects with a TinyProp op, which updates its running max itself) and the
    # recomputed block's (export with recompute only).
    assert project.custom_ops == custom and custom == sorted(
        device_ops.DEVICE_OPS - {device_ops.DENSE_BACKWARD, device_ops.ASSIGN, device_ops.CONV2D_POOL_FORWARD,
                                 device_ops.SELECT_CHANNELS_MASKED, device_ops.CONV2D_BACKWARD_MASKED})
    builtin = _builtin_ops(config)
    added = _custom_ops(config)
    assert {op: int(n) for _, op, n in builtin} == {op: n for op, n in ops.items() if not op.startswith("CUSTOM:")}
    assert {name: int(n) for name, function, n in added if function == f"Register_{name}"} == \
        {op: ops["CUSTOM:" + op] for op in custom}
    with open(os.path.join(MICRO, "tflm", "tinyprop_tflm.h"), encoding="utf-8") as f:
        glue = f.read()
    assert all(f"TFLMRegistration {function}();" in glue for _, function, _ in added)
    assert int(_define(config, "TINYPROP_NUM_OPS")) == len(ops) and _define(config, "TINYPROP_HAS_CUSTOM_OPS") == "1"
    # the embedded model is train_fast.tflite, byte for byte, with its own indices
    with open(os.path.join(export_dir, "train_fast.tflite"), "rb") as f:
        assert _c_array_bytes(_read(project, f"{src}/model_data.cc")) == f.read()
    model_h = _read(project, f"{src}/model_data.h")
    for d in manifest["tflm_fast"]["inputs"] + manifest["tflm_fast"]["outputs"][:3]:
        kind = "INPUT" if d in manifest["tflm_fast"]["inputs"] else "OUTPUT"
        assert int(_define(model_h, f"TINYPROP_{kind}_{d['name'].upper()}")) == d["index"]
    # its training state is in place: the state outputs in layout order, starting from an image in flash whose
    # first weights.bin bytes are weights.bin and whose other tensors hold their fills
    state = manifest["tflm_fast"]["state"]
    assert _define(config, "TINYPROP_STATE_IN_OUTPUTS") == "1"
    assert int(_define(config, "TINYPROP_FIRST_STATE_OUTPUT")) == state[0]["output"] == 3
    assert [v["name"] for v in project.state_variables] == [r["name"] for r in state]
    source = _read(project, f"{src}/tinyprop_state.cc")
    image = bytes(int(b, 16) for b in re.findall(r"0x([0-9a-f]{2})", source.split("g_tinyprop_initial_state")[1]))
    with open(os.path.join(export_dir, "weights.bin"), "rb") as f:
        weights_bin = f.read()
    assert len(image) == project.state_bytes and image[:len(weights_bin)] == weights_bin
    for v in project.state_variables:
        if not v["is_weight"]:
            dtype = "<f4" if v["dtype"] == "float32" else "<i4"
            np.testing.assert_array_equal(np.frombuffer(image[v["offset"]:v["offset"] + v["bytes"]], dtype),
                                          np.full(v["elements"], v["fill"], dtype))
    # the kernels and the glue, copied unchanged and all in the build
    kernel_root = ("main/" if board.startswith("esp") else "lib/") + "tinyprop_kernels"
    build = _read(project, "main/CMakeLists.txt" if board.startswith("esp") else "CMakeLists.txt")
    micro = MICRO
    expected = [os.path.join("src", n) for n in os.listdir(os.path.join(micro, "src"))] + \
        ["src/tinyprop_tflm.cc", "src/tinyprop_tflm.h"] + \
        [os.path.join("include/tinyprop", n) for n in os.listdir(os.path.join(micro, "include/tinyprop"))]
    for rel in expected:
        source = os.path.join(micro, "tflm" if "tinyprop_tflm" in rel else os.path.dirname(rel),
                              os.path.basename(rel))
        with open(source, encoding="utf-8") as f:
            assert _read(project, f"{kernel_root}/{rel}") == f.read(), rel
        if rel.endswith(".cc"):
            assert f"tinyprop_kernels/{rel}" in build, rel
    assert "-ffp-contract=off" in build
    assert "TinyProp custom operators" in _read(project, "README.md")

    # SDK-free kernels cross-compile from the project copy; main compiles against the SDK stubs
    includes = [f"-I{kernel_root}/include", f"-I{kernel_root}/src"]
    for rel in expected:
        if rel.endswith(".cc") and "tinyprop_tflm" not in rel:
            _compile(CROSS["arm"] + CXXFLAGS + includes + ["-O2", "-c", f"{kernel_root}/{rel}", "-o",
                                                            str(tmp_path / (os.path.basename(rel) + ".o"))],
                     project.out_dir)
    stubs = _write_stubs(tmp_path / "stubs", board)
    _, sdk_free_includes = _sdk_free_sources(project)
    for source in _app_sdk_sources(project):
        _compile(["g++"] + CXXFLAGS + [f"-I{stubs}"] + sdk_free_includes + _app_sdk_includes(project) + includes +
                 _partition_defines(project) + ["-c", source, "-o", str(tmp_path / "app.o")], project.out_dir)


@pytest.mark.slow
def test_fast_is_optional_and_refused_without_train_fast(fast_export, exports, tmp_path):
    export_dir, _ = fast_export
    plain = write_board_project(export_dir, "esp32c3", str(tmp_path / "plain"), fast=False)
    assert plain.custom_ops == [] and not any("tinyprop_kernels" in f for f in plain.files)
    with open(os.path.join(export_dir, "model_data.cc"), encoding="utf-8") as f:
        assert _read(plain, "main/model_data.cc") == f.read()
    with pytest.raises(BoardProjectError, match="no train_fast.tflite: export with fast=True"):
        write_board_project(exports["ce_sgd"][0], "esp32c3", str(tmp_path / "nofast"), fast=True)
    assert not (tmp_path / "nofast").exists()


# --------------------------------------------------------------------------------------------------------------
# Generating a project again: the user's edits to the main file are never overwritten silently
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def quick_write(tmp_path_factory):
    """write_board_project from one small export made without measuring the arena (a few seconds)."""
    import functools

    import tinyprop_tf as tp
    from tinyprop_tf import models
    from tinyprop_tf.converters import export_training_model

    path = str(tmp_path_factory.mktemp("quick_export"))
    export_training_model(models.mlp(input_shape=(16,), num_classes=4, hidden=(12,)), tp.TinyProp(),
                          learning_rate=0.01, batch_size=2, out_dir=path, measure_arena=False)
    return functools.partial(write_board_project, path, arena_bytes=64 * 1024)


@pytest.mark.parametrize("board", ["esp32c3", "nrf5340dk"])
def test_regenerating_keeps_an_edited_main_and_writes_the_new_one_beside_it(quick_write, board, tmp_path):
    """Observation: writing the project again overwrote main/main.cc (src/main.cpp), where the README says to edit
    SetInputs()."""
    from tinyprop_tf import outdir

    out = tmp_path / "p"
    main = _main_file(board)
    config = f"{_src_dir(board)}/tinyprop_app_config.h"
    first = quick_write(board, str(out))
    assert outdir.PROJECT_RECORD in first.files and first.kept_user_files == []
    generated = (out / main).read_text()
    assert "SampleBatches batches(" in generated and outdir.PROJECT_RECORD in _read(first, "README.md")

    # unchanged since generated: replaced, nothing beside it
    (out / "samples.h").write_text("stale file of ours")  # listed below as generated: must not survive
    record = json.loads((out / outdir.PROJECT_RECORD).read_text())
    record["files"]["samples.h"] = outdir.sha256_file(out / "samples.h")
    (out / outdir.PROJECT_RECORD).write_text(json.dumps(record))
    notices = []
    again = quick_write(board, str(out), steps=3, print_fn=notices.append)
    assert again.kept_user_files == [] and notices == [] and not (out / (main + ".new")).exists()
    assert "#define TINYPROP_TRAIN_STEPS 3\n" in (out / config).read_text() and not (out / "samples.h").exists()

    # edited: kept, the new one beside it, one notice; build output and the user's files come along
    edited = (out / main).read_text().replace("  tinyprop::app::SampleBatches batches(",
                                              "  // reads my sensor\n  tinyprop::app::SampleBatches batches(")
    assert edited != generated
    (out / main).write_text(edited)
    (out / "build").mkdir()
    (out / "build" / "app.elf").write_bytes(b"\x7fELF")
    (out / "my_notes.txt").write_text("mine")
    project = quick_write(board, str(out), steps=4, print_fn=notices.append)
    assert project.kept_user_files == [main] and (out / main).read_text() == edited
    assert (out / (main + ".new")).read_text() == generated and "TINYPROP_TRAIN_STEPS 4\n" in (out / config).read_text()
    assert notices == [f"{out / main}: kept (it differs from what tinyprop generated); the regenerated file is "
                       f"{out / main}.new: merge it into yours"]
    assert (out / "build" / "app.elf").read_bytes() == b"\x7fELF" and (out / "my_notes.txt").read_text() == "mine"
    # still edited next time (it differs from what was generated last, now in the .new file): kept again
    quick_write(board, str(out), steps=5, print_fn=notices.append)
    assert (out / main).read_text() == edited and (out / (main + ".new")).read_text() == generated
    assert "TINYPROP_TRAIN_STEPS 5\n" in (out / config).read_text()
    assert sorted(os.listdir(tmp_path)) == ["p"]


def test_a_folder_that_is_not_this_boards_project_needs_overwrite(quick_write, tmp_path):
    out = tmp_path / "p"
    quick_write("esp32s3", str(out))
    with pytest.raises(BoardProjectError, match="holds a board project for esp32s3, not for esp32c3: pass --overwrite"):
        quick_write("esp32c3", str(out))
    main = out / "main" / "main.cc"
    main.write_text(main.read_text() + "// mine\n")
    with pytest.raises(BoardProjectError, match=r"main/main.cc differs from what tinyprop generated and a "
                                                r"nrf52840dk project has no such file"):
        quick_write("nrf52840dk", str(out), overwrite=True)
    project = quick_write("esp32c3", str(out), overwrite=True, print_fn=lambda line: None)
    assert project.kept_user_files == ["main/main.cc"] and main.read_text().endswith("// mine\n")
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("mine")
    with pytest.raises(BoardProjectError, match="already holds files"):
        quick_write("esp32s3", str(other))
    assert os.listdir(other) == ["thesis.tex"]


@pytest.mark.slow
def test_cli_export_overwrite_with_board_keeps_the_edited_main(tmp_path):
    """`tinyprop export --overwrite --board`: the export folder (with its project) is replaced as a whole, but the
    edited src/main.cpp survives, with the new one beside it; without --board the edit would be lost: refused."""
    import sys

    from tinyprop_tf import models

    models.mlp(input_shape=(16,), num_classes=4, hidden=(12,)).save(tmp_path / "m.keras")
    out = tmp_path / "E"
    args = ["-m", "tinyprop_tf.cli", "export", str(tmp_path / "m.keras"), "--batch-size", "2", "--out", str(out)]

    def cli(*extra):
        return subprocess.run([sys.executable, *args, *extra], capture_output=True, text=True, timeout=600)

    assert cli("--board", "nrf52840dk").returncode == 0
    main = out / "nrf52840dk_project" / "src" / "main.cpp"
    edited = main.read_text() + "// my SetInputs() changes\n"
    main.write_text(edited)
    proc = cli("--overwrite")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{main} differs from what tinyprop generated, and --overwrite would delete it" in proc.stderr
    assert "(--board nrf52840dk)" in proc.stderr and main.read_text() == edited
    proc = cli("--overwrite", "--board", "nrf52840dk", "--learning-rate", "0.5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{main}: kept (it differs from what tinyprop generated); the regenerated file is {main}.new" in proc.stdout
    assert main.read_text() == edited and (out / "nrf52840dk_project" / "src" / "main.cpp.new").is_file()
    assert json.loads((out / "manifest.json").read_text())["optimizer"]["learning_rate"] == pytest.approx(0.5)


# --------------------------------------------------------------------------------------------------------------
# Manifests validated offline by the SDKs' own tools (PyPI idf-component-manager and west, in the dev extra)
# --------------------------------------------------------------------------------------------------------------
def _dev_tool(name):
    """A console script of the dev extra, from this interpreter's environment first."""
    import sys

    path = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    assert path, f"{name} is missing: pip install -e '.[dev]' (idf-component-manager, west)"
    return path


def _compote_lint(manifest):
    return subprocess.run([_dev_tool("compote"), "manifest", "lint", str(manifest)], capture_output=True,
                          text=True, timeout=120)


def test_idf_component_manifest_passes_compote_lint_and_a_broken_one_fails(quick_write, tmp_path):
    project = quick_write("esp32s3", str(tmp_path / "p"))
    manifest = tmp_path / "p" / "main" / "idf_component.yml"
    result = _compote_lint(manifest)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "broken" / "idf_component.yml"
    broken.parent.mkdir()
    text = _read(project, "main/idf_component.yml")
    assert f'"{board_projects.ESP_TFLM_VERSION}"' in text
    broken.write_text(text.replace(f'"{board_projects.ESP_TFLM_VERSION}"', '"^^1.4"'))
    result = _compote_lint(broken)
    assert result.returncode != 0 and "Invalid version specification" in result.stdout + result.stderr


def _west_validate(west_yml: str, root):
    """`west manifest --validate` in a throwaway workspace: the project folder as the manifest repository (the
    manifest's self.path), and an empty stand-in for the nRF Connect SDK it imports, which west must read to
    resolve the manifest and which cannot be cloned offline."""
    app = root / "tinyprop_train"
    app.mkdir(parents=True)
    (app / "west.yml").write_text(west_yml)
    nrf = root / "nrf"
    nrf.mkdir()
    (nrf / "west.yml").write_text("manifest:\n  projects: []\n")
    git = ["git", "-C", str(nrf), "-c", "user.name=test", "-c", "user.email=test@example.com"]
    for args in (["init", "-q"], ["add", "west.yml"], ["commit", "-qm", "stand-in"], ["branch", "manifest-rev"]):
        subprocess.run(git + args, check=True, capture_output=True, timeout=60)
    env = {k: v for k, v in os.environ.items() if k not in ("ZEPHYR_BASE", "WEST_CONFIG_LOCAL")}
    west = _dev_tool("west")
    subprocess.run([west, "init", "-l", str(app)], cwd=root, check=True, capture_output=True, timeout=60, env=env)
    return subprocess.run([west, "manifest", "--validate"], cwd=root, capture_output=True, text=True, timeout=60,
                          env=env)


def test_west_manifest_validates_and_a_broken_one_fails(quick_write, tmp_path):
    project = quick_write("nrf52840dk", str(tmp_path / "p"))
    text = _read(project, "west.yml")
    result = _west_validate(text, tmp_path / "good")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "url-base:" in text
    result = _west_validate(text.replace("url-base:", "url_base:", 1), tmp_path / "bad")
    assert result.returncode != 0


def test_templates_ship_with_the_package_and_every_placeholder_is_filled(quick_write, tmp_path):
    """The templates are package data of tinyprop_tf.converters (found from an editable install too), the four
    boards' projects use every one but those of fast projects, of a model that does not fit and of a state too
    large for the board's storage partition, and no generated text keeps a $placeholder."""
    import importlib.resources

    def templates(folder, prefix=""):
        for entry in folder.iterdir():
            if entry.is_dir():
                yield from templates(entry, f"{prefix}{entry.name}/")
            elif entry.name.endswith(".tpl"):
                yield prefix + entry.name[:-len(".tpl")]

    shipped = set(templates(importlib.resources.files("tinyprop_tf.converters") / "templates"))
    conditional = {"readme/fast_ops.md", "readme/fast_files.md", "readme/does_not_fit.md",
                   "zephyr/boards/own_partition.overlay", "app/initial_state.cc", "readme/state_setup_in_place.md",
                   "readme/state_save_in_place.md"}
    assert conditional < shipped and "esp-idf/main/idf_component.yml" in shipped
    used = set()
    original = board_projects._render

    def recording(template, **values):
        used.add(template)
        return original(template, **values)

    board_projects._render = recording
    try:
        written = [quick_write(board, str(tmp_path / board)) for board in BOARDS]
    finally:
        board_projects._render = original
    assert used <= shipped and shipped - used == conditional
    leftover = re.compile(r"\$(?!ENV\{|\{COMPONENT_LIB\}|IDF_PATH)\{?[A-Za-z_]")
    for project in written:
        for rel in project.files:
            if not rel.endswith(".json"):
                assert not leftover.search(_read(project, rel)), rel
