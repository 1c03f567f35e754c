"""Images in and out, in the project's one convention: float32 RGB in [0, 1].

An `image` is a `(height, width, 3)` array and `images` a `(batch, height, width, 3)` batch.
`load_image` accepts files of any common format and depth (grayscale, RGBA, 16-bit) and the names of
the scikit-image sample photos bundled with scikit-image (`astronaut`, `brick`, ...), which make every
command run with no arguments and no download.
"""

import io
import pathlib

import imageio.v3 as imageio
import numpy as np
import skimage.color
import skimage.data
import skimage.transform

from deeprestore.errors import DeepRestoreError

# scikit-image ships these inside its wheel; every other skimage.data image is downloaded.
SAMPLES = ("astronaut", "brick", "camera", "chelsea", "coffee", "grass", "gravel", "horse", "rocket", "text")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm")


def to_float_rgb(array):
    """Converts an image array of any common layout and depth to float32 RGB in [0, 1].

    Grayscale is repeated over three channels, RGBA is composited on white, integer types are scaled by
    their maximum (so 16-bit images keep their range).
    """
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.float32)
    elif np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32) / np.iinfo(array.dtype).max
    else:
        array = array.astype(np.float32)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    elif array.ndim == 3 and array.shape[-1] == 2:  # grayscale with alpha
        array = skimage.color.rgba2rgb(np.concatenate([np.repeat(array[..., :1], 3, -1), array[..., 1:]], -1))
    elif array.ndim == 3 and array.shape[-1] == 4:
        array = skimage.color.rgba2rgb(np.clip(array, 0, 1))
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"an array of shape {array.shape}")
    return np.clip(array, 0.0, 1.0).astype(np.float32)


def load_image(source, size=None):
    """Loads an image file or a bundled sample as float32 RGB in [0, 1].

    Args:
        source: A path, or the name of a bundled sample (`SAMPLES`).
        size: Optional `(height, width)`, or an int for the longer side (aspect kept).

    Returns:
        A `(height, width, 3)` float32 array.

    Raises:
        DeepRestoreError: The file is missing or is not a readable image.
    """
    path = pathlib.Path(str(source))
    if not path.exists() and str(source) in SAMPLES:
        image = to_float_rgb(getattr(skimage.data, str(source))())
    else:
        if path.is_dir():
            raise DeepRestoreError(
                f"Image '{source}' is a folder; expected one image file here (or a bundled sample)."
            )
        if not path.is_file():
            raise DeepRestoreError(
                f"Image '{source}' not found; expected an image file or a bundled sample "
                f"({', '.join(SAMPLES)})."
            )
        try:
            array = (imageio.imread(path, index=0) if path.suffix.lower() in (".gif", ".tif", ".tiff")
                     else imageio.imread(path))
            image = to_float_rgb(array)
        except Exception as error:  # decoders raise many types for a broken file
            raise DeepRestoreError(
                f"Image '{source}' could not be read ({' '.join(str(error).split())[:120]}); expected a PNG, "
                "JPEG, TIFF or other common image file."
            ) from None
    return resize(image, size) if size is not None else image


def resize(image, size):
    """Resizes an image to `(height, width)`, or to an int longer side keeping the aspect ratio."""
    height, width = image.shape[:2]
    if isinstance(size, (int, np.integer)):
        scale = size / max(height, width)
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
    if tuple(size) == (height, width):
        return image.astype(np.float32)
    return skimage.transform.resize(
        image, tuple(size) + image.shape[2:], order=1, anti_aliasing=size[0] < height, preserve_range=True
    ).astype(np.float32)


def list_images(source):
    """Expands a folder, a list file (one path per line, `#` comments) or a single image into sources.

    Raises:
        DeepRestoreError: A folder holds no images.
    """
    path = pathlib.Path(str(source))
    if path.is_dir():
        found = sorted(item for item in path.iterdir() if item.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise DeepRestoreError(
                f"Folder '{path}' holds no images; expected files ending in {', '.join(IMAGE_SUFFIXES)}."
            )
        return [str(item) for item in found]
    if path.is_file() and path.suffix.lower() in (".txt", ".lst", ".list"):
        lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
        return [line for line in lines if line]
    return [str(source)]


def to_uint8(image):
    """float [0, 1] to uint8, clipped."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def save_image(path, image):
    """Saves a float [0, 1] image (clipped) as an 8-bit PNG, atomically.

    A partly written file never appears under the final name.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    imageio.imwrite(buffer, to_uint8(image), extension=".png")
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_bytes(buffer.getvalue())
    temporary.replace(path)
    return path
