"""Hand-crafted descriptors to score beside a trained one: a baseline maps `(count, size, size)` uint8
patches to `(count, dimension)` float32 descriptors.

`raw16` is the patch itself, resized to 16x16, minus its mean and scaled to unit norm (the usual
"normalised raw pixels" baseline); `sift` is scikit-image's SIFT descriptor computed at the patch
centre, upright (HPatches patches are already cut in matching frames), over a window the size of the
patch. Neither needs Keras.

Reference:
    Lowe, 2004. Distinctive image features from scale-invariant keypoints.
    Balntas et al., 2017. HPatches (which scores SIFT and normalised raw patches as baselines).
"""

import numpy as np

RAW_SIZE = 16
# skimage's SIFT histograms cover lambda_descr * (1 + 1 / n_hist) = 7.5 sigmas either side of the
# keypoint: a window as wide as the patch takes sigma = size / 15.
_SIFT_WINDOW = 6 * (1 + 1 / 4)
_SIFT_TILES = 32  # patches per row of the mosaic one SIFT call describes
_SIFT_MARGIN = 8  # mirrored border around each patch, so that blurring does not mix neighbours


def raw16(patches):
    """Normalised raw pixels: 16x16, zero mean, unit norm (a flat patch gives zeros)."""
    import skimage.transform

    patches = np.asarray(patches, np.float32) / np.float32(255.0)
    if patches.shape[1] != RAW_SIZE:
        patches = skimage.transform.resize(patches, (len(patches), RAW_SIZE, RAW_SIZE), order=1,
                                           anti_aliasing=True, preserve_range=True)
    values = patches.reshape(len(patches), -1).astype(np.float64)
    values -= values.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return (values / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def sift(patches):
    """scikit-image's 128-d SIFT descriptor of each patch, at its centre, upright, as float32.

    The patches are laid out in a mosaic (each with a mirrored margin) and described in one call:
    SIFT's scale space is built once instead of once per patch.
    """
    import skimage.feature

    patches = np.asarray(patches, np.float32) / np.float32(255.0)
    count, size = len(patches), patches.shape[1]
    if count == 0:
        return np.zeros((0, 128), np.float32)
    cell = size + 2 * _SIFT_MARGIN
    rows = -(-count // _SIFT_TILES)
    mosaic = np.zeros((rows * cell, _SIFT_TILES * cell), np.float32)
    padded = np.pad(patches, ((0, 0), (_SIFT_MARGIN, _SIFT_MARGIN), (_SIFT_MARGIN, _SIFT_MARGIN)), mode="reflect")
    for number, patch in enumerate(padded):
        row, column = divmod(number, _SIFT_TILES)
        mosaic[row * cell:(row + 1) * cell, column * cell:(column + 1) * cell] = patch
    extractor = skimage.feature.SIFT(upsampling=1, n_octaves=1)  # only the first octave is used
    sigma = size / (2 * _SIFT_WINDOW)
    # The keypoints: the patch centres, in the first octave, at the scale-space level nearest sigma
    # (level s of octave 0 has sigma_min * 2^(s / n_scales)).
    level = int(np.clip(np.round(extractor.n_scales * np.log2(sigma / extractor.sigma_min)), 0, extractor.n_scales + 2))
    numbers = np.arange(count)
    row, column = np.divmod(numbers, _SIFT_TILES)
    centres = np.stack([row * cell + cell / 2 - 0.5, column * cell + cell / 2 - 0.5], 1)  # (row, column)
    extractor.positions = centres
    extractor.keypoints = np.round(centres).astype(int)
    extractor.octaves = np.zeros(count, int)
    extractor.scales = np.full(count, level)
    extractor.sigmas = np.full(count, extractor.sigma_min * 2 ** (level / extractor.n_scales))
    extractor.orientations = np.zeros(count)
    extractor.extract(mosaic)
    return extractor.descriptors.astype(np.float32)


BASELINES = {"raw16": raw16, "sift": sift}
