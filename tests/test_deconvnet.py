"""Zeiler & Fergus's deconvnet: switch unpooling against numpy, transposed filtering as the adjoint of
convolution, receptive fields, and the per-layer figures."""

import json

import keras
import numpy as np
import pytest

from deeprestore.errors import DeepRestoreError
from deeprestore.inversion import deconvnet
from deeprestore.networks import create_network
from deeprestore.rundir import RunDir
from deeprestore.settings import DeconvnetSettings


def numpy_unpool(inputs, signal, pool, stride):
    """Reference: every pooled value goes to its window's first maximum; overlaps add up."""
    result = np.zeros_like(inputs)
    batch, rows, columns, channels = signal.shape
    for n in range(batch):
        for i in range(rows):
            for j in range(columns):
                for c in range(channels):
                    window = inputs[n, i * stride:i * stride + pool, j * stride:j * stride + pool, c]
                    dy, dx = np.unravel_index(np.argmax(window), window.shape)
                    result[n, i * stride + dy, j * stride + dx, c] += signal[n, i, j, c]
    return result


@pytest.mark.parametrize("pool, stride, size", [(2, 2, 8), (2, 2, 9), (3, 2, 9), (3, 2, 12), (3, 3, 10)],
                         ids=["vgg", "vgg-odd", "alexnet-overlapping", "alexnet-even", "disjoint-3"])
def test_switch_unpooling_matches_numpy(rng, pool, stride, size):
    inputs = rng.normal(size=(2, size, size + 1, 3)).astype(np.float32)
    rows, columns = (size - pool) // stride + 1, (size + 1 - pool) // stride + 1
    signal = rng.normal(size=(2, rows, columns, 3)).astype(np.float32)
    switch = deconvnet.switches(inputs, pool, stride)
    result = keras.ops.convert_to_numpy(deconvnet.unpool(signal, switch, pool, stride, (size, size + 1)))
    np.testing.assert_allclose(result, numpy_unpool(inputs, signal, pool, stride), atol=1e-6)


def test_switches_point_at_the_maxima_that_keras_pools(rng):
    inputs = rng.normal(size=(1, 9, 9, 4)).astype(np.float32)
    switch = keras.ops.convert_to_numpy(deconvnet.switches(inputs, 3, 2))
    pooled = keras.ops.convert_to_numpy(keras.layers.MaxPooling2D(3, 2)(inputs))
    for (n, i, j, c), index in np.ndenumerate(switch):
        dy, dx = divmod(int(index), 3)
        assert inputs[n, 2 * i + dy, 2 * j + dx, c] == pooled[n, i, j, c]


@pytest.mark.parametrize("layer", ["conv1", "conv2"], ids=["strided-valid", "grouped"])
def test_transposed_filtering_is_the_adjoint_of_convolution(rng, layer):
    network = create_network("alexnet", weights="random")
    convolution = network.model.get_layer(layer)
    inputs = rng.normal(size=(1, 39, 39, convolution.kernel.shape[2] * convolution.groups)).astype(np.float32)
    outputs = keras.ops.convert_to_numpy(convolution(inputs)) - keras.ops.convert_to_numpy(convolution.bias)
    signal = rng.normal(size=outputs.shape).astype(np.float32)
    back = keras.ops.convert_to_numpy(deconvnet.transposed_filtering(signal, convolution, (39, 39)))
    assert back.shape == inputs.shape
    np.testing.assert_allclose(np.sum(outputs * signal), np.sum(inputs * back), rtol=1e-3)


@pytest.mark.parametrize("name, layer, expected", [
    ("vgg16", "block1_pool", (6, 2, -2)), ("vgg16", "block3_pool", (44, 8, -18)),
    ("alexnet", "conv1", (11, 4, 0)), ("alexnet", "pool1", (19, 8, 0)), ("alexnet", "pool5", (195, 32, -64)),
])
def test_receptive_fields_match_the_known_values(name, layer, expected):
    network = create_network(name, weights="random")
    assert deconvnet.receptive_field(network, layer, network.spec.input_size) == expected


def test_a_single_activation_projects_inside_its_receptive_field(tiny, rng):
    images = rng.uniform(size=(2, 16, 16, 3)).astype(np.float32)
    network = deconvnet.Deconvnet(tiny, "pool2")
    activations = keras.ops.convert_to_numpy(network.forward(images)[0])
    # The liveliest channel and each image's strongest activation in it: random weights differ by
    # backend, and some channels are dead.
    channel = int(activations.max(axis=(0, 1, 2)).argmax())
    positions = [np.unravel_index(np.argmax(activation), activation.shape) for activation in activations[..., channel]]
    projections, _ = network.project(images, channel, positions=positions)
    extent, jump, first = deconvnet.receptive_field(tiny, "pool2", (16, 16))
    for projection, (row, column) in zip(projections, positions):
        outside = np.ones((16, 16), bool)
        outside[max(first + row * jump, 0):first + row * jump + extent,
                max(first + column * jump, 0):first + column * jump + extent] = False
        assert np.abs(projection).sum() > 0 and np.abs(projection[outside]).max() == 0


def test_crops_pad_beyond_the_image():
    image = np.ones((8, 8, 3), np.float32)
    patch = deconvnet.crop(image, 0, 0, (6, 2, -2))
    assert patch.shape == (6, 6, 3) and patch[0, 0, 0] == 0.5 and patch[2, 2, 0] == 1.0


def test_invert_deconvnet_draws_each_layer_and_records_the_strongest(tmp_path):
    run = RunDir.create(tmp_path / "runs", "invert", {})
    found = deconvnet.invert_deconvnet("tiny", "random", run, DeconvnetSettings(channels=2, top=4, size=16),
                                       echo=lambda message: None)
    assert set(found) == {"pool1", "pool2"} and len(found["pool2"][1]) == 4
    values = [entry["activation"] for entry in found["pool2"][1]]
    assert values == sorted(values, reverse=True)
    assert (run.path / "pool1.png").exists() and (run.path / "pool2.png").exists()
    assert json.loads((run.path / "strongest.json").read_text())["pool1"]["0"][0]["image"].startswith(tuple("abcghrt"))
    with pytest.raises(DeepRestoreError, match="Channel 99 does not exist in 'pool1'"):
        deconvnet.invert_deconvnet("tiny", "random", run, DeconvnetSettings(layers=("pool1",), channels=(99,), size=16),
                                   echo=lambda message: None)


def test_the_deconvnet_refuses_average_pooling():
    with pytest.raises(DeepRestoreError, match="cannot undo layer 'pool1'"):
        deconvnet.Deconvnet(create_network("tiny", weights="random", pooling="average"), "pool2")
