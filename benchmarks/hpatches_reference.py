"""A straightforward per-pair / per-query implementation of the HPatches protocol, for checking and timing.

It follows hpatches-benchmark's Python evaluation loop by loop (`utils/tasks.py`): one distance per
verification pair, one nearest-neighbour search per reference patch (a distance vector to all
candidates), and per query one distance vector to the distractors and one ranking per level and pool
size scored with the benchmark's `pr`. Distances are the same definition as
`deeprestore.descriptors.evaluation.distances`: float64 `sqrt(sum((a - b)^2))` of float32 descriptors.
The package's vectorised evaluation must give the same numbers (tests) much faster (`bench_hpatches.py`).
"""

import numpy as np

from deeprestore.descriptors.evaluation import POOL_SIZES, precision_recall, roc_auc, summarise
from deeprestore.descriptors.hpatches import LEVELS


def _distance(first, second):
    difference = np.asarray(first, np.float64) - np.asarray(second, np.float64)
    return np.sqrt(np.sum(difference * difference))


def _image(level, image_id):
    return "ref" if image_id == 0 else f"{level}{image_id}"


def _pair_distances(descriptors, pairs, level):
    result = np.empty(len(pairs))
    for row in range(len(pairs)):
        first = descriptors[pairs.sequences1[row]][_image(level, pairs.images1[row])][pairs.indices1[row]]
        second = descriptors[pairs.sequences2[row]][_image(level, pairs.images2[row])][pairs.indices2[row]]
        result[row] = _distance(first, second)
    return result


def verification(descriptors, tasks):
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


def matching(descriptors, sequences):
    results = {level: {} for level in LEVELS}
    for sequence in sequences:
        reference = descriptors[sequence]["ref"]
        for level in LEVELS:
            scores = []
            for k in range(1, 6):
                image = descriptors[sequence][f"{level}{k}"]
                nearest = np.empty(len(reference), np.int64)
                nearest_distance = np.empty(len(reference))
                for row in range(len(reference)):
                    difference = np.asarray(image, np.float64) - np.asarray(reference[row], np.float64)
                    row_distances = np.sqrt(np.sum(difference * difference, axis=1))
                    nearest[row] = np.argmin(row_distances)  # the first minimum on ties
                    nearest_distance[row] = row_distances[nearest[row]]
                correct = nearest == np.arange(len(reference))
                scores.append(precision_recall(-nearest_distance, correct, numpos=len(reference))[2])
            results[level][sequence] = scores
    return results


def retrieval(descriptors, tasks, pool_sizes=POOL_SIZES):
    queries, distractors = tasks.queries, tasks.distractors
    distractor_descriptors = np.array([descriptors[s]["ref"][i]
                                       for s, i in zip(distractors.sequences, distractors.indices)])
    results = {level: {size: [] for size in pool_sizes} for level in LEVELS}
    for query in range(len(queries)):
        sequence, index = queries.sequences[query], queries.indices[query]
        query_descriptor = descriptors[sequence]["ref"][index]
        kept = [row for row in range(len(distractors)) if distractors.sequences[row] != sequence]
        difference = distractor_descriptors[kept].astype(np.float64) - np.asarray(query_descriptor, np.float64)
        distractor_distances = np.sqrt(np.sum(difference * difference, axis=1))
        for level in LEVELS:
            positive = np.array([_distance(query_descriptor, descriptors[sequence][f"{level}{k}"][index])
                                 for k in range(1, 6)])
            pool = np.concatenate([positive, distractor_distances])
            labels = np.concatenate([np.ones(5), np.zeros(len(distractor_distances))])
            for size in pool_sizes:
                results[level][size].append(precision_recall(-pool[:size], labels[:size])[2])
    return {level: {size: np.array(values) for size, values in by_pool.items()} for level, by_pool in results.items()}


def evaluate(descriptors, tasks, sequences, pool_sizes=POOL_SIZES):
    return summarise(verification(descriptors, tasks), matching(descriptors, sequences),
                     retrieval(descriptors, tasks, pool_sizes), tasks.split)
