"""Reading `.npy` and `.npz` files without running anything they hold.

A `.npy` file of an object array (a Caffe conversion such as `vgg16.npy` is a pickled dict) stores a
pickle after its header, and unpickling can call any function the file names: `np.load(...,
allow_pickle=True)` runs a smuggled payload. `load_npy` and `load_npz` read plain arrays with pickles
disabled and unpickle object arrays with `SafeUnpickler`, which builds only numpy arrays, dtypes and
scalars, dicts, lists, tuples, strings and numbers, and refuses every other name a pickle asks for.
"""

import collections
import io
import pickle
import zipfile

import numpy as np

from deeprestore.errors import DeepRestoreError

_NUMPY_MULTIARRAY = np._core.multiarray  # `numpy.core.multiarray` before numpy 2; same functions
# What a numpy object array of containers and numbers pickles to, under the module names numpy 1 and
# 2 write (`numpy.core` and `numpy._core`), plus `_codecs.encode`, which protocol 2 (Python 2 files)
# uses to spell byte strings. None of them runs anything beyond building its value.
_ALLOWED = {
    **{(module, "_reconstruct"): _NUMPY_MULTIARRAY._reconstruct
       for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "scalar"): _NUMPY_MULTIARRAY.scalar for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    # Protocol 5 writes arrays as their raw bytes, read back by `_frombuffer`.
    **{(module, "_frombuffer"): np._core.numeric._frombuffer
       for module in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): lambda text, encoding="utf-8": text.encode(encoding),
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("__builtin__", "dict"): dict,
    ("__builtin__", "list"): list,
    ("__builtin__", "tuple"): tuple,
    ("collections", "OrderedDict"): collections.OrderedDict,
}
ACCEPTED = "numpy arrays, dicts, lists, tuples, strings and numbers"


class RefusedPickle(DeepRestoreError):
    """A pickle asked for something that is not plain data."""


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds plain data only: every global outside `_ALLOWED` is refused."""

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise RefusedPickle(f"it holds a pickled '{module}.{name}', which deeprestore does not load "
                                f"(a pickle can run code); expected only {ACCEPTED}") from None

    def persistent_load(self, pid):
        raise RefusedPickle(f"it holds a persistent pickle reference; expected only {ACCEPTED}")


def safe_unpickle(data):
    """Unpickles `data` (bytes) with `SafeUnpickler`, reading Python 2 strings as latin-1 like numpy."""
    return SafeUnpickler(io.BytesIO(data), encoding="latin1").load()


def read_npy(file):
    """Reads one `.npy` stream: plain arrays without pickles, object arrays through `SafeUnpickler`.

    Args:
        file: A binary file object positioned at the start of the `.npy` data.

    Returns:
        The array (`dtype=object` for pickled contents).

    Raises:
        RefusedPickle: The pickle names anything but plain data.
        ValueError: The stream is not in the `.npy` format.
    """
    start = file.tell()
    version = np.lib.format.read_magic(file)  # ValueError for anything that is not .npy
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise ValueError(f"it is a .npy file of version {version}, expected 1.0 or 2.0")
    _, _, dtype = readers[version](file)  # shape, Fortran order, dtype
    if not dtype.hasobject:
        file.seek(start)
        return np.lib.format.read_array(file, allow_pickle=False)
    array = safe_unpickle(file.read())
    if not isinstance(array, np.ndarray):
        raise ValueError(f"its object array unpickles to a {type(array).__name__}, expected an array")
    return array


def load_npy(path):
    """Reads a `.npy` file safely (see `read_npy`)."""
    with open(path, "rb") as file:
        return read_npy(file)


def load_npz(path):
    """Reads every array of a `.npz` archive safely, as `{name: array}` in archive order.

    Raises:
        RefusedPickle: As `read_npy`.
        ValueError: The file is not a zip archive of `.npy` files.
    """
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise ValueError(f"it is not a .npz archive ({error})") from None
    with archive:
        arrays = {}
        for member in archive.namelist():
            name = member[:-len(".npy")] if member.endswith(".npy") else member
            with archive.open(member) as stream:
                arrays[name] = read_npy(io.BytesIO(stream.read()))
        return arrays
