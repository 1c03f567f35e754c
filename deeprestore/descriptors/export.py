"""Descriptors in the benchmark's CSV layout: `<root>/<name>/<sequence>/<image>.csv`.

Each file has one row per patch (row j of the image's stack), comma-separated, no header. Any tool
that writes this layout (OpenCV SIFT, a published network) can be evaluated next to ours. Values are
written with 9 significant digits, enough to read float32 values back exactly.
"""

import pathlib

import numpy as np

from deeprestore.descriptors.hpatches import IMAGES
from deeprestore.errors import DeepRestoreError


def save_descriptors(folder, descriptors):
    """Writes `{sequence: {image: (patches, dimension)}}` as `<folder>/<sequence>/<image>.csv`.

    Returns:
        `folder` as a `pathlib.Path`.
    """
    folder = pathlib.Path(folder)
    for sequence, images in descriptors.items():
        (folder / sequence).mkdir(parents=True, exist_ok=True)
        for image, array in images.items():
            np.savetxt(folder / sequence / f"{image}.csv", np.asarray(array, np.float32), fmt="%.9g", delimiter=",")
    return folder


def load_descriptors(folder, sequences=None):
    """Reads descriptors written in the benchmark's layout, as float32 (like the benchmark).

    Args:
        folder: `<root>/<name>`, holding one folder per sequence.
        sequences: the sequences to read (default: every sub-folder).

    Raises:
        DeepRestoreError: the folder, a sequence or an image file is missing, or a file is not numeric CSV.
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise DeepRestoreError(f"Descriptor folder '{folder}' not found; expected <root>/<name> with "
                               "<sequence>/<image>.csv files.")
    if sequences is None:
        sequences = sorted(path.name for path in folder.iterdir() if path.is_dir())
    descriptors = {}
    for sequence in sequences:
        descriptors[sequence] = {}
        for image in IMAGES:
            path = folder / sequence / f"{image}.csv"
            if not path.is_file():
                raise DeepRestoreError(f"Descriptor file '{path}' is missing; expected one CSV per image "
                                       f"({', '.join(IMAGES[:3])}, ...) in every sequence folder.")
            try:
                values = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
            except ValueError as error:
                raise DeepRestoreError(f"Descriptor file '{path}' is not numeric CSV ({error}); expected one "
                                       "row of comma-separated numbers per patch, no header.") from None
            descriptors[sequence][image] = values.astype(np.float32)
    return descriptors
