"""DeepDream: normalised gradient ascent on layer objectives, octave by octave, tile by tile.

Reference:
    Mordvintsev, Olah & Tyka, 2015. Inceptionism: going deeper into neural networks. The seed-003
    report (Hasson, 2017) for the L2 objective, the normalised step, bigger inputs, tiles with overlap,
    multi-layer cycles, the start from noise, clamping, scaling and blur, class neurons and guides.

A dream is a schedule of stages, each an objective with a step size and a number of steps: one stage
per octave by default, or `cycles` passes over the `cycle` stages (seed 003, 2.5). The image is
processed from the smallest octave up; after each octave the detail it gained (result minus the
octave's base image) is resized and added to the next, larger base ("detail re-injection"). The zoom
loop dreams several frames, each from the previous one zoomed in.

With `parametrisation="fourier"` each octave's image is encoded as lucid's decorrelated-colour Fourier
spectrum (`parametrisations.FourierImage.parameters_of`, exact for pixels within [0.01, 0.99]; others
are clipped to that range, where the sigmoid still moves), every stage of the octave steps on that
spectrum, and the result is decoded before detail re-injection. The step is the normalised step scaled
to the same mean pixel change as on pixels (`normalised_image_descent`), so `step_size` keeps its
meaning. Every regulariser still applies: jitter rolls the decoded image, tiles compute its gradient
tile by tile, blur and scaling act on the decoded image, which is then re-encoded, and the L2 decay is
a term of the objective. Clamping is the sigmoid's, so `clamp=False` is refused. Each step, with its
jitter, tiles, blur, scaling and clamping, runs on the device inside `optimise`'s compiled loop; only
saving images every `save_every` steps returns to the host.
"""

import dataclasses
import functools
import math
import operator
import shutil

import imageio.v3 as imageio
import keras
import numpy as np

from deeprestore import images as image_io
from deeprestore import interrupts, objectives, transforms
from deeprestore.cache import ActivationCache
from deeprestore.errors import DeepRestoreError
from deeprestore.losslog import LossLog, plot_curves
from deeprestore.networks import create_network
from deeprestore.optimise import Constraint, Engine, Progress, every, normalised_descent, optimise
from deeprestore.parametrisations import FourierImage, normalised_image_descent
from deeprestore.probes import FeatureProbe
from deeprestore.recipes.common import (
    Outputs,
    TargetFeatures,
    activation_cache,
    final_losses,
    item_rng,
    network_precision,
    notifier,
    pending_items,
)
from deeprestore.sharding import shard

# How each objective option is written: field names with a type and a default (None: required).
# Guide positions kept per layer (see `guide_targets`): 1024 bounds a guided step at conv1_2 of a
# 224 px image to a few GFLOPs while the guide's features still cover it on a 32x32 grid.
GUIDE_POSITIONS = 1024
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


@dataclasses.dataclass(frozen=True)
class Stage:
    """One part of the schedule: an objective to minimise, its step size and number of steps."""

    objective: objectives.Objective
    step_size: float
    steps: int
    cycle: int = 1


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


def image_decay():
    """An L2 penalty on the image, `mean((x - 0.5)^2)`, pulling every pixel towards grey."""

    def function(features):
        images = features["images"]
        squared = keras.ops.reshape(keras.ops.square(images - 0.5), (keras.ops.shape(images)[0], -1))
        return keras.ops.mean(squared, axis=1)

    return objectives.Objective([objectives.Term("l2_decay.images", ("images",), function)])


def dream_objective(network, layers=(), channels=(), neurons=(), classes=(), guided=False, l2_decay=0.0):
    """The objective to minimise: minus the weighted sum of the dream terms, plus an optional L2 decay.

    Args:
        network: The `Network` (for the class-score layer).
        layers: `(layer, weight)`: L2 norms, or guide dot products when `guided`.
        channels: `(layer, index, weight)`: mean activation of a channel.
        neurons: `(layer, index, weight)`: one unit at the centre of the layer's grid.
        classes: `(index, weight)`: class logits averaged over the head's positions.
        guided: Whether the layers' terms are guide terms (targets `guide.<layer>`).
        l2_decay: Weight of `image_decay`.
    """
    parts = [weight * (objectives.guide(layer) if guided else objectives.l2(layer)) for layer, weight in layers]
    parts += [weight * objectives.channel(layer, index) for layer, index, weight in channels]
    parts += [weight * objectives.neuron(layer, index) for layer, index, weight in neurons]
    parts += [weight * objectives.class_logit(logits_layer(network), index) for index, weight in classes]
    objective = -functools.reduce(operator.add, parts)
    return objective + l2_decay * image_decay() if l2_decay else objective


def with_monitors(objective):
    """The objective plus, for each layer it reads without an `l2.<layer>` term, a weight-0
    `mean_square.<layer>` term: the logged mean squared response from which the layer's L2 norm is
    plotted (seed 003, figures 2 and 4). An `l2.<layer>` term already logs exactly that value."""
    names = {term.name for term in objective.terms}
    monitors = [
        dataclasses.replace(objectives.l2(layer).terms[0], name=f"mean_square.{layer}", weight=0.0)
        for layer in objective.layers if layer != "images" and f"l2.{layer}" not in names
    ]
    return objective + objectives.Objective(monitors) if monitors else objective


def dream_stages(network, terms, settings):
    """The schedule run at each octave: one stage, or `cycles` passes over the cycle stages."""
    guided = bool(settings.guide)
    if terms.cycle:
        return [
            Stage(dream_objective(network, ((layer, 1.0),), guided=guided, l2_decay=settings.l2_decay),
                  step_size, steps, cycle)
            for cycle in range(1, settings.cycles + 1)
            for layer, step_size, steps in terms.cycle
        ]
    layers = terms.layers
    if not (layers or terms.channels or terms.neurons or terms.classes):
        layers = tuple((layer, 1.0) for layer in network.spec.layer_sets.dream)
    objective = dream_objective(network, layers, terms.channels, terms.neurons, terms.classes, guided,
                                settings.l2_decay)
    return [Stage(objective, settings.step_size, settings.steps)]


def network_layers(stages):
    """Every network layer the stages read, in order of first use."""
    return tuple(dict.fromkeys(layer for stage in stages for layer in stage.objective.layers if layer != "images"))


def octave_sizes(height, width, octaves, octave_scale):
    """Returns the `(height, width)` of each octave, smallest first, the last the full size."""
    return [
        (max(1, round(height / octave_scale**k)), max(1, round(width / octave_scale**k)))
        for k in reversed(range(octaves))
    ]


def start_image(source, start, rng):
    """The image the ascent starts from: the source itself, seeded uniform noise, or flat grey."""
    if start == "image":
        return source
    if start == "noise":
        return rng.uniform(0.0, 1.0, source.shape).astype(np.float32)
    return np.full_like(source, 0.5)


def usable_octaves(network, layers, sizes, tile=0):
    """Drops octaves too small for the objective's layers (each must keep at least one pixel).

    Raises:
        DeepRestoreError: No octave is large enough, or the tile is too small for the layers.
    """
    usable = []
    for size in sizes:
        try:
            shapes = network.output_shapes(*size, layers=layers)
        except DeepRestoreError:
            continue
        if all(dimension and dimension > 0 for shape in shapes.values() for dimension in shape[1:3]):
            usable.append(size)
    if not usable:
        network.output_shapes(*sizes[-1], layers=layers)  # the network's own reason, where it has one
        raise DeepRestoreError(
            f"The image is too small for layers {', '.join(layers)} of '{network.name}' at every octave; "
            "expected a larger --size or fewer --octaves."
        )
    if tile:
        try:
            network.output_shapes(min(tile, usable[-1][0]), min(tile, usable[-1][1]), layers=layers)
        except DeepRestoreError:
            raise DeepRestoreError(
                f"Tiles of {tile} px are too small for layers {', '.join(layers)} of '{network.name}'; expected "
                f"--tile of at least {max(network.spec.input_size)}."
            ) from None
    return usable


def open_dream_network(settings, terms, seed, weights=None):
    """Builds the settings' network in their precision, with its classifier head when a class term needs it."""
    with network_precision(settings.precision):
        return create_network(settings.network, weights or settings.weights, settings.pooling,
                              include_top=terms.needs_head, seed=seed)


def guide_targets(network, layers, settings, cache):
    """`{guide.<layer>: (positions, channels)}` of the guide image, computed once and cached.

    Each position of the dreamed image is compared with every guide position, so a layer with more
    than `GUIDE_POSITIONS` guide positions keeps a regular grid of them (every k-th row and column):
    at conv1_2 of a 224 px guide, all 50,176 positions would cost 3e11 multiply-adds per step.
    """
    if not settings.guide:
        return {}
    guide = image_io.load_image(settings.guide, settings.size or None)
    features = TargetFeatures(network, layers, cache)("guide", settings.guide, guide)
    return {f"guide.{layer}": _guide_grid(features[layer]) for layer in layers}


def _guide_grid(activation):
    """`(positions, channels)` of an activation `(height, width, channels)`, on a grid of at most
    `GUIDE_POSITIONS` positions."""
    height, width, channels = activation.shape
    stride = max(1, math.ceil(math.sqrt(height * width / GUIDE_POSITIONS)))
    return np.ascontiguousarray(activation[::stride, ::stride]).reshape(-1, channels)


def dream_estimates(settings, seed=0):
    """`[(label, Estimate)]` per octave for `--dry-run`, built without loading weights or running a step."""
    from deeprestore.estimate import estimate

    terms = parse_terms(settings)
    network = open_dream_network(settings, terms, seed, weights="random")
    stages = dream_stages(network, resolve_terms(network, terms), settings)
    layers = network_layers(stages)
    first = shard(image_io.list_images(settings.images), settings.shard)[0]
    height, width = image_io.load_image(first, settings.size or None).shape[:2]
    transforms.check_tile(settings.tile, height, width)
    sizes = usable_octaves(network, layers, octave_sizes(height, width, settings.octaves, settings.octave_scale),
                           settings.tile)
    steps = sum(stage.steps for stage in stages) * settings.frames
    return [
        (f"octave {octave} {size[0]}x{size[1]}", estimate(network, layers, *size, tile=settings.tile or None), steps)
        for octave, size in enumerate(sizes, start=1)
    ]


class _Schedule:
    """Runs the stages over octaves and frames, keeping one engine per stage and a global step count."""

    def __init__(self, settings, network, stages, targets, log, run, rng, show_progress):
        self.settings = settings
        self.stages = stages
        self.targets = targets
        self.log = log
        self.run = run
        self.rng = rng
        self.show_progress = show_progress
        self.engines = [Engine.for_objective(with_monitors(stage.objective), network) for stage in stages]
        self.step = 0
        self.steps_at = []  # (first step, last step, frame, octave size)

    def context(self, frame, octave, stage):
        context = {"octave": octave}
        if len(self.stages) > 1:
            context["cycle"] = stage.cycle
        if self.settings.frames > 1:
            context["frame"] = frame
        return context

    def regulariser(self):
        """`(images, number) -> images` on the device: the blur due at step `number`, then the scaling
        towards grey; None when neither applies."""
        settings = self.settings
        blur = (transforms.gaussian_blur(settings.blur_sigma)
                if settings.blur_every and settings.blur_sigma > 0 else None)
        scale = transforms.scale_towards(settings.scaling) if settings.scaling != 1.0 else None
        if blur is None and scale is None:
            return None

        def regularise(images, number):
            if blur is not None:
                images = keras.ops.cond(number % settings.blur_every == 0, lambda: blur(images), lambda: images)
            return scale(images) if scale is not None else images

        return regularise

    def constraint(self, parametrisation=None):
        """The regularisers and clamping after each step, on the device: on pixels, or through the
        parametrisation on the decoded images, re-encoded (only on steps a regulariser changes them)."""
        settings = self.settings
        regularise = self.regulariser()
        key = ("dream", settings.blur_every, settings.blur_sigma, settings.scaling, settings.clamp,
               getattr(parametrisation, "key", None))
        if parametrisation is None:
            def on_pixels(images, number):
                images = images if regularise is None else regularise(images, number)
                return keras.ops.clip(images, 0.0, 1.0) if settings.clamp else images

            return [Constraint(key, on_pixels)]
        if regularise is None:
            return []

        def on_parameters(parameters, number):
            def re_encoded():
                return parametrisation.encode(regularise(parametrisation.decode(parameters), number))

            if settings.scaling != 1.0:
                return re_encoded()
            return keras.ops.cond(number % settings.blur_every == 0, re_encoded, lambda: parameters)

        return [Constraint(key, on_parameters)]

    def callbacks(self, first_step, parametrisation=None):
        """What runs after each step: the constraints on the device, saving every `save_every` steps on the host."""
        settings = self.settings
        callbacks = self.constraint(parametrisation)
        if settings.save_every:
            def save(variables, step):
                images = variables if parametrisation is None else parametrisation.images(variables)
                image_io.save_image(self.run.images_dir / f"step_{first_step + step + 1:06d}.png", images[0])
                return variables

            callbacks.append(every(settings.save_every, save, offset=first_step))
        return callbacks

    def octave(self, images, frame, octave, label):
        """Runs every stage once on a batch at one octave's size, on its pixels or its Fourier spectrum."""
        settings = self.settings
        parametrisation = None
        variables = images
        if settings.parametrisation == "fourier":
            parametrisation = FourierImage(images.shape[:3], decay_power=settings.decay_power)
            variables = parametrisation.parameters_of(images)
        tiling = transforms.Tiling(settings.tile, settings.tile_mode, settings.tile_overlap) if settings.tile else None
        for stage, engine in zip(self.stages, self.engines):
            rule = (normalised_descent(stage.step_size) if parametrisation is None
                    else normalised_image_descent(stage.step_size, parametrisation))
            targets = {name: value for name, value in self.targets.items() if name in stage.objective.names}
            progress = Progress(
                description=(f"{label} {images.shape[1]}x{images.shape[2]}"
                             + (f" cycle {stage.cycle}" if stage.cycle > 1 else "")),
                show=self.show_progress, log=self.log, first_step=self.step, context=self.context(frame, octave, stage),
            )
            variables, _ = optimise(
                engine, variables, stage.steps, rule, jitter=settings.jitter,
                callbacks=self.callbacks(self.step, parametrisation), rng=self.rng, progress=progress, targets=targets,
                parametrisation=parametrisation, tiling=tiling,
            )
            self.steps_at.append((self.step + 1, self.step + stage.steps, frame, octave, images.shape[1:3]))
            self.step += stage.steps
        return variables if parametrisation is None else parametrisation.images(variables)

    def frame(self, image, frame, sizes):
        """Dreams one image over the octaves with detail re-injection; returns the result."""
        detail = np.zeros_like(image)
        result = image
        prefix = f"frame_{frame:03d}_" if self.settings.frames > 1 else ""
        for octave, size in enumerate(sizes, start=1):
            base = image_io.resize(image, size)
            detail = image_io.resize(detail, size)
            label = (f"frame {frame} " if self.settings.frames > 1 else "") + f"octave {octave}/{len(sizes)}"
            result = self.octave((base + detail)[None], frame, octave, label)[0]
            detail = result - base
            image_io.save_image(self.run.images_dir / f"{prefix}octave_{octave}.png", result)
        return np.clip(result, 0.0, 1.0)


def write_norms(run, log, network, layers, steps_at):
    """Writes `norms.csv` (step, frame, octave, layer, L2 norm of the layer's response) and `norms.png`."""
    counts = {}
    rows = []
    for layer in layers:
        # The mean squared response: the `l2.` term where the objective has one, else its monitor.
        values = {**dict(log.values(f"mean_square.{layer}")), **dict(log.values(f"l2.{layer}"))}
        for first, last, frame, octave, size in steps_at:
            if size not in counts:
                counts[size] = {name: math.prod(shape[1:])
                                for name, shape in network.output_shapes(*size, layers=layers).items()}
            for step in range(first, last + 1):
                if step in values:
                    rows.append((step, frame, octave, layer, math.sqrt(max(values[step], 0.0) * counts[size][layer])))
    rows.sort(key=lambda row: (row[3], row[0]))
    lines = ["step,frame,octave,layer,norm"] + [f"{step},{frame},{octave},{layer},{norm:.6g}"
                                                for step, frame, octave, layer, norm in rows]
    (run.path / "norms.csv").write_text("\n".join(lines) + "\n")
    curves = {}
    for step, _, _, layer, norm in rows:
        curves.setdefault(layer, ([], []))
        curves[layer][0].append(step)
        curves[layer][1].append(norm)
    plot_curves(run.path / "norms.png", curves, "L2 norm of each objective layer's response", "step", "L2 norm")


def dream(settings, run, seed=0, show_progress=True, echo=print):
    """Runs DeepDream on every input and writes the dreams, intermediate images, loss logs and norm plots.

    The network is built once for all inputs. A single image writes into the run directory itself; the
    images of a folder or list file (or of a `--shard` of one, or of a named run) each write into
    `items/<NNN_name>/`, named by their position in the whole list so that the shards of an array job
    never collide. Each image is marked complete after its outputs; images already complete are skipped,
    and an incomplete one is started afresh.

    Args:
        settings: A `DreamSettings`.
        run: The `RunDir` to write into.
        seed: Seed of the noise start, the jitter and the random tiles (with each image's position).
        show_progress: Whether to show progress bars.
        echo: Where one-line notices go.

    Returns:
        The dream image (the last frame), `(height, width, 3)` float32, or a list of them for several inputs.

    Raises:
        DeepRestoreError: Malformed or inconsistent options, or a tile larger than the image.
    """
    terms = parse_terms(settings)
    inputs = image_io.list_images(settings.images)
    single = len(inputs) == 1 and settings.shard is None and run.name is None
    pending = pending_items(run, inputs, settings.shard)
    if not pending:
        return []
    network = open_dream_network(settings, terms, seed)
    network.weights.tell(echo, run.note)
    stages = dream_stages(network, resolve_terms(network, terms), settings)
    layers = network_layers(stages)
    run.update_config(weights=network.weights.as_config(), layers=list(layers),
                      stages=[{"objective": repr(stage.objective), "step_size": stage.step_size, "steps": stage.steps,
                               "cycle": stage.cycle} for stage in stages])
    cache = activation_cache(settings, run)
    targets = guide_targets(network, layers, settings, cache)
    if settings.guide:  # the run keeps what it was guided by, at the size its features were taken
        image_io.save_image(run.images_dir / "guide.png", image_io.load_image(settings.guide, settings.size or None))
    dreams = []
    for position, source, name in pending:
        interrupts.raise_if_requested()
        outputs = Outputs(run.path if single else run.path / "items" / name)
        if not single:
            shutil.rmtree(outputs.path, ignore_errors=True)  # what an interrupted attempt left: start afresh
        dreamed, octaves = _dream_image(settings, source, name, outputs, network, stages, layers, targets,
                                        cache, item_rng(seed, position), show_progress, notifier(run, echo))
        sizes = [list(size) for size in octaves]
        if single:
            run.update_config(octave_sizes=sizes)
        run.complete_item(name, {"position": position, "source": source, "octave_sizes": sizes,
                                 "metrics": final_losses(outputs.losses_dir)})
        dreams.append(dreamed)
    return dreams[0] if single else dreams


def _dream_image(settings, source, name, outputs, network, stages, layers, targets, cache, rng, show_progress,
                 notify):
    """Dreams one input into `outputs`; returns the dream and its octave sizes. Octaves too small for the
    layers are left out, and `notify` says so."""
    image = image_io.load_image(source, settings.size or None)
    transforms.check_tile(settings.tile, *image.shape[:2])
    wanted = octave_sizes(*image.shape[:2], settings.octaves, settings.octave_scale)
    sizes = usable_octaves(network, layers, wanted, settings.tile)
    if len(sizes) < len(wanted):
        dropped = [f"{height}x{width}" for height, width in wanted if (height, width) not in sizes]
        notify(f"{name}: dreaming {len(sizes)} of {len(wanted)} octaves; {', '.join(dropped)} "
               f"{'is' if len(dropped) == 1 else 'are'} too small for layers "
               f"{', '.join(layers)} of '{network.name}' (a larger --size or a smaller --octave-scale keeps them).")
    image = start_image(image, settings.start, rng)
    image_io.save_image(outputs.images_dir / "start.png", image)
    # The start's and the dream's activations are recorded in a cache file (a named run's or --cache), never
    # in memory, where nothing would read them; and only untiled: tiling exists because they may not fit.
    recorded = isinstance(cache, ActivationCache) and not settings.tile
    probe = FeatureProbe(network, layers) if recorded else None
    metadata = dict(network=network.computation, weights_sha256=network.weights.sha256,
                    preprocessing=network.spec.describe_preprocessing())
    if probe is not None:
        cache.get_or_compute(f"start:{name}", image, layers, lambda batch, missing: probe.features(batch), **metadata)

    log = LossLog(outputs.losses_dir)
    schedule = _Schedule(settings, network, stages, targets, log, outputs, rng, show_progress)
    zoom = transforms.zoom(settings.zoom)
    frames = []
    for frame in range(1, settings.frames + 1):
        if frames:
            image = zoom(frames[-1][None])[0]
        frames.append(schedule.frame(image, frame, sizes))
        if settings.frames > 1:
            image_io.save_image(outputs.path / "frames" / f"frame_{frame:03d}.png", frames[-1])
    log.close()
    log.plot()
    write_norms(outputs, log, network, layers, schedule.steps_at)
    dreamed = frames[-1]
    if settings.frames > 1:
        imageio.imwrite(outputs.path / "dream.gif", np.stack([image_io.to_uint8(frame) for frame in frames]),
                        extension=".gif", duration=100, loop=0)
    if probe is not None:
        cache.get_or_compute(f"dream:{name}", dreamed, layers, lambda batch, missing: probe.features(batch), **metadata)
    image_io.save_image(outputs.path / "dream.png", dreamed)
    return dreamed, sizes
