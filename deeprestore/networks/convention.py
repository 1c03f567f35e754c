"""The input convention of a model file: how its input encodes an image, which a model file does not say.

It is read from a JSON file beside the model (`sketchanet.keras` -> `sketchanet.json`), for example
`{"colour": "gray", "range": [-1, 1], "size": [256, 256]}`. An `InputConversion` layer applies it: the
project's RGB [0, 1] image becomes the model's input, luminance for gray models, so gradients flow back
to the RGB image.
"""

import dataclasses
import json

import keras
import numpy as np

from deeprestore.errors import DeepRestoreError

COLOURS = ("rgb", "bgr", "gray")
LAYER_SETS = ("content", "style", "texture", "dream")
KEYS = ("colour", "range", "mean", "std", "size", "layers")
# ITU-R BT.601 luma, the weights of PIL's "L" conversion that sketch datasets are usually stored with.
LUMA = (0.299, 0.587, 0.114)
EXAMPLE = '{"colour": "rgb", "range": [0, 255], "mean": [123.68, 116.78, 103.94]}'


@keras.saving.register_keras_serializable(package="deeprestore")
class InputConversion(keras.layers.Layer):
    """RGB in [0, 1] to a model's input: gray (luma) or BGR, mapped linearly onto `[low, high]`, then
    `(value - mean) / std` per channel.

    Args:
        colour: `rgb`, `bgr` or `gray`.
        low: What black maps to.
        high: What white maps to.
        mean: Per-channel mean on the model's scale, in the model's channel order.
        std: Per-channel divisor applied after the mean.
    """

    def __init__(self, colour="rgb", low=0.0, high=1.0, mean=(0.0,), std=(1.0,), **kwargs):
        super().__init__(**kwargs)
        self.colour = colour
        self.low = float(low)
        self.high = float(high)
        self.mean = tuple(float(value) for value in mean)
        self.std = tuple(float(value) for value in std)

    def call(self, images):
        if self.colour == "gray":
            images = keras.ops.sum(images * keras.ops.convert_to_tensor(LUMA, images.dtype), axis=-1, keepdims=True)
        elif self.colour == "bgr":
            images = keras.ops.flip(images, axis=-1)
        images = images * (self.high - self.low) + self.low
        mean = keras.ops.convert_to_tensor(self.mean, images.dtype)
        return (images - mean) / keras.ops.convert_to_tensor(self.std, images.dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 1 if self.colour == "gray" else 3)

    def get_config(self):
        return {**super().get_config(), "colour": self.colour, "low": self.low, "high": self.high,
                "mean": self.mean, "std": self.std}


@dataclasses.dataclass(frozen=True)
class InputConvention:
    """How a model's input encodes an image.

    Attributes:
        colour: `rgb`, `bgr` or `gray`.
        range: `(low, high)`: what black and white map to, e.g. `(0, 255)` or `(-1, 1)`.
        mean: Per-channel mean subtracted after the range, in the model's channel order.
        std: Per-channel divisor applied after the mean.
        size: `(height, width)` the model was trained on, or None.
        layers: Default layers per experiment (`content` a name, the others tuples of names).
    """

    colour: str
    range: tuple
    mean: tuple
    std: tuple
    size: tuple | None = None
    layers: dict = dataclasses.field(default_factory=dict)

    @property
    def channels(self):
        return 1 if self.colour == "gray" else 3

    def layer(self, name="preprocess"):
        """The Keras layer that converts RGB [0, 1] images to this convention."""
        return InputConversion(self.colour, *self.range, self.mean, self.std, name=name)

    def preprocess(self, images):
        """Numpy version of the conversion layer."""
        images = np.asarray(images, np.float32)
        if self.colour == "gray":
            images = images @ np.asarray(LUMA, np.float32)[:, None]
        elif self.colour == "bgr":
            images = images[..., ::-1]
        low, high = self.range
        images = images * (high - low) + low
        return (images - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)

    def deprocess(self, inputs):
        """The model's input back to RGB [0, 1] (not clipped); gray inputs come back as gray RGB."""
        inputs = np.asarray(inputs, np.float32) * np.asarray(self.std, np.float32) + np.asarray(self.mean, np.float32)
        low, high = self.range
        images = (inputs - low) / (high - low)
        if self.colour == "gray":
            return np.repeat(images, 3, axis=-1)
        return images[..., ::-1] if self.colour == "bgr" else images

    def describe(self):
        """One line, stored with cached activations."""
        mean = ", ".join(f"{value:g}" for value in self.mean)
        std = ", ".join(f"{value:g}" for value in self.std)
        return f"{self.colour.upper()} in [{self.range[0]:g}, {self.range[1]:g}] minus mean ({mean}) over std ({std})"

    def as_config(self):
        return {**dataclasses.asdict(self), "size": list(self.size) if self.size else None}


def read_convention(path, model_path):
    """Reads and checks the convention file of a model file.

    Args:
        path: The JSON file (`<model stem>.json`).
        model_path: The model file, for messages.

    Returns:
        An `InputConvention`.

    Raises:
        DeepRestoreError: The file is missing, is not a JSON object, or a value is malformed.
    """
    if not path.is_file():
        raise DeepRestoreError(
            f"No input convention for model '{model_path}': expected {path} saying how the model's input encodes "
            f"an image, e.g. {EXAMPLE} (see the manual, docs/networks.rst, 'Networks from model files')."
        )
    try:
        values = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise DeepRestoreError(f"Cannot read {path} as JSON ({error}); expected an object like {EXAMPLE}.") from None
    if not isinstance(values, dict):
        raise DeepRestoreError(f"{path} holds a {type(values).__name__}; expected a JSON object like {EXAMPLE}.")
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise DeepRestoreError(f"{path} has unknown keys {', '.join(unknown)}; expected only {', '.join(KEYS)}.")

    def fail(key, expected):
        raise DeepRestoreError(f"{path}: '{key}' is {json.dumps(values.get(key))}; expected {expected}.")

    colour = values.get("colour")
    if colour not in COLOURS:
        fail("colour", " or ".join(f'"{name}"' for name in COLOURS))
    channels = 1 if colour == "gray" else 3
    value_range = _numbers(values.get("range"), 2)
    if value_range is None or value_range[0] >= value_range[1]:
        fail("range", "[low, high] with low < high, e.g. [0, 1], [0, 255] or [-1, 1]")
    mean = _per_channel(values.get("mean", 0.0), channels)
    if mean is None:
        fail("mean", f"a number or {channels} numbers (one per channel of a {colour} model)")
    std = _per_channel(values.get("std", 1.0), channels)
    if std is None or min(std) <= 0:
        fail("std", f"a positive number or {channels} positive numbers")
    size = values.get("size")
    if size is not None:
        size = _numbers([size, size] if isinstance(size, int) else size, 2)
        if size is None or any(side < 1 or side != int(side) for side in size):
            fail("size", "[height, width] in pixels, e.g. [256, 256]")
        size = tuple(int(side) for side in size)
    return InputConvention(colour, value_range, mean, std, size, _layer_sets(values.get("layers", {}), path))


def _numbers(value, count):
    """A tuple of `count` floats, or None when `value` is not a list of that many numbers."""
    if not isinstance(value, list) or len(value) != count:
        return None
    if not all(isinstance(item, (int, float)) and not isinstance(item, bool) for item in value):
        return None
    return tuple(float(item) for item in value)


def _per_channel(value, channels):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),) * channels
    return _numbers(value, channels)


def _layer_sets(value, path):
    """`{"dream": ["relu3"], "content": "relu4", ...}` checked for shape (names are checked against the model)."""
    if not isinstance(value, dict) or set(value) - set(LAYER_SETS):
        raise DeepRestoreError(
            f"{path}: 'layers' is {json.dumps(value)}; expected an object with keys among {', '.join(LAYER_SETS)}, "
            'e.g. {"dream": ["conv3"], "content": "conv4"}.'
        )
    sets = {}
    for kind, names in value.items():
        names = [names] if isinstance(names, str) else names
        if (not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names)
                or (kind == "content" and len(names) != 1)):
            raise DeepRestoreError(
                f"{path}: layers '{kind}' is {json.dumps(value[kind])}; "
                f"expected {'one layer name' if kind == 'content' else 'a layer name or a list of them'}.")
        sets[kind] = names[0] if kind == "content" else tuple(names)
    return sets
