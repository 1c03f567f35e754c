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
_NUMBER_CHARACTERS = b"0123456789+-.eE"
# Odd multipliers for the multiplicative hash that gives each distinct number of a file its own slot.
_MULTIPLIERS = np.random.default_rng(0).integers(1, 1 << 63, 16, dtype=np.uint64) | np.uint64(1)


def _delimiter(data, given):
    """The delimiter of a descriptor file's bytes: `given`, else the first of `DELIMITERS` in its first
    line, else `None` (runs of spaces)."""
    if given is not None:
        return given
    first = data.split(b"\n", 1)[0].decode("utf-8", errors="replace")
    return next((delimiter for delimiter in DELIMITERS if delimiter in first), None)


def _hash_slots(keys):
    """`(multiplier, shift, slots)`: `(keys * multiplier) >> shift` puts each of the distinct `keys` in
    its own slot of a table of `2 ** (64 - shift)`; `None` if no multiplier tried does."""
    for bits in range(len(keys).bit_length() + 4, 17):
        shift = np.uint64(64 - bits)
        for multiplier in _MULTIPLIERS:
            slots = (keys * multiplier) >> shift
            if len(set(slots.tolist())) == len(keys):
                return multiplier, shift, slots
    return None


class _Lookup:
    """The table of a file's distinct numbers, by a hash of their bytes: `numbers[(keys * multiplier)
    >> shift]` for fields whose key is `keys[(keys * multiplier) >> shift]`."""

    def __init__(self, vocabulary):
        multiplier, self.shift, slots = _hash_slots(vocabulary)
        self.multiplier = multiplier
        self.keys = np.zeros(1 << (64 - int(self.shift)), np.uint64)
        self.keys[slots] = vocabulary
        self.numbers = np.zeros(len(self.keys))
        # Raises ValueError for a token that is not a number, and for NaN or infinity (np.loadtxt then
        # reads the file, and the checks name the value).
        self.numbers[slots] = [float(int(key).to_bytes(8, "little").rstrip(b"\0")) for key in vocabulary]
        if not np.isfinite(self.numbers).all():
            raise ValueError("not finite")
        self.numbers = self.numbers.astype(np.float32)  # as the benchmark reads descriptors

    def slots(self, keys):
        """The slot of each key, and whether every key is in the table."""
        slot = (keys * self.multiplier) >> self.shift
        return slot, bool((self.keys[slot] == keys).all())


def _field_ends(data, delimiter):
    """`(ends, columns)`: the offset one past each field of `data` (bytes ending in a newline, no
    carriage returns) and the fields per line, else `None` for ragged rows."""
    text = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero((text == ord(delimiter)) | (text == ord("\n")))  # one past each field
    line_ends = np.flatnonzero(text[ends] == ord("\n"))
    columns = int(line_ends[0]) + 1
    if len(ends) != columns * len(line_ends) or (line_ends != np.arange(columns - 1, len(ends), columns)).any():
        return None
    return ends, columns


def _repeated_numbers(data, delimiter, known=None, distinct=4096):
    """The float32 `(rows, columns)` grid of a file's bytes (float64 values rounded to float32, as
    `read_descriptor_file` returns them) when it holds few distinct finite numbers of at most 8
    characters each (quantised descriptors, integer ones such as SIFT's), else `None`.

    Each distinct token is converted once with `float` (which reads exactly what `np.loadtxt` reads:
    both use CPython's correctly rounded `PyOS_string_to_double`); every field is then a table
    look-up by a hash of its bytes. `known` (a dict) carries the table from file to file: files of
    one descriptor usually hold the same few numbers. `None` for anything else (longer or many
    distinct numbers, other characters, empty fields, blank lines, ragged rows, a token `float`
    refuses), which `np.loadtxt` then reads or refuses with its own message.
    """
    if delimiter is None or len(delimiter) != 1 or not delimiter.isascii() or delimiter in "0123456789+-.eE\r\n":
        return None
    data = data.replace(b"\r\n", b"\n") if b"\r" in data else data
    data = data if data.endswith(b"\n") else data + b"\n"
    head = data[:4096].split(b"\n")[:-1] or [b""]  # a cheap look at the first lines before any work
    fields = [field for line in head[:4] for field in line.split(delimiter.encode())]
    if max(map(len, fields)) > 8 or len(set(fields)) > 256:
        return None
    if data.translate(None, _NUMBER_CHARACTERS + delimiter.encode() + b"\n"):  # any other byte
        return None
    grid = _field_ends(data, delimiter)
    if grid is None:
        return None
    ends, columns = grid
    lengths = np.empty_like(ends)
    lengths[0] = ends[0]
    np.subtract(ends[1:], ends[:-1] + 1, out=lengths[1:])
    if lengths.min() < 1 or lengths.max() > 8:
        return None
    # Each field's bytes as one integer: the 8 bytes ending at the field (an unaligned view of the
    # text), shifted right to drop the bytes before it.
    windows = np.ndarray((len(data) + 1,), "<u8", b"\n" * 8 + data, 0, (1,))
    keys = windows[ends]
    keys >>= ((8 - lengths) << 3).astype(np.uint64)
    known = {} if known is None else known
    lookup = known.get("lookup")
    slot, complete = lookup.slots(keys) if lookup is not None else (None, False)
    if not complete:
        # The known numbers and those this file adds, or a sample first; then any the sample missed.
        vocabulary = (np.union1d(lookup.keys[lookup.keys > 0], keys[lookup.keys[slot] != keys]) if lookup is not None
                      else np.unique(keys[::max(1, len(keys) // 1024)]))
        for _ in range(2):
            if len(vocabulary) > distinct:
                return None
            try:
                lookup = _Lookup(vocabulary)
            except (TypeError, ValueError):  # no multiplier separates them, or not a number
                return None
            slot, complete = lookup.slots(keys)
            if complete:
                break
            vocabulary = np.union1d(vocabulary, keys[lookup.keys[slot] != keys])
        if not complete:
            return None
        known["lookup"] = lookup
    return lookup.numbers[slot].reshape(-1, columns)


def _arrow_numbers(data, delimiter):
    """The float32 `(rows, columns)` grid of a file's bytes, each field converted by Arrow (float64
    values rounded to float32, as `read_descriptor_file` returns them), else `None`.

    Arrow converts a string to float64 correctly rounded (the fast_float algorithm), as `np.loadtxt`
    does (CPython's `PyOS_string_to_double`), so the values are the same bit for bit; the fields are
    found with numpy (Arrow's own CSV reader takes longer to split them than to convert them), and
    the whole reading takes a third of `np.loadtxt`'s time on descriptors of many distinct numbers
    (learned ones, written with 9 digits). Each field is given as it stands, with no quoting, padding
    or header: the only finite values Arrow reads are decimal numbers, which `np.loadtxt` reads too.
    `None` for an empty field, a ragged row, a token Arrow refuses, a value that is not finite as
    float32 (`nan` and `inf` included), and where pyarrow is not installed: `np.loadtxt` then reads
    the file or refuses it with its own message.
    """
    if delimiter is None or len(delimiter) != 1 or not delimiter.isascii() or delimiter in "0123456789+-.eE\r\n":
        return None
    try:
        import pyarrow
    except ImportError:
        return None
    data = data.replace(b"\r\n", b"\n") if b"\r" in data else data
    data = data if data.endswith(b"\n") else data + b"\n"
    grid = _field_ends(data, delimiter)
    if grid is None:
        return None
    ends, columns = grid
    # The file as strings that alternate field, separator, field...: the separators null, so that the
    # cast skips them and the file's bytes are used in place.
    offsets = np.empty(2 * len(ends) + 1, np.int64)
    offsets[0] = 0
    offsets[1::2] = ends
    np.add(ends, 1, out=offsets[2::2])
    valid = np.full((2 * len(ends) + 7) // 8, 0b01010101, np.uint8)  # even strings, least significant bit first
    fields = pyarrow.LargeStringArray.from_buffers(2 * len(ends), pyarrow.py_buffer(offsets), pyarrow.py_buffer(data),
                                                   pyarrow.py_buffer(valid), null_count=len(ends))
    try:
        converted = fields.cast(pyarrow.float64())
    except pyarrow.ArrowInvalid:  # an empty field, a token that is not a number
        return None
    numbers = np.frombuffer(converted.buffers()[1], np.float64, 2 * len(ends))[::2]
    with np.errstate(over="ignore"):  # beyond float32's range: np.loadtxt reads the file again
        values = numbers.astype(np.float32).reshape(-1, columns)  # rounded as `astype` rounds
    return values if np.isfinite(values).all() else None


def read_descriptor_file(path, delimiter=None, rows=None, known=None):
    """One descriptor CSV as float32 `(rows, dimension)`, checked.

    Files of few distinct short numbers are read by `_repeated_numbers`, other delimited files of
    numbers by `_arrow_numbers` where pyarrow is installed (both several times faster than
    `np.loadtxt`, the same values), the rest (and any file either declines) by `np.loadtxt`.

    Args:
        path: the file.
        delimiter: the field separator; `None` detects it (see `_delimiter`).
        rows: the number of rows expected (the patches of the image), or `None`.
        known: a dict kept from file to file of one descriptor (see `_repeated_numbers`), or `None`.

    Raises:
        DeepRestoreError: naming the file, what it holds and what was expected: not numeric, ragged,
            empty, a row count other than `rows`, one value per row (a wrong delimiter), NaN or inf.
    """
    data = pathlib.Path(path).read_bytes()
    separator = _delimiter(data, delimiter)
    shown = {None: "spaces", "\t": "tabs"}.get(separator, f"'{separator}'")
    values = _repeated_numbers(data, separator, known) if data else None
    values = _arrow_numbers(data, separator) if values is None and data else values
    if values is not None and (rows is None or len(values) == rows) and values.shape[1] > 1:
        return values  # finite, numeric, rectangular: nothing left to check
    try:
        if values is None:
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
    descriptors, first, known = {}, None, {}
    for sequence in sequences:
        descriptors[sequence] = {}
        for image in IMAGES:
            path = folder / sequence / f"{image}.csv"
            if not path.is_file():
                raise DeepRestoreError(f"Descriptor file '{path}' is missing; expected one CSV per image "
                                       f"({', '.join(IMAGES[:3])}, ...) in every sequence folder.")
            values = read_descriptor_file(path, delimiter, None if counts is None else counts[sequence], known)
            if first is None:
                first = (path, values.shape[1])
            elif values.shape[1] != first[1]:
                raise DeepRestoreError(f"Descriptor file '{path}' has {values.shape[1]} values per row; expected "
                                       f"{first[1]}, like '{first[0]}'.")
            descriptors[sequence][image] = values
    return descriptors
