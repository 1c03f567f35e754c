"""Scoring a restoration model on held-out material and writing what a run shows of it.

`score(model, run, material)` restores a `Material` (one whole image, restored tile by tile, or a
stack of patches), runs the task's classical methods on the same inputs, and writes into the run the
PSNR/SSIM table (`metrics.csv`, `metrics.json`, and printed), seed 004's noisy / denoised / clean
figure (`figure.png`) and, for a whole image, every method's output under `images/`. For inpainting,
the model's output is used only inside the hole: known pixels are kept, as every inpainting method does.
"""

import dataclasses

import numpy as np

from deeprestore import images as image_io
from deeprestore.restoration import corruptions, evaluation
from deeprestore.restoration.apply import restore, restore_patches
from deeprestore.restoration.figures import restoration_figure

FIGURE_ROWS = 6


@dataclasses.dataclass
class Material:
    """What a model is scored on: one whole image (restored tile by tile) or a stack of patches.

    Attributes:
        inputs: Corrupted images `(count, height, width, channels)`.
        clean: Their clean versions, or None when unknown.
        task: `denoise` or `inpaint` (which classical methods compete).
        whole: One whole image (its images are saved too) rather than patches.
        corruption: The `Corruption` that made the inputs, when known.
    """

    inputs: np.ndarray
    clean: np.ndarray | None
    task: str
    whole: bool
    corruption: corruptions.Corruption | None = None


def score(model, run, material, baselines=True, echo=print, tiling=None):
    """Restores the material, scores it with the classical methods and writes images, table and figure.

    Args:
        model: The restoration model.
        run: The `RunDir` to write into.
        material: A `Material`.
        baselines: Also run the task's classical methods.
        echo: Where the score table goes.
        tiling: `{"tile": ..., "overlap": ...}` for a whole image (default: `restore`'s).

    Returns:
        The score rows (empty when the clean images are unknown).
    """
    inputs, clean = material.inputs, material.clean
    if material.whole:
        outputs = {"model": [restore(model, inputs[0], **(tiling or {}))]}
    else:
        outputs = {"model": list(restore_patches(model, inputs))}
    masks = [missing_mask(image, material.corruption) for image in inputs]
    if material.task == "inpaint":  # known pixels are kept, as every inpainting method does
        outputs["model"] = [np.where(mask[..., None], restored, image)
                            for mask, restored, image in zip(masks, outputs["model"], inputs)]
    if baselines:
        for name, method in evaluation.classical_methods(material.task).items():
            outputs[name] = [method(image, mask) for image, mask in zip(inputs, masks)]
    rows = evaluation.compare(clean, inputs, outputs) if clean is not None else []
    if rows:
        evaluation.save_table(run.path, rows, task=material.task, images=len(inputs),
                              corruption=material.corruption.spec if material.corruption else None)
        echo(evaluation.format_table(rows))
        if baselines and material.task == "denoise" and not evaluation.has_bm3d():
            echo(evaluation.BM3D_NOTE)
    if material.whole:
        image_io.save_image(run.images_dir / "input.png", _rgb(inputs[0]))
        for name, images in outputs.items():
            image_io.save_image(run.images_dir / f"{name}.png", _rgb(images[0]))
        if clean is not None:
            image_io.save_image(run.images_dir / "clean.png", _rgb(clean[0]))
    titles = ["noisy", "denoised"] if material.task == "denoise" else ["corrupted", "restored"]
    if rows:
        titles = [f"{titles[0]} {rows[0]['psnr']:.2f} dB", f"{titles[1]} {rows[1]['psnr']:.2f} dB", "clean"]
    shown = np.unique(np.linspace(0, len(inputs) - 1, FIGURE_ROWS).round().astype(int))  # spread over the set
    examples = [[inputs[index], outputs["model"][index]] + ([clean[index]] if clean is not None else [])
                for index in shown]
    restoration_figure(run.path / "figure.png", examples, titles)
    return rows


def missing_mask(image, corruption):
    """The missing pixels: the corruption's centre, else (inpainting an unknown hole) pixels 0 in every channel."""
    if corruption is not None and corruption.kind == "centre":
        return corruption.mask(image.shape)
    return np.all(image == 0.0, axis=-1)


def _rgb(image):
    """Grey `(height, width, 1)` as RGB for saving."""
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
