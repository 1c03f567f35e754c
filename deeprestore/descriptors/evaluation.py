"""The HPatches benchmark protocol (verification, matching, retrieval), exactly, and vectorised.

Descriptors are `{sequence: {image: float32 array (patches, dimension)}}` for the 16 images of each
test sequence. The definitions are hpatches-benchmark's Python ones (`utils/metrics.py`,
`utils/tasks.py`, `utils/results.py`): scores are negative Euclidean distances, computed in float64
from the float32 descriptors as `sqrt(sum((a - b)^2))`; rankings use a stable sort (ties keep input
order); AP is the trapezoidal area under precision over recall with a (recall 0, precision 1) point
first. Large distance matrices come from one matrix product (`|a|^2 + |b|^2 - 2ab`), which can differ
from the definition in the last bits; every comparison whose outcome such a difference could change
is recomputed with the definition, so results equal a per-pair implementation's to the last tie.

Reference:
    Balntas, Lenc, Vedaldi & Mikolajczyk, 2017. HPatches: a benchmark and evaluation of handcrafted and
    learned local descriptors. The hpatches-benchmark repository for the exact protocol.
"""


import concurrent.futures
import os

import numpy as np

from deeprestore.descriptors.hpatches import LEVELS
from deeprestore.errors import DeepRestoreError

POOL_SIZES = (100, 500, 1000, 5000, 10000, 15000, 20000)
RETRIEVAL_POSITIVES = 5
# Distances from the matrix product are trusted only where they differ from a threshold by more than
# this fraction of the squared norms involved: float64 products of 128 float32 values err by ~1e-14.
_RELATIVE_TOLERANCE = 1e-9
_SMALL = 1e-10  # the benchmark's guard against division by zero, which also sets precision at rank 0


def _ranking(scores, labels, numpos=None, order=None):
    """The benchmark's `tpfp`: cumulative true and false positives down the stable ranking.

    `order` may pass `np.argsort(-scores, kind="stable")` already computed (only without `numpos`).
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    positives = int(np.sum(labels))
    negatives = len(labels) - positives
    if numpos is not None:
        if numpos < positives:
            raise ValueError(f"numpos={numpos} is smaller than the {positives} positives in labels")
        extra = numpos - positives
        positives = numpos
        # Positives never retrieved get score -inf: they count in recall but are never reached.
        scores = np.concatenate([scores, np.full(extra, -np.inf)])
        labels = np.concatenate([labels, np.ones(extra, labels.dtype)])
    if order is None:
        order = np.argsort(-scores, kind="stable")
    finite = np.flatnonzero(scores[order] > -np.inf)
    order = order[:finite.max() + 1] if finite.size else order[:0]
    labels = labels[order]
    true_positives = np.concatenate([[0], np.cumsum(labels == 1)])
    false_positives = np.concatenate([[0], np.cumsum(labels == 0)])
    return true_positives, false_positives, positives, negatives


def _trapezoid(y, x):
    return float((np.diff(x) * (y[1:] + y[:-1]) / 2.0).sum())


def precision_recall(scores, labels, numpos=None, order=None):
    """Precision, recall and average precision of a ranking by descending score (the benchmark's `pr`).

    Args:
        scores: higher is more likely positive (negative distances).
        labels: 1 for a positive, 0 for a negative.
        numpos: the number of positives in all, when some were never retrieved.
        order: the stable ranking `np.argsort(-scores, kind="stable")`, when already computed.

    Returns:
        `(precision, recall, ap)`: two arrays starting at the (recall 0, precision 1) point, and the
        trapezoidal area under precision over recall.
    """
    true_positives, false_positives, positives, _ = _ranking(scores, labels, numpos, order)
    recall = true_positives / float(max(positives, _SMALL))
    precision = np.maximum(true_positives, _SMALL) / np.maximum(true_positives + false_positives, _SMALL)
    return precision, recall, _trapezoid(precision, recall)


def average_precision(scores, labels, numpos=None, order=None):
    """The benchmark's AP: `pr(...)[2]`. For example `average_precision([.9, .8, .7, .6], [1, 0, 1, 0])` is 0.791667."""
    return precision_recall(scores, labels, numpos, order)[2]


def roc_auc(scores, labels, numpos=None, order=None):
    """Area under the ROC curve of a ranking by descending score (the benchmark's `roc`); `order` as
    for `precision_recall`."""
    true_positives, false_positives, positives, negatives = _ranking(scores, labels, numpos, order)
    true_rate = true_positives / float(max(positives, _SMALL))
    false_rate = false_positives / float(max(negatives, _SMALL))
    return _trapezoid(true_rate, false_rate)


def distances(first, second):
    """Row-wise Euclidean distances in float64, by the definition: `sqrt(sum((a - b)^2, axis=-1))`."""
    difference = np.asarray(first, np.float64) - np.asarray(second, np.float64)
    return np.sqrt(np.sum(difference * difference, axis=-1))


def _squared_distance_matrix(first, second):
    """`(n, m)` squared distances from one matrix product, with the squared norms used for tolerances."""
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    first_norms = np.einsum("ij,ij->i", first, first)
    second_norms = np.einsum("ij,ij->i", second, second)
    squared = first_norms[:, None] + second_norms[None, :] - 2.0 * (first @ second.T)
    return squared, first_norms, second_norms


def nearest_neighbours(first, second, squared_matrix=None):
    """For each row of `first`, the index of the nearest row of `second` (the first one on ties) and
    the distance to it, both by the definition (`distances`).

    `squared_matrix` may pass `_squared_distance_matrix(first, second)` already computed.
    """
    squared, first_norms, second_norms = squared_matrix or _squared_distance_matrix(first, second)
    minimum = squared.min(axis=1)
    tolerance = _RELATIVE_TOLERANCE * (first_norms + second_norms.max()) + 1e-300
    candidates = squared <= (minimum + tolerance)[:, None]
    nearest = np.argmax(candidates, axis=1)  # the first candidate
    for row in np.flatnonzero(candidates.sum(axis=1) > 1):  # near-ties: decide them by the definition
        columns = np.flatnonzero(candidates[row])
        exact = distances(first[row][None], second[columns])
        nearest[row] = columns[np.argmin(exact)]
    return nearest, distances(first, second[nearest])


class _Table:
    """The descriptors of some sequences stacked once into one array, addressed by (sequence, image, row).

    Stacking costs one copy of the descriptors, after which any number of rows is a single `take`
    instead of one gather per (sequence, image) group.
    """

    def __init__(self, descriptors, sequences):
        from deeprestore.descriptors.hpatches import IMAGES

        names = list(dict.fromkeys(sequences))  # distinct, in first-seen order
        self.codes = {name: code for code, name in enumerate(names)}
        self.image_numbers = {image: number for number, image in enumerate(IMAGES)}
        blocks = [np.asarray(descriptors[name][image]) for name in names for image in IMAGES]
        # Keep the descriptors' own dtype: rows are converted to float64 only when differenced.
        self.stack = np.concatenate(blocks) if blocks else np.empty((0, 0), np.float32)
        sizes = np.array([len(block) for block in blocks], np.int64)
        self.offsets = (np.cumsum(sizes) - sizes).reshape(len(names), len(IMAGES))  # first row of each block

    def distances(self, first, second, block=1024):
        """`distances` between the stack rows at positions `first` and `second`.

        Blocks of rows keep the float64 differences in cache; they run on a few threads, since the
        random-access gathers dominate and numpy releases the GIL in them. Each row is still summed on
        its own, in `distances`'s order, so the results are the same bits.
        """
        result = np.empty(len(first))

        def fill(start):
            part = slice(start, start + block)
            difference = np.subtract(self.stack[first[part]], self.stack[second[part]], dtype=np.float64)
            np.multiply(difference, difference, out=difference)
            result[part] = np.sqrt(difference.sum(axis=-1))

        with concurrent.futures.ThreadPoolExecutor(min(os.cpu_count() or 1, 8)) as pool:
            list(pool.map(fill, range(0, len(first), block)))
        return result


def _rows(descriptors, sequences, image, indices):
    """float64 descriptors of one image at the given (sequence, row) pairs, one gather per sequence
    (retrieval's few thousand rows are not worth stacking every descriptor for)."""
    names, inverse = np.unique(np.asarray(sequences, dtype=str), return_inverse=True)
    indices = np.asarray(indices, np.int64)
    dimension = np.shape(next(iter(next(iter(descriptors.values())).values())))[1]
    result = np.empty((len(indices), dimension), np.float64)
    for number, name in enumerate(names):
        rows = np.flatnonzero(inverse == number)
        result[rows] = np.asarray(descriptors[name][image])[indices[rows]]
    return result


def _pair_sequences(tasks):
    return [sequences for kind in ("positives", "intra", "inter")
            for sequences in (getattr(tasks, kind).sequences1, getattr(tasks, kind).sequences2)]


def _pair_positions(table, pairs):
    """Stack positions of both ends of every pair at each level: `{level: (first, second)}`."""
    codes = [np.fromiter(map(table.codes.__getitem__, sequences), np.int64, len(sequences))
             for sequences in (pairs.sequences1, pairs.sequences2)]
    positions = {}
    for level in LEVELS:
        # Image ids 0..5 are `ref` and images 1..5 of the level.
        numbers = np.array([table.image_numbers[image] for image in ["ref"] + [f"{level}{k}" for k in range(1, 6)]])
        positions[level] = tuple(table.offsets[code, numbers[np.asarray(images)]] + np.asarray(indices, np.int64)
                                 for code, images, indices in zip(codes, (pairs.images1, pairs.images2),
                                                                  (pairs.indices1, pairs.indices2)))
    return positions


def evaluate_verification(descriptors, tasks):
    """Verification at each level: `{level: {"intra"|"inter": {"balanced": auc, "imbalanced": ap}}}`.

    Negatives are stacked before positives; balanced is the ROC AUC on all of them, imbalanced the AP
    on the first `positives + int(0.2 * positives)` (all negatives and a fifth as many positives when
    there are as many negatives as positives).
    """
    table = _Table(descriptors, (name for sequences in _pair_sequences(tasks) for name in set(sequences)))
    positions = {kind: _pair_positions(table, getattr(tasks, kind)) for kind in ("positives", "intra", "inter")}
    results = {}
    for level in LEVELS:
        positive = table.distances(*positions["positives"][level])
        labels = np.concatenate([np.zeros(len(positive)), np.ones(len(positive))])
        imbalanced = len(positive) + int(len(positive) * 0.2)
        results[level] = {}
        for kind in ("intra", "inter"):
            stacked = np.concatenate([table.distances(*positions[kind][level]), positive])
            # One stable ranking serves both: a stable sort of a prefix is the full one restricted to it.
            order = np.argsort(stacked, kind="stable")  # the same as sorting the scores -stacked descending
            results[level][kind] = {"balanced": roc_auc(-stacked, labels, order=order),
                                    "imbalanced": average_precision(-stacked[:imbalanced], labels[:imbalanced],
                                                                    order=order[order < imbalanced])}
    return results


def evaluate_matching(descriptors, sequences):
    """Matching: `{level: {sequence: [ap for k = 1..5]}}`, nearest neighbour from `ref` to image k."""
    results = {level: {} for level in LEVELS}
    for sequence in sequences:
        reference = np.asarray(descriptors[sequence]["ref"], np.float64)
        truth = np.arange(len(reference))
        images = [f"{level}{k}" for level in LEVELS for k in range(1, 6)]
        # One matrix product against all 15 images of the sequence, split afterwards.
        others = np.concatenate([np.asarray(descriptors[sequence][image], np.float64) for image in images])
        squared, reference_norms, other_norms = _squared_distance_matrix(reference, others)
        for number, image in enumerate(images):
            columns = slice(number * len(truth), (number + 1) * len(truth))
            nearest, nearest_distances = nearest_neighbours(reference, others[columns],
                                                            (squared[:, columns], reference_norms, other_norms[columns]))
            results[image[0]].setdefault(sequence, []).append(
                average_precision(-nearest_distances, nearest == truth, numpos=len(truth)))
    return results


def _rank_average_precision(ranks, positives):
    """AP (as `precision_recall` computes it) of rankings given the 1-based ranks of their positives.

    `ranks` is `(..., positives)`, sorted along the last axis; only the steps where recall grows add area.
    """
    found = np.arange(1, positives + 1, dtype=np.float64)
    before = np.where(ranks > 1, np.maximum(found - 1, _SMALL) / np.maximum(ranks - 1, _SMALL), 1.0)
    width = found / positives - (found - 1) / positives
    return np.sum(width * (before + found / ranks) / 2.0, axis=-1)


def evaluate_retrieval(descriptors, tasks, pool_sizes=POOL_SIZES, chunk=32):
    """Retrieval: `{level: {pool size: [ap per query]}}`.

    For each query (a `ref` patch), the pool is its 5 positives (the same row in images 1..5 of the
    level) followed by the distractors in file order without those from the query's own sequence,
    truncated to the pool size; AP with the 5 positives.
    """
    queries = _rows(descriptors, tasks.queries.sequences, "ref", tasks.queries.indices)
    distractors = _rows(descriptors, tasks.distractors.sequences, "ref", tasks.distractors.indices)
    distractor_sequences = np.asarray(tasks.distractors.sequences)
    positive_distances = np.stack([np.stack([
        distances(queries, _rows(descriptors, tasks.queries.sequences, f"{level}{k}", tasks.queries.indices))
        for k in range(1, 6)], axis=-1) for level in LEVELS], axis=1)  # (queries, levels, 5)
    positive_distances = np.sort(positive_distances, axis=-1)
    counts = np.zeros(positive_distances.shape[:2] + (RETRIEVAL_POSITIVES, len(pool_sizes)), np.int64)
    query_sequences = np.asarray(tasks.queries.sequences)
    for sequence in np.unique(query_sequences):
        # Queries of one sequence share their distractors: those of every other sequence, in file order.
        kept = distractors[distractor_sequences != sequence]
        cuts = np.array([min(max(size - RETRIEVAL_POSITIVES, 0), len(kept)) for size in pool_sizes])
        members = np.flatnonzero(query_sequences == sequence)
        for start in range(0, len(members), chunk):
            rows = members[start:start + chunk]
            counts[rows] = _closer_counts(queries[rows], kept, positive_distances[rows], cuts)
    ranks = np.arange(1, RETRIEVAL_POSITIVES + 1)[None, None, :, None] + counts  # (queries, levels, 5, pools)
    ap = _rank_average_precision(np.moveaxis(ranks, 2, -1).astype(np.float64), RETRIEVAL_POSITIVES)
    return {level: {int(size): ap[:, index, pool] for pool, size in enumerate(pool_sizes)}
            for index, level in enumerate(LEVELS)}


def _closer_counts(queries, kept, positive_distances, cuts):
    """For each query, level, positive and pool cut: how many of the first `cut` distractors are
    strictly closer than the positive (ties rank the positive first, as the stable sort does)."""
    squared, query_norms, kept_norms = _squared_distance_matrix(queries, kept)
    squared = squared[:, None, None, :]
    thresholds = positive_distances ** 2  # (queries, levels, 5)
    tolerance = _RELATIVE_TOLERANCE * (query_norms + kept_norms.max(initial=0.0) + thresholds.max(axis=(1, 2)))
    lower = (thresholds - tolerance[:, None, None] - 1e-300)[..., None]
    upper = (thresholds + tolerance[:, None, None] + 1e-300)[..., None]
    closer = squared < lower  # (queries, levels, 5, distractors)
    unsure = (squared >= lower) & (squared <= upper)
    if unsure.any():  # near-ties: decide them by the definition
        query, level, positive, column = np.nonzero(unsure)
        exact = distances(queries[query], kept[column])
        closer[query, level, positive, column] = exact < positive_distances[query, level, positive]
    # Counts within each prefix: sums over the segments between consecutive cuts, accumulated.
    bounds = np.concatenate([[0], cuts])
    segments = [closer[..., low:high].sum(axis=-1, dtype=np.int64) for low, high in zip(bounds[:-1], bounds[1:])]
    return np.cumsum(np.stack(segments, axis=-1), axis=-1)


def evaluate(descriptors, tasks, sequences, pool_sizes=POOL_SIZES):
    """Runs the three tasks and returns every table entry with the three summary numbers.

    Args:
        descriptors: `{sequence: {image: (patches, dimension)}}` for at least the test sequences.
        tasks: the split's `Tasks`.
        sequences: the split's test sequences (matching runs over these).
        pool_sizes: retrieval pool sizes.

    Returns:
        A JSON-ready dict, see `summarise`.

    Raises:
        DeepRestoreError: descriptors are missing for a test sequence or image, or disagree in size.
    """
    check_descriptors(descriptors, sequences)
    return summarise(evaluate_verification(descriptors, tasks), evaluate_matching(descriptors, sequences),
                     evaluate_retrieval(descriptors, tasks, pool_sizes), tasks.split)


def check_descriptors(descriptors, sequences):
    """Raises a `DeepRestoreError` unless every test sequence has 16 equally sized descriptor arrays."""
    from deeprestore.descriptors.hpatches import IMAGES

    dimensions = set()
    for sequence in sequences:
        if sequence not in descriptors:
            raise DeepRestoreError(f"No descriptors for test sequence '{sequence}'; expected a folder or entry "
                                   "for every test sequence of the split.")
        missing = [image for image in IMAGES if image not in descriptors[sequence]]
        if missing:
            raise DeepRestoreError(f"Descriptors of '{sequence}' lack image(s) {', '.join(missing)}; expected "
                                   f"all of {', '.join(IMAGES)}.")
        shapes = {np.shape(descriptors[sequence][image]) for image in IMAGES}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise DeepRestoreError(f"Descriptors of '{sequence}' have shapes {sorted(shapes)}; expected one "
                                   "(patches, dimension) shape for all 16 images.")
        dimensions.add(next(iter(shapes))[1])
    if len(dimensions) > 1:
        raise DeepRestoreError(f"Descriptors have different dimensions {sorted(dimensions)}; expected one.")


def summarise(verification, matching, retrieval, split):
    """The results dict: every table entry and the three numbers seed 004 reports.

    `verification[level][intra|inter][balanced|imbalanced]`; `matching[level]` (mean over sequences
    and k) with `matching_by_sequence`; `retrieval[level][pool size]` (mean over queries); and
    `summary`: verification = mean of the six imbalanced APs, matching = mean over levels, retrieval =
    mean over pool sizes of the level-mean.
    """
    matching_means = {level: float(np.mean([np.mean(scores) for scores in by_sequence.values()]))
                      for level, by_sequence in matching.items()}
    retrieval_means = {level: {str(size): float(np.mean(values)) if len(values) else float("nan")
                               for size, values in by_pool.items()} for level, by_pool in retrieval.items()}
    pool_sizes = list(next(iter(retrieval_means.values())))
    summary = {
        "verification": float(np.mean([verification[level][kind]["imbalanced"]
                                       for level in LEVELS for kind in ("intra", "inter")])),
        "matching": float(np.mean(list(matching_means.values()))),
        "retrieval": float(np.mean([np.mean([retrieval_means[level][size] for level in LEVELS])
                                    for size in pool_sizes])),
    }
    return {
        "split": split,
        "summary": summary,
        "verification": {level: {kind: {balance: float(value) for balance, value in entry.items()}
                                 for kind, entry in by_kind.items()} for level, by_kind in verification.items()},
        "matching": matching_means,
        "matching_by_sequence": {level: {sequence: [float(score) for score in scores]
                                         for sequence, scores in by_sequence.items()}
                                 for level, by_sequence in matching.items()},
        "retrieval": retrieval_means,
    }


def format_table(results, name="descriptor"):
    """The benchmark's tables as text: verification, matching and retrieval per level, and the summary."""
    lines = [f"HPatches results for {name} (split {results['split']}), mAP in %", ""]
    lines.append(f"{'verification':<14}{'intra bal.':>12}{'intra imb.':>12}{'inter bal.':>12}{'inter imb.':>12}")
    for level in LEVELS:
        entry = results["verification"][level]
        lines.append(f"{level:<14}" + "".join(f"{100 * entry[kind][balance]:>12.2f}"
                                              for kind in ("intra", "inter") for balance in ("balanced", "imbalanced")))
    lines += ["", f"{'matching':<14}" + "".join(f"{level:>10}" for level in LEVELS)]
    lines.append(f"{'mAP':<14}" + "".join(f"{100 * results['matching'][level]:>10.2f}" for level in LEVELS))
    pools = list(results["retrieval"][LEVELS[0]])
    lines += ["", f"{'retrieval':<14}" + "".join(f"{pool:>9}" for pool in pools)]
    for level in LEVELS:
        lines.append(f"{level:<14}" + "".join(f"{100 * results['retrieval'][level][pool]:>9.2f}" for pool in pools))
    summary = results["summary"]
    lines += ["", f"{'summary':<14}{'verification':>14}{'matching':>10}{'retrieval':>11}",
              f"{'mAP':<14}{summary['verification']:>14.4f}{summary['matching']:>10.4f}{summary['retrieval']:>11.4f}"]
    return "\n".join(lines) + "\n"


def plot_results(path, results_by_name):
    """Bar charts of the three tasks (one bar group per descriptor, one bar per level) saved as a PNG."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 3.8), layout="constrained")
    names = list(results_by_name)
    width = 0.8 / max(len(names), 1)
    for panel, task in enumerate(("verification", "matching", "retrieval")):
        axes = figure.add_subplot(1, 3, panel + 1)
        for offset, name in enumerate(names):
            results = results_by_name[name]
            if task == "verification":
                values = [np.mean([results[task][level][kind]["imbalanced"] for kind in ("intra", "inter")])
                          for level in LEVELS]
            elif task == "matching":
                values = [results[task][level] for level in LEVELS]
            else:
                values = [np.mean(list(results[task][level].values())) for level in LEVELS]
            positions = np.arange(len(LEVELS)) + offset * width
            axes.bar(positions, 100 * np.asarray(values), width, label=f"{name} ({100 * results['summary'][task]:.1f})")
        axes.set_xticks(np.arange(len(LEVELS)) + width * (len(names) - 1) / 2, ["easy", "hard", "tough"])
        axes.set_ylim(0, 100)
        axes.set_title(f"{task} mAP (%)")
        axes.legend(fontsize="small")
    figure.savefig(path, dpi=100)
    return path
