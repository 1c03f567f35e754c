"""The reproduction runner (`experiments/repro.py`): specs, placeholders, reports, reuse of runs."""

import importlib.util
import json
import pathlib

import click
import pytest

from deeprestore.cli import cli

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def repro():
    spec = importlib.util.spec_from_file_location("repro", REPOSITORY / "experiments" / "repro.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _command(arguments):
    """The click command `arguments` names, and the arguments left for it (nested groups resolved)."""
    command, rest = cli, list(arguments)
    while isinstance(command, click.Group):
        name, rest = rest[0], rest[1:]
        assert name in command.commands, f"unknown command {name!r}"
        command = command.commands[name]
    return command, rest


@pytest.mark.parametrize("scale", ["cpu", "full"])
def test_every_spec_names_real_commands_and_options(repro, scale, tmp_path):
    values = {name: f"<{name}>" for name in repro.VARIABLES}
    for name in repro.spec_names():
        spec = repro.load_spec(name)
        done = {}
        for run in spec["runs"]:
            argv = repro.arguments(run, scale, values, tmp_path, done)
            done[run["label"]] = repro.Result(run["label"], argv, tmp_path, 0.0, {}, (), None)
            command, rest = _command(argv)
            options = {option for parameter in command.params for option in parameter.opts + parameter.secondary_opts}
            unknown = [word for word in rest if word.startswith("--") and word not in options]
            assert not unknown, f"{name}, run {run['label']!r}: unknown options {unknown}"


def test_missing_full_scale_data_is_named(repro, tmp_path):
    run = {"label": "descriptor", "args": ["describe", "train"], "full": ["--data", "{hpatches}"]}
    values = {name: defaults["full"] for name, defaults in repro.VARIABLES.items()}
    with pytest.raises(repro.ReproError, match="needs --set hpatches="):
        repro.arguments(run, "full", values, tmp_path, {})


def test_unknown_reproduction_and_bad_settings(repro):
    with pytest.raises(repro.ReproError, match="Unknown reproduction 'nope'"):
        repro.load_spec("nope")
    with pytest.raises(repro.ReproError, match="expected NAME=VALUE"):
        repro.parse_settings(["weights"])


def test_image_patterns_by_scale_are_checked(repro, tmp_path, monkeypatch):
    assert repro.image_patterns({"cpu": ["block1_pool.png"], "full": ["pool1.png"]}, "full") == ["pool1.png"]
    assert repro.image_patterns(["dream.png"], "cpu") == ["dream.png"]
    monkeypatch.setattr(repro, "SPECS", tmp_path)
    (tmp_path / "bad.yaml").write_text("title: t\nseed: '002'\nruns: [{label: a, args: [dream]}]\n"
                                       "report: {images: {gpu: [a.png]}}\n")
    with pytest.raises(repro.ReproError, match=r"images by scale \['gpu'\]; expected keys among \['cpu', 'full'\]"):
        repro.load_spec("bad")


def test_values_from_json_and_csv(repro, tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"mean": {"psnr": 21.5}, "rows": [{"psnr": 1}, {"psnr": 2}]}))
    (tmp_path / "norms.csv").write_text("step,layer,norm\n1,a,3\n2,a,5\n3,a,4\n")
    assert repro.value(tmp_path, "metrics.json:mean.psnr") == 21.5
    assert repro.value(tmp_path, "metrics.json:rows.1.psnr") == 2
    assert [repro.value(tmp_path, f"norms.csv:norm:{row}") for row in ("first", "last", "min", "max")] == [3, 4, 3, 5]
    assert repro.value(tmp_path, "norms.csv:norm") == 4
    with pytest.raises(repro.ReproError, match=r"has no key 'mean.ssim'"):
        repro.value(tmp_path, "metrics.json:mean.ssim")
    with pytest.raises(repro.ReproError, match=r"validation.csv not found; expected a CSV with a column 'value'"):
        repro.column_values(tmp_path / "validation.csv", "value")
    # Curves run along the logged steps where they rise, else along the rows.
    (tmp_path / "validation.csv").write_text("step,value\n50,3\n100,2\n")
    assert list(repro._steps(repro.csv_rows(tmp_path / "validation.csv", "step"))) == [50, 100]
    assert list(repro._steps(repro.csv_rows(tmp_path / "norms.csv", "step"))) == [1, 2, 3]
    (tmp_path / "stages.csv").write_text("step,norm\n1,3\n2,5\n1,4\n")
    assert list(repro._steps(repro.csv_rows(tmp_path / "stages.csv", "step"))) == [1, 2, 3]


def test_an_expectation_may_compare_two_columns_of_one_run(repro):
    spec = {"report": {"expect": [{"left": "DnCNN", "op": ">", "right": "DnCNN", "column": "model",
                                   "right_column": "bm3d", "says": "the model beats BM3D"}]}}
    header = ["run", "model", "bm3d"]
    assert repro.expectations(spec, header, [["DnCNN", 29.5, 29.0]]) == [
        ("the model beats BM3D", "agrees", "model 29.5 vs bm3d 29, DnCNN")]
    assert repro.expectations(spec, header, [["DnCNN", 28.5, 29.0]])[0][1] == "does not agree"


def test_the_dncnn_reproduction_compares_dncnn_with_bm3d_in_its_own_run(repro):
    spec = repro.load_spec("seed004-dncnn-paper")
    (expectation,) = spec["report"]["expect"]
    assert expectation["left"] == expectation["right"] == "DnCNN"
    assert spec["report"]["table"][expectation["right_column"]] == "curves/baselines.json:methods.bm3d.psnr"


TINY_SPEC = """
title: Tiny dreams at two step sizes
seed: "003"
figures: figure 2
claim: Larger steps raise the norm faster.
runs:
  - label: small
    args: [dream, --network, tiny, --image, camera, --size, 48, --octaves, 1, --steps, 3, --step-size, 0.001,
           --layer, "{layer}"]
  - label: large
    args: [dream, --network, tiny, --image, camera, --size, 48, --octaves, 1, --steps, 3, --step-size, 0.05,
           --layer, "{layer}"]
report:
  table:
    final norm: norms.csv:norm:last
  expect:
    - {left: large, op: ">", right: small, column: final norm, says: "larger steps raise the norm faster"}
  images: {cpu: [dream.png], full: [tiny-full-scale.png]}
  curves:
    - {title: L2 norm, files: [norms.csv], y: norm}
"""


def test_a_reproduction_runs_reports_and_reuses_its_runs(repro, tmp_path, monkeypatch):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "tiny-steps.yaml").write_text(TINY_SPEC)
    monkeypatch.setattr(repro, "SPECS", specs)
    monkeypatch.setitem(repro.VARIABLES, "layer", {"cpu": "conv2", "full": None})
    out = tmp_path / "out"
    assert repro.main(["tiny-steps", "--out", str(out)]) == 0
    folder = out / "tiny-steps"
    report = (folder / "report.md").read_text()
    assert "| small |" in report and "| large |" in report
    assert "Ours: agrees" in report
    for name in ("figure.png", "curves-1.png", "table.csv", "small-dream.png"):
        assert (folder / name).is_file()
    ledger = json.loads((folder / "runs.json").read_text())
    assert set(ledger) == {"small", "large"}

    # A second invocation reuses the complete runs; a changed argument reruns only that run.
    before = {label: entry["path"] for label, entry in ledger.items()}
    assert repro.main(["all", "--out", str(out)]) == 0
    assert "| 1 of 1 agree |" in (out / "index.md").read_text()
    assert {label: entry["path"] for label, entry in json.loads((folder / "runs.json").read_text()).items()} == before
    (specs / "tiny-steps.yaml").write_text(TINY_SPEC.replace("0.05", "0.04"))
    assert repro.main(["tiny-steps", "--out", str(out)]) == 0
    after = {label: entry["path"] for label, entry in json.loads((folder / "runs.json").read_text()).items()}
    assert after["small"] == before["small"] and after["large"] != before["large"]


def test_a_failing_run_names_its_log(repro, tmp_path, monkeypatch, capsys):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "broken.yaml").write_text(TINY_SPEC.replace('"{layer}"', "no_such_layer"))
    monkeypatch.setattr(repro, "SPECS", specs)
    assert repro.main(["broken", "--out", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert "run 'small' failed with exit code 1" in error and "no_such_layer" in error
    assert not (tmp_path / "out" / "broken" / "report.md").exists()
