"""Figures: image arrays laid out in grids, for reconstructions and projections.

Every function returns a float32 RGB image in [0, 1] (`(height, width, 3)`) that `save_image` writes;
`save_figure` does both. `difference_figure` is seed 000's four-column figure, shared by every
inversion method: image, reconstruction, colour-accurate difference, renormalised absolute difference;
`activation_figure` compares true and reconstructed channel maps of an intermediate layer.
"""

import numpy as np

from deeprestore.images import save_image

# Pixels between cells, and their colour (white).
GAP = 2
BACKGROUND = 1.0


def colour_difference(image, reconstruction):
    """Image minus reconstruction, renormalised to [0, 1] with grey (0.5) where there is no error.

    The colour shows which channel is off: a reconstruction with too little blue shows blue. The
    scale is per image, so intensity is relative to that image's largest error.

    Reference:
        Harder, 2017. Deep restoration (MSc thesis progress report, May 3): "color/channel accurate
        measure ... areas without error (or equal errors across channels) are grey".
    """
    difference = np.asarray(image, np.float32) - np.asarray(reconstruction, np.float32)
    largest = float(np.abs(difference).max())
    return np.full_like(difference, 0.5) if largest == 0 else 0.5 + difference / (2 * largest)


def absolute_difference(image, reconstruction):
    """Absolute difference renormalised to [0, 1] (black where there is no error), per image."""
    difference = np.abs(np.asarray(image, np.float32) - np.asarray(reconstruction, np.float32))
    largest = float(difference.max())
    return np.zeros_like(difference) if largest == 0 else difference / largest


def image_grid(rows, gap=GAP, background=BACKGROUND):
    """Lays out rows of images (each `(height, width, 3)` or `(height, width)`) on a white canvas.

    Cells are as large as the largest image; smaller images sit in their cell's top-left corner.

    Args:
        rows: A sequence of rows, each a sequence of images.
        gap: Pixels between cells.
        background: The canvas's grey level.

    Returns:
        A float32 `(height, width, 3)` array.
    """
    rows = [[_rgb(image) for image in row] for row in rows]
    cell_height = max(image.shape[0] for row in rows for image in row)
    cell_width = max(image.shape[1] for row in rows for image in row)
    columns = max(len(row) for row in rows)
    canvas = np.full((len(rows) * (cell_height + gap) - gap, columns * (cell_width + gap) - gap, 3), background,
                     np.float32)
    for row_index, row in enumerate(rows):
        for column_index, image in enumerate(row):
            top, left = row_index * (cell_height + gap), column_index * (cell_width + gap)
            canvas[top:top + image.shape[0], left:left + image.shape[1]] = image
    return canvas


def difference_figure(images, reconstructions):
    """One row per image: image, reconstruction, colour-accurate difference, absolute difference.

    Reconstructions are clipped to [0, 1] first, so the differences show what the viewer sees.

    Args:
        images: `(batch, height, width, 3)` RGB in [0, 1].
        reconstructions: The same shape.

    Returns:
        A float32 `(height, width, 3)` figure.
    """
    images = np.asarray(images, np.float32)
    reconstructions = np.clip(np.asarray(reconstructions, np.float32), 0.0, 1.0)
    if images.shape != reconstructions.shape:
        raise ValueError(
            f"Got images {images.shape} and reconstructions {reconstructions.shape}; expected equal shapes.")
    return image_grid([[image, reconstruction, colour_difference(image, reconstruction),
                        absolute_difference(image, reconstruction)]
                       for image, reconstruction in zip(images, reconstructions)])


def save_figure(path, figure):
    """Saves a figure array as a PNG (atomically) and returns the path."""
    return save_image(path, np.clip(figure, 0.0, 1.0))


def save_difference_figure(path, images, reconstructions):
    """Writes `difference_figure(images, reconstructions)` to `path`."""
    return save_figure(path, difference_figure(images, reconstructions))


def _rgb(image):
    image = np.asarray(image, np.float32)
    return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image


def activation_figure(true, reconstructed, channels=4, smallest=64):
    """Per image, two rows of channel maps: the true activations above, the reconstructed below.

    The channels shown are each image's `channels` strongest in the true activations (largest sum of
    squares). Each channel's pair of maps shares one grey scale, from its largest absolute value:
    black at 0 for non-negative values, grey at 0 otherwise. Small maps are enlarged (nearest
    neighbour) to at least `smallest` pixels.

    Args:
        true: `(batch, height, width, channels)` activations.
        reconstructed: The same shape.
        channels: Channels per image.
        smallest: The least side of a shown map, in pixels.

    Returns:
        A float32 `(height, width, 3)` figure.
    """
    true, reconstructed = np.asarray(true, np.float32), np.asarray(reconstructed, np.float32)
    if true.shape != reconstructed.shape:
        raise ValueError(f"Got true {true.shape} and reconstructed {reconstructed.shape}; expected equal shapes.")
    factor = max(1, -(-smallest // min(true.shape[1:3])))
    signed = bool(true.min() < 0 or reconstructed.min() < 0)
    rows = []
    for image_true, image_reconstructed in zip(true, reconstructed):
        strongest = np.argsort(-np.sum(image_true**2, axis=(0, 1)))[:channels]
        pair = ([], [])
        for channel in strongest:
            maps = image_true[..., channel], image_reconstructed[..., channel]
            largest = max(float(np.abs(maps[0]).max()), float(np.abs(maps[1]).max())) or 1.0
            for row, values in zip(pair, maps):
                shown = 0.5 + values / (2 * largest) if signed else values / largest
                row.append(np.kron(np.clip(shown, 0.0, 1.0), np.ones((factor, factor), np.float32)))
        rows.extend(pair)
    return image_grid(rows)
