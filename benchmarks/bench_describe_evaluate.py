"""Times `deeprestore describe evaluate` on descriptor CSVs end to end against the benchmark's steps.

Usage: `python benchmarks/bench_describe_evaluate.py [--sequences 20 --patches 400 --pairs 100000
--queries 2000 --distractors 20000 --rounds 3 --seed 0 --folder DIR --floats]` (the benchmark's own tasks have
1,000,000 pairs, 5,000 queries and 20,000 distractors: `--sequences 40 --patches 700 --pairs 1000000
--queries 5000 --rounds 1`). Writes an HPatches-format dataset (random PNG stacks), tie-heavy
quantised 128-d descriptor CSVs (`--floats`: continuous float32 ones written with 9 significant
digits, as learned descriptors are exported) and task files into a temporary folder (or `--folder`, kept and
reused when it already holds them), then runs, each as a fresh process, in rounds that alternate
which goes first: `hpatches_reference.py` (the benchmark's steps: read the CSVs, evaluate with the
same scipy calls, write JSON) and the command. Prints each run's wall time, CPU time and peak
resident memory, the median ratio over the rounds, and whether the two summaries agree.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import imageio.v3 as imageio
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deeprestore.descriptors import export, hpatches, tasks  # noqa: E402


def write_data(folder, sequences, patches, dimension, pairs, queries, distractors, seed, kind="quantised"):
    """Dataset, splits.json, task files and descriptor CSVs; returns `(data, tasks, descriptors)` folders.

    `kind` "quantised": values on a grid of quarters (few distinct short numbers, many ties); "floats":
    float32 values of a continuous distribution, each written with 9 significant digits (as
    `describe evaluate --export` and most tools write learned descriptors)."""
    rng = np.random.default_rng(seed)
    data, descriptors = folder / "data", {}
    names = [f"{'iv'[number % 2]}_{number:03d}" for number in range(sequences)]
    for name in names:
        (data / name).mkdir(parents=True, exist_ok=True)  # a --folder of the other kind: the same data
        stack = rng.integers(0, 256, (patches * 32, 32), dtype=np.uint8)
        for image in hpatches.IMAGES:
            imageio.imwrite(data / name / f"{image}.png", stack)
        base = rng.normal(size=(patches, dimension))
        values = {image: (base if image == "ref" else base + 1.2 * rng.normal(size=base.shape)) * 1.5
                  for image in hpatches.IMAGES}
        descriptors[name] = {image: np.round(value) / 4 if kind == "quantised" else value.astype(np.float32) / 4
                             for image, value in values.items()}
    task_folder = folder / "tasks"
    (task_folder / "splits").mkdir(parents=True, exist_ok=True)
    (task_folder / "splits" / "splits.json").write_text(json.dumps({"bench": {"name": "bench", "test": names}}))
    split = hpatches.Split("bench", tuple(names), ())
    generated = tasks.generate_tasks(split, dict.fromkeys(names, patches), {n: np.full(patches, 50.0) for n in names},
                                     seed=seed, pairs=pairs, queries=queries, distractors=distractors)
    tasks.write_tasks(task_folder, generated)
    return data, task_folder, export.save_descriptors(folder / "descriptors" / kind, descriptors)


def timed(command):
    """`(stdout, wall seconds, CPU seconds, peak resident MiB)` of a command run as a fresh process."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=err,
                                   env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"})
        _, status, usage = os.wait4(process.pid, 0)  # this child's own resource use
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode:
            raise SystemExit(f"{command} failed:\n{err.read().decode()[-2000:]}")
        return out.read().decode(), seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=20)
    parser.add_argument("--patches", type=int, default=400)
    parser.add_argument("--dimension", type=int, default=128)
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--distractors", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each, alternating which goes first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folder", help="write the data here (kept; reused when it already holds them)")
    parser.add_argument("--floats", action="store_true",
                        help="descriptors of continuous float32 values (9 significant digits), not quantised ones")
    arguments = parser.parse_args()
    kind = "floats" if arguments.floats else "quantised"
    with tempfile.TemporaryDirectory() as temporary:
        folder = pathlib.Path(arguments.folder or temporary)
        if (folder / "descriptors" / kind).is_dir():
            data, task_folder, descriptors = folder / "data", folder / "tasks", folder / "descriptors" / kind
        else:
            folder.mkdir(parents=True, exist_ok=True)
            data, task_folder, descriptors = write_data(folder, arguments.sequences, arguments.patches,
                                                        arguments.dimension, arguments.pairs, arguments.queries,
                                                        arguments.distractors, arguments.seed, kind)
        lines = {path.name.split("_split")[0]: path.read_bytes().count(b"\n") - 1
                 for path in task_folder.glob("*_split-bench.csv")}
        sequences = sorted(path.name for path in descriptors.iterdir())
        print(f"{len(sequences)} sequences, {kind} {arguments.dimension}-d descriptors; {lines.get('verif_pos')} "
              f"pairs, {lines.get('retr_queries')} queries, {lines.get('retr_distractors')} distractors", flush=True)
        common = ["--data", str(data), "--tasks", str(task_folder), "--split", "bench",
                  "--descriptors", str(descriptors)]
        runs = {"reference": [sys.executable, str(ROOT / "benchmarks" / "hpatches_reference.py"), *common,
                              "--out", str(folder / "reference.json")],
                "command": [sys.executable, "-m", "deeprestore", "--runs", str(folder / "runs"), "--quiet",
                            "describe", "evaluate", *common]}
        measured = {name: [] for name in runs}
        for round_number in range(arguments.rounds):
            order = list(runs) if round_number % 2 == 0 else list(runs)[::-1]
            for name in order:
                stdout, seconds, cpu, memory = timed(runs[name])
                measured[name].append((seconds, cpu, memory))
                if name == "command":
                    run = pathlib.Path(stdout.strip().splitlines()[-1])
                print(f"round {round_number + 1} {name:<9} {seconds:8.2f} s wall {cpu:8.2f} s CPU "
                      f"{memory:7.0f} MiB peak", flush=True)
            ratio = measured["reference"][-1][0] / measured["command"][-1][0]
            print(f"round {round_number + 1} ratio {ratio:5.2f}x wall, "
                  f"{measured['reference'][-1][1] / measured['command'][-1][1]:5.2f}x CPU", flush=True)
        ours = json.loads((run / "results.json").read_text())[kind]["summary"]
        theirs = json.loads((folder / "reference.json").read_text())["summary"]
        difference = max(abs(ours[task] - theirs[task]) for task in theirs)
        ratios = [reference[0] / command[0] for reference, command in zip(measured["reference"], measured["command"])]
        cpu_ratios = [reference[1] / command[1] for reference, command in zip(measured["reference"],
                                                                               measured["command"])]
        wall = {name: statistics.median(entry[0] for entry in entries) for name, entries in measured.items()}
        peak = {name: max(entry[2] for entry in entries) for name, entries in measured.items()}
        print(f"median over {arguments.rounds} round(s): reference {wall['reference']:.2f} s, command "
              f"{wall['command']:.2f} s; ratio {statistics.median(ratios):.2f}x wall ({min(ratios):.2f}-"
              f"{max(ratios):.2f}), {statistics.median(cpu_ratios):.2f}x CPU; peak memory reference "
              f"{peak['reference']:.0f} MiB, command {peak['command']:.0f} MiB")
        print(f"summary {ours}; largest difference from the reference {difference:.3g}"
              f" ({'equal' if difference <= 1e-12 else 'DIFFERENT'})")


if __name__ == "__main__":
    main()
