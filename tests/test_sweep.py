"""``tinyprop sweep`` on real Ray: spec errors before Ray starts, the library without Ray, a local sweep equal to
the same runs one by one, an interrupted sweep resumed, a two-node cluster that loses its worker node mid-sweep."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tinyprop_tf import sweep_spec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
# benchmarks/ is not a package
from _ray_cluster import LocalCluster, live_in_session, ray_env, stop_session  # noqa: E402

TINYPROP_POLICY = "tinyprop:s_min=0.1,s_max=0.9,zeta=0.5"
# 2 policies x 2 seeds on the embedded MNIST, 200 samples, 2 epochs: a trial takes a few seconds.
SMALL_SPEC = f"""
[task]
name = "mnist_demo"
finetune_samples = 200

[model]
source = "mlp"
pretrain_epochs = 2

[grid]
policy = ["dense", "{TINYPROP_POLICY}"]
epochs = 2
seed = [0, 1]
"""


def _write_spec(folder, text=SMALL_SPEC, name="spec.toml"):
    path = os.path.join(folder, name)
    with open(path, "w") as handle:
        handle.write(textwrap.dedent(text))
    return path


def _sweep_command(spec, out, *options):
    return [sys.executable, "-m", "tinyprop_tf.cli", "sweep", spec, "--out", out, *options]


def _records(out):
    folder = os.path.join(out, "trials")
    if not os.path.isdir(folder):
        return {}
    return {name: open(os.path.join(folder, name)).read() for name in os.listdir(folder)}


# -- spec errors: one line naming the key, exit 2, before TensorFlow or Ray ------------------------------------------
@pytest.fixture(scope="module")
def no_tensorflow_no_ray(no_tensorflow):
    root = no_tensorflow["PYTHONPATH"]
    os.makedirs(os.path.join(root, "ray"), exist_ok=True)
    with open(os.path.join(root, "ray", "__init__.py"), "w") as handle:
        handle.write("raise ImportError('ray imported before the spec was checked')\n")
    return no_tensorflow


@pytest.mark.parametrize("edit, key", [
    (lambda s: s.replace("\nepochs = 2\n", "\nepochs = 2\nlearning_rates = [0.1]\n"), "grid.learning_rates"),
    (lambda s: s.replace("[model]", "[modle]"), "modle"),
    (lambda s: s.replace(TINYPROP_POLICY, "topk:0.2"), "grid.policy"),
    (lambda s: s.replace("seed = [0, 1]", "seed = []"), "grid.seed"),
    (lambda s: s.replace('name = "mnist_demo"', 'name = "mnist"\ndata = "no/such/folder"'), "task.data"),
    (lambda s: s.replace('source = "mlp"', 'source = "missing.keras"'), "model.source"),
    (lambda s: s.replace("\nepochs = 2\n", "\nepochs = 0\n"), "grid.epochs"),
    (lambda s: s.replace("\nepochs = 2\n", "\nepochs = 2\nbatchnorm = \"freeze\"\n"), "grid.batchnorm"),
    (lambda s: s.replace("\nepochs = 2\n", "\nepochs = 2\noptimizer = \"rmsprop\"\n"), "grid.optimizer"),
    (lambda s: s.replace("pretrain_epochs = 2", "pretrain_epochs = 2\nseed = \"each\""), "model.seed"),
    (lambda s: s + "\n[[configuration]]\nepoch = 6\n", "configuration[0].epoch"),
    (lambda s: s + "\n[[configuration]]\nepochs = 6\n[[configuration]]\npolicy = \"topk:1\"\n",
     "configuration[1].policy"),
])
def test_a_bad_spec_is_one_line_naming_the_key_exit_2_before_ray_starts(tmp_path, no_tensorflow_no_ray, edit, key):
    spec = _write_spec(str(tmp_path), edit(SMALL_SPEC))
    out = str(tmp_path / "out")
    proc = subprocess.run(_sweep_command(spec, out), capture_output=True, text=True, env=no_tensorflow_no_ray,
                          cwd=REPO, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tinyprop sweep: error: ") and key in lines[0], proc.stderr
    assert not os.path.exists(out)


def test_resume_needs_a_sweep_and_a_used_folder_must_be_this_sweeps(tmp_path, no_tensorflow_no_ray):
    spec = _write_spec(str(tmp_path))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    for options, expected in ((["--resume"], "--resume"), ([], "not a sweep's folder")):
        out = str(tmp_path / ("fresh" if options else "other"))
        proc = subprocess.run(_sweep_command(spec, out, *options), capture_output=True, text=True,
                              env=no_tensorflow_no_ray, cwd=REPO, timeout=60)
        assert proc.returncode == 2 and expected in proc.stderr, proc.stderr


def test_train_last_beyond_a_keras_files_layers_is_a_spec_error(tmp_path):
    import zipfile

    layers = [{"class_name": "InputLayer"}, {"class_name": "Dense"}, {"class_name": "Dense"}]
    with zipfile.ZipFile(tmp_path / "two_dense.keras", "w") as archive:  # what the check reads of a .keras file
        archive.writestr("config.json", json.dumps({"config": {"layers": layers}}))
    text = SMALL_SPEC.replace('source = "mlp"', 'source = "two_dense.keras"').replace("seed = [0, 1]",
                                                                                     "train_last = [2, 3]")
    with pytest.raises(sweep_spec.SpecError, match=r"^grid.train_last: .*from 1 to 2.*got 3"):
        sweep_spec.parse(_write_spec(str(tmp_path), text))


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace('name = "mnist_demo"', 'name = "mnist_demo"\nspeaker = "george"'),
     "task.speaker: for task fsdd, not mnist_demo"),
    (lambda s: s.replace('name = "mnist_demo"', 'name = "mnist_embedded"\ntrain_size = 4500'),
     "task.train_size: at most 4000"),
    (lambda s: s.replace('name = "mnist_demo"', 'name = "fsdd"\ndata = "."\nfeatures = "mel"'),
     "task.features: expected one of log_mel, mfcc, got 'mel'"),
    (lambda s: s.replace('name = "mnist_demo"', 'name = "fsdd"\ndata = "."\ntest_takes = [5, 2]'),
     "task.test_takes: expected [first, last] takes"),
    (lambda s: s.replace('name = "mnist_demo"', 'name = "mnist_demo"\nvalidation = 1.0'),
     "task.validation: expected a fraction in (0, 1), got 1.0"),
    (lambda s: s.replace('name = "mnist_demo"', 'name = "dcase"\ndata = "."\nmachine = "fan"\nvalidation = 0.2'),
     "task.validation: task dcase is scored on its own labelled test clips"),
    (lambda s: s.replace('source = "mlp"', 'source = "ds_cnn"\nhidden = [8]'), "model.hidden: for source mlp"),
    (lambda s: s.replace('source = "mlp"', 'source = "ds_cnn"\nfilters = [8, 8]'),
     "model.filters: expected a channel count >= 1"),
    (lambda s: s.replace('source = "mlp"', 'source = "mlp"\nhidden = []'), "model.hidden: expected a list"),
])
def test_task_and_model_options_are_checked(tmp_path, edit, message):
    with pytest.raises(sweep_spec.SpecError, match="^" + re.escape(message)):
        sweep_spec.parse(_write_spec(str(tmp_path), edit(SMALL_SPEC)))


def test_task_and_model_options_reach_the_task_and_the_model(tmp_path):
    """mnist_embedded's seeded split and train size; model.hidden builds that MLP (no TensorFlow needed for the spec,
    the task and model are built here as a trial's worker builds them)."""
    from tinyprop_tf import sweep, tasks

    text = SMALL_SPEC.replace('name = "mnist_demo"', 'name = "mnist_embedded"\ntrain_size = 500').replace(
        'source = "mlp"', 'source = "mlp"\nhidden = [12, 7]').replace("pretrain_epochs = 2", "pretrain_epochs = 0")
    spec = sweep_spec.parse(_write_spec(str(tmp_path), text))
    a, b = sweep.load_task(spec, 0), sweep.load_task(spec, 1)
    # the spec's finetune_samples = 200 takes the first 200 of the 500 (the pretrain split holds all 500)
    assert len(a.pretrain[0]) == 500 and len(a.finetune[0]) == 200 and len(a.test[0]) == 1000
    assert a.input_shape == (784,) and not np.array_equal(a.test[1], b.test[1])  # the seed draws the split
    train = {x.tobytes() for x in a.pretrain[0]}
    assert not any(x.tobytes() in train for x in a.test[0])
    model = tasks.build_model("mlp", a, **sweep_spec.model_options(spec.model))
    assert [layer.units for layer in model.layers if hasattr(layer, "units")] == [12, 7, 10]


def test_validation_holds_out_fine_tuning_samples_and_never_touches_the_test_split(tmp_path):
    """task.validation = 0.25: a quarter of the fine-tuning samples (a seeded draw) become the evaluated split, the
    rest is fine-tuned on, and the evaluator scores those held-out samples, not the test split."""
    from tinyprop_tf import sweep

    spec = sweep_spec.parse(_write_spec(str(tmp_path), SMALL_SPEC.replace(
        'name = "mnist_demo"', 'name = "mnist_demo"\nvalidation = 0.25')))
    plain = sweep.load_task(sweep_spec.parse(_write_spec(str(tmp_path), SMALL_SPEC, "plain.toml")), 0)
    held, other_seed = sweep.load_task(spec, 0), sweep.load_task(spec, 1)
    assert len(held.finetune[0]) == 150 and len(held.test[0]) == 50
    rows = lambda x: {r.tobytes() for r in x}  # noqa: E731
    pool = rows(plain.finetune[0])
    assert rows(held.finetune[0]) | rows(held.test[0]) == pool and not rows(held.finetune[0]) & rows(held.test[0])
    assert not rows(held.test[0]) & rows(plain.test[0])
    assert rows(other_seed.test[0]) != rows(held.test[0])

    class Constant:  # a "model" predicting class 3 for every input: the evaluator's value is a label count
        def predict(self, x, batch_size=None, verbose=0):
            logits = np.zeros((len(x), 10), "float32")
            logits[:, 3] = 1.0
            return logits

    assert held.evaluate(Constant()) == pytest.approx(np.mean(held.test[1] == 3))


def test_the_readme_example_spec_parses():
    spec = sweep_spec.parse(os.path.join(REPO, "examples", "sweep_mnist_demo.toml"))
    trials = spec.trials()
    assert len(trials) == 3 * 2 * 3 and len({t.key for t in trials}) == len(trials)
    assert {t.settings["epochs"] for t in trials} == {12}
    assert len({t.configuration for t in trials}) == 6  # seeds differ only in the seed


def test_configurations_add_trials_beside_the_grid_crossed_with_its_other_keys(tmp_path):
    """A paper's "TinyProp with 3x the epochs" row: the configuration's keys fixed, the grid's seeds crossed with
    it; a trial the grid already has is not repeated; labels name what differs between trials."""
    text = SMALL_SPEC.replace("pretrain_epochs = 2", "pretrain_epochs = 0") + textwrap.dedent(f"""
        [[configuration]]
        policy = "{TINYPROP_POLICY}"
        epochs = 6

        [[configuration]]
        policy = "dense"
        epochs = [2, 4]
        """)
    spec = sweep_spec.parse(_write_spec(str(tmp_path), text))
    assert spec.model["pretrain_epochs"] == 0  # from scratch
    settings = [(t.settings["policy"], t.settings["epochs"], t.settings["seed"]) for t in spec.trials()]
    grid = [(p, 2, seed) for p in ("dense", TINYPROP_POLICY) for seed in (0, 1)]
    assert settings == grid + [(TINYPROP_POLICY, 6, 0), (TINYPROP_POLICY, 6, 1), ("dense", 4, 0), ("dense", 4, 1)]
    assert spec.varied_keys == ["policy", "epochs"]
    assert spec.label(spec.trials()[-1]) == "policy=dense, epochs=4"
    for empty in ("[[configuration]]\n", "[[configuration]]\nseed = []\n"):
        with pytest.raises(sweep_spec.SpecError, match=r"^configuration\[0\]"):
            sweep_spec.parse(_write_spec(str(tmp_path), SMALL_SPEC + empty, name="bad.toml"))


def test_the_library_and_the_other_commands_do_not_import_ray():
    code = textwrap.dedent("""
        import contextlib, io, sys
        import tinyprop_tf, tinyprop_tf.experiment, tinyprop_tf.sweep_spec
        from tinyprop_tf import cli
        for argv in (["--help"], ["sweep", "--help"], ["finetune", "--help"]):
            with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
                cli.main(argv)
        print(sorted(m for m in sys.modules if m == "ray" or m.startswith("ray.")))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# -- real sweeps -------------------------------------------------------------------------------------------------------
ONE_BY_ONE = textwrap.dedent("""
    # The same runs one by one with the library's finetune path, TensorFlow on one thread as in a trial.
    import json, sys
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    from tinyprop_tf import experiment, policies, tasks
    # argv: {trial seed: [pretrained .keras file, the demo split's seed]}, samples, the trials' settings
    pretrained, samples, settings_list = json.loads(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
    out = []
    for settings in settings_list:
        path, split_seed = pretrained[str(settings["seed"])]
        task = tasks.mnist_demo_task(split_seed)
        x, y = task.finetune
        result = experiment.finetune(keras.models.load_model(path), policies.from_spec(settings["policy"]),
                                     (x[:samples], y[:samples]), task.evaluate, epochs=settings["epochs"],
                                     seed=settings["seed"], learning_rate=settings["learning_rate"],
                                     batch_size=settings["batch_size"], optimizer=settings["optimizer"])
        out.append({"metric": result.metric, "bwd_macs_sparse": result.bwd_macs_sparse,
                    "initial_metric": result.initial_metric})
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_without_rerunning_and_equals_the_runs_one_by_one(tmp_path):
    spec = _write_spec(str(tmp_path))
    out = str(tmp_path / "out")
    env = ray_env()
    # One CPU: the trials run one after another, so an interrupt after the first record leaves some unfinished.
    first = subprocess.Popen(_sweep_command(spec, out, "--num-cpus", "1"), env=env, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not _records(out) and first.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=60)
        deadline = time.time() + 10
        while (left := live_in_session(first.pid)) and time.time() < deadline:
            time.sleep(0.2)
        assert not left  # the interrupted sweep stopped the local Ray instance it started
    finally:
        stop_session(first)
    assert first.returncode == 130, stderr
    before = _records(out)
    assert 1 <= len(before) < 4, before.keys()
    interrupted = json.load(open(os.path.join(out, "sweep.json")))
    assert not interrupted["complete"] and interrupted["finished"] == len(before)

    # The same runs one by one, beside the resumed sweep (the pretrained model is there since the first run).
    settings = [trial.settings for trial in sweep_spec.parse(spec).trials()]
    pretrained = {seed: [os.path.join(out, "pretrained.keras"), 0] for seed in (0, 1)}  # model.seed 0
    reference = subprocess.Popen([sys.executable, "-c", ONE_BY_ONE, json.dumps(pretrained), "200",
                                  json.dumps(settings)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    second = subprocess.run(_sweep_command(spec, out, "--resume", "--num-cpus", "2"), env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=300, start_new_session=True)
    reference_out, reference_err = reference.communicate(timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"{len(before)} finished before, {4 - len(before)} to run" in second.stdout
    after = _records(out)
    assert len(after) == 4
    assert all(after[name] == text for name, text in before.items())  # finished trials were not run again
    summary = json.load(open(os.path.join(out, "sweep.json")))
    assert summary["complete"] and summary["finished"] == 4 and not summary["failed"]
    assert len(summary["configurations"]) == 2 and all(row["seeds"] == 2 for row in summary["configurations"])
    assert os.path.getsize(os.path.join(out, "sweep.png")) > 0
    assert open(os.path.join(out, "sweep.md")).read().count("\n| policy=") == 2

    records = summary["records"]
    assert [record["settings"] for record in records] == settings
    # TensorFlow on one thread in a trial: its CPU time is at most its wall time (plus Ray's own threads' bit).
    assert all(record["cpu_seconds"] <= 1.25 * record["seconds"] + 0.5 for record in records), records
    assert reference.returncode == 0, reference_err
    for record, expected in zip(records, json.loads(reference_out.strip().splitlines()[-1])):
        assert record["run"]["metric"] == expected["metric"], record["settings"]
        assert record["run"]["bwd_macs_sparse"] == expected["bwd_macs_sparse"], record["settings"]
    dense, sparse = (next(r for r in records if r["settings"]["policy"] == p) for p in ("dense", TINYPROP_POLICY))
    assert sparse["run"]["bwd_ratio"] < 0.5 < dense["run"]["bwd_ratio"]  # the two policies really differ


def _run_one_by_one(pretrained: dict, samples: int, settings: list) -> list:
    proc = subprocess.run([sys.executable, "-c", ONE_BY_ONE, json.dumps(pretrained), str(samples),
                           json.dumps(settings)], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_model_seed_trial_pretrains_one_model_per_seed_side_by_side_and_reuses_them(tmp_path):
    """A paper's seeds re-draw the pretrained model: with model.seed = "trial" each grid seed pretrains its own
    model and draws its own demo split; every trial equals finetune on its seed's model and split, and a rerun
    pretrains nothing again."""
    text = SMALL_SPEC.replace("pretrain_epochs = 2", 'pretrain_epochs = 2\nseed = "trial"').replace(
        f'policy = ["dense", "{TINYPROP_POLICY}"]', f'policy = "{TINYPROP_POLICY}"\noptimizer = "momentum"\n'
        "learning_rate = 0.01")
    spec, out = _write_spec(str(tmp_path), text), str(tmp_path / "out")
    proc = subprocess.run(_sweep_command(spec, out, "--num-cpus", "2"), env=ray_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=300, start_new_session=True)
    assert proc.returncode == 0, proc.stderr
    assert "once per seed (2)" in proc.stdout
    files = {seed: os.path.join(out, f"pretrained-seed{seed}.keras") for seed in (0, 1)}
    assert not os.path.exists(os.path.join(out, "pretrained.keras"))
    assert open(files[0], "rb").read() != open(files[1], "rb").read()
    summary = json.load(open(os.path.join(out, "sweep.json")))
    assert summary["complete"] and summary["finished"] == 2 and not summary["failed"]
    records = summary["records"]
    expected = _run_one_by_one({seed: [path, seed] for seed, path in files.items()}, 200,
                               [record["settings"] for record in records])
    for record, reference in zip(records, expected):
        assert record["settings"]["optimizer"] == "momentum"
        for key in ("metric", "bwd_macs_sparse", "initial_metric"):
            assert record["run"][key] == reference[key], (key, record["settings"])
    assert records[0]["run"]["initial_metric"] != records[1]["run"]["initial_metric"]  # other model, other split

    stamps = {seed: os.stat(path).st_mtime_ns for seed, path in files.items()}
    for name in os.listdir(os.path.join(out, "trials")):
        os.remove(os.path.join(out, "trials", name))  # every trial runs again, on the models already made
    again = subprocess.run(_sweep_command(spec, out, "--num-cpus", "2"), env=ray_env(), cwd=REPO,
                           capture_output=True, text=True, timeout=300, start_new_session=True)
    assert again.returncode == 0, again.stderr
    assert "Pretraining" not in again.stdout and {s: os.stat(p).st_mtime_ns for s, p in files.items()} == stamps
    rerun = json.load(open(os.path.join(out, "sweep.json")))["records"]
    assert [r["run"]["metric"] for r in rerun] == [r["run"]["metric"] for r in records]


@pytest.mark.slow
def test_a_two_node_cluster_runs_trials_on_both_and_survives_losing_its_worker_node(tmp_path):
    spec = _write_spec(str(tmp_path))
    out = str(tmp_path / "out")
    sweep = None
    with LocalCluster(cpus_per_node=[1, 1]) as cluster:
        try:
            head_id = cluster.node_ids[0]
            sweep = subprocess.Popen(_sweep_command(spec, out, "--address", cluster.address), env=cluster.env,
                                     cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            deadline = time.time() + 240
            on_worker = {}
            while not on_worker and sweep.poll() is None and time.time() < deadline:
                time.sleep(0.2)
                on_worker = {name: text for name, text in _records(out).items()
                             if json.loads(text)["ran_on"]["node_id"] != head_id}
            assert on_worker, "no trial finished on the worker node"
            before = _records(out)
            assert not cluster.kill_node(1)  # the worker node dies with the trial it runs; nothing of it is left
            _, stderr = sweep.communicate(timeout=300)
            assert sweep.returncode == 0, stderr
        finally:
            if sweep is not None and sweep.poll() is None:
                sweep.kill()
                sweep.wait(timeout=30)
    assert not cluster.leftovers  # every process of both nodes has exited
    after = _records(out)
    assert len(after) == 4 and all(after[name] == text for name, text in before.items())
    summary = json.load(open(os.path.join(out, "sweep.json")))
    assert summary["complete"] and summary["finished"] == 4 and not summary["failed"], summary["failed"]
    ran_on = {record["ran_on"]["node_id"] for record in summary["records"]}
    assert head_id in ran_on and len(ran_on) == 2
    assert all({"host", "pid"} <= set(record["ran_on"]) for record in summary["records"])


@pytest.mark.slow
def test_a_trial_that_raises_is_recorded_with_its_error_and_the_sweep_goes_on(tmp_path):
    # The demo MLP has 3 affine layers: train_last = 9 raises in its trial (an architecture is counted once built).
    text = SMALL_SPEC.replace(f'policy = ["dense", "{TINYPROP_POLICY}"]', 'policy = "dense"').replace(
        "seed = [0, 1]", 'train_last = ["all", 9]')
    spec, out = _write_spec(str(tmp_path), text), str(tmp_path / "out")
    proc = subprocess.run(_sweep_command(spec, out, "--num-cpus", "2"), env=ray_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=300, start_new_session=True)
    assert proc.returncode == 0, proc.stderr
    summary = json.load(open(os.path.join(out, "sweep.json")))
    assert summary["complete"] and summary["finished"] == 1 and len(summary["failed"]) == 1
    failed = summary["failed"][0]
    assert failed["settings"]["train_last"] == 9
    assert failed["error"].startswith("ValueError: train_last must be an integer from 1 to 3"), failed["error"]
    assert json.load(open(os.path.join(out, "trials", f"{failed['trial']}.json"))) == failed
    from tinyprop_tf import sweep

    good = next(r for r in summary["records"] if "error" not in r)
    assert sweep.finished_keys(out) == {good["trial"]}  # a rerun runs the failed trial again, not the good one
