"""Texture synthesis: match the Gram matrices of a source texture at several layers, from noise.

Reference:
    Gatys, Ecker & Bethge, 2015. Texture synthesis using convolutional neural networks.

Grams are normalised by the number of positions (see `objectives.gram`), so the output can be larger
or smaller than the source. Several sources blend by a weighted mean of their Grams; several textures
(`count`) are synthesised as one batch from different seeded noise. By default the pixels are optimised,
with a colour prior (`objectives.colour_distance`) that holds the output's colour mean and covariance to
the sources': the Gram loss alone lets per-pixel colour noise through (`experiments/texture_defaults.py`
measured the choice). With `parametrisation="fourier"` the optimiser works on a decorrelated-colour
Fourier spectrum (`parametrisations.FourierImage`) instead of the pixels; L-BFGS then runs without
bounds, since the parametrisation's sigmoid keeps pixels in [0, 1].
"""

import dataclasses
import functools
import operator
import pathlib

import numpy as np

from deeprestore import figures, objectives
from deeprestore import images as image_io
from deeprestore.losslog import LossLog
from deeprestore.optimise import LBFGS, Engine, Plan, Progress, optimise
from deeprestore.parametrisations import FourierImage
from deeprestore.recipes.common import (
    TargetFeatures,
    activation_cache,
    open_network,
    resolve_layers,
    step_rule,
    weights_for,
)


def texture_objective(layers, layer_weights, colour_weight=0.0, tv_weight=0.0, size=(1, 1)):
    """The weighted sum of Gram distances, each normalised by its target's norm so that deep layers,
    whose Gram entries are orders of magnitude smaller, still shape the texture; plus the colour prior
    (`objectives.colour_distance`) and a total-variation prior per pixel of an output of `size`, where
    their weights are positive."""
    objective = functools.reduce(operator.add, (
        float(weight) * objectives.gram_distance(layer, normalise=True) for layer, weight in zip(layers, layer_weights)
    ))
    if colour_weight > 0:
        objective = objective + float(colour_weight) * objectives.colour_distance()
    if tv_weight > 0:
        # total_variation sums squared differences over pixels and channels: a mean, at any output size.
        objective = objective + float(tv_weight) / (3.0 * size[0] * size[1]) * objectives.total_variation()
    return objective


def setup(context):
    """Nothing to build ahead: the one step builds the network and its targets."""


def step(context, prepared=None, items=None):
    """Synthesises `settings.count` textures as one batch and writes them and their figure into the run.

    Returns:
        No item records (a texture run has no items).
    """
    settings, run, seed = context.settings, context.run, context.seed
    rng = np.random.default_rng(seed)
    network = open_network(settings, run, seed, context.echo)
    layers = resolve_layers(network, settings.layers, "texture")
    layer_weights = weights_for(settings.layer_weights, len(layers), "layer")
    blend = weights_for(settings.blend, len(settings.sources), "source")
    run.update_config(layers=list(layers), layer_weights=layer_weights.tolist(), blend=blend.tolist())

    targets = TargetFeatures(network, layers, activation_cache(settings, run))
    grams = {f"gram.{layer}": 0.0 for layer in layers}
    source_images = []
    for source, weight in zip(settings.sources, blend):
        image = image_io.load_image(source, settings.source_size)
        source_images.append(image)
        image_io.save_image(run.images_dir / f"source_{pathlib.Path(str(source)).stem}.png", image)
        features = targets("texture", source, image)
        for layer in layers:
            grams[f"gram.{layer}"] = grams[f"gram.{layer}"] + weight * objectives.gram_numpy(features[layer])
        grams["colour.images"] = grams.get("colour.images", 0.0) + weight * objectives.colour_statistics(image)
    grams = {name: value[None] for name, value in grams.items()}
    if settings.colour_weight <= 0:
        del grams["colour.images"]

    objective = texture_objective(layers, layer_weights, settings.colour_weight, settings.tv_weight, settings.size)
    engine = Engine.for_objective(objective, network)
    rule = step_rule(settings.optimiser, settings.learning_rate)
    if settings.parametrisation == "fourier":
        parametrisation = FourierImage((settings.count, *settings.size), seed=seed)
        start = parametrisation.parameters
        if isinstance(rule, LBFGS):
            rule = dataclasses.replace(rule, bounds=None)  # keeps its history and stopping test
    else:
        parametrisation = None
        start = rng.uniform(0.0, 1.0, (settings.count, *settings.size, 3)).astype(np.float32)
    start, done = continued_start(context, start)
    log = LossLog(run.losses_dir)
    result, _ = optimise(
        engine, start, settings.steps - done, rule, Plan(parametrisation),
        callbacks=[Progress(description=f"texture {settings.size[0]}x{settings.size[1]}", first_step=done,
                            show=context.show_progress, log=log, notify=context.notify)],
        targets=grams,
    )
    log.close()
    log.plot()
    if parametrisation is not None:
        result = parametrisation.images(result)
    result = np.clip(result, 0.0, 1.0)
    for index, image in enumerate(result):
        image_io.save_image(run.path / "outputs" / f"texture_{index:03d}.png", image)
    figures.save_figure(run.images_dir / "figure.png", texture_figure(settings, layers, source_images, result))
    return {}


def continued_start(context, start):
    """`(variables, steps done)`: where an interrupted attempt of this named run stopped, when each texture
    of the batch has a partial result of this run's `--steps` and of the shape of `start` (pixels or a
    Fourier spectrum); else `(start, 0)` (the batch starts afresh). A notice says what continues.
    """
    steps = context.settings.steps
    found = [context.partial(f"texture_{index:03d}") for index in range(len(start))]
    if all(partial is None for partial in found):
        return start, 0
    reached = {partial[1].get("step") for partial in found if partial is not None}
    done = reached.pop() if len(reached) == 1 else None
    fits = (isinstance(done, int) and 0 < done < steps and None not in found
            and all(record.get("of") == steps and variables.shape == start.shape[1:] for variables, record in found))
    if not fits:
        context.notify("texture: the partial results of an interrupted attempt are not of this run's textures and "
                       "steps; synthesising afresh.")
        return start, 0
    context.notify(f"texture: continuing from the partial results of an interrupted attempt at step {done} of {steps} "
                   "(the optimiser's own state starts afresh).")
    return np.stack([variables for variables, _ in found]).astype(np.float32), done


def texture_figure(settings, layers, sources, textures):
    """Source(s) | texture(s), each named, under a title saying how they were made."""
    names = [f"source: {pathlib.Path(str(source)).stem}" for source in settings.sources]
    names += [f"texture {index}" if len(textures) > 1 else "texture" for index in range(len(textures))]
    title = (f"{settings.network}: Gram matrices of {', '.join(layers)} matched in {settings.steps} "
             f"{settings.optimiser} steps")
    return figures.image_grid([[*sources, *textures]], column_titles=names, smallest=figures.SMALLEST_PANEL,
                              title=title)


def texture_estimates(settings, seed=0):
    """`([(label, Estimate)], steps)` for `--dry-run`: the whole batch of textures at the output size."""
    from deeprestore.estimate import estimate
    from deeprestore.networks import create_network

    network = create_network(settings.network, "random", settings.pooling, seed=seed)
    layers = resolve_layers(network, settings.layers, "texture")
    label = f"{settings.count} x {settings.size[0]}x{settings.size[1]}"
    return [(label, estimate(network, layers, settings.size, batch=settings.count))], settings.steps
