"""Applying a restoration model to images of any size, tile by tile with bounded memory.

The models are fully convolutional, so a large image is cut into square tiles that overlap by
`overlap` pixels on each side; each tile is restored alone and only its centre (the tile less its
overlap, except at the image's own borders) is kept. Where the overlap covers the network's receptive
field the result equals restoring the whole image at once; tiles start at multiples of
`models.SIZE_MULTIPLE`, so poolings see the same grid either way. An image whose sides are not
multiples of `SIZE_MULTIPLE` is padded by reflection first and cropped back after.
"""

import keras
import numpy as np

from deeprestore.errors import DeepRestoreError
from deeprestore.restoration.models import SIZE_MULTIPLE

# The models' receptive-field radii: DnCNN's seventeen 3x3 convolutions give 17 pixels, the
# autoencoder's reach through two poolings about 20, the U-Net's about 10; 32 covers them all.
DEFAULT_TILE = 256
DEFAULT_OVERLAP = 32


def check_tiling(tile, overlap):
    """Raises a `DeepRestoreError` unless `tile` and `overlap` are multiples of 4 with `tile > 2 * overlap`."""
    if tile % SIZE_MULTIPLE or overlap % SIZE_MULTIPLE or tile <= 2 * overlap or overlap < 0:
        raise DeepRestoreError(
            f"Tiles of {tile} pixels overlapping by {overlap} do not work; expected both multiples of "
            f"{SIZE_MULTIPLE} with the tile larger than twice the overlap."
        )


def model_channels(model):
    """The number of channels a model takes."""
    return int(model.inputs[0].shape[-1])


def tile_starts(length, tile, overlap):
    """Start offsets of tiles of side `tile` covering `length` (a multiple of 4), `overlap` kept each side."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - 2 * overlap))
    return [*starts, length - tile]


def restore_patches(model, patches, batch_size=64):
    """Restores a stack of patches `(count, height, width, channels)` in batches; sides multiples of 4."""
    outputs = [keras.ops.convert_to_numpy(model(patches[start:start + batch_size], training=False))
               for start in range(0, len(patches), batch_size)]
    return np.concatenate(outputs).astype(np.float32)


def restore(model, image, tile=DEFAULT_TILE, overlap=DEFAULT_OVERLAP):
    """Restores one image of any size with a fully convolutional model.

    Args:
        model: A restoration model taking `(batch, height, width, channels)`.
        image: `(height, width, channels)` float32 in [0, 1], channels matching the model.
        tile: Side of the square tiles (a multiple of 4); images no larger go through whole.
        overlap: Pixels each tile overlaps its neighbours by on each side (a multiple of 4).

    Returns:
        The restored `(height, width, channels)` float32 image (not clipped).

    Raises:
        DeepRestoreError: Channels that do not match the model, or a bad tiling.
    """
    check_tiling(tile, overlap)
    if image.ndim != 3 or image.shape[-1] != model_channels(model):
        raise DeepRestoreError(
            f"Model '{model.name}' takes {model_channels(model)}-channel images; got an image of shape {image.shape}."
        )
    height, width = image.shape[:2]
    padding = [(0, -height % SIZE_MULTIPLE), (0, -width % SIZE_MULTIPLE), (0, 0)]
    padded = np.pad(image, padding, mode="symmetric").astype(np.float32)
    padded_height, padded_width = padded.shape[:2]
    result = np.empty_like(padded)
    for top in tile_starts(padded_height, tile, overlap):
        for left in tile_starts(padded_width, tile, overlap):
            piece = padded[top:top + tile, left:left + tile]
            restored = restore_patches(model, piece[None])[0]
            keep_top = 0 if top == 0 else overlap
            keep_left = 0 if left == 0 else overlap
            keep_bottom = piece.shape[0] if top + piece.shape[0] >= padded_height else piece.shape[0] - overlap
            keep_right = piece.shape[1] if left + piece.shape[1] >= padded_width else piece.shape[1] - overlap
            result[top + keep_top:top + keep_bottom, left + keep_left:left + keep_right] = (
                restored[keep_top:keep_bottom, keep_left:keep_right])
    return result[:height, :width]
