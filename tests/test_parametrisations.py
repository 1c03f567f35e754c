"""The Fourier parametrisation: it matches a numpy reference, autodiff gives its adjoint, it round-trips and
optimises."""

import json
import pathlib

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from deeprestore import backend, objectives
from deeprestore.cli import cli
from deeprestore.optimise import LBFGS, Adam, Engine, Plan, Progress, optimise
from deeprestore.parametrisations import COLOUR_CORRELATION, FourierImage, normalised_image_descent
from deeprestore.probes import FeatureProbe
from deeprestore.recipes.texture import texture_objective


def reference_images(parametrisation, parameters):
    """The decoder in float64 numpy, after lucid: irfft2 of the scaled spectra, the colour matrix, a sigmoid."""
    parameters = np.asarray(parameters, np.float64)
    spectrum = (parameters[:, :, 0] + 1j * parameters[:, :, 1]) * parametrisation.scale
    channels = np.fft.irfft2(spectrum, s=(parametrisation.height, parametrisation.width), axes=(-2, -1))
    colours = np.moveaxis(channels, 1, -1) / 4.0 @ COLOUR_CORRELATION.T
    return 1.0 / (1.0 + np.exp(-colours))


def autodiff_gradient(parametrisation, weights, parameters):
    """The gradient of `sum(weights * decode(parameters))` by the backend's autodiff, compiled."""
    weights = weights.astype(np.float32)

    def function(values):
        return backend.gradient(lambda variables: (keras.ops.sum(weights * parametrisation.decode(variables)), {}),
                                values)[2]

    return backend.compiled(function)(np.asarray(parameters, np.float32))


@pytest.mark.parametrize("shape", [(2, 6, 7), (1, 5, 8)], ids=["odd-width", "even-width"])
def test_images_match_a_numpy_reference(shape):
    parametrisation = FourierImage(shape, seed=1, standard_deviation=0.5)
    np.testing.assert_allclose(parametrisation.images(), reference_images(parametrisation, parametrisation.parameters),
                               atol=2e-6)


@pytest.mark.parametrize("shape", [(2, 6, 7), (1, 5, 8)], ids=["odd-width", "even-width"])
def test_autodiff_gradient_matches_finite_differences_of_the_reference(shape):
    # The adjoint of the decoder is the backend's autodiff through keras.ops FFTs; checked here against
    # central differences of the float64 reference (irfft2 counts inner columns twice: an easy slip).
    parametrisation = FourierImage(shape, seed=1, standard_deviation=0.5)
    weights = np.random.default_rng(0).normal(size=(*shape, 3))
    parameters = parametrisation.parameters.astype(np.float64)

    def loss(values):
        return np.sum(weights * reference_images(parametrisation, values))

    numeric = np.zeros_like(parameters)
    epsilon = 1e-6
    for index in np.ndindex(parameters.shape):
        step = np.zeros_like(parameters)
        step[index] = epsilon
        numeric[index] = (loss(parameters + step) - loss(parameters - step)) / (2 * epsilon)
    gradient = autodiff_gradient(parametrisation, weights, parameters)
    np.testing.assert_allclose(gradient, numeric, atol=2e-5 * np.abs(numeric).max())


def test_images_are_valid_rgb_even_for_large_parameters():
    parametrisation = FourierImage((3, 16, 20), seed=0)
    images = parametrisation.images()
    assert images.shape == (3, 16, 20, 3) and images.dtype == np.float32
    large = parametrisation.images(parametrisation.parameters * 1e4)
    assert np.all(np.isfinite(large)) and large.min() >= 0.0 and large.max() <= 1.0


def test_same_seed_gives_the_same_start():
    first, second = FourierImage((1, 8, 8), seed=3), FourierImage((1, 8, 8), seed=3)
    np.testing.assert_array_equal(first.images(), second.images())
    assert not np.array_equal(first.images(), FourierImage((1, 8, 8), seed=4).images())


@pytest.mark.parametrize("shape", [(2, 9, 7), (1, 8, 12)], ids=["odd-width", "even-width"])
@pytest.mark.parametrize("decay_power", [0.5, 1.0])
def test_images_round_trip_through_their_parameters(shape, decay_power):
    parametrisation = FourierImage(shape, decay_power=decay_power)
    images = np.random.default_rng(0).uniform(0.01, 0.99, (*shape, 3))
    np.testing.assert_allclose(parametrisation.images(parametrisation.parameters_of(images)), images, atol=1e-5)


def test_encoding_clips_pixels_into_the_margin():
    parametrisation = FourierImage((1, 6, 6))
    images = np.zeros((1, 6, 6, 3))
    images[..., 1] = 1.0
    decoded = parametrisation.images(parametrisation.parameters_of(images, margin=0.05))
    np.testing.assert_allclose(decoded[..., 0], 0.05, atol=1e-5)
    np.testing.assert_allclose(decoded[..., 1], 0.95, atol=1e-5)


def test_image_change_matches_finite_differences():
    parametrisation = FourierImage((1, 6, 7), seed=2, standard_deviation=0.5)
    direction = np.random.default_rng(1).normal(size=parametrisation.parameters.shape).astype(np.float32)
    epsilon = 1e-6
    parameters = parametrisation.parameters.astype(np.float64)
    numeric = (reference_images(parametrisation, parameters + epsilon * direction)
               - reference_images(parametrisation, parameters - epsilon * direction)) / (2 * epsilon)
    change = parametrisation.image_change(direction, parametrisation.parameters)
    np.testing.assert_allclose(np.asarray(change), numeric, atol=1e-5 * np.abs(numeric).max())


def test_a_normalised_image_step_moves_each_image_by_the_step_size_in_mean_pixel_value():
    parametrisation = FourierImage((2, 16, 16), seed=0, standard_deviation=0.3)
    gradient = np.random.default_rng(3).normal(size=parametrisation.parameters.shape).astype(np.float32)
    step = normalised_image_descent(1e-4, parametrisation)(parametrisation.parameters, gradient, 0)
    change = (reference_images(parametrisation, step)
              - reference_images(parametrisation, parametrisation.parameters))
    np.testing.assert_allclose(np.mean(np.abs(change), axis=(1, 2, 3)), 1e-4, rtol=1e-2)


def test_jitter_of_the_decoded_images_needs_no_hand_written_roll_back(tiny, rng):
    # A pixel-wise objective commutes with rolling, so through the parametrisation too a jittered step
    # equals an unjittered one: the autodiff undoes the roll on the gradient.
    engine = Engine(objectives.l2("preprocess"), FeatureProbe(tiny, ["preprocess"]))
    parametrisation = FourierImage((1, 16, 16), seed=0, standard_deviation=0.5)
    rule = Adam(0.05)
    plain, _ = optimise(engine, parametrisation.parameters, 2, rule, Plan(parametrisation),
                        callbacks=[Progress(show=False)])
    jittered, _ = optimise(engine, parametrisation.parameters, 2, rule,
                           Plan(parametrisation, jitter=5, seed=np.random.default_rng(3)),
                           callbacks=[Progress(show=False)])
    assert not np.allclose(plain, parametrisation.parameters)
    np.testing.assert_allclose(jittered, plain, rtol=1e-4, atol=1e-5 * np.abs(plain).max())


def test_wrong_shapes_are_refused():
    parametrisation = FourierImage((1, 8, 8))
    with pytest.raises(ValueError, match="parameters of shape"):
        parametrisation.images(np.zeros((1, 3, 2, 8, 8)))
    with pytest.raises(ValueError, match="images of shape"):
        parametrisation.parameters_of(np.zeros((1, 8, 9, 3)))


@pytest.mark.parametrize("rule", [Adam(0.05), LBFGS(bounds=None)], ids=["adam", "lbfgs"])
def test_a_few_steps_through_the_parametrisation_lower_a_texture_loss(tiny, rng, rule):
    layers = ("relu1", "relu2")
    source = rng.uniform(size=(1, 16, 16, 3)).astype(np.float32) ** 3
    engine = Engine.for_objective(texture_objective(layers, (1.0, 1.0)), tiny)
    features = engine.probe.features(source)
    targets = {f"gram.{layer}": objectives.gram_numpy(features[layer][0])[None] for layer in layers}
    parametrisation = FourierImage((1, 16, 16), seed=0)
    before = engine(parametrisation.parameters, targets, parametrisation)[0]
    result, values = optimise(engine, parametrisation.parameters, 5, rule, Plan(parametrisation),
                              callbacks=[Progress(show=False)], targets=targets)
    assert result.shape == parametrisation.parameters.shape
    assert engine(parametrisation.images(result), targets)[0] < before
    assert set(values) >= {"gram.relu1", "gram.relu2", "total"}


@pytest.mark.parametrize("optimiser", ["adam", "lbfgs"])
def test_texture_command_runs_with_the_fourier_parametrisation(tmp_path, optimiser):
    result = CliRunner().invoke(cli, [
        "--runs", str(tmp_path / "runs"), "--quiet", "texture", "--network", "tiny", "--parametrisation", "fourier",
        "--optimiser", optimiser, "--steps", "3", "--size", "24", "--source-size", "32",
    ])
    assert result.exit_code == 0, result.output
    run = pathlib.Path(result.output.strip().splitlines()[-1])
    assert (run / "outputs" / "texture_000.png").exists()
    assert json.loads((run / "config.json").read_text())["settings"]["parametrisation"] == "fourier"
