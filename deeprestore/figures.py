"""Figures: image arrays laid out in grids, for reconstructions and projections.

Every function returns a float32 RGB image in [0, 1] (`(height, width, 3)`) that `save_image` writes;
`save_figure` does both. Grids take column and row titles and a figure title (drawn with Pillow's
built-in font), and enlarge small panels, so a figure says what it shows. `difference_figure` is seed
000's four-column figure, shared by every inversion method: image, reconstruction, colour-accurate
difference, renormalised absolute difference; `activation_figure` compares true and reconstructed
channel maps of an intermediate layer.
"""

import functools
import pathlib

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from deeprestore.images import save_image

# Pixels between cells, and their colour (white).
GAP = 2
BACKGROUND = 1.0
# Panels smaller than this (a 64 px inversion) are enlarged by a whole factor (nearest neighbour, so
# pixels stay visible as pixels) to be readable at a glance.
SMALLEST_PANEL = 128
# Text height in pixels, and the padding around a line of it.
FONT_SIZE = 13
TEXT_PADDING = 4


@functools.cache
def _font():
    return ImageFont.load_default(size=FONT_SIZE)


def text_strip(text, width, align="centre"):
    """A white strip `width` pixels wide holding one line of black text (cut with `...` to fit).

    Returns:
        A float32 `(FONT_SIZE + 2 * TEXT_PADDING, width, 3)` array.
    """
    height = FONT_SIZE + 2 * TEXT_PADDING
    canvas = Image.new("L", (max(1, width), height), 255)
    draw = ImageDraw.Draw(canvas)
    while text and draw.textlength(text, font=_font()) > width - 2:
        text = text[:-4].rstrip() + "..." if len(text) > 4 else ""
    left = max(0, (width - draw.textlength(text, font=_font())) / 2) if align == "centre" else 1
    draw.text((left, TEXT_PADDING - 1), text, fill=0, font=_font())
    strip = np.asarray(canvas, np.float32) / 255.0
    return np.repeat(strip[..., None], 3, axis=-1)


def text_column(text, height):
    """A white column `height` pixels tall with one line of text written upwards (a row title)."""
    return np.rot90(text_strip(text, height), k=1).copy()


def titled(figure, title, background=BACKGROUND):
    """The figure under a one-line title; a figure narrower than its title is widened (centred) to fit."""
    needed = int(ImageDraw.Draw(Image.new("L", (1, 1))).textlength(title, font=_font())) + 2 * TEXT_PADDING
    if needed > figure.shape[1]:
        left = (needed - figure.shape[1]) // 2
        widened = np.full((figure.shape[0], needed, 3), background, np.float32)
        widened[:, left:left + figure.shape[1]] = figure
        figure = widened
    return np.concatenate([text_strip(title, figure.shape[1]), figure], axis=0)


def enlarged(image, smallest=SMALLEST_PANEL):
    """The image enlarged by the least whole factor that makes its shorter side at least `smallest`."""
    image = _rgb(image)
    factor = max(1, -(-smallest // max(1, min(image.shape[:2]))))
    return image if factor == 1 else np.kron(image, np.ones((factor, factor, 1), np.float32))


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


def image_grid(rows, gap=GAP, background=BACKGROUND, column_titles=(), row_titles=(), title=None, smallest=0):
    """Lays out rows of images (each `(height, width, 3)` or `(height, width)`) on a white canvas.

    Cells are as large as the largest image; smaller images sit in their cell's top-left corner.

    Args:
        rows: A sequence of rows, each a sequence of images.
        gap: Pixels between cells.
        background: The canvas's grey level.
        column_titles: A title above each column (or none).
        row_titles: A title left of each row, written upwards (or none).
        title: A line above the whole figure.
        smallest: Enlarge images whose shorter side is below this (see `enlarged`); 0: never.

    Returns:
        A float32 `(height, width, 3)` array.
    """
    rows = [[enlarged(image, smallest) if smallest else _rgb(image) for image in row] for row in rows]
    if column_titles or row_titles or title:
        return _titled_grid(rows, gap, background, column_titles, row_titles, title)
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


def _titled_grid(rows, gap, background, column_titles, row_titles, title):
    """`image_grid` with titles: each column's above it, each row's beside it, the figure's on top."""
    cell_width = max(image.shape[1] for row in rows for image in row)
    cell_height = max(image.shape[0] for row in rows for image in row)
    grid = image_grid(rows, gap, background)
    line = FONT_SIZE + 2 * TEXT_PADDING
    if column_titles:
        headings = np.full((line, grid.shape[1], 3), background, np.float32)
        for index, name in enumerate(column_titles[:max(len(row) for row in rows)]):
            left = index * (cell_width + gap)
            width = min(cell_width, grid.shape[1] - left)
            headings[:, left:left + width] = text_strip(name, width)
        grid = np.concatenate([headings, grid], axis=0)
    if row_titles:
        names = np.full((grid.shape[0], line, 3), background, np.float32)
        top = line if column_titles else 0
        for index, name in enumerate(row_titles[:len(rows)]):
            start = top + index * (cell_height + gap)
            names[start:start + cell_height] = text_column(name, cell_height)
        grid = np.concatenate([names, grid], axis=1)
    return titled(grid, title) if title else grid


def difference_figure(images, reconstructions, title=None, row_titles=(), smallest=SMALLEST_PANEL):
    """One row per image: image, reconstruction, colour-accurate difference, absolute difference, under
    column titles (and the figure's title), small images enlarged.

    Reconstructions are clipped to [0, 1] first, so the differences show what the viewer sees.

    Args:
        images: `(batch, height, width, 3)` RGB in [0, 1].
        reconstructions: The same shape.
        title: A line above the figure (what was inverted, from where).
        row_titles: A name beside each image's row.
        smallest: Enlarge images whose shorter side is below this.

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
                       for image, reconstruction in zip(images, reconstructions)],
                      column_titles=DIFFERENCE_COLUMNS, row_titles=row_titles, title=title, smallest=smallest)


DIFFERENCE_COLUMNS = ("image", "reconstruction", "difference (colour)", "|difference|")


def save_figure(path, figure):
    """Saves a figure array as a PNG (atomically) and returns the path."""
    return save_image(path, np.clip(figure, 0.0, 1.0))


def save_difference_figure(path, images, reconstructions, title=None, row_titles=()):
    """Writes `difference_figure(images, reconstructions, title, row_titles)` to `path`."""
    return save_figure(path, difference_figure(images, reconstructions, title, row_titles))


def _rgb(image):
    image = np.asarray(image, np.float32)
    return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image


def activation_figure(true, reconstructed, channels=4, smallest=SMALLEST_PANEL, row_titles=False):
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
        row_titles: Name the rows `true` and `reconstructed`.

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
    return image_grid(rows, row_titles=("true", "reconstructed") * len(true) if row_titles else ())


def save_channel_heatmap(path, channels, title):
    """Draws per-channel curves as a heatmap, one row per channel and one column per logged step, on a
    logarithmic colour scale where every value is positive: 64 lines under a legend show nothing.

    Args:
        path: Destination PNG.
        channels: `{channel label: (steps, values)}`, each channel logged at the same steps.
        title: The figure's title.

    Returns:
        The path written.
    """
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    labels = sorted(channels, key=lambda label: (len(label), label))  # 2 before 10
    count = min(len(channels[label][1]) for label in labels)  # a channel cut short by an interruption
    steps = np.asarray(channels[labels[0]][0][:count])
    values = np.array([np.asarray(channels[label][1][:count], np.float64) for label in labels])
    finite = values[np.isfinite(values)]
    positive = finite.size > 0 and bool(np.all(finite > 0))
    figure = Figure(figsize=(7, 2 + 0.08 * len(labels)), layout="constrained")
    axes = figure.add_subplot()
    shown = axes.imshow(values, aspect="auto", interpolation="nearest", cmap="viridis",
                        extent=(steps[0] - 0.5, steps[-1] + 0.5, len(labels) - 0.5, -0.5),
                        norm=LogNorm() if positive else None)
    ticks = np.unique(np.linspace(0, len(labels) - 1, min(len(labels), 16)).round().astype(int))
    axes.set_yticks(ticks, [labels[index] for index in ticks])
    axes.set_xlabel("step")
    axes.set_ylabel("channel")
    axes.set_title(title)
    figure.colorbar(shown, ax=axes, label="mean squared error")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
