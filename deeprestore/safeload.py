"""Reading `.npy` and `.npz` files without running anything they hold.

A `.npy` file of an object array (a Caffe conversion such as `vgg16.npy` is a pickled dict) stores a
pickle after its header, and unpickling can call any function the file names: `np.load(...,
allow_pickle=True)` runs a smuggled payload. `load_npy` and `load_npz` read plain arrays with pickles
disabled and unpickle object arrays with `SafeUnpickler`, which builds only numpy arrays, dtypes and
scalars, dicts, lists, tuples, strings and numbers, and refuses every other name a pickle asks for.

A pickle may also refer to one value many times (its memo): 40 levels of a list holding the same list
twice take 757 bytes and unpickle at once, but spell 2^40 elements, which the first `np.asarray` or
walk over them tries to build. So before unpickling, `check_pickle_size` runs the pickle's opcodes on
stand-ins for its values and refuses one whose values, with every shared reference counted each time,
exceed `MAX_ELEMENTS` elements or `MAX_DEPTH` levels of nesting (or refer to themselves).
"""

import collections
import io
import pickle
import pickletools
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
# A Caffe conversion (`vgg16.npy`) is a dict of layers, each a list of a few arrays: some 50 elements
# in 3 levels (an array counts as one; numpy checks its size against its bytes). These bounds leave
# room for far larger files and stay far below what exhausts memory or Python's recursion limit.
MAX_ELEMENTS = 1_000_000
MAX_DEPTH = 100
# Opcodes that push one value built from nothing on the stack (numbers, strings, None, names).
_ATOMS = frozenset({
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "STRING", "BINSTRING", "SHORT_BINSTRING",
    "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE",
    "BINUNICODE8", "NONE", "NEWTRUE", "NEWFALSE", "FLOAT", "BINFLOAT", "GLOBAL", "PERSID", "EXT1", "EXT2", "EXT4",
    "NEXT_BUFFER", "EMPTY_LIST", "EMPTY_DICT", "EMPTY_TUPLE", "EMPTY_SET",
})


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


class _Value:
    """A stand-in for a value the pickle builds: the values it holds."""

    __slots__ = ("children",)

    def __init__(self, children=()):
        self.children = list(children)


_MARK = object()


def check_pickle_size(data):
    """Refuses a pickle whose values, spelled out, exceed `MAX_ELEMENTS` or `MAX_DEPTH`, without building them.

    Runs the pickle's opcodes on `_Value` stand-ins (a shared value is one stand-in, as in the pickle's
    memo), then counts every element and level of the result as a walk over it would meet them.

    Raises:
        RefusedPickle: Too many elements, too deep, a value that holds itself, or a malformed pickle.
    """
    stack, memo = [], {}

    def until_mark():
        index = len(stack) - 1 - stack[::-1].index(_MARK)
        items = stack[index + 1:]
        del stack[index:]
        return items

    try:
        for opcode, argument, _ in pickletools.genops(data):
            name = opcode.name
            if name in _ATOMS:
                stack.append(_Value())
            elif name == "MARK":
                stack.append(_MARK)
            elif name in ("LIST", "TUPLE", "DICT", "FROZENSET", "INST"):
                stack.append(_Value(until_mark()))
            elif name == "OBJ":
                stack.append(_Value(until_mark()[1:]))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                count = int(name[-1])
                items = stack[-count:]
                del stack[-count:]
                stack.append(_Value(items))
            elif name in ("APPEND", "BUILD"):
                stack[-2].children.append(stack.pop())
            elif name == "SETITEM":
                value, key = stack.pop(), stack.pop()
                stack[-1].children.extend((key, value))
            elif name in ("APPENDS", "SETITEMS", "ADDITEMS"):
                items = until_mark()
                stack[-1].children.extend(items)
            elif name in ("REDUCE", "NEWOBJ"):
                arguments = stack.pop()
                stack[-1] = _Value([arguments])
            elif name == "NEWOBJ_EX":
                keywords, arguments = stack.pop(), stack.pop()
                stack[-1] = _Value([arguments, keywords])
            elif name in ("STACK_GLOBAL", "BINPERSID"):
                stack.pop()
                stack[-1] = _Value()
            elif name == "POP":
                stack.pop()
            elif name == "POP_MARK":
                until_mark()
            elif name == "DUP":
                stack.append(stack[-1])
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[argument] = stack[-1]
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[argument])
            elif name in ("STOP", "PROTO", "FRAME", "READONLY_BUFFER"):
                pass
            else:
                raise ValueError(f"unknown opcode {name}")
        root = stack[-1]
    except (ValueError, KeyError, IndexError, AttributeError, TypeError) as error:
        raise RefusedPickle(f"its pickle is malformed ({' '.join(str(error).split())[:100]}); expected "
                            f"{ACCEPTED}") from None
    _check_spelled_out(root)


def _check_spelled_out(root):
    """Counts the elements and levels of `root` with every shared value counted where it appears, in
    one pass over the distinct stand-ins (a shared one is counted once and reused)."""
    elements, depth, state = {}, {}, {}
    pending = [root]
    while pending:
        value = pending[-1]
        if state.get(id(value)) is None:
            state[id(value)] = "open"
            for child in value.children:
                if state.get(id(child)) == "open":
                    raise RefusedPickle(f"its pickle holds a value that contains itself; expected {ACCEPTED}")
                if id(child) not in state:
                    pending.append(child)
            continue
        pending.pop()
        if state[id(value)] == "done":
            continue
        if any(state.get(id(child)) != "done" for child in value.children):
            raise RefusedPickle(f"its pickle holds a value that contains itself; expected {ACCEPTED}")
        state[id(value)] = "done"
        elements[id(value)] = 1 + sum(elements[id(child)] for child in value.children)
        depth[id(value)] = 1 + max((depth[id(child)] for child in value.children), default=0)
        if elements[id(value)] > MAX_ELEMENTS or depth[id(value)] > MAX_DEPTH:
            raise RefusedPickle(
                f"its pickle spells out more than {MAX_ELEMENTS:,} elements or {MAX_DEPTH} levels of nesting (each "
                "reference to a shared value counted); expected plain weights: " + ACCEPTED)


def safe_unpickle(data):
    """Unpickles `data` (bytes) with `SafeUnpickler`, reading Python 2 strings as latin-1 like numpy,
    after `check_pickle_size` has bounded what it builds."""
    check_pickle_size(data)
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
