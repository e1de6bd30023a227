"""``tinyprop sweep`` with 1 and 2 workers on this machine, and on a two-node cluster (one CPU per node).

The same sweep (``SPEC``: 2 policies x 4 seeds on the embedded MNIST, 1,000 samples, ``EPOCHS`` epochs: CPU-bound
trials) runs three times into fresh folders. Reported: wall time of the command and of the trials alone
(``sweep.json``'s ``sweep_seconds``, from the first trial's submission to the last record), their ratio to one
worker, and Ray's overhead per trial: ``(sweep_seconds x workers - sum of the trials' own seconds) / trials``,
i.e. what a worker spends on a trial besides fine-tuning (scheduling, moving the data and model, a fresh worker's
TensorFlow import).

    .venv/bin/python benchmarks/sweep_scaling.py [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _results  # noqa: E402
from _ray_cluster import LocalCluster, ray_env  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Epochs enough that a trial (~7 s on an idle core) outweighs a fresh worker's TensorFlow import (~5 s), which
# every worker pays once whatever the number of trials.
EPOCHS = 20
SPEC = f"""
[task]
name = "mnist_demo"

[model]
source = "mlp"
pretrain_epochs = 3

[grid]
policy = ["dense", "tinyprop:s_min=0.1,s_max=0.9,zeta=0.5"]
epochs = {EPOCHS}
seed = [0, 1, 2, 3]
"""


def run_sweep(spec: str, out: str, options: list[str], env: dict) -> dict:
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "tinyprop_tf.cli", "sweep", spec, "--out", out, *options],
                          capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.time() - started
    if proc.returncode != 0:
        raise SystemExit(f"sweep {options} failed: {proc.stderr.strip()[-2000:]}")
    summary = json.load(open(os.path.join(out, "sweep.json")))
    trial_seconds = [record["seconds"] for record in summary["records"]]
    return {"wall_seconds": wall, "sweep_seconds": summary["sweep_seconds"],
            "ray_start_seconds": summary["ray_start_seconds"], "trials": len(trial_seconds),
            "trial_seconds_sum": sum(trial_seconds),
            "nodes": len({record["ran_on"]["node_id"] for record in summary["records"]})}


def load_average() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md as it is")
    args = parser.parse_args(argv)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="sweep-scaling-") as scratch:
        spec = os.path.join(scratch, "spec.toml")
        with open(spec, "w") as handle:
            handle.write(SPEC)
        load_before = load_average()
        for workers in (1, 2):
            rows[f"local, {workers} worker(s)"] = (workers, run_sweep(
                spec, os.path.join(scratch, f"local{workers}"), ["--num-cpus", str(workers)], ray_env()))
        with LocalCluster(cpus_per_node=[1, 1]) as cluster:
            rows["two nodes, 1 CPU each"] = (2, run_sweep(
                spec, os.path.join(scratch, "cluster"), ["--address", cluster.address], cluster.env))
        load_after = load_average()
    base = rows["local, 1 worker(s)"][1]["sweep_seconds"]
    # A trial's own seconds grow when its CPU is shared (other work on the machine): the column shows it.
    lines = ["| run | trials | nodes used | command wall s | trials wall s | speed-up (trials) | mean trial s | "
             "Ray start s | Ray overhead per trial s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, (workers, row) in rows.items():
        overhead = (row["sweep_seconds"] * workers - row["trial_seconds_sum"]) / row["trials"]
        row["overhead_per_trial_seconds"] = overhead
        lines.append(f"| {name} | {row['trials']} | {row['nodes']} | {row['wall_seconds']:.1f} | "
                     f"{row['sweep_seconds']:.1f} | {base / row['sweep_seconds']:.2f}x | "
                     f"{row['trial_seconds_sum'] / row['trials']:.2f} | {row['ray_start_seconds']:.1f} | "
                     f"{overhead:.2f} |")
    body = "\n".join(lines) + (
        f"\n\nSpec: 2 policies x 4 seeds, embedded MNIST (1,000 fine-tuning samples), MLP 784-64-32-10, {EPOCHS} "
        f"epochs (`benchmarks/sweep_scaling.py` SPEC). Trials wall = first trial submitted to last record; overhead "
        f"per trial = (trials wall x workers - sum of the trials' own seconds) / trials. Ray start = `ray.init` "
        f"(for the cluster: connecting to it). Load average (1, 5, 15 min) before: {load_before}, after: "
        f"{load_after}: the machine is shared: a load average above 2 on 2 cores means the workers got less than a "
        f"core each, and the speed-ups then say little about Ray.\n")
    print(body)
    if not args.no_write:
        _results.write_section("sweep_scaling", "python benchmarks/sweep_scaling.py", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
