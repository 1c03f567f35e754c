"""Measures what holds `describe train` back on photos it never saw (issue 21, item 1): an ablation table.

Usage: `PYTHONPATH=. python experiments/describe_ablation.py [--only default --only sequences4 ...]
[--steps 256] [--out FOLDER]`

The held-out set is `describe synth --heldout` (16 sequences from 8 scikit-image photos that the training
photos do not include), scored with `--split full` on one set of task files for every row. Each row is a
`describe train` command line (on the default synthetic training set of the bundled photos, seed 0),
then `describe evaluate --model RUN` on the held-out set; raw16 and SIFT (`--baseline`) are scored on
the same tasks. For each row and level (e, h, t): verification (mean of the intra and inter imbalanced
APs), matching mAP and retrieval mAP (mean over pool sizes), and the means over levels as the command
prints them; `cpu_s` is the training command's CPU time (user + system, every thread, start-up and its
per-epoch evaluation included).

Rows go to `docs/experiments/describe_ablation.csv` and `.json` as they are measured (a rerun measures
only what is missing; delete the JSON to start over, or give `--steps` another value: rows are keyed by
their command line).
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

# name: the options after `describe train --steps STEPS`, each row one change from the default unless
# its name joins several with `+`.
ROWS = {
    "default": "",
    "sequences4": "--batch-sequences 4",
    "sequences1": "--batch-sequences 1",
    "augment": "--augment",
    "patches256": "--patches 256",
    "no-dropout": "--dropout 0",
    "batch128": "--batch-size 128 --triplets 16384",
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
    parser.add_argument("--steps", type=int, default=256, help="training steps of every row (the default's 256)")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "results" / "describe_ablation",
                        help="folder for the held-out set and the runs")
    parser.add_argument("--table", type=pathlib.Path, default=TABLE, help="the .csv/.json path without suffix")
    options = parser.parse_args(arguments)
    runs = options.out / "runs"
    heldout = options.out / "heldout"
    if not (heldout / "v_moon").is_dir():
        deeprestore("describe", "synth", "--heldout", "--out", str(heldout), runs=runs)
    rows = json.loads(options.table.with_suffix(".json").read_text()) if options.table.with_suffix(
        ".json").is_file() else {}
    scored = ["--data", str(heldout), "--split", "full"]
    if "baselines" not in rows:
        run, _ = deeprestore("describe", "evaluate", *scored, "--baseline", "raw16", "--baseline", "sift", runs=runs)
        results = json.loads((run / "results.json").read_text())
        rows["baselines"] = {"tasks": str(run / "tasks"), **{name: {"options": f"--baseline {name}", **by_level(
            results[name])} for name in ("raw16", "sift")}}
    tasks = rows["baselines"]["tasks"]
    for name in options.only or ROWS:
        line = f"--steps {options.steps} {ROWS[name]}".strip()
        key = f"{name} ({line})"
        if key in rows:
            continue
        run, cpu = deeprestore("describe", "train", *shlex.split(line), runs=runs)
        evaluated, _ = deeprestore("describe", "evaluate", *scored, "--tasks", tasks, "--model", str(run), runs=runs)
        results = json.loads((evaluated / "results.json").read_text())
        rows[key] = {"options": line, "cpu_s": round(cpu, 1), "run": str(run),
                     **by_level(next(iter(results.values())))}
        print(f"{key}: " + ", ".join(f"{task} {rows[key][f'{task}_mean']:.4f}" for task in TASKS), flush=True)
        write(options.table, rows)
    write(options.table, rows)


def write(table, rows):
    """The rows as JSON (everything) and CSV (one line per descriptor)."""
    table.parent.mkdir(parents=True, exist_ok=True)
    table.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    flat = {**{name: values for name, values in rows["baselines"].items() if name != "tasks"},
            **{name: values for name, values in rows.items() if name != "baselines"}}
    columns = ["row", "options", "cpu_s", *[f"{task}_{level}" for task in TASKS for level in (*LEVELS, "mean")]]
    with open(table.with_suffix(".csv"), "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        for name, values in flat.items():
            writer.writerow([name, values["options"], values.get("cpu_s", ""),
                             *[f"{values[column]:.4f}" for column in columns[3:]]])


if __name__ == "__main__":
    main()
