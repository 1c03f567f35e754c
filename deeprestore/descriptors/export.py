"""Descriptors in the benchmark's CSV layout: `<root>/<name>/<sequence>/<image>.csv`.

Each file has one row per patch (row j of the image's stack), comma-separated, no header (files
separated by `;`, tabs or spaces are read too: the delimiter is detected from each file's first line
unless given). Any tool that writes this layout (OpenCV SIFT, a published network) can be evaluated
next to ours. Values are written with 9 significant digits, enough to read float32 values back exactly.
Reading checks everything the evaluation relies on and names the file of any fault.
"""

import pathlib
import warnings

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


DELIMITERS = (",", ";", "\t")


def _delimiter(path, given):
    """The delimiter of a descriptor file: `given`, else the first of `DELIMITERS` in its first line,
    else `None` (runs of spaces)."""
    if given is not None:
        return given
    with open(path, encoding="utf-8", errors="replace") as file:
        first = file.readline()
    return next((delimiter for delimiter in DELIMITERS if delimiter in first), None)


def read_descriptor_file(path, delimiter=None, rows=None):
    """One descriptor CSV as float32 `(rows, dimension)`, checked.

    Args:
        path: the file.
        delimiter: the field separator; `None` detects it (see `_delimiter`).
        rows: the number of rows expected (the patches of the image), or `None`.

    Raises:
        DeepRestoreError: naming the file, what it holds and what was expected: not numeric, ragged,
            empty, a row count other than `rows`, one value per row (a wrong delimiter), NaN or inf.
    """
    separator = _delimiter(path, delimiter)
    shown = {None: "spaces", "\t": "tabs"}.get(separator, f"'{separator}'")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # an empty file: checked below
            values = np.loadtxt(path, delimiter=separator, ndmin=2, dtype=np.float64, comments=None)
    except ValueError as error:
        text = str(error)  # holds the whole offending row: shortened
        detail = text if len(text) < 160 else f"{text[:100]}...{text[-50:]}"
        raise DeepRestoreError(f"Descriptor file '{path}' is not numeric CSV separated by {shown} ({detail}); expected "
                               "one row of numbers per patch, no header (--delimiter sets the separator).") from None
    if values.size == 0:
        raise DeepRestoreError(f"Descriptor file '{path}' is empty; expected {rows if rows is not None else 'one'} "
                               "row(s) of numbers, one per patch.")
    if rows is not None and len(values) != rows:
        raise DeepRestoreError(f"Descriptor file '{path}' has {len(values)} rows; expected {rows}, one per patch "
                               "of the image's stack.")
    if values.shape[1] == 1:
        raise DeepRestoreError(f"Descriptor file '{path}' has 1 value per row when split at {shown}; expected a "
                               "descriptor of several values (check --delimiter).")
    finite = np.isfinite(values)
    if not finite.all():
        row, column = np.argwhere(~finite)[0]
        raise DeepRestoreError(f"Descriptor file '{path}' holds {values[row, column]} at row {row + 1}, column "
                               f"{column + 1} ({np.count_nonzero(~finite)} such values); expected finite numbers.")
    return values.astype(np.float32)


def load_descriptors(folder, sequences=None, counts=None, delimiter=None):
    """Reads descriptors written in the benchmark's layout, as float32 (like the benchmark).

    Args:
        folder: `<root>/<name>`, holding one folder per sequence.
        sequences: the sequences to read (default: every sub-folder).
        counts: `{sequence: patches per image}` of the dataset, to check each file's rows against.
        delimiter: the field separator; `None` detects it per file.

    Raises:
        DeepRestoreError: the folder, a sequence or an image file is missing, a file is malformed (see
            `read_descriptor_file`), or files disagree in dimension.
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise DeepRestoreError(f"Descriptor folder '{folder}' not found; expected <root>/<name> with "
                               "<sequence>/<image>.csv files.")
    if sequences is None:
        sequences = sorted(path.name for path in folder.iterdir() if path.is_dir())
    descriptors, first = {}, None
    for sequence in sequences:
        descriptors[sequence] = {}
        for image in IMAGES:
            path = folder / sequence / f"{image}.csv"
            if not path.is_file():
                raise DeepRestoreError(f"Descriptor file '{path}' is missing; expected one CSV per image "
                                       f"({', '.join(IMAGES[:3])}, ...) in every sequence folder.")
            values = read_descriptor_file(path, delimiter, None if counts is None else counts[sequence])
            if first is None:
                first = (path, values.shape[1])
            elif values.shape[1] != first[1]:
                raise DeepRestoreError(f"Descriptor file '{path}' has {values.shape[1]} values per row; expected "
                                       f"{first[1]}, like '{first[0]}'.")
            descriptors[sequence][image] = values
    return descriptors
