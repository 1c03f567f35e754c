"""Inversion to an intermediate layer: find a lower layer's activations that reproduce a higher layer's.

Reference:
    Mahendran & Vedaldi, 2015 and 2016 (see `recipes.invert`), with the optimised tensor moved from
    the image to a lower layer, as seed 000 asks ("invert to an intermediate layer instead of the
    image").

The objective is `recipes.invert`'s, `C * ||phi(x) - phi0||^2 / ||phi0||^2 + R_alpha(x) + R_TV(x)`,
where `x` is now the tensor of layer `to` and `phi` the network from `to` up to the inverted layer (a
Keras model cut between the two, `probes.SegmentProbe`). The priors read `x` with `B` its typical norm
per position, measured on the bundled sample images (as the image's B = 80 is the typical norm of a
mean-subtracted pixel), and `V = B / 6.5`. The optimiser works on `x / unit`, with `unit` the 99th
percentile of the layer's values on the samples, so the presets' learning rates, set for [0, 1]
pixels, keep their scale. The start is uniform noise in `[0, unit]` (or `[-unit, unit]` for a layer
with negative values), the presets' jitter is divided by the layer's stride, and after every step
the tensor is projected onto the layer's range: non-negative where the samples' activations all are,
and, with the range constraint of `mv2016`, each position's norm within `2 B`. L-BFGS (the `lbfgs`
preset) keeps the tensor non-negative by its bounds instead.
"""

import dataclasses
import io

import keras
import numpy as np

from deeprestore import images as image_io
from deeprestore.figures import activation_figure, save_figure, titled
from deeprestore.losslog import LossLog
from deeprestore.optimise import Constraint, Engine, Plan, Progress, optimise
from deeprestore.probes import FeatureProbe, SegmentProbe
from deeprestore.recipes.common import TargetFeatures, activation_cache, item_rng
from deeprestore.recipes.invert_presets import (
    chosen_preset,
    inversion_objective,
    load_images,
    source_layer,
    square,
    step_rule_for,
)
from deeprestore.rundir import atomic_write, to_json

# Channels of each image shown in the figure (those with the most energy in the true activations).
FIGURE_CHANNELS = 4


@dataclasses.dataclass(frozen=True)
class LayerStatistics:
    """What the priors and the optimiser need to know of a layer's values on natural images.

    Attributes:
        norm: `B`: the mean norm of one position's activation vector.
        unit: The 99th percentile of the absolute values: the optimised variable is the tensor over it.
        non_negative: Whether every value was non-negative (after a ReLU or a pooling of one).
    """

    norm: float
    unit: float
    non_negative: bool


def layer_statistics(network, layer, size):
    """`LayerStatistics` of a layer over the bundled sample images resized to `size` (height, width)."""
    samples = np.stack([image_io.resize(image_io.load_image(name), size) for name in image_io.SAMPLES])
    values = FeatureProbe(network, (layer,)).features(samples)[layer]  # (samples, height, width, channels)
    return LayerStatistics(
        norm=float(np.mean(np.linalg.norm(values, axis=-1))) or 1.0,
        unit=float(np.percentile(np.abs(values), 99)) or 1.0,
        non_negative=bool(values.min() >= 0.0),
    )


def layer_constraint(statistics, constrain):
    """A constraint projecting the variable (the tensor over `unit`) onto the layer's range, on the device."""
    largest = 2 * statistics.norm / statistics.unit

    def project(variables, number):
        if statistics.non_negative:
            variables = keras.ops.maximum(variables, 0.0)
        if constrain:
            norms = keras.ops.sqrt(keras.ops.sum(keras.ops.square(variables), axis=-1, keepdims=True))
            variables = variables * keras.ops.minimum(1.0, largest / keras.ops.maximum(norms, 1e-8))
        return variables

    return Constraint(("layer", largest, statistics.non_negative, constrain), project)


def normalised_errors(values, targets):
    """`||values - targets||^2 / ||targets||^2` of each item of a batch."""
    axes = tuple(range(1, targets.ndim))
    return np.sum((values - targets) ** 2, axis=axes) / (np.sum(targets**2, axis=axes) + 1e-12)


def setup(context, network, layer):
    """What inverting to layer `--to` needs once: the source layer, the preset (jitter divided by the
    layer's stride), the layer's statistics on the sample images and the engine, recorded in the run.

    Raises:
        DeepRestoreError: `to` is unknown or not below the inverted layer.
    """
    settings = context.settings
    source = source_layer(network, settings.to, layer)
    size = square(settings.size or network.spec.input_size)
    statistics = layer_statistics(network, source, size)
    stride = max(1, size[0] // network.output_shapes(*size, layers=(source,))[source][1])
    chosen = chosen_preset(settings, network, layer)
    chosen = dataclasses.replace(chosen, jitter=chosen.jitter // stride)
    context.run.update_config(layer=layer, to=source, preset=dataclasses.asdict(chosen),
                              statistics=dataclasses.asdict(statistics))
    probe = SegmentProbe(network, source, (layer,), scale=statistics.unit)
    return network, probe, chosen, statistics


def step(context, prepared, items):
    """Reconstructs the activations of layer `--to` of a batch of images from those of `--layer`.

    Each item writes its reconstructed tensor (`outputs/<NNN_name>.npy`, `(height, width, channels)`)
    and its record holds its errors: the normalised feature error at the inverted layer and the
    normalised error against the true activations of `to`. The figure (a few channels, true above
    reconstructed) and `metrics.json` (per image and averaged) describe the batch (in a named run,
    under the task's `shards/I-of-N/`).
    """
    network, probe, chosen, statistics = prepared
    settings, run, seed = context.settings, context.run, context.seed
    source, layer = probe.layers
    images = load_images(items, settings.size or network.spec.input_size)
    targets = TargetFeatures(network, (source, layer), activation_cache(settings, run))
    features = [targets("invert", item_source, image) for (_, item_source, _), image in zip(items, images)]
    true, goal = (np.stack([item[name] for item in features]) for name in (source, layer))
    engine = Engine(inversion_objective(layer, chosen, true.shape[1] * true.shape[2], source, statistics.norm), probe)
    low = 0.0 if statistics.non_negative else -1.0
    start = np.stack([item_rng(seed, position).uniform(low, 1.0, true.shape[1:]).astype(np.float32)
                      for position, _, _ in items])
    bounds = (0.0, None) if statistics.non_negative else None
    log = LossLog(run.losses_dir)
    result, _ = optimise(
        engine, start, chosen.steps, step_rule_for(chosen, chosen.steps, bounds),
        Plan(jitter=chosen.jitter, seed=np.random.default_rng(seed)),
        callbacks=[layer_constraint(statistics, chosen.constrain),
                   Progress(description=f"invert {layer} to {source}", show=context.show_progress, log=log,
                            notify=context.notify)],
        targets={f"feature.{layer}": goal},
    )
    log.close()
    log.plot()
    return _write_outputs(run, items, probe, result * statistics.unit, (true, goal))


def _write_outputs(run, pending, probe, reconstructions, activations):
    """Each tensor, then the batch's channel figure and `metrics.json`; returns each item's record.
    `activations` are `(true, goal)`: the true activations of `to` and those of the inverted layer."""
    true, goal = activations
    source, layer = probe.layers
    records = {}
    reached = np.asarray(probe.model(reconstructions)[layer])
    feature_errors = normalised_errors(reached, goal)
    activation_errors = normalised_errors(reconstructions, true)
    per_image = []
    (run.path / "outputs").mkdir(parents=True, exist_ok=True)
    for (_, _, name), reconstruction, feature, activation in zip(
            pending, reconstructions, feature_errors, activation_errors):
        buffer = io.BytesIO()
        np.save(buffer, reconstruction)
        atomic_write(run.path / "outputs" / f"{name}.npy", buffer.getvalue())
        metrics = {"feature_error": float(feature), "activation_error": float(activation)}
        records[name] = {"metrics": metrics}
        per_image.append({"image": name, **metrics})
    figure = activation_figure(true, reconstructions, FIGURE_CHANNELS, row_titles=True)
    title = f"{source}: the {FIGURE_CHANNELS} strongest channels of each image, reconstructed from {layer}"
    save_figure(run.task_path / "figure.png", titled(figure, title))
    atomic_write(run.task_path / "metrics.json", to_json({
        "layer": layer,
        "to": source,
        "feature_error": float(np.mean(feature_errors)),
        "activation_error": float(np.mean(activation_errors)),
        "per_image": per_image,
    }))
    return records
