"""Inversion modules and their specs: output shapes of every default module, and clear spec errors."""

import json

import keras
import numpy as np
import pytest

from deeprestore.errors import DeepRestoreError
from deeprestore.inversion import modules, specs
from deeprestore.inversion.stack import Stack
from deeprestore.networks import create_network, list_networks
from deeprestore.settings import MODULE_TYPES

# The sizes the default chains are checked at: small for VGG (size-agnostic), native for AlexNet.
SIZES = {"vgg16": (64, 64), "vgg19": (64, 64), "alexnet": (227, 227), "tiny": (16, 16)}


@pytest.fixture(scope="module")
def networks():
    return {name: create_network(name, weights="random") for name in list_networks()}


@pytest.mark.parametrize("module_type", MODULE_TYPES)
@pytest.mark.parametrize("name", list_networks())
def test_every_default_module_outputs_its_targets_shape(networks, name, module_type):
    network = networks[name]
    source = specs.invertible_layers(network)[-1]
    chain = specs.default_specs(network, source, module_type=module_type)
    resolved = specs.check_specs(network, chain, SIZES[name])
    assert len(chain) == len(specs.invertible_layers(network)) - 1
    for spec in resolved.specs:
        # Keras's own shape arithmetic on the unbuilt layers: no weights are drawn for 18 VGG modules.
        shape = (1, *resolved.shapes[resolved.input_layer[spec.name]])
        target_shape = resolved.shapes[resolved.target_layer[spec.name]]
        for layer in modules.module_layers(spec, target_shape[-1]):
            shape = layer.compute_output_shape(shape)
        assert tuple(shape[1:]) == target_shape, spec.name


def test_a_built_module_runs_at_its_specs_shapes(tiny):
    resolved = specs.check_specs(tiny, specs.default_specs(tiny, "pool2", module_type="upconv"), (16, 16))
    stack = Stack.build(tiny, resolved)
    for spec in resolved.specs:
        inputs = np.zeros((2, *resolved.shapes[resolved.input_layer[spec.name]]), "float32")
        output = stack.modules[spec.name](inputs)
        assert tuple(output.shape[1:]) == resolved.shapes[resolved.target_layer[spec.name]]


def test_the_default_zoo_follows_the_thesis(networks):
    vgg = specs.default_specs(networks["vgg16"], "pool3")
    assert [spec.name for spec in vgg[:4]] == ["pool3_to_conv3_3", "conv3_3_to_conv3_2", "conv3_2_to_conv3_1",
                                               "conv3_1_to_pool2"]
    assert len(vgg) == 10 and len(specs.default_specs(networks["vgg16"], "pool1")) == 3
    assert {spec.kernel_sizes for spec in vgg} == {(5, 5)}
    assert [spec.hidden for spec in vgg] == [256] * 4 + [128] * 3 + [64] * 3
    assert vgg[0].strides == (1, 2) and vgg[1].strides == (1, 1)
    pool1, norm1 = specs.default_specs(networks["alexnet"], "pool1", "conv1", module_type="dc")
    assert (pool1.name, norm1.name, norm1.kernel_sizes) == ("pool1_to_norm1", "norm1_to_conv1", (5, 5))
    assert (pool1.kernel_sizes, pool1.strides, pool1.padding) == ((3, 3), (2, 1), ("valid", "same"))
    image = specs.default_specs(networks["alexnet"], "conv1")[0]
    assert (image.kernel_sizes, image.strides, image.hidden, image.target) == ((11, 11), (1, 4), 96, "image")


def test_a_spec_file_round_trips_through_yaml_and_json(networks, tmp_path):
    chain = specs.default_specs(networks["tiny"], "pool2", module_type="upconv")
    for name in ("modules.yaml", "modules.json"):
        path = specs.save_specs(tmp_path / name, chain, "tiny")
        assert specs.load_specs(path) == chain


def test_upsampling_repeats_pixels_and_grows_like_a_valid_transposed_convolution():
    images = np.arange(8, dtype="float32").reshape(1, 2, 2, 2)
    same = keras.ops.convert_to_numpy(modules.NearestUpsampling(2)(images))
    np.testing.assert_array_equal(same[0, :, :, 0], np.repeat(np.repeat(images[0, :, :, 0], 2, 0), 2, 1))
    valid = modules.NearestUpsampling(4, 11, "valid")(np.zeros((1, 5, 5, 1), "float32"))
    assert valid.shape[1:3] == (5 * 4 + 7, 5 * 4 + 7)


def write(tmp_path, entries):
    path = tmp_path / "modules.json"
    path.write_text(json.dumps({"modules": entries}))
    return path


@pytest.mark.parametrize("entries, message", [
    ([{"name": "a", "input": "conv9", "target": "image"}],
     "Module 'a' has input 'conv9', which is not a layer of 'tiny'"),
    ([{"name": "a", "input": "pool1", "target": "conv7"}], "has target 'conv7', which is not a layer"),
    ([{"name": "a", "input": "conv1", "target": "image", "padding": ["same", "valid"]}],
     "Module 'a' maps conv1 (16x16x8) to 20x20, but its target image is 16x16"),
    ([{"name": "a", "input": "pool1", "target": "conv1"}], "maps pool1 (8x8x8) to 8x8, but its target conv1 is 16x16"),
    ([{"name": "a", "input": "conv1", "target": "pool1"}], "not below it"),
    ([{"name": "a", "input": "b", "target": "conv1"}, {"name": "b", "input": "a", "target": "image"}], "cycle"),
    ([{"name": "a", "input": "conv1", "target": "image"}] * 2, "Module name 'a' is used twice"),
    ([{"name": "conv1", "input": "conv1", "target": "image"}], "is also a layer"),
    ([{"name": "a", "input": "conv1", "target": "image", "kind": "cd"}], "unknown field 'kind'"),
    ([{"name": "a", "input": "conv1"}], "field 'target' is missing"),
    ([{"name": "a", "input": "conv1", "target": "image", "type": "xx"}], "type 'xx' is unknown"),
    ([{"name": "a", "input": "conv1", "target": "image", "strides": [1, 0]}],
     "strides is [1, 0]; expected two positive"),
    ([{"name": "a", "input": "conv1", "target": "image", "in_loss": "yes"}],
     "in_loss is 'yes'; expected true or false"),
])
def test_spec_errors_say_what_is_wrong_in_one_line(tiny, tmp_path, entries, message):
    with pytest.raises(DeepRestoreError) as error:
        specs.check_specs(tiny, specs.load_specs(write(tmp_path, entries)), (16, 16))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_unreadable_or_empty_spec_files_are_clear_errors(tmp_path):
    (tmp_path / "bad.yaml").write_text("modules: [unclosed")
    with pytest.raises(DeepRestoreError, match="could not be parsed"):
        specs.load_specs(tmp_path / "bad.yaml")
    (tmp_path / "empty.yaml").write_text("network: tiny\n")
    with pytest.raises(DeepRestoreError, match="holds no modules"):
        specs.load_specs(tmp_path / "empty.yaml")
    with pytest.raises(DeepRestoreError, match="not found"):
        specs.load_specs(tmp_path / "missing.yaml")


def test_default_chains_refuse_layers_that_are_not_operations(tiny):
    with pytest.raises(DeepRestoreError, match=r"'relu1' .* is not the output of an operation"):
        specs.default_specs(tiny, "relu1")
    with pytest.raises(DeepRestoreError, match="target must be below the source"):
        specs.default_specs(tiny, "conv1", "pool2")


def test_a_chain_reconstructs_from_any_layer_along_it(tiny):
    resolved = specs.check_specs(tiny, specs.default_specs(tiny, "pool2"), (16, 16))
    assert resolved.chain_from("pool2") == resolved.names
    assert resolved.chain_from("pool1") == ("pool1_to_conv1", "conv1_to_image")
    assert resolved.final() == ("conv1_to_image",) and resolved.sources() == ("pool2",)
    stack = Stack.build(tiny, resolved)
    outputs = stack.reconstruct(np.zeros((3, 8, 8, 8), "float32"), "pool1")
    assert outputs["conv1_to_image"].shape == (3, 16, 16, 3)


def test_modules_work_in_units_of_their_layers_scales(rng):
    spec = specs.ModuleSpec(name="m", input="conv1", target="image", hidden=4)
    plain = modules.build_module(spec, 2, 3, seed=1)
    scaled = modules.build_module(spec, 2, 3, seed=1, input_scale=10.0, output_scale=3.0)
    inputs = rng.normal(size=(1, 6, 6, 2)).astype(np.float32)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scaled(inputs * 10.0)),
                               3.0 * keras.ops.convert_to_numpy(plain(inputs)), rtol=1e-5, atol=1e-5)
