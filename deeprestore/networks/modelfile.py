"""A network from a Keras model file: `--network PATH` for networks deeprestore does not ship.

The file brings the architecture and the weights; how its input encodes an image comes from the JSON
file beside it (see `convention`). The model is rebuilt behind an `InputConversion` layer named
`preprocess`, so it takes RGB [0, 1] batches like every registered network, and each of its layers,
those of nested models included, is addressable by its own name.
"""

import dataclasses
import functools
import hashlib
import pathlib

import keras

from deeprestore import architectures
from deeprestore.errors import DeepRestoreError
from deeprestore.networks import weights as weight_files
from deeprestore.networks.base import Network, NetworkSpec, WeightsInfo
from deeprestore.networks.convention import read_convention

SUFFIXES = architectures.MODEL_FILE_SUFFIXES
# The names deeprestore gives its input and conversion layers (objectives read `images`, inversion
# modules and range penalties `preprocess`).
RESERVED = ("images", "preprocess")
# The size listed by `nets` and used by default when neither the model nor its convention fixes one.
DEFAULT_SIZE = (224, 224)


is_model_path = architectures.is_model_path


def convention_path(path):
    """The convention file of a model file: the same name with `.json` (`net.keras` -> `net.json`)."""
    return pathlib.Path(path).with_suffix(".json")


class DeclaredLayerSets:
    """Default layers declared in a convention file (`content`, `style`, `texture`, `dream`); asking
    for a kind it does not declare is an error that says how to declare it."""

    def __init__(self, sets, path):
        self.sets = dict(sets)
        self.path = path

    content = property(lambda self: self.get("content"))
    style = property(lambda self: self.get("style"))
    texture = property(lambda self: self.get("texture"))
    dream = property(lambda self: self.get("dream"))

    def get(self, kind):
        if kind not in self.sets:
            raise DeepRestoreError(
                f"No default {kind} layers for model file '{self.path}'; expected the layers on the command line "
                f'or "layers": {{"{kind}": [...]}} in {convention_path(self.path)}.'
            )
        return self.sets[kind]


@dataclasses.dataclass(frozen=True)
class ModelFileSpec(NetworkSpec):
    """A network spec read from a model file and its convention.

    Attributes:
        convention: The `InputConvention`.
        fixed_size: Whether the model takes only `input_size` inputs.
    """

    convention: object = None
    fixed_size: bool = False

    def preprocess(self, images):
        return self.convention.preprocess(images)

    def deprocess(self, inputs):
        return self.convention.deprocess(inputs)

    def describe_preprocessing(self):
        return self.convention.describe()

    def check_size(self, height, width):
        if self.fixed_size and (height, width) != tuple(self.input_size):
            raise DeepRestoreError(
                f"Model file '{self.name}' takes {self.input_size[0]}x{self.input_size[1]} inputs only (its input "
                f"shape is fixed); got {height}x{width}. Expected images of that size (for square images, "
                f"--size {max(self.input_size)})."
            )


@dataclasses.dataclass(frozen=True)
class ModelFileWeights(WeightsInfo):
    """Weights from a model file, recorded with the input convention they were used with."""

    input_convention: dict = dataclasses.field(default_factory=dict)


def create_model_network(name, weights="auto", pooling="max", include_top=False, seed=0):
    """Builds a network from a Keras model file and the convention file beside it.

    Args:
        name: The model file (`.keras`, or a full-model `.h5`).
        weights: `auto` (the file's own) or `random` (its architecture re-initialised, seeded).
        pooling: Ignored, with a word in the notice when not `max`: the model keeps its own pooling
            layers (style and texture default to `average` for the registered networks).
        include_top: Must be False: every layer of the model is built.
        seed: Seed of random weights.

    Returns:
        A `Network` whose `weights` records the model file's path and sha256.

    Raises:
        DeepRestoreError: A missing or unreadable file, a model that is not one image input, a bad
            convention, a layer name deeprestore reserves, or weights or a head that model files cannot have.
    """
    path = pathlib.Path(name)
    if str(weights) not in ("auto", "random"):
        raise DeepRestoreError(f"Model file '{name}' brings its own weights; expected --weights auto (the file's) "
                               f"or random (its architecture re-initialised), got '{weights}'.")
    if include_top:
        raise DeepRestoreError(f"Model file '{name}' has no separate classifier head (--top, --class): all its layers "
                               "are built; expected --channel OUTPUT_LAYER:INDEX to ascend a class score.")
    model = load_model(path)
    convention = read_convention(convention_path(path), path)
    size, fixed = input_size(model, convention, name)
    if weights == "random":
        keras.utils.set_random_seed(seed)  # fresh layers draw their initial weights from the global seed
    images = keras.Input((*size, 3) if fixed else (None, None, 3), name="images")
    outputs = _Rebuild(copy_weights=weights == "auto")(model, convention.layer()(images))
    try:
        rebuilt = keras.Model(images, outputs, name=path.stem)
    except ValueError as error:  # nested models that reuse a layer name
        raise DeepRestoreError(f"Cannot address every layer of model file '{name}' by name: {_first_line(error)}; "
                               "expected unique layer names.") from None
    spec = ModelFileSpec(
        name=str(name), summary=f"model file {path.name}", build=None, input_size=size,
        mean=convention.mean, scale=convention.range[1] - convention.range[0], bgr=convention.colour == "bgr",
        layer_sets=DeclaredLayerSets(convention.layers, path), trained=weights == "auto",
        convention=convention, fixed_size=fixed,
    )
    info = _weights_info(path, weights, seed, convention)
    if pooling != "max":
        info = dataclasses.replace(info, notice=f"{info.notice} Its own pooling layers are kept (--pooling {pooling} "
                                                "applies to registered networks).")
    network = Network(spec, rebuilt, info)
    for kind, layers in convention.layers.items():
        for layer in (layers,) if kind == "content" else layers:
            network.resolve(layer)
    return network


def load_model(path):
    """Loads a Keras model file (without compiling it).

    Raises:
        DeepRestoreError: The file is missing, holds only weights, or is not a Keras model.
    """
    if not path.is_file():
        raise DeepRestoreError(f"No model file at '{path}'; expected a Keras model file ({', '.join(SUFFIXES)}).")
    if path.name.endswith(".weights.h5"):
        raise DeepRestoreError(f"'{path}' holds weights only; expected a full model file for --network (a weights "
                               "file goes with a registered network: --network vgg16 --weights FILE).")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)  # never unpickle a Lambda
    except Exception as error:  # Keras, h5py and zipfile each raise their own kinds
        raise DeepRestoreError(f"Cannot read '{path}' as a Keras model ({type(error).__name__}: {_first_line(error)}); "
                               "expected a .keras file or a full-model .h5 saved by model.save().") from None
    if not isinstance(model, keras.Model):
        raise DeepRestoreError(f"'{path}' holds a {type(model).__name__}; expected a Keras model.")
    return model


def input_size(model, convention, name):
    """The `(height, width)` the network is listed and used at, and whether the model fixes it.

    Raises:
        DeepRestoreError: The model has several inputs, an input that is not one image batch, a
            channel count that does not match the convention, or a fixed size the convention contradicts.
    """
    if len(model.inputs) != 1:
        raise DeepRestoreError(f"Model file '{name}' has {len(model.inputs)} inputs; expected one image input.")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4:
        raise DeepRestoreError(f"Model file '{name}' takes inputs of shape {shape}; expected images "
                               "(batch, height, width, channels), channels last.")
    if shape[3] != convention.channels:
        raise DeepRestoreError(f"Model file '{name}' takes {shape[3]} input channels but its convention says "
                               f"'{convention.colour}'; expected {convention.channels} channels for that colour.")
    fixed = shape[1] is not None and shape[2] is not None
    if fixed and convention.size not in (None, shape[1:3]):
        raise DeepRestoreError(f"Model file '{name}' takes {shape[1]}x{shape[2]} inputs but its convention says size "
                               f"{list(convention.size)}; expected the model's own size, or no size.")
    return (tuple(shape[1:3]) if fixed else convention.size or DEFAULT_SIZE), fixed


class _Rebuild:
    """Applies fresh copies of a model's layers to a tensor, nested models flattened into their layers.

    Fresh copies (not the loaded layers) make each layer's `output` the one of the rebuilt graph; a layer
    used twice in the model is copied once, so it stays shared.
    """

    def __init__(self, copy_weights):
        self.copy_weights = copy_weights
        self.copies = {}

    def __call__(self, model, tensor):
        if isinstance(model, keras.Sequential):
            for layer in model.layers:
                tensor = self.call(layer, tensor)
            return tensor
        if not hasattr(model, "_run_through_graph"):
            raise DeepRestoreError(f"Model '{model.name}' is a subclassed model; expected a functional or Sequential "
                                   "model, whose layers can be addressed by name.")
        # Functional models: Keras's own graph walk (as in keras.models.clone_model), calling our copies.
        return model._run_through_graph(tensor, operation_fn=lambda layer: functools.partial(self.call, layer))

    def call(self, layer, *arguments, **options):
        if isinstance(layer, keras.Model):
            return self(layer, arguments[0])
        if layer.name in RESERVED:
            raise DeepRestoreError(f"The model has a layer named '{layer.name}', a name deeprestore gives its own "
                                   f"input layers; expected layer names other than {' and '.join(RESERVED)}.")
        if id(layer) in self.copies:
            return self.copies[id(layer)](*arguments, **options)
        copy = self.copies[id(layer)] = layer.__class__.from_config(layer.get_config())
        outputs = copy(*arguments, **options)
        if self.copy_weights:
            copy.set_weights(layer.get_weights())
        return outputs


def _weights_info(path, weights, seed, convention):
    digest = weight_files.sha256(path)
    if weights == "random":
        return ModelFileWeights(
            "random", str(path.resolve()), hashlib.sha256(f"random:{digest}:{seed}".encode()).hexdigest(),
            f"Using random weights (seed {seed}) in the architecture of model file {path}, as asked.",
            convention.as_config(),
        )
    return ModelFileWeights("file", str(path.resolve()), digest, f"Using the weights in model file {path}.",
                            convention.as_config())


def _first_line(error):
    return (str(error).strip().splitlines() or [""])[0]
