"""Seed 004's figure: noisy, denoised and clean versions side by side, one row per example."""

import pathlib

import numpy as np
from matplotlib.figure import Figure

_PANEL_INCHES = 2.6
_MAX_ROWS = 6


def restoration_figure(path, examples, titles):
    """Draws rows of images side by side (grey in a grey colour map, [0, 1] fixed) and saves a PNG.

    Args:
        path: Destination PNG.
        examples: A list of rows, each a list of `(height, width, channels)` images, one per column.
        titles: A column title per image of the first row (e.g. `noisy 20.2 dB`), or a list of such
            lists, one per row.

    Returns:
        The path written, as a `pathlib.Path`.
    """
    examples = examples[:_MAX_ROWS]
    columns = max(len(row) for row in examples)
    if titles and isinstance(titles[0], str):
        titles = [titles] + [[""] * columns] * (len(examples) - 1)
    figure = Figure(figsize=(_PANEL_INCHES * columns, _PANEL_INCHES * len(examples) + 0.3), layout="constrained")
    for row_index, row in enumerate(examples):
        for column_index, image in enumerate(row):
            axes = figure.add_subplot(len(examples), columns, row_index * columns + column_index + 1)
            image = np.clip(image, 0.0, 1.0)
            if image.shape[-1] == 1:
                axes.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                axes.imshow(image, interpolation="nearest")
            axes.set_axis_off()
            axes.set_title(titles[row_index][column_index], fontsize="small")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
