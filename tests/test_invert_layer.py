"""Inversion to an intermediate layer: the cut segment, the loss, the statistics, the figure and the CLI."""

import json
import pathlib

import numpy as np
import pytest
from click.testing import CliRunner

from deeprestore.cli import cli
from deeprestore.errors import DeepRestoreError
from deeprestore.figures import activation_figure
from deeprestore.images import save_image
from deeprestore.optimise import Engine, Progress, optimise
from deeprestore.probes import FeatureProbe, SegmentProbe
from deeprestore.recipes import invert
from deeprestore.recipes import invert_layer as recipe


def invoke(tmp_path, *arguments):
    return CliRunner().invoke(cli, ["--runs", str(tmp_path / "runs"), "--quiet", *arguments])


def test_a_segment_computes_what_the_whole_network_computes(tiny, rng):
    images = rng.uniform(size=(2, 16, 16, 3)).astype(np.float32)
    features = FeatureProbe(tiny, ("relu1", "relu2")).features(images)
    segment = SegmentProbe(tiny, "relu1", ("relu2",), scale=2.0)
    outputs = segment(features["relu1"] / 2.0)
    np.testing.assert_allclose(np.asarray(outputs["relu1"]), features["relu1"], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(outputs["relu2"]), features["relu2"], rtol=1e-5, atol=1e-6)
    assert segment.layers == ("relu1", "relu2")


def test_a_segment_refuses_layers_below_its_source(tiny):
    with pytest.raises(ValueError, match="do not come after 'relu2'"):
        SegmentProbe(tiny, "relu2", ("conv1",))


def test_a_few_steps_lower_the_loss_on_the_intermediate_tensor(tiny, rng):
    images = rng.uniform(size=(2, 16, 16, 3)).astype(np.float32)
    features = FeatureProbe(tiny, ("pool1", "relu2")).features(images)
    statistics = recipe.layer_statistics(tiny, "pool1", (16, 16))
    chosen = invert.preset("mv2016", tiny, "relu2")
    probe = SegmentProbe(tiny, "pool1", ("relu2",), scale=statistics.unit)
    engine = Engine(invert.inversion_objective("relu2", chosen, 64, "pool1", statistics.norm), probe)
    targets = {"feature.relu2": features["relu2"]}
    start = rng.uniform(size=features["pool1"].shape).astype(np.float32)
    before = engine(start, targets)[0]
    result, values = optimise(engine, start, 10, invert.step_rule_for(chosen, 10),
                              callbacks=[recipe.layer_constraint(statistics, True), Progress(show=False)],
                              targets=targets)
    assert result.shape == features["pool1"].shape and values["total"] < before
    assert set(values) >= {"feature.relu2", "alpha_norm.pool1", "tv.pool1"}


def test_statistics_and_the_constraint_respect_the_layer_range(tiny):
    statistics = recipe.layer_statistics(tiny, "relu1", (16, 16))
    assert statistics.non_negative and statistics.norm > 0 and statistics.unit > 0
    assert not recipe.layer_statistics(tiny, "conv1", (16, 16)).non_negative
    variables = np.random.default_rng(0).normal(0, 100, (1, 4, 4, 8)).astype(np.float32)
    projected = recipe.layer_constraint(statistics, True)(variables, 0)
    assert projected.min() >= 0
    assert np.linalg.norm(projected, axis=-1).max() <= 2 * statistics.norm / statistics.unit + 1e-4


def test_normalised_errors_match_the_formula():
    targets = np.array([[1.0, 2.0], [0.0, 3.0]])
    values = np.array([[1.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(recipe.normalised_errors(values, targets), [4 / 5, 1.0])


def test_the_activation_figure_has_a_true_and_a_reconstructed_row_per_image(rng):
    true = rng.uniform(size=(2, 8, 8, 5)).astype(np.float32)
    figure = activation_figure(true, true * 0.5, channels=3, smallest=16)
    assert figure.shape == (4 * 16 + 3 * 2, 3 * 16 + 2 * 2, 3)
    with pytest.raises(ValueError, match="expected equal shapes"):
        activation_figure(true, true[:, :4])


@pytest.mark.parametrize(
    "to, layer, message",
    [("nothing", "relu2", "--to: Unknown layer 'nothing'"), ("relu2", "relu2", "--to 'relu2' is not below"),
     ("pool2", "relu2", "expected one of the layers before it: preprocess, conv1, relu1, pool1, conv2.")],
)
def test_a_to_layer_that_is_unknown_or_not_below_is_refused(tiny, to, layer, message):
    with pytest.raises(DeepRestoreError, match=message.replace(".", r"\.")):
        recipe.source_layer(tiny, to, layer)


def test_invert_to_a_layer_writes_tensors_figure_and_metrics(tmp_path):
    result = invoke(tmp_path, "invert", "--network", "tiny", "--layer", "relu2", "--to", "pool1", "--size", "16",
                    "--steps", "4", "--images", "chelsea")
    assert result.exit_code == 0, result.output
    run = pathlib.Path(result.output.strip().splitlines()[-1])
    assert (run / "status").read_text().strip() == "complete" and (run / "figure.png").exists()
    assert np.load(run / "outputs" / "000_chelsea.npy").shape == (8, 8, 8)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["layer"] == "relu2" and metrics["to"] == "pool1"
    assert metrics["feature_error"] >= 0 and metrics["activation_error"] >= 0
    assert [item["image"] for item in metrics["per_image"]] == ["000_chelsea"]
    config = json.loads((run / "config.json").read_text())
    assert config["settings"]["to"] == "pool1" and config["statistics"]["non_negative"] is True


@pytest.mark.parametrize(
    "arguments, message",
    [(("--to", "relu2"), "--to 'relu2' is not below the inverted layer 'relu2'"),
     (("--to", "conv9"), "--to: Unknown layer 'conv9'"),
     (("--method", "deconvnet", "--to", "relu1"), "--to applies to --method optimise only")],
)
def test_the_command_refuses_a_bad_to_layer(tmp_path, arguments, message):
    result = invoke(tmp_path, "invert", "--network", "tiny", "--layer", "relu2", "--size", "16", "--steps", "2",
                    *arguments)
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_shards_of_a_named_run_to_a_layer_skip_what_is_complete(tmp_path):
    folder = tmp_path / "inputs"
    for index in range(3):
        save_image(folder / f"image{index}.png", np.full((16, 16, 3), (index + 1) / 4, np.float32))
    arguments = ("invert", "--network", "tiny", "--layer", "relu2", "--to", "pool1", "--size", "16", "--steps", "2",
                 "--images", str(folder), "--name", "job")
    for index in range(2):
        result = invoke(tmp_path, *arguments, "--shard", f"{index}/2")
        assert result.exit_code == 0, result.output
    run = pathlib.Path(result.output.strip().splitlines()[-1])
    assert sorted(path.name for path in (run / "outputs").iterdir()) == ["000_image0.npy", "001_image1.npy",
                                                                         "002_image2.npy"]
    shard = json.loads((run / "shards" / "1-of-2" / "metrics.json").read_text())
    assert [item["image"] for item in shard["per_image"]] == ["001_image1"]
    result = CliRunner().invoke(cli, ["--runs", str(tmp_path / "runs"), *arguments, "--shard", "0/2"])
    assert result.exit_code == 0 and "Skipping 2 of 2 images already complete" in result.output
    result = invoke(tmp_path, "summary", str(run))
    assert result.exit_code == 0 and "3 of 3 items complete" in result.output, result.output


def test_a_dry_run_to_a_layer_estimates_the_layers_above_it(tmp_path):
    common = ("invert", "--network", "tiny", "--layer", "relu2", "--size", "16", "--dry-run")
    result = invoke(tmp_path, *common, "--to", "pool1")
    assert result.exit_code == 0 and "pool1 of 16x16" in result.output, result.output
    assert not (tmp_path / "runs").exists()
