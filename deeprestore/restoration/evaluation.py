"""Scoring restorations: PSNR and SSIM against the clean image, and the classical methods.

A *method* is a function `(image, mask) -> image` on one `(height, width, channels)` float image in
[0, 1] (`mask` marks missing pixels for inpainting, else None). `compare` scores the corrupted input
and every method's output against the clean images and returns one row per method: `method`, `psnr`
(dB) and `ssim`, each the mean over the images (one whole image, or many patches). The classical
denoisers are scikit-image's (total variation, NL-means, wavelet) and, when the optional `bm3d` package
is installed (`pip install deeprestore[bm3d]`), BM3D.
"""

import csv
import io
import math

import numpy as np
import skimage.metrics
import skimage.restoration

from deeprestore.rundir import atomic_write, to_json

DATA_RANGE = 1.0
INPUT_ROW = "input"


def psnr(clean, image):
    """Peak signal-to-noise ratio in dB for images in [0, 1] (infinite when they are equal)."""
    if np.array_equal(clean, image):
        return math.inf
    return float(skimage.metrics.peak_signal_noise_ratio(clean, image, data_range=DATA_RANGE))


def ssim(clean, image):
    """Structural similarity (Wang et al. 2004; scikit-image's 7x7 uniform window) for images in [0, 1].

    Reference:
        Wang, Bovik, Sheikh & Simoncelli, 2004. Image quality assessment: from error visibility to
        structural similarity.
    """
    clean, image = _without_grey_axis(clean), _without_grey_axis(image)
    return float(skimage.metrics.structural_similarity(
        clean, image, data_range=DATA_RANGE, channel_axis=-1 if clean.ndim == 3 else None))


def _without_grey_axis(image):
    return image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image


def _per_channel_layout(function):
    """Runs a scikit-image function on 2-D grey or 3-D colour images and returns `(h, w, c)`."""

    def method(image, mask=None):
        grey = image.shape[-1] == 1
        result = function(image[..., 0] if grey else image, mask, None if grey else -1)
        return np.clip(result, 0.0, 1.0).reshape(image.shape).astype(np.float32)

    return method


def noise_level(image):
    """A robust estimate of the standard deviation of white noise in a grey or colour image.

    The median absolute finest diagonal Haar detail over 0.6745 (Donoho's MAD rule; for white noise
    of deviation sigma the detail `(a - b - c + d) / 2` of a 2x2 block has deviation sigma too). It
    does what scikit-image's `estimate_sigma` does without needing PyWavelets.

    Reference:
        Donoho & Johnstone, 1994. Ideal spatial adaptation by wavelet shrinkage.
    """
    height, width = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
    blocks = image[:height, :width]
    detail = (blocks[0::2, 0::2] - blocks[0::2, 1::2] - blocks[1::2, 0::2] + blocks[1::2, 1::2]) / 2
    return float(np.median(np.abs(detail)) / 0.6745)


def _nl_means(image, mask, channel_axis):
    # scikit-image's gallery recipe: h from the estimated noise level, 5x5 patches, 13x13 search.
    sigma = noise_level(image)
    return skimage.restoration.denoise_nl_means(image, h=0.8 * sigma, sigma=sigma, fast_mode=True, patch_size=5,
                                                patch_distance=6, channel_axis=channel_axis)


def _bm3d(image, mask, channel_axis):
    # The maintained reference implementation (Makinen, Azzari & Foi), blind like NL-means: it gets the
    # estimated noise level, not the true one.
    import bm3d

    sigma = noise_level(image)
    return bm3d.bm3d(image, sigma) if channel_axis is None else bm3d.bm3d_rgb(image, sigma)


def has_bm3d():
    """Whether the optional `bm3d` package (the BM3D baseline) can be imported."""
    try:
        import bm3d  # noqa: F401
    except ImportError:
        return False
    return True


BM3D_NOTE = "bm3d: not installed, so BM3D is not scored (pip install deeprestore[bm3d] adds it)."


def _has_pywavelets():
    try:
        import pywt  # noqa: F401
    except ImportError:
        return False
    return True


CLASSICAL = {
    "denoise": {
        "tv": _per_channel_layout(lambda image, mask, axis: skimage.restoration.denoise_tv_chambolle(
            image, weight=0.1, channel_axis=axis)),
        "nl-means": _per_channel_layout(_nl_means),
        "wavelet": _per_channel_layout(lambda image, mask, axis: skimage.restoration.denoise_wavelet(
            image, method="BayesShrink", mode="soft", rescale_sigma=True, channel_axis=axis,
            convert2ycbcr=axis is not None)),
    },
    "inpaint": {
        "biharmonic": _per_channel_layout(lambda image, mask, axis: skimage.restoration.inpaint_biharmonic(
            image, mask, channel_axis=axis)),
    },
}


def classical_methods(task):
    """The classical methods for a task (`denoise`: tv, nl-means, wavelet, bm3d; `inpaint`: biharmonic).

    The wavelet denoiser needs PyWavelets and BM3D the optional `bm3d` package; without them, they are
    left out.

    Reference:
        Dabov, Foi, Katkovnik & Egiazarian, 2007. Image denoising by sparse 3-D transform-domain
        collaborative filtering (BM3D); Makinen, Azzari & Foi, 2020 (the `bm3d` package).
    """
    methods = dict(CLASSICAL[task])
    if not _has_pywavelets():
        methods.pop("wavelet", None)
    if task == "denoise" and has_bm3d():
        methods["bm3d"] = _per_channel_layout(_bm3d)
    return methods


def compare(clean_images, inputs, outputs):
    """Scores the corrupted inputs and each method's outputs against the clean images.

    Args:
        clean_images: A list (or stack) of clean `(height, width, channels)` images.
        inputs: The corrupted images, the same number.
        outputs: `{method: images}` in the same order.

    Returns:
        A list of rows `{"method", "psnr", "ssim"}`, the input first, means over the images.
    """
    rows = []
    for method, images in {INPUT_ROW: inputs, **outputs}.items():
        images = [np.clip(image, 0.0, 1.0) for image in images]
        rows.append({
            "method": method,
            "psnr": float(np.mean([psnr(clean, image) for clean, image in zip(clean_images, images)])),
            "ssim": float(np.mean([ssim(clean, image) for clean, image in zip(clean_images, images)])),
        })
    return rows


def format_table(rows):
    """The rows as a fixed-width text table."""
    lines = [f"{'method':<22} {'PSNR (dB)':>10} {'SSIM':>8}"]
    for row in rows:
        value = "inf" if math.isinf(row["psnr"]) else f"{row['psnr']:.2f}"
        lines.append(f"{row['method']:<22} {value:>10} {row['ssim']:>8.4f}")
    return "\n".join(lines)


def save_table(directory, rows, stem="metrics", **extra):
    """Writes the rows as `<stem>.csv` and `<stem>.json` (with `extra` context) into `directory`."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["method", "psnr", "ssim"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(directory / f"{stem}.csv", buffer.getvalue())
    atomic_write(directory / f"{stem}.json", to_json({**extra, "rows": rows}))
