"""Corruptions (seeded, in range, each with its own property) and the step-deterministic patch data."""

import imageio.v3 as imageio
import numpy as np
import pytest

from deeprestore.errors import DeepRestoreError
from deeprestore.restoration import corruptions, data

SPECS = ["gaussian:0.1", "salt-and-pepper:0.05", "centre:0.5", "perturbation:easy", "perturbation:hard",
         "perturbation:tough"]


@pytest.fixture
def image():
    return np.random.default_rng(0).random((32, 40, 3)).astype(np.float32)


@pytest.mark.parametrize("spec", SPECS)
def test_each_corruption_is_seeded_in_range_and_keeps_shape_and_dtype(spec, image):
    corruption = corruptions.parse(spec)
    first = corruption(image, rng=3)
    assert first.shape == image.shape and first.dtype == image.dtype
    assert first.min() >= 0.0 and first.max() <= 1.0
    np.testing.assert_array_equal(first, corruption(image, rng=3))
    np.testing.assert_array_equal(first, corruption(image, rng=np.random.default_rng(3)))
    assert not np.array_equal(first, image)
    if corruption.kind != "centre":
        assert not np.array_equal(first, corruption(image, rng=4))
    assert corruptions.parse(corruption.spec) == corruption


@pytest.mark.parametrize("spec", SPECS)
def test_corruptions_work_on_grey_images(spec, image):
    grey = image[..., :1]
    assert corruptions.parse(spec)(grey).shape == grey.shape
    assert corruptions.parse(spec)(grey[..., 0]).shape == grey.shape[:2]


def test_gaussian_noise_has_the_asked_deviation_away_from_the_clipping_bounds():
    flat = np.full((200, 200), 0.5, np.float32)
    noise = corruptions.gaussian_noise(0.05)(flat, rng=0) - flat
    assert abs(noise.std() - 0.05) < 0.001 and abs(noise.mean()) < 0.001


def test_salt_and_pepper_sets_the_asked_fraction_of_pixels_to_zero_or_one_in_every_channel():
    flat = np.full((100, 100, 3), 0.5, np.float32)
    corrupted = corruptions.salt_and_pepper(0.2)(flat, rng=0)
    changed = np.any(corrupted != 0.5, axis=-1)
    assert abs(changed.mean() - 0.2) < 0.02
    assert set(np.unique(corrupted[changed])) == {0.0, 1.0}
    assert np.all(corrupted[changed] == corrupted[changed][:, :1])  # all channels of a pixel together
    assert abs((corrupted[changed][:, 0] == 1.0).mean() - 0.5) < 0.1


def test_missing_centre_zeroes_exactly_the_central_square(image):
    corrupted = corruptions.missing_centre(0.5)(image)
    mask = np.zeros(image.shape[:2], bool)
    mask[8:24, 12:28] = True  # side 0.5 x 32 = 16, centred in 32 x 40
    assert np.all(corrupted[mask] == 0.0)
    np.testing.assert_array_equal(corrupted[~mask], image[~mask])
    np.testing.assert_array_equal(corruptions.missing_centre(0.5).mask(image.shape), mask)


def test_perturbation_gets_stronger_from_easy_to_tough(image):
    flat = np.full((64, 64), 0.5, np.float32)
    errors = [np.abs(corruptions.perturbation(strength)(flat, rng=0) - flat).mean()
              for strength in ("easy", "hard", "tough")]
    assert errors[0] < errors[1] < errors[2]


def test_perturbation_jumps_are_constant_within_blocks_and_differ_between_them():
    flat = np.full((64, 64), 0.5, np.float32)
    settings = dict(corruptions.PERTURBATION_STRENGTHS["hard"], sigma=0.0, impulses=0.0, jump_fraction=1.0)
    blocks = corruptions.perturb(flat, np.random.default_rng(0), **settings).reshape(8, 8, 8, 8)
    assert np.allclose(blocks, blocks[:, :1, :, :1])  # constant inside each 8x8 block
    assert len(np.unique(blocks[:, 0, :, 0])) > 60  # a different offset in (nearly) each


@pytest.mark.parametrize("spec, message", [
    ("blur:2", "Unknown corruption 'blur:2'"),
    ("gaussian:loud", "expected a standard deviation"),
    ("gaussian:-0.1", "expected a standard deviation"),
    ("centre:1.5", "expected a fraction of the shorter side"),
    ("perturbation:extreme", "expected a strength"),
])
def test_bad_specs_are_clear_errors(spec, message):
    with pytest.raises(DeepRestoreError, match=message):
        corruptions.parse(spec)


def make_patch_data(images, **options):
    return data.PatchData.from_images(images, 8, corruptions.gaussian_noise(0.1), data.Sampling(5, seed=1), **options)


def test_batches_depend_only_on_the_seed_and_step():
    image = np.random.default_rng(0).random((64, 40, 3)).astype(np.float32)
    patches = make_patch_data([image])
    later = make_patch_data([image])
    later.batch(0)
    for left, right in zip(patches.batch(7), later.batch(7)):
        np.testing.assert_array_equal(left, right)
    inputs, targets = patches.batch(7)
    assert inputs.shape == targets.shape == (5, 8, 8, 3) and inputs.dtype == np.float32
    assert not np.array_equal(patches.batch(8)[1], targets)


def test_validation_patches_come_only_from_the_bottom_rows():
    image = np.zeros((50, 30, 1), np.float32)
    image[40:] = 1.0  # the bottom fifth is validation material
    patches = data.PatchData.from_images([image], 8, corruptions.gaussian_noise(0.0),
                                         data.Sampling(16, seed=0, validation_fraction=0.2, validation_batches=3))
    assert all(np.all(targets == 1.0) for _, targets in patches.validation())
    assert all(np.all(patches.batch(step)[1] == 0.0) for step in range(5))


def test_images_too_small_for_a_patch_are_a_clear_error():
    with pytest.raises(DeepRestoreError, match="No image has a validation part of at least 8x8"):
        make_patch_data([np.zeros((20, 20, 1), np.float32)])


def write_pairs(folder, count=10, side=32):
    rng = np.random.default_rng(0)
    (folder / "seq").mkdir(parents=True)
    clean = (rng.random((count * side, side)) * 255).astype(np.uint8)
    imageio.imwrite(folder / "seq" / "ref.png", clean)
    imageio.imwrite(folder / "seq" / "ref_noise.png", 255 - clean)
    return clean


def test_hpatches_pairs_give_noisy_inputs_and_clean_targets(tmp_path):
    clean = write_pairs(tmp_path)
    assert data.is_paired_folder(tmp_path)
    stacks, noisy, names = data.read_pairs(tmp_path)
    assert names == ["seq/ref.png"] and stacks[0].shape == (10, 32, 32)
    patches = data.PatchData.from_pairs(stacks, noisy, data.Sampling(6, seed=0))
    inputs, targets = patches.batch(0)
    assert inputs.shape == (6, 32, 32, 1)
    np.testing.assert_allclose(inputs, 1.0 - targets, atol=1e-6)
    validation_targets = np.concatenate([targets for _, targets in patches.validation()])[..., 0]
    held_out = clean.reshape(10, 32, 32)[8:] / 255.0  # the last fifth of the stack
    distances = np.abs(validation_targets[:, None] - held_out[None]).max(axis=(2, 3))
    assert np.all(distances.min(axis=1) < 1e-6)


def test_malformed_hpatches_folders_are_clear_errors(tmp_path):
    (tmp_path / "a").mkdir()
    imageio.imwrite(tmp_path / "a" / "e1_noise.png", np.zeros((64, 32), np.uint8))
    with pytest.raises(DeepRestoreError, match="has no clean twin"):
        data.read_pairs(tmp_path / "a")
    imageio.imwrite(tmp_path / "a" / "e1.png", np.zeros((60, 32), np.uint8))
    with pytest.raises(DeepRestoreError, match="height a multiple of 32"):
        data.read_pairs(tmp_path / "a")
