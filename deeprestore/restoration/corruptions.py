"""Corruptions: seeded numpy functions `image -> image` that damage clean images for training and tests.

A `Corruption` is called as `corruption(image, rng=0)`: `image` is float in [0, 1] with shape
`(height, width)` or `(height, width, channels)`, `rng` a seed or a `numpy.random.Generator`, and the
result has the same shape and dtype, in [0, 1]. The same seed gives the same damage. `parse("gaussian:0.1")`
turns the command line's `KIND:VALUE` specs into corruptions:

- `gaussian:SIGMA`: additive white Gaussian noise of standard deviation SIGMA, clipped to [0, 1]
  (as an 8-bit photo of a noisy scene would be);
- `salt-and-pepper:AMOUNT`: that fraction of pixels set to 0 or 1 (half each), all channels together;
- `centre:FRACTION`: the central square whose side is FRACTION of the shorter side set to exactly 0
  (seed 001's missing middle);
- `perturbation:easy|hard|tough`: our N-HPatches-like "random non-smooth perturbation" (see
  `perturbation`).
"""

import dataclasses

import numpy as np

from deeprestore.errors import DeepRestoreError

# Our own N-HPatches-like noise. N-HPatches (the Imperial College deep-learning coursework's noisy
# HPatches, seed 004) never published its noise model; these strengths are chosen by eye so that
# `easy` is clearly visible, `hard` hides fine texture and `tough` hides most of it.
#   sigma: mean standard deviation of the Gaussian part, scaled pixel-wise by a smooth field in [0.5, 1.5];
#   jump: standard deviation of the blockwise intensity offsets; jump_fraction: blocks that get one;
#   block: block side in pixels; impulses: fraction of pixels set to 0 or 1.
PERTURBATION_STRENGTHS = {
    "easy": {"sigma": 0.04, "jump": 0.04, "jump_fraction": 0.25, "block": 8, "impulses": 0.002},
    "hard": {"sigma": 0.08, "jump": 0.08, "jump_fraction": 0.5, "block": 8, "impulses": 0.01},
    "tough": {"sigma": 0.15, "jump": 0.12, "jump_fraction": 0.75, "block": 8, "impulses": 0.03},
}
# Cells of the coarse grid that the smooth noise-level field is interpolated from.
_FIELD_CELLS = 4


@dataclasses.dataclass(frozen=True)
class Corruption:
    """A named, seeded corruption: `corruption(image, rng=0) -> image`.

    Attributes:
        kind: `gaussian`, `salt-and-pepper`, `centre` or `perturbation`.
        value: Its parameter: sigma, amount, fraction, or a strength name.
    """

    kind: str
    value: object

    def __call__(self, image, rng=0):
        rng = np.random.default_rng(rng)
        image = _check_image(image)
        corrupted = _KINDS[self.kind][0](image, self.value, rng)
        return np.clip(corrupted, 0.0, 1.0).astype(image.dtype)

    @property
    def spec(self):
        """The `KIND:VALUE` text that `parse` reads back."""
        return f"{self.kind}:{self.value}"

    @property
    def task(self):
        """`inpaint` for the missing centre, `denoise` for the noises."""
        return "inpaint" if self.kind == "centre" else "denoise"

    def mask(self, shape):
        """For `centre`, the boolean `(height, width)` mask of the missing square; else None."""
        return centre_mask(shape, self.value) if self.kind == "centre" else None


def _check_image(image):
    image = np.asarray(image)
    if image.ndim not in (2, 3) or not np.issubdtype(image.dtype, np.floating):
        raise ValueError(
            f"a corruption takes a float (height, width[, channels]) image; got {image.dtype} {image.shape}")
    return image


def gaussian_noise(sigma):
    """Additive white Gaussian noise of standard deviation `sigma`, clipped to [0, 1]."""
    return Corruption("gaussian", float(sigma))


def salt_and_pepper(amount):
    """Sets a fraction `amount` of pixels to 0 or 1 (half each, all channels of a pixel together)."""
    return Corruption("salt-and-pepper", float(amount))


def missing_centre(fraction):
    """Zeroes the central square whose side is `fraction` of the image's shorter side."""
    return Corruption("centre", float(fraction))


def perturbation(strength):
    """Our N-HPatches-like random non-smooth perturbation at `easy`, `hard` or `tough` strength.

    N-HPatches never published its noise, so this is our own design, not a reproduction. It adds
    three things on top of each other, all seeded (parameters in `PERTURBATION_STRENGTHS`):

    1. Gaussian noise whose standard deviation varies smoothly over the image (sigma times a field
       in [0.5, 1.5], bilinearly interpolated from a random 4x4 grid), so noise is not stationary;
    2. blockwise intensity jumps: the image is cut into square blocks and a fraction of them get a
       constant random offset, which makes the damage non-smooth with sharp block edges;
    3. sparse impulses: a small fraction of pixels set to 0 or 1.
    """
    if strength not in PERTURBATION_STRENGTHS:
        raise DeepRestoreError(
            f"Unknown perturbation strength '{strength}'; expected one of {', '.join(PERTURBATION_STRENGTHS)}."
        )
    return Corruption("perturbation", strength)


def centre_mask(shape, fraction):
    """The boolean `(height, width)` mask of the central square of side `fraction` x the shorter side."""
    height, width = shape[:2]
    side = round(fraction * min(height, width))
    top, left = (height - side) // 2, (width - side) // 2
    mask = np.zeros((height, width), dtype=bool)
    mask[top:top + side, left:left + side] = True
    return mask


def _gaussian(image, sigma, rng):
    return image + rng.normal(0.0, sigma, image.shape).astype(image.dtype)


def _salt_and_pepper(image, amount, rng):
    height, width = image.shape[:2]
    draws = rng.random((height, width))
    corrupted = image.copy()
    corrupted[draws < amount / 2] = 0.0
    corrupted[(draws >= amount / 2) & (draws < amount)] = 1.0
    return corrupted


def _centre(image, fraction, rng):
    corrupted = image.copy()
    corrupted[centre_mask(image.shape, fraction)] = 0.0
    return corrupted


def _smooth_field(shape, rng):
    """A smooth random field in [0, 1] of `shape` (height, width), bilinear from a coarse grid."""
    grid = rng.random((_FIELD_CELLS + 1, _FIELD_CELLS + 1))
    rows = np.linspace(0, _FIELD_CELLS, shape[0])
    columns = np.linspace(0, _FIELD_CELLS, shape[1])
    row0 = np.minimum(rows.astype(int), _FIELD_CELLS - 1)
    column0 = np.minimum(columns.astype(int), _FIELD_CELLS - 1)
    row_weight = (rows - row0)[:, None]
    column_weight = (columns - column0)[None, :]
    top = grid[row0][:, column0] * (1 - column_weight) + grid[row0][:, column0 + 1] * column_weight
    bottom = grid[row0 + 1][:, column0] * (1 - column_weight) + grid[row0 + 1][:, column0 + 1] * column_weight
    return top * (1 - row_weight) + bottom * row_weight


def perturb(image, rng, sigma, jump, jump_fraction, block, impulses):
    """The three parts of `perturbation` with explicit parameters (see `PERTURBATION_STRENGTHS`); not clipped."""
    height, width = image.shape[:2]
    channel_axes = (1,) * (image.ndim - 2)
    level = sigma * (0.5 + _smooth_field((height, width), rng))  # (height, width)
    corrupted = image + level.reshape(level.shape + channel_axes) * rng.normal(size=image.shape)
    blocks = (-(-height // block), -(-width // block))
    offsets = rng.normal(0.0, jump, blocks) * (rng.random(blocks) < jump_fraction)
    offsets = np.repeat(np.repeat(offsets, block, axis=0), block, axis=1)[:height, :width]
    corrupted = corrupted + offsets.reshape(offsets.shape + channel_axes)
    return _salt_and_pepper(corrupted, impulses, rng)


def _perturbation(image, strength, rng):
    return perturb(image, rng, **PERTURBATION_STRENGTHS[strength])


# kind -> (function, parser of the VALUE text, the value's description for errors)
_KINDS = {
    "gaussian": (_gaussian, float, "a standard deviation in [0, 1], e.g. gaussian:0.1"),
    "salt-and-pepper": (_salt_and_pepper, float, "a fraction of pixels in [0, 1], e.g. salt-and-pepper:0.05"),
    "centre": (_centre, float, "a fraction of the shorter side in (0, 1), e.g. centre:0.5"),
    "perturbation": (_perturbation, str, f"a strength ({', '.join(PERTURBATION_STRENGTHS)}), e.g. perturbation:hard"),
}
KINDS = tuple(_KINDS)


def parse(spec):
    """Reads a `KIND:VALUE` spec (`gaussian:0.1`, `salt-and-pepper:0.05`, `centre:0.5`, `perturbation:hard`).

    Raises:
        DeepRestoreError: Unknown kind, or a value out of range.
    """
    kind, _, text = str(spec).partition(":")
    if kind not in _KINDS:
        raise DeepRestoreError(f"Unknown corruption '{spec}'; expected KIND:VALUE with KIND one of {', '.join(KINDS)}.")
    _, parser, expected = _KINDS[kind]
    try:
        value = parser(text)
    except ValueError:
        value = None
    if kind == "perturbation":
        if value not in PERTURBATION_STRENGTHS:
            value = None
    elif value is None or not (0.0 <= value <= 1.0) or (kind == "centre" and not 0.0 < value < 1.0):
        value = None
    if value is None:
        raise DeepRestoreError(f"Corruption '{spec}' has a bad value; expected {expected}.")
    return Corruption(kind, value)
