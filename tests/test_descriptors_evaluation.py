"""The HPatches protocol: reference AP/AUC values, hand-checked tasks, and vectorised == per-pair reference."""

import csv
import json
import pathlib
import sys
import warnings

import numpy as np
import pytest
from scipy.spatial import distance

from deeprestore.descriptors import evaluation, export, hpatches, tasks
from deeprestore.errors import DeepRestoreError

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import hpatches_reference as reference


@pytest.mark.parametrize("scores, labels, numpos, expected", [
    ([.9, .8, .7, .6], [1, 0, 1, 0], None, 0.791667),
    ([.9, .8, .7], [1, 0, 1], 4, 0.395833),
    ([.5, .5], [0, 1], None, 0.25),
    ([.5, .5], [1, 0], None, 1.0),
])
def test_average_precision_matches_the_benchmark_reference_values(scores, labels, numpos, expected):
    assert evaluation.average_precision(scores, labels, numpos) == pytest.approx(expected, abs=5e-7)


def test_roc_auc_matches_the_benchmark_reference_value():
    assert evaluation.roc_auc([.9, .8, .7, .6], [1, 0, 1, 0]) == pytest.approx(0.75)


def test_precision_recall_starts_at_recall_zero_precision_one():
    precision, recall, _ = evaluation.precision_recall([.9, .8], [0, 1])
    assert recall[0] == 0.0 and precision[0] == 1.0 and len(recall) == 3


def _descriptors(sequences=4, patches=12, dimension=6, seed=0, integer=False):
    """Level-dependent noise around each ref descriptor, with duplicated rows (exact ties)."""
    rng = np.random.default_rng(seed)
    result = {}
    for number in range(sequences):
        base = rng.normal(size=(patches, dimension))
        images = {}
        for image in hpatches.IMAGES:
            values = (base if image == "ref"
                      else base + {"e": .3, "h": .6, "t": 1.}[image[0]] * rng.normal(size=base.shape))
            values = np.round(values) if integer else values
            values = values.astype(np.float32)
            values[1:3] = values[0]
            images[image] = values
        result[f"{'iv'[number % 2]}_{number}"] = images
    return result


def _tasks(descriptors, seed=0, pairs=300, queries=20, distractors=40):
    split = hpatches.Split("x", tuple(descriptors), ())
    counts = {name: len(images["ref"]) for name, images in descriptors.items()}
    return split, tasks.generate_tasks(split, counts, {name: np.full(count, 50.0) for name, count in counts.items()},
                                       seed=seed, pairs=pairs, queries=queries, distractors=distractors)


def _assert_same(first, second):
    """Every entry of two results dicts (after a JSON round trip) equal to 1e-12, keys in the same order."""
    if isinstance(first, dict):
        assert list(first) == list(second)
        for key in first:
            _assert_same(first[key], second[key])
    elif isinstance(first, list):
        for a, b in zip(first, second, strict=True):
            _assert_same(a, b)
    else:
        assert first == pytest.approx(second, abs=1e-12)


def _assert_equals_reference(descriptors, split, task_lists, pools=(8, 20, 30, 100)):
    fast = json.loads(json.dumps(evaluation.evaluate(descriptors, task_lists, split.test, pools)))
    slow = json.loads(json.dumps(reference.evaluate(descriptors, task_lists, split.test, pools)))
    _assert_same(fast, slow)


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_vectorised_evaluation_equals_the_per_pair_reference(integer, seed):
    descriptors = _descriptors(seed=seed, integer=integer)
    _assert_equals_reference(descriptors, *_tasks(descriptors, seed))


@pytest.mark.parametrize("offset, scale", [(1e3, 1.0), (0.0, 1e16)])
def test_vectorised_evaluation_equals_the_reference_where_float32_products_cannot_decide(offset, scale):
    # A large common offset makes the float32 products' error dwarf the distances (every comparison is
    # a near-tie, decided by the definition); a huge scale takes the float64 products instead.
    descriptors = {name: {image: (values * np.float32(scale) + np.float32(offset)).astype(np.float32)
                          for image, values in images.items()}
                   for name, images in _descriptors(seed=2).items()}
    _assert_equals_reference(descriptors, *_tasks(descriptors, 2))


def test_retrieval_pool_sizes_in_any_order_equal_the_reference():
    descriptors = _descriptors(seed=3)
    split, task_lists = _tasks(descriptors, 3)
    _assert_equals_reference(descriptors, split, task_lists, pools=(30, 8, 100, 20))


def _near_tie_descriptors(gap):
    """One sequence of 4 patches in 3-D whose ref patch 0 has two nearly tied neighbours in every image:
    row 1 at distance 1 and row 2 at distance `1 - gap` (`gap` far below float32 resolution)."""
    reference = np.array([[0.5, 0.25, 0.125], [10, 10, 10], [20, 20, 20], [30, 30, 30]])
    other = reference.copy()
    other[1] = reference[0] + [1.0, 0.0, 0.0]
    other[2] = reference[0] + [0.0, 1.0 - gap, 0.0]
    other[0] = reference[0] + [0.0, 0.0, 5.0]
    return reference, other


@pytest.mark.parametrize("gap", [1e-12, 0.0, -1e-12])
def test_nearest_neighbours_decide_near_ties_by_the_definition(gap):
    first, second = _near_tie_descriptors(gap)
    nearest, nearest_distances = evaluation.nearest_neighbours(first, second)
    exact = distance.cdist(first[:1], second)[0]
    assert nearest[0, 0] == np.argmin(exact) == (2 if gap > 0 else 1)
    assert nearest_distances[0, 0] == exact.min()


def test_nearest_neighbours_search_each_block_of_columns_on_its_own():
    # The common offset leaves float32 products too coarse to order the neighbours: the definition must.
    rng = np.random.default_rng(4)
    first, second = 1e3 + rng.normal(size=(30, 8)), 1e3 + np.round(rng.normal(size=(3 * 20, 8)), 1)
    nearest, nearest_distances = evaluation.nearest_neighbours(first, second, block_size=20)
    for block in range(3):
        exact = distance.cdist(first, second[block * 20:(block + 1) * 20])
        np.testing.assert_array_equal(nearest[:, block], np.argmin(exact, axis=1))
        np.testing.assert_array_equal(nearest_distances[:, block], exact.min(axis=1))


@pytest.mark.parametrize("gap", [2.0 ** -23, 0.0, -2.0 ** -23])  # one float32 step
def test_retrieval_counts_only_distractors_strictly_closer_than_a_positive(gap):
    # The query's first positive is at distance 1; a distractor of another sequence sits at 1 - gap:
    # closer (ranked before the positive) only when gap > 0, since a tie keeps the positive first.
    query = np.array([0.5, 0.25, 0.125])
    descriptors = {}
    for name in ("i_a", "v_b"):
        ref = np.array([query, [40, 40, 40], [60, 60, 60]]) + (0 if name == "i_a" else 100)
        descriptors[name] = {image: ref.copy() for image in hpatches.IMAGES}
    for image in hpatches.IMAGES[1:]:
        descriptors["i_a"][image][0] = query + np.array([1.0, 0.0, 0.0])
    descriptors["v_b"]["ref"][1] = query + np.array([0.0, 1.0 - gap, 0.0])
    queries = tasks.Patches(np.array(["i_a"], dtype=object), np.array([0]))
    distractors = tasks.Patches(np.array(["v_b", "v_b", "i_a"], dtype=object), np.array([0, 1, 1]))
    task_lists = tasks.Tasks("x", None, None, None, queries, distractors)
    fast = evaluation.evaluate_retrieval(descriptors, task_lists, pool_sizes=(6, 7))
    slow = reference.retrieval(descriptors, task_lists, pool_sizes=(6, 7))
    assert fast["e"][7].tolist() == pytest.approx(slow["e"][7].tolist(), abs=1e-15)
    assert fast["e"][6].tolist() == [1.0]  # the closer distractor is second in the pool: outside a pool of 6
    assert (fast["e"][7][0] < 1.0) == (gap > 0)


@pytest.mark.parametrize("gap", [2.0 ** -23, 0.0, -2.0 ** -23])  # one float32 step
def test_verification_ranks_tied_negatives_before_positives(gap):
    descriptors = _toy()
    descriptors["i_a"]["e1"] = descriptors["i_a"]["ref"] + np.array([[1.0], [1.0], [1.0]], np.float32)
    descriptors["v_b"]["ref"] = descriptors["i_a"]["ref"] + np.array([[1.0 - gap], [7.0], [7.0]])
    # Pairs: positives (i_a, ref, r)-(i_a, e1, r) at distance 1; negatives (i_a, ref, r)-(v_b, ref, r).
    def column(values, kind=np.int64):
        return np.array(values, dtype=kind)

    positives = tasks.Pairs(column(["i_a"] * 3, object), column([0] * 3), column([0, 1, 2]),
                            column(["i_a"] * 3, object), column([1] * 3), column([0, 1, 2]))
    negatives = tasks.Pairs(column(["i_a"] * 3, object), column([0] * 3), column([0, 1, 2]),
                            column(["v_b"] * 3, object), column([0] * 3), column([0, 1, 2]))
    empty = tasks.Patches(np.array(["i_a"], dtype=object), np.array([0]))
    task_lists = tasks.Tasks("x", positives, negatives, negatives, empty, empty)
    fast = evaluation.evaluate_verification(descriptors, task_lists)
    slow = reference.verification(descriptors, task_lists)
    for kind in ("intra", "inter"):
        for balance in ("balanced", "imbalanced"):
            assert fast["e"][kind][balance] == pytest.approx(slow["e"][kind][balance], abs=1e-15)
    # Positives at 1; negatives at 7, 7 and 1 - gap, which a positive precedes only when strictly closer.
    assert fast["e"]["intra"]["balanced"] == pytest.approx((6 + (3 if gap < 0 else 0)) / 9)


def _quantised(rows, seed, dimension=128, levels=4):
    """Random projections quantised to a few levels: many exactly equal distances (tie-heavy)."""
    rng = np.random.default_rng(seed)
    values = np.round(rng.normal(size=(rows, dimension)) * levels / 4) / (levels - 1) * 0.7
    return values.astype(np.float32)


def test_distances_equal_scipy_cdist_bit_for_bit():
    first, second = _quantised(400, 3), _quantised(400, 4)
    np.testing.assert_array_equal(evaluation.distances(first, second),
                                  [distance.cdist(a[None], b[None])[0, 0] for a, b in zip(first, second)])
    matrix = distance.cdist(first[:50], second)
    np.testing.assert_array_equal(evaluation.distances(first[:50, None], second[None]), matrix)
    # numpy's pairwise np.sum is not cdist's order: on these rows some distances differ in the last bit
    pairwise = np.sqrt(((first[:50, None].astype(np.float64) - second[None]) ** 2).sum(axis=-1))
    assert (pairwise != matrix).any()


def test_verification_distances_equal_scipy_euclidean_on_float32_rows():
    first = np.concatenate([_quantised(300, 5), np.random.default_rng(6).normal(size=(300, 128)).astype(np.float32)])
    second = np.concatenate([_quantised(300, 7), np.random.default_rng(8).normal(size=(300, 128)).astype(np.float32)])
    measured = evaluation.verification_distances(first, second)
    np.testing.assert_array_equal(measured, [distance.euclidean(a, b) for a, b in zip(first, second)])
    assert len(np.unique(measured[:300])) < len(np.unique(evaluation.distances(first[:300], second[:300])))


def _integer_roots(values):
    roots = np.floor(np.sqrt(values.astype(np.float64))).astype(np.int64)
    roots -= roots * roots > values
    roots += (roots + 1) * (roots + 1) <= values
    return roots


def _midpoint_rows(rows, seed, dimension=128, greedy=12):
    """Pairs of float32 rows whose difference's squares sum exactly to the square of a point half-way
    between two float32 values, the sum above 2^53: the double sum rounds differently in different
    orders, and the order decides the float32 distance (integers: the rows are exact in float32)."""
    rng = np.random.default_rng(seed)
    big = rng.integers(1 << 23, (1 << 24) - (1 << 10), (rows, dimension - greedy))
    total = (big * big).sum(axis=1)
    target = _integer_roots(total) + rng.integers(1 << 18, 1 << 20, rows)
    step = np.left_shift(1, np.floor(np.log2(target)).astype(np.int64) - 23)  # float32 spacing there
    target = target // step * step + step // 2
    remainder, parts = target * target - total, []
    for _ in range(greedy):  # the rest of the sum as a few squares, largest first
        parts.append(_integer_roots(remainder))
        remainder = remainder - parts[-1] ** 2
    values = np.concatenate([big, np.stack(parts, axis=1)], axis=1)[remainder == 0]
    values = np.take_along_axis(values, np.argsort(rng.random(values.shape), axis=1), axis=1)
    values *= rng.choice([-1, 1], values.shape)
    offsets = rng.integers(-(1 << 10) + 1, 1 << 10, values.shape)
    return (values + offsets).astype(np.float32), offsets.astype(np.float32)


@pytest.mark.parametrize("scale", [1.0, 2.0 ** 100, 2.0 ** -140])  # also huge values and float32 subnormals
def test_verification_distances_equal_scipy_euclidean_bit_for_bit_where_the_summation_order_decides(scale):
    near_midpoints = [_midpoint_rows(500, 1), _midpoint_rows(150, 2, 127), _midpoint_rows(150, 3, 130)]
    tied = (_quantised(3000, 11), _quantised(3000, 12))
    for first, second in [*near_midpoints, tied]:
        first, second = first * np.float32(scale), second * np.float32(scale)
        expected = np.array([distance.euclidean(a, b) for a, b in zip(first, second)])
        np.testing.assert_array_equal(evaluation.verification_distances(first, second).view(np.int64),
                                      expected.view(np.int64))
    # The rows decide: summed left to right, or by einsum alone, many distances are a float32 step off.
    first, second = near_midpoints[0]
    difference = first - second
    expected = [distance.euclidean(a, b) for a, b in zip(first, second)]
    in_order = np.add.accumulate(difference.astype(np.float64) ** 2, axis=1)[:, -1]
    by_einsum = np.einsum("ij,ij->i", difference, difference, dtype=np.float64)
    assert (np.sqrt(in_order).astype(np.float32) != expected).sum() > 100
    assert (np.sqrt(by_einsum).astype(np.float32) != expected).sum() > 5


def test_matching_and_retrieval_distances_equal_cdist_where_the_summation_order_decides():
    first, second = _midpoint_rows(300, 4)
    rows = np.concatenate([first, second])
    np.testing.assert_array_equal(evaluation.distances(first, second),
                                  [distance.cdist(a[None], b[None])[0, 0] for a, b in zip(first, second)])
    columns = np.concatenate([rows[::-1], rows[:50]])  # repeated rows: tied minima
    matrix = distance.cdist(rows[:100], columns)
    nearest, nearest_distances = evaluation.nearest_neighbours(rows[:100], columns)
    np.testing.assert_array_equal(nearest[:, 0], matrix.argmin(axis=1))
    np.testing.assert_array_equal(nearest_distances[:, 0], matrix.min(axis=1))


def test_descriptors_whose_summation_order_decides_give_the_benchmarks_numbers():
    first, second = _midpoint_rows(400, 5)
    rows = np.concatenate([first, second]).reshape(4, 200, 128)
    rng = np.random.default_rng(5)
    descriptors = {f"{'iv'[number % 2]}_{number}": {image: rows[number][rng.permutation(200)[:20]]
                                                    for image in hpatches.IMAGES} for number in range(4)}
    _assert_equals_reference(descriptors, *_tasks(descriptors, 5, pairs=1500, queries=30, distractors=50))


@pytest.mark.parametrize("seed", [0, 1])
def test_tie_heavy_quantised_descriptors_give_the_benchmarks_numbers(seed):
    rng = np.random.default_rng(seed)
    descriptors = {}
    for number in range(4):
        base = rng.normal(size=(30, 128))
        descriptors[f"{'iv'[number % 2]}_{number}"] = {
            image: (np.round((base if image == "ref" else base + {"e": .4, "h": .8, "t": 1.2}[image[0]]
                              * rng.normal(size=base.shape)) * 0.8) / 3).astype(np.float32)
            for image in hpatches.IMAGES}
    _assert_equals_reference(descriptors, *_tasks(descriptors, seed, pairs=2000, queries=40, distractors=80))


def test_nearest_neighbours_take_the_first_of_tied_minima():
    first = np.array([[0.0, 0.0], [5.0, 5.0]])
    second = np.array([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [5.0, 5.0]])
    nearest, distance = evaluation.nearest_neighbours(first, second)
    assert nearest[:, 0].tolist() == [0, 2] and distance[:, 0].tolist() == [1.0, 0.0]


def _toy():
    """Two sequences of three 1-D patches; image k of every level is ref shifted by 0.1 * k."""
    descriptors = {}
    for name, offset in (("i_a", 0.0), ("v_b", 100.0)):
        reference = np.array([[0.0], [10.0], [20.0]], np.float32) + offset
        descriptors[name] = {image: reference + (0 if image == "ref" else 0.1 * int(image[1]))
                             for image in hpatches.IMAGES}
    return descriptors


def test_matching_is_perfect_when_each_patch_is_nearest_to_itself():
    results = evaluation.evaluate_matching(_toy(), ["i_a", "v_b"])
    assert results["e"]["i_a"] == [1.0] * 5


def test_matching_counts_wrong_nearest_neighbours_as_misses():
    descriptors = _toy()
    descriptors["i_a"]["e1"] = descriptors["i_a"]["e1"][[1, 0, 2]]  # rows 0 and 1 now match the wrong row
    ap = evaluation.evaluate_matching(descriptors, ["i_a"])["e"]["i_a"][0]
    # All three matches are 0.1 away: the tie keeps input order, so the one correct match (row 2) comes
    # third: recall 0 -> 1/3 while precision goes from ~0 (1e-10 / 2) to 1/3.
    assert ap == pytest.approx((1 / 3) * (1e-10 / 2 + 1 / 3) / 2, abs=1e-15)


def test_verification_separates_near_positives_from_far_negatives():
    descriptors = _toy()
    # Five positive pairs, so that the imbalanced protocol keeps int(0.2 * 5) = 1 positive after the negatives.
    columns = (["i_a", "v_b"] * 3, [0, 1] * 3, [0, 1] * 3, ["i_a", "v_b"] * 3, [1, 2] * 3, [0, 1] * 3)
    pairs = tasks.Pairs(*(np.array(column[:5], dtype=object if n in (0, 3) else np.int64)
                          for n, column in enumerate(columns)))
    intra = tasks.Pairs(pairs.sequences1, pairs.images1, pairs.indices1, pairs.sequences2, pairs.images2,
                        np.array([1, 2, 1, 2, 1]))
    inter = tasks.Pairs(pairs.sequences1, pairs.images1, pairs.indices1,
                        np.array(["v_b", "i_a"] * 2 + ["v_b"], dtype=object), pairs.images2, np.array([0, 1, 0, 1, 0]))
    empty = tasks.Patches(np.array(["i_a"], dtype=object), np.array([0]))
    results = evaluation.evaluate_verification(descriptors, tasks.Tasks("x", pairs, intra, inter, empty, empty))
    assert results["t"]["intra"] == {"balanced": 1.0, "imbalanced": 1.0}
    assert results["e"]["inter"]["balanced"] == 1.0


def test_retrieval_ranks_positives_first_and_skips_the_query_sequence():
    descriptors = _toy()
    queries = tasks.Patches(np.array(["i_a"], dtype=object), np.array([0]))
    # distractors from the query's own sequence (which would be closer) are left out
    distractors = tasks.Patches(np.array(["i_a", "v_b", "v_b"], dtype=object), np.array([0, 0, 1]))
    task_lists = tasks.Tasks("x", None, None, None, queries, distractors)
    results = evaluation.evaluate_retrieval(descriptors, task_lists, pool_sizes=(6, 100))
    assert results["e"][6].tolist() == [1.0] and results["t"][100].tolist() == [1.0]


def test_summary_numbers_follow_seed_004():
    descriptors = _descriptors()
    split, task_lists = _tasks(descriptors)
    results = evaluation.evaluate(descriptors, task_lists, split.test)
    imbalanced = [results["verification"][level][kind]["imbalanced"] for level in "eht" for kind in ("intra", "inter")]
    assert results["summary"]["verification"] == pytest.approx(np.mean(imbalanced))
    assert results["summary"]["matching"] == pytest.approx(np.mean(list(results["matching"].values())))
    level_means = [np.mean([results["retrieval"][level][pool] for level in "eht"])
                   for pool in results["retrieval"]["e"]]
    assert results["summary"]["retrieval"] == pytest.approx(np.mean(level_means))
    assert set(results["retrieval"]["e"]) == {str(size) for size in evaluation.POOL_SIZES}
    assert "summary" in evaluation.format_table(results)


def test_generated_tasks_follow_the_benchmark_rules():
    descriptors = _descriptors(sequences=3, patches=10)
    _, task_lists = _tasks(descriptors, pairs=500, queries=15, distractors=20)
    positives, intra = task_lists.positives, task_lists.intra
    assert (positives.indices1 == positives.indices2).all() and (positives.sequences1 == positives.sequences2).all()
    assert (intra.indices1 != intra.indices2).all() and (positives.images1 != positives.images2).all()
    assert positives.images1.max() <= 4 and positives.images2.max() <= 4
    queries = set(zip(task_lists.queries.sequences, task_lists.queries.indices))
    distractors = list(zip(task_lists.distractors.sequences, task_lists.distractors.indices))
    assert len(queries) == 15 and not queries & set(distractors) and len(set(distractors)) == len(distractors)
    again = _tasks(descriptors, pairs=500, queries=15, distractors=20)[1]
    np.testing.assert_array_equal(again.inter.indices2, task_lists.inter.indices2)


def test_task_files_round_trip_and_unknown_sequences_are_named(tmp_path):
    descriptors = _descriptors(sequences=2, patches=8)
    _, task_lists = _tasks(descriptors, pairs=50, queries=4, distractors=4)
    tasks.write_tasks(tmp_path, task_lists)
    counts = dict.fromkeys(descriptors, 8)
    read = tasks.read_tasks(tmp_path, "x", counts)
    np.testing.assert_array_equal(read.intra.indices2, task_lists.intra.indices2)
    with pytest.raises(DeepRestoreError, match="unknown sequence 'i_0'"):
        tasks.read_tasks(tmp_path, "x", {"v_1": 8})


def test_descriptor_csv_export_round_trips_exactly(tmp_path):
    descriptors = _descriptors(sequences=2, patches=5, dimension=7)
    export.save_descriptors(tmp_path / "mine", descriptors)
    assert (tmp_path / "mine" / "i_0" / "t5.csv").read_text().count("\n") == 5
    loaded = export.load_descriptors(tmp_path / "mine")
    for sequence in descriptors:
        for image in hpatches.IMAGES:
            np.testing.assert_array_equal(loaded[sequence][image], descriptors[sequence][image])


def test_missing_descriptor_files_are_named(tmp_path):
    export.save_descriptors(tmp_path / "mine", _descriptors(sequences=1, patches=3))
    (tmp_path / "mine" / "i_0" / "h2.csv").unlink()
    with pytest.raises(DeepRestoreError, match=r"h2.csv' is missing"):
        export.load_descriptors(tmp_path / "mine")


@pytest.mark.parametrize("text", [
    "s,idx\r\ni_0,3\r\nv_astronautis,12\r\n",  # the csv module's line ends; a name longer than 8 bytes
    "s,idx\ni_0,-1\nv_1,007\ni_0,12345678\n",  # the plain reader's integers: signed, leading zeros
    "s,idx\ni_0,3\nv_1,4",  # no final newline
    "s,idx\n",  # no rows
])
def test_plain_task_files_are_read_as_the_csv_module_reads_them(text):
    data = text.encode()
    plain = tasks._plain_columns(data, tasks.PATCH_COLUMNS)
    assert plain is not None
    by_csv = [np.array(column) for column in zip(*list(csv.reader(text.splitlines()))[1:])] or [[], []]
    np.testing.assert_array_equal(plain[0], np.asarray(by_csv[0], str))
    np.testing.assert_array_equal(plain[1], np.asarray(by_csv[1], np.int64))
    assert plain[0].dtype.kind == "U" and plain[1].dtype == np.int64


@pytest.mark.parametrize("line, message", [
    ("i_0,x", "'x' in column idx is not an integer"), ("i_0,1-", "'1-' in column idx is not an integer"),
    ("i_0,1,2", "line 3 has 3 fields; expected 2"), ("i_0, 1", None), ('"i_0",1', None), ("i_0,123456789", None),
    ("i_9,1", "unknown sequence 'i_9'"), ("i_0,8", "asks for patch 8 of 'i_0'"),
])
def test_task_files_the_plain_reader_refuses_are_read_or_named_by_the_csv_module(tmp_path, line, message):
    (tmp_path / "retr_queries_split-x.csv").write_text(f"s,idx\ni_0,2\n{line}\n")
    if message is None:  # refused by the plain reader, read by the csv module
        assert tasks._plain_columns((tmp_path / "retr_queries_split-x.csv").read_bytes(), tasks.PATCH_COLUMNS) is None
        assert tasks._read_csv(tmp_path / "retr_queries_split-x.csv", tasks.PATCH_COLUMNS)[1][1] in (1, 123456789)
        return
    with pytest.raises(DeepRestoreError, match=message):
        columns = tasks._read_csv(tmp_path / "retr_queries_split-x.csv", tasks.PATCH_COLUMNS)
        tasks._check(tmp_path / "retr_queries_split-x.csv", *columns, {"i_0": 8})


@pytest.mark.parametrize("values, fmt, fast", [
    (np.round(np.random.default_rng(0).normal(size=(30, 16)) * 6) / 4, "%.9g", True),  # quantised
    (np.random.default_rng(1).integers(0, 256, (30, 16)), "%d", True),  # SIFT-like integers
    (np.random.default_rng(2).normal(size=(30, 16)), "%.9g", False),  # long tokens: np.loadtxt
    (np.random.default_rng(3).integers(-3, 4, (30, 16)) * 1e-7, "%.1e", True),  # exponents
])
def test_descriptor_files_are_read_exactly_as_loadtxt_reads_them(tmp_path, values, fmt, fast):
    for line_end, delimiter in (("\n", ","), ("\r\n", ";")):
        path = tmp_path / "ref.csv"
        np.savetxt(path, values, fmt=fmt, delimiter=delimiter, newline=line_end)
        read = export.read_descriptor_file(path, rows=30)
        expected = np.loadtxt(path, delimiter=delimiter, ndmin=2).astype(np.float32)
        np.testing.assert_array_equal(read.view(np.int32), expected.view(np.int32))  # -0 stays -0
    assert (export._repeated_numbers(path.read_bytes(), ";") is not None) == fast


@pytest.mark.parametrize("text, message", [
    ("1,2\n3\n", "not numeric CSV"), ("1,,2\n3,4,5\n", "not numeric CSV"), ("1e,2\n3,4\n", "not numeric CSV"),
    ("1,2\n3,nan\n5,6\n", "holds nan"), ("1,1e400\n3,4\n5,6\n", "holds inf"),
    ("1,2\n\n3,4\n", "has 2 rows; expected 3"),
])
def test_malformed_descriptor_files_fall_back_to_loadtxt_and_its_errors(tmp_path, text, message):
    path = tmp_path / "e1.csv"
    path.write_text(text)
    with pytest.raises(DeepRestoreError, match=message):
        export.read_descriptor_file(path, rows=3)


def _decimals(rng, count):
    """Decimal tokens that test a parser's rounding: float32 values with 9 digits, float64 ones with 17
    (subnormals of both included), float32 rounding midpoints exactly and one float64 step either side,
    integers, signs and fixed edge cases."""
    singles = rng.standard_normal(count).astype(np.float32) * np.float32(10.0) ** rng.integers(-45, 37, count)
    doubles = rng.standard_normal(count) * 10.0 ** rng.integers(-325, 38, count)
    low = np.abs(rng.standard_normal(count).astype(np.float32)) * np.float32(10.0) ** rng.integers(-40, 37, count)
    middles = (low.astype(np.float64) + np.nextafter(low, np.float32(np.inf)).astype(np.float64)) / 2
    tokens = [f"{value:.9g}" for value in singles] + [f"{value:.17g}" for value in doubles]
    tokens += [repr(float(value)) for value in (*middles, *np.nextafter(middles, 0), *np.nextafter(middles, np.inf))]
    tokens += [str(value) for value in rng.integers(-10**18, 10**18, count)]
    tokens += ["1e-45", "-1.4e-45", "7e-46", "3.4e38", "-3.40282346e38", "1e-310", "4.9e-324", "1e-400", "-0", "-0.0",
               "+0", "+1.5", "+.5e-3", "1E5", "1e+05", "00012", ".5", "5.", "9007199254740993",
               "1.00000000000000000000000000000000000001", "123456789012345678901234567890"]
    rng.shuffle(tokens)
    return tokens


@pytest.mark.parametrize("delimiter, line_end", [(",", "\n"), (";", "\r\n"), ("\t", "\n")])
def test_pyarrow_reads_float_descriptor_files_bit_for_bit_as_loadtxt(tmp_path, delimiter, line_end):
    pytest.importorskip("pyarrow.csv")
    tokens = _decimals(np.random.default_rng(len(line_end) + ord(delimiter)), 1500)
    columns = 16
    rows = [delimiter.join(tokens[start:start + columns]) for start in range(0, len(tokens) - columns + 1, columns)]
    path = tmp_path / "ref.csv"
    path.write_bytes((line_end.join(rows) + line_end).encode())
    read = export._arrow_numbers(path.read_bytes(), delimiter)
    assert read is not None  # pyarrow read it
    expected = np.loadtxt(path, delimiter=delimiter, ndmin=2, dtype=np.float64, comments=None).astype(np.float32)
    np.testing.assert_array_equal(read.view(np.int32), expected.view(np.int32))  # -0 and subnormals too
    np.testing.assert_array_equal(export.read_descriptor_file(path, rows=len(rows)).view(np.int32),
                                  expected.view(np.int32))


def _read_or_refuse(path):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # 4e38 is inf as float32
            return export.read_descriptor_file(path, rows=3)
    except DeepRestoreError as error:
        return str(error)


@pytest.mark.parametrize("text", [
    "1,nan\n3,4\n5,6\n", "1,NaN\n3,4\n5,6\n", "1,2\n3,inf\n5,6\n", "1,-Infinity\n3,4\n5,6\n", "1,1e400\n3,4\n5,6\n",
    "1,4e38\n3,4\n5,6\n", "1,,2\n3,4,5\n6,7,8\n", "1,2,\n3,4,\n5,6,\n", '"1",2\n3,4\n5,6\n', "a,b\n1,2\n3,4\n",
    "e,E\n1,2\n3,4\n", "\ufeff1,2\n3,4\n5,6\n", "1, 2\n3,4\n5,6\n", "1,2 \n3,4\n5,6\n", "1,2\r3,4\r5,6\r",
    "1,2\n3\n5,6\n", "1,2\n3,4,5\n6,7\n", "1e,2\n3,4\n5,6\n", "1,2\n\n3,4\n", "\n1,2\n3,4\n5,6\n", "1,2\n3,4\n5,6",
    "0x1,2\n3,4\n5,6\n", "1_0,2\n3,4\n5,6\n", "--1,2\n3,4\n5,6\n", "1,\u0662\n3,4\n5,6\n", "1\n2\n3\n", "",
    "1.5,2.5\n3.5,4.5\n5.5,6.5\n", "0.123456789,-1.23456789e-05\r\n+3.5,.5\r\n-0,1e-310\r\n",
])
def test_pyarrow_accepts_nothing_loadtxt_refuses_and_reads_alike(tmp_path, monkeypatch, text):
    path = tmp_path / "e1.csv"
    path.write_bytes(text.encode())
    by_arrow = export._arrow_numbers(path.read_bytes(), ",")  # None where pyarrow is not installed
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64, comments=None).astype(np.float32)
    except ValueError:
        assert by_arrow is None  # what np.loadtxt refuses, pyarrow is never given to read
    else:
        assert by_arrow is None or by_arrow.view(np.int32).tolist() == expected.view(np.int32).tolist()
    with_pyarrow = _read_or_refuse(path)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError: np.loadtxt reads
    assert export._arrow_numbers(path.read_bytes(), ",") is None
    without = _read_or_refuse(path)
    if isinstance(without, str):
        assert with_pyarrow == without and without.startswith(f"Descriptor file '{path}'")
    else:
        np.testing.assert_array_equal(with_pyarrow.view(np.int32), without.view(np.int32))
