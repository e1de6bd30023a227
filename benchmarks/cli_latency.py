"""How long the CLI takes to report a usage error (it must not wait for TensorFlow's import).

    .venv/bin/python benchmarks/cli_latency.py [--repeat 5]

Each command line is run ``--repeat`` times as a fresh process (``python -m tinyprop_tf.cli ...``); the table gives
the median and the slowest wall time, the exit code and the number of lines on stderr. For scale, the last row
is the time ``import tensorflow`` alone takes in a fresh process on the same machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _results  # noqa: E402

COMMANDS = [
    ["finetune", "--data", "/no/such", "--task", "fsdd"],
    ["finetune", "--data", "{tmp}", "--task", "fsdd", "--epochs", "0"],
    ["finetune", "--data", "{tmp}", "--task", "fsdd", "--model", "{tmp}/empty.keras"],
    ["export", "{tmp}/empty.keras", "--out", "{tmp}/o"],
    ["verify", "{tmp}"],
    ["demo", "--board", "arduino"],
]


def _time(argv, repeat):
    times, proc = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
    return times, proc


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only, don't update RESULTS.md")
    args = parser.parse_args(argv)
    rows = ["| command | median | slowest | exit code | stderr lines |", "|---|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        open(os.path.join(tmp, "empty.keras"), "wb").close()
        for command in COMMANDS:
            line = [part.replace("{tmp}", tmp) for part in command]
            times, proc = _time([sys.executable, "-m", "tinyprop_tf.cli", *line], args.repeat)
            shown = " ".join(command).replace("{tmp}", "TMP")
            rows.append(f"| `tinyprop {shown}` | {statistics.median(times):.2f} s | {max(times):.2f} s | "
                        f"{proc.returncode} | {len(proc.stderr.splitlines())} |")
            print(rows[-1], flush=True)
    times, _ = _time([sys.executable, "-c", "import tensorflow"], max(1, args.repeat // 2))
    rows.append(f"| (for scale) `python -c 'import tensorflow'` | {statistics.median(times):.2f} s | "
                f"{max(times):.2f} s | | |")
    print(rows[-1])
    body = (f"Usage errors are found before TensorFlow is imported; {args.repeat} fresh processes per command line "
            "(wall time, machine otherwise idle as far as the run could tell).\n\n" + "\n".join(rows))
    if not args.no_write:
        _results.write_section("CLI usage errors", f"python benchmarks/cli_latency.py --repeat {args.repeat}", body)


if __name__ == "__main__":
    main()
