"""Times `deeprestore describe evaluate` on descriptor CSVs end to end against the benchmark's loop.

Usage: `python benchmarks/bench_describe_evaluate.py [--sequences 20 --patches 400 --pairs 100000
--queries 2000 --distractors 20000 --seed 0]` (the benchmark's own tasks have 1,000,000 pairs, 5,000
queries and 20,000 distractors). Both read the same CSV files with a C parser, so the ratio grows with
the number of tasks per descriptor file: with few pairs and queries, reading dominates both.
Writes an HPatches-format dataset (random PNG stacks),
tie-heavy quantised 128-d descriptor CSVs and task files into a temporary folder, then runs, each as
a fresh process: `hpatches_reference.py` (the benchmark's steps: read the CSVs, evaluate with the same
scipy calls, write JSON) and the command. Prints both wall times, their ratio, and whether the two
summaries agree.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import imageio.v3 as imageio
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deeprestore.descriptors import export, hpatches, tasks  # noqa: E402


def write_data(folder, sequences, patches, dimension, pairs, queries, distractors, seed):
    """Dataset, splits.json, task files and descriptor CSVs; returns `(data, tasks, descriptors)` folders."""
    rng = np.random.default_rng(seed)
    data, descriptors = folder / "data", {}
    names = [f"{'iv'[number % 2]}_{number:03d}" for number in range(sequences)]
    for name in names:
        (data / name).mkdir(parents=True)
        stack = rng.integers(0, 256, (patches * 32, 32), dtype=np.uint8)
        for image in hpatches.IMAGES:
            imageio.imwrite(data / name / f"{image}.png", stack)
        base = rng.normal(size=(patches, dimension))
        descriptors[name] = {image: np.round((base if image == "ref" else base + 1.2 * rng.normal(size=base.shape))
                                             * 1.5) / 4 for image in hpatches.IMAGES}
    task_folder = folder / "tasks"
    (task_folder / "splits").mkdir(parents=True)
    (task_folder / "splits" / "splits.json").write_text(json.dumps({"bench": {"name": "bench", "test": names}}))
    split = hpatches.Split("bench", tuple(names), ())
    generated = tasks.generate_tasks(split, dict.fromkeys(names, patches), {n: np.full(patches, 50.0) for n in names},
                                     seed=seed, pairs=pairs, queries=queries, distractors=distractors)
    tasks.write_tasks(task_folder, generated)
    return data, task_folder, export.save_descriptors(folder / "descriptors" / "quantised", descriptors)


def timed(command):
    start = time.perf_counter()
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                               env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"})
    if completed.returncode:
        raise SystemExit(f"{command} failed:\n{completed.stderr[-2000:]}")
    return completed, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=20)
    parser.add_argument("--patches", type=int, default=400)
    parser.add_argument("--dimension", type=int, default=128)
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--distractors", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        folder = pathlib.Path(temporary)
        data, task_folder, descriptors = write_data(folder, arguments.sequences, arguments.patches,
                                                    arguments.dimension, arguments.pairs, arguments.queries,
                                                    arguments.distractors, arguments.seed)
        print(f"{arguments.sequences} sequences x {arguments.patches} patches x {arguments.dimension} dims "
              "(quantised); "
              f"{arguments.pairs} pairs, {arguments.queries} queries, {arguments.distractors} distractors")
        common = ["--data", str(data), "--tasks", str(task_folder), "--split", "bench",
                  "--descriptors", str(descriptors)]
        _, reference_seconds = timed([sys.executable, str(ROOT / "benchmarks" / "hpatches_reference.py"), *common,
                                      "--out", str(folder / "reference.json")])
        completed, command_seconds = timed([sys.executable, "-m", "deeprestore", "--runs", str(folder / "runs"),
                                            "--quiet", "describe", "evaluate", *common])
        run = pathlib.Path(completed.stdout.strip().splitlines()[-1])
        ours = json.loads((run / "results.json").read_text())["quantised"]["summary"]
        theirs = json.loads((folder / "reference.json").read_text())["summary"]
        difference = max(abs(ours[task] - theirs[task]) for task in theirs)
        print(f"reference (benchmark loop)  {reference_seconds:7.2f} s")
        ratio = reference_seconds / command_seconds
        print(f"describe evaluate           {command_seconds:7.2f} s   ratio {ratio:5.1f}x")
        print(f"summary {ours}; largest difference from the reference {difference:.3g}"
              f" ({'equal' if difference <= 1e-12 else 'DIFFERENT'})")


if __name__ == "__main__":
    main()
