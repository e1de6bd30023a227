"""The fine-tuning learning rate, chosen on validation data (never on a test split).

    .venv/bin/python benchmarks/choose_learning_rate.py [--seeds 2] [--rates 1e-3,3e-3,1e-2] [--out DIR] [--no-write]
                                                        [--tasks mnist,fsdd] [--fsdd-models conv1d,ds_cnn@adapt,...]

The paper comparison's fine-tuning tasks (``paper_comparison.py``: MNIST shifted, FSDD for every speaker with the
Conv1D net, the DS-CNN all layers and last 2 layers with BatchNorm adapted) as ``tinyprop sweep``s whose task holds
out a quarter of the fine-tuning samples (``task.validation = 0.25``): dense and BudgetProp at its defaults, Adam,
each rate, the metric on the held-out samples after the last epoch. Per task, the rate with the best mean validation
metric of the two (``experiment.choose_learning_rate``'s rule: a rate at which the dense baseline and the sparse
policy both train; ties go to the smaller rate) is the one the comparison fine-tunes that task with, every policy
alike; written to ``benchmarks/learning_rates.json`` (read by ``paper_comparison.py``). A run of some tasks only
(``--tasks``, ``--fsdd-models``) updates their rates in that file, keeps the others', and writes its own section.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _results  # noqa: E402
import paper_comparison as pc  # noqa: E402

from tinyprop_tf._validate import AUTO_LEARNING_RATES  # noqa: E402

SECTION = "Fine-tuning learning rate, chosen on validation data"
VALIDATION = 0.25
DEFAULT_OUT = os.path.join(pc.REPO, "tinyprop_out", "choose_learning_rate")
CHOSEN = os.path.join(HERE, "learning_rates.json")
FSDD_MODELS = ("conv1d", "ds_cnn@adapt", "ds_cnn:last2@adapt")
LESSONS = """\
- No one rate suits every task: the Conv1D net and the DS-CNN's last 2 layers want 1e-2 (dense and BudgetProp
  alike), the MLP 3e-3. With every DS-CNN layer trained, BudgetProp per entry (its spending there until
  `mode="auto"`) diverged at 3e-3 and 1e-2 (training loss from 1.5 up to 4-8 within two epochs, accuracy near
  chance) while dense trains at every rate: nine layers in a row that each back-propagate a few channels per sample
  give a biased gradient, and Adam turns it into full-size steps. On whole samples (what `auto` chooses there now)
  each back-propagated sample's gradient is exact: it trains at 3e-3 (the rerun's section) and diverges at 1e-2.
- The folded DS-CNN does not take SGD: plain SGD 0.05 and momentum 0.01 diverge even dense (loss 1e5; one-off runs,
  george, nicolas, yweweler), LazyAdam at 3e-3 diverges as Adam does (0.75-0.09)."""


def validation_sweeps(fsdd_root: str, speakers: list[str], rates: list[float], tasks=("mnist", "fsdd"),
                      fsdd_models=FSDD_MODELS) -> list[pc.Sweep]:
    """The comparison's sweeps, their task holding out ``VALIDATION`` of the fine-tuning samples; per table and rate,
    dense and BudgetProp."""
    sweeps = ([pc.mnist_sweep(False, [])] if "mnist" in tasks else []) + (
        pc.fsdd_sweeps(fsdd_root, speakers, list(fsdd_models), False, []) if "fsdd" in tasks else [])
    out = []
    for sweep in sweeps:
        tables = [dataclasses.replace(table, key=f"{table.key}@{rate:g}", configs=[pc.DENSE, pc.BUDGETPROP_DEFAULT],
                                      settings={**table.settings, "learning_rate": rate})
                  for table in sweep.tables for rate in rates]
        out.append(dataclasses.replace(sweep, name=f"{sweep.name}-validation",
                                       task={**sweep.task, "validation": VALIDATION}, tables=tables))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--rates", default=",".join(f"{r:g}" for r in AUTO_LEARNING_RATES))
    parser.add_argument("--fsdd", default=pc.DEFAULT_FSDD)
    parser.add_argument("--fsdd-speakers", default="all")
    parser.add_argument("--tasks", default="mnist,fsdd", help="comma-separated subset of mnist,fsdd")
    parser.add_argument("--fsdd-models", default=",".join(FSDD_MODELS),
                        help=f"comma-separated subset of {','.join(FSDD_MODELS)}")
    parser.add_argument("--out", default=DEFAULT_OUT, help="the sweeps' folders (a rerun resumes)")
    parser.add_argument("--no-write", action="store_true", help="print only: don't update RESULTS.md")
    args = parser.parse_args(argv)
    from tinyprop_tf.datasets import list_fsdd
    from tinyprop_tf.experiment import best_rate

    started = time.time()
    rates = [float(r) for r in args.rates.split(",")]
    seeds = list(range(args.seeds))
    found = sorted({clip.speaker for clip in list_fsdd(args.fsdd)})
    speakers = found if args.fsdd_speakers == "all" else args.fsdd_speakers.split(",")
    tasks, fsdd_models = args.tasks.split(","), args.fsdd_models.split(",")
    unknown = sorted(set(tasks) - {"mnist", "fsdd"}) + sorted(set(fsdd_models) - set(FSDD_MODELS))
    if unknown:
        parser.error(f"unknown task or FSDD model {', '.join(unknown)}; expected mnist, fsdd and {FSDD_MODELS}")
    partial = set(tasks) != {"mnist", "fsdd"} or set(fsdd_models) != set(FSDD_MODELS)
    sweeps = validation_sweeps(os.path.abspath(args.fsdd), speakers, rates, tasks, fsdd_models)
    # rows[key] = (title, {policy: {rate: mean validation metric over seeds}})
    rows: dict = {}
    trial_seconds = 0.0  # the trials' own wall times (a rerun reads finished trials instead of running them)
    for sweep in sweeps:
        print(f"\n## sweep {sweep.name}", flush=True)
        records = pc.run_sweep(sweep, seeds, args.epochs, args.out)
        for table in sweep.tables:
            rate = table.settings["learning_rate"]
            result = pc.table_result(table, records, seeds, args.epochs)
            trial_seconds += sum(records[pc.sweep_spec.Trial(table.trial_settings(config, seed, args.epochs)).key]
                                 .get("seconds", 0.0) for config in table.configs for seed in seeds)
            key = table.key.rsplit("@", 1)[0]
            row = rows.setdefault(key, (table.title, {}))[1]
            for config in table.configs:
                row.setdefault(config.name, {})[rate] = float(np.mean(
                    [r["final_metric"] for r in result["runs"][config.name]]))
    budget = pc.BUDGETPROP_DEFAULT.name
    chosen = {key: best_rate(rates, [(row["dense"][rate] + row[budget][rate]) / 2 for rate in rates])
              for key, (_, row) in rows.items()}
    head = ("| task | " + " | ".join(f"dense {r:g}" for r in rates) + " | "
            + " | ".join(f"BudgetProp {r:g}" for r in rates) + " | chosen |")
    lines = [head, "|" + "---|" * (2 + 2 * len(rates))]
    for key, (title, row) in rows.items():
        cells = [title] + [f"{row['dense'][r]:.3f}" for r in rates] + [f"{row[budget][r]:.3f}" for r in rates]
        lines.append("| " + " | ".join(cells) + f" | {chosen[key]:g} |")
    table = "\n".join(lines)
    minutes = (time.time() - started) / 60
    print(f"\n{table}\n\n{minutes:.1f} min")
    if not args.no_write:
        from tinyprop_tf import outdir

        kept = dict(pc.CHOSEN_RATES) if partial else {}  # a partial run changes the rates of its tables only
        outdir.write_json(CHOSEN, {"rule": "best mean validation metric of dense and BudgetProp, ties to the smaller",
                                   "validation": VALIDATION, "seeds": seeds, "epochs": args.epochs,
                                   "learning_rates": dict(sorted({**kept, **chosen}.items()))})
        body = "\n".join([
            f"Each task holds out {VALIDATION:g} of its fine-tuning samples (`task.validation`, a seeded draw) and "
            f"reports the accuracy on them after {args.epochs} epochs (Adam, batch 32); the test splits are not "
            f"used. Mean over {len(seeds)} seeds ({', '.join(map(str, seeds))}). The tasks are the paper "
            f"comparison's (`paper_comparison.py`), BatchNorm adapted to the speaker and folded for the DS-CNN. "
            f"*chosen*: the rate with the best mean of the dense and the BudgetProp column (ties: the smaller), "
            f"what the paper comparison fine-tunes the task with (`benchmarks/learning_rates.json`) and the rule "
            f"of `tinyprop finetune --learning-rate auto` (its default).",
            "", table, "", LESSONS, "",
            f"Runtime: {len(rows) * 2 * len(rates) * len(seeds)} trials of {trial_seconds / 60:.0f} min in all (two "
            f"at a time, plus pretraining) on {_results.machine()}; this invocation {minutes:.1f} min."])
        section = SECTION + (f" (rerun: {args.tasks}; FSDD {args.fsdd_models})" if partial else "")
        _results.write_section(section, "python benchmarks/choose_learning_rate.py" + "".join(
            f" {a}" for a in (argv if argv is not None else sys.argv[1:])), body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
