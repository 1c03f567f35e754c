"""Tests for the activation cache: hits, misses, invalidation, batching, odd keys, damaged files."""

import h5py
import numpy as np
import pytest

from deeprestore.cache import ActivationCache, group_name
from deeprestore.errors import DeepRestoreError

LAYERS = ("block1_conv1", "block2_conv1")
METADATA = {"network": "tiny", "weights_sha256": "abc123", "preprocessing": "caffe-bgr"}


class RecordingCompute:
    """A stand-in network: each layer's activation is the image times a layer-specific factor."""

    def __init__(self):
        self.calls = []

    def __call__(self, images, missing_layers):
        self.calls.append((images.shape, tuple(missing_layers)))
        return {layer: images * (index + 1.0) for index, layer in enumerate(LAYERS)}


def random_image(seed, height=4, width=5):
    return np.random.default_rng(seed).random((height, width, 3), dtype=np.float32)


def test_the_second_lookup_is_served_from_the_cache(tmp_path):
    cache, compute, image = ActivationCache(tmp_path / "cache.h5"), RecordingCompute(), random_image(0)

    first = cache.get_or_compute("start", image, LAYERS, compute, **METADATA)
    second = cache.get_or_compute("start", image, LAYERS, compute, **METADATA)

    assert len(compute.calls) == 1
    assert (cache.stats.hits, cache.stats.misses, cache.stats.compute_calls) == (2, 2, 1)
    for layer, factor in zip(LAYERS, (1.0, 2.0)):
        assert second[layer].shape == (4, 5, 3)
        np.testing.assert_array_equal(first[layer], image * factor)
        np.testing.assert_array_equal(second[layer], image * factor)


def test_a_fresh_cache_object_reads_what_another_one_wrote(tmp_path):
    writer = ActivationCache(tmp_path / "nested" / "cache.h5")
    writer.get_or_compute("start", random_image(0), LAYERS, RecordingCompute(), **METADATA)
    compute = RecordingCompute()

    cache = ActivationCache(tmp_path / "nested" / "cache.h5")
    cache.get_or_compute("start", random_image(0), LAYERS, compute, **METADATA)

    assert compute.calls == []
    assert cache.stats.hits == 2


@pytest.mark.parametrize("change", [
    {"network": "vgg16"}, {"weights_sha256": "def456"}, {"preprocessing": "torch"},
    {"image": random_image(0).reshape(5, 4, 3)}, {"image": random_image(1)},
], ids=["network", "weights", "preprocessing", "image_size", "image_content"])
def test_any_changed_metadata_discards_the_entry_and_recomputes_it(tmp_path, change):
    cache, compute = ActivationCache(tmp_path / "cache.h5"), RecordingCompute()
    cache.get_or_compute("start", random_image(0), LAYERS, compute, **METADATA)
    changed = {**METADATA, **change}
    image = changed.pop("image", random_image(0))

    result = cache.get_or_compute("start", image, LAYERS, compute, **changed)

    assert [missing for _, missing in compute.calls] == [LAYERS, LAYERS]
    np.testing.assert_array_equal(result["block2_conv1"], image * 2.0)
    assert cache.contains("start", "block1_conv1", image=image, **changed)
    assert not cache.contains("start", "block1_conv1", image=random_image(0), **METADATA)


def test_an_entry_written_before_the_keras_layer_naming_is_never_served(tmp_path):
    """Before naming 2 a VGG entry `block2_conv2` held the pre-activation; its group has no
    `layer_naming`, exactly as that version wrote it. Today's `block2_conv2` is the ReLU output."""
    cache, image = ActivationCache(tmp_path / "cache.h5"), random_image(0)
    old = {"network": "vgg16 pooling=max dtype=float32", "weights_sha256": "abc123", "preprocessing": "caffe-bgr"}
    cache.get_or_compute("start", image, ("block2_conv2",), lambda images, missing: {"block2_conv2": -images}, **old)
    with h5py.File(tmp_path / "cache.h5", "a") as file:
        assert file[group_name("start")].attrs["layer_naming"] == "2"
        del file[group_name("start")].attrs["layer_naming"]
    assert not cache.contains("start", "block2_conv2", image=image, **old)

    result = cache.get_or_compute("start", image, ("block2_conv2",),
                                  lambda images, missing: {"block2_conv2": np.maximum(-images, 0)}, **old)

    np.testing.assert_array_equal(result["block2_conv2"], np.zeros_like(image))  # recomputed, not the old -image
    assert cache.contains("start", "block2_conv2", image=image, **old)
    assert cache.stats.misses == 2 and cache.stats.hits == 0


def test_only_missing_layers_are_computed_for_a_cached_image(tmp_path):
    cache, compute, image = ActivationCache(tmp_path / "cache.h5"), RecordingCompute(), random_image(0)
    cache.get_or_compute("start", image, ("block1_conv1",), compute, **METADATA)

    result = cache.get_or_compute("start", image, LAYERS, compute, **METADATA)

    assert [missing for _, missing in compute.calls] == [("block1_conv1",), ("block2_conv1",)]
    assert sorted(result) == sorted(LAYERS)
    assert (cache.stats.hits, cache.stats.misses) == (1, 2)
    assert cache.contains("start", "block2_conv1", **METADATA)


def test_get_or_compute_many_calls_compute_once_per_image_size(tmp_path):
    cache, compute = ActivationCache(tmp_path / "cache.h5"), RecordingCompute()
    images = [random_image(0), random_image(1), random_image(2, height=8, width=8), random_image(3)]
    keys = ["a", "b", "c", "d"]
    cache.get_or_compute("b", images[1], LAYERS, compute, **METADATA)
    compute.calls.clear()

    results = cache.get_or_compute_many(keys, images, LAYERS, compute, **METADATA)

    assert sorted(compute.calls) == [((1, 8, 8, 3), LAYERS), ((2, 4, 5, 3), LAYERS)]
    assert list(results) == keys
    for key, image in zip(keys, images):
        np.testing.assert_array_equal(results[key]["block2_conv1"], image * 2.0)


def test_keys_with_slashes_and_dots_are_stored_under_one_flat_group(tmp_path):
    cache, compute = ActivationCache(tmp_path / "cache.h5"), RecordingCompute()
    keys = ["images/cat.png", "../dog.jpg", "images_cat.png"]

    cache.get_or_compute_many(keys, [random_image(seed) for seed in range(3)], LAYERS, compute, **METADATA)

    assert cache.keys() == sorted(keys)
    with h5py.File(tmp_path / "cache.h5", "r") as file:
        assert sorted(file) == sorted(group_name(key) for key in keys)
        assert all("/" not in name and "." not in name for name in file)
        assert file[group_name("images/cat.png")].attrs["key"] == "images/cat.png"
        assert tuple(file[group_name("../dog.jpg")].attrs["image_size"]) == (4, 5)


def test_a_file_that_is_not_hdf5_is_reported_with_what_to_do(tmp_path):
    path = tmp_path / "cache.h5"
    path.write_text("not an HDF5 file")

    with pytest.raises(DeepRestoreError, match=r"is not an HDF5 file.*delete it or pass another --cache"):
        ActivationCache(path)


def test_an_incomplete_group_is_treated_as_missing(tmp_path):
    cache, compute, image = ActivationCache(tmp_path / "cache.h5"), RecordingCompute(), random_image(0)
    cache.get_or_compute("start", image, LAYERS, compute, **METADATA)
    # Simulate a write cut short: the datasets exist but the group was never marked complete.
    with h5py.File(tmp_path / "cache.h5", "a") as file:
        file[group_name("start")].attrs["complete"] = False

    assert not cache.contains("start", "block1_conv1", **METADATA)
    assert cache.keys() == []
    cache.get_or_compute("start", image, LAYERS, compute, **METADATA)

    assert len(compute.calls) == 2
    assert cache.contains("start", "block1_conv1", image=image, **METADATA)


def test_compute_that_omits_a_requested_layer_is_reported(tmp_path):
    cache = ActivationCache(tmp_path / "cache.h5")

    with pytest.raises(ValueError, match="compute returned shapes"):
        cache.get_or_compute("start", random_image(0), LAYERS, lambda images, missing: {}, **METADATA)

    assert cache.keys() == []


def test_an_image_that_is_not_rgb_is_refused(tmp_path):
    cache = ActivationCache(tmp_path / "cache.h5")

    with pytest.raises(DeepRestoreError, match=r"expected \(height, width, 3\)"):
        cache.get_or_compute("gray", np.zeros((4, 4), np.float32), LAYERS, RecordingCompute(), **METADATA)


@pytest.mark.parametrize("poison", ["values", "shape", "text", "dataset_for_group"])
def test_a_poisoned_entry_with_the_right_name_and_metadata_is_recomputed(poison, tmp_path):
    path, compute, image = tmp_path / "cache.h5", RecordingCompute(), random_image(0)
    cache = ActivationCache(path)
    cache.get_or_compute("start", image, LAYERS, compute, **METADATA)
    with h5py.File(path, "a") as file:
        group = file[group_name("start")]
        if poison == "dataset_for_group":
            del file[group_name("start")]
            file[group_name("start")] = np.zeros(3)
        else:
            del group["block1_conv1"]
            group["block1_conv1"] = {"values": image * 7, "shape": np.zeros((2, 2), np.float32),
                                     "text": "not activations"}[poison]

    result = cache.get_or_compute("start", image, LAYERS, compute, **METADATA)

    assert len(compute.calls) == 2
    np.testing.assert_array_equal(result["block1_conv1"], image)
    assert cache.contains("start", "block1_conv1", image=image, **METADATA)


def test_a_cache_in_a_folder_that_cannot_be_written_is_a_one_line_error_and_stays_unchanged(tmp_path):
    import os

    folder = tmp_path / "shared"
    cache = ActivationCache(folder / "cache.h5")
    cache.get_or_compute("start", random_image(0), LAYERS, RecordingCompute(), **METADATA)
    before = (folder / "cache.h5").read_bytes()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user that may write anywhere")
        with pytest.raises(DeepRestoreError, match=r"could not be written.*unchanged") as error:
            cache.get_or_compute("other", random_image(1), LAYERS, RecordingCompute(), **METADATA)
    finally:
        folder.chmod(0o755)

    assert "\n" not in str(error.value) and (folder / "cache.h5").read_bytes() == before


def test_a_full_disk_during_a_write_is_a_one_line_error_and_leaves_the_cache_and_no_copy(tmp_path, monkeypatch):
    import errno
    import os

    path = tmp_path / "cache.h5"
    cache = ActivationCache(path)
    cache.get_or_compute("start", random_image(0), LAYERS, RecordingCompute(), **METADATA)
    before = path.read_bytes()

    def full_disk(descriptor, *arguments, **keywords):
        os.close(descriptor)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", full_disk)
    with pytest.raises(DeepRestoreError, match=r"No space left on device.*unchanged") as error:
        cache.get_or_compute("other", random_image(1), LAYERS, RecordingCompute(), **METADATA)

    assert "\n" not in str(error.value) and path.read_bytes() == before
    assert sorted(item.name for item in tmp_path.iterdir()) == ["cache.h5", "cache.h5.lock"]


@pytest.mark.parametrize("change", [dict(pooling="average"), dict(precision="bfloat16")], ids=["pooling", "precision"])
def test_targets_of_another_pooling_or_precision_are_computed_not_read_from_a_shared_cache(tmp_path, change):
    from deeprestore.networks import create_network
    from deeprestore.recipes.common import TargetFeatures, network_precision

    image = random_image(0, 32, 32)

    def targets(pooling="max", precision="float32"):
        with network_precision(precision):
            network = create_network("tiny", "random", pooling=pooling)
        features = TargetFeatures(network, ("pool2",), tmp_path / "shared.h5")
        return features("content", "image.png", image)["pool2"], features.cache.stats

    first, _ = targets()
    again, stats = targets()
    assert stats.hits == 1 and np.array_equal(first, again)
    changed, stats = targets(**change)
    assert stats.misses == 1 and stats.hits == 0
    assert not np.allclose(changed, first, rtol=0, atol=1e-6)


def test_the_memory_cache_computes_each_layer_once_per_key_and_image_and_agrees_with_the_file(tmp_path):
    from deeprestore.cache import MemoryActivationCache

    memory, file, compute = MemoryActivationCache(), ActivationCache(tmp_path / "cache.h5"), RecordingCompute()
    kept = memory.get_or_compute("a", random_image(0), LAYERS[:1], compute, **METADATA)
    again = memory.get_or_compute("a", random_image(0), LAYERS, compute, **METADATA)
    other = memory.get_or_compute("a", random_image(1), LAYERS[:1], compute, **METADATA)  # same key, new pixels
    stored = file.get_or_compute("a", random_image(0), LAYERS, RecordingCompute(), **METADATA)

    assert (memory.stats.hits, memory.stats.misses, memory.stats.compute_calls) == (1, 3, 3)
    assert [layers for _, layers in compute.calls] == [LAYERS[:1], LAYERS[1:], LAYERS[:1]]
    assert np.array_equal(kept[LAYERS[0]], again[LAYERS[0]]) and not np.array_equal(kept[LAYERS[0]], other[LAYERS[0]])
    for layer in LAYERS:
        np.testing.assert_array_equal(again[layer], stored[layer])


def test_an_unshared_cache_leaves_no_lock_file_and_a_shared_one_keeps_its_lock_beside_it(tmp_path):
    ActivationCache(tmp_path / "own" / "activations.h5", shared=False).get_or_compute(
        "a", random_image(0), LAYERS, RecordingCompute(), **METADATA)
    ActivationCache(tmp_path / "shared" / "cache.h5").get_or_compute(
        "a", random_image(0), LAYERS, RecordingCompute(), **METADATA)

    assert sorted(path.name for path in (tmp_path / "own").iterdir()) == ["activations.h5"]
    assert sorted(path.name for path in (tmp_path / "shared").iterdir()) == ["cache.h5", "cache.h5.lock"]
