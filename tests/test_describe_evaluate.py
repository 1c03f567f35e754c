"""`describe evaluate` without Keras: descriptor files checked one line per fault, any split, any
delimiter, built-in baselines, and every number the benchmark reports."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from deeprestore.cli import cli
from deeprestore.descriptors import baselines, evaluation, export, hpatches, synthetic
from deeprestore.errors import DeepRestoreError
from deeprestore.recipes import describe_evaluate

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMALL = synthetic.SyntheticSpec(photos=("camera", "coffee"), count=12, size=160, seed=0)
COUNT = SMALL.count


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return synthetic.synthesize(tmp_path_factory.mktemp("data") / "synthetic", SMALL)


@pytest.fixture(scope="module")
def raw_folder(dataset, tmp_path_factory):
    """raw16 descriptors of every sequence as a CSV folder in the benchmark's layout."""
    names = hpatches.sequence_names(dataset)
    described = describe_evaluate.describe_with_baseline("raw16", hpatches.load_dataset(dataset, names), names)
    return export.save_descriptors(tmp_path_factory.mktemp("descriptors") / "raw", described)


def _invoke(tmp_path, *arguments):
    result = CliRunner().invoke(cli, ["--runs", str(tmp_path / "runs"), "--quiet", "describe", "evaluate",
                                      "--pairs", "200", "--queries", "10", *arguments], catch_exceptions=False)
    return result, pathlib.Path(result.output.strip().splitlines()[-1]) if result.exit_code == 0 else None


def _copy(folder, destination):
    import shutil

    return pathlib.Path(shutil.copytree(folder, destination))


def test_raw16_is_zero_mean_unit_norm_16x16():
    patches = np.random.default_rng(0).integers(0, 256, (5, 32, 32), dtype=np.uint8)
    values = baselines.raw16(patches)
    assert values.shape == (5, 256)
    np.testing.assert_allclose(values.mean(axis=1), 0, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(values, axis=1), 1, atol=1e-6)
    assert not baselines.raw16(np.full((1, 32, 32), 7, np.uint8)).any()  # a flat patch has no direction


def test_sift_describes_each_patch_on_its_own():
    rng = np.random.default_rng(1)
    patches = rng.integers(0, 256, (3, 32, 32), dtype=np.uint8)
    together = baselines.sift(patches)
    assert together.shape == (3, 128)
    np.testing.assert_array_equal(together[1], baselines.sift(patches[1:2])[0])  # neighbours in the mosaic don't leak
    assert not np.array_equal(together[0], together[1])


def test_csv_evaluation_never_imports_a_keras_backend(dataset, raw_folder, tmp_path):
    arguments = ["--runs", str(tmp_path / "runs"), "--quiet", "describe", "evaluate", "--data", str(dataset),
                 "--pairs", "200", "--queries", "10", "--descriptors", str(raw_folder)]
    code = ("import sys\nfrom deeprestore.cli import cli\n"
            f"try:\n    cli({arguments!r}, standalone_mode=False)\n"
            "finally:\n    print('loaded:', sorted({'keras', 'tensorflow', 'jax'} & set(sys.modules)))\n")
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                               env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)})
    assert completed.returncode == 0, completed.stderr
    assert "loaded: []" in completed.stdout
    run = pathlib.Path(completed.stdout.splitlines()[0])
    assert json.loads((run / "config.json").read_text())["backend"] is None


def test_results_hold_success_rates_per_query_aps_and_counts_beside_the_baselines(dataset, raw_folder, tmp_path):
    result, run = _invoke(tmp_path, "--data", str(dataset), "--descriptors", str(raw_folder), "--baseline", "raw16",
                          "--baseline", "sift")
    assert result.exit_code == 0, result.output
    results = json.loads((run / "results.json").read_text())
    assert set(results) == {"raw16", "sift", "raw"}
    # the CSV folder of raw16 descriptors scores exactly like the built-in raw16
    assert results["raw"]["summary"] == results["raw16"]["summary"]
    entry = results["sift"]
    split = hpatches.resolve_split(dataset, "a")
    assert set(entry["matching_success_by_sequence"]["e"]) == set(split.test)
    assert all(len(rates) == 5 and all(0 <= rate <= 1 for rate in rates)
               for rates in entry["matching_success_by_sequence"]["h"].values())
    assert entry["matching_success_mean"] == pytest.approx(np.mean(list(entry["matching_success"].values())))
    assert entry["counts"]["queries"] == len(entry["retrieval_by_query"]["t"]["100"]) > 0
    assert entry["counts"]["patches"] == COUNT * len(split.test) and entry["counts"]["dimension"] == 128
    assert np.mean(entry["retrieval_by_query"]["e"]["500"]) == pytest.approx(entry["retrieval"]["e"]["500"])
    text = (run / "results.txt").read_text()
    assert "success rate" in text and "matching by sequence" in text and "descriptor    verification" in text


def test_evaluation_reports_success_rates_like_the_benchmark():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import hpatches_reference as reference

    rng = np.random.default_rng(0)
    descriptors = {f"i_{n}": {image: np.round(rng.normal(size=(20, 16)) * 0.7).astype(np.float32)
                              for image in hpatches.IMAGES} for n in range(2)}
    aps, rates = evaluation.evaluate_matching(descriptors, list(descriptors), success_rates=True)
    expected_aps, expected_rates = reference.matching(descriptors, list(descriptors), success=True)
    assert rates == expected_rates
    for level in aps:
        for sequence in aps[level]:
            assert aps[level][sequence] == pytest.approx(expected_aps[level][sequence], abs=1e-12)


def test_a_split_from_the_benchmarks_task_folder_is_evaluated(dataset, raw_folder, tmp_path):
    test = hpatches.sequence_names(dataset)[:3]
    (tmp_path / "tasks" / "splits").mkdir(parents=True)
    (tmp_path / "tasks" / "splits" / "splits.json").write_text(json.dumps({"mine": {"name": "mine", "test": test}}))
    result, run = _invoke(tmp_path, "--data", str(dataset), "--tasks", str(tmp_path / "tasks"), "--split", "mine",
                          "--descriptors", str(raw_folder))
    assert result.exit_code == 0, result.output
    assert json.loads((run / "results.json").read_text())["raw"]["counts"]["sequences"] == 3
    result, _ = _invoke(tmp_path, "--data", str(dataset), "--tasks", str(tmp_path / "tasks"), "--split", "b",
                        "--descriptors", str(raw_folder))
    assert result.exit_code == 1 and "Unknown split 'b'" in result.output and "expected one of mine" in result.output


@pytest.mark.parametrize("delimiter, option", [(";", None), (";", ";"), ("\t", None), (" ", None)])
def test_descriptor_files_with_other_delimiters_give_the_same_numbers(raw_folder, tmp_path, delimiter, option):
    folder = _copy(raw_folder, tmp_path / "other")
    for path in folder.rglob("*.csv"):
        path.write_text(path.read_text().replace(",", delimiter))
    loaded = export.load_descriptors(folder, delimiter=option)
    original = export.load_descriptors(raw_folder)
    for sequence in original:
        np.testing.assert_array_equal(loaded[sequence]["t3"], original[sequence]["t3"])


def _spoil(path, how):
    rows = path.read_text().splitlines()
    if how == "short":
        rows = rows[:-2]
    elif how == "long":
        rows = rows + rows[:2]
    elif how == "nan":
        rows[3] = "nan" + rows[3][rows[3].index(","):]
    elif how == "inf":
        rows[0] = rows[0].rsplit(",", 1)[0] + ",inf"
    elif how == "empty":
        rows = []
    elif how == "narrow":
        rows = [row.rsplit(",", 1)[0] for row in rows]
    elif how == "ragged":
        rows[1] = rows[1].rsplit(",", 1)[0]
    elif how == "text":
        rows[2] = "x" + rows[2]
    path.write_text("\n".join(rows) + ("\n" if rows else ""))


@pytest.mark.parametrize("how, message", [
    ("short", f"has {COUNT - 2} rows; expected {COUNT}"),
    ("long", f"has {COUNT + 2} rows; expected {COUNT}"),
    ("nan", "holds nan at row 4, column 1"),
    ("inf", "holds inf at row 1, column 256"),
    ("empty", f"is empty; expected {COUNT} row"),
    ("narrow", "has 255 values per row; expected 256"),
    ("ragged", "is not numeric CSV"),
    ("text", "is not numeric CSV"),
])
def test_every_malformed_descriptor_file_is_a_one_line_error_naming_it(dataset, raw_folder, tmp_path, how, message):
    folder = _copy(raw_folder, tmp_path / "bad")
    name = hpatches.resolve_split(dataset, "a").test[1]
    _spoil(folder / name / "h2.csv", how)
    result, _ = _invoke(tmp_path, "--data", str(dataset), "--descriptors", str(folder))
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = [line for line in result.output.splitlines() if line.strip()]
    assert line.startswith("Error: Descriptor file") and f"{name}/h2.csv" in line and message in line


def test_a_wrong_delimiter_is_named_in_one_line(raw_folder, tmp_path):
    folder = _copy(raw_folder, tmp_path / "semicolons")
    for path in folder.rglob("*.csv"):
        path.write_text(path.read_text().replace(",", ";"))
    with pytest.raises(DeepRestoreError, match=r"not numeric CSV separated by ','.*--delimiter") as caught:
        export.load_descriptors(folder, delimiter=",")
    assert len(str(caught.value)) < 400  # not the whole row
    for path in folder.rglob("*.csv"):
        path.write_text("\n".join(row.split(";")[0] for row in path.read_text().splitlines()))
    with pytest.raises(DeepRestoreError, match=r"1 value per row when split at spaces.*--delimiter"):
        export.load_descriptors(folder)


def test_patch_counts_come_from_the_png_headers(dataset):
    names = hpatches.sequence_names(dataset)
    assert hpatches.patch_counts(dataset, names) == dict.fromkeys(names, COUNT)
