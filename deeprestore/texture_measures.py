"""How well a synthesised texture keeps its source's structure and colour: numpy measures on RGB images.

A texture has no positions to compare, so structure is compared through the normalised autocorrelation
of the luminance (its Fourier transform is the power spectrum): bricks give a rectangular lattice of
peaks, gravel a narrow central peak. Both images are measured at the scale the network saw them (the
source at `--source-size`, the output at `--size`), so a lag means the same distance in either.
`colour_deviation` is how far a texture strays from grey, the failure of pixel textures of grey sources.
"""

import numpy as np

# Lags either side of zero that `structure_distance` compares: a quarter of the manual's 128 px outputs,
# more than one brick of the bundled brick source at 256 px.
DEFAULT_MAX_LAG = 32


def luminance(image):
    """The mean of the colour channels of an RGB image `(height, width, 3)`, as float64 `(height, width)`."""
    image = np.asarray(image, np.float64)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"Expected an RGB image (height, width, 3); received shape {image.shape}.")
    return image.mean(axis=-1)


def autocorrelation(image, max_lag=DEFAULT_MAX_LAG):
    """The normalised autocorrelation of an image's luminance at lags up to `max_lag` each way.

    With `x` the luminance less its mean, `R[dy, dx] = mean_ij x[i, j] x[i + dy, j + dx]` over the
    positions where both exist (no wrap-around: the source is not periodic), divided by `R[0, 0]`, so the
    centre is 1 and a perfectly repeating pattern has peaks of 1 at its periods. Computed by a zero-padded
    FFT (Wiener-Khinchin).

    Args:
        image: RGB `(height, width, 3)`.
        max_lag: Largest lag in each direction; less than the image's height and width.

    Returns:
        float64 `(2 * max_lag + 1, 2 * max_lag + 1)`, lag (0, 0) at the centre, rows the vertical lag.
    """
    grey = luminance(image)
    height, width = grey.shape
    if not 0 <= max_lag < min(height, width):
        raise ValueError(f"Expected max_lag from 0 to {min(height, width) - 1} for a {height}x{width} image; "
                         f"received {max_lag}.")
    centred = grey - grey.mean()
    shape = (2 * height - 1, 2 * width - 1)
    spectrum = np.fft.rfft2(centred, shape)
    full = np.fft.fftshift(np.fft.irfft2(np.abs(spectrum) ** 2, shape))  # lag (0, 0) at (height - 1, width - 1)
    rows = np.arange(-max_lag, max_lag + 1)
    overlaps = np.outer(height - np.abs(rows), width - np.abs(rows))  # positions that hold each lag
    window = full[height - 1 + rows[:, None], width - 1 + rows[None, :]] / overlaps
    centre = window[max_lag, max_lag]
    if centre <= 0:
        return np.zeros_like(window)  # a flat image: no structure at all
    return window / centre


def structure_distance(source, output, max_lag=DEFAULT_MAX_LAG):
    """The root-mean-square difference between two images' normalised autocorrelations (`autocorrelation`).

    0 when the output repeats like the source at every lag up to `max_lag`; around the autocorrelation's own
    spread (0.1 to 0.5 for the bundled textures) when the structure is lost.
    """
    difference = autocorrelation(source, max_lag) - autocorrelation(output, max_lag)
    return float(np.sqrt(np.mean(np.square(difference))))


def colour_deviation(image):
    """Mean absolute deviation of each channel from the pixel's grey level (the channels' mean), in 8-bit
    steps: 0 for a grey image."""
    image = np.asarray(image, np.float64)
    return float(np.abs(image - image.mean(axis=-1, keepdims=True)).mean() * 255)
