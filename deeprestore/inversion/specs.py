"""Module specs: which modules a stack has, read from the JSON/YAML files users edit, and checked.

A spec file is a list of modules, or a mapping with a `modules` list (and optionally the `network`
it was written for). Each module is a mapping with the fields of `ModuleSpec`: `name`, `input` (a
network layer or another module's name), `target` (a network layer or `image`), and optionally
`type`, `kernel_sizes`, `strides`, `padding`, `hidden`, `in_loss`, `weight`:

```yaml
network: vgg16
modules:
  - {name: pool1_to_conv1_2, input: pool1, target: conv1_2, strides: [1, 2]}
  - {name: conv1_2_to_conv1_1, input: pool1_to_conv1_2, target: conv1_1}
  - {name: conv1_1_to_image, input: conv1_2_to_conv1_1, target: image, hidden: 64}
```

`default_specs` builds the thesis's zoo, one module per operation of the network, and `check_specs`
resolves layer names and refuses, with one line that says what is wrong, specs that name unknown
layers or modules, that do not chain, or whose shapes do not fit. Parsing and the shape arithmetic
need no Keras (it is imported where a built network is read), so `stack --modules FILE` is checked
before any backend loads (`recipes.checks.stack`).
"""

import dataclasses
import json
import math
import pathlib

import yaml

from deeprestore.errors import DeepRestoreError
from deeprestore.settings import MODULE_TYPES

PADDINGS = ("same", "valid")
# Which operations of each type are transposed convolutions; upconv's first is upsampling + conv.
TRANSPOSED = {"cd": (False, True), "dc": (True, False), "dd": (True, True), "upconv": (True, False)}


@dataclasses.dataclass(frozen=True)
class ModuleSpec:
    """What one inversion module computes and how it is trained.

    Attributes:
        name: Unique name, e.g. `pool1_to_conv1_2`; names the module's loss (`<name>_loss`).
        input: A network layer, or the name of another module whose output this module takes.
        target: The network layer it reconstructs (its pre-activation tensor), or `image`.
        type: `cd`, `dc`, `dd` or `upconv`.
        kernel_sizes: Kernel size of each of the two operations.
        strides: Stride of each operation (for `upconv`, the first is the upsampling factor).
        padding: `same` or `valid` for each operation.
        hidden: Channels between the two operations.
        in_loss: Whether the module's reconstruction loss is part of a joint training objective.
        weight: The loss's weight in a joint objective (default 1). `None` weighs the mean squared
            error by `1 / scale^2` of the target layer (see `Stack.loss_weights`), which measures the
            term in its layer's normalised units.
    """

    name: str
    input: str
    target: str
    type: str = "cd"
    kernel_sizes: tuple = (5, 5)
    strides: tuple = (1, 1)
    padding: tuple = ("same", "same")
    hidden: int = 64
    in_loss: bool = True
    weight: float | None = 1.0

    def as_dict(self):
        """The spec as plain JSON/YAML values (lists for pairs)."""
        values = dataclasses.asdict(self)
        return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}


def output_size(size, spec):
    """The spatial size a module of `spec` gives for an input of spatial size `size` (one axis).

    Follows Keras's arithmetic: a convolution gives `ceil(n / s)` (same) or `floor((n - k) / s) + 1`
    (valid); a transposed convolution `n * s` (same) or `n * s + max(k - s, 0)` (valid).

    Returns:
        The output size, or 0 where the input is too small for a valid convolution.
    """
    for kernel, stride, padding, transposed in zip(spec.kernel_sizes, spec.strides, spec.padding,
                                                   TRANSPOSED[spec.type]):
        if transposed:
            size = size * stride + (max(kernel - stride, 0) if padding == "valid" else 0)
        elif padding == "same":
            size = -(-size // stride)
        else:
            size = max((size - kernel) // stride + 1, 0)
    return size


IMAGE = "image"
# The layer whose output is the image target: the network's input after its own preprocessing.
IMAGE_LAYER = "preprocess"
# What a trained stack saves beside its modules' weights (`Stack.save`): the specs, network and size.
SPECS_FILE = "specs.json"
_FIELDS = tuple(ModuleSpec.__dataclass_fields__)
_REQUIRED = ("name", "input", "target")
# Kernel of the operations of default modules that keep the size (the thesis's VGG16 choice).
DEFAULT_KERNEL = 5


def load_specs(path):
    """Reads a JSON or YAML spec file into a list of `ModuleSpec` (names not yet resolved).

    Raises:
        DeepRestoreError: The file is missing, not JSON/YAML, or a module has a malformed field.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise DeepRestoreError(f"Module spec file '{path}' not found; expected a JSON or YAML file.")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        summary = " ".join(str(error).split())[:160]
        raise DeepRestoreError(f"Module spec file '{path}' could not be parsed ({summary}).") from None
    if isinstance(data, dict):
        data = data.get("modules")
    if not isinstance(data, list) or not data:
        raise DeepRestoreError(
            f"Module spec file '{path}' holds no modules; expected a list of modules or a mapping with "
            "a 'modules' list.")
    return [parse_spec(entry, f"module {index + 1} of '{path}'") for index, entry in enumerate(data)]


def parse_spec(entry, where="module"):
    """Turns one mapping into a `ModuleSpec`, checking every field's type and value.

    Raises:
        DeepRestoreError: A field is unknown, missing or malformed.
    """
    if not isinstance(entry, dict):
        raise DeepRestoreError(f"In {where}: got {type(entry).__name__}; expected a mapping of fields.")
    label = f"{where} ('{entry['name']}')" if isinstance(entry.get("name"), str) else where
    unknown = sorted(set(entry) - set(_FIELDS))
    if unknown:
        raise DeepRestoreError(f"In {label}: unknown field '{unknown[0]}'; expected fields {', '.join(_FIELDS)}.")
    missing = [field for field in _REQUIRED if field not in entry]
    if missing:
        raise DeepRestoreError(f"In {label}: field '{missing[0]}' is missing; every module needs name, input, target.")
    for field in _REQUIRED:
        if not isinstance(entry[field], str) or not entry[field]:
            raise DeepRestoreError(f"In {label}: field '{field}' is {entry[field]!r}; expected a non-empty name.")
    values = dict(entry)
    if values.get("type", "cd") not in MODULE_TYPES:
        raise DeepRestoreError(
            f"In {label}: type '{values['type']}' is unknown; expected one of {', '.join(MODULE_TYPES)}.")
    for field, check, expected in (("kernel_sizes", _positive, "positive integers"),
                                   ("strides", _positive, "positive integers"),
                                   ("padding", lambda v: v in PADDINGS, "'same' or 'valid'")):
        if field in values:
            value = values[field]
            value = [value, value] if not isinstance(value, (list, tuple)) else list(value)
            if len(value) != 2 or not all(check(item) for item in value):
                raise DeepRestoreError(
                    f"In {label}: {field} is {entry[field]!r}; expected two {expected}, one per operation.")
            values[field] = tuple(value)
    if "hidden" in values and (not isinstance(values["hidden"], int) or isinstance(values["hidden"], bool)
                               or values["hidden"] < 1):
        raise DeepRestoreError(
            f"In {label}: hidden is {values['hidden']!r}; expected a positive number of channels.")
    if "in_loss" in values and not isinstance(values["in_loss"], bool):
        raise DeepRestoreError(f"In {label}: in_loss is {values['in_loss']!r}; expected true or false.")
    weight = values.get("weight")
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float))
                               or not math.isfinite(weight) or weight < 0):
        raise DeepRestoreError(f"In {label}: weight is {weight!r}; expected a finite number >= 0, or null for the "
                               "automatic weight.")
    if weight is not None:
        values["weight"] = float(weight)
    return ModuleSpec(**values)


def _positive(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def save_specs(path, specs, network=None):
    """Writes specs as a file `load_specs` reads (JSON for `.json`, YAML otherwise)."""
    data = {"network": network, "modules": [spec.as_dict() for spec in specs]}
    path = pathlib.Path(path)
    if path.suffix.lower() == ".json":
        text = json.dumps(data, indent=2) + "\n"
    else:
        text = yaml.safe_dump(data, sort_keys=False)
    path.write_text(text)
    return path


def invertible_layers(network):
    """The layers default modules reconstruct, image first: every convolution (pre-activation),
    pooling and normalisation layer of the trunk, after the `preprocess` layer that gives the image.

    ReLUs are not separate targets: each is folded into the module that inverts the operation after it.
    """
    import keras

    kept = [IMAGE_LAYER]
    for layer in network.model.layers:
        if layer.name in network.spec.head:
            break
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)) \
                or type(layer).__name__ == "LocalResponseNormalization":
            kept.append(layer.name)
    return tuple(kept)


def short_name(network, layer):
    """The name modules are named with: `image`, else the Caffe alias (`conv1_2`), else the layer."""
    if layer == IMAGE_LAYER:
        return IMAGE
    aliases = network.aliases_of(layer)
    return aliases[0] if aliases else layer


def _operation(layer):
    """`(kernel, stride, padding)` of the operation a layer computes (the first spatial axis)."""
    import keras

    if isinstance(layer, keras.layers.Conv2D):
        return layer.kernel_size[0], layer.strides[0], layer.padding
    if isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)):
        return layer.pool_size[0], layer.strides[0], layer.padding
    return 1, 1, "same"


def default_spec(network, layer, target, module_type="cd", name=None, input=None):
    """The default module inverting the operation that computes `layer` back to `target`.

    The thesis's choices: a strided operation is undone by a stride-s upsampling operation; valid,
    overlapping ones (AlexNet's conv1 11x11/4, pooling 3x3/2) by a valid transposed operation of the
    same kernel, so the output has exactly the target's size; every other kernel is 5x5 and the hidden
    channels are those of the inverted layer (VGG16: 64, 128, 256, 512 by block; AlexNet conv1: 96).
    """
    kernel, stride, padding = _operation(network.model.get_layer(layer))
    upsampling_padding = "valid" if padding == "valid" and kernel > stride else "same"
    size = kernel if upsampling_padding == "valid" else DEFAULT_KERNEL
    first_upsamples = module_type != "cd"
    return ModuleSpec(
        name=name or f"{short_name(network, layer)}_to_{short_name(network, target)}",
        input=input or layer,
        target=IMAGE if target == IMAGE_LAYER else target,
        type=module_type,
        kernel_sizes=(size, size),
        strides=(stride, 1) if first_upsamples else (1, stride),
        padding=(upsampling_padding, "same") if first_upsamples else ("same", upsampling_padding),
        hidden=int(network.model.get_layer(layer).output.shape[-1]),
    )


def default_specs(network, source, target=IMAGE, module_type=None):
    """The default chain of modules from `source` down to `target`, one per operation, deepest first.

    Args:
        network: A `Network`.
        source: The layer to invert from (name or alias), one of `invertible_layers`.
        target: `image` or a lower invertible layer.
        module_type: Module type of every module (default `cd`, the thesis's VGG16 choice).

    Returns:
        A list of `ModuleSpec`: the first takes `source`, each other the previous module's output.

    Raises:
        DeepRestoreError: A layer is unknown, not invertible, or the target is not below the source.
    """
    layers = invertible_layers(network)
    source, target = (IMAGE_LAYER if name == IMAGE else network.resolve(name) for name in (source, target))
    for layer in (source, target):
        if layer not in layers:
            raise DeepRestoreError(
                f"Layer '{layer}' of '{network.name}' is not the output of an operation modules invert; "
                f"expected one of {', '.join(short_name(network, name) for name in layers)} "
                "(ReLU outputs are folded into the next module).")
    start, stop = layers.index(source), layers.index(target)
    if stop >= start:
        raise DeepRestoreError(
            f"Cannot invert from '{short_name(network, source)}' to '{short_name(network, target)}': the "
            "target must be below the source (closer to the image).")
    specs = []
    for index in range(start, stop, -1):
        previous = specs[-1].name if specs else None
        specs.append(default_spec(network, layers[index], layers[index - 1], module_type or "cd", input=previous))
    return specs


class ResolvedSpecs:
    """Specs checked against a network, with canonical layer names and in dependency order.

    Attributes:
        specs: The `ModuleSpec`s, canonical names, each after the modules whose output it takes.
        input_layer: `{module: the network layer whose (true or reconstructed) activation it takes}`.
        target_layer: `{module: the network layer it reconstructs}` (`preprocess` for the image).
        shapes: `{layer: (height, width, channels)}` at the size the specs were checked for.
    """

    def __init__(self, specs, input_layer, target_layer, shapes):
        self.specs = specs
        self.input_layer = input_layer
        self.target_layer = target_layer
        self.shapes = shapes

    @property
    def names(self):
        return tuple(spec.name for spec in self.specs)

    def __getitem__(self, name):
        return next(spec for spec in self.specs if spec.name == name)

    def takes_module(self, name):
        """Whether module `name` takes another module's output (rather than a network layer)."""
        return self[name].input in self.names

    def final(self):
        """Modules whose output no other module takes: the ends of the chains."""
        consumed = {spec.input for spec in self.specs}
        return tuple(name for name in self.names if name not in consumed)

    def chain_from(self, layer):
        """The modules that reconstruct downwards from `layer`, in order: each takes `layer` or the
        output of an earlier one (by name or by the layer it reconstructs)."""
        available, chain = {layer}, []
        for spec in self.specs:
            if self.input_layer[spec.name] in available:
                chain.append(spec.name)
                available.add(self.target_layer[spec.name])
        return tuple(chain)

    def sources(self):
        """The network layers that modules take directly, deepest first."""
        return tuple(dict.fromkeys(spec.input for spec in self.specs if not self.takes_module(spec.name)))


def not_a_layer(spec, field, names, network, error):
    """The error of a module whose `field` (`input` or `target`) names no layer of `network` (a name), the
    modules being `names`; `error` says why (the network's own unknown-layer message)."""
    extra = f" or a module ({', '.join(names)})" if field == "input" else " or 'image'"
    return DeepRestoreError(f"Module '{spec.name}' has {field} '{getattr(spec, field)}', which is not a layer of "
                            f"'{network}'{extra}. {error}")


def check_specs(network, specs, size):
    """Resolves layer names and checks that the specs chain and fit the network at `size`.

    Args:
        network: A `Network`.
        specs: `ModuleSpec`s as read or built.
        size: `(height, width)` of the input images the stack works on.

    Returns:
        A `ResolvedSpecs`.

    Raises:
        DeepRestoreError: Duplicate or clashing names, unknown layers or modules, cycles, targets not
            below inputs, or shapes that do not fit.
    """
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DeepRestoreError(f"Module name '{duplicates[0]}' is used twice; expected unique module names.")
    for name in names:
        if name == IMAGE or name in network.layers or name in network.spec.aliases:
            raise DeepRestoreError(
                f"Module name '{name}' is also a layer of '{network.name}'; expected module names that "
                "differ from layer names (e.g. 'pool1_to_conv1_2').")
    order = list(network.layers)

    def layer_of(spec, field):
        value = getattr(spec, field)
        if field == "target" and value == IMAGE:
            return IMAGE_LAYER
        if field == "input" and value in names:
            return None
        try:
            return network.resolve(value)
        except DeepRestoreError as error:
            raise not_a_layer(spec, field, names, network.name, error) from None

    canonical = []
    for spec in specs:
        input_layer, target = layer_of(spec, "input"), layer_of(spec, "target")
        canonical.append(ModuleSpec(**{**spec.as_dict(), "input": input_layer or spec.input,
                                       "target": IMAGE if target == IMAGE_LAYER else target,
                                       "kernel_sizes": spec.kernel_sizes, "strides": spec.strides,
                                       "padding": spec.padding}))
    by_name = {spec.name: spec for spec in canonical}
    ordered, done = [], set()

    def visit(spec, trail):
        if spec.name in done:
            return
        if spec.name in trail:
            cycle = " -> ".join([*trail[trail.index(spec.name):], spec.name])
            raise DeepRestoreError(f"Modules take each other's outputs in a cycle ({cycle}); expected a chain.")
        if spec.input in by_name:
            visit(by_name[spec.input], [*trail, spec.name])
        done.add(spec.name)
        ordered.append(spec)

    for spec in canonical:
        visit(spec, [])
    input_layer, target_layer = {}, {}
    for spec in ordered:
        target_layer[spec.name] = IMAGE_LAYER if spec.target == IMAGE else spec.target
        input_layer[spec.name] = target_layer[spec.input] if spec.input in by_name else spec.input
        if order.index(target_layer[spec.name]) >= order.index(input_layer[spec.name]):
            raise DeepRestoreError(
                f"Module '{spec.name}' maps '{input_layer[spec.name]}' to '{spec.target}', which is not below "
                f"it in '{network.name}'; expected a target closer to the image than the input.")
    layers = sorted(set(input_layer.values()) | set(target_layer.values()), key=order.index)
    shapes = {layer: tuple(shape[1:]) for layer, shape in network.output_shapes(*size, layers=layers).items()}
    for spec in ordered:
        height, width, _ = shapes[input_layer[spec.name]]
        expected = shapes[target_layer[spec.name]]
        produced = (output_size(height, spec), output_size(width, spec))
        if produced != expected[:2]:
            described = "x".join(str(value) for value in (height, width, shapes[input_layer[spec.name]][2]))
            raise DeepRestoreError(
                f"Module '{spec.name}' maps {input_layer[spec.name]} ({described}) to {produced[0]}x{produced[1]}, "
                f"but its target {spec.target} is {expected[0]}x{expected[1]} at a {size[0]}x{size[1]} input; "
                "expected kernel sizes, strides and padding that give the target's size.")
    return ResolvedSpecs(ordered, input_layer, target_layer, shapes)


def modules_directory(path):
    """The `modules/` folder of a stack run, or `path` itself when it is such a folder."""
    path = pathlib.Path(path)
    return path / "modules" if (path / "modules").is_dir() else path
