"""Optimisation-based inversion: find an image whose activations at a layer match a given image's.

Reference:
    Mahendran & Vedaldi, 2015. Understanding deep image representations by inverting them.
    Mahendran & Vedaldi, 2016. Visualizing deep convolutional neural networks using natural
    pre-images.

The objective, presets and step rules are in `recipes.invert_presets`. The optimisation starts from
noise (starting from the target image would hide failures), or from the partial results an
interrupted attempt of a named run kept; the images of a task are inverted as one batch. With `--to`,
the optimised tensor is a lower layer's (`recipes.invert_layer`).
"""

import dataclasses

import numpy as np

from deeprestore import images as image_io
from deeprestore.figures import difference_figure
from deeprestore.inversion.metrics import image_metrics, summary
from deeprestore.losslog import LossLog
from deeprestore.optimise import Engine, Plan, Progress, optimise
from deeprestore.recipes import invert_layer
from deeprestore.recipes.common import TargetFeatures, activation_cache, item_rng, open_network
from deeprestore.recipes.invert_presets import (  # noqa: F401 (the presets are this module's API too)
    B,
    Preset,
    V,
    check_learning_rate,
    chosen_preset,
    depth_band,
    inversion_objective,
    load_images,
    preset,
    range_constraint,
    source_layer,
    square,
    step_rule_for,
)
from deeprestore.rundir import atomic_write, to_json
from deeprestore.sharding import shard


def setup(context):
    """Builds the network once and records the layer and preset in the run; with `--to`, see
    `invert_layer.setup`."""
    settings, run = context.settings, context.run
    network = open_network(settings, run, context.seed, context.echo)
    layer = network.resolve(settings.layer)
    if settings.to:
        return invert_layer.setup(context, network, layer)
    chosen = chosen_preset(settings, network, layer)
    run.update_config(layer=layer, preset=dataclasses.asdict(chosen))
    return network, layer, chosen


def step(context, prepared, items):
    """Inverts a batch of images at the layer and writes each reconstruction (`outputs/<NNN_name>.png`),
    the batch's figure, `metrics.json` and loss log (in a named run, under the task's `shards/I-of-N/`).

    Returns:
        `{name: {"metrics": ...}}` of each item.
    """
    if context.settings.to:
        return invert_layer.step(context, prepared, items)
    network, layer, chosen = prepared
    settings, run = context.settings, context.run
    images = load_images(items, settings.size or network.spec.input_size)
    targets = TargetFeatures(network, (layer,), activation_cache(settings, run))
    features = np.stack([targets("invert", source, image)[layer] for (_, source, _), image in zip(items, images)])
    log = LossLog(run.losses_dir)
    starts, done = continued_starts(context, items, chosen.steps)
    if starts is None:
        starts = noise_starts(context.seed, items, images.shape, chosen.start_noise)
    progress = Progress(description=f"invert {layer}", show=context.show_progress, log=log, first_step=done,
                        notify=context.notify)
    remaining = dataclasses.replace(chosen, steps=chosen.steps - done)
    reconstructions, engine = reconstruct(network, layer, remaining, features, starts, context.seed, progress)
    log.close()
    log.plot()
    title = f"{network.name} {layer}: reconstructed from noise ({settings.preset}, {chosen.steps} steps)"
    return write_outputs(run, items, images, reconstructions, (layer, features, engine, title))


def continued_starts(context, items, steps):
    """The partial results of an interrupted attempt, where every item of the batch has one at the same
    step of the same run length, with that step; else `(None, 0)`. A notice says what continues."""
    partials = [context.partial(name) for _, _, name in items]
    if not all(partials) or len({(record["step"], record["of"], variables.shape)
                                 for variables, record in partials}) != 1:
        if any(partials):
            context.notify("Partial results of an interrupted attempt do not cover this batch alike; inverting it "
                           "afresh from noise.")
        return None, 0
    done, of = partials[0][1]["step"], partials[0][1]["of"]
    if of != steps or done >= steps:
        return None, 0
    context.notify(f"Continuing {len(items)} image{'s' * (len(items) != 1)} from the partial results of an interrupted "
                   f"attempt at step {done} of {steps} (the optimiser's own state starts afresh).")
    return np.stack([variables for variables, _ in partials]), done


def noise_starts(seed, pending, shape, half_width=0.5):
    """The seeded uniform noise on `[0.5 - half_width, 0.5 + half_width]` each of the `pending` items
    `(position, source, name)` starts from: a function of the seed and the item's position in the whole
    list, so a shard starts as the whole run does."""
    return np.stack([item_rng(seed, position).uniform(0.5 - half_width, 0.5 + half_width, shape[1:]).astype(np.float32)
                     for position, _, _ in pending])


def reconstruct(network, layer, chosen, features, starts, seed=0, progress=None):
    """Minimises a preset's objective from `starts` so that their activations at `layer` match `features`.

    Args:
        network: The `Network`.
        layer: Canonical name of the inverted layer.
        chosen: A `Preset`.
        features: `(batch, height, width, channels)` target activations.
        starts: `(batch, height, width, 3)` images to start from.
        seed: Seed of the jitter.
        progress: A `Progress`, or None for a silent run.

    Returns:
        The reconstructions clipped to [0, 1], and the `Engine` (to evaluate the objective's terms).
    """
    engine = Engine.for_objective(inversion_objective(layer, chosen, starts.shape[1] * starts.shape[2]), network)
    callbacks = [range_constraint(network.spec)] if chosen.constrain else []
    result, _ = optimise(
        engine, starts, chosen.steps, step_rule_for(chosen, chosen.steps),
        Plan(jitter=chosen.jitter, seed=np.random.default_rng(seed)),
        callbacks=[*callbacks, progress or Progress(show=False)], targets={f"feature.{layer}": features},
    )
    return np.clip(result, 0.0, 1.0), engine


def write_outputs(run, items, images, reconstructions, measured):
    """Writes each reconstruction, then the batch's four-column figure and `metrics.json`; returns each
    item's record. `measured` is `(layer, features, engine, title)`."""
    layer, features, engine, title = measured
    term = f"feature.{layer}"
    records = {}
    for (_, _, name), image, reconstruction, feature in zip(items, images, reconstructions, features):
        image_io.save_image(run.path / "outputs" / f"{name}.png", reconstruction)
        _, values, _ = engine(reconstruction[None], {term: feature[None]})
        records[name] = {"metrics": {**image_metrics(image, reconstruction), "feature_error": float(values[term])}}
    figure = difference_figure(images, reconstructions, title, row_titles=[name for _, _, name in items])
    image_io.save_image(run.task_path / "figure.png", figure)
    _, values, _ = engine(reconstructions, {term: features})
    metrics = summary(images, reconstructions)
    metrics["feature_error"] = values[term]
    metrics["layer"] = layer
    metrics["outputs"] = [name for _, _, name in items]
    atomic_write(run.task_path / "metrics.json", to_json(metrics))
    return records


def invert_estimates(settings, seed=0):
    """`([(label, Estimate)], steps)` for `--dry-run`: the batch of this shard's images at the inversion
    size (with `--to`, the batch of that layer's activations, optimised through the layers above it), and
    the steps the run takes (the preset's unless given)."""
    from deeprestore.estimate import estimate
    from deeprestore.networks import create_network

    network = create_network(settings.network, "random", settings.pooling, seed=seed)
    layer = network.resolve(settings.layer)
    height, width = square(settings.size or network.spec.input_size)
    count = len(shard(image_io.list_images(settings.images), settings.shard))
    steps = chosen_preset(settings, network, layer).steps
    if settings.to:
        source = source_layer(network, settings.to, layer)
        return [(f"{count} x {source} of {height}x{width}",
                 estimate(network, (layer,), (height, width), batch=count, start=source))], steps
    return [(f"{count} x {height}x{width}",
             estimate(network, ("preprocess", layer), (height, width), batch=count))], steps
