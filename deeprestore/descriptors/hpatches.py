"""HPatches-format datasets: sequences of patch stacks, read, checked and split.

A dataset is a folder with one sub-folder per sequence. A sequence folder holds 16 PNGs (`ref.png`,
`e1..e5.png`, `h1..h5.png`, `t1..t5.png`), each a vertical stack of square grey patches whose width
is the patch size (65 in `hpatches-release`, 32 in N-HPatches); row j of every image is the same
patch, a *track*. N-HPatches adds a noisy twin `<image>_noise.png` of each image. A `Split` names the
test and train sequences; the official splits `a`, `b`, `c`, `illum`, `view` and `full` are built in,
and a `splits.json` (the benchmark's own format) in the dataset folder, or in `<tasks>/splits/` as the
benchmark keeps it, replaces them, which is how a dataset with other sequence names (such as the
synthetic one) or a custom split is named.
"""

import dataclasses
import json
import pathlib

import imageio.v3 as imageio
import numpy as np

from deeprestore.errors import DeepRestoreError

LEVELS = ("e", "h", "t")
IMAGES = ("ref", *(f"{level}{index}" for level in LEVELS for index in range(1, 6)))
NOISE_SUFFIX = "_noise"
SPLIT_NAMES = ("a", "b", "c", "illum", "view", "full")

# The test sequences of the official splits, from the hpatches-benchmark's splits.json (sorted here;
# split `a` is the ECCV 2016 DESCRW split). Each split trains on the other sequences of `full`.
_FULL = """
i_ajuntament i_autannes i_bologna i_books i_boutique i_bridger i_brooklyn i_castle i_chestnuts
i_contruction i_crownday i_crownnight i_dc i_dome i_duda i_fenis i_fog i_fruits i_gonnenberg
i_greenhouse i_greentea i_indiana i_kions i_ktirio i_kurhaus i_leuven i_lionday i_lionnight
i_londonbridge i_melon i_miniature i_nescafe i_nijmegen i_nuts i_objects i_parking i_partyfood
i_pencils i_pinard i_pool i_porta i_resort i_salon i_santuario i_school i_ski i_smurf i_steps
i_table i_tools i_toy i_troulos i_veggies i_village i_whitebuilding i_yellowtent i_zion v_abstract
v_adam v_apprentices v_artisans v_astronautis v_azzola v_bark v_bees v_beyus v_bip v_bird
v_birdwoman v_blueprint v_boat v_bricks v_busstop v_calder v_cartooncity v_charing v_churchill
v_circus v_coffeehouse v_colors v_courses v_dirtywall v_dogman v_eastsouth v_feast v_fest v_gardens
v_grace v_graffiti v_home v_laptop v_london v_machines v_man v_maskedman v_pomegranate v_posters
v_samples v_soldiers v_strand v_sunseason v_tabletop v_talent v_tempera v_there v_underground
v_vitro v_wall v_wapping v_war v_weapons v_woman v_wormhole v_wounded v_yard v_yuri
"""
_SPLIT_A = """
i_ajuntament i_autannes i_bologna i_books i_bridger i_brooklyn i_fog i_fruits i_kurhaus i_lionnight
i_nijmegen i_porta i_resort i_salon i_santuario i_table i_tools i_troulos i_whitebuilding i_zion
v_abstract v_azzola v_bees v_birdwoman v_busstop v_coffeehouse v_courses v_eastsouth v_feast v_fest
v_man v_pomegranate v_soldiers v_strand v_tabletop v_talent v_underground v_woman v_yard v_yuri
"""
_SPLIT_B = """
i_autannes i_bridger i_castle i_chestnuts i_dome i_duda i_fog i_fruits i_greenhouse i_kions
i_kurhaus i_lionday i_melon i_partyfood i_pencils i_porta i_resort i_school i_ski i_village v_adam
v_apprentices v_astronautis v_bees v_bip v_birdwoman v_charing v_churchill v_colors v_feast
v_graffiti v_laptop v_london v_posters v_sunseason v_there v_underground v_war v_woman v_yard
"""
_SPLIT_C = """
i_bologna i_boutique i_castle i_crownnight i_dc i_fog i_kions i_leuven i_londonbridge i_melon
i_nijmegen i_parking i_partyfood i_pool i_ski i_smurf i_steps i_table i_tools i_troulos v_adam
v_artisans v_azzola v_bees v_blueprint v_busstop v_coffeehouse v_dirtywall v_feast v_gardens
v_graffiti v_machines v_man v_maskedman v_pomegranate v_talent v_tempera v_war v_weapons v_wounded
"""


def _names(text):
    return tuple(text.split())


@dataclasses.dataclass(frozen=True)
class Split:
    """A named division of a dataset's sequences into test and train sequences."""

    name: str
    test: tuple
    train: tuple


def official_splits():
    """The benchmark's splits `a`, `b`, `c`, `illum`, `view`, `full` as `{name: Split}`."""
    full = _names(_FULL)
    tests = {"a": _names(_SPLIT_A), "b": _names(_SPLIT_B), "c": _names(_SPLIT_C),
             "illum": tuple(name for name in full if name.startswith("i_")),
             "view": tuple(name for name in full if name.startswith("v_")), "full": full}
    return {name: Split(name, test, tuple(sorted(set(full) - set(test)))) for name, test in tests.items()}


def splits_file(root, tasks=None):
    """The `splits.json` that names the dataset's splits: the task folder's given as `tasks`
    (`<tasks>/splits/splits.json` as the benchmark keeps it, or `<tasks>/splits.json`), else
    `<root>/splits.json`, else `<root>/tasks/splits/splits.json`; `None` when there is none."""
    def in_tasks(folder):
        return [pathlib.Path(folder) / "splits" / "splits.json", pathlib.Path(folder) / "splits.json"]

    candidates = (in_tasks(tasks) if tasks else []) + [pathlib.Path(root) / "splits.json"] + in_tasks(
        pathlib.Path(root) / "tasks")
    return next((path for path in candidates if path.is_file()), None)


def dataset_splits(root, tasks=None):
    """The splits of the dataset at `root`: those of its `splits.json` (see `splits_file`) if it has
    one, else the official ones.

    `splits.json` follows the benchmark's format, `{name: {"test": [...], "train": [...]}}`; a
    missing or empty `train` list means every other sequence of the dataset.

    Raises:
        DeepRestoreError: `splits.json` is not valid JSON of that shape.
    """
    path = splits_file(root, tasks)
    if path is None:
        return official_splits()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        names = sequence_names(root)
        return {str(name): Split(str(name), tuple(entry["test"]),
                                 tuple(entry.get("train") or sorted(set(names) - set(entry["test"]))))
                for name, entry in data.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DeepRestoreError(f"'{path}' is not a valid splits file ({error}); expected "
                               '{"<split>": {"test": [...], "train": [...]}, ...}.') from None


def resolve_split(root, name, tasks=None):
    """The split `name` of the dataset at `root` (or of `<tasks>/splits/splits.json`), checked against
    the sequences the dataset holds.

    Raises:
        DeepRestoreError: the split is unknown, or names sequences that the dataset lacks.
    """
    splits = dataset_splits(root, tasks)
    if name not in splits:
        source = splits_file(root, tasks) or "the official splits"
        raise DeepRestoreError(f"Unknown split '{name}' for dataset '{root}' (splits from {source}); expected one "
                               f"of {', '.join(splits)}.")
    split = splits[name]
    present = set(sequence_names(root))
    missing = [sequence for sequence in split.test + split.train if sequence not in present]
    if missing:
        raise DeepRestoreError(
            f"Split '{name}' names {len(missing)} sequence(s) missing from '{root}' ({', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}); expected a folder per sequence of the split.")
    return split


@dataclasses.dataclass
class Sequence:
    """One sequence: 16 stacks of `count` patches, and their noisy twins when the dataset has them.

    Attributes:
        name: the sequence's folder name, e.g. `i_ajuntament`.
        images: `{image: uint8 array (count, patch_size, patch_size)}` for every name in `IMAGES`.
        noisy: the same for the `_noise` twins, or `None`.
    """

    name: str
    images: dict
    noisy: dict | None = None

    @property
    def count(self):
        """The number of patches (tracks) in each image."""
        return self.images["ref"].shape[0]

    @property
    def patch_size(self):
        return self.images["ref"].shape[1]


def sequence_names(root):
    """The sequence folders of the dataset at `root`, sorted.

    Raises:
        DeepRestoreError: `root` is not a folder or holds no sequence folders.
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise DeepRestoreError(f"Dataset folder '{root}' not found; expected an HPatches-format folder "
                               "with one sub-folder per sequence.")
    names = sorted(path.name for path in root.iterdir()
                   if path.is_dir() and not path.name.startswith(".") and path.name != "tasks")
    if not names:
        raise DeepRestoreError(f"Dataset folder '{root}' holds no sequence folders; expected sub-folders "
                               f"with {', '.join(IMAGES[:2])}, ... PNG stacks.")
    return names


def read_stack(path, patch_size=None):
    """Reads one PNG stack as a uint8 array `(count, patch_size, patch_size)`.

    Args:
        path: the PNG file.
        patch_size: the expected patch size; `None` takes the image's width.

    Raises:
        DeepRestoreError: the file is missing or unreadable, or its height is not a multiple of the
            patch size.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise DeepRestoreError(f"Image '{path}' is missing; expected a PNG stack of patches "
                               f"({', '.join(IMAGES[:3])}, ... in every sequence folder).")
    try:
        array = np.asarray(imageio.imread(path))
    except Exception as error:  # decoders raise many types for a broken file
        raise DeepRestoreError(f"Image '{path}' could not be read ({error}); expected a PNG.") from None
    if array.ndim == 3:  # colour or grey-with-alpha stacks: keep the luminance only
        array = array[..., :3].mean(axis=-1) if array.shape[-1] >= 3 else array[..., 0]
    if array.dtype != np.uint8:
        scale = 255.0 / np.iinfo(array.dtype).max if np.issubdtype(array.dtype, np.integer) else 255.0
        array = np.clip(np.round(array * scale), 0, 255).astype(np.uint8)
    height, width = array.shape
    patch_size = patch_size or width
    if width != patch_size or height % patch_size or height == 0:
        raise DeepRestoreError(
            f"Image '{path}' is {height}x{width} pixels; expected a vertical stack of "
            f"{patch_size}x{patch_size} patches (height a multiple of {patch_size}).")
    return array.reshape(height // patch_size, patch_size, patch_size)


def load_sequence(folder, noisy=False):
    """Reads one sequence folder, checking that its 16 images hold the same number of patches.

    Args:
        folder: the sequence folder.
        noisy: also read the `_noise` twins (required to exist).

    Raises:
        DeepRestoreError: an image is missing or malformed, or the stacks disagree in size.
    """
    folder = pathlib.Path(folder)
    images = {image: read_stack(folder / f"{image}.png") for image in IMAGES}
    twins = ({image: read_stack(folder / f"{image}{NOISE_SUFFIX}.png") for image in IMAGES}
             if noisy else None)
    shapes = {image: stack.shape for image, stack in {**images, **{f"{k}{NOISE_SUFFIX}": v for k, v in
                                                                    (twins or {}).items()}}.items()}
    if len(set(shapes.values())) > 1:
        detail = ", ".join(f"{image} {shape[0]}x{shape[1]}" for image, shape in shapes.items())
        raise DeepRestoreError(f"Sequence '{folder}' has stacks of different sizes ({detail}); expected "
                               "the same number and size of patches in every image.")
    return Sequence(folder.name, images, twins)


def has_noisy_twins(root, names=None):
    """Whether every sequence of the dataset (or of `names`) has `_noise` twins of its images."""
    root = pathlib.Path(root)
    return all((root / name / f"{image}{NOISE_SUFFIX}.png").is_file()
               for name in (names or sequence_names(root)) for image in IMAGES)


def patch_counts(root, names):
    """`{name: patches per image}` of the named sequences, from the size of each `ref.png` alone (the
    PNG header, without decoding the pixels; other formats are decoded).

    Raises:
        DeepRestoreError: a `ref.png` is missing or malformed.
    """
    counts = {}
    for name in names:
        path = pathlib.Path(root) / name / "ref.png"
        try:
            with open(path, "rb") as file:
                header = file.read(24)
        except OSError:
            header = b""
        # A PNG starts with its 8-byte signature and the IHDR chunk: length, type, width, height.
        if header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR":
            width, height = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
            if width and height % width == 0 and height:
                counts[name] = height // width
                continue
        counts[name] = read_stack(path).shape[0]  # decoding gives the precise error
    return counts


def load_dataset(root, names=None, noisy=False):
    """Reads sequences of the dataset at `root` as `{name: Sequence}` (all of them by default).

    Raises:
        DeepRestoreError: a named sequence is missing, or any image is missing or malformed.
    """
    root = pathlib.Path(root)
    present = sequence_names(root)
    names = present if names is None else list(names)
    unknown = [name for name in names if name not in present]
    if unknown:
        raise DeepRestoreError(f"Sequence(s) {', '.join(unknown[:5])} not found in '{root}'; expected "
                               f"one of {', '.join(present[:8])}{', ...' if len(present) > 8 else ''}.")
    return {name: load_sequence(root / name, noisy=noisy) for name in names}


def resize_patches(patches, size):
    """Resizes a `(count, height, width)` uint8 stack to `(count, size, size)` float32 in [0, 1].

    HardNet-style descriptors see 32x32 patches; `hpatches-release` patches are 65x65.
    """
    patches = np.asarray(patches, dtype=np.float32) / 255.0
    if patches.shape[1] == size:
        return patches
    import skimage.transform

    return np.stack([skimage.transform.resize(patch, (size, size), order=1, anti_aliasing=True,
                                              preserve_range=True) for patch in patches]).astype(np.float32)
