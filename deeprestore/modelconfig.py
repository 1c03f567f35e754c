"""A saved Keras model's architecture read as plain JSON, without Keras: its layer names and input shapes.

A `.keras` file is a zip archive of `config.json` (the architecture), `model.weights.h5` and
`metadata.json` (Keras 3.15 writes all three); a full-model `.h5` file holds the same architecture as
the JSON attribute `model_config` of its root (read with h5py, which imports no backend). Nothing here
runs code from the file: the config is parsed as JSON and walked as dicts and lists. The checks that run
before any backend loads (`deeprestore.recipes.checks`) use it to refuse a file that is not a model, a
model of the wrong input shape, or a layer name the model lacks, in the time Python takes to start; the
loaders keep their own checks (safe mode, output shapes) once the backend is there.
"""

import json
import pathlib
import zipfile

from deeprestore.errors import DeepRestoreError

ARCHIVE_MEMBERS = ("config.json", "model.weights.h5")
# The classes whose config lists their layers, nested ones flattened (as `networks.modelfile` rebuilds them).
MODEL_CLASSES = ("Functional", "Sequential", "Model")


def read_config(path, what, expected):
    """The model config (`{"class_name": ..., "config": {...}}`) of a `.keras` or full-model `.h5` file.

    Args:
        path: The file.
        what: How the message names it (`Model file`, `--model`, `Denoiser`).
        expected: What the option takes, for the message (`a .keras file saved by denoise train`).

    Raises:
        DeepRestoreError: Missing, not a zip archive or HDF5 file, without `config.json` and
            `model.weights.h5` (a `.keras` file) or `model_config` (an `.h5` file), or a config that is
            not a JSON object.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise DeepRestoreError(f"{what} '{path}' not found; expected {expected}.")
    if path.name.lower().endswith((".h5", ".hdf5")):
        return _read_h5(path, what, expected)
    if not zipfile.is_zipfile(path):
        raise DeepRestoreError(f"{what} '{path}' is not a Keras model file (not a zip archive); expected {expected}.")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            missing = [name for name in ARCHIVE_MEMBERS if name not in names]
            if missing:
                raise DeepRestoreError(f"{what} '{path}' is a zip archive without {' and '.join(missing)}; expected "
                                       f"{expected} (a .keras archive of {', '.join(ARCHIVE_MEMBERS)}).")
            text = archive.read("config.json")
    except (zipfile.BadZipFile, OSError) as error:
        raise DeepRestoreError(f"{what} '{path}' cannot be read as a zip archive ({error}); expected {expected}.") \
            from None
    return _parse(text, f"{path}:config.json", what, path, expected)


def _read_h5(path, what, expected):
    import h5py  # HDF5 only: no backend

    try:
        with h5py.File(path, "r") as file:
            text = file.attrs.get("model_config")
    except OSError as error:
        raise DeepRestoreError(f"{what} '{path}' is not an HDF5 file ({str(error).split(';')[0]}); expected "
                               f"{expected}.") from None
    if text is None:
        raise DeepRestoreError(f"{what} '{path}' holds no model architecture (no model_config: weights only?); "
                               f"expected {expected}.")
    return _parse(text, f"{path}:model_config", what, path, expected)


def _parse(text, where, what, path, expected):
    try:
        config = json.loads(text.decode() if isinstance(text, bytes) else text)
    except (ValueError, UnicodeDecodeError) as error:
        raise DeepRestoreError(f"{what} '{path}' has an architecture that is not JSON ({where}: {error}); "
                               f"expected {expected}.") from None
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise DeepRestoreError(f"{what} '{path}' has an architecture that is not a Keras model config ({where} "
                               f"holds a {type(config).__name__} without a 'config' object); expected {expected}.")
    return config


def _layers(config):
    """The layer entries a model config lists, or None when it lists none (a subclassed model)."""
    layers = config.get("config", {}).get("layers")
    return layers if isinstance(layers, list) and all(isinstance(layer, dict) for layer in layers) else None


def _name(layer):
    inner = layer.get("config")
    name = inner.get("name") if isinstance(inner, dict) else None
    return name if isinstance(name, str) else layer.get("name")


def layer_names(config):
    """The addressable layer names of a model config, input to output, nested models flattened into their
    layers and input layers left out (as `Network.layers` lists a model file's network); None where the
    config does not list its layers (a subclassed model: its names are known once it is built)."""
    if config.get("class_name") not in MODEL_CLASSES:
        return None
    names = []
    for layer in _layers(config) or ():
        if layer.get("class_name") == "InputLayer":
            continue
        if layer.get("class_name") in MODEL_CLASSES and _layers(layer) is not None:
            names += layer_names(layer) or []
        else:
            names.append(_name(layer))
    return tuple(name for name in names if isinstance(name, str)) if _layers(config) is not None else None


def input_shapes(config):
    """The shapes its inputs declare, batch first (None where unknown), or None where the config does not
    say (a subclassed model, or a Sequential model built without an input)."""
    inner = config.get("config", {})
    layers = _layers(config) or []
    if config.get("class_name") == "Sequential":
        shape = inner.get("build_input_shape")
        if layers and layers[0].get("class_name") == "InputLayer":
            shape = _batch_shape(layers[0])
        return [tuple(shape)] if isinstance(shape, list) else None
    named = {_name(layer): layer for layer in layers}
    inputs = inner.get("input_layers")
    if not isinstance(inputs, list) or not inputs:
        return None
    if isinstance(inputs[0], str):  # one input, written as [name, node, tensor]
        inputs = [inputs]
    shapes = []
    for entry in inputs:
        layer = named.get(entry[0]) if isinstance(entry, list) and entry else None
        shape = _batch_shape(layer) if layer is not None else None
        if shape is None:
            return None
        shapes.append(tuple(shape))
    return shapes


def _batch_shape(layer):
    inner = layer.get("config", {})
    shape = inner.get("batch_shape", inner.get("batch_input_shape"))
    return shape if isinstance(shape, list) else None


def check_input(config, path, what, wanted, expected):
    """Refuses a model whose one input is not `wanted` (a shape whose entries are a size, a tuple of the
    sizes allowed, or None for any; a size the model leaves open passes). Nothing is refused where the
    config does not say its inputs.

    Raises:
        DeepRestoreError: Several inputs, or one of another rank or size.
    """
    shapes = input_shapes(config)
    if shapes is None:
        return
    shown = ", ".join(str(tuple(shape)).replace("None", "N", 1) for shape in shapes)
    if len(shapes) != 1 or len(shapes[0]) != len(wanted) or any(
            size is not None and want is not None and size not in (want if isinstance(want, tuple) else (want,))
            for size, want in zip(shapes[0][1:], wanted[1:])):
        raise DeepRestoreError(f"{what} '{path}' takes inputs of shape {shown}; expected {expected}.")
