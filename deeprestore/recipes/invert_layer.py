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
from deeprestore.errors import DeepRestoreError
from deeprestore.figures import activation_figure, save_figure, titled
from deeprestore.losslog import LossLog
from deeprestore.optimise import Constraint, Engine, Progress, optimise
from deeprestore.probes import FeatureProbe, SegmentProbe
from deeprestore.recipes.common import (
    TargetFeatures,
    activation_cache,
    item_rng,
    notifier,
    open_network,
    pending_items,
)
from deeprestore.recipes.invert import (
    chosen_preset,
    inversion_objective,
    load_images,
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


def source_layer(network, to, layer):
    """The canonical name of `--to`, checked to come before the inverted layer.

    Raises:
        DeepRestoreError: `to` is unknown, or not below `layer`.
    """
    try:
        source = network.resolve(to)
    except DeepRestoreError as error:
        raise DeepRestoreError(f"--to: {error}") from None
    order = network.layers
    if order.index(source) >= order.index(layer):
        raise DeepRestoreError(
            f"--to '{to}' is not below the inverted layer '{layer}' of '{network.name}'; expected one of the "
            f"layers before it: {', '.join(order[: order.index(layer)])}."
        )
    return source


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


def invert_to_layer(settings, run, seed=0, show_progress=True, echo=print):
    """Reconstructs the activations of layer `settings.to` from those of `settings.layer`.

    The images of this shard not already complete in the run are inverted as one batch, as
    `recipes.invert.invert` does. Each writes its reconstructed tensor (`outputs/<NNN_name>.npy`,
    `(height, width, channels)`) and is marked complete with its errors: the normalised feature error
    at the inverted layer and the normalised error against the true activations of `to`. The figure
    (a few channels, true above reconstructed) and `metrics.json` (per image and averaged) describe
    the batch (in a named run, under the task's `shards/I-of-N/`).

    Args:
        settings: An `InvertSettings` with `to` set.
        run: The `RunDir`.
        seed: Seed of the jitter and, with each image's position, of its noise start.
        show_progress: Whether to show a progress bar.
        echo: Where notices go.

    Returns:
        The reconstructed activations, `(batch, height, width, channels)`; an empty batch when every
        image was complete.

    Raises:
        DeepRestoreError: `to` is unknown or not below the inverted layer.
    """
    pending = pending_items(run, image_io.list_images(settings.images), settings.shard)
    if not pending:
        return np.zeros((0, 0, 0, 0), np.float32)
    network = open_network(settings, run, seed, echo)
    layer = network.resolve(settings.layer)
    source = source_layer(network, settings.to, layer)
    chosen = chosen_preset(settings, network, layer)
    images = load_images(pending, settings.size or network.spec.input_size)
    targets = TargetFeatures(network, (source, layer), activation_cache(settings, run))
    features = [targets("invert", item_source, image) for (_, item_source, _), image in zip(pending, images)]
    true, goal = (np.stack([item[name] for item in features]) for name in (source, layer))
    statistics = layer_statistics(network, source, images.shape[1:3])
    stride = max(1, images.shape[1] // true.shape[1])
    chosen = dataclasses.replace(chosen, jitter=chosen.jitter // stride)
    run.update_config(layer=layer, to=source, preset=dataclasses.asdict(chosen),
                      statistics=dataclasses.asdict(statistics))

    probe = SegmentProbe(network, source, (layer,), scale=statistics.unit)
    engine = Engine(inversion_objective(layer, chosen, true.shape[1] * true.shape[2], source, statistics.norm), probe)
    low = 0.0 if statistics.non_negative else -1.0
    start = np.stack([item_rng(seed, position).uniform(low, 1.0, true.shape[1:]).astype(np.float32)
                      for position, _, _ in pending])
    bounds = (0.0, None) if statistics.non_negative else None
    log = LossLog(run.losses_dir)
    result, _ = optimise(
        engine, start, chosen.steps, step_rule_for(chosen, chosen.steps, bounds), jitter=chosen.jitter,
        callbacks=[layer_constraint(statistics, chosen.constrain)], rng=np.random.default_rng(seed),
        progress=Progress(description=f"invert {layer} to {source}", show=show_progress, log=log,
                          notify=notifier(run, echo)),
        targets={f"feature.{layer}": goal},
    )
    log.close()
    log.plot()
    reconstructions = result * statistics.unit
    _write_outputs(run, pending, probe, reconstructions, true, goal)
    return reconstructions


def _write_outputs(run, pending, probe, reconstructions, true, goal):
    """Each tensor and its completion marker, then the batch's channel figure and `metrics.json`."""
    source, layer = probe.layers
    reached = np.asarray(probe.model(reconstructions)[layer])
    feature_errors = normalised_errors(reached, goal)
    activation_errors = normalised_errors(reconstructions, true)
    per_image = []
    (run.path / "outputs").mkdir(parents=True, exist_ok=True)
    for (position, item_source, name), reconstruction, feature, activation in zip(
            pending, reconstructions, feature_errors, activation_errors):
        buffer = io.BytesIO()
        np.save(buffer, reconstruction)
        atomic_write(run.path / "outputs" / f"{name}.npy", buffer.getvalue())
        metrics = {"feature_error": float(feature), "activation_error": float(activation)}
        run.complete_item(name, {"position": position, "source": item_source, "metrics": metrics})
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
