"""Tests for the network registry: layer names and shapes, preprocessing, pooling, LRN and grouped
convolutions against numpy, seeded random weights, and the errors a user sees."""

import keras
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from deeprestore.architectures import KNOWN_SHOWN
from deeprestore.errors import DeepRestoreError
from deeprestore.networks import create_network, get_spec, list_networks
from deeprestore.networks.layers import LocalResponseNormalization

# Shapes at each network's native input size, from the papers (Simonyan & Zisserman 2014; Caffe's
# bvlc_reference AlexNet deploy.prototxt).
EXPECTED_SHAPES = {
    "vgg16": {
        "preprocess": (1, 224, 224, 3),
        "block1_conv1_preact": (1, 224, 224, 64),
        "block1_conv1": (1, 224, 224, 64),
        "block1_pool": (1, 112, 112, 64),
        "block3_conv3_preact": (1, 56, 56, 256),
        "block4_conv2": (1, 28, 28, 512),
        "block5_conv3": (1, 14, 14, 512),
        "block5_pool": (1, 7, 7, 512),
    },
    "vgg19": {
        "block1_conv1": (1, 224, 224, 64),
        "block3_conv4": (1, 56, 56, 256),
        "block4_conv4": (1, 28, 28, 512),
        "block5_conv4": (1, 14, 14, 512),
        "block5_pool": (1, 7, 7, 512),
    },
    "alexnet": {
        "preprocess": (1, 227, 227, 3),
        "conv1": (1, 55, 55, 96),
        "norm1": (1, 55, 55, 96),
        "pool1": (1, 27, 27, 96),
        "conv2": (1, 27, 27, 256),
        "norm2": (1, 27, 27, 256),
        "pool2": (1, 13, 13, 256),
        "conv3": (1, 13, 13, 384),
        "conv4": (1, 13, 13, 384),
        "conv5": (1, 13, 13, 256),
        "pool5": (1, 6, 6, 256),
    },
    "tiny": {
        "conv1": (1, 16, 16, 8),
        "pool1": (1, 8, 8, 8),
        "conv2": (1, 8, 8, 16),
        "pool2": (1, 4, 4, 16),
    },
}


@pytest.fixture(scope="module")
def network():
    """`network(name, include_top=False, pooling="max")`: random-weight networks built once per module."""
    built = {}

    def get(name, include_top=False, pooling="max"):
        key = (name, include_top, pooling)
        if key not in built:
            built[key] = create_network(name, weights="random", pooling=pooling, include_top=include_top)
        return built[key]

    yield get
    built.clear()


def random_images(height, width, seed=0, scale=1.0):
    return scale * np.random.default_rng(seed).random((1, height, width, 3), dtype=np.float32)


def activations(network, images, layers):
    """`{layer: numpy array}` for one forward pass of `images`."""
    probe = keras.Model(network.model.input, [network.model.get_layer(layer).output for layer in layers])
    outputs = probe(images)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]  # one output comes back bare
    return {layer: keras.ops.convert_to_numpy(output) for layer, output in zip(layers, outputs, strict=True)}


def lrn_reference(inputs, radius, alpha, beta, bias):
    """TensorFlow's / Caffe's cross-channel LRN, the window clipped at the first and last channel."""
    inputs = np.asarray(inputs, np.float64)
    squares = inputs**2
    channels = inputs.shape[-1]
    sums = np.stack(
        [squares[..., max(0, c - radius) : min(channels, c + radius + 1)].sum(-1) for c in range(channels)], -1
    )
    return inputs / (bias + alpha * sums) ** beta


def grouped_convolution_reference(inputs, kernel, bias, groups):
    """'same'-padded stride-1 cross-correlation, each group of input channels to its group of filters."""
    size = kernel.shape[0]
    padded = np.pad(inputs.astype(np.float64), [(0, 0), (size // 2, size // 2), (size // 2, size // 2), (0, 0)])
    windows = sliding_window_view(padded, (size, size), axis=(1, 2))  # (batch, height, width, channels, size, size)
    per_group_in, per_group_out = inputs.shape[-1] // groups, kernel.shape[-1] // groups
    outputs = [
        np.einsum(
            "bhwcij,ijco->bhwo",
            windows[..., g * per_group_in : (g + 1) * per_group_in, :, :],
            kernel[..., g * per_group_out : (g + 1) * per_group_out].astype(np.float64),
        )
        for g in range(groups)
    ]
    return np.concatenate(outputs, axis=-1) + bias


# --- the registry ---------------------------------------------------------------------------------------


def test_the_registry_lists_every_network_with_expected_shapes():
    assert set(list_networks()) == set(EXPECTED_SHAPES)


def test_an_unknown_network_or_pooling_is_an_error_listing_the_choices():
    with pytest.raises(DeepRestoreError, match=r"Unknown network 'resnet'.*vgg16.*tiny"):
        create_network("resnet", weights="random")
    with pytest.raises(DeepRestoreError, match=r"Unknown pooling 'min'.*max, average"):
        create_network("tiny", weights="random", pooling="min")


@pytest.mark.parametrize("name", list_networks())
def test_each_network_builds_with_unique_layers_starting_with_preprocess(name, network):
    built = network(name)

    assert built.name == name and built.weights.source == "random"
    assert len(built.layers) == len(set(built.layers))
    assert built.layers[0] == "preprocess"
    assert not set(built.spec.head) & set(built.layers)


@pytest.mark.parametrize("name", list_networks())
def test_output_shapes_at_the_native_size_give_every_layer_as_a_batch_of_one(name, network):
    built = network(name)

    shapes = built.output_shapes(*built.spec.input_size)

    assert tuple(shapes) == built.layers
    assert all(len(shape) == 4 and shape[0] == 1 for shape in shapes.values())
    assert {layer: shapes[layer] for layer in EXPECTED_SHAPES[name]} == EXPECTED_SHAPES[name]


@pytest.mark.parametrize(
    "name, size, expected",
    [
        ("vgg16", 224, (1, 1, 1, 1000)),
        ("vgg19", 224, (1, 1, 1, 1000)),
        ("alexnet", 227, (1, 1, 1, 1000)),
        ("vgg16", 512, (1, 10, 10, 1000)),  # fully convolutional head: a map of class scores
        ("tiny", 16, (1, 4, 4, 10)),
    ],
)
def test_the_classifier_head_gives_class_scores_per_position(name, size, expected, network):
    built = network(name, include_top=True)

    shapes = built.output_shapes(size, size, layers=("fc8" if name != "tiny" else "fc3", "prob"))

    assert list(shapes.values()) == [expected, expected]


@pytest.mark.parametrize("name", list_networks())
def test_every_default_layer_and_alias_resolves(name, network):
    built = network(name)
    sets = built.spec.layer_sets

    for layer in (sets.content, *sets.style, *sets.texture, *sets.dream):
        assert built.resolve(layer) == layer  # layer sets hold canonical names
    for alias, layer in built.spec.aliases.items():
        if layer in built.spec.head:
            with pytest.raises(DeepRestoreError, match="--top"):
                built.resolve(alias)
        else:
            assert built.resolve(alias) == layer
            assert alias in built.aliases_of(layer)


def test_caffe_names_keep_matconvnets_meaning_in_vgg(network):
    built = network("vgg16")

    assert built.resolve("conv4_2") == "block4_conv2_preact"  # MatConvNet's conv4_2: before the ReLU
    assert built.resolve("relu5_1") == "block5_conv1"
    assert built.resolve("block5_relu1") == "block5_conv1"  # naming 1's ReLU name, kept as an alias
    assert built.resolve("pool3") == "block3_pool"
    assert built.output_shapes(64, 64, layers=["conv1_1"]) == {"block1_conv1_preact": (1, 64, 64, 64)}


def test_keras_head_names_mean_keras_tensors_when_the_head_is_built(network):
    built = network("vgg16", include_top=True)

    # keras.applications' fc1 and fc2 are Dense layers with a ReLU, its predictions the softmax.
    assert [built.resolve(alias) for alias in ("fc1", "fc2", "predictions")] == ["relu6", "relu7", "prob"]


def keras_applications_vgg16():
    """keras.applications' VGG16 trunk (random weights, built offline) for 32x32 inputs."""
    return keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))


def test_every_keras_applications_vgg16_name_is_the_same_tensor_here(network):
    built, reference = network("vgg16"), keras_applications_vgg16()
    for layer in reference.layers:  # the reference computes with this network's weights
        if layer.weights:
            layer.set_weights(built.model.get_layer(f"{layer.name}_preact").get_weights())
    names = [layer.name for layer in reference.layers if not isinstance(layer, keras.layers.InputLayer)]
    images = random_images(32, 32)

    ours = activations(built, images, [built.resolve(name) for name in names])
    theirs = keras.Model(reference.input, [reference.get_layer(name).output for name in names])(
        built.spec.preprocess(images))  # keras.applications leaves the "caffe" preprocessing to its caller

    assert names[0] == "block1_conv1" and names[-1] == "block5_pool" and len(names) == 18
    for name, output in zip(names, theirs, strict=True):
        np.testing.assert_allclose(ours[built.resolve(name)], keras.ops.convert_to_numpy(output), rtol=1e-4,
                                   atol=1e-3, err_msg=name)
    assert ours["block2_conv2"].min() == 0.0  # the ReLU output, as in keras.applications


def test_the_preact_layer_is_the_convolution_before_the_keras_named_relu(network):
    built = network("vgg16")
    outputs = activations(built, random_images(12, 12), ["block2_conv2_preact", "block2_conv2"])

    assert isinstance(built.model.get_layer("block2_conv2_preact"), keras.layers.Conv2D)
    assert (outputs["block2_conv2_preact"] < 0).any()
    np.testing.assert_array_equal(np.maximum(outputs["block2_conv2_preact"], 0), outputs["block2_conv2"])


@pytest.mark.parametrize("name", list_networks())
def test_an_unknown_layer_is_an_error_naming_it_the_network_and_the_known_layers(name, network):
    built = network(name)

    with pytest.raises(DeepRestoreError) as error:
        built.resolve("conv9_9")

    message = str(error.value)
    assert "'conv9_9'" in message and f"'{name}'" in message
    assert f"Known layers: {', '.join(built.layers[:KNOWN_SHOWN])}" in message
    assert (f"({len(built.layers)} in all)" in message) == (len(built.layers) > KNOWN_SHOWN)
    assert "\n" not in message
    with pytest.raises(DeepRestoreError, match="conv9_9"):
        built.output_shapes(*built.spec.input_size, layers=["conv9_9"])


@pytest.mark.parametrize("name", list_networks())
def test_head_layers_without_the_head_are_an_error_about_top(name, network):
    built = network(name)

    for layer in built.spec.head:
        with pytest.raises(DeepRestoreError, match=rf"'{layer}'.*classifier head.*--top"):
            built.resolve(layer)


def test_output_shapes_on_an_input_too_small_for_the_head_is_an_error(network):
    built = network("vgg16", include_top=True)

    with pytest.raises(DeepRestoreError, match=r"100x100 is too small for network 'vgg16'.*224x224"):
        built.output_shapes(100, 100)
    # The trunk alone works at that size: only the 7x7 fc6 needs the larger input.
    assert built.output_shapes(100, 100, layers=["block5_pool"]) == {"block5_pool": (1, 3, 3, 512)}


def test_output_shapes_on_an_input_too_small_for_the_trunk_is_an_error(network):
    with pytest.raises(DeepRestoreError, match="2x2 is too small for network 'tiny'"):
        network("tiny").output_shapes(2, 2)


# --- preprocessing --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list_networks())
def test_the_preprocess_layer_equals_the_numpy_preprocessing(name, network):
    built, images = network(name), random_images(5, 6)

    output = activations(built, images, ["preprocess"])["preprocess"]

    np.testing.assert_allclose(output, built.spec.preprocess(images), rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(built.spec.deprocess(built.spec.preprocess(images)), images, atol=1e-6)


@pytest.mark.parametrize(
    "name, mean_bgr",
    [
        ("vgg16", (103.939, 116.779, 123.68)),
        ("vgg19", (103.939, 116.779, 123.68)),
        ("alexnet", (104.00698793, 116.66876762, 122.67891434)),
    ],
)
def test_caffe_networks_see_bgr_on_the_0_255_scale_minus_the_imagenet_mean(name, mean_bgr, network):
    built, images = network(name), random_images(5, 6)

    expected = images * 255.0
    expected = expected[..., ::-1] - np.array(mean_bgr, np.float32)

    np.testing.assert_allclose(activations(built, images, ["preprocess"])["preprocess"], expected, atol=1e-4)
    np.testing.assert_allclose(built.spec.preprocess(images), expected, atol=1e-4)
    red = np.zeros((1, 1, 1, 3), np.float32) + np.array([1.0, 0.0, 0.0])
    np.testing.assert_allclose(built.spec.preprocess(red)[0, 0, 0], [-mean_bgr[0], -mean_bgr[1], 255 - mean_bgr[2]])


def test_tiny_centres_rgb_on_zero_without_rescaling():
    images = random_images(4, 4)

    np.testing.assert_allclose(get_spec("tiny").preprocess(images), images - 0.5)


# --- activations and pooling ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, convolution, relu",
    [("vgg16", "block1_conv1_preact", "block1_conv1"), ("alexnet", "conv1", "relu1"), ("tiny", "conv2", "relu2")],
)
def test_the_relu_layer_is_the_rectified_pre_activation(name, convolution, relu, network):
    outputs = activations(network(name), random_images(19, 19), [convolution, relu])

    assert (outputs[convolution] < 0).any()  # so the two layers really differ
    np.testing.assert_array_equal(np.maximum(outputs[convolution], 0), outputs[relu])


@pytest.mark.parametrize("name", list_networks())
def test_the_pooling_option_picks_max_or_average_pooling_layers(name, network):
    pooling_layers = {
        pooling: [layer for layer in network(name, pooling=pooling).model.layers if "Pooling" in type(layer).__name__]
        for pooling in ("max", "average")
    }

    assert pooling_layers["max"] and len(pooling_layers["max"]) == len(pooling_layers["average"])
    assert all(isinstance(layer, keras.layers.MaxPooling2D) for layer in pooling_layers["max"])
    assert all(isinstance(layer, keras.layers.AveragePooling2D) for layer in pooling_layers["average"])


def test_average_pooling_is_the_mean_of_each_2x2_block_and_changes_the_pool_outputs(network):
    images = random_images(8, 8)
    max_pooled = activations(network("tiny", pooling="max"), images, ["relu1", "pool1"])
    average_pooled = activations(network("tiny", pooling="average"), images, ["relu1", "pool1"])

    np.testing.assert_array_equal(max_pooled["relu1"], average_pooled["relu1"])  # same seed, same weights
    blocks = average_pooled["relu1"].reshape(1, 4, 2, 4, 2, 8)
    np.testing.assert_allclose(average_pooled["pool1"], blocks.mean(axis=(2, 4)), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(max_pooled["pool1"], blocks.max(axis=(2, 4)), rtol=1e-6)
    assert not np.allclose(max_pooled["pool1"], average_pooled["pool1"])


# --- AlexNet's Caffe layers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings", [{}, {"radius": 1, "alpha": 1e-3, "beta": 0.5, "bias": 2.0}], ids=["caffe-defaults", "custom"]
)
def test_local_response_normalisation_equals_the_numpy_formula(settings):
    inputs = 100.0 * np.random.default_rng(1).standard_normal((2, 3, 4, 20)).astype(np.float32)
    layer = LocalResponseNormalization(**settings)
    reference = lrn_reference(inputs, layer.radius, layer.alpha, layer.beta, layer.bias)

    output = keras.ops.convert_to_numpy(layer(inputs))

    assert np.abs(reference / inputs - 1).max() > 0.3  # large enough inputs for the normalisation to matter
    np.testing.assert_allclose(output, reference, rtol=1e-5)


def test_alexnet_normalises_with_caffes_lrn_settings_after_the_relu(network):
    built = network("alexnet")
    norm = built.model.get_layer("norm1")

    # Caffe's local_size 5, alpha 1e-4 is TensorFlow's radius 2, alpha 1e-4 / 5.
    assert (norm.radius, norm.alpha, norm.beta, norm.bias) == (2, 2e-5, 0.75, 1.0)
    outputs = activations(built, random_images(23, 23), ["relu1", "norm1"])
    np.testing.assert_allclose(outputs["norm1"], lrn_reference(outputs["relu1"], 2, 2e-5, 0.75, 1.0), rtol=1e-5)


@pytest.mark.parametrize("layer, kernel_shape", [("conv2", (5, 5, 48, 256)), ("conv4", (3, 3, 192, 384))])
def test_alexnet_grouped_convolutions_equal_two_separate_convolutions(layer, kernel_shape, network):
    convolution = network("alexnet").model.get_layer(layer)
    kernel, bias = convolution.get_weights()
    inputs = np.random.default_rng(2).standard_normal((1, 7, 7, 2 * kernel_shape[2])).astype(np.float32)

    output = keras.ops.convert_to_numpy(convolution(inputs))

    assert kernel.shape == kernel_shape  # Keras's grouped layout, as in bvlc_alexnet.npy
    expected = grouped_convolution_reference(inputs, kernel, bias, groups=2)
    np.testing.assert_allclose(output, expected, rtol=1e-4, atol=1e-4)
    ungrouped = grouped_convolution_reference(inputs, np.concatenate([kernel, kernel], axis=2), bias, groups=1)
    assert not np.allclose(output, ungrouped, atol=1e-2)


# --- random weights -------------------------------------------------------------------------------------


def kernels(built):
    return {layer.name: layer.get_weights()[0] for layer in built.model.layers if layer.weights}


def test_random_weights_with_the_same_seed_are_equal_and_different_seeds_differ():
    first, again, other = (create_network("tiny", weights="random", include_top=True, seed=seed) for seed in (3, 3, 4))

    assert kernels(first).keys() == {"conv1", "conv2", "fc3"}
    for layer, kernel in kernels(first).items():
        np.testing.assert_array_equal(kernel, kernels(again)[layer])
        assert not np.allclose(kernel, kernels(other)[layer])
    assert first.weights.sha256 == again.weights.sha256 != other.weights.sha256


def test_random_layers_of_one_shape_get_independent_kernels(network):
    built = network("vgg16")
    first, second, third = (built.model.get_layer(f"block5_conv{index}_preact").get_weights()[0] for index in (1, 2, 3))

    assert not np.array_equal(first, second) and not np.array_equal(second, third)
    assert abs(np.corrcoef(first.ravel(), second.ravel())[0, 1]) < 0.05
