"""Learned inversion through a trained stack, the four-column difference figure, and the metrics."""

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from deeprestore import figures
from deeprestore.cli import cli
from deeprestore.datasets import load_images
from deeprestore.errors import DeepRestoreError
from deeprestore.inversion import metrics
from deeprestore.inversion.learned import invert_learned
from deeprestore.rundir import RunDir
from deeprestore.settings import LearnedInversionSettings as Learned


def test_colour_difference_is_grey_where_equal_and_shows_the_missing_channel():
    image = np.full((4, 4, 3), 0.5, np.float32)
    reconstruction = image.copy()
    reconstruction[0, 0, 2] = 0.3  # too little blue in one pixel
    colour = figures.colour_difference(image, reconstruction)
    np.testing.assert_allclose(colour[1:, 1:], 0.5)
    np.testing.assert_allclose(colour[0, 0], [0.5, 0.5, 1.0])
    absolute = figures.absolute_difference(image, reconstruction)
    assert absolute[0, 0, 2] == 1.0 and absolute.sum() == 1.0
    np.testing.assert_array_equal(figures.colour_difference(image, image), np.full_like(image, 0.5))


def test_the_difference_figure_has_four_columns_per_image(rng):
    images = rng.uniform(size=(3, 8, 10, 3)).astype(np.float32)
    line = figures.FONT_SIZE + 2 * figures.TEXT_PADDING  # the column titles
    figure = figures.difference_figure(images, images + 0.1, smallest=0)
    assert figure.shape == (line + 3 * 8 + 2 * figures.GAP, 4 * 10 + 3 * figures.GAP, 3)
    np.testing.assert_array_equal(figure[line:line + 8, :10], images[0])


def test_small_panels_are_enlarged_by_a_whole_factor_and_rows_named(rng):
    images = rng.uniform(size=(2, 64, 64, 3)).astype(np.float32)
    figure = figures.difference_figure(images, images, title="what", row_titles=["a", "b"])
    line = figures.FONT_SIZE + 2 * figures.TEXT_PADDING
    assert figure.shape == (2 * line + 2 * 128 + figures.GAP, line + 4 * 128 + 3 * figures.GAP, 3)
    np.testing.assert_array_equal(figure[2 * line:2 * line + 128:2, line:line + 128:2], images[0])
    assert figure[:line].min() < 0.5 and figure[line:2 * line].min() < 0.5  # title and column titles written


def test_metrics_match_their_formulas(rng):
    image = rng.uniform(size=(16, 16, 3))
    noisy = np.clip(image + rng.normal(0, 0.05, image.shape), 0, 1)
    measured = metrics.image_metrics(image, noisy)
    mse = np.mean((image - noisy) ** 2)
    assert measured["mse"] == pytest.approx(mse) and measured["psnr"] == pytest.approx(10 * np.log10(1 / mse))
    assert metrics.image_metrics(image, image) == {"mse": 0.0, "psnr": float("inf"), "ssim": pytest.approx(1.0)}


@pytest.fixture(scope="module")
def stack_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("stack")
    result = CliRunner().invoke(cli, ["--runs", str(tmp_path), "--quiet", "stack", "--network", "tiny", "--from",
                                      "pool2", "--size", "16", "--steps", "30", "--learning-rate", "0.003"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


def new_run(tmp_path):
    return RunDir.create(tmp_path / "runs", "invert", {"method": "learned"})


def test_learned_inversion_writes_every_modules_output_figures_and_metrics(stack_run, tmp_path):
    run = new_run(tmp_path)
    result = invert_learned(Learned(stack=stack_run), ["astronaut", "coffee"], run, echo=lambda message: None)
    assert result["layer"] == "pool2" and len(result["chain"]) == 4 and len(result["images"]) == 2
    assert set(result["mean"]) == {"mse", "psnr", "ssim"}
    assert set(result["by_layer"]) == {"pool2", "conv2", "pool1", "conv1"}
    assert result["modules"]["pool2_to_conv2"]["relative_mse"] < 1.0  # better than predicting the mean
    with h5py.File(run.path / "reconstructions.h5", "r") as file:
        assert file["modules/conv1_to_image"].shape == (2, 16, 16, 3)
        assert file["modules/pool2_to_conv2"].shape == (2, 8, 8, 16)
    assert json.loads((run.path / "metrics.json").read_text())["chain"] == result["chain"]
    for name in ("difference.png", "depth.png", "images/000_astronaut.png", "images/001_coffee.png"):
        assert (run.path / name).exists(), name


def test_the_stack_reconstructs_better_than_noise_and_from_any_layer_along_it(stack_run, tmp_path):
    result = invert_learned(Learned(stack=stack_run, layer="conv1", size=32), "chelsea", new_run(tmp_path),
                            echo=lambda message: None)
    assert result["chain"] == ["conv1_to_image"]
    _, images = load_images("chelsea", (32, 32))
    noise = metrics.image_metrics(images[0], np.random.default_rng(0).uniform(size=images[0].shape))
    assert result["mean"]["mse"] < noise["mse"] / 2


def test_learned_inversion_errors_are_clear(stack_run, tmp_path):
    with pytest.raises(DeepRestoreError, match="holds no trained modules"):
        invert_learned(Learned(stack=tmp_path), "astronaut", new_run(tmp_path))
    with pytest.raises(DeepRestoreError, match="inverts 'tiny', not 'vgg16'"):
        invert_learned(Learned(stack=stack_run), "astronaut", new_run(tmp_path), network="vgg16")
    with pytest.raises(DeepRestoreError, match="No module of the stack reconstructs from 'relu2'"):
        invert_learned(Learned(stack=stack_run, layer="relu2"), "astronaut", new_run(tmp_path),
                       echo=lambda message: None)


def test_per_channel_errors_draw_as_one_heatmap_even_when_a_channel_is_cut_short(tmp_path, rng):
    from PIL import Image

    channels = {f"{index:03d}": (list(range(1, 11)), list(rng.uniform(0.01, 1.0, 10))) for index in range(64)}
    channels["063"] = (list(range(1, 8)), list(rng.uniform(0.01, 1.0, 7)))  # an interrupted last step
    path = figures.save_channel_heatmap(tmp_path / "channels.png", channels, "error per channel")
    width, height = Image.open(path).size
    assert width == 700 and height > 400  # one row per channel, not 64 lines under a legend
