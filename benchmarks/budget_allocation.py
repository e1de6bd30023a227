"""How BudgetProp shares its budget, measured: rounding, cost exponent, a floor on kept entries, the mean's decay,
skipping the samples the model already fits.

    .venv/bin/python benchmarks/budget_allocation.py [--out DIR] [--fsdd PATH] [--no-write]

The paper comparison's misses are the DS-CNN tables: every layer trained, BudgetProp 0.15 loses 1.4-5.4 points
while spending 0.117-0.13 of dense backward (``floor(M * bpr)`` with ``M * bpr`` about 3 in the pointwise layers
rounds a sixth of the budget away). Each knob BudgetProp already has (all exported and mirrored in ``micro/``) is
tried on the tables that met the target and on those that missed:

- ``rounding=round``: ``k = round(M * bpr)``, the budget spent as set;
- ``cost_exponent`` 0.5 and 0 (one ratio for every layer) instead of 1: less of the budget moved to the cheap layers;
- ``min_kept=3``: a floor on every sample's kept entries;
- ``decay`` 0.5 and 0.99 instead of 0.9: how fast the running mean of the local error that sets a sample's share
  follows the recent samples;
- ``skip_below`` (exported like the rest): no backward pass at all for a sample whose output-layer error is below
  that multiple of the running mean; with ``budget=1`` the other samples back-propagate densely (selective
  back-propagation), with 0.15 on BudgetProp's shares;
- ``mode=samples``: whole samples, a running quantile passing the budget's share of them, densely; the default
  ``mode=auto`` row (``BudgetProp 0.15``) is it on the every-layer DS-CNN and the per-entry budget elsewhere.

Tables (the paper comparison's settings, each at its validated learning rate, ``learning_rates.json``): MNIST shift
(MLP, 4 seeds), FSDD george Conv1D, and the DS-CNN with its BatchNorm adapted and folded, every layer trained
(george, nicolas) and the last 2 layers (george), 2 seeds each, 12 epochs; the other three speakers' every-layer
DS-CNN with dense, BudgetProp and the two skipping rows that come closest; and george's every-layer DS-CNN table,
dense and BudgetProp, with LazyAdam, momentum and SGD at 1e-3. Besides accuracy and compute, the final
epoch's training loss and the test accuracy after the first epoch (against the pretrained model's) show how fast
each run trains. The trials run through ``tinyprop sweep`` (``paper_comparison.run_sweep``); a rerun resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _results  # noqa: E402
import paper_comparison as pc  # noqa: E402

import numpy as np  # noqa: E402

SECTION = "BudgetProp's budget sharing: rounding, cost exponent, floor, decay, sample skipping"
COMMAND = "python benchmarks/budget_allocation.py"
EPOCHS = 12

ENTRIES = pc._budget(0.15, mode="entries")  # the per-entry budget, what "auto" chooses but on the every-layer DS-CNN
CONFIGS = [
    pc.DENSE,
    pc.BUDGETPROP_DEFAULT,
    ENTRIES,
    pc._budget(0.15, mode="entries", rounding="round"),
    pc._budget(0.15, mode="entries", cost_exponent=0.5),
    pc._budget(0.15, mode="entries", rounding="round", cost_exponent=0.5),
    pc._budget(0.15, mode="entries", cost_exponent=0.0),
    pc._budget(0.15, mode="entries", min_kept=3),
    pc._budget(0.15, mode="entries", decay=0.5),
    pc._budget(0.15, mode="entries", decay=0.99),
    # selective back-propagation: only the samples whose output error is at least skip_below x the running mean,
    # densely (budget 1) or on BudgetProp's shares; whole samples at the running quantile that passes 0.15
    pc._budget(1.0, skip_below=1.5),
    pc._budget(1.0, skip_below=1.25),
    pc._budget(0.15, skip_below=0.5),
    pc._budget(0.15, mode="samples"),
]
SKIP_CONFIGS = (pc.DENSE, pc.BUDGETPROP_DEFAULT, ENTRIES, pc._budget(1.0, skip_below=1.5),
                pc._budget(1.0, skip_below=1.25))


@dataclasses.dataclass(frozen=True)
class Table:
    title: str
    sweep: str  # its folder under --out: tables of one sweep share the pretrained models
    task: dict
    model: dict
    settings: dict
    seeds: tuple
    configs: tuple = tuple(CONFIGS)


# The every-layer DS-CNN tables at 1e-3, the rate the per-entry budget was validated at (it diverges at 3e-3, the
# rate chosen since BudgetProp spends on whole samples there: learning_rates.json), so that its knobs compare.
DS_CNN_PER_ENTRY_RATE = 1e-3


def tables(fsdd: str) -> list[Table]:
    root = os.path.abspath(fsdd)
    ds_cnn = {"source": "ds_cnn", "filters": 32, "pretrain_epochs": 15}

    def every_layer(name):
        return pc._adam(f"fsdd-{name}-ds_cnn-bn-adapt", batchnorm="adapt", learning_rate=DS_CNN_PER_ENTRY_RATE)

    def speaker(name):
        return {"name": "fsdd", "data": root, "speaker": name, "features": "mfcc", "test_takes": pc.FSDD_TEST_TAKES}

    return [
        Table("MNIST (shifted digits), MLP", "mnist", {"name": pc.sweep_spec.DEMO_TASK},
              {"source": "mlp", "hidden": [32, 16], "pretrain_epochs": 15}, pc._adam("mnist"), (0, 1, 2, 3)),
        Table("FSDD george, Conv1D", "fsdd-george", speaker("george"),
              {"source": "conv1d", "filters": [32, 32], "pretrain_epochs": 20}, pc._adam("fsdd-george"), (0, 1)),
        Table("FSDD george, DS-CNN, every layer trained", "fsdd-george-ds_cnn", speaker("george"), ds_cnn,
              every_layer("george"), (0, 1)),
        Table("FSDD nicolas, DS-CNN, every layer trained", "fsdd-nicolas-ds_cnn", speaker("nicolas"), ds_cnn,
              every_layer("nicolas"), (0, 1)),
        Table("FSDD george, DS-CNN, last 2 layers trained", "fsdd-george-ds_cnn", speaker("george"), ds_cnn,
              pc._adam("fsdd-george-ds_cnn-last2-bn-adapt", train_last=2, batchnorm="adapt"), (0, 1)),
    ] + [  # the other speakers' every-layer DS-CNN: BudgetProp against dense back-propagation of the hard samples
        Table(f"FSDD {name}, DS-CNN, every layer trained", f"fsdd-{name}-ds_cnn", speaker(name), ds_cnn,
              every_layer(name), (0, 1), SKIP_CONFIGS)
        for name in ("jackson", "lucas", "yweweler")
    ] + [  # is the slow fitting Adam's? The same DS-CNN table with the other optimizers at the same rate.
        Table(f"FSDD george, DS-CNN, every layer trained, {optimizer} 0.001", "fsdd-george-ds_cnn", speaker("george"),
              ds_cnn, pc._adam("fsdd-george-ds_cnn-bn-adapt", batchnorm="adapt", optimizer=optimizer,
                               learning_rate=1e-3), (0, 1), (pc.DENSE, pc.BUDGETPROP_DEFAULT, ENTRIES))
        for optimizer in ("lazy_adam", "momentum", "sgd")
    ]


def run_table(table: Table, out: str) -> dict:
    """The table's trials (run where they have no record yet), read as the paper comparison reads its own:
    ``paper_comparison.table_result``."""
    task = pc.Task(table.sweep, table.title, "accuracy", table.title, table.sweep, settings=table.settings,
                   configs=list(table.configs))
    records = pc.run_sweep(pc.Sweep(table.sweep, table.task, table.model, [task]), list(table.seeds), EPOCHS, out)
    return pc.table_result(task, records, list(table.seeds), EPOCHS)


def table_text(table: Table, result: dict) -> str:
    runs_of = result["runs"]
    dense = np.array([r["final_metric"] for r in runs_of[pc.DENSE.name]])
    lines = [f"**{table.title}** ({len(table.seeds)} seeds, {table.settings['optimizer']} "
             f"{table.settings['learning_rate']:g}; pretrained accuracy {np.mean(result['initial']):.3f})", "",
             "| config | accuracy | Δ vs dense (points) | less bwd compute (selection counted) | target | "
             "training loss, last epoch | accuracy after epoch 1 |", "|---|---|---|---:|---|---:|---:|"]
    for name, runs in runs_of.items():
        metric = np.array([r["final_metric"] for r in runs])
        delta = pc._mean_std(100 * (metric - dense))
        # selection counted, as the paper comparison's targets
        reduction = 1.0 / float(np.mean([r["bwd_ratio"] + r["select_ratio"] for r in runs]))
        verdict = "" if name == pc.DENSE.name else ("met" if pc.meets_target(reduction, delta[0]) else "missed")
        lines.append(f"| {name} | {pc._pm(pc._mean_std(metric))} | "
                     f"{'0' if name == pc.DENSE.name else pc._pm(delta, digits=1)} | {reduction:.1f}x | {verdict} | "
                     f"{np.mean([r['final_loss'] for r in runs]):.3f} | "
                     f"{np.mean([r['metric'][0] for r in runs]):.3f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(pc.REPO, "tinyprop_out", "budget_allocation"))
    parser.add_argument("--fsdd", default=pc.DEFAULT_FSDD)
    parser.add_argument("--no-write", action="store_true", help="print only, don't update RESULTS.md")
    args = parser.parse_args(argv)
    from tinyprop_tf.datasets import list_fsdd

    try:  # before any trial runs: the FSDD tables need george's and nicolas's clips
        found = {clip.speaker for clip in list_fsdd(args.fsdd)}
    except Exception as error:  # missing folder / wrong layout
        parser.error(f"--fsdd {args.fsdd}: {error}")
    missing = sorted({"george", "nicolas", "jackson", "lucas", "yweweler"} - found)
    if missing:
        parser.error(f"--fsdd {args.fsdd}: no clips of {', '.join(missing)} (found {', '.join(sorted(found))})")
    texts = [table_text(t, run_table(t, args.out)) for t in tables(args.fsdd)]
    body = (
        "Each BudgetProp row changes one or two of its parameters from the defaults (budget 0.15, mode auto, floor "
        "rounding, cost exponent 1, min_kept 1, decay 0.9, skip_below 0); the per-entry knobs are tried with "
        "`mode=entries`, and the every-layer DS-CNN tables run at Adam 1e-3, the per-entry budget's validated rate "
        "(the paper comparison runs them at 3e-3 now). The target is the paper comparison's (≤ "
        f"{pc.TARGET_LOSS_POINTS:g} point below dense at ≥ {pc.TARGET_SPEEDUP_DENSE:g}x less backward compute, "
        "selection counted). Two seeds resolve about ±1.5 points on the FSDD tables (200 test clips).\n\n"
        + "\n\n".join(texts) + "\n\n"
        "Read with the paper comparison's 4-seed tables. Spending the budget as set (`rounding=round`) or moving "
        "less of it to the cheap layers (`cost_exponent` 0.5) helps on some tables and hurts on others, within what "
        "two seeds resolve; together they meet the target on george (Conv1D and DS-CNN) but not on nicolas, and "
        "rounding takes the last-2-layers table below 6x (floor rounding leaves the margin the selection's own cost "
        "uses). A floor of 3 kept entries costs compute and gains nothing; one ratio for every layer (cost exponent "
        "0) collapses with the last 2 layers trained, where it takes the logits' full backward away. "
        "The running mean's decay: 0.99 follows the recent errors too slowly (it spends less and loses more on "
        "every table), 0.5 is as good as 0.9 within the seeds but for one collapsed run on george's DS-CNN. "
        "What no per-entry knob changes: on the DS-CNN the sparse runs end with several times dense's training loss, and in "
        "the first epoch they gain little on the pretrained model, or lose, where dense gains most of what it "
        "gains in all: the sparse error signal through nine layers slows the fitting itself, wherever the budget "
        "goes. The last tables say it is not Adam's doing: with LazyAdam, momentum and plain SGD the per-entry "
        "runs fall as far behind (with SGD, whose step scales with the gradient, furthest).\n\n"
        "Skipping the fitted samples instead (`skip_below`, exported like the rest) changes that on the DS-CNN: "
        "back-propagating only the samples whose output error is at least 1.5x the running mean, densely "
        "(`BudgetProp 1, skip_below=1.5`), keeps each sample's error signal whole through the nine layers: over the "
        "five speakers it loses 0.9 points on average at 5.5-6.5x, and its first epoch gains about as dense's does. "
        "Its compute follows the errors' spread, not the budget (4.3x on MNIST, 8.6x with the last 2 layers). "
        "`mode=samples` spends the budget itself on whole samples: a running quantile of the output error passes a "
        "share 0.15 of them (it lags while the errors fall, so 7.0-7.3x here); at 1e-3 it loses 1.5 points on "
        "average over the five speakers' every-layer DS-CNN (george -1.8, nicolas -2.7, jackson -1.8, lucas -0.3, "
        "yweweler -1.0) where the per-entry budget loses 2.8, and at 3e-3, the rate chosen with it on held-out "
        "clips (the per-entry budget diverges there), 0.4-1.7 points over 4 seeds (paper comparison). That is "
        "BudgetProp's default there now (`mode=auto`: the backward cost of the every-layer DS-CNN spreads over 7 "
        "effective layers); its rows here equal the `mode=samples` rows. Elsewhere `auto` keeps the per-entry "
        "budget (`BudgetProp 0.15` rows equal to `mode=entries`): with the last 2 layers trained whole samples lose "
        "5.3 points, against 3.5 per entry. On MNIST (-0.1 at 6.8x) and george's Conv1D net (-0.3 at 7.3x, per entry "
        "-1.3 at 8.0x) whole samples hold too, on two seeds and one speaker; the paper comparison's 4-seed tables "
        "meet the target per entry there, so `auto` does not switch them until those tables measure whole samples. "
        "The optimizer tables: LazyAdam and momentum at 1e-3 lose 1.5 points on whole samples (3.7 and 5.8 per "
        "entry); plain SGD at 1e-3 does not fit the folded DS-CNN even dense (training loss 0.34).\n"
    )
    print(body)
    if not args.no_write:
        _results.write_section(SECTION, COMMAND, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
