"""The objective options of `dream` (`--layer`, `--channel`, `--neuron`, `--class`, `--cycle`): their
mini-language, parsed and checked with the inputs before any backend loads (`check`), then resolved
against the built network (canonical layer names, indices in range).
"""

import dataclasses
import math

from deeprestore import images as image_io
from deeprestore.errors import DeepRestoreError
from deeprestore.sharding import shard

# How each objective option is written: field names with a type and a default (None: required).
_SYNTAX = {
    "layers": ("--layer", "LAYER[:WEIGHT]", "block4_conv3:0.5", (("layer", str, None), ("weight", float, 1.0))),
    "channels": ("--channel", "LAYER:INDEX[:WEIGHT]", "block4_conv3:12",
                 (("layer", str, None), ("index", int, None), ("weight", float, 1.0))),
    "neurons": ("--neuron", "LAYER:INDEX[:WEIGHT]", "block5_conv1:7",
                (("layer", str, None), ("index", int, None), ("weight", float, 1.0))),
    "classes": ("--class", "INDEX[:WEIGHT]", "281:1.0", (("index", int, None), ("weight", float, 1.0))),
    "cycle": ("--cycle", "LAYER:STEP_SIZE:STEPS", "block3_conv3:0.01:3",
              (("layer", str, None), ("step_size", float, None), ("steps", int, None))),
}



@dataclasses.dataclass(frozen=True)
class Terms:
    """The parsed objective options: tuples of `(layer, weight)`, `(layer, index, weight)`, `(index,
    weight)` and, for cycles, `(layer, step_size, steps)`."""

    layers: tuple = ()
    channels: tuple = ()
    neurons: tuple = ()
    classes: tuple = ()
    cycle: tuple = ()

    @property
    def needs_head(self):
        return bool(self.classes)


def parse_spec(text, option):
    """Parses one objective option (`block4_conv3:0.5`) into a tuple of typed fields.

    Raises:
        DeepRestoreError: Too many or too few fields, or one of the wrong type.
    """
    flag, pattern, example, fields = _SYNTAX[option]
    parts = str(text).split(":")
    required = sum(default is None for _, _, default in fields)
    if not required <= len(parts) <= len(fields) or any(not part for part in parts):
        raise DeepRestoreError(f"{flag} got '{text}'; expected {pattern}, e.g. {example}.")
    values = []
    for (name, kind, default), part in zip(fields, parts + [None] * (len(fields) - len(parts))):
        try:
            values.append(default if part is None else kind(part))
        except ValueError:
            raise DeepRestoreError(f"{flag} got '{text}': {name} '{part}' is not {kind.__name__}; expected {pattern}, "
                                   f"e.g. {example}.") from None
        if kind is float and not math.isfinite(values[-1]):
            raise DeepRestoreError(f"{flag} got '{text}': {name} '{part}' is not a finite number; expected {pattern}, "
                                   f"e.g. {example}.")
    return tuple(values)


def parse_terms(settings):
    """The objective options of a `DreamSettings`, parsed and checked for combinations that do not mix.

    Raises:
        DeepRestoreError: A malformed option, `--cycle` with other objective options, or `--no-clamp`
            with the Fourier parametrisation (whose sigmoid always keeps pixels within [0, 1]).
    """
    if settings.parametrisation == "fourier" and not settings.clamp:
        raise DeepRestoreError(
            "--no-clamp cannot apply with --parametrisation fourier: its sigmoid keeps every pixel within [0, 1]; "
            "expected --clamp or --parametrisation pixels."
        )
    terms = Terms(**{option: tuple(parse_spec(text, option) for text in getattr(settings, option))
                     for option in _SYNTAX})
    if terms.cycle and (terms.layers or terms.channels or terms.neurons or terms.classes):
        raise DeepRestoreError(
            "--cycle names its own layers; expected it without --layer, --channel, --neuron or --class."
        )
    if settings.guide and (terms.channels or terms.neurons or terms.classes):
        raise DeepRestoreError("--guide works at the L2 layers; expected it without --channel, --neuron or --class.")
    if any(step_size <= 0 or steps < 1 for _, step_size, steps in terms.cycle):
        raise DeepRestoreError("--cycle needs a positive step size and at least one step, e.g. block3_conv3:0.01:3.")
    return terms


def logits_layer(network):
    """The pre-softmax class-score layer of a network's head (the one before `prob`)."""
    head = network.spec.head
    return head[-2] if len(head) >= 2 and head[-1] == "prob" else head[-1]


def resolve_terms(network, terms):
    """The terms with canonical layer names and their indices checked against the network.

    Raises:
        DeepRestoreError: An unknown layer, a channel or class index out of range, a layer given twice.
    """
    shapes = network.output_shapes(*network.spec.input_size)

    def channel_of(layer, index, what):
        channels = shapes[layer][-1]
        if not 0 <= index < channels:
            raise DeepRestoreError(
                f"{what} index {index} is out of range for layer '{layer}' of '{network.name}' ({channels} "
                f"channels); expected 0..{channels - 1}."
            )
        return index

    for index, _ in terms.classes:
        if not 0 <= index < network.spec.num_classes:
            raise DeepRestoreError(
                f"Class index {index} is out of range for network '{network.name}'; expected 0.."
                f"{network.spec.num_classes - 1}."
            )
    resolved = Terms(
        layers=tuple((network.resolve(layer), weight) for layer, weight in terms.layers),
        channels=tuple((network.resolve(layer), channel_of(network.resolve(layer), index, "Channel"), weight)
                       for layer, index, weight in terms.channels),
        neurons=tuple((network.resolve(layer), channel_of(network.resolve(layer), index, "Neuron channel"), weight)
                      for layer, index, weight in terms.neurons),
        classes=terms.classes,
        cycle=tuple((network.resolve(layer), step_size, steps) for layer, step_size, steps in terms.cycle),
    )
    for name, items in (("--layer", resolved.layers), ("--channel", resolved.channels), ("--neuron", resolved.neurons),
                        ("--class", resolved.classes)):
        keys = [item[:-1] for item in items]
        if len(set(keys)) != len(keys):
            raise DeepRestoreError(f"{name} names the same target twice; expected each once (use a weight instead).")
    return resolved


def check(settings):
    """The inputs of a dream, checked before any backend loads: the objective options, every image of
    this task's shard and the guide. Returns the whole list of input images (the run's items).

    Raises:
        click.UsageError: A malformed objective option.
        DeepRestoreError: A missing or unreadable image.
    """
    import click

    from deeprestore.recipes.checks import network_layers

    try:
        terms = parse_terms(settings)
    except DeepRestoreError as error:
        raise click.UsageError(str(error)) from None
    network_layers(settings.network, [term[0] for option in ("layers", "channels", "neurons", "cycle")
                                      for term in getattr(terms, option)], include_top=terms.needs_head)
    sources = image_io.list_images(settings.images)
    for source in shard(sources, settings.shard):
        image_io.load_image(source)  # fail on a bad image before building anything
    if settings.guide:
        image_io.load_image(settings.guide)
    return sources
