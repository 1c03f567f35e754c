"""The HPatches task files: which pairs to verify and which patches to retrieve, read, checked or generated.

`Tasks` holds the verification pairs (`positives`, `intra`, `inter`, each a `Pairs` of sequence names,
image ids and patch indices; image id 0 is `ref`, k is image k of the level being scored) and the
retrieval `queries` and `distractors` (sequence names and `ref` patch indices). The files follow the
benchmark's names and columns: `verif_pos_split-<split>.csv`, `verif_neg_intra_split-<split>.csv`,
`verif_neg_inter_split-<split>.csv` (`s1,t1,idx1,s2,t2,idx2`) and `retr_queries_split-<split>.csv`,
`retr_distractors_split-<split>.csv` (`s,idx`). `generate_tasks` follows hpatches-benchmark's rules
(`utils/tasks.py`, `gen_verif` and `gen_retrieval`) with a seeded numpy generator.
"""

import csv
import dataclasses
import pathlib

import numpy as np

from deeprestore.errors import DeepRestoreError

VERIFICATION_FILES = {"positives": "verif_pos", "intra": "verif_neg_intra", "inter": "verif_neg_inter"}
RETRIEVAL_FILES = {"queries": "retr_queries", "distractors": "retr_distractors"}
PAIR_COLUMNS = ("s1", "t1", "idx1", "s2", "t2", "idx2")
PATCH_COLUMNS = ("s", "idx")
# The benchmark keeps only retrieval patches whose 0-255 grey values vary: std above 10.
RETRIEVAL_MIN_STD = 10.0


@dataclasses.dataclass
class Pairs:
    """Verification pairs: `sequences1`, `sequences2` (str arrays), `images1`, `images2` (ids 0..5),
    `indices1`, `indices2` (patch rows)."""

    sequences1: np.ndarray
    images1: np.ndarray
    indices1: np.ndarray
    sequences2: np.ndarray
    images2: np.ndarray
    indices2: np.ndarray

    def __len__(self):
        return len(self.indices1)


@dataclasses.dataclass
class Patches:
    """Retrieval patches of `ref`: `sequences` (str array) and `indices` (patch rows)."""

    sequences: np.ndarray
    indices: np.ndarray

    def __len__(self):
        return len(self.indices)


@dataclasses.dataclass
class Tasks:
    """Every task of one split."""

    split: str
    positives: Pairs
    intra: Pairs
    inter: Pairs
    queries: Patches
    distractors: Patches


def _pairs(*columns):
    return Pairs(*(np.asarray(column, dtype=object if i in (0, 3) else np.int64) for i, column in enumerate(columns)))


def generate_tasks(split, counts, patch_std, seed=42, pairs=1_000_000, queries=5_000, distractors=20_000):
    """Task lists drawn with the benchmark's rules.

    Verification: `pairs` positives, each a random test sequence, two different patch rows and two
    different image ids from 0..4; a positive pairs row 1 with itself in the two images, its
    intra-sequence negative pairs row 1 with row 2, its inter-sequence negative pairs row 1 with a
    random row of a random test sequence (which may be the same one), keeping the two image ids.
    Retrieval: 4 x `queries` and 10 x `distractors` random (sequence, row) draws, keeping those whose
    `ref` patch has a 0-255 standard deviation above 10, without duplicates; the first `queries`
    queries, then the first `distractors` distractors that are not queries.

    Args:
        split: the `Split`.
        counts: `{sequence: number of patches}` for the test sequences.
        patch_std: `{sequence: float array}` standard deviation of each `ref` patch, 0-255 scale.
        seed: the generator's seed (the benchmark uses 42).
        pairs, queries, distractors: the numbers to draw (the benchmark's are the defaults).

    Returns:
        `Tasks`.
    """
    rng = np.random.default_rng(seed)
    test = np.array(split.test, dtype=object)
    lengths = np.array([counts[name] for name in split.test])
    if lengths.min() < 2:
        raise DeepRestoreError(f"Every test sequence needs at least 2 patches for verification; got "
                               f"{dict(zip(split.test, lengths))}.")
    chosen = rng.integers(0, len(test), pairs)
    first = (rng.random(pairs) * lengths[chosen]).astype(np.int64)
    second = (first + 1 + (rng.random(pairs) * (lengths[chosen] - 1)).astype(np.int64)) % lengths[chosen]
    image1 = rng.integers(0, 5, pairs)
    image2 = (image1 + rng.integers(1, 5, pairs)) % 5
    other = rng.integers(0, len(test), pairs)
    other_index = (rng.random(pairs) * lengths[other]).astype(np.int64)
    sequences = test[chosen]
    positives = _pairs(sequences, image1, first, sequences, image2, first)
    intra = _pairs(sequences, image1, first, sequences, image2, second)
    inter = _pairs(sequences, image1, first, test[other], image2, other_index)

    def draws(number):
        which = rng.integers(0, len(test), number)
        rows = (rng.random(number) * lengths[which]).astype(np.int64)
        keep = np.array([patch_std[test[w]][r] > RETRIEVAL_MIN_STD for w, r in zip(which, rows)], bool)
        seen, unique = set(), []
        for w, r in zip(which[keep], rows[keep]):
            if (w, r) not in seen:
                seen.add((w, r))
                unique.append((w, r))
        return unique

    query_list = draws(4 * queries)[:queries]
    taken = set(query_list)
    distractor_list = [item for item in draws(10 * distractors) if item not in taken][:distractors]

    def patches(items):
        items = np.array(items, dtype=np.int64).reshape(-1, 2)
        return Patches(test[items[:, 0]], items[:, 1])

    return Tasks(split.name, positives, intra, inter, patches(query_list), patches(distractor_list))


def write_tasks(folder, tasks):
    """Writes the five task files of `tasks` into `folder` (created), with the benchmark's headers."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for attribute, stem in VERIFICATION_FILES.items():
        pairs = getattr(tasks, attribute)
        rows = zip(pairs.sequences1, pairs.images1, pairs.indices1, pairs.sequences2, pairs.images2, pairs.indices2)
        _write_csv(folder / f"{stem}_split-{tasks.split}.csv", PAIR_COLUMNS, rows)
    for attribute, stem in RETRIEVAL_FILES.items():
        patches = getattr(tasks, attribute)
        _write_csv(folder / f"{stem}_split-{tasks.split}.csv", PATCH_COLUMNS, zip(patches.sequences, patches.indices))


def _write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)


def has_tasks(folder, split):
    """Whether `folder` holds all five task files of `split`."""
    folder = pathlib.Path(folder)
    return all((folder / f"{stem}_split-{split}.csv").is_file()
               for stem in (*VERIFICATION_FILES.values(), *RETRIEVAL_FILES.values()))


def read_tasks(folder, split, counts):
    """Reads and checks the five task files of `split` from `folder`.

    Args:
        folder: the folder holding the files.
        split: the split's name.
        counts: `{sequence: number of patches}` of the sequences the tasks may name.

    Raises:
        DeepRestoreError: a file is missing or malformed, or names an unknown sequence, an image id
            outside 0..5 or a patch row past the end of its sequence.
    """
    folder = pathlib.Path(folder)
    pairs = {}
    for attribute, stem in VERIFICATION_FILES.items():
        path = folder / f"{stem}_split-{split}.csv"
        columns = _read_csv(path, PAIR_COLUMNS)
        for sequence_column, image_column, index_column in ((0, 1, 2), (3, 4, 5)):
            _check(path, columns[sequence_column], columns[index_column], counts, columns[image_column])
        pairs[attribute] = Pairs(*columns)  # names as str arrays: converting a million to objects is slow
    patches = {}
    for attribute, stem in RETRIEVAL_FILES.items():
        path = folder / f"{stem}_split-{split}.csv"
        sequences, indices = _read_csv(path, PATCH_COLUMNS)
        _check(path, sequences, indices, counts)
        patches[attribute] = Patches(sequences, indices)
    return Tasks(split, pairs["positives"], pairs["intra"], pairs["inter"], patches["queries"], patches["distractors"])


def _read_csv(path, header):
    """The columns of a task file (str arrays for `s*` columns, int64 otherwise), read by `_plain_columns`
    when the file is plain (the common case, a few times faster), else with the csv module, a column
    at a time (a per-cell loop took most of an evaluation of descriptor files)."""
    if not path.is_file():
        raise DeepRestoreError(f"Task file '{path}' is missing; expected the benchmark's task files or none "
                               "(then they are generated).")
    columns = _plain_columns(path.read_bytes(), header)
    if columns is not None:
        return columns
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))
    if not rows or tuple(cell.strip() for cell in rows[0]) != header:
        raise DeepRestoreError(f"Task file '{path}' starts with {rows[0] if rows else 'nothing'}; expected "
                               f"the header {','.join(header)}.")
    widths = np.fromiter(map(len, rows), np.int64, len(rows))
    if (widths[1:] != len(header)).any():
        number = int(np.flatnonzero(widths[1:] != len(header))[0])
        raise DeepRestoreError(f"Task file '{path}' line {number + 2} has {widths[number + 1]} fields; expected "
                               f"{len(header)}.")
    cells = np.array(rows[1:], dtype=str).reshape(-1, len(header))
    columns = []
    for column, name in enumerate(header):
        values = np.char.strip(cells[:, column])
        if not name.startswith("s"):
            try:
                values = values.astype(np.int64)
            except ValueError:
                number = next(line for line, cell in enumerate(values) if not _is_integer(cell))
                raise DeepRestoreError(f"Task file '{path}' line {number + 2}: '{values[number]}' in column {name} is "
                                       "not an integer.") from None
        columns.append(values)
    return columns


# The low m bytes of a little-endian 64-bit word, for m = 0..8.
_BYTE_MASKS = np.array([(1 << (8 * m)) - 1 for m in range(9)], np.uint64)
_NAME_WORDS = 8  # names of up to 64 bytes are read by `_plain_columns`
_POWERS_OF_TEN = 10.0 ** np.arange(7, -1, -1)  # the place of byte j of a right-aligned word
_ZERO_PADS = np.array([int.from_bytes(b"0" * m, "little") for m in range(9)], np.uint64)  # m low bytes '0'
_HASH = np.random.default_rng(0).integers(1, 1 << 63, _NAME_WORDS, dtype=np.uint64) | np.uint64(1)


def _words(windows, starts, lengths, count):
    """`(fields, count)` uint64: each field's bytes as little-endian words, zeros past its end."""
    words = np.empty((len(starts), count), np.uint64)
    for word in range(count):
        words[:, word] = windows[starts + 8 * word] & _BYTE_MASKS[np.minimum(np.maximum(lengths - 8 * word, 0), 8)]
    return words


def _plain_columns(data, header):
    """The columns of a task file's bytes, as `_read_csv` returns them, when the file is plain: the
    header line exactly, then lines (ending in a newline or carriage return and newline) of
    `len(header)` comma-separated fields with no quotes, spaces or other carriage returns, names of
    at most 64 bytes, integers `-?[0-9]+` of at most 8 characters; else `None` (the csv module then
    reads the file and names any fault). Fields are cut and converted by numpy over the whole file:
    each field's bytes as 64-bit words, integers by Horner's rule over their bytes, names decoded
    once per distinct name."""
    heading = ",".join(header).encode() + b"\n"
    data = data.replace(b"\r\n", b"\n") if b"\r" in data else data  # the csv module writes \r\n
    if not data.startswith(heading) or any(mark in data for mark in (b'"', b" ", b"\r", b"\t")):
        return None
    body = data[len(heading):]
    body = body if body.endswith(b"\n") or not body else body + b"\n"
    text = np.frombuffer(body, np.uint8)
    ends = np.flatnonzero((text == ord(",")) | (text == ord("\n")))  # one past each field
    count = len(header)
    pattern = np.frombuffer(b"," * (count - 1) + b"\n", np.uint8)
    if len(ends) % count or (text[ends].reshape(-1, count) != pattern).any():
        return None
    starts = np.empty_like(ends)
    starts[:1], starts[1:] = 0, ends[:-1] + 1
    lengths = (ends - starts).reshape(-1, count)
    starts = starts.reshape(-1, count)
    if lengths.size and lengths.min() == 0:
        return None
    windows = np.ndarray((len(body) + 8 * _NAME_WORDS - 7,), "<u8", body + b"\0" * (8 * _NAME_WORDS), 0, (1,))
    columns = []
    for column, name in enumerate(header):
        length = lengths[:, column]
        if name.startswith("s"):
            if length.max(initial=0) > 8 * _NAME_WORDS:
                return None
            words = _words(windows, starts[:, column], length, max(-(-int(length.max(initial=1)) // 8), 1))
            keys = (words * _HASH[:words.shape[1]]).sum(axis=1)  # wraps: a hash, checked below
            _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
            if (words[first][inverse] != words).any():
                return None
            try:
                names = [words[row].tobytes().rstrip(b"\0").decode("utf-8") for row in first]
            except UnicodeDecodeError:
                return None
            columns.append(np.array(names, dtype=str)[inverse.ravel()] if len(names) else np.array([], str))
            continue
        if length.max(initial=0) > 8:
            return None
        word = _words(windows, starts[:, column], length, 1)[:, 0]
        negative = (word & np.uint64(0xFF)) == ord("-")
        word[negative] = (word[negative] & ~np.uint64(0xFF)) | np.uint64(ord("0"))  # the sign as a 0 digit
        # Right-aligned, padded with '0' bytes: byte j is the digit of 10 ** (7 - j), for every field.
        word = (word << (np.uint64(64) - (length.astype(np.uint64) << np.uint64(3)))) | _ZERO_PADS[8 - length]
        digits = word.view(np.uint8).reshape(-1, 8) - np.uint8(ord("0"))
        if (digits > 9).any() or (length <= negative).any():
            return None
        values = (digits @ _POWERS_OF_TEN).astype(np.int64)  # exact: below 10 ** 8 in float64
        columns.append(np.where(negative, -values, values))
    return columns


def _is_integer(text):
    try:
        int(text)
        return True
    except ValueError:
        return False


def _check(path, sequences, indices, counts, images=None):
    names = np.array(sorted(counts), dtype=str)
    place = np.clip(np.searchsorted(names, sequences), 0, max(len(names) - 1, 0))
    unknown = np.flatnonzero(names[place] != sequences) if len(names) else np.arange(len(sequences))
    if len(unknown):
        line = int(unknown[0])
        raise DeepRestoreError(f"Task file '{path}' line {line + 2} names unknown sequence '{sequences[line]}'; "
                               "expected "
                               f"one of the split's test sequences ({', '.join(sorted(counts)[:6])}, ...).")
    limits = np.array([counts[name] for name in names], np.int64)[place]
    outside = np.flatnonzero((indices < 0) | (indices >= limits))
    if len(outside):
        line, sequence = int(outside[0]), sequences[outside[0]]
        raise DeepRestoreError(f"Task file '{path}' line {line + 2} asks for patch {indices[line]} of '{sequence}', "
                               f"which has {counts[sequence]}; expected 0..{counts[sequence] - 1}.")
    if images is not None:
        bad = np.flatnonzero((images < 0) | (images > 5))
        if len(bad):
            raise DeepRestoreError(f"Task file '{path}' has image id {images[bad[0]]}; expected 0 (ref) to 5.")
