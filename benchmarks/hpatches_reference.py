"""A straightforward per-pair / per-query implementation of the HPatches protocol, for checking and timing.

It follows hpatches-benchmark's Python evaluation loop by loop (`utils/tasks.py`), with the same
scipy calls: one `scipy.spatial.distance.euclidean` per verification pair and level on float32 rows,
one `cdist` matrix per (sequence, image) for matching, one `cdist` matrix of queries against
distractors and one `cdist` per positive for retrieval, each ranking scored with the benchmark's `pr`
and `roc`. The package's vectorised evaluation must give the same numbers (tests) much faster
(`bench_hpatches.py`).
"""

import numpy as np
from scipy.spatial import distance

from deeprestore.descriptors.evaluation import POOL_SIZES, precision_recall, roc_auc, summarise
from deeprestore.descriptors.hpatches import LEVELS


def _image(level, image_id):
    return "ref" if image_id == 0 else f"{level}{image_id}"


def _float32(descriptors):
    """The descriptors as the benchmark reads them (`astype(np.float32)`)."""
    return {name: {image: np.asarray(values, np.float32) for image, values in images.items()}
            for name, images in descriptors.items()}


def _pair_distances(descriptors, pairs, level):
    result = np.empty(len(pairs))
    for row in range(len(pairs)):
        first = descriptors[pairs.sequences1[row]][_image(level, pairs.images1[row])][pairs.indices1[row]]
        second = descriptors[pairs.sequences2[row]][_image(level, pairs.images2[row])][pairs.indices2[row]]
        result[row] = distance.euclidean(first, second)
    return result


def verification(descriptors, tasks):
    descriptors = _float32(descriptors)
    results = {}
    for level in LEVELS:
        positive = _pair_distances(descriptors, tasks.positives, level)
        results[level] = {}
        for kind in ("intra", "inter"):
            negative = _pair_distances(descriptors, getattr(tasks, kind), level)
            labels = np.concatenate([np.zeros_like(positive), np.ones_like(positive)])
            stacked = np.concatenate([negative, positive])
            count = positive.shape[0] + int(positive.shape[0] * 0.2)
            results[level][kind] = {"balanced": roc_auc(-stacked, labels),
                                    "imbalanced": precision_recall(-stacked[:count], labels[:count])[2]}
    return results


def matching(descriptors, sequences, success=False):
    """`{level: {sequence: [ap for k = 1..5]}}`, with success rates `{level: {sequence: [...]}}` beside
    it when `success`."""
    descriptors = _float32(descriptors)
    results, rates = {level: {} for level in LEVELS}, {level: {} for level in LEVELS}
    for sequence in sequences:
        reference = descriptors[sequence]["ref"]
        truth = np.arange(len(reference))
        for level in LEVELS:
            scores, sequence_rates = [], []
            for k in range(1, 6):
                matrix = distance.cdist(reference, descriptors[sequence][f"{level}{k}"], "euclidean")
                nearest = np.argmin(matrix, axis=1)
                correct = nearest == truth
                sequence_rates.append(np.count_nonzero(correct) / float(max(len(correct), 1)))
                scores.append(precision_recall(-matrix[truth, nearest], correct, numpos=len(reference))[2])
            results[level][sequence] = scores
            rates[level][sequence] = sequence_rates
    return (results, rates) if success else results


def retrieval(descriptors, tasks, pool_sizes=POOL_SIZES):
    descriptors = _float32(descriptors)
    queries, distractors = tasks.queries, tasks.distractors
    query_descriptors = np.array([descriptors[s]["ref"][i] for s, i in zip(queries.sequences, queries.indices)])
    distractor_descriptors = np.array([descriptors[s]["ref"][i]
                                       for s, i in zip(distractors.sequences, distractors.indices)])
    matrix = distance.cdist(query_descriptors, distractor_descriptors, "euclidean")
    results = {level: {size: [] for size in pool_sizes} for level in LEVELS}
    for query in range(len(queries)):
        sequence, index = queries.sequences[query], queries.indices[query]
        kept = np.asarray(distractors.sequences) != sequence
        distractor_distances = matrix[query][kept]
        for level in LEVELS:
            positive = np.array([distance.cdist(query_descriptors[query][None],
                                                descriptors[sequence][f"{level}{k}"][index][None])[0, 0]
                                 for k in range(1, 6)])
            pool = np.concatenate([positive, distractor_distances])
            labels = np.concatenate([np.ones(5), np.zeros(len(distractor_distances))])
            for size in pool_sizes:
                results[level][size].append(precision_recall(-pool[:size], labels[:size])[2])
    return {level: {size: np.array(values) for size, values in by_pool.items()} for level, by_pool in results.items()}


def evaluate(descriptors, tasks, sequences, pool_sizes=POOL_SIZES):
    aps, rates = matching(descriptors, sequences, success=True)
    counts = {"sequences": len(sequences), "patches": sum(len(descriptors[name]["ref"]) for name in sequences),
              "dimension": len(descriptors[sequences[0]]["ref"][0]),
              "verification_pairs": {kind: len(getattr(tasks, kind)) for kind in ("positives", "intra", "inter")},
              "queries": len(tasks.queries), "distractors": len(tasks.distractors)}
    return summarise(verification(descriptors, tasks), aps, retrieval(descriptors, tasks, pool_sizes), tasks.split,
                     rates, counts)


def load_descriptors(folder, sequences, delimiter=","):
    """The benchmark's `load_descrs`: one parse per file (`pd.read_csv(header=None, sep=...)`, here
    numpy's C parser as pandas is not a dependency), as float32."""
    import pathlib

    from deeprestore.descriptors.hpatches import IMAGES

    return {sequence: {image: np.loadtxt(pathlib.Path(folder) / sequence / f"{image}.csv", delimiter=delimiter,
                                         ndmin=2).astype(np.float32) for image in IMAGES}
            for sequence in sequences}


def main():
    """End to end as the benchmark runs it: read the split, task files and descriptor CSVs, evaluate,
    write the results as JSON."""
    import argparse
    import json
    import pathlib

    from deeprestore.descriptors import hpatches, tasks

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--data", required=True)
    parser.add_argument("--tasks", required=True)
    parser.add_argument("--split", required=True)
    parser.add_argument("--descriptors", required=True)
    parser.add_argument("--out", required=True)
    arguments = parser.parse_args()
    split = hpatches.dataset_splits(arguments.data, arguments.tasks)[arguments.split]
    descriptors = load_descriptors(arguments.descriptors, split.test)
    counts = {name: len(descriptors[name]["ref"]) for name in split.test}
    task_lists = tasks.read_tasks(pathlib.Path(arguments.tasks), split.name, counts)
    results = evaluate(descriptors, task_lists, list(split.test))
    pathlib.Path(arguments.out).write_text(json.dumps(results))


if __name__ == "__main__":
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    main()
