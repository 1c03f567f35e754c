"""DeepDream: raise the L2 norm of chosen layers by normalised gradient ascent, octave by octave.

Reference:
    Mordvintsev, Olah & Tyka, 2015. Inceptionism: going deeper into neural networks. The seed-003
    report (Hasson, 2017) for the L2 objective, the normalised step and the start from noise.

The image is processed from the smallest octave up; after each octave the detail it gained (result
minus the octave's base image) is resized and added to the next, larger base ("detail re-injection").
"""

import numpy as np

from deeprestore import images as image_io
from deeprestore import objectives
from deeprestore.cache import ActivationCache
from deeprestore.errors import DeepRestoreError
from deeprestore.losslog import LossLog
from deeprestore.networks import create_network
from deeprestore.optimise import Engine, Progress, clamp, normalised_descent, optimise
from deeprestore.probes import FeatureProbe


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


def dream_objective(layers):
    """Minus the sum of the layers' mean squared activations: minimising it is ascent on the L2 norms."""
    objective = -objectives.l2(layers[0])
    for layer in layers[1:]:
        objective = objective - objectives.l2(layer)
    return objective


def usable_octaves(network, layers, sizes):
    """Drops octaves too small for the objective's layers (each must keep at least one pixel)."""
    usable = []
    for size in sizes:
        try:
            shapes = network.output_shapes(*size, layers=layers)
        except DeepRestoreError:
            continue
        if all(dimension and dimension > 0 for shape in shapes.values() for dimension in shape[1:3]):
            usable.append(size)
    if not usable:
        raise DeepRestoreError(
            f"The image is too small for layers {', '.join(layers)} of '{network.name}' at every octave; "
            "expected a larger --size or fewer --octaves."
        )
    return usable


def dream(settings, run, seed=0, show_progress=True, echo=print):
    """Runs DeepDream and writes the dream, per-octave images, the loss log and plot into a run.

    Args:
        settings: A `DreamSettings`.
        run: The `RunDir` to write into.
        seed: Seed of the noise start and the jitter.
        show_progress: Whether to show progress bars.
        echo: Where one-line notices go.

    Returns:
        The dream image, `(height, width, 3)` float32.
    """
    rng = np.random.default_rng(seed)
    network = create_network(settings.network, settings.weights, settings.pooling, seed=seed)
    echo(network.weights.notice)
    layers = tuple(network.resolve(layer) for layer in (settings.layers or network.spec.layer_sets.dream))
    run.update_config(weights=network.weights.as_config(), layers=list(layers))

    source = image_io.load_image(settings.image, settings.size or None)
    image = start_image(source, settings.start, rng)
    probe = FeatureProbe(network, layers)
    engine = Engine(dream_objective(layers), probe)
    cache = ActivationCache(settings.cache or run.activations_path)
    metadata = dict(
        network=network.name, weights_sha256=network.weights.sha256,
        preprocessing=network.spec.describe_preprocessing(),
    )
    cache.get_or_compute("start", image, layers, lambda batch, missing: probe.features(batch), **metadata)

    sizes = usable_octaves(network, layers, octave_sizes(*image.shape[:2], settings.octaves, settings.octave_scale))
    log = LossLog(run.losses_dir)
    detail = np.zeros_like(image)
    for octave, size in enumerate(sizes, start=1):
        base = image_io.resize(image, size)
        detail = image_io.resize(detail, size)
        progress = Progress(
            description=f"octave {octave}/{len(sizes)} {size[0]}x{size[1]}", show=show_progress, log=log,
            first_step=(octave - 1) * settings.steps, context={"octave": octave},
        )
        result, _ = optimise(
            engine, (base + detail)[None], settings.steps, normalised_descent(settings.step_size),
            jitter=settings.jitter, callbacks=[clamp()], rng=rng, progress=progress,
        )
        detail = result[0] - base
        image_io.save_image(run.images_dir / f"octave_{octave}.png", result[0])
    log.close()
    log.plot()
    dreamed = np.clip(result[0], 0.0, 1.0)
    cache.get_or_compute("dream", dreamed, layers, lambda batch, missing: probe.features(batch), **metadata)
    image_io.save_image(run.images_dir / "start.png", image)
    image_io.save_image(run.path / "dream.png", dreamed)
    return dreamed
