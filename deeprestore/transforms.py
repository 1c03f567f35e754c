"""Transforms and tiles: what an image goes through between optimisation steps.

A transform is a callable `images -> images` on a float32 `(batch, height, width, 3)` batch; the
factories here (`gaussian_blur`, `scale_towards`, `zoom`) take settings and return transforms. A
`TiledEngine` wraps an `optimise.Engine` and computes the same `(total, values, gradient)` tile by tile,
so memory is bounded by the tile rather than the image; `tile_boxes` is its geometry, in three modes
that reproduce seed 003's comparison: `contiguous` (a fixed grid, seams show), `overlap` (regions
covered by several tiles are updated several times) and `random` (the grid shifted at random each
step, no seams).
"""

import dataclasses

import numpy as np
import scipy.ndimage

from deeprestore import images as image_io
from deeprestore.errors import DeepRestoreError

TILE_MODES = ("random", "contiguous", "overlap")


def gaussian_blur(sigma):
    """A transform blurring each image and channel with a Gaussian of `sigma` pixels (0: identity)."""

    def transform(images):
        if sigma <= 0:
            return images
        return scipy.ndimage.gaussian_filter(images, sigma=(0, sigma, sigma, 0), mode="reflect").astype(np.float32)

    return transform


def scale_towards(factor, centre=0.5):
    """A transform scaling every pixel's distance to `centre` (grey) by `factor`.

    With a factor below 1, applied after each step, this keeps pixels from running to extreme values
    (seed 003, experiment 1: "scale the weights by a factor < 1 after each pass").
    """

    def transform(images):
        return (centre + factor * (images - centre)).astype(np.float32)

    return transform


def zoom(factor):
    """A transform cropping the centre `1 / factor` of each image and resizing it back to full size.

    The "we must go deeper" loop feeds a dream back into itself through this (Mordvintsev et al., 2015).
    """

    def transform(images):
        height, width = images.shape[1:3]
        crop = (max(1, round(height / factor)), max(1, round(width / factor)))
        top, left = (height - crop[0]) // 2, (width - crop[1]) // 2
        return np.stack([
            image_io.resize(image[top : top + crop[0], left : left + crop[1]], (height, width)) for image in images
        ])

    return transform


@dataclasses.dataclass(frozen=True)
class Tile:
    """One tile: its top-left corner and size in the image, and the part of it whose gradient is kept.

    Attributes:
        top: First row.
        left: First column.
        height: Rows.
        width: Columns.
        kept: `(top, bottom, left, right)` of the kept part, relative to the tile.
    """

    top: int
    left: int
    height: int
    width: int
    kept: tuple

    @property
    def kept_area(self):
        return (self.kept[1] - self.kept[0]) * (self.kept[3] - self.kept[2])


def _starts_and_kept(size, tile, stride, keep_all):
    """Tile starts along one axis (the last one flush with the border) and each tile's kept interval."""
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] + tile < size:
        starts.append(size - tile)
    kept = []
    for index, start in enumerate(starts):
        # Outside overlap mode a pixel belongs to one tile only: a border tile, pushed back to stay
        # inside the image, keeps just what the previous tile did not cover.
        first = start if keep_all or index == 0 else max(start, starts[index - 1] + tile)
        kept.append((first - start, tile))
    return starts, kept


def tile_boxes(height, width, tile, mode="contiguous", overlap=0):
    """The tiles covering a `height` x `width` image.

    In `contiguous` and `random` modes the tiles form a grid of stride `tile`, and each pixel's
    gradient is kept from exactly one tile; in `overlap` mode the stride is `tile - overlap` and every
    tile keeps its whole gradient, so regions covered by several tiles move several times (seed 003:
    124 px overlap on 224 px tiles). A tile dimension larger than the image is cut to the image.

    Args:
        height: Image rows.
        width: Image columns.
        tile: Tile side in pixels.
        mode: `contiguous`, `overlap` or `random` (the geometry of `contiguous`; the shift is the caller's).
        overlap: Pixels shared by neighbouring tiles in `overlap` mode.

    Returns:
        A list of `Tile`.

    Raises:
        DeepRestoreError: Unknown mode, or an overlap not smaller than the tile.
    """
    if mode not in TILE_MODES:
        raise DeepRestoreError(f"Unknown tile mode '{mode}'; expected one of {', '.join(TILE_MODES)}.")
    tile_height, tile_width = min(tile, height), min(tile, width)
    keep_all = mode == "overlap"
    if keep_all and overlap >= min(tile_height, tile_width):
        raise DeepRestoreError(
            f"A tile overlap of {overlap} px needs tiles larger than that; got tiles of "
            f"{tile_height}x{tile_width}. Expected --tile-overlap below --tile."
        )
    shared = overlap if keep_all else 0
    rows = _starts_and_kept(height, tile_height, tile_height - shared, keep_all)
    columns = _starts_and_kept(width, tile_width, tile_width - shared, keep_all)
    return [
        Tile(top, left, tile_height, tile_width, (row_kept[0], row_kept[1], column_kept[0], column_kept[1]))
        for top, row_kept in zip(*rows)
        for left, column_kept in zip(*columns)
    ]


def check_tile(tile, height, width):
    """Raises a `DeepRestoreError` when a tile is larger than the image it should cover."""
    if tile and (tile > height or tile > width):
        raise DeepRestoreError(
            f"The tile ({tile} px) is larger than the image ({height}x{width}); expected --tile at most "
            f"{min(height, width)}, or no --tile."
        )


class TiledEngine:
    """An engine that computes the objective and its gradient tile by tile, with bounded memory.

    Each tile's gradient is scaled by `tile area / image area`, so for objectives that are means over
    positions (L2, channel, class, guide) the tiled gradient equals the whole-image gradient wherever
    a pixel's receptive field lies inside its tile; term values are averaged over tiles, weighted by
    the area each tile keeps. In `random` mode the image is rolled by a random shift below the tile
    size before tiling and the gradient rolled back, so tile borders move every step and leave no
    seams (as the TensorFlow DeepDream tutorial does).

    Args:
        engine: An `Engine` (or any `(images, targets) -> (total, values, gradient)` callable).
        tile: Tile side in pixels.
        mode: `random`, `contiguous` or `overlap`.
        overlap: Overlap in `overlap` mode, pixels.
        rng: A `numpy.random.Generator` for the random shifts.
    """

    def __init__(self, engine, tile, mode="random", overlap=0, rng=None):
        if mode not in TILE_MODES:
            raise DeepRestoreError(f"Unknown tile mode '{mode}'; expected one of {', '.join(TILE_MODES)}.")
        self.engine = engine
        self.tile = int(tile)
        self.mode = mode
        self.overlap = int(overlap)
        self.rng = rng or np.random.default_rng(0)

    def __call__(self, images, targets=None):
        images = np.asarray(images, np.float32)
        height, width = images.shape[1:3]
        if height <= self.tile and width <= self.tile:
            return self.engine(images, targets)
        shift = (0, 0)
        if self.mode == "random":
            shift = (int(self.rng.integers(0, min(self.tile, height))),
                     int(self.rng.integers(0, min(self.tile, width))))
            images = np.roll(images, shift, axis=(1, 2))
        gradient = np.zeros_like(images)
        sums, weight_sum, total = {}, 0.0, 0.0
        for tile in tile_boxes(height, width, self.tile, self.mode, self.overlap):
            rows, columns = slice(tile.top, tile.top + tile.height), slice(tile.left, tile.left + tile.width)
            tile_total, values, tile_gradient = self.engine(images[:, rows, columns], targets)
            top, bottom, left, right = tile.kept
            share = tile.height * tile.width / (height * width)
            gradient[:, tile.top + top : tile.top + bottom, tile.left + left : tile.left + right] += (
                share * tile_gradient[:, top:bottom, left:right]
            )
            weight = tile.kept_area
            weight_sum += weight
            total += weight * tile_total
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + weight * value
        if shift != (0, 0):
            gradient = np.roll(gradient, (-shift[0], -shift[1]), axis=(1, 2))
        return total / weight_sum, {name: value / weight_sum for name, value in sums.items()}, gradient
