"""Times the vectorised HPatches evaluation against the per-pair / per-query reference, on the same data.

Usage: `python benchmarks/bench_hpatches.py [--sequences 40 --patches 500 --pairs 20000 --queries 1000
--distractors 20000 --seed 0]`. The data are synthetic descriptors of HPatches-shaped sequences (a
patch's 15 views are its `ref` descriptor plus noise growing from e to t, with duplicated rows so that
ties occur); the tasks are generated with the benchmark's rules. Prints both timings per task, the
speed ratio, and whether every table entry agrees (to 1e-12).
"""

import argparse
import json
import pathlib
import sys
import time

import numpy as np

# This checkout's package (not an installed one) and the reference beside this script.
sys.path[:0] = [str(pathlib.Path(__file__).resolve().parents[1]), str(pathlib.Path(__file__).resolve().parent)]

import hpatches_reference as reference  # noqa: E402 (from the path set above)

from deeprestore.descriptors import evaluation, hpatches, tasks  # noqa: E402 (this checkout's)

NOISE = {"e": 0.3, "h": 0.6, "t": 1.0}  # descriptor noise of each level, in units of the ref spread


def synthetic_descriptors(sequences, patches, dimension, seed):
    """`{sequence: {image: float32 (patches, dimension)}}` with level-dependent noise and tied rows."""
    rng = np.random.default_rng(seed)
    descriptors = {}
    for index in range(sequences):
        base = rng.normal(size=(patches, dimension))
        images = {}
        for image in hpatches.IMAGES:
            values = base if image == "ref" else base + NOISE[image[0]] * rng.normal(size=base.shape)
            values = values.astype(np.float32)
            values[1:3] = values[0]  # identical descriptors: exact ties
            images[image] = values
        descriptors[f"{'iv'[index % 2]}_{index:03d}"] = images
    return descriptors


def timed(function, *arguments):
    start = time.perf_counter()
    result = function(*arguments)
    return result, time.perf_counter() - start


def largest_difference(first, second):
    if isinstance(first, dict):
        return max((largest_difference(first[key], second[key]) for key in first), default=0.0)
    if isinstance(first, list):
        return max((largest_difference(a, b) for a, b in zip(first, second)), default=0.0)
    if isinstance(first, float):
        return abs(first - second)
    return 0.0 if first == second else float("inf")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=40, help="test sequences (split a has 40)")
    parser.add_argument("--patches", type=int, default=500, help="patches per sequence")
    parser.add_argument("--dimension", type=int, default=128)
    parser.add_argument("--pairs", type=int, default=20_000, help="verification pairs")
    parser.add_argument("--queries", type=int, default=1_000, help="retrieval queries")
    parser.add_argument("--distractors", type=int, default=20_000, help="retrieval distractors")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the timings to this JSON file")
    arguments = parser.parse_args()

    descriptors = synthetic_descriptors(arguments.sequences, arguments.patches, arguments.dimension, arguments.seed)
    split = hpatches.Split("bench", tuple(descriptors), ())
    counts = dict.fromkeys(descriptors, arguments.patches)
    patch_std = {name: np.full(arguments.patches, 50.0) for name in descriptors}
    task_lists = tasks.generate_tasks(split, counts, patch_std, seed=arguments.seed, pairs=arguments.pairs,
                                      queries=arguments.queries, distractors=arguments.distractors)
    print(f"{arguments.sequences} sequences x {arguments.patches} patches x {arguments.dimension} dims; "
          f"{len(task_lists.positives)} verification pairs; {len(task_lists.queries)} queries, "
          f"{len(task_lists.distractors)} distractors")

    runs = {
        "verification": (lambda: evaluation.evaluate_verification(descriptors, task_lists),
                         lambda: reference.verification(descriptors, task_lists)),
        "matching": (lambda: evaluation.evaluate_matching(descriptors, split.test),
                     lambda: reference.matching(descriptors, split.test)),
        "retrieval": (lambda: evaluation.evaluate_retrieval(descriptors, task_lists),
                      lambda: reference.retrieval(descriptors, task_lists)),
    }
    timings, outputs = {}, {}
    for task, (fast, slow) in runs.items():
        fast_result, fast_seconds = timed(fast)
        slow_result, slow_seconds = timed(slow)
        timings[task] = {"vectorised_s": fast_seconds, "reference_s": slow_seconds,
                         "ratio": slow_seconds / fast_seconds}
        outputs[task] = (fast_result, slow_result)
        print(f"{task:<13} vectorised {fast_seconds:8.2f} s   reference {slow_seconds:8.2f} s   "
              f"ratio {slow_seconds / fast_seconds:7.1f}x", flush=True)
    fast_total = sum(entry["vectorised_s"] for entry in timings.values())
    slow_total = sum(entry["reference_s"] for entry in timings.values())
    fast_results = evaluation.summarise(*(outputs[task][0] for task in runs), split.name)
    slow_results = evaluation.summarise(*(outputs[task][1] for task in runs), split.name)
    difference = largest_difference(json.loads(json.dumps(fast_results)), json.loads(json.dumps(slow_results)))
    print(f"{'total':<13} vectorised {fast_total:8.2f} s   reference {slow_total:8.2f} s   "
          f"ratio {slow_total / fast_total:7.1f}x")
    print(f"largest difference between the two over every table entry: {difference:.3g}"
          f" ({'equal' if difference <= 1e-12 else 'DIFFERENT'})")
    print("summary:", {task: round(value, 6) for task, value in fast_results["summary"].items()})
    if arguments.json:
        pathlib.Path(arguments.json).write_text(json.dumps({"timings": timings, "difference": difference}, indent=2))


if __name__ == "__main__":
    main()
