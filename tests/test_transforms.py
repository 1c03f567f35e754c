"""Transforms and tiles: blur, scaling, zoom; tile geometry; tiled gradients against whole-image ones."""

import keras
import numpy as np
import pytest

from deeprestore import backend, objectives, transforms
from deeprestore.errors import DeepRestoreError
from deeprestore.optimise import Engine

# The receptive field of tiny's relu2 reaches 4 pixels beyond a pixel's 2x2 pooling cell on each side.
BORDER = 8


@pytest.fixture(scope="module")
def engine(tiny):
    return Engine.for_objective(-objectives.l2("relu2"), tiny)


def away_from_borders(height, width, tile):
    """A mask of the pixels at least BORDER pixels away from every tile border of a contiguous grid."""
    mask = np.ones((height, width), bool)
    for border in range(0, height + 1, tile):
        mask[max(0, border - BORDER) : border + BORDER] = False
    for border in range(0, width + 1, tile):
        mask[:, max(0, border - BORDER) : border + BORDER] = False
    return mask


def test_tiled_and_untiled_gradients_agree_away_from_tile_borders(engine, rng):
    images = rng.uniform(size=(2, 64, 96, 3)).astype(np.float32)
    total, values, gradient = engine(images)
    tiled_total, tiled_values, tiled_gradient = engine(images, tiling=transforms.Tiling(32, "contiguous"))
    mask = away_from_borders(64, 96, 32)
    assert mask.sum() > 0.2 * mask.size
    np.testing.assert_allclose(tiled_gradient[:, mask], gradient[:, mask],
                               rtol=1e-4, atol=1e-6 * np.abs(gradient).max())
    assert not np.allclose(tiled_gradient[:, ~mask], gradient[:, ~mask], rtol=1e-4, atol=1e-6 * np.abs(gradient).max())
    assert tiled_total == pytest.approx(total, rel=0.2) and set(tiled_values) == set(values)


def test_an_image_within_one_tile_is_not_tiled(engine, rng):
    images = rng.uniform(size=(1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(engine(images, tiling=transforms.Tiling(32))[2], engine(images)[2])


@pytest.mark.parametrize("mode", ["contiguous", "random"])
@pytest.mark.parametrize("height, width, tile", [(64, 64, 32), (70, 45, 32), (50, 50, 50)])
def test_each_pixel_is_kept_from_exactly_one_tile(mode, height, width, tile):
    coverage = np.zeros((height, width), int)
    for box in transforms.tile_boxes(height, width, tile, mode):
        top, bottom, left, right = box.kept
        coverage[box.top + top : box.top + bottom, box.left + left : box.left + right] += 1
        assert box.top + box.height <= height and box.left + box.width <= width
    np.testing.assert_array_equal(coverage, 1)


def test_overlapping_tiles_cover_shared_regions_several_times():
    # Seed 003: 124 px overlap on 224 px tiles, so parts of the image are updated up to 3 times per axis.
    coverage = np.zeros((448, 448), int)
    for box in transforms.tile_boxes(448, 448, 224, "overlap", overlap=124):
        coverage[box.top : box.top + box.height, box.left : box.left + box.width] += 1
    assert coverage.min() >= 1 and coverage.max() >= 4
    assert coverage[0, 0] == 1 and coverage[224, 224] > 1


@pytest.mark.parametrize("height, width, tile", [(1267, 1537, 512), (4096, 4096, 512), (600, 1000, 224)])
def test_even_tiles_hold_the_pixels_and_no_more(height, width, tile):
    boxes = transforms.tile_boxes(height, width, tile, "random")
    assert all(box.height <= tile and box.width <= tile for box in boxes)
    rows, columns = {box.top for box in boxes}, {box.left for box in boxes}
    # At most one shared pixel row (column) between neighbouring tiles: the tiles cost what the pixels do.
    assert sum(box.height * box.width for box in boxes) <= (height + len(rows) - 1) * (width + len(columns) - 1)
    assert sum(box.height * box.width for box in boxes) < 1.005 * height * width


def marked_tile_gradient(tiling, images, shift):
    """The tiled gradient of a stand-in loss whose gradient is 1 on each tile's first row and column and 0.5
    elsewhere."""

    def loss(tiles):
        marker = np.full(tiles.shape, 0.5, np.float32)
        marker[:, 0] = marker[:, :, 0] = 1.0
        return keras.ops.sum(tiles * marker), {}

    return backend.compiled(lambda values, offset: tiling.value_and_gradient(loss, values, offset, ())[2])(
        images, shift)


def test_random_tiles_cover_every_pixel_and_move_their_borders_each_step():
    tiling = transforms.Tiling(16, "random")
    images = np.zeros((1, 40, 40, 3), np.float32)
    borders = []
    for shift in tiling.draw(np.random.default_rng(0), 4, 40, 40):
        gradient = marked_tile_gradient(tiling, images, shift)
        assert (gradient > 0).all()
        borders.append(gradient[0, :, :, 0] == gradient.max())
    assert not all(np.array_equal(borders[0], other) for other in borders[1:])
    assert np.logical_or.reduce(borders).mean() > 3 * borders[0].mean() * 0.9


def test_a_tile_larger_than_the_image_is_refused():
    with pytest.raises(DeepRestoreError, match=r"tile \(128 px\) is larger than the image \(64x96\)"):
        transforms.check_tile(128, 64, 96)
    transforms.check_tile(64, 64, 96)


def test_an_overlap_not_smaller_than_the_tile_is_refused():
    with pytest.raises(DeepRestoreError, match="overlap of 32 px"):
        transforms.tile_boxes(64, 64, 32, "overlap", overlap=32)


def test_an_unknown_tile_mode_is_refused():
    with pytest.raises(DeepRestoreError, match="Unknown tile mode 'diagonal'"):
        transforms.Tiling(32, "diagonal")


def test_blur_smooths_and_keeps_the_mean(rng):
    images = rng.uniform(size=(2, 32, 32, 3)).astype(np.float32)
    blurred = np.asarray(transforms.gaussian_blur(1.0)(images))
    assert blurred.dtype == np.float32 and blurred.shape == images.shape
    assert np.abs(np.diff(blurred, axis=2)).mean() < 0.5 * np.abs(np.diff(images, axis=2)).mean()
    np.testing.assert_allclose(blurred.mean(axis=(1, 2)), images.mean(axis=(1, 2)), atol=1e-3)
    np.testing.assert_array_equal(transforms.gaussian_blur(0.0)(images), images)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.5])
def test_blur_matches_scipy(rng, sigma):
    import scipy.ndimage

    images = rng.uniform(size=(2, 24, 17, 3)).astype(np.float32)
    expected = scipy.ndimage.gaussian_filter(images, sigma=(0, sigma, sigma, 0), mode="reflect")
    np.testing.assert_allclose(np.asarray(transforms.gaussian_blur(sigma)(images)), expected, atol=1e-6)


@pytest.mark.parametrize("transform", [transforms.Jitter(3), transforms.Pad(4, 0.0), transforms.RandomScale((0.9, 1.1)),
                                       transforms.RandomRotation((-10, 10))],
                         ids=lambda transform: transform.key[0])
def test_random_transforms_are_differentiable_and_seeded(rng, transform):
    images = rng.uniform(size=(1, 20, 24, 3)).astype(np.float32)
    draws = transform.draw(np.random.default_rng(7), 3)
    np.testing.assert_array_equal(draws, transform.draw(np.random.default_rng(7), 3))
    weights = rng.normal(size=transform.apply(images, draws[0]).shape).astype(np.float32)

    def function(values, draw):
        return backend.gradient(lambda inputs: (keras.ops.sum(weights * transform.apply(inputs, draw)), {}), values)

    total, _, gradient = backend.compiled(function)(images, draws[0])
    # The transforms are linear in the images (the pad is of zeros): the gradient's inner product with them is
    # the value.
    assert float(np.sum(gradient * images)) == pytest.approx(float(total), rel=1e-4)
    assert np.abs(gradient).sum() > 0


def test_rotation_by_zero_and_scaling_by_one_keep_the_images(rng):
    images = rng.uniform(size=(1, 9, 12, 3)).astype(np.float32)
    np.testing.assert_allclose(transforms.RandomRotation((0,)).apply(images, np.zeros(1, np.float32)), images,
                               atol=1e-6)
    np.testing.assert_allclose(transforms.RandomScale((1.0,)).apply(images, np.ones(1, np.float32)), images, atol=1e-6)


def test_scaling_moves_pixels_towards_grey():
    images = np.array([0.0, 0.5, 1.0], np.float32).reshape(1, 1, 3, 1).repeat(3, axis=-1)
    np.testing.assert_allclose(transforms.scale_towards(0.9)(images)[0, 0, :, 0], [0.05, 0.5, 0.95], rtol=1e-6)


def test_zoom_keeps_the_size_and_magnifies_the_centre():
    images = np.zeros((1, 40, 40, 3), np.float32)
    images[:, 18:22, 18:22] = 1.0
    zoomed = transforms.zoom(2.0)(images)
    assert zoomed.shape == images.shape
    assert (zoomed > 0.5).sum() > 3 * (images > 0.5).sum()
