"""Smoke test of benchmarks/paper_comparison.py: the --quick configuration runs its sweeps (tinyprop sweep on a
local Ray instance) and prints its tables; a second run reads the finished trials instead of running them."""

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "paper_comparison.py")
FSDD = os.path.join(REPO, "..", "shared", "data", "fsdd")
QUICK_ROWS = ("pretrained, no fine-tuning", "dense", "static 0.2 zeta=1", "TinyProp 0.1-0.9 zeta=0.5", "BudgetProp 0.15")


def _table(stdout: str, title: str) -> dict[str, list[str]]:
    """The markdown table printed under ``### title``: first cell -> the other cells."""
    section = stdout.split(f"### {title}\n", 1)[1].split("\n### ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


@pytest.mark.slow
def test_quick_run_prints_tables_and_claims(tmp_path):
    plot = tmp_path / "comparison.png"
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, SCRIPT, "--quick", "--no-write", "--plot", str(plot), "--out", str(tmp_path / "runs")]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=1200, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "DCASE skipped" in out
    specs = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.suffix == ".toml")
    assert specs == ["fsdd-george.toml", "mnist-c.toml", "mnist.toml"] or not os.path.isdir(FSDD)
    assert len(list((tmp_path / "runs" / "mnist" / "trials").iterdir())) == len(QUICK_ROWS) - 1

    titles = ["MNIST (shifted digits)", "MNIST from scratch (the authors' C setup)"]
    if os.path.isdir(FSDD):  # the shared data folder; CI always has it
        titles.append("FSDD, new speaker george")
    for title in titles:
        table = _table(out, title)
        assert all(row in table for row in QUICK_ROWS), (title, list(table))
        dense, static, tinyprop = table["dense"], table["static 0.2 zeta=1"], table["TinyProp 0.1-0.9 zeta=0.5"]
        budget = table["BudgetProp 0.15"]
        assert dense[2].startswith("1.000")  # bwd MACs / dense
        for row in (static, tinyprop, budget):
            assert 0.0 < float(row[2].split()[0]) < 0.5  # sparse runs count less backward compute
        for row in (dense, static, tinyprop):
            assert 0.1 < float(row[0].split()[0]) <= 1.0  # accuracy

    claims = _table(out, "Claims")
    assert [key for key in claims if key != "task" and not key.startswith("---")] == titles
    targets = _table(out, "BudgetProp targets")  # one row per task, each target met or missed
    assert [key for key in targets if key != "task" and not key.startswith("---")] == titles
    assert all(row[2] in ("met", "missed") for key, row in targets.items() if key in titles)
    assert all(re.fullmatch(r"holds|fails", row[3]) for key, row in claims.items() if key in titles)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Again: every trial has its record, none runs; the same tables.
    again = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Sweep: 4 trials, 4 finished before, 0 to run" in again.stdout
    assert _table(again.stdout, titles[0]) == _table(out, titles[0])


def test_budget_configs_name_the_policy_their_trials_run():
    """A BudgetProp row with options (benchmarks/budget_allocation.py) runs exactly that policy: its spec parses
    back to BudgetProp with those parameters and the others at their defaults."""
    sys.path.insert(0, os.path.dirname(SCRIPT))
    import paper_comparison as pc

    import tinyprop_tf as tp

    config = pc._budget(0.15, rounding="round", cost_exponent=0.5)
    assert config.name == "BudgetProp 0.15, rounding=round, cost_exponent=0.5"
    assert tp.policies.from_spec(config.policy_spec()) == tp.BudgetProp(0.15, rounding="round", cost_exponent=0.5)
    assert tp.policies.from_spec(pc._budget(0.2, min_kept=3).policy_spec()) == tp.BudgetProp(0.2, min_kept=3)
    assert pc._budget(0.15).policy_spec() == "budget:budget=0.15"  # the paper comparison's trials keep their keys
    skipping = pc._budget(1.0, skip_below=1.5)
    assert skipping.name == "BudgetProp 1, skip_below=1.5"
    assert tp.policies.from_spec(skipping.policy_spec()) == tp.BudgetProp(1.0, skip_below=1.5)
    samples = pc._budget(0.15, mode="samples")
    assert samples.name == "BudgetProp 0.15, mode=samples"
    assert tp.policies.from_spec(samples.policy_spec()) == tp.BudgetProp(0.15, mode="samples")


def test_render_of_a_rerun_replaces_the_tables_it_reran(tmp_path):
    """--render A B: B's tasks replace A's of the same key, in A's order; the others stay; configs are the union."""
    import json

    sys.path.insert(0, os.path.dirname(SCRIPT))
    import paper_comparison as pc

    def record(name, tasks, configs):
        path = tmp_path / name
        path.write_text(json.dumps({"command": name, "seeds": [0, 1], "epochs": 12, "seconds": 60.0, "notes": [],
                                    "configs": [{"name": c} for c in configs],
                                    "tasks": [{"key": key, "runs": runs} for key, runs in tasks]}))
        return str(path)

    first = record("first", [("mnist", "old"), ("fsdd-george-ds_cnn", "old"), ("fsdd-jackson-ds_cnn", "old")],
                   ["dense", "BudgetProp 0.15"])
    rerun = record("rerun", [("fsdd-jackson-ds_cnn", "new"), ("fsdd-george-ds_cnn", "new")],
                   ["dense", "BudgetProp 0.15, mode=samples"])
    merged = pc.merge_records([first, rerun])
    assert [(t["key"], t["runs"]) for t in merged["tasks"]] == [
        ("mnist", "old"), ("fsdd-george-ds_cnn", "new"), ("fsdd-jackson-ds_cnn", "new")]
    assert [c["name"] for c in merged["configs"]] == ["dense", "BudgetProp 0.15", "BudgetProp 0.15, mode=samples"]
    assert merged["command"] == "first && rerun"
