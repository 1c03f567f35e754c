"""Optimisation-based inversion's objective and presets: the objective equals Mahendran & Vedaldi's
formula in numpy, the default (L-BFGS) preset reconstructs, and the run's measures are skimage's."""

import dataclasses
import json
import pathlib

import numpy as np
import pytest
import skimage.metrics
from click.testing import CliRunner

from deeprestore import images as image_io
from deeprestore.cli import cli
from deeprestore.inversion.metrics import image_metrics
from deeprestore.networks import create_network
from deeprestore.optimise import LBFGS, Engine
from deeprestore.probes import FeatureProbe
from deeprestore.recipes import invert


def test_inversion_objective_equals_the_papers_formula(tiny, rng):
    images = rng.uniform(size=(2, 12, 10, 3)).astype(np.float32)
    start = rng.uniform(size=images.shape).astype(np.float32)
    chosen = invert.Preset(6.0, 2.0, feature_weight=30.0, alpha_weight=0.7, tv_weight=0.2, jitter=0,
                           optimiser="lbfgs", learning_rate=0.0, steps=1, constrain=False)
    pixels = 12 * 10
    engine = Engine.for_objective(invert.inversion_objective("relu2", chosen, pixels), tiny)
    target = engine.probe.features(images)["relu2"]
    total, values, _ = engine(start, {"feature.relu2": target})

    features = engine.probe.features(start)["relu2"]
    feature = np.sum((features - target).reshape(2, -1) ** 2, 1) / np.sum(target.reshape(2, -1) ** 2, 1)
    inputs = tiny.spec.preprocess(start).astype(np.float64)  # the network's input, where the priors are defined
    alpha = np.sum(np.linalg.norm(inputs / invert.B, axis=-1) ** 6, axis=(1, 2))
    dx = (inputs[:, :-1, 1:] - inputs[:, :-1, :-1]) / invert.V
    dy = (inputs[:, 1:, :-1] - inputs[:, :-1, :-1]) / invert.V
    tv = np.sum(dx**2 + dy**2, axis=(1, 2, 3))
    np.testing.assert_allclose(values["feature.relu2"], feature.mean(), rtol=1e-4)
    np.testing.assert_allclose(values["alpha_norm.preprocess"], alpha.mean(), rtol=1e-3)
    np.testing.assert_allclose(values["tv.preprocess"], tv.mean(), rtol=1e-4)
    expected = np.sum(30.0 * feature + 0.7 / pixels * alpha + 0.2 / pixels * tv)
    np.testing.assert_allclose(total, expected, rtol=1e-4)


def test_presets_use_the_papers_weights_by_depth():
    vgg = create_network("vgg16", weights="random")
    # Mahendran & Vedaldi 2015: TV weight 0.5 for conv1 to conv2, 5 for conv3 to conv4, 50 from conv5.
    assert [invert.preset("mv2015", vgg, layer).tv_weight for layer in
            ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3", "block5_pool")] == [
        0.5, 0.5, 5.0, 5.0, 50.0, 50.0]
    # 2016: C = 300 up to conv3, 100 at conv4, 20 at conv5, 1 from pool5; jitter 1, 2, then 4 up to conv5, 8.
    assert [invert.preset("mv2016", vgg, layer).feature_weight for layer in
            ("block1_conv2", "block3_conv3", "block4_conv3", "block5_conv3", "block5_pool")] == [300, 300, 100, 20, 1]
    assert [invert.preset("mv2016", vgg, layer).jitter for layer in
            ("block1_conv2", "block2_conv2", "block3_conv3", "block5_conv3", "block5_pool")] == [1, 2, 4, 4, 8]
    default = invert.preset("lbfgs", vgg, "block2_conv2")
    assert default.optimiser == "lbfgs" and default.jitter == 0 and default.steps == 300
    assert isinstance(invert.step_rule_for(default, default.steps), LBFGS)


def test_default_inversion_reconstructs_better_than_noise_and_than_a_few_steps(tiny):
    image = image_io.resize(image_io.load_image("astronaut"), (16, 16))[None]
    features = FeatureProbe(tiny, ("relu1",)).features(image)["relu1"]
    chosen = invert.preset("lbfgs", tiny, "relu1")
    start = np.random.default_rng(0).uniform(size=image.shape).astype(np.float32)
    few, _ = invert.reconstruct(tiny, "relu1", dataclasses.replace(chosen, steps=3), features, start)
    many, engine = invert.reconstruct(tiny, "relu1", dataclasses.replace(chosen, steps=60), features, start)
    psnr = [image_metrics(image[0], candidate[0])["psnr"] for candidate in (start, few, many)]
    assert psnr[0] < psnr[1] < psnr[2] and psnr[2] > 25
    assert engine(many, {"feature.relu1": features})[1]["feature.relu1"] < 1e-3


def test_invert_reports_skimages_psnr_and_ssim(tmp_path):
    result = CliRunner().invoke(cli, ["--runs", str(tmp_path / "runs"), "--quiet", "invert", "--network", "tiny",
                                      "--layer", "relu1", "--size", "16", "--steps", "8"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run = pathlib.Path(result.output.strip().splitlines()[-1])
    measured = json.loads((run / "metrics.json").read_text())["images"][0]
    image = image_io.resize(image_io.load_image("astronaut"), (16, 16)).astype(np.float64)
    saved = image_io.load_image(str(run / "outputs" / "000_astronaut.png")).astype(np.float64)  # 8 bits a channel
    assert measured["psnr"] == pytest.approx(skimage.metrics.peak_signal_noise_ratio(image, saved, data_range=1.0),
                                             abs=0.05)
    assert measured["ssim"] == pytest.approx(
        skimage.metrics.structural_similarity(image, saved, data_range=1.0, channel_axis=-1), abs=0.01)


def test_a_learning_rate_with_the_lbfgs_preset_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(cli, ["--runs", str(tmp_path / "runs"), "invert", "--network", "tiny", "--layer",
                                      "relu1", "--learning-rate", "0.1"])
    assert result.exit_code == 1 and "--learning-rate 0.1 was given with --preset lbfgs" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "runs").exists()
