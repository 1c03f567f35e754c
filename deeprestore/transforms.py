"""Transforms and tiles: what an image goes through between and inside optimisation steps.

A transform is a callable `images -> images` on a float32 `(batch, height, width, 3)` batch, written
in `keras.ops` so that it runs inside the compiled step and is differentiated there; the factories
`gaussian_blur`, `scale_towards` and `zoom` take settings and return transforms. The random
transforms of lucid (`Jitter`, `RandomScale`, `RandomRotation`, and `Pad`) are applied to the images
the network sees before every step: each draws its random numbers on the host (`draw(rng, count)`;
the loop gives each step and source a generator of its own, `optimise.StepRandom`, so that a seed
reproduces a run however its steps are chunked) and applies one step's draw on the device
(`apply(images, draw)`); their gradient is the autodiff's, so nothing is undone by hand. A `Tiling`
computes a step's objective and gradient tile by tile inside the compiled step, so memory is bounded by
the tile rather than the image; `tile_boxes` is its geometry, in three modes that reproduce seed 003's
comparison: `contiguous` (a fixed grid, seams show), `overlap` (regions covered by several tiles are
updated several times) and `random` (the grid shifted at random each step, no seams). In `contiguous`
and `random` modes the tiles split the image evenly, so they cover its pixels once (to a pixel per
tile) and a tiled step costs what the pixels cost.
"""

import dataclasses

import keras
import numpy as np

from deeprestore import backend
from deeprestore import images as image_io
from deeprestore.errors import DeepRestoreError
from deeprestore.settings import TILE_MODES


def gaussian_blur(sigma):
    """A transform blurring each image and channel with a Gaussian of `sigma` pixels (0: identity)."""

    if sigma <= 0:
        return lambda images: images
    # scipy.ndimage.gaussian_filter's kernel: truncated at 4 sigma, borders mirrored ('reflect' there,
    # 'symmetric' in keras.ops.pad), so results match it to float rounding.
    radius = int(4.0 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).astype(np.float32)

    def transform(images):
        channels = images.shape[-1]
        padded = keras.ops.pad(images, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="symmetric")
        rows = np.tile(kernel[:, None, None, None], (1, 1, channels, 1))  # (taps, 1, channels, 1)
        blurred = keras.ops.depthwise_conv(padded, rows, padding="valid")
        return keras.ops.depthwise_conv(blurred, np.transpose(rows, (1, 0, 2, 3)), padding="valid")

    return transform


def scale_towards(factor, centre=0.5):
    """A transform scaling every pixel's distance to `centre` (grey) by `factor`.

    With a factor below 1, applied after each step, this keeps pixels from running to extreme values
    (seed 003, experiment 1: "scale the weights by a factor < 1 after each pass").
    """

    def transform(images):
        return centre + factor * (images - centre)

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
class Jitter:
    """Lucid's `jitter`: each step, the images rolled (with wrap-around) by a random shift of at most
    `pixels` pixels along each axis.

    Args:
        pixels: The largest shift.
    """

    pixels: int

    @property
    def key(self):
        return ("jitter", self.pixels)

    def draw(self, rng, count):
        """`(count, 2)` shifts, uniform in `[-pixels, pixels]`."""
        return rng.integers(-self.pixels, self.pixels + 1, size=(count, 2)).astype(np.int32)

    def apply(self, images, shift):
        return keras.ops.roll(images, shift, axis=(1, 2))


@dataclasses.dataclass(frozen=True)
class Pad:
    """Lucid's `pad`: a constant border of `pixels` around the images (0.5: grey), so that jitter and
    rotation bring in no wrapped content at the borders.

    Args:
        pixels: Border width.
        value: The border's value.
    """

    pixels: int
    value: float = 0.5

    @property
    def key(self):
        return ("pad", self.pixels, self.value)

    def draw(self, rng, count):
        return np.zeros((count, 1), np.float32)

    def apply(self, images, draw):
        width = self.pixels
        return keras.ops.pad(images, ((0, 0), (width, width), (width, width), (0, 0)), constant_values=self.value)


def _resampled(images, scale, angle):
    """The images scaled by `scale` and rotated by `angle` radians about their centre (same size),
    sampled bilinearly with edge values outside: differentiable with respect to the images."""
    height, width = images.shape[1], images.shape[2]
    rows = keras.ops.cast(keras.ops.arange(height), "float32")[:, None] - (height - 1) / 2.0
    columns = keras.ops.cast(keras.ops.arange(width), "float32")[None, :] - (width - 1) / 2.0
    cosine, sine = keras.ops.cos(angle) / scale, keras.ops.sin(angle) / scale
    # Each output pixel reads the input at the inverse rotation and scaling of its position.
    source_rows = keras.ops.clip(cosine * rows - sine * columns + (height - 1) / 2.0, 0.0, height - 1.0)
    source_columns = keras.ops.clip(sine * rows + cosine * columns + (width - 1) / 2.0, 0.0, width - 1.0)
    top = keras.ops.floor(source_rows)
    left = keras.ops.floor(source_columns)
    below = keras.ops.minimum(top + 1, height - 1.0)
    right = keras.ops.minimum(left + 1, width - 1.0)
    down = (source_rows - top)[None, :, :, None]
    across = (source_columns - left)[None, :, :, None]
    flat = keras.ops.reshape(images, (images.shape[0], height * width, images.shape[3]))

    def gather(row_index, column_index):
        index = keras.ops.reshape(keras.ops.cast(row_index * width + column_index, "int32"), (-1,))
        return keras.ops.reshape(keras.ops.take(flat, index, axis=1), images.shape)

    upper = gather(top, left) * (1 - across) + gather(top, right) * across
    lower = gather(below, left) * (1 - across) + gather(below, right) * across
    return upper * (1 - down) + lower * down


@dataclasses.dataclass(frozen=True)
class RandomScale:
    """Lucid's `random_scale`: each step, the images scaled about their centre by a factor drawn from
    `scales` (the size is kept: what leaves the frame is cut, the border repeats).

    Args:
        scales: The factors to draw from, e.g. `(0.95, 1.0, 1.05)`.
    """

    scales: tuple

    @property
    def key(self):
        return ("scale", tuple(self.scales))

    def draw(self, rng, count):
        return rng.choice(np.asarray(self.scales, np.float32), size=(count, 1))

    def apply(self, images, draw):
        return _resampled(images, draw[0], keras.ops.zeros((), "float32"))


@dataclasses.dataclass(frozen=True)
class RandomRotation:
    """Lucid's `random_rotate`: each step, the images rotated about their centre by an angle drawn
    from `degrees`.

    Args:
        degrees: The angles to draw from, e.g. `(-5, 0, 5)`.
    """

    degrees: tuple

    @property
    def key(self):
        return ("rotate", tuple(self.degrees))

    def draw(self, rng, count):
        return np.radians(rng.choice(np.asarray(self.degrees, np.float32), size=(count, 1))).astype(np.float32)

    def apply(self, images, draw):
        return _resampled(images, keras.ops.ones((), "float32"), draw[0])


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


def _even_starts(size, tile):
    """Equal tiles of at most `tile` pixels splitting `size` evenly: starts and each tile's kept interval.

    `ceil(size / tile)` tiles of `ceil(size / count)` pixels overlap by less than one pixel per tile
    in all, so the tiles hold the image's pixels and no more.
    """
    count = -(-size // tile)
    length = -(-size // count)
    starts = [round(index * (size - length) / (count - 1)) for index in range(count)] if count > 1 else [0]
    kept = [(0 if index == 0 else starts[index - 1] + length - start, length) for index, start in enumerate(starts)]
    return starts, kept, length


def _overlapping_starts(size, tile, stride):
    """Tile starts of a fixed stride along one axis (the last flush with the border); every tile kept whole."""
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] + tile < size:
        starts.append(size - tile)
    return starts, [(0, tile)] * len(starts), tile


def tile_boxes(height, width, tile, mode="contiguous", overlap=0):
    """The tiles covering a `height` x `width` image, all of one size.

    In `contiguous` and `random` modes the tiles split each axis evenly into `ceil(size / tile)`
    equal parts (tiles of at most `tile` pixels), and each pixel's gradient is kept from exactly one
    tile; in `overlap` mode the tiles are `tile` pixels with a stride of `tile - overlap`, the last
    flush with the border, and every tile keeps its whole gradient, so regions covered by several
    tiles move several times (seed 003: 124 px overlap on 224 px tiles). A tile dimension larger than
    the image is cut to the image.

    Args:
        height: Image rows.
        width: Image columns.
        tile: Largest tile side in pixels.
        mode: `contiguous`, `overlap` or `random` (the geometry of `contiguous`; the shift is the caller's).
        overlap: Pixels shared by neighbouring tiles in `overlap` mode.

    Returns:
        A list of `Tile`.

    Raises:
        DeepRestoreError: Unknown mode, or an overlap not smaller than the tile.
    """
    _check_mode(mode)
    if mode == "overlap":
        tile_height, tile_width = min(tile, height), min(tile, width)
        if overlap >= min(tile_height, tile_width):
            raise DeepRestoreError(
                f"A tile overlap of {overlap} px needs tiles larger than that; got tiles of "
                f"{tile_height}x{tile_width}. Expected --tile-overlap below --tile."
            )
        rows = _overlapping_starts(height, tile_height, tile_height - overlap)
        columns = _overlapping_starts(width, tile_width, tile_width - overlap)
    else:
        rows, columns = _even_starts(height, tile), _even_starts(width, tile)
    return [
        Tile(top, left, rows[2], columns[2], (row_kept[0], row_kept[1], column_kept[0], column_kept[1]))
        for top, row_kept in zip(rows[0], rows[1])
        for left, column_kept in zip(columns[0], columns[1])
    ]


def _check_mode(mode):
    if mode not in TILE_MODES:
        raise DeepRestoreError(f"Unknown tile mode '{mode}'; expected one of {', '.join(TILE_MODES)}.")


def check_tile(tile, height, width):
    """Raises a `DeepRestoreError` when a tile is larger than the image it should cover."""
    if tile and (tile > height or tile > width):
        raise DeepRestoreError(
            f"The tile ({tile} px) is larger than the image ({height}x{width}); expected --tile at most "
            f"{min(height, width)}, or no --tile."
        )


@dataclasses.dataclass(frozen=True)
class Tiling:
    """A step's objective and gradient computed tile by tile, with memory bounded by the tile.

    Each tile's gradient is scaled by `tile area / image area`, so for objectives that are means over
    positions (L2, channel, class, guide) the tiled gradient equals the whole-image gradient wherever
    a pixel's receptive field lies inside its tile; term values are averaged over tiles, weighted by
    the area each tile keeps. In `random` mode the image is rolled by a random shift below the tile
    size before tiling and the gradient rolled back, so tile borders move every step and leave no
    seams (as the TensorFlow DeepDream tutorial does). The tiles run strictly one after the other in a
    loop inside the compiled step (`backend.sequential_loop`): one network is traced, whatever the tile
    count, and one tile's activations are held at a time.

    Args:
        tile: Largest tile side in pixels.
        mode: `random`, `contiguous` or `overlap`.
        overlap: Overlap in `overlap` mode, pixels.
    """

    tile: int
    mode: str = "random"
    overlap: int = 0

    def __post_init__(self):
        _check_mode(self.mode)

    @property
    def key(self):
        return ("tiles", self.tile, self.mode, self.overlap)

    def splits(self, height, width):
        """Whether an image of this size is tiled (one larger than a tile is)."""
        return height > self.tile or width > self.tile

    def draw(self, rng, count, height, width):
        """`(count, 2)` shifts of the grid: uniform below the tile size in `random` mode, else zero."""
        if self.mode != "random" or not self.splits(height, width):
            return np.zeros((count, 2), np.int32)
        shifts = np.stack([rng.integers(0, min(self.tile, height), size=count),
                           rng.integers(0, min(self.tile, width), size=count)], axis=1)
        return shifts.astype(np.int32)

    def value_and_gradient(self, loss, images, shift, names):
        """`(total, {term: value}, gradient)` of `loss` on the tiles of `images` (traceable).

        Args:
            loss: `tiles -> (total, {term: value})` in `keras.ops`.
            images: `(batch, height, width, channels)` tensor of static shape.
            shift: `(2,)` int tensor: the roll of the grid (from `draw`).
            names: The names of the terms `loss` returns.
        """
        batch, height, width, channels = images.shape
        boxes = tile_boxes(height, width, self.tile, self.mode, self.overlap)
        size = (batch, boxes[0].height, boxes[0].width, channels)
        share = boxes[0].height * boxes[0].width / (height * width)
        tops = np.array([box.top for box in boxes], np.int32)
        lefts = np.array([box.left for box in boxes], np.int32)
        weights = np.array([box.kept_area for box in boxes], np.float32)
        weights /= weights.sum()
        if self.mode == "random":
            images = keras.ops.roll(images, shift, axis=(1, 2))

        def body(index, carry):
            gradient, total, values = carry
            start = (0, keras.ops.take(tops, index), keras.ops.take(lefts, index), 0)
            tile_total, tile_values, tile_gradient = backend.gradient(loss, keras.ops.slice(images, start, size))
            current = keras.ops.slice(gradient, start, size)
            gradient = keras.ops.slice_update(gradient, start, current + share * tile_gradient)
            weight = keras.ops.take(weights, index)
            total = total + weight * tile_total
            values = {name: values[name] + weight * tile_values[name] for name in values}
            return gradient, total, values

        zero = keras.ops.zeros((), "float32")
        carry = (keras.ops.zeros_like(images), zero, dict.fromkeys(names, zero))
        gradient, total, values = backend.sequential_loop(0, len(boxes), body, carry)
        if self.mode != "overlap":
            # Neighbouring even tiles may share a pixel row or column; its gradient is their mean.
            rows, columns = np.zeros(height, np.float32), np.zeros(width, np.float32)
            for top in set(tops.tolist()):
                rows[top : top + size[1]] += 1.0
            for left in set(lefts.tolist()):
                columns[left : left + size[2]] += 1.0
            gradient = gradient / (rows[None, :, None, None] * columns[None, None, :, None])
        if self.mode == "random":
            gradient = keras.ops.roll(gradient, -shift, axis=(1, 2))
        return total, values, gradient
