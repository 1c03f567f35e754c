"""Training data for restoration: step-deterministic batches of `(corrupted, clean)` patches.

A `PatchData` holds its clean material (whole images, or the patches of HPatches-format stacks with
their noisy twins) split once into a training and a validation part, and serves
`batch(step) -> (inputs, targets)`, each `(batch, size, size, channels)` float32 in [0, 1], drawn from
a generator seeded by `(seed, step)` alone: a resumed run sees exactly the batches an uninterrupted run
would. `validation()` returns fixed batches from the validation part.

Splits: an image's bottom `validation_fraction` of rows is validation material and the rest training
material, so patches never straddle the two and one image suffices; a stack's last
`validation_fraction` of patches is validation material.
"""

import dataclasses
import pathlib

import imageio.v3 as imageio
import numpy as np
import skimage.color

from deeprestore import images as image_io
from deeprestore import settings
from deeprestore.errors import DeepRestoreError

NOISE_SUFFIX = "_noise"
# The bundled photos trained on by default: all but the held-out ones (`camera`, the default test image,
# and `astronaut`), on which the learning curve is measured.
TEST_SAMPLE = "camera"
HELD_OUT_SAMPLES = settings.HELD_OUT_SAMPLES
TRAINING_SAMPLES = tuple(name for name in image_io.SAMPLES if name not in HELD_OUT_SAMPLES)
_TRAIN_STREAM, _VALIDATION_STREAM = 0, 1


def to_channels(image, channels, source="image"):
    """An RGB [0, 1] image as `(height, width, channels)`: grey (luminance) for 1, unchanged for 3.

    Raises:
        DeepRestoreError: `channels` is neither 1 nor 3.
    """
    if channels == 3:
        return image.astype(np.float32)
    if channels == 1:
        return skimage.color.rgb2gray(image)[..., None].astype(np.float32)
    raise DeepRestoreError(f"Cannot make {channels} channels of '{source}'; expected 1 (grey) or 3 (RGB).")


def is_grey(image):
    """Whether an RGB image has three equal channels."""
    return bool(np.all(image[..., :1] == image))


def is_paired_folder(folder):
    """Whether `folder` holds HPatches-format noisy twins (`<image>_noise.png`) at any depth."""
    return any(pathlib.Path(folder).rglob(f"*{NOISE_SUFFIX}.png"))


def read_stack(path, patch_size=None):
    """Reads a vertical stack of square grey patches as `(count, side, side)` uint8.

    Raises:
        DeepRestoreError: Not readable, not grey, or its height is not a multiple of its width.
    """
    try:
        stack = imageio.imread(path)
    except Exception as error:  # decoders raise many types for a broken file
        raise DeepRestoreError(f"Patch stack '{path}' could not be read ({error}); expected a grey PNG.") from None
    if stack.ndim == 3 and stack.shape[-1] in (3, 4) and np.all(stack[..., :1] == stack[..., :3]):
        stack = stack[..., 0]
    if stack.ndim != 2 or stack.dtype != np.uint8:
        raise DeepRestoreError(f"Patch stack '{path}' is {stack.dtype} {stack.shape}; expected an 8-bit grey PNG.")
    side = patch_size or stack.shape[1]
    if stack.shape[1] != side or stack.shape[0] % side:
        raise DeepRestoreError(
            f"Patch stack '{path}' is {stack.shape[0]}x{stack.shape[1]}; expected a vertical stack of "
            f"{side}x{side} patches (height a multiple of {side})."
        )
    return stack.reshape(-1, side, side)


def read_pairs(folder):
    """Reads every `<image>.png` / `<image>_noise.png` pair under `folder` (HPatches-format, N-HPatches).

    Returns:
        `(clean, noisy, names)`: lists of `(count, side, side)` uint8 stacks and their relative paths.

    Raises:
        DeepRestoreError: A noisy twin without its clean image, stacks of different shapes or sides.
    """
    folder = pathlib.Path(folder)
    clean, noisy, names, side = [], [], [], None
    for noisy_path in sorted(folder.rglob(f"*{NOISE_SUFFIX}.png")):
        clean_path = noisy_path.with_name(noisy_path.name[: -len(f"{NOISE_SUFFIX}.png")] + ".png")
        if not clean_path.is_file():
            raise DeepRestoreError(f"'{noisy_path}' has no clean twin; expected '{clean_path}' beside it.")
        clean_stack = read_stack(clean_path, side)
        side = clean_stack.shape[1]
        noisy_stack = read_stack(noisy_path, side)
        if noisy_stack.shape != clean_stack.shape:
            raise DeepRestoreError(
                f"'{noisy_path}' holds {len(noisy_stack)} patches and '{clean_path}' {len(clean_stack)}; "
                "expected the same number."
            )
        clean.append(clean_stack)
        noisy.append(noisy_stack)
        names.append(str(clean_path.relative_to(folder)))
    if not clean:
        raise DeepRestoreError(
            f"Folder '{folder}' holds no '<image>{NOISE_SUFFIX}.png' files; expected HPatches pairs.")
    return clean, noisy, names


def augment(patch, rng):
    """One of the eight rotations and flips of a `(side, side, channels)` patch, drawn from `rng`."""
    patch = np.rot90(patch, k=int(rng.integers(4)))
    return patch[:, ::-1] if rng.integers(2) else patch


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How patches are drawn into batches, whatever their source.

    Attributes:
        batch_size: Patches per batch.
        seed: Seed of every draw.
        validation_fraction: The share of each image (its bottom rows) or stack (its last patches) kept for
            validation.
        validation_batches: Number of fixed validation batches.
    """

    batch_size: int
    seed: object = 0
    validation_fraction: float = 0.2
    validation_batches: int = 4


class PatchData:
    """Patches of clean images corrupted on the fly, or of HPatches noisy/clean pairs.

    Build one with `from_images` or `from_pairs`.

    Args:
        draw: `(rng, part, count) -> (inputs, targets)` drawing `count` patches from part `train` or
            `validation`.
        patch_size: Side of the square patches.
        sampling: A `Sampling`: batch size, seed and validation batches.
        description: What the data are, for the run's config.
    """

    def __init__(self, draw, patch_size, sampling, description=None):
        self._draw = draw
        self.patch_size = patch_size
        self.batch_size = sampling.batch_size
        self.seed = sampling.seed
        self.validation_batches = sampling.validation_batches
        self.description = description or {}
        self._validation = None

    def batch(self, step):
        """The training batch of `step` `(inputs, targets)`, a function of the seed and step alone."""
        return self._draw(np.random.default_rng((self.seed, _TRAIN_STREAM, step)), "train", self.batch_size)

    def validation(self):
        """The fixed validation batches, drawn once."""
        if self._validation is None:
            self._validation = [
                self._draw(np.random.default_rng((self.seed, _VALIDATION_STREAM, index)), "validation", self.batch_size)
                for index in range(self.validation_batches)
            ]
        return self._validation

    @classmethod
    def from_images(cls, images, patch_size, corruption, sampling, names=(), augmented=True):
        """Random patches of clean images, corrupted with a seeded `corruption`, randomly rotated and flipped.

        Args:
            images: `(height, width, channels)` float32 images in [0, 1].
            patch_size: Side of the square patches.
            corruption: A `Corruption` making the inputs from the clean targets.
            sampling: A `Sampling`; its `validation_fraction` is the bottom fraction of each image's rows.
            names: The images' names, for the description.
            augmented: Rotate and flip each patch at random (one of eight); False keeps them as cut.

        Raises:
            DeepRestoreError: No image is large enough for a training and a validation patch.
        """
        validation_fraction = sampling.validation_fraction
        regions = {"train": [], "validation": []}
        for image in images:
            split = round(image.shape[0] * (1 - validation_fraction))
            for part, region in (("train", image[:split]), ("validation", image[split:])):
                if region.shape[0] >= patch_size and region.shape[1] >= patch_size:
                    regions[part].append(region)
        for part, found in regions.items():
            if not found:
                raise DeepRestoreError(
                    f"No image has a {part} part of at least {patch_size}x{patch_size} pixels (the bottom "
                    f"{validation_fraction:g} of each image's rows is validation); expected larger images "
                    "or a smaller --patch-size."
                )
        weights = {part: _position_weights(found, patch_size) for part, found in regions.items()}

        def draw(rng, part, count):
            chosen = rng.choice(len(regions[part]), size=count, p=weights[part])
            targets = []
            for index in chosen:
                region = regions[part][index]
                top = rng.integers(region.shape[0] - patch_size + 1)
                left = rng.integers(region.shape[1] - patch_size + 1)
                patch = region[top:top + patch_size, left:left + patch_size]
                targets.append(augment(patch, rng) if augmented else patch)
            targets = np.stack(targets).astype(np.float32)  # (batch, size, size, channels)
            inputs = np.stack([corruption(target, rng) for target in targets])
            return inputs, targets

        description = {"kind": "images", "images": list(names), "corruption": corruption.spec,
                       "patch_size": patch_size, "validation_fraction": validation_fraction}
        return cls(draw, patch_size, sampling, description)

    @classmethod
    def from_pairs(cls, clean, noisy, sampling, names=()):
        """Patches of HPatches-format stacks, the noisy twins as inputs and the clean ones as targets.

        Args:
            clean: `(count, side, side)` uint8 stacks.
            noisy: Their noisy twins.
            sampling: A `Sampling`; its `validation_fraction` is the last fraction of each stack's patches.
            names: The stacks' names, for the description.

        Raises:
            DeepRestoreError: Too few patches for both parts.
        """
        validation_fraction = sampling.validation_fraction
        parts = {"train": ([], []), "validation": ([], [])}
        for clean_stack, noisy_stack in zip(clean, noisy):
            split = round(len(clean_stack) * (1 - validation_fraction))
            for part, selection in (("train", slice(None, split)), ("validation", slice(split, None))):
                parts[part][0].append(clean_stack[selection])
                parts[part][1].append(noisy_stack[selection])
        arrays = {part: (np.concatenate(c), np.concatenate(n)) for part, (c, n) in parts.items()}
        for part, (targets, _) in arrays.items():
            if not len(targets):
                raise DeepRestoreError(
                    f"The stacks hold no {part} patches (the last {validation_fraction:g} of each stack is "
                    "validation); expected stacks of several patches."
                )

        def draw(rng, part, count):
            targets, inputs = arrays[part]
            chosen = rng.integers(len(targets), size=count)
            scale = np.float32(1 / 255)
            return inputs[chosen, ..., None] * scale, targets[chosen, ..., None] * scale

        side = clean[0].shape[1]
        description = {"kind": "hpatches-pairs", "stacks": list(names), "patch_size": side,
                       "train_patches": len(arrays["train"][0]), "validation_patches": len(arrays["validation"][0]),
                       "validation_fraction": validation_fraction}
        return cls(draw, side, sampling, description)


def _position_weights(regions, patch_size):
    """Each region's share of all patch positions, so every position is equally likely."""
    counts = np.array([(r.shape[0] - patch_size + 1) * (r.shape[1] - patch_size + 1) for r in regions], float)
    return counts / counts.sum()
