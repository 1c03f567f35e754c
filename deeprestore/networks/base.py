"""A network is a registered Keras model with its preprocessing, its named layers and its weights.

Every network takes the project's one image convention, a float32 `(batch, height, width, 3)` RGB
batch in [0, 1], and converts it inside the model (the `preprocess` layer) to what its weights were
trained on, for example 0-255 BGR minus the ImageNet mean. Every layer that computes something is
addressable by name, pre- and post-activation; a name keras.applications uses means the tensor it
means there (VGG's `block4_conv3` is after its ReLU, `block4_conv3_preact` before it), and Caffe-style
names (`conv4_2`, `pool1`) are aliases (see `deeprestore.layernames`).
A `NetworkSpec` describes how to build one; a `Network` is one built, with its weights loaded.
"""

import dataclasses
import re
from collections.abc import Callable, Mapping

import keras
import numpy as np

from deeprestore import architectures
from deeprestore.errors import DeepRestoreError
from deeprestore.networks.layers import LocalResponseNormalization

POOLINGS = ("max", "average")


@keras.saving.register_keras_serializable(package="deeprestore")
class CaffePreprocessing(keras.layers.Layer):
    """RGB in [0, 1] to a network's input: scaled (255 for Caffe models), channels reversed to BGR,
    mean subtracted.

    Args:
        mean: Per-channel mean in the network's channel order, on the network's scale.
        scale: Multiplier applied to [0, 1] values first.
        bgr: Whether the network expects BGR channel order.
    """

    def __init__(self, mean=(0.0, 0.0, 0.0), scale=255.0, bgr=True, **kwargs):
        super().__init__(**kwargs)
        self.mean = tuple(float(value) for value in mean)
        self.scale = float(scale)
        self.bgr = bool(bgr)

    def call(self, images):
        images = images * self.scale
        if self.bgr:
            images = keras.ops.flip(images, axis=-1)
        return images - keras.ops.convert_to_tensor(self.mean, dtype=images.dtype)

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "scale": self.scale, "bgr": self.bgr}


def build_model(name, architecture, preprocessing, pooling="max", include_top=False, seed=0):
    """The Keras model of an architecture (`deeprestore.architectures`), one layer per entry, named as there.

    Args:
        name: The model's name.
        architecture: A tuple of `architectures.Layer`.
        preprocessing: The `CaffePreprocessing` arguments of its `preprocess` layer.
        pooling: `max` or `average`.
        include_top: Whether to build the classifier head (the entries marked `head`).
        seed: Seed of the random initial weights.

    Returns:
        A functional `keras.Model` taking RGB [0, 1] batches of any size.
    """
    # A seed generator, not an int: an int seed makes every layer draw the same stream, so layers of one
    # shape get identical kernels and all others scaled copies of one another.
    initializer = keras.initializers.GlorotUniform(seed=keras.random.SeedGenerator(seed))
    pool = keras.layers.MaxPooling2D if pooling == "max" else keras.layers.AveragePooling2D
    kinds = {
        "preprocess": lambda layer: CaffePreprocessing(**preprocessing, name=layer.name),
        "conv": lambda layer: keras.layers.Conv2D(
            layer.filters, layer.size, strides=layer.stride or 1, padding=layer.padding, groups=layer.groups,
            kernel_initializer=initializer, name=layer.name),
        "relu": lambda layer: keras.layers.ReLU(name=layer.name),
        "lrn": lambda layer: LocalResponseNormalization(name=layer.name),
        "pool": lambda layer: pool(layer.size, strides=layer.stride, name=layer.name),
        "softmax": lambda layer: keras.layers.Softmax(name=layer.name),
    }
    images = keras.Input((None, None, 3), name="images")
    outputs = images
    for layer in architecture:
        if include_top or not layer.head:
            outputs = kinds[layer.kind](layer)(outputs)
    return keras.Model(images, outputs, name=name)


@dataclasses.dataclass(frozen=True)
class LayerSets:
    """A network's default layers for each experiment (canonical names)."""

    content: str
    style: tuple
    texture: tuple
    dream: tuple


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    """How to build a registered network.

    Attributes:
        name: Registry name, e.g. `"vgg16"`.
        summary: One line for `deeprestore nets`.
        build: `(pooling, include_top) -> keras.Model` taking RGB [0, 1] batches of any size.
        input_size: The (height, width) the network was trained on.
        mean: Per-channel mean subtracted by `preprocess`, in the network's channel order.
        scale: Multiplier from [0, 1] to the network's scale.
        bgr: Whether the network's channels are BGR.
        layer_sets: Default layers for content, style, texture and dream objectives.
        aliases: Other names for layers, e.g. Caffe's `conv1_1` for `block1_conv1_preact`.
        weight_names: Names weights files key a layer's weights by where they differ from its name and
            aliases, e.g. keras.applications' `block1_conv1` for the kernel of `block1_conv1_preact`.
        head: Layers present only with the classifier head.
        imagenet: `(include_top) -> path` of the keras.applications weights file, downloading it when
            needed; None where Keras has no such file.
        offline: `() -> (path, table, notice)` with weights that load without a network connection;
            None where there are none.
        num_classes: Number of classifier outputs.
        trained: False for networks that exist only with random weights (`tiny`).
    """

    name: str
    summary: str
    build: Callable
    input_size: tuple
    mean: tuple
    scale: float
    bgr: bool
    layer_sets: LayerSets
    aliases: Mapping = dataclasses.field(default_factory=dict)
    weight_names: Mapping = dataclasses.field(default_factory=dict)
    head: tuple = ()
    imagenet: Callable | None = None
    offline: Callable | None = None
    num_classes: int = 1000
    trained: bool = True

    @property
    def weight_aliases(self):
        """`{name in a weights file: layer}`: the aliases, overridden by `weight_names`."""
        return {**self.aliases, **self.weight_names}

    def preprocess(self, images):
        """Numpy version of the `preprocess` layer: RGB [0, 1] to the network's input."""
        images = np.asarray(images, np.float32) * self.scale
        if self.bgr:
            images = images[..., ::-1]
        return images - np.asarray(self.mean, np.float32)

    def deprocess(self, inputs):
        """Inverse of `preprocess`: the network's input back to RGB [0, 1] (not clipped)."""
        inputs = np.asarray(inputs, np.float32) + np.asarray(self.mean, np.float32)
        if self.bgr:
            inputs = inputs[..., ::-1]
        return inputs / self.scale

    def describe_preprocessing(self):
        """A one-line description, stored with cached activations."""
        order = "BGR" if self.bgr else "RGB"
        mean = ", ".join(f"{value:g}" for value in self.mean)
        return f"{order} x{self.scale:g} minus mean ({mean})"

    def check_size(self, height, width):
        """Raises when the network cannot take a `height` x `width` input at all; registered networks take
        any size large enough for their layers, which `Network.output_shapes` checks."""


@dataclasses.dataclass(frozen=True)
class WeightsInfo:
    """Where a network's weights came from.

    Attributes:
        source: `imagenet`, `offline`, `random` or `file`.
        path: The file read, or None for random weights.
        sha256: The file's sha256 (for random weights, a hash of the seed), recorded in run configs.
        notice: What these weights are, in full (recorded in the run's config and notices).
        line: The notice in one calm line, where the full notice is longer (see `tell`); None where
            the notice is one already.
    """

    source: str
    path: str | None
    sha256: str
    notice: str
    line: str | None = dataclasses.field(default=None, kw_only=True)

    def as_config(self):
        return {key: value for key, value in dataclasses.asdict(self).items() if key != "line"}

    def tell(self, echo, note=None):
        """Says in one line which weights are used, with `echo`; the full notice, where longer, goes to
        `note` (a run's `RunDir.note`, kept in its `notices.txt`)."""
        echo(self.line or self.notice)
        if self.line and note is not None:
            note(self.notice)


class Network:
    """A built network: its Keras model, its spec, and the weights it carries.

    Args:
        spec: The registry entry.
        model: The Keras model, RGB [0, 1] in, every layer named.
        weights: Where the weights came from.
        pooling: `max` or `average`.
        include_top: Whether the classifier head (fc6, fc7, fc8) is built.
    """

    def __init__(self, spec, model, weights, pooling="max", include_top=False):
        self.spec = spec
        self.model = model
        self.weights = weights
        self.pooling = pooling
        self.include_top = include_top

    @property
    def name(self):
        return self.spec.name

    @property
    def slug(self):
        """The name as it may appear in file and Keras model names (a model file's path with its
        separators replaced)."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name).strip("_")

    @property
    def computation(self):
        """What besides its weights and preprocessing decides the network's activations: its name, its
        pooling and its arithmetic (`vgg16 pooling=average dtype=mixed_bfloat16`); the activation cache
        keys its entries on it, so runs that differ in `--pooling` or `--precision` never share one."""
        return f"{self.name} pooling={self.pooling} dtype={self.model.dtype_policy.name}"

    @property
    def layers(self):
        """The addressable layer names, input to output."""
        return tuple(layer.name for layer in self.model.layers if not isinstance(layer, keras.layers.InputLayer))

    def aliases_of(self, layer):
        """Returns the other names of a canonical layer name."""
        return tuple(alias for alias, target in self.spec.aliases.items() if target == layer)

    def resolve(self, layer):
        """Returns the canonical name of a layer name or alias.

        Raises:
            DeepRestoreError: The network has no such layer.
        """
        return architectures.resolve_layer(self.name, layer, self.layers, self.spec.aliases, self.spec.head)

    def output_shapes(self, height, width, layers=None):
        """Returns `{layer: shape}` for an input of `height` x `width`, batch dimension 1.

        Raises:
            DeepRestoreError: The input is too small for some layer.
        """
        self.spec.check_size(height, width)
        layers = self.layers if layers is None else tuple(self.resolve(layer) for layer in layers)
        outputs = [self.model.get_layer(layer).output for layer in layers]
        probe = keras.Model(self.model.input, outputs)
        try:
            specs = probe.compute_output_spec(keras.KerasTensor((1, height, width, 3)))
        except (ValueError, TypeError) as error:
            raise DeepRestoreError(
                f"An input of {height}x{width} is too small for network '{self.name}'; "
                f"expected at least its native size {self.spec.input_size[0]}x{self.spec.input_size[1]} "
                f"for the layers asked for ({error.__class__.__name__})."
            ) from None
        return {layer: tuple(spec.shape) for layer, spec in zip(layers, specs)}
