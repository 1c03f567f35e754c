"""Reconstruction quality: MSE, PSNR and SSIM of reconstructions against the images they invert.

Every measure takes RGB images in [0, 1] (reconstructions are clipped to it first) and is computed per
image; `summary` adds their means. Shared by learned and optimisation-based inversion.
"""

import numpy as np
import skimage.metrics

MEASURES = ("mse", "psnr", "ssim")


def image_metrics(image, reconstruction):
    """`{"mse", "psnr", "ssim"}` of one reconstruction; PSNR in dB for a data range of 1 (inf if exact)."""
    image = np.asarray(image, np.float64)
    reconstruction = np.clip(np.asarray(reconstruction, np.float64), 0.0, 1.0)
    mse = float(np.mean((image - reconstruction) ** 2))
    psnr = float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))
    # A 7x7 window needs images of at least 7 pixels a side; smaller ones use their odd shorter side.
    window = min(7, min(image.shape[:2]) - (1 - min(image.shape[:2]) % 2))
    ssim = float(skimage.metrics.structural_similarity(image, reconstruction, data_range=1.0, channel_axis=-1,
                                                      win_size=max(window, 3)))
    return {"mse": mse, "psnr": psnr, "ssim": ssim}


def summary(images, reconstructions):
    """Per-image measures and their means: `{"images": [...], "mean": {...}}`."""
    rows = [image_metrics(image, reconstruction) for image, reconstruction in zip(images, reconstructions)]
    return {"images": rows, "mean": {measure: float(np.mean([row[measure] for row in rows])) for measure in MEASURES}}
