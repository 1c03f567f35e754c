"""Networks from Keras model files (`--network PATH`): the rebuilt model against the original on
converted images, gradients through a gray model, `nets`, `dream` and `invert` through the CLI, and the
errors a user sees."""

import hashlib
import json
import pathlib

import imageio.v3 as imageio
import keras
import numpy as np
import pytest
from click.testing import CliRunner

from deeprestore import modelconfig
from deeprestore.cli import cli
from deeprestore.errors import DeepRestoreError
from deeprestore.losslog import LossLog
from deeprestore.networks import create_network
from deeprestore.networks.convention import LUMA
from deeprestore.objectives import l2
from deeprestore.optimise import Engine

RGB_CONVENTION = {"colour": "rgb", "range": [0, 255], "mean": [120, 110, 100], "layers": {"dream": ["relu2"]}}
GRAY_CONVENTION = {"colour": "gray", "range": [-1, 1]}


def save_rgb_model(path, convention=RGB_CONVENTION):
    """A fully convolutional RGB model with a nested Sequential block, and its convention file."""
    keras.utils.set_random_seed(1)
    images = keras.Input((None, None, 3))
    outputs = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(images)
    outputs = keras.layers.ReLU(name="relu1")(outputs)
    outputs = keras.layers.MaxPooling2D(2, name="pool1")(outputs)
    block = keras.Sequential([keras.layers.Conv2D(12, 3, padding="same", name="conv2"),
                              keras.layers.ReLU(name="relu2")], name="block2")
    keras.Model(images, block(outputs)).save(path)
    path.with_suffix(".json").write_text(json.dumps(convention))
    return path


def save_gray_model(path, convention=GRAY_CONVENTION):
    """A Sketch-a-Net-like gray model with a fixed 16x16 input and a dense head, as a legacy .h5 file."""
    keras.utils.set_random_seed(2)
    model = keras.Sequential([
        keras.Input((16, 16, 1)), keras.layers.Conv2D(6, 3, name="conv1"), keras.layers.ReLU(name="relu1"),
        keras.layers.MaxPooling2D(2, name="pool1"), keras.layers.Conv2D(10, 3, name="conv2"),
        keras.layers.ReLU(name="relu2"), keras.layers.Flatten(name="flatten"), keras.layers.Dense(5, name="fc"),
    ])
    model.save(path)
    path.with_suffix(".json").write_text(json.dumps(convention))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {"rgb": save_rgb_model(folder / "rgb.keras"), "gray": save_gray_model(folder / "gray.h5")}


@pytest.fixture
def square_image(tmp_path):
    path = tmp_path / "square.png"
    imageio.imwrite(path, np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    return path


def invoke(tmp_path, *arguments):
    return CliRunner().invoke(cli, ["--runs", str(tmp_path / "runs"), "--quiet", *arguments], catch_exceptions=False)


def run_of(result):
    assert result.exit_code == 0, result.output
    return pathlib.Path(result.output.strip().splitlines()[-1])


def features(network, layer, images):
    probe = keras.Model(network.model.input, network.model.get_layer(layer).output)
    return keras.ops.convert_to_numpy(probe(images))


def test_the_rgb_network_is_the_model_on_scaled_mean_subtracted_images(models):
    network = create_network(str(models["rgb"]))
    original = keras.saving.load_model(models["rgb"], compile=False)
    images = np.random.default_rng(0).random((2, 12, 10, 3), dtype=np.float32)
    expected = original(images * 255.0 - np.array([120, 110, 100], np.float32))
    np.testing.assert_allclose(features(network, "relu2", images), keras.ops.convert_to_numpy(expected),
                               rtol=1e-4, atol=1e-3)
    assert network.layers == ("preprocess", "conv1", "relu1", "pool1", "conv2", "relu2")


def test_the_gray_network_is_the_model_on_luma_in_minus_one_to_one(models):
    network = create_network(str(models["gray"]))
    original = keras.saving.load_model(models["gray"], compile=False)
    images = np.random.default_rng(0).random((2, 16, 16, 3), dtype=np.float32)
    luma = images @ np.array(LUMA, np.float32)[:, None]
    np.testing.assert_allclose(features(network, "fc", images), keras.ops.convert_to_numpy(original(2 * luma - 1)),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(network.spec.preprocess(images), 2 * luma - 1, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(network.spec.deprocess(2 * luma - 1), np.repeat(luma, 3, axis=-1), atol=1e-6)


def test_gradients_of_a_gray_model_reach_each_rgb_channel_in_proportion_to_its_luma_weight(models):
    network = create_network(str(models["gray"]))
    images = np.random.default_rng(0).random((1, 16, 16, 3), dtype=np.float32)
    _, _, gradient = Engine.for_objective(-l2("relu2"), network)(images)
    gradient = np.asarray(gradient)
    assert np.abs(gradient).max() > 0
    np.testing.assert_allclose(gradient / np.array(LUMA, np.float32),
                               np.repeat(gradient[..., :1] / LUMA[0], 3, axis=-1), rtol=1e-3, atol=1e-7)


def test_random_weights_reinitialise_the_architecture_reproducibly(models):
    trained = create_network(str(models["rgb"]))
    first, second = (create_network(str(models["rgb"]), weights="random", seed=3) for _ in range(2))

    def kernel(network):
        return keras.ops.convert_to_numpy(network.model.get_layer("conv1").kernel)

    np.testing.assert_array_equal(kernel(first), kernel(second))
    assert not np.allclose(kernel(first), kernel(trained))
    assert first.weights.source == "random" and first.weights.sha256 != trained.weights.sha256


@pytest.mark.parametrize("model", ["rgb", "gray"])
def test_the_names_read_without_keras_are_the_built_networks(models, model):
    """The checks before any backend read a model file's names from its config (`modelconfig`)."""
    config = modelconfig.read_config(models[model], "Model file", "a model")
    assert ("preprocess", *modelconfig.layer_names(config)) == create_network(str(models[model])).layers
    assert modelconfig.input_shapes(config) == [tuple(keras.saving.load_model(models[model]).inputs[0].shape)]


def test_nets_lists_every_layer_of_a_model_file_nested_ones_included(models, tmp_path):
    result = invoke(tmp_path, "nets", str(models["rgb"]), "--size", "32")
    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line.split()[-1] for line in result.output.splitlines()[1:]}
    assert rows == {"preprocess": "32x32x3", "conv1": "32x32x8", "relu1": "32x32x8", "pool1": "16x16x8",
                    "conv2": "16x16x12", "relu2": "16x16x12"}
    result = invoke(tmp_path, "nets", str(models["gray"]))
    assert "16x16 input" in result.output and result.output.splitlines()[-1].split()[1:] == ["fc", "Dense", "5"]


@pytest.mark.parametrize("model, layer_options", [("rgb", ()), ("gray", ("--layer", "relu2"))])
def test_dream_raises_the_objective_of_a_model_file(models, tmp_path, square_image, model, layer_options):
    """The RGB model's convention declares its dream layer (relu2); the gray model's is named."""
    run = run_of(invoke(tmp_path, "dream", "--network", str(models[model]), "--images", str(square_image),
                        *layer_options, "--size", "16", "--octaves", "1", "--steps", "5", "--jitter", "0"))
    values = LossLog.read(run / "losses")["l2.relu2"]
    assert values[-1] > values[0]
    weights = json.loads((run / "config.json").read_text())["weights"]
    assert weights["path"] == str(models[model].resolve())
    assert weights["sha256"] == hashlib.sha256(models[model].read_bytes()).hexdigest()
    assert weights["input_convention"]["colour"] == json.loads(models[model].with_suffix(".json").read_text())["colour"]


@pytest.mark.parametrize("model", ["rgb", "gray"])
def test_invert_by_optimisation_lowers_the_feature_error_of_a_model_file(models, tmp_path, square_image, model):
    run = run_of(invoke(tmp_path, "invert", "--method", "optimise", "--network", str(models[model]),
                        "--images", str(square_image), "--layer", "relu1", "--size", "16", "--steps", "8"))
    values = LossLog.read(run / "losses")["feature.relu1"]
    assert values[-1] < values[0]
    assert (run / "figure.png").exists() and (run / "metrics.json").exists()
    assert json.loads((run / "config.json").read_text())["weights"]["sha256"] == hashlib.sha256(
        models[model].read_bytes()).hexdigest()


def save_two_input_model(path):
    first, second = keras.Input((8, 8, 3)), keras.Input((8, 8, 3))
    keras.Model([first, second], keras.layers.Add(name="add")([first, second])).save(path)
    path.with_suffix(".json").write_text(json.dumps(RGB_CONVENTION))


def save_weights_only(path):
    keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3, name="conv")]).save_weights(path)


@pytest.mark.parametrize(
    "prepare, arguments, message",
    [
        (None, ("nets", "{dir}/missing.keras"), "No model file at '{dir}/missing.keras'"),
        (lambda path: path.write_bytes(b"not a model"), ("nets", "{dir}/model.keras"),
         "Cannot read '{dir}/model.keras' as a Keras model"),
        (lambda path: save_weights_only(path.with_name("model.weights.h5")), ("nets", "{dir}/model.weights.h5"),
         "holds weights only"),
        (save_two_input_model, ("nets", "{dir}/model.keras"), "has 2 inputs; expected one image input"),
        (lambda path: save_rgb_model(path).with_suffix(".json").unlink(), ("nets", "{dir}/model.keras"),
         "No input convention for model '{dir}/model.keras': expected {dir}/model.json"),
        (lambda path: save_rgb_model(path, {"colour": "grey", "range": [0, 1]}), ("nets", "{dir}/model.keras"),
         "'colour' is \"grey\""),
        (lambda path: save_rgb_model(path, {"colour": "rgb", "range": [1, 0]}), ("nets", "{dir}/model.keras"),
         "'range' is [1, 0]"),
        (lambda path: save_rgb_model(path, {"colour": "rgb", "range": [0, 1], "mean": [1, 2]}),
         ("nets", "{dir}/model.keras"), "'mean' is [1, 2]"),
        (lambda path: save_rgb_model(path, {"color": "rgb", "range": [0, 1]}), ("nets", "{dir}/model.keras"),
         "unknown keys color"),
        (lambda path: save_gray_model(path, RGB_CONVENTION), ("nets", "{dir}/model.keras"),
         "takes 1 input channels but its convention says 'rgb'"),
        (lambda path: save_rgb_model(path, {"colour": "rgb", "range": [0, 1], "layers": {"dream": ["conv9"]}}),
         ("nets", "{dir}/model.keras"), "Unknown layer 'conv9'"),
        (save_rgb_model, ("dream", "--network", "{dir}/model.keras", "--layer", "conv9", "--size", "16"),
         "Unknown layer 'conv9' for network '{dir}/model.keras'. Known layers: preprocess, conv1, relu1"),
        (save_gray_model,
         ("dream", "--network", "{dir}/model.keras", "--layer", "relu2", "--size", "20", "--octaves", "1"),
         "takes 16x16 inputs only (its input shape is fixed); got 20x20"),
        (save_gray_model, ("invert", "--network", "{dir}/model.keras", "--layer", "relu2", "--size", "24"),
         "takes 16x16 inputs only (its input shape is fixed); got 24x24"),
        (save_gray_model, ("dream", "--network", "{dir}/model.keras", "--size", "16"),
         ("No default dream layers for model file '{dir}/model.keras'; expected the layers on the command line or "
          '"layers": {{"dream": [...]}} in {dir}/model.json')),
        (save_gray_model, ("style", "--network", "{dir}/model.keras", "--size", "16", "--content-layer", "relu2"),
         "No default style layers for model file"),
        (save_rgb_model, ("dream", "--network", "{dir}/model.keras", "--weights", "imagenet", "--size", "16"),
         "brings its own weights; expected --weights auto (the file's) or random"),
        (None, ("dream", "--network", "resnet"), "or the path of a Keras model file"),
    ],
)
def test_model_file_errors_are_one_line_with_a_nonzero_exit(tmp_path, prepare, arguments, message):
    if prepare is not None:
        prepare(tmp_path / "model.keras")
    result = CliRunner().invoke(cli, ["--runs", str(tmp_path / "runs"), "--quiet",
                                      *(argument.format(dir=tmp_path) for argument in arguments)])
    assert result.exit_code == 1, result.output
    assert message.format(dir=tmp_path) in result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("Error:")]) == 1


def test_a_model_file_keeps_its_pooling_and_refuses_a_classifier_head(models):
    assert "Its own pooling layers are kept" in create_network(str(models["rgb"]), pooling="average").weights.notice
    with pytest.raises(DeepRestoreError, match="no separate classifier head"):
        create_network(str(models["rgb"]), include_top=True)
