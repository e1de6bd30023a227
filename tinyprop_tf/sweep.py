"""``tinyprop sweep``: the trials of a spec (``sweep_spec``) as Ray tasks, on a local instance or a cluster.

- The task's data is loaded once by the driver and the pretrained model made once, in a Ray task (or read from
  the spec's .keras file); both go into Ray's object store, so every worker, on any node, fine-tunes the same model
  on the same arrays without a shared file system. With ``model.seed = "trial"`` every grid seed has its own
  pretrained model (and demo split), pretrained side by side, as a paper's seeds re-draw the pretrained model.
- Each trial is one Ray task with one CPU, TensorFlow limited to one thread to match; it runs
  ``experiment.finetune`` (what ``tinyprop finetune`` runs per policy) and returns the record ``finetune`` writes
  per run (``RunResult.to_dict``) with its board estimates and where it ran (node id, host, pid).
- The driver writes each record atomically to ``OUT/trials/<key>.json`` as soon as the trial ends, and
  ``sweep.json``, ``sweep.md`` and ``sweep.png`` (metric against backward MACs, mean and spread over seeds per
  configuration, Pareto front marked) after every record. A trial that raises is recorded with its error and the
  sweep goes on; a trial whose worker or node dies is retried by Ray (``TRIAL_RETRIES``).
- Running the same command again (or ``--resume``) skips every trial that has a result record; failed trials
  run again.

Only this module imports Ray (``pip install -e '.[sweep]'``); the library and the other commands never do.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time

import numpy as np
import ray

from tinyprop_tf import outdir, sweep_spec

TRIALS_DIR = "trials"
PRETRAINED = "pretrained.keras"
# A worker or node lost mid-trial is a system failure: Ray reruns the trial elsewhere this many times. A trial
# that raises is not retried (it would raise again): its error is its record.
TRIAL_RETRIES = 3
_QUIET_WORKERS = {"TF_CPP_MIN_LOG_LEVEL": "2"}


def finished_keys(out_dir: str) -> set[str]:
    """The trials of ``out_dir`` with a result (failed ones excluded: they run again)."""
    return {key for key, record in read_records(out_dir).items() if "error" not in record}


def read_records(out_dir: str) -> dict[str, dict]:
    folder = os.path.join(out_dir, TRIALS_DIR)
    records = {}
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.endswith(".json"):
            with open(os.path.join(folder, name)) as handle:
                records[name[:-5]] = json.load(handle)
    return records


# -- the driver's share: data and models, once ----------------------------------------------------------------------
def load_task(spec: sweep_spec.Spec, pretrain_seed: int | None = None):
    """The spec's task; the embedded-digit tasks' split is drawn by ``pretrain_seed`` (default: ``model.seed``)."""
    from tinyprop_tf import tasks

    options = spec.task
    seed = spec.model["seed"] if pretrain_seed is None else pretrain_seed
    if options["name"] == sweep_spec.DEMO_TASK:
        task = tasks.mnist_demo_task(seed)
    elif options["name"] == sweep_spec.EMBEDDED_TASK:
        task = tasks.mnist_embedded_task(seed, **({"train_size": options["train_size"]}
                                                  if "train_size" in options else {}))
    else:
        task = tasks.load_task(options["name"], options["data"], new_speaker=options.get("speaker"),
                               machine=options.get("machine"), machine_id=options.get("machine_id"),
                               features=options.get("features"), test_takes=options.get("test_takes"))
    if "finetune_samples" in options:
        x, y = task.finetune
        task.finetune = (x[:options["finetune_samples"]], y[:options["finetune_samples"]])
    if "validation" in options:  # drawn by the pretraining seed where the split is (else one draw for all)
        task = tasks.held_out(task, options["validation"], seed if isinstance(seed, int) else 0)
    return task


def pretrained_file(out_dir: str, spec: sweep_spec.Spec, pretrain_seed: int) -> str:
    """Where the sweep keeps its pretrained model (one per seed with ``model.seed = "trial"``)."""
    name = f"pretrained-seed{pretrain_seed}.keras" if spec.pretrain_per_seed else PRETRAINED
    return os.path.join(out_dir, name)


def pretrain_model(model_options: dict, task, pretrain_seed: int) -> bytes:
    """The spec's architecture pretrained densely under ``pretrain_seed`` (initial weights and data order), as a
    .keras file's bytes. Runs in a Ray worker, with TensorFlow's threads set to the CPUs Ray gave it."""
    _threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    import keras

    from tinyprop_tf import experiment, tasks

    keras.utils.set_random_seed(pretrain_seed)  # the initial weights follow the seed too
    model = tasks.build_model(model_options["source"], task, **sweep_spec.model_options(model_options))
    if model_options["pretrain_epochs"] > 0:  # 0: the trials train the initialised model (from scratch)
        experiment.pretrain(model, task.pretrain, loss=task.loss, epochs=model_options["pretrain_epochs"],
                            seed=pretrain_seed, progress=False)  # a worker's bar would not reach the terminal
    with tempfile.TemporaryDirectory() as scratch:
        model.save(os.path.join(scratch, PRETRAINED))
        with open(os.path.join(scratch, PRETRAINED), "rb") as handle:
            return handle.read()


# max_calls=1: the worker exits afterwards, so no trial inherits its TensorFlow thread pools (set once per process).
_remote_pretrain = ray.remote(max_retries=TRIAL_RETRIES, max_calls=1)(pretrain_model)


def pretraining_cpus(pretrainings: int) -> int:
    """CPUs for each of ``pretrainings`` side by side: the cluster's share, at most one node's (a task needing more
    than any node has would never start). They run before any trial, so a single one gets a whole node."""
    per_node = [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n["Alive"]]
    return max(1, min(max(per_node, default=1), sum(per_node) // max(1, pretrainings)))


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def submit_models(spec: sweep_spec.Spec, out_dir: str, trials, print_fn=print):
    """Per pretraining seed the trials need: (task ref, model ref), and {ref: file} of the pretrainings submitted.

    A model pretrained by an earlier run of this sweep is read from its file; a spec's .keras file is read as is;
    else the architecture is pretrained in a Ray task (per seed in parallel), its file written when it is done."""
    seeds = sorted({spec.pretrain_seed(t.settings["seed"]) for t in trials})
    shared_task = None if spec.task["name"] in sweep_spec.SEEDED_TASKS else ray.put(load_task(spec))
    refs, pretraining = {}, {}
    to_pretrain = [seed for seed in seeds if spec.model_file is None
                   and not os.path.exists(pretrained_file(out_dir, spec, seed))]
    remote_pretrain = _remote_pretrain.options(num_cpus=pretraining_cpus(len(to_pretrain)))
    for seed in seeds:
        task_ref = shared_task if shared_task is not None else ray.put(load_task(spec, seed))
        path = pretrained_file(out_dir, spec, seed)
        if seed in to_pretrain:
            model_ref = remote_pretrain.remote(spec.model, task_ref, seed)
            pretraining[model_ref] = path
        else:
            model_ref = ray.put(_read(path if os.path.exists(path) else spec.model_file))
        refs[seed] = (task_ref, model_ref)
    if pretraining:
        epochs = spec.model["pretrain_epochs"]
        print_fn(f"{'Pretraining' if epochs else 'Initialising'} {spec.model['source']} "
                 f"({f'{epochs} epochs, dense' if epochs else 'no pretraining: trials train from scratch'}) "
                 + (f"once per seed ({len(pretraining)})" if spec.pretrain_per_seed else "once for every trial")
                 + " ...")
    return refs, pretraining


def save_pretrained(pretraining: dict, print_fn=print) -> None:
    """Wait for every pretraining and write its file, so a rerun reuses it; say when each is done. A failed
    pretraining writes nothing: its trials get its error as their own record."""
    started, pending = time.time(), dict(pretraining)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        path = pending.pop(ready[0])
        try:
            data = ray.get(ready[0])
        except ray.exceptions.RayError as error:
            print_fn(f"  {os.path.basename(path)}: pretraining failed ({type(error).__name__}); its trials record it")
            continue
        outdir.atomic_write(path, lambda handle: handle.write(data), mode="wb")
        print_fn(f"  {os.path.basename(path)} after {time.time() - started:.0f} s "
                 f"({len(pretraining) - len(pending)} of {len(pretraining)})")


# -- one trial, in a Ray worker --------------------------------------------------------------------------------------
def _threads(cpus: int) -> None:
    """TensorFlow's thread pools to the task's CPUs (settable only before TensorFlow's first op; a reused worker
    has them already)."""
    import tensorflow as tf

    if tf.config.threading.get_intra_op_parallelism_threads() != cpus:
        tf.config.threading.set_intra_op_parallelism_threads(cpus)
        tf.config.threading.set_inter_op_parallelism_threads(1)


def run_trial(task, model_bytes: bytes, settings: dict) -> dict:
    """Fine-tune the pretrained model with one trial's settings (``experiment.finetune``); the run's record."""
    _threads(1)
    import keras

    from tinyprop_tf import estimates, experiment, policies

    started, cpu_started = time.time(), time.process_time()
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, PRETRAINED)
        with open(path, "wb") as handle:
            handle.write(model_bytes)
        pretrained = keras.models.load_model(path)
    trial = sweep_spec.Trial(settings)
    result = experiment.finetune(
        pretrained, policies.from_spec(settings["policy"]), task.finetune, task.evaluate, name=trial.configuration,
        metric_name=task.metric_name, loss=task.loss, optimizer=settings["optimizer"],
        learning_rate=settings["learning_rate"], epochs=settings["epochs"], batch_size=settings["batch_size"],
        seed=settings["seed"], train_last=trial.train_last, batchnorm=settings["batchnorm"])
    return {"trial": trial.key, "settings": settings, "run": result.to_dict(),
            "board_estimates": estimates.board_estimates([result])[result.name],
            "seconds": time.time() - started, "cpu_seconds": time.process_time() - cpu_started,  # ~seconds: 1 thread
            "ran_on": where_am_i()}


def where_am_i() -> dict:
    return {"node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(), "pid": os.getpid()}


_remote_trial = ray.remote(num_cpus=1, max_retries=TRIAL_RETRIES)(run_trial)


def _error_record(trial: sweep_spec.Trial, error: Exception) -> dict:
    cause = getattr(error, "cause", None) or error  # a RayTaskError carries the trial's own exception
    message = " | ".join(line for line in str(cause).splitlines() if line.strip())
    return {"trial": trial.key, "settings": trial.settings, "error": f"{type(cause).__name__}: {message}"}


# -- aggregation ------------------------------------------------------------------------------------------------------
def configurations(spec: sweep_spec.Spec, records: dict[str, dict]) -> list[dict]:
    """Per configuration (the grid's settings but the seed), over its finished seeds: final metric mean and
    standard deviation, total sparse backward MACs and their ratio to dense; ``pareto``: no other configuration has
    at least its metric for at most its backward MACs (one of them strictly better)."""
    groups: dict[str, list] = {}
    labels = {}
    for trial in spec.trials():
        groups.setdefault(trial.configuration, [])
        labels[trial.configuration] = spec.label(trial)
        record = records.get(trial.key)
        if record is not None and "error" not in record:
            groups[trial.configuration].append(record["run"])
    rows = []
    for name, runs in groups.items():
        if not runs:
            continue
        metric = [run["final_metric"] for run in runs]
        macs = [float(np.sum(run["bwd_macs_sparse"])) for run in runs]
        rows.append({"configuration": name, "label": labels[name], "seeds": len(runs),
                     "metric_name": runs[0]["metric_name"],
                     "metric_mean": float(np.mean(metric)), "metric_std": float(np.std(metric)),
                     "bwd_macs_mean": float(np.mean(macs)),
                     "bwd_ratio_mean": float(np.mean([run["bwd_ratio"] for run in runs]))})
    for row in rows:
        row["pareto"] = not any(
            other["metric_mean"] >= row["metric_mean"] and other["bwd_macs_mean"] <= row["bwd_macs_mean"]
            and (other["metric_mean"] > row["metric_mean"] or other["bwd_macs_mean"] < row["bwd_macs_mean"])
            for other in rows)
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = ["| configuration | seeds | final metric (mean ± std) | backward MACs | vs dense | Pareto |",
             "|---|---:|---:|---:|---:|:---:|"]
    for row in sorted(rows, key=lambda r: r["bwd_macs_mean"]):
        lines.append(f"| {row['label']} | {row['seeds']} | {row['metric_name']} {row['metric_mean']:.4f} ± "
                     f"{row['metric_std']:.4f} | {row['bwd_macs_mean'] / 1e6:.2f}M | {row['bwd_ratio_mean']:.3f}x | "
                     f"{'yes' if row['pareto'] else ''} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str) -> None:
    """Final metric against backward MACs, one point per configuration with its spread over seeds; the Pareto
    front joined and marked."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        ax.errorbar(row["bwd_macs_mean"] / 1e6, row["metric_mean"], yerr=row["metric_std"], fmt="o", capsize=3,
                    color="tab:red" if row["pareto"] else "tab:gray")
        ax.annotate(row["label"], (row["bwd_macs_mean"] / 1e6, row["metric_mean"]), fontsize=6,
                    xytext=(4, 3), textcoords="offset points")
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["bwd_macs_mean"])
    ax.plot([r["bwd_macs_mean"] / 1e6 for r in front], [r["metric_mean"] for r in front], "-", color="tab:red",
            label="Pareto front")
    ax.set_xlabel("backward MACs per run (millions, mean over seeds)")
    ax.set_ylabel(f"final {rows[0]['metric_name'] if rows else 'metric'} (mean ± std over seeds)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=110)
    plt.close(fig)
    outdir.atomic_write(path, lambda handle: handle.write(image.getvalue()), mode="wb")


def write_summary(spec: sweep_spec.Spec, out_dir: str, complete: bool, timing: dict | None = None) -> dict:
    """``sweep.json`` (every trial's record, the configurations), ``sweep.md`` and ``sweep.png``, atomically."""
    records = read_records(out_dir)
    trials = spec.trials()
    rows = configurations(spec, records)
    failed = [records[t.key] for t in trials if "error" in records.get(t.key, {})]
    summary = {"complete": complete, "spec": spec.path, "base": spec.base, "trials": len(trials),
               "finished": sum(t.key in records and "error" not in records[t.key] for t in trials),
               "failed": failed, "configurations": rows,
               "records": [records[t.key] for t in trials if t.key in records], **(timing or {})}
    outdir.write_json(os.path.join(out_dir, "sweep.json"), summary)
    outdir.atomic_write(os.path.join(out_dir, "sweep.md"), lambda handle: handle.write(markdown_table(rows)))
    if rows:
        plot(rows, os.path.join(out_dir, "sweep.png"))
    return summary


# -- the sweep --------------------------------------------------------------------------------------------------------
def start_ray(address: str | None, num_cpus: int | None) -> None:
    """A local instance sized to the machine (or ``num_cpus``) without ``address``; else that cluster."""
    options = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING,
               "runtime_env": {"env_vars": _QUIET_WORKERS}}
    if address:
        try:
            ray.init(address=address, **options)
        except ConnectionError as error:  # the CLI's one line, naming the option
            raise ValueError(f"--address {address}: {error}") from None
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), **options)


def run(spec: sweep_spec.Spec, out_dir: str, *, address: str | None = None, num_cpus: int | None = None,
        print_fn=print) -> dict:
    """Run every trial of ``spec`` without a result in ``out_dir``; return the final ``sweep.json``."""
    from tqdm.auto import tqdm

    os.makedirs(os.path.join(out_dir, TRIALS_DIR), exist_ok=True)
    outdir.write_json(os.path.join(out_dir, sweep_spec.BASE_FILE), spec.base)
    outdir.atomic_write(os.path.join(out_dir, "spec.toml"), lambda handle: handle.write(spec.text))
    trials = spec.trials()
    done = finished_keys(out_dir)
    todo = [t for t in trials if t.key not in done]
    print_fn(f"Sweep: {len(trials)} trials, {len(trials) - len(todo)} finished before, {len(todo)} to run")
    started = time.time()
    start_ray(address, num_cpus)  # first: a cluster that cannot be reached is found before any pretraining
    ray_started = time.time()
    finished, bar = None, None
    try:
        models, pretraining = submit_models(spec, out_dir, todo, print_fn)
        save_pretrained(pretraining, print_fn)  # the seeds' pretrainings side by side, then the trials
        trials_started = time.time()
        pending = {_remote_trial.remote(*models[spec.pretrain_seed(t.settings["seed"])], t.settings): t
                   for t in todo}
        failed = 0
        bar = tqdm(total=len(trials), initial=len(trials) - len(todo), unit="trial", desc="sweep",
                   dynamic_ncols=True)
        write_summary(spec, out_dir, complete=not pending)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                trial = pending.pop(ref)
                try:
                    record = ray.get(ref)
                except ray.exceptions.RayError as error:  # the trial raised, or its retries ran out
                    record = _error_record(trial, error)
                    failed += 1
                outdir.write_json(os.path.join(out_dir, TRIALS_DIR, f"{trial.key}.json"), record)
                bar.update(1)
                write_summary(spec, out_dir, complete=False)
            # Ray does not say which queued tasks run: at most one per CPU of the cluster does.
            cpus = int(ray.cluster_resources().get("CPU", 0))
            bar.set_postfix_str(f"running {min(len(pending), cpus)}, failed {failed}", refresh=True)
        finished = time.time()
    finally:
        if bar is not None:
            bar.close()  # the lines after it start on a clean line, also when the sweep stops
        ray.shutdown()
        if finished is None:  # stopped early (an interrupt, an error): sweep.json lists every record there is
            write_summary(spec, out_dir, complete=False)
    # prepare: loading the data and pretraining
    timing = {"ray_start_seconds": ray_started - started, "prepare_seconds": trials_started - ray_started,
              "sweep_seconds": finished - trials_started}
    summary = write_summary(spec, out_dir, complete=True, timing=timing)
    print_fn(markdown_table(summary["configurations"]))
    print_fn(f"{summary['finished']} of {len(trials)} trials finished, {len(summary['failed'])} failed; wrote "
             f"{os.path.join(out_dir, 'sweep.json')}, sweep.md, sweep.png and trials/")
    return summary
