"""Measures what holds `describe train` back on photos it never saw (issue 21, item 1): an ablation table.

Usage: `PYTHONPATH=. python experiments/describe_ablation.py [--only default --only sequences4 ...]
[--steps N] [--out FOLDER] [--table PATH]`

Two held-out sets, each scored with `--split full` on one set of task files for every row:
`describe synth --heldout` (16 sequences from 8 scikit-image photos that the training photos do not
include, known warps) and `describe synth --stereo` (real correspondences: the Middlebury motorcycle
pair through its disparity, 256 tracks). Each row is a `describe train` command line (on the default
synthetic training set of the bundled photos, seed 0), then `describe evaluate --model RUN` on each
set; raw16 and SIFT (`--baseline`) are scored on the same tasks. The stereo set has one sequence, so
its retrieval (distractors come from other sequences) is trivially 1 for every descriptor: read its
verification and matching. For each row, set and level (e, h, t): verification (mean of the intra and
inter imbalanced APs), matching mAP and retrieval mAP (mean over pool sizes), and the means over
levels as the command prints them; `cpu_s` is the training command's CPU time (user + system, every
thread, start-up and its per-epoch evaluation included).

Rows go to `docs/experiments/describe_ablation.csv` and `.json` as they are measured (a rerun measures
only what is missing; delete the JSON to start over, or give `--steps` another value: rows are keyed by
their name and command line).
"""

import argparse
import csv
import json
import os
import pathlib
import resource
import shlex
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = pathlib.Path(__file__).resolve().parent.parent
TABLE = ROOT / "docs" / "experiments" / "describe_ablation"  # .csv and .json
LEVELS = ("e", "h", "t")
TASKS = ("verification", "matching", "retrieval")
SETS = {"heldout": "--heldout", "stereo": "--stereo"}  # `describe synth` option of each held-out set

# name: the options after `describe train`. The first rows walk from the previous defaults to today's,
# one change a row (each row's line names every option that differs from today's defaults); the others
# are one change from today's defaults.
# The rows measured before the default dropout became 0 pin the 0.3 they were measured with.
ROWS = {
    "previous default (split a)": "--split a --patches 64 --steps 256 --schedule constant --dropout 0.3",
    "every training photo": "--patches 64 --steps 256 --schedule constant --dropout 0.3",
    "every training photo, level positives": "--patches 64 --steps 256 --schedule constant --positives level "
                                             "--dropout 0.3",
    "256 tracks a sequence": "--patches 256 --steps 256 --schedule constant --dropout 0.3",
    "cosine step size": "--patches 256 --steps 256 --dropout 0.3",
    "512 steps (dropout 0.3)": "--dropout 0.3",
    "default (no dropout)": "",
    "batches of 128, 256 steps": "--batch-size 128 --triplets 16384 --steps 256",
    "step size 2e-3": "--learning-rate 0.002",
    "512 tracks a sequence": "--patches 512",
    "level positives": "--positives level",
    "augment": "--augment",
    "sequences4": "--batch-sequences 4",
    "seed004-loss": "--loss triplet --optimiser sgd --no-l2-normalise",
}


def deeprestore(*arguments, runs):
    """Runs the CLI in a fresh process; returns `(run directory, CPU seconds of the process)`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    command = [sys.executable, "-m", "deeprestore", "--runs", str(runs), "--seed", "0", "--quiet", *arguments]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode:
        sys.exit(f"{shlex.join(command)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return pathlib.Path(result.stdout.strip().splitlines()[-1]), cpu


def by_level(results):
    """`{task: {level: value}}` and the command's three means, from one descriptor's results.json entry."""
    table = {
        "verification": {level: (results["verification"][level]["intra"]["imbalanced"]
                                 + results["verification"][level]["inter"]["imbalanced"]) / 2 for level in LEVELS},
        "matching": {level: results["matching"][level] for level in LEVELS},
        "retrieval": {level: sum(results["retrieval"][level].values()) / len(results["retrieval"][level])
                      for level in LEVELS},
    }
    return {f"{task}_{level}": table[task][level] for task in TASKS for level in LEVELS} | {
        f"{task}_mean": results["summary"][task] for task in TASKS}


def main(arguments=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=sorted(ROWS), help="measure only these rows")
    parser.add_argument("--steps", type=int, default=None, help="training steps of every row (default: the command's)")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "results" / "describe_ablation",
                        help="folder for the held-out sets and the runs")
    parser.add_argument("--table", type=pathlib.Path, default=TABLE, help="the .csv/.json path without suffix")
    options = parser.parse_args(arguments)
    runs = options.out / "runs"
    rows = json.loads(options.table.with_suffix(".json").read_text()) if options.table.with_suffix(
        ".json").is_file() else {}
    baselines = rows.setdefault("baselines", {})
    for held_out, flag in SETS.items():
        if held_out not in baselines:
            data = options.out / held_out
            if not (data / "spec.json").is_file():
                deeprestore("describe", "synth", flag, "--out", str(data), runs=runs)
            run, _ = deeprestore("describe", "evaluate", "--data", str(data), "--split", "full", "--baseline", "raw16",
                                 "--baseline", "sift", runs=runs)
            results = json.loads((run / "results.json").read_text())
            baselines[held_out] = {"data": str(data), "tasks": str(run / "tasks"),
                                   **{name: by_level(results[name]) for name in ("raw16", "sift")}}
            write(options.table, rows)
    for name in options.only or ROWS:
        line = " ".join(([f"--steps {options.steps}"] if options.steps else []) + [ROWS[name]]).strip()
        key = f"{name} ({line})" if line else name
        if key in rows:
            continue
        run, cpu = deeprestore("describe", "train", *shlex.split(line), runs=runs)
        rows[key] = {"options": line, "cpu_s": round(cpu, 1), "run": str(run)}
        for held_out, scored in baselines.items():
            evaluated, _ = deeprestore("describe", "evaluate", "--data", scored["data"], "--split", "full", "--tasks",
                                       scored["tasks"], "--model", str(run), runs=runs)
            rows[key][held_out] = by_level(next(iter(json.loads((evaluated / "results.json").read_text()).values())))
        print(f"{key}: " + "; ".join(f"{held_out} " + ", ".join(
            f"{task} {rows[key][held_out][f'{task}_mean']:.4f}" for task in TASKS) for held_out in baselines),
            flush=True)
        write(options.table, rows)
    write(options.table, rows)


def write(table, rows):
    """The rows as JSON (everything) and CSV (one line per descriptor and held-out set)."""
    table.parent.mkdir(parents=True, exist_ok=True)
    table.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    columns = ["row", "set", "options", "cpu_s", *[f"{task}_{level}" for task in TASKS for level in (*LEVELS, "mean")]]
    with open(table.with_suffix(".csv"), "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        for held_out, scored in rows["baselines"].items():
            for name in ("raw16", "sift"):
                writer.writerow([name, held_out, f"--baseline {name}", "",
                                 *[f"{scored[name][column]:.4f}" for column in columns[4:]]])
        for name, values in rows.items():
            if name == "baselines":
                continue
            for held_out in rows["baselines"]:
                if held_out in values:
                    writer.writerow([name, held_out, values["options"], values["cpu_s"],
                                     *[f"{values[held_out][column]:.4f}" for column in columns[4:]]])


if __name__ == "__main__":
    main()
