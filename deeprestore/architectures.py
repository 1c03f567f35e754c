"""Each registered network's layers as data, without Keras: names, kinds and sizes, input to output.

A network's architecture is a tuple of `Layer`s. The builders in `deeprestore.networks` make one Keras
layer of each (`networks.base.keras_layer`) in this order, so these names are the built model's own;
the checks that run before any backend loads (`deeprestore.recipes.checks`) read them here, with the
aliases and the classifier head, and refuse an unknown `--network` or `--layer` in the time Python
takes to start. A model file given as `--network` has its names in the file: it is checked once the
backend has loaded it.
"""

import dataclasses

from deeprestore.errors import DeepRestoreError

# VGG's blocks: (filters, convolutions) each.
VGG_BLOCKS = {
    "vgg16": ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)),
    "vgg19": ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4)),
}
# AlexNet's convolutions (Caffe's BVLC reference): name, filters, kernel size, stride, padding, groups,
# followed by LRN, followed by pooling.
ALEXNET_CONVOLUTIONS = (
    ("1", 96, 11, 4, "valid", 1, True, True),
    ("2", 256, 5, 1, "same", 2, True, True),
    ("3", 384, 3, 1, "same", 1, False, False),
    ("4", 384, 3, 1, "same", 2, False, False),
    ("5", 256, 3, 1, "same", 2, False, True),
)
# How many layer names an unknown-layer error shows.
KNOWN_SHOWN = 12
# The suffixes of a Keras model file given as `--network`.
MODEL_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")


@dataclasses.dataclass(frozen=True)
class Layer:
    """One layer of a network.

    Attributes:
        name: Its name, as `--layer` takes it and the built model holds it.
        kind: `preprocess`, `conv`, `relu`, `lrn` (local response normalisation), `pool` or `softmax`.
        filters: A convolution's output maps.
        size: A convolution's kernel side, or a pooling's window side.
        stride: The step of a convolution or pooling (a pooling's defaults to its size).
        padding: `valid` or `same`.
        groups: A convolution's groups (AlexNet's split over two GPUs).
        head: Whether it belongs to the classifier head (built only with `include_top`).
    """

    name: str
    kind: str
    filters: int = 0
    size: int = 0
    stride: int | None = None
    padding: str = "valid"
    groups: int = 1
    head: bool = False


def _head(kernel):
    """The fully-convolutional classifier head of VGG and AlexNet: fc6 a `kernel`-sided convolution over the
    last pooling, fc7 and fc8 1x1 convolutions, each but fc8 followed by its ReLU, then the softmax."""
    layers = []
    for index, filters, size in (("6", 4096, kernel), ("7", 4096, 1), ("8", 1000, 1)):
        layers.append(Layer(f"fc{index}", "conv", filters, size, head=True))
        if index != "8":
            layers.append(Layer(f"relu{index}", "relu", head=True))
    return (*layers, Layer("prob", "softmax", head=True))


def vgg(name):
    """VGG16 or VGG19: each convolution before its ReLU is `blockB_convC_preact`, its ReLU output
    `blockB_convC` (keras.applications' meaning), each block ends in `blockB_pool`."""
    layers = [Layer("preprocess", "preprocess")]
    for block, (filters, convolutions) in enumerate(VGG_BLOCKS[name], start=1):
        for index in range(1, convolutions + 1):
            layers.append(Layer(f"block{block}_conv{index}_preact", "conv", filters, 3, padding="same"))
            layers.append(Layer(f"block{block}_conv{index}", "relu"))
        layers.append(Layer(f"block{block}_pool", "pool", size=2))
    return (*layers, *_head(7))


def alexnet():
    """AlexNet as in Caffe's BVLC reference model: convN, reluN, normN (LRN), poolN."""
    layers = [Layer("preprocess", "preprocess")]
    for index, filters, size, stride, padding, groups, normalise, pooled in ALEXNET_CONVOLUTIONS:
        layers.append(Layer(f"conv{index}", "conv", filters, size, stride, padding, groups))
        layers.append(Layer(f"relu{index}", "relu"))
        if normalise:
            layers.append(Layer(f"norm{index}", "lrn"))
        if pooled:
            layers.append(Layer(f"pool{index}", "pool", size=3, stride=2))
    return (*layers, *_head(6))


def tiny():
    """`tiny`: two blocks of a convolution, its ReLU and a pooling, and a 10-class 1x1 convolution head."""
    layers = [Layer("preprocess", "preprocess")]
    for block, filters in ((1, 8), (2, 16)):
        layers += [Layer(f"conv{block}", "conv", filters, 3, padding="same"), Layer(f"relu{block}", "relu"),
                   Layer(f"pool{block}", "pool", size=2)]
    return (*layers, Layer("fc3", "conv", 10, 1, head=True), Layer("prob", "softmax", head=True))


def vgg_aliases(name):
    """Other names of VGG's layers: Caffe / MatConvNet's `conv1_1` (pre-ReLU, as in MatConvNet),
    `relu1_1`, `pool1`; naming 1's ReLU names `block1_relu1`; keras.applications' head names `fc1`,
    `fc2`, `predictions` for the tensors they are there (`relu6`, `relu7`, `prob`)."""
    names = {}
    for block, (_, convolutions) in enumerate(VGG_BLOCKS[name], start=1):
        for index in range(1, convolutions + 1):
            names[f"conv{block}_{index}"] = f"block{block}_conv{index}_preact"
            names[f"relu{block}_{index}"] = f"block{block}_conv{index}"
            names[f"block{block}_relu{index}"] = f"block{block}_conv{index}"
        names[f"pool{block}"] = f"block{block}_pool"
    names.update(fc1="relu6", fc2="relu7", predictions="prob")
    return names


ARCHITECTURES = {"vgg16": vgg("vgg16"), "vgg19": vgg("vgg19"), "alexnet": alexnet(), "tiny": tiny()}
ALIASES = {"vgg16": vgg_aliases("vgg16"), "vgg19": vgg_aliases("vgg19"), "alexnet": {}, "tiny": {}}


def layer_names(network, include_top=False):
    """The layer names of a registered network, input to output (the head's only with `include_top`)."""
    return tuple(layer.name for layer in ARCHITECTURES[network] if include_top or not layer.head)


def head_names(network):
    """The names of a registered network's classifier head."""
    return tuple(layer.name for layer in ARCHITECTURES[network] if layer.head)


def is_model_path(name):
    """Whether a `--network` value names a model file rather than a registered network."""
    name = str(name)
    return name.lower().endswith(MODEL_FILE_SUFFIXES) or "/" in name or "\\" in name


def check_network(name):
    """Refuses a `--network` that is neither a registered network nor the path of a model file.

    Raises:
        DeepRestoreError: Unknown network.
    """
    if not is_model_path(name) and name not in ARCHITECTURES:
        raise unknown_network(name)


def unknown_network(name):
    """The error of a network name that is not registered."""
    return DeepRestoreError(
        f"Unknown network '{name}'; expected one of {', '.join(ARCHITECTURES)}, or the path of a Keras model file "
        f"({', '.join(MODEL_FILE_SUFFIXES)})."
    )


def resolve_layer(network, layer, layers, aliases, head=()):
    """The canonical name of `layer` (a name or an alias) among `layers`, the names of `network`.

    Args:
        network: The network's name, for the message.
        layer: The name as given.
        layers: The network's addressable layer names, input to output.
        aliases: `{alias: canonical name}`.
        head: The classifier head's names (missing from `layers` when it is not built).

    Raises:
        DeepRestoreError: No such layer, or one of the head the network is built without.
    """
    layer = aliases.get(layer, layer)
    if layer in layers:
        return layer
    if layer in head:
        raise DeepRestoreError(
            f"Layer '{layer}' of network '{network}' belongs to the classifier head; "
            "build the network with the head (--top) to use it."
        )
    known = ", ".join(layers[:KNOWN_SHOWN])
    if len(layers) > KNOWN_SHOWN:
        known += f", ... ({len(layers)} in all)"
    raise DeepRestoreError(
        f"Unknown layer '{layer}' for network '{network}'. Known layers: {known}. "
        f"Run `deeprestore nets {network}` to list them with their shapes."
    )


def check_layers(network, layers, include_top=False):
    """Refuses any of `layers` (names or aliases) that a registered `network` lacks; a model file's
    layers are checked once it is loaded, and an unknown network is refused here too.

    Raises:
        DeepRestoreError: Unknown network or layer.
    """
    check_network(network)
    if is_model_path(network):
        return
    for layer in layers:
        resolve_layer(network, layer, layer_names(network, include_top), ALIASES[network], head_names(network))
