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
from deeprestore import objectives, transforms
from deeprestore.cache import ActivationCache
from deeprestore.losslog import LossLog
from deeprestore.networks import create_network
from deeprestore.probes import FeatureProbe
from deeprestore.recipes.common import (
    Outputs,
    TargetFeatures,
    activation_cache,
    final_losses,
    item_rng,
    network_precision,
)
from deeprestore.recipes.dream_schedule import (
    Schedule,
    octave_sizes,
    resume_point,
    start_image,
    usable_octaves,
    write_norms,
)
from deeprestore.recipes.dream_terms import logits_layer, parse_terms, resolve_terms
from deeprestore.sharding import shard
from deeprestore.training import truncate_log

# Guide positions kept per layer (see `guide_targets`): 1024 bounds a guided step at conv1_2 of a
# 224 px image to a few GFLOPs while the guide's features still cover it on a 32x32 grid.
GUIDE_POSITIONS = 1024


@dataclasses.dataclass(frozen=True)
class Stage:
    """One part of the schedule: an objective to minimise, its step size and number of steps."""

    objective: objectives.Objective
    step_size: float
    steps: int
    cycle: int = 1


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
        (f"octave {octave} {size[0]}x{size[1]}", estimate(network, layers, size, tile=settings.tile or None), steps)
        for octave, size in enumerate(sizes, start=1)
    ]


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What a dream run builds once: the network, the schedule's stages, the layers they read, the
    guide's targets and the activation cache."""

    network: object
    stages: list
    layers: tuple
    targets: dict
    cache: object


def setup(context):
    """Builds the network and the stages once for every input, and records them in the run."""
    settings, run = context.settings, context.run
    terms = parse_terms(settings)
    network = open_dream_network(settings, terms, context.seed)
    network.weights.tell(context.echo, run.note)
    stages = dream_stages(network, resolve_terms(network, terms), settings)
    layers = network_layers(stages)
    run.update_config(weights=network.weights.as_config(), layers=list(layers),
                      stages=[{"objective": repr(stage.objective), "step_size": stage.step_size, "steps": stage.steps,
                               "cycle": stage.cycle} for stage in stages])
    cache = activation_cache(settings, run)
    targets = guide_targets(network, layers, settings, cache)
    if settings.guide:  # the run keeps what it was guided by, at the size its features were taken
        image_io.save_image(run.images_dir / "guide.png", image_io.load_image(settings.guide, settings.size or None))
    return Prepared(network, stages, layers, targets, cache)


def step(context, prepared, items):
    """Dreams one input and writes its dream, intermediate images, loss log and norm plots.

    A single image writes into the run directory itself; the images of a folder or list file (or of a
    `--shard` of one, or of a named run) each write into `items/<NNN_name>/`, named by their position
    in the whole list so that the shards of an array job never collide. An item an interrupted attempt
    left inside a stage continues there from its partial result (see `resume_point`; a later frame from
    the frame before as written, 8 bits a channel); another incomplete item starts afresh.
    """
    (position, source, name), = items
    run = context.run
    outputs = Outputs(run.path if context.single else run.path / "items" / name)
    sizes = [list(size) for size in dream_image(context, prepared, source, name, outputs, position)]
    if context.single:
        run.update_config(octave_sizes=sizes)
    return {name: {"octave_sizes": sizes, "metrics": final_losses(outputs.losses_dir)}}


def dream_image(context, prepared, source, name, outputs, position):
    """Dreams one input into `outputs`; returns its octave sizes. Octaves too small for the layers are
    left out, and a notice says so."""
    settings, network, layers = context.settings, prepared.network, prepared.layers
    rng = item_rng(context.seed, position)
    image = image_io.load_image(source, settings.size or None)
    transforms.check_tile(settings.tile, *image.shape[:2])
    wanted = octave_sizes(*image.shape[:2], settings.octaves, settings.octave_scale)
    sizes = usable_octaves(network, layers, wanted, settings.tile)
    if len(sizes) < len(wanted):
        dropped = [f"{height}x{width}" for height, width in wanted if (height, width) not in sizes]
        context.notify(f"{name}: dreaming {len(sizes)} of {len(wanted)} octaves; {', '.join(dropped)} "
                       f"{'is' if len(dropped) == 1 else 'are'} too small for layers {', '.join(layers)} of "
                       f"'{network.name}' (a larger --size or a smaller --octave-scale keeps them).")
    resume = None if context.single else resume_point(context, prepared.stages, name, sizes, outputs.path / "frames")
    if resume is None and not context.single:
        shutil.rmtree(outputs.path, ignore_errors=True)  # what an interrupted attempt left: start afresh
    elif resume is not None:
        truncate_log(outputs.losses_dir, resume.step)  # the rows it logged past its partial result
    image = start_image(image, settings.start, rng)
    image_io.save_image(outputs.images_dir / "start.png", image)
    # The start's and the dream's activations are recorded in a cache file (a named run's or --cache), never
    # in memory, where nothing would read them; and only untiled: tiling exists because they may not fit.
    cache = prepared.cache
    probe = FeatureProbe(network, layers) if isinstance(cache, ActivationCache) and not settings.tile else None
    metadata = dict(network=network.computation, weights_sha256=network.weights.sha256,
                    preprocessing=network.spec.describe_preprocessing())
    if probe is not None:
        cache.get_or_compute(f"start:{name}", image, layers, lambda batch, missing: probe.features(batch), **metadata)
    log = LossLog(outputs.losses_dir)
    schedule = Schedule(context, prepared, log, outputs, rng)
    zoom = transforms.zoom(settings.zoom)
    frames = []
    for frame in range(1, settings.frames + 1):
        if resume is not None and frame < resume.frame:  # dreamt by the interrupted attempt
            frames.append(image_io.load_image(str(outputs.path / "frames" / f"frame_{frame:03d}.png")))
            for octave, size in enumerate(sizes, start=1):
                schedule.skip(frame, octave, size, len(prepared.stages))
            continue
        if frames:
            image = zoom(frames[-1][None])[0]
        frames.append(schedule.frame(image, frame, sizes, resume if resume is not None and frame == resume.frame
                                     else None))
        if settings.frames > 1:
            image_io.save_image(outputs.path / "frames" / f"frame_{frame:03d}.png", frames[-1])
    log.close()
    log.plot()
    write_norms(outputs, log, network, layers, schedule.steps_at)
    if settings.frames > 1:
        imageio.imwrite(outputs.path / "dream.gif", np.stack([image_io.to_uint8(frame) for frame in frames]),
                        extension=".gif", duration=100, loop=0)
    if probe is not None:
        cache.get_or_compute(f"dream:{name}", frames[-1], layers, lambda batch, missing: probe.features(batch),
                             **metadata)
    image_io.save_image(outputs.path / "dream.png", frames[-1])
    return sizes
