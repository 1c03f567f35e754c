"""The HPatches benchmark protocol (verification, matching, retrieval), exactly, and vectorised.

Descriptors are `{sequence: {image: float32 array (patches, dimension)}}` for the 16 images of each
test sequence; like the benchmark, which reads them as float32, every task converts them to float32
first. The definitions are hpatches-benchmark's Python ones (`utils/metrics.py`, `utils/tasks.py`),
down to its arithmetic: verification distances are `scipy.spatial.distance.euclidean` of two float32
rows (the difference in float32, its norm computed by the BLAS `snrm2` scipy calls,
the result rounded to float32: `verification_distances`); matching and retrieval distances are
`scipy.spatial.distance.cdist`'s (float64 differences of the float32 values, squares summed left to
right over the dimensions: `distances`). Scores are negative distances; rankings use a stable sort
(ties keep input order); AP is the trapezoidal area under precision over recall with a (recall 0,
precision 1) point first. Rankings are scored from counts (how many negatives come before each
positive) rather than by sorting everything. Large distance matrices come from one float32 matrix
product (`|b|^2 - 2ab`), which differs from the definition by up to a proven bound; every comparison
whose outcome that difference could change is recomputed with the definition, so results equal the
benchmark's to the last tie.

Reference:
    Balntas, Lenc, Vedaldi & Mikolajczyk, 2017. HPatches: a benchmark and evaluation of handcrafted and
    learned local descriptors. The hpatches-benchmark repository for the exact protocol.
    Higham, 2002. Accuracy and Stability of Numerical Algorithms, section 3.1 (dot product error bound).
"""


import concurrent.futures
import os

import numpy as np

from deeprestore import interrupts
from deeprestore.descriptors.hpatches import LEVELS
from deeprestore.errors import DeepRestoreError

POOL_SIZES = (100, 500, 1000, 5000, 10000, 15000, 20000)
RETRIEVAL_POSITIVES = 5
_SMALL = 1e-10  # the benchmark's guard against division by zero, which also sets precision at rank 0
# Matrices of approximate distances are built a slab of rows at a time, of at most this many entries.
_SLAB_ENTRIES = 1 << 23
# Descriptors whose squared norms reach this could overflow float32 products: those use float64.
_FLOAT32_LIMIT = 1e30


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


def _rows_average_precision(distances, labels, numpos):
    """`average_precision(-distances[i], labels[i], numpos)` for every row i at once (finite distances)."""
    order = np.argsort(distances, axis=-1, kind="stable")
    hits = np.take_along_axis(np.asarray(labels, bool), order, axis=-1)
    start = np.zeros((*hits.shape[:-1], 1), np.int64)
    true_positives = np.concatenate([start, np.cumsum(hits, axis=-1)], axis=-1)
    false_positives = np.concatenate([start, np.cumsum(~hits, axis=-1)], axis=-1)
    recall = true_positives / float(max(numpos, _SMALL))
    precision = np.maximum(true_positives, _SMALL) / np.maximum(true_positives + false_positives, _SMALL)
    return np.sum(np.diff(recall, axis=-1) * (precision[..., 1:] + precision[..., :-1]) / 2.0, axis=-1)


def _rank_average_precision(ranks, positives):
    """AP (as `precision_recall` computes it) of rankings given the 1-based ranks of their positives.

    `ranks` is `(..., positives)`, sorted along the last axis; only the steps where recall grows add area.
    """
    found = np.arange(1, positives + 1, dtype=np.float64)
    before = np.where(ranks > 1, np.maximum(found - 1, _SMALL) / np.maximum(ranks - 1, _SMALL), 1.0)
    width = found / positives - (found - 1) / positives
    return np.sum(width * (before + found / ranks) / 2.0, axis=-1)


def distances(first, second):
    """Row-wise Euclidean distances as `scipy.spatial.distance.cdist` computes them: float64
    differences, squares summed left to right over the dimensions, square root.

    `np.sum` sums pairwise and differs from cdist in the last bit, which decides some nearest
    neighbours among tied descriptors; adding one dimension at a time over all rows keeps cdist's
    order (and is three times faster than `np.add.accumulate` along each row).
    """
    first, second = np.broadcast_arrays(np.asarray(first), np.asarray(second))
    squares = np.subtract(np.moveaxis(first, -1, 0), np.moveaxis(second, -1, 0), dtype=np.float64)
    np.multiply(squares, squares, out=squares)  # (dimension, ...)
    total = squares[0].copy()
    for square in squares[1:]:
        total += square
    return np.sqrt(total)


def verification_distances(first, second):
    """Row-wise Euclidean distances as `scipy.spatial.distance.euclidean` computes them on float32
    rows (the benchmark's verification): `scipy.linalg.norm(u - v)` with the difference in float32,
    which `norm` hands to BLAS `snrm2` (OpenBLAS's x86_64 kernel squares in double, sums in its own
    order, takes the square root in double and rounds it to float32). Returned as float64 holding
    those float32 values.

    The sums come from one `einsum` in double; any summation order differs from BLAS's by at most
    `2 (dimension - 1) u` of the sum (u = 2^-53; Higham, 2002, eq. 3.5, for sums of non-negative
    terms), which can change the float32 result only where the root lies that close to a point
    half-way between two float32 values. Those rows (almost never, outside constructed cases) are
    computed again by the very BLAS `snrm2` scipy calls, so every distance is scipy's to the last bit
    on any BLAS. The rounding to float32 makes many more distances equal than float64 arithmetic
    would, and ties decide the verification APs.
    """
    difference = np.subtract(np.asarray(first, np.float32), np.asarray(second, np.float32)).astype(np.float64)
    squares = np.einsum("ij,ij->i", difference, difference)  # products (exact) and sums in double
    result = np.sqrt(squares).astype(np.float32)
    margin = 4.0 * max(difference.shape[-1], 1) * np.finfo(np.float64).eps  # twice the bound, with room
    low = np.sqrt(squares * (1.0 - margin)).astype(np.float32)
    high = np.sqrt(squares * (1.0 + margin)).astype(np.float32)
    uncertain = np.flatnonzero(low != high)
    if len(uncertain):
        from scipy.linalg.blas import snrm2  # the routine scipy's `norm` calls for a float32 vector

        rows = difference[uncertain].astype(np.float32)  # exact: the difference was computed in float32
        result[uncertain] = [snrm2(row) for row in rows]
    return result.astype(np.float64)


def _indexed_distances(first, second, first_rows, second_rows, measure=distances, block=2048):
    """`measure(first[first_rows], second[second_rows])`, a block of rows at a time.

    Blocks keep the float64 differences in cache; they run on a few threads, since the random-access
    gathers dominate and numpy releases the GIL in them. Each row is still computed on its own, in
    `measure`'s order, so the results are the same bits.
    """
    result = np.empty(len(first_rows))

    def fill(start):
        part = slice(start, start + block)
        result[part] = measure(first[first_rows[part]], second[second_rows[part]])

    starts = range(0, len(first_rows), block)
    if len(starts) < 8:  # starting threads costs more than it saves
        list(map(fill, starts))
    else:
        with concurrent.futures.ThreadPoolExecutor(min(os.cpu_count() or 1, 8)) as pool:
            list(pool.map(fill, starts))
    return result


def _round(values, dtype, upward):
    """float64 `values` in `dtype`, rounded up (or down), so that a bound stays a bound."""
    rounded = values.astype(dtype)
    if upward:
        return np.where(rounded < values, np.nextafter(rounded, dtype.type(np.inf)), rounded)
    return np.where(rounded > values, np.nextafter(rounded, dtype.type(-np.inf)), rounded)


class _ApproximateDistances:
    """`|b|^2 - 2 a.b` (the squared distance less `|a|^2`) between rows `a` and every row `b` of
    `second`, from one float32 matrix product, with a bound on its error.

    A dot product of length K in any summation order differs from the exact one by at most
    `gamma_K * sum(|a_i b_i|) <= gamma_K |a| |b|`, with `gamma_K = K u / (1 - K u)` and u the unit
    round-off (Higham, 2002, eq. 3.5); rounding the inputs and the norms to float32 and the final
    addition add at most 5u (|a|^2 + |b|^2). The bound is four times the sum. `second` is prepared
    once (its norms and float32 copy) for any number of calls.
    """

    def __init__(self, second):
        self.second = np.asarray(second)
        self.norms = np.einsum("ij,ij->i", *[np.asarray(second, np.float64)] * 2)
        self._converted = {}

    def __call__(self, first):
        """Returns `(values, bound, first_norms)`: `(n, m)` float32 values (float64 for descriptors
        too large for float32), the `(n,)` float64 bound on the error of each row's values, and the
        `(n,)` float64 squared norms `|a|^2`."""
        first_norms = np.einsum("ij,ij->i", *[np.asarray(first, np.float64)] * 2)
        largest = max(first_norms.max(initial=0.0), self.norms.max(initial=0.0))
        dtype = np.dtype(np.float32 if largest < _FLOAT32_LIMIT else np.float64)
        if dtype not in self._converted:
            self._converted[dtype] = (np.asarray(self.second, dtype), self.norms.astype(dtype))
        second, second_norms = self._converted[dtype]
        values = (np.asarray(first, dtype) * dtype.type(-2)) @ second.T  # scaling by 2 is exact
        values += second_norms
        unit = np.finfo(dtype).eps / 2
        dimension = self.second.shape[1]
        gamma = dimension * unit / (1 - dimension * unit)
        return values, 4 * (gamma + 5 * unit) * (first_norms + self.norms.max(initial=0.0)), first_norms


def nearest_neighbours(first, second, block_size=None):
    """For each row of `first`, the nearest row of `second` (the first one on ties) in each block of
    `block_size` consecutive rows of `second` (all of them by default), and the distance to it, both
    by the definition (`distances`).

    `_ApproximateDistances` picks, per row and block, the candidates within twice its error bound of
    the smallest; only those are measured with the definition.

    Returns:
        `(nearest, nearest_distances)`, each `(len(first), blocks)`: indices within each block, and
        float64 distances.
    """
    first, second = np.asarray(first), np.asarray(second)
    block_size = block_size or len(second)
    blocks = len(second) // block_size
    approximate = _ApproximateDistances(second)
    nearest = np.empty((len(first), blocks), np.int64)
    nearest_distances = np.empty((len(first), blocks))
    slab = max(1, _SLAB_ENTRIES // max(len(second), 1))
    for start in range(0, len(first), slab):
        rows = slice(start, start + slab)
        values, bound, _ = approximate(first[rows])
        values = values.reshape(-1, blocks, block_size)  # (rows, blocks, block_size)
        limit = _round(values.min(axis=-1) + 2 * bound[:, None], values.dtype, upward=True)
        # Every minimum is a candidate, so each (row, block) group has at least one, in order.
        group, column = np.divmod(np.flatnonzero(values <= limit[..., None]), block_size)
        exact = _indexed_distances(first, second, start + group // blocks, group % blocks * block_size + column)
        # Keep the first exact minimum of each group.
        group_starts = np.flatnonzero(np.concatenate([[True], group[1:] != group[:-1]]))
        group_minimum = np.minimum.reduceat(exact, group_starts)
        minima = np.flatnonzero(exact == np.repeat(group_minimum, np.diff(np.append(group_starts, len(group)))))
        minima = minima[np.concatenate([[True], group[minima][1:] != group[minima][:-1]])]
        nearest[rows] = column[minima].reshape(-1, blocks)
        nearest_distances[rows] = exact[minima].reshape(-1, blocks)
    return nearest, nearest_distances


class _Table:
    """The descriptors of some images of some sequences stacked into one array, addressed by
    (sequence code, image number, row).

    Stacking costs one copy of the descriptors, after which any number of rows is a single `take`
    instead of one gather per (sequence, image) group.
    """

    def __init__(self, descriptors, sequences, images):
        blocks = [np.asarray(descriptors[name][image], np.float32) for name in sequences for image in images]
        self.stack = np.concatenate(blocks) if blocks else np.empty((0, 0), np.float32)
        sizes = np.array([len(block) for block in blocks], np.int64)
        self.offsets = (np.cumsum(sizes) - sizes).reshape(len(sequences), len(images))  # first row of each block

    def positions(self, codes, images, rows):
        """Stack positions of rows of (sequence code, image number) blocks."""
        return self.offsets[codes, images] + rows

    def distances(self, first, second):
        """`verification_distances` between the stack rows at positions `first` and `second`."""
        return _indexed_distances(self.stack, self.stack, first, second, verification_distances)


def _rows(descriptors, sequences, image, indices):
    """Descriptors of one image at the given (sequence, row) pairs, as float32 (like the benchmark's
    retrieval) held in float64, one gather per sequence (retrieval's few thousand rows are not worth
    stacking every descriptor for)."""
    names, inverse = np.unique(np.asarray(sequences, dtype=str), return_inverse=True)
    indices = np.asarray(indices, np.int64)
    dimension = np.shape(next(iter(next(iter(descriptors.values())).values())))[1]
    result = np.empty((len(indices), dimension), np.float64)
    for number, name in enumerate(names):
        rows = np.flatnonzero(inverse == number)
        result[rows] = np.asarray(descriptors[name][image], np.float32)[indices[rows]]
    return result


def _stacked_auc(negatives, sorted_positives):
    """`roc_auc` of negatives stacked before positives, scored by negative distance.

    Each negative adds (positives ranked before it) / (positives x negatives) to the trapezoid area; a
    positive comes before a negative when strictly closer, since on a tie the stable sort keeps the
    negative, stacked first, in front.
    """
    if not len(negatives) or not len(sorted_positives):
        return 0.0
    before = np.searchsorted(sorted_positives, negatives, side="left").sum()
    return float(before / (len(sorted_positives) * len(negatives)))


def _stacked_average_precision(negatives, positives):
    """`average_precision` of negatives stacked before positives, scored by negative distance: the
    rank of the j-th closest positive is j plus the negatives at most as far (ties rank negatives first)."""
    ranks = np.arange(1, len(positives) + 1) + np.searchsorted(np.sort(negatives), np.sort(positives), side="right")
    return float(_rank_average_precision(ranks.astype(np.float64), len(positives)))


def _pair_ends(tasks, kinds, known):
    """Both ends of every pair of each kind as `(sequence codes, image ids, rows)`, and the names the
    codes stand for: those of `known` (sorted) that some pair uses. Names are found by a binary search
    among the sorted names rather than one dictionary look-up per pair.

    Raises:
        KeyError: a pair names a sequence that has no descriptors.
    """
    used, ends = np.zeros(len(known), bool), {}
    for kind in kinds:
        pairs = getattr(tasks, kind)
        ends[kind] = []
        for sequences, images, indices in ((pairs.sequences1, pairs.images1, pairs.indices1),
                                           (pairs.sequences2, pairs.images2, pairs.indices2)):
            sequences = np.asarray(sequences, dtype=str)
            place = np.minimum(np.searchsorted(known, sequences), max(len(known) - 1, 0))
            missing = np.flatnonzero(known[place] != sequences) if len(known) else np.arange(len(sequences))
            if len(missing):
                raise KeyError(str(sequences[missing[0]]))
            used[place] = True
            ends[kind].append((place, np.asarray(images, np.int64), np.asarray(indices, np.int64)))
    codes = np.cumsum(used) - 1  # the place of each used name among the used ones
    coded = {kind: [(codes[place], images, indices) for place, images, indices in both] for kind, both in ends.items()}
    return coded, [str(name) for name in known[used]]


def evaluate_verification(descriptors, tasks):
    """Verification at each level: `{level: {"intra"|"inter": {"balanced": auc, "imbalanced": ap}}}`.

    Negatives are stacked before positives; balanced is the ROC AUC on all of them, imbalanced the AP
    on the first `positives + int(0.2 * positives)` (all negatives and a fifth as many positives when
    there are as many negatives as positives).
    """
    kinds = ("positives", "intra", "inter")
    ends, names = _pair_ends(tasks, kinds, np.array(sorted(descriptors), dtype=str))
    results = {}
    for level in LEVELS:
        interrupts.raise_if_requested()
        # One level's images at a time (image ids 0..5 are `ref` and images 1..5 of the level) keeps the
        # stacked copy small; all the level's pairs are measured in one threaded pass.
        table = _Table(descriptors, names, ["ref"] + [f"{level}{k}" for k in range(1, 6)])
        measured = table.distances(*(np.concatenate([table.positions(*ends[kind][end]) for kind in kinds])
                                     for end in (0, 1)))
        del table
        positive, *negatives = np.split(measured, np.cumsum([len(getattr(tasks, kind)) for kind in kinds])[:-1])
        sorted_positive = np.sort(positive)
        imbalanced = len(positive) + int(len(positive) * 0.2)
        results[level] = {}
        for kind, negative in zip(("intra", "inter"), negatives):
            kept_positives = positive[:max(imbalanced - len(negative), 0)]
            results[level][kind] = {"balanced": _stacked_auc(negative, sorted_positive),
                                    "imbalanced": _stacked_average_precision(negative[:imbalanced], kept_positives)}
    return results


def evaluate_matching(descriptors, sequences, success_rates=False):
    """Matching: `{level: {sequence: [ap for k = 1..5]}}`, nearest neighbour from `ref` to image k.

    With `success_rates`, returns `(aps, rates)`: `rates` has the same shape and holds the benchmark's
    `sr`, the fraction of ref patches whose nearest neighbour is the same row.
    """
    results = {level: {} for level in LEVELS}
    rates = {level: {} for level in LEVELS}
    images = [f"{level}{k}" for level in LEVELS for k in range(1, 6)]
    for sequence in sequences:
        interrupts.raise_if_requested()
        reference = np.asarray(descriptors[sequence]["ref"], np.float32)
        if len(reference):
            # One search against all 15 images of the sequence, a block of columns per image.
            others = np.concatenate([np.asarray(descriptors[sequence][image], np.float32) for image in images])
            nearest, nearest_distances = nearest_neighbours(reference, others, len(reference))
            correct = nearest == np.arange(len(reference))[:, None]
            scores = _rows_average_precision(nearest_distances.T, correct.T, len(reference))
            success = correct.mean(axis=0)
        else:
            scores = success = np.zeros(len(images))  # no patches: the benchmark's AP of an empty ranking
        for image, score, rate in zip(images, scores, success):
            results[image[0]].setdefault(sequence, []).append(float(score))
            rates[image[0]].setdefault(sequence, []).append(float(rate))
    return (results, rates) if success_rates else results


class _Pools:
    """The retrieval pools: for each query, the distractors in file order less those of the query's
    own sequence, cut at each pool size.

    Args:
        distractors: `(distractors, dimension)` float64 descriptors.
        query_sequences, distractor_sequences: the sequence of each query and distractor.
        pool_sizes: the pool sizes, ascending; each holds the 5 positives first.
    """

    def __init__(self, distractors, query_sequences, distractor_sequences, pool_sizes):
        self.distractors = distractors
        self.approximate = _ApproximateDistances(distractors)
        self.cuts = np.array([max(size - RETRIEVAL_POSITIVES, 0) for size in pool_sizes])
        names, codes = np.unique(np.concatenate([np.asarray(query_sequences, str),
                                                 np.asarray(distractor_sequences, str)]), return_inverse=True)
        self.query_codes, distractor_codes = codes[:len(query_sequences)], codes[len(query_sequences):]
        self.own = distractor_codes[None, :] == np.arange(len(names))[:, None]  # (sequences, distractors)
        self.own_before = np.cumsum(self.own, axis=1) - self.own

    def segments(self, queries, columns):
        """For distractors `columns` in the pools of `queries` (index arrays of one shape), the segment
        between consecutive cuts that holds each: 0 for the first cut, `len(cuts)` for none."""
        codes = self.query_codes[queries]
        places = columns - self.own_before[codes, columns]
        return np.where(self.own[codes, columns], len(self.cuts), np.searchsorted(self.cuts, places, side="right"))

    def closer_counts(self, indices, queries, positive_distances):
        """For each query, level and positive, and each segment between consecutive cuts: how many
        distractors of that segment of the query's pool are strictly closer than the positive.

        Only distractors whose approximate distance is below a threshold plus the error bound can
        count; those below it less the bound surely do, and those in between are measured with the
        definition.

        Args:
            indices: the queries' indices in the task (for their sequences).
            queries: `(queries, dimension)` float64 descriptors.
            positive_distances: `(queries, levels, 5)`.

        Returns:
            int array `(queries, levels, 5, cuts)`.
        """
        values, bound, query_norms = self.approximate(queries)
        dtype = values.dtype
        positives = positive_distances.reshape(len(queries), -1)  # (queries, thresholds)
        # Thresholds in the approximation's units: squared distance less |query|^2, in ascending order
        # (their rounded bounds ascend with them).
        order = np.argsort(positives, axis=1, kind="stable")
        thresholds = np.take_along_axis(positives, order, axis=1) ** 2 - query_norms[:, None]
        lower = _round(thresholds - bound[:, None], dtype, upward=False)
        upper = _round(thresholds + bound[:, None], dtype, upward=True)
        row, column = np.nonzero(values <= upper[:, -1:])
        segment = self.segments(indices[row], column)
        inside = segment < len(self.cuts)
        row, column, segment = row[inside], column[inside], segment[inside]
        value = values[row, column][:, None]
        # A candidate is surely closer than the thresholds from `surely` on, surely not than those
        # before `near`, and too near to tell for those in between: decided by the definition.
        surely = np.count_nonzero(value >= lower[row], axis=1)
        near = np.count_nonzero(value > upper[row], axis=1)
        count, cuts = thresholds.shape[1], len(self.cuts)
        flat = (row * cuts + segment) * (count + 1) + surely
        closer = np.bincount(flat, minlength=len(queries) * cuts * (count + 1)).reshape(len(queries), cuts, count + 1)
        closer = np.cumsum(closer, axis=-1)[..., :count]  # (queries, cuts, sorted thresholds)
        undecided = np.flatnonzero(near < surely)
        if len(undecided):
            exact = distances(queries[row[undecided]], self.distractors[column[undecided]])  # once per candidate
            widths = surely[undecided] - near[undecided]
            pair = np.repeat(np.arange(len(undecided)), widths)
            place = near[undecided][pair] + np.arange(len(pair)) - np.repeat(np.cumsum(widths) - widths, widths)
            who = undecided[pair]
            decided = exact[pair] < np.take_along_axis(positives, order, axis=1)[row[who], place]
            np.add.at(closer, (row[who][decided], segment[who][decided], place[decided]), 1)
        unsorted = np.empty_like(closer)
        np.put_along_axis(unsorted, np.broadcast_to(order[:, None, :], closer.shape), closer, axis=-1)
        return np.moveaxis(unsorted, 1, -1).reshape((*positive_distances.shape, cuts))


def evaluate_retrieval(descriptors, tasks, pool_sizes=POOL_SIZES):
    """Retrieval: `{level: {pool size: [ap per query]}}`.

    For each query (a `ref` patch), the pool is its 5 positives (the same row in images 1..5 of the
    level) followed by the distractors in file order without those from the query's own sequence,
    truncated to the pool size; AP with the 5 positives. A positive's rank is its place among the
    positives plus the pool's distractors strictly closer to the query (on a tie the stable sort keeps
    the positive, which comes first, in front).
    """
    queries = _rows(descriptors, tasks.queries.sequences, "ref", tasks.queries.indices)
    distractors = _rows(descriptors, tasks.distractors.sequences, "ref", tasks.distractors.indices)
    positive_distances = np.stack([np.stack([
        distances(queries, _rows(descriptors, tasks.queries.sequences, f"{level}{k}", tasks.queries.indices))
        for k in range(1, 6)], axis=-1) for level in LEVELS], axis=1)  # (queries, levels, 5)
    positive_distances = np.sort(positive_distances, axis=-1)
    order = np.argsort(pool_sizes, kind="stable")
    pools = _Pools(distractors, tasks.queries.sequences, tasks.distractors.sequences, np.asarray(pool_sizes)[order])
    counts = np.zeros((*positive_distances.shape, len(pool_sizes)), np.int64)
    slab = max(1, _SLAB_ENTRIES // max(len(distractors), 1))
    for start in range(0, len(queries), slab):
        interrupts.raise_if_requested()
        rows = np.arange(start, min(start + slab, len(queries)))
        counts[rows] = pools.closer_counts(rows, queries[rows], positive_distances[rows])
    ranks = np.arange(1, RETRIEVAL_POSITIVES + 1)[None, None, :, None] + np.cumsum(counts, axis=-1)
    ap = _rank_average_precision(np.moveaxis(ranks, 2, -1).astype(np.float64), RETRIEVAL_POSITIVES)
    sorted_place = np.argsort(order)  # where each given pool size went in the ascending order
    return {level: {int(size): ap[:, index, sorted_place[pool]] for pool, size in enumerate(pool_sizes)}
            for index, level in enumerate(LEVELS)}


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
    matching, success = evaluate_matching(descriptors, sequences, success_rates=True)
    counts = {"sequences": len(sequences),
              "patches": int(sum(len(descriptors[sequence]["ref"]) for sequence in sequences)),
              "dimension": int(np.shape(descriptors[sequences[0]]["ref"])[1]) if len(sequences) else 0,
              "verification_pairs": {kind: len(getattr(tasks, kind)) for kind in ("positives", "intra", "inter")},
              "queries": len(tasks.queries), "distractors": len(tasks.distractors)}
    retrieval = evaluate_retrieval(descriptors, tasks, pool_sizes)
    return summarise(evaluate_verification(descriptors, tasks), matching, retrieval, tasks.split, success, counts)


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


def summarise(verification, matching, retrieval, split, success=None, counts=None):
    """The results dict: every table entry and the three numbers seed 004 reports.

    `verification[level][intra|inter][balanced|imbalanced]`; `matching[level]` (mean over sequences
    and k) with `matching_by_sequence`; `retrieval[level][pool size]` (mean over queries) with
    `retrieval_by_query` (every query's AP, in task-file order); and `summary`: verification = mean of
    the six imbalanced APs, matching = mean over levels, retrieval = mean over pool sizes of the
    level-mean. With `success` (`{level: {sequence: [rate for k = 1..5]}}`), `matching_success` (mean
    over sequences and k), `matching_success_by_sequence` and `matching_success_mean`; with
    `counts`, `counts` (sequences, patches, pairs, queries, distractors).
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

    def by_sequence(table):
        return {level: {sequence: [float(value) for value in values] for sequence, values in entries.items()}
                for level, entries in table.items()}

    results = {
        "split": split,
        "summary": summary,
        "verification": {level: {kind: {balance: float(value) for balance, value in entry.items()}
                                 for kind, entry in by_kind.items()} for level, by_kind in verification.items()},
        "matching": matching_means,
        "matching_by_sequence": by_sequence(matching),
        "retrieval": retrieval_means,
        "retrieval_by_query": {level: {str(size): [float(value) for value in values]
                                       for size, values in by_pool.items()} for level, by_pool in retrieval.items()},
    }
    if success is not None:
        results["matching_success"] = {level: float(np.mean([np.mean(rates) for rates in entries.values()]))
                                       for level, entries in success.items()}
        results["matching_success_by_sequence"] = by_sequence(success)
        results["matching_success_mean"] = float(np.mean(list(results["matching_success"].values())))
    if counts is not None:
        results["counts"] = counts
    return results


def format_table(results, name="descriptor", per_sequence=False):
    """The benchmark's tables as text: verification, matching (mAP and success rate) and retrieval per
    level, the summary and the counts; with `per_sequence`, matching per sequence too."""
    lines = [f"HPatches results for {name} (split {results['split']}), mAP in %", ""]
    lines.append(f"{'verification':<14}{'intra bal.':>12}{'intra imb.':>12}{'inter bal.':>12}{'inter imb.':>12}")
    for level in LEVELS:
        entry = results["verification"][level]
        lines.append(f"{level:<14}" + "".join(f"{100 * entry[kind][balance]:>12.2f}"
                                              for kind in ("intra", "inter") for balance in ("balanced", "imbalanced")))
    lines += ["", f"{'matching':<14}" + "".join(f"{level:>10}" for level in LEVELS)]
    lines.append(f"{'mAP':<14}" + "".join(f"{100 * results['matching'][level]:>10.2f}" for level in LEVELS))
    if "matching_success" in results:
        lines.append(f"{'success rate':<14}" + "".join(f"{100 * results['matching_success'][level]:>10.2f}"
                                                      for level in LEVELS))
    pools = list(results["retrieval"][LEVELS[0]])
    lines += ["", f"{'retrieval':<14}" + "".join(f"{pool:>9}" for pool in pools)]
    for level in LEVELS:
        lines.append(f"{level:<14}" + "".join(f"{100 * results['retrieval'][level][pool]:>9.2f}" for pool in pools))
    summary = results["summary"]
    lines += ["", f"{'summary':<14}{'verification':>14}{'matching':>10}{'retrieval':>11}",
              f"{'mAP':<14}{summary['verification']:>14.4f}{summary['matching']:>10.4f}{summary['retrieval']:>11.4f}"]
    if "counts" in results:
        counts = results["counts"]
        pairs = counts["verification_pairs"]
        lines += ["", f"{counts['sequences']} test sequences, {counts['patches']} patches per image in all, "
                  f"dimension {counts['dimension']}; verification pairs {pairs['positives']} positive, "
                  f"{pairs['intra']} intra, {pairs['inter']} inter; {counts['queries']} queries, "
                  f"{counts['distractors']} distractors"]
    if per_sequence and "matching_success_by_sequence" in results:
        lines += ["", f"{'matching by sequence':<24}" + "".join(f"{'mAP ' + level:>9}{'SR ' + level:>8}"
                                                              for level in LEVELS)]
        for sequence in results["matching_by_sequence"][LEVELS[0]]:
            lines.append(f"{sequence:<24}" + "".join(
                f"{100 * np.mean(results['matching_by_sequence'][level][sequence]):>9.2f}"
                f"{100 * np.mean(results['matching_success_by_sequence'][level][sequence]):>8.2f}" for level in LEVELS))
    return "\n".join(lines) + "\n"


def format_comparison(results_by_name):
    """One table of the summary numbers of several descriptors (in %), so a user sees which is best."""
    width = max([len(name) for name in results_by_name] + [10]) + 2
    lines = [f"{'descriptor':<{width}}{'verification':>14}{'matching':>10}{'success':>10}{'retrieval':>11}"]
    for name, results in results_by_name.items():
        summary = results["summary"]
        success = results.get("matching_success_mean", float("nan"))
        lines.append(f"{name:<{width}}{100 * summary['verification']:>14.2f}{100 * summary['matching']:>10.2f}"
                     f"{100 * success:>10.2f}{100 * summary['retrieval']:>11.2f}")
    return "\n".join(lines) + "\n"


def plot_results(path, results_by_name):
    """Bar charts of the three tasks (one bar group per descriptor, one bar per level) saved as a PNG."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 3.8))
    # Fixed margins: a layout engine measured every label twice and took half the plot's time.
    figure.subplots_adjust(left=0.035, right=0.995, bottom=0.08, top=0.92, wspace=0.12)
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
