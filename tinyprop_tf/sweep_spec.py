"""Sweep specs for ``tinyprop sweep``: a TOML file naming a task, a model and grids; expanded into trials.

Standard library only (no TensorFlow, no Ray), so the CLI checks a spec at once, before either starts. A spec::

    [task]
    name = "mnist_demo"        # the demo's embedded shifted MNIST, mnist_embedded (the same 5,000 digits unshifted,
                               # a seeded split), or mnist | fsdd | kws | dcase with data = PATH
    finetune_samples = 200     # optional: fine-tune on the first N samples of the fine-tuning split

    [model]
    source = "mlp"             # an architecture to pretrain once (dense), or a .keras file
    hidden = [32, 16]          # optional, mlp: its hidden layers; filters = N (ds_cnn, cnn) or [N, M] (conv1d)
    pretrain_epochs = 3
    seed = 0                   # pretraining's seed (the demo task's data split too); "trial": one pretrained
                               # model (and demo split) per grid seed, as papers' seeds re-draw the model

    [grid]                     # every combination of these lists is one trial
    policy = ["dense", "tinyprop:s_min=0.1,s_max=0.9,zeta=0.5"]
    seed = [0, 1]

    [[configuration]]          # optional, repeatable: trials beside the grid's; its keys fixed (a list: each
    policy = "tinyprop:s_min=0.1,s_max=0.9,zeta=0.5"   # value), every other grid key crossed with it as in
    epochs = 30                # the grid (a paper's "same policy, 3x the epochs" row)

Task options: ``speaker`` (fsdd: the new speaker), ``features`` (fsdd: "log_mel", default, or "mfcc": 13
MFCCs standardised per coefficient), ``test_takes`` (fsdd: [first, last] takes of the new speaker to test on,
default [0, 4]), ``machine`` / ``machine_id`` (dcase), ``train_size`` (mnist_embedded: digits to train on, the
test set the last 1,000 of the seeded order; default 4,000), ``validation`` (any task but dcase: hold out this
fraction of the fine-tuning samples, drawn by the pretraining seed, and report the metric on them instead of the
test split, which is not used: settings chosen on such a sweep never saw the test set).

Grid keys and their defaults (``tinyprop finetune``'s): ``policy`` (``--policy`` specs), ``optimizer``
(adam | sgd), ``learning_rate``, ``batch_size``, ``epochs``, ``train_last`` ("all" or N), ``batchnorm``
(fold | adapt | train), ``seed``. A scalar is
a one-element list. ``model.pretrain_epochs = 0`` trains from the initialised model (no pretraining: a from-scratch
comparison). Every error is a ``SpecError`` (a ``ValueError``) whose message starts with the key.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import os
import tomllib

from tinyprop_tf import policies as policies_lib  # no TensorFlow
from tinyprop_tf import trainable
from tinyprop_tf._validate import OPTIMIZERS
from tinyprop_tf.batchnorm import BATCHNORM_MODES  # NumPy only

DEMO_TASK = "mnist_demo"
EMBEDDED_TASK = "mnist_embedded"
SEEDED_TASKS = (DEMO_TASK, EMBEDDED_TASK)  # the embedded digits: the split follows the (pretraining) seed
TASKS = (*SEEDED_TASKS, "mnist", "fsdd", "kws", "dcase")
ARCHITECTURES = ("auto", "mlp", "cnn", "ds_cnn", "conv1d", "autoencoder")
TASK_KEYS = {"name", "data", "speaker", "machine", "machine_id", "finetune_samples", "features", "test_takes",
             "train_size", "validation"}
FSDD_FEATURES = ("log_mel", "mfcc")
MODEL_KEYS = {"source", "pretrain_epochs", "seed", "hidden", "filters"}
# Grid key -> default (a trial's value when the spec does not sweep it): tinyprop finetune's defaults.
GRID_DEFAULTS = {"policy": ["dense"], "optimizer": ["adam"], "learning_rate": [1e-3], "batch_size": [32],
                 "epochs": [10], "train_last": ["all"], "batchnorm": ["fold"], "seed": [0]}
SECTIONS = {"task": TASK_KEYS, "model": MODEL_KEYS, "grid": set(GRID_DEFAULTS)}
CONFIGURATIONS = "configuration"  # [[configuration]]: tables of grid keys, trials beside the grid's


# ``model.seed = "trial"``: the pretraining seed is each trial's own seed.
PER_TRIAL_SEED = "trial"

# The file in a sweep's output folder naming the task and model every record there belongs to (``Spec.base``).
BASE_FILE = "base.json"


class SpecError(ValueError):
    """A problem in the spec: one line naming the key."""


@dataclasses.dataclass(frozen=True)
class Trial:
    """One fine-tuning run of the sweep. ``key``: a stable id of its settings (its record's file name)."""

    settings: dict  # the grid keys' values for this trial

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def configuration(self) -> str:
        """The settings but the seed: the trials of one configuration differ only in their seed."""
        return ", ".join(f"{k}={v}" for k, v in self.settings.items() if k != "seed")

    @property
    def train_last(self) -> int | None:
        value = self.settings["train_last"]
        return None if value == "all" else value


@dataclasses.dataclass(frozen=True)
class Spec:
    path: str
    task: dict
    model: dict
    grid: dict  # key -> list of values (defaults filled in)
    text: str  # the spec file as written, kept with the results
    configurations: tuple = ()  # [[configuration]] tables: key -> list of values, the grid's for the other keys

    def trials(self) -> list[Trial]:
        """The grid's every combination, then each configuration's (its keys' values, the grid's for the rest);
        a trial settings already listed is not repeated."""
        keys, trials, seen = list(self.grid), [], set()
        for table in ({}, *self.configurations):
            lists = {**self.grid, **table}
            for values in itertools.product(*(lists[k] for k in keys)):
                trial = Trial(dict(zip(keys, values)))
                if trial.key not in seen:
                    seen.add(trial.key)
                    trials.append(trial)
        return trials

    @property
    def base(self) -> dict:
        """What every trial shares: a folder's records of another base are not this sweep's."""
        return {"task": self.task, "model": self.model}

    @functools.cached_property
    def varied_keys(self) -> list[str]:
        """The grid keys but the seed whose value differs between trials (at least "policy")."""
        trials = self.trials()
        return [key for key in self.grid if key != "seed"
                and len({json.dumps(t.settings[key]) for t in trials}) > 1] or ["policy"]

    def label(self, trial: Trial) -> str:
        """A configuration's name in tables and plots: the settings that differ between trials, but the seed."""
        return ", ".join(f"{key}={trial.settings[key]}" for key in self.varied_keys)

    @property
    def pretrain_per_seed(self) -> bool:
        """``model.seed = "trial"``: every grid seed pretrains its own model (and draws its own demo split)."""
        return self.model["seed"] == PER_TRIAL_SEED

    def pretrain_seed(self, trial_seed: int) -> int:
        return trial_seed if self.pretrain_per_seed else self.model["seed"]

    @property
    def model_file(self) -> str | None:
        source = self.model["source"]
        return source if source.endswith(".keras") else None


def _number(key, value, *, integer=False, minimum=None, positive=False):
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or (not integer and not math.isfinite(value)):
        raise SpecError(f"{key}: expected {'an integer' if integer else 'a number'}, got {value!r}")
    if (minimum is not None and value < minimum) or (positive and value <= 0):
        raise SpecError(f"{key}: expected {'> 0' if positive else f'>= {minimum}'}, got {value!r}")
    return value


def _check_grid_value(key: str, value):
    where = f"grid.{key}"
    if key == "policy":
        if not isinstance(value, str):
            raise SpecError(f"{where}: expected a policy spec string, got {value!r}")
        try:
            policies_lib.from_spec(value)
        except ValueError as error:
            raise SpecError(f"{where}: {error}") from None
    elif key == "optimizer":
        if value not in OPTIMIZERS:
            raise SpecError(f"{where}: expected one of {', '.join(OPTIMIZERS)}, got {value!r}")
    elif key == "learning_rate":
        _number(where, value, positive=True)
    elif key in ("batch_size", "epochs"):
        _number(where, value, integer=True, minimum=1)
    elif key == "train_last":
        if value != "all":
            _number(where, value, integer=True, minimum=1)
    elif key == "seed":
        _number(where, value, integer=True, minimum=0)
    elif key == "batchnorm" and value not in BATCHNORM_MODES:
        raise SpecError(f"{where}: expected one of {', '.join(BATCHNORM_MODES)}, got {value!r}")
    return value


def _resolved(base_dir: str, path: str) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


def parse(path: str) -> Spec:
    """Read and check the spec at ``path``; relative paths in it are relative to the spec file's folder."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as error:
        raise SpecError(f"{path}: cannot read the spec ({error.strerror})") from None
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise SpecError(f"{path}: not a TOML file ({error})") from None
    tables = document.pop(CONFIGURATIONS, [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise SpecError(f"{CONFIGURATIONS}: expected [[{CONFIGURATIONS}]] tables (of grid keys)")
    for section, content in document.items():
        if section not in SECTIONS:
            raise SpecError(f"{section}: unknown section; expected {', '.join([*SECTIONS, CONFIGURATIONS])}")
        if not isinstance(content, dict):
            raise SpecError(f"{section}: expected a [{section}] table")
        for key in content:
            if key not in SECTIONS[section]:
                raise SpecError(f"{section}.{key}: unknown key; expected one of {', '.join(sorted(SECTIONS[section]))}")
    base_dir = os.path.dirname(os.path.abspath(path))
    task = dict(document.get("task", {}))
    model = {"source": "auto", "pretrain_epochs": 15, "seed": 0, **document.get("model", {})}
    grid = {}
    for key, default in GRID_DEFAULTS.items():
        values = document.get("grid", {}).get(key, default)
        values = values if isinstance(values, list) else [values]
        if not values:
            raise SpecError(f"grid.{key}: empty list (a grid needs at least one value)")
        grid[key] = [_check_grid_value(key, v) for v in values]
    configurations = tuple(_configuration(i, table) for i, table in enumerate(tables))

    name = task.get("name")
    if name not in TASKS:
        raise SpecError(f"task.name: expected one of {', '.join(TASKS)}, got {name!r}")
    _check_task_options(task)
    if name in SEEDED_TASKS:
        if "data" in task:
            raise SpecError(f"task.data: the {name} task uses the embedded MNIST digits; remove data")
    else:
        if not isinstance(task.get("data"), str):
            raise SpecError(f"task.data: task {name} needs data = PATH (a folder in its layout)")
        task["data"] = _resolved(base_dir, task["data"])
        if not os.path.exists(task["data"]):
            raise SpecError(f"task.data: {task['data']}: no such file or folder")
    if name == "dcase" and not task.get("machine"):
        raise SpecError("task.machine: task dcase needs machine = TYPE (a machine type folder, e.g. fan)")
    if "finetune_samples" in task:
        _number("task.finetune_samples", task["finetune_samples"], integer=True, minimum=1)
    if "validation" in task:
        if name == "dcase":
            raise SpecError("task.validation: task dcase is scored on its own labelled test clips; remove "
                            "validation")
        fraction = _number("task.validation", task["validation"])
        if not 0 < fraction < 1:
            raise SpecError(f"task.validation: expected a fraction in (0, 1), got {fraction!r}")

    source = model["source"]
    if not isinstance(source, str):
        raise SpecError(f"model.source: expected a .keras file or one of {', '.join(ARCHITECTURES)}, got {source!r}")
    if source.endswith(".keras"):
        model["source"] = _resolved(base_dir, source)
        from tinyprop_tf.converters import artifacts  # no TensorFlow

        try:
            artifacts.check_keras_archive(model["source"], "model.source ")
        except artifacts.ArtifactError as error:
            raise SpecError(str(error)) from None
        # An architecture's layer count is known once it is built: a wrong N there fails its trials (recorded).
        affine_count = trainable.affine_layers_in_keras_file(model["source"])
        for n in {n for values in [grid["train_last"], *(c.get("train_last", []) for c in configurations)]
                  for n in values}:
            if n != "all":
                try:
                    trainable.check_train_last(n, affine_count, model["source"])
                except ValueError as error:
                    raise SpecError(f"grid.train_last: {error}") from None
    elif source not in ARCHITECTURES:
        raise SpecError(f"model.source: expected a .keras file or one of {', '.join(ARCHITECTURES)}, got {source!r}")
    _check_model_options(model)
    _number("model.pretrain_epochs", model["pretrain_epochs"], integer=True, minimum=0)
    if model["seed"] != PER_TRIAL_SEED:
        try:
            _number("model.seed", model["seed"], integer=True, minimum=0)
        except SpecError as error:
            raise SpecError(f'{error} or "{PER_TRIAL_SEED}" (one pretrained model per grid seed)') from None
    if model["seed"] == PER_TRIAL_SEED and source.endswith(".keras"):
        raise SpecError(f'model.seed: "{PER_TRIAL_SEED}" pretrains per seed; a .keras file is pretrained already')
    return Spec(os.path.abspath(path), task, model, grid, raw.decode("utf-8"), configurations)


def _check_task_options(task: dict) -> None:
    """The options only some tasks take: each named with the task it is for."""
    name = task["name"]
    only = {"speaker": ("fsdd",), "features": ("fsdd",), "test_takes": ("fsdd",), "machine": ("dcase",),
            "machine_id": ("dcase",), "train_size": (EMBEDDED_TASK,)}
    for key, names in only.items():
        if key in task and name not in names:
            raise SpecError(f"task.{key}: for task {' or '.join(names)}, not {name}")
    if "features" in task and task["features"] not in FSDD_FEATURES:
        raise SpecError(f"task.features: expected one of {', '.join(FSDD_FEATURES)}, got {task['features']!r}")
    if "test_takes" in task:
        takes = task["test_takes"]
        if (not isinstance(takes, list) or len(takes) != 2
                or not all(isinstance(t, int) and not isinstance(t, bool) for t in takes)
                or not 0 <= takes[0] <= takes[1]):
            raise SpecError(f"task.test_takes: expected [first, last] takes (integers, first <= last), got {takes!r}")
    if "train_size" in task:
        _number("task.train_size", task["train_size"], integer=True, minimum=1)
        if task["train_size"] > 4000:
            raise SpecError(f"task.train_size: at most 4000 (5,000 digits, the last 1,000 test), got "
                            f"{task['train_size']}")


def _check_model_options(model: dict) -> None:
    source = model["source"]
    if "hidden" in model:
        hidden = model["hidden"]
        if source != "mlp":
            raise SpecError(f"model.hidden: for source mlp, not {source}")
        if not isinstance(hidden, list) or not hidden or not all(
                isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden):
            raise SpecError(f"model.hidden: expected a list of layer widths >= 1, got {hidden!r}")
    if "filters" in model:
        filters = model["filters"]
        if source not in ("ds_cnn", "cnn", "conv1d"):
            raise SpecError(f"model.filters: for source ds_cnn, cnn or conv1d, not {source}")
        values = filters if isinstance(filters, list) else [filters]
        if not values or not all(isinstance(f, int) and not isinstance(f, bool) and f >= 1 for f in values) or (
                source == "ds_cnn" and isinstance(filters, list)):
            raise SpecError(f"model.filters: expected {'a channel count' if source == 'ds_cnn' else 'channel counts'}"
                            f" >= 1, got {filters!r}")


def model_options(model: dict) -> dict:
    """The architecture's options of a spec's model table (``tasks.build_model``'s keywords)."""
    return {key: model[key] for key in ("hidden", "filters") if key in model}


def _configuration(index: int, table: dict) -> dict:
    """One [[configuration]] table, checked as the grid's keys are: key -> list of values."""
    where = f"{CONFIGURATIONS}[{index}]"
    if not table:
        raise SpecError(f"{where}: empty (a configuration sets at least one grid key)")
    checked = {}
    for key, values in table.items():
        if key not in GRID_DEFAULTS:
            raise SpecError(f"{where}.{key}: unknown key; expected one of {', '.join(sorted(GRID_DEFAULTS))}")
        values = values if isinstance(values, list) else [values]
        if not values:
            raise SpecError(f"{where}.{key}: empty list (a configuration needs at least one value)")
        try:
            checked[key] = [_check_grid_value(key, v) for v in values]
        except SpecError as error:
            raise SpecError(str(error).replace(f"grid.{key}", f"{where}.{key}", 1)) from None
    return checked
