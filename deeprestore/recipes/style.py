"""Neural style transfer: match one image's content activations and other images' Gram matrices.

Reference:
    Gatys, Ecker & Bethge, 2015. A neural algorithm of artistic style. Gatys et al., 2016.
    Preserving color in neural artistic style transfer (luminance-only transfer).

The loss is `content_weight * content + style_weight * sum_l w_l * gram_l (+ tv_weight * TV)`, with
the content and Gram losses of `deeprestore.objectives`. Target features are computed once per image
and scale and kept in the activation cache; one compiled function serves every image and scale.
"""

import dataclasses
import functools
import operator
import pathlib

import numpy as np
import skimage.color

from deeprestore import figures, objectives
from deeprestore import images as image_io
from deeprestore.datasets import centre_crop
from deeprestore.losslog import LossLog
from deeprestore.optimise import Engine, Progress, optimise
from deeprestore.recipes.common import (
    TargetFeatures,
    activation_cache,
    item_rng,
    open_network,
    resolve_layers,
    step_rule,
    weights_for,
)


def style_objective(content_layer, style_layers, layer_weights, settings):
    """The weighted sum of content, Gram and total-variation terms."""
    style = functools.reduce(
        operator.add,
        (float(weight) * objectives.gram_distance(layer) for layer, weight in zip(style_layers, layer_weights)),
    )
    objective = settings.content_weight * objectives.content_distance(content_layer) + settings.style_weight * style
    if settings.tv_weight:
        objective = objective + settings.tv_weight * objectives.total_variation(2.0)
    return objective


def luminance(image):
    """The YIQ luminance of an RGB image, as a grey RGB image."""
    return np.repeat(skimage.color.rgb2yiq(image)[..., :1], 3, axis=-1).astype(np.float32)


def match_luminance(style, content):
    """A style image's luminance shifted and scaled to the content's mean and spread (Gatys et al. 2016)."""
    style_y, content_y = luminance(style), luminance(content)
    matched = (style_y - style_y.mean()) * (content_y.std() / (style_y.std() + 1e-8)) + content_y.mean()
    return np.clip(matched, 0.0, 1.0)


def with_content_colour(result, content):
    """The result's luminance with the content's chrominance (YIQ)."""
    yiq = skimage.color.rgb2yiq(content)
    yiq[..., 0] = skimage.color.rgb2yiq(result)[..., 0]
    return np.clip(skimage.color.yiq2rgb(yiq), 0.0, 1.0).astype(np.float32)


def scale_sizes(shape, scales):
    """`(height, width)` of each coarse-to-fine scale, each twice the previous, the last the full size."""
    return [(max(8, round(shape[0] / 2**k)), max(8, round(shape[1] / 2**k))) for k in reversed(range(scales))]


def continued_scale(context, name, sizes):
    """Where an interrupted attempt at item `name` stopped, `(scale, image, steps done)`, when its partial
    result lies inside one of the scales `sizes` of this run's `--steps`; else None (the item starts
    afresh). A notice says what continues.
    """
    found = context.partial(name)
    if found is None:
        return None
    image, record = found
    scale, first = record.get("context", {}).get("scale"), record.get("first_step")
    steps = context.settings.steps
    fits = (isinstance(scale, int) and isinstance(first, int) and 1 <= scale <= len(sizes)
            and record["of"] - first == steps and 0 < record["step"] - first < steps
            and image.shape == (*sizes[scale - 1], 3))
    if not fits:
        context.notify(f"{name}: the partial result of an interrupted attempt is not within this run's scales and "
                       "steps; styling it afresh.")
        return None
    done = record["step"] - first
    context.notify(f"{name}: continuing from the partial result of an interrupted attempt at scale {scale} of "
                   f"{len(sizes)}, step {done} of {steps} (the optimiser's own state starts afresh).")
    return scale, image.astype(np.float32), done


def initial_image(init, content, style, rng):
    """The start of the optimisation: the content, seeded noise, or the style resized to the content."""
    if init == "content":
        return content
    if init == "style":
        return image_io.resize(style, content.shape[:2])
    return rng.uniform(0.0, 1.0, content.shape).astype(np.float32)


@dataclasses.dataclass
class Prepared:
    """What a style run builds once: the network, its layers and weights, the compiled objective, the
    target features, the style images, and the loss log every image adds to (steps numbered on)."""

    network: object
    content_layer: str
    style_layers: tuple
    blend: object
    engine: object
    targets: object
    style_images: list
    log: object
    first_step: int = 0


def setup(context):
    """Builds the network, the objective and the targets once for every content image."""
    settings, run = context.settings, context.run
    network = open_network(settings, run, context.seed, context.echo)
    content_layer = resolve_layers(network, (settings.content_layer,) if settings.content_layer else (), "content")[0]
    style_layers = resolve_layers(network, settings.style_layers, "style")
    layer_weights = weights_for(settings.style_layer_weights, len(style_layers), "style layer")
    blend = weights_for(settings.style_blend, len(settings.styles), "style image")
    run.update_config(content_layer=content_layer, style_layers=list(style_layers),
                      style_layer_weights=layer_weights.tolist(), style_blend=blend.tolist())
    engine = Engine.for_objective(style_objective(content_layer, style_layers, layer_weights, settings), network)
    targets = TargetFeatures(network, (content_layer, *style_layers), activation_cache(settings, run))
    return Prepared(network, content_layer, style_layers, blend, engine, targets,
                    [image_io.load_image(source) for source in settings.styles], LossLog(run.losses_dir))


def step(context, prepared, items):
    """Stylises one content image, scale by scale, into `outputs/<NNN_name>.png` with its figure."""
    (position, source, name), = items
    settings, run = context.settings, context.run
    rng = item_rng(context.seed, position)
    content = image_io.load_image(source, settings.size)
    style_images = prepared.style_images
    styles = [match_luminance(image, content) for image in style_images] if settings.preserve_colour else style_images
    working = luminance(content) if settings.preserve_colour else content
    sizes = scale_sizes(content.shape, settings.scales)
    continued = continued_scale(context, name, sizes)
    image = None
    for scale, size in enumerate(sizes, start=1):
        done = 0
        if continued is not None and scale < continued[0]:
            continue  # done by the interrupted attempt
        content_scaled = image_io.resize(working, size)
        if continued is not None and scale == continued[0]:
            _, image, done = continued
        else:
            image = (initial_image(settings.init, content_scaled, styles[0], rng) if image is None
                     else image_io.resize(image, size))
        targets = {f"content.{prepared.content_layer}": prepared.targets(
            "content", source, content_scaled, (prepared.content_layer,))[prepared.content_layer][None],
            **style_grams(prepared, settings, styles, size)}
        progress = Progress(
            description=f"{name} scale {scale} {size[0]}x{size[1]}", show=context.show_progress, log=prepared.log,
            first_step=prepared.first_step + done, context={"image": position, "scale": scale},
            notify=context.notify,
        )
        result, values = optimise(prepared.engine, image[None], settings.steps - done,
                                  step_rule(settings.optimiser, settings.learning_rate), callbacks=[progress],
                                  targets=targets)
        prepared.first_step += settings.steps
        image = np.clip(result[0], 0.0, 1.0)
        image_io.save_image(run.images_dir / f"{name}_scale{scale}.png", image)
    if settings.preserve_colour:
        image = with_content_colour(image, content)
    image_io.save_image(run.path / "outputs" / f"{name}.png", image)
    figures.save_figure(run.images_dir / f"{name}_figure.png",
                        style_figure(source, content, style_images, image, settings))
    return {name: {"metrics": {term: float(value) for term, value in values.items()}}}


def style_grams(prepared, settings, styles, size):
    """`{gram.<layer>: (1, channels, channels)}`: the blend of the style images' Gram matrices, each
    style resized to `style_scale` of the scale's longer side."""
    style_side = max(8, round(max(size) * settings.style_scale))
    return {
        f"gram.{layer}": sum(
            weight * objectives.gram_numpy(prepared.targets(
                "style", settings.styles[number], image_io.resize(style_image, style_side), prepared.style_layers
            )[layer])
            for number, (style_image, weight) in enumerate(zip(styles, prepared.blend))
        )[None]
        for layer in prepared.style_layers
    }


def plots(context, prepared):
    """The loss log of every image, closed and plotted."""
    prepared.log.close()
    prepared.log.plot()


def style_figure(source, content, styles, result, settings):
    """Content | style image(s) | result, each named; styles are centre crops at the result's size."""
    panels = [image_io.resize(content, result.shape[:2]), *(centre_crop(image, result.shape[:2]) for image in styles)]
    names = [f"content: {pathlib.Path(str(source)).stem}",
             *(f"style: {pathlib.Path(str(style)).stem}" for style in settings.styles), "result"]
    title = (f"{settings.network} {settings.steps} steps x {settings.scales} scales, content weight "
             f"{settings.content_weight:g}, style weight {settings.style_weight:g}")
    return figures.image_grid([[*panels, result]], column_titles=names, smallest=figures.SMALLEST_PANEL, title=title)


def style_estimates(settings, seed=0):
    """`([(label, Estimate)], steps)` per scale of the first content image, for `--dry-run` (no weights
    loaded)."""
    from deeprestore.estimate import estimate
    from deeprestore.networks import create_network

    network = create_network(settings.network, "random", settings.pooling, seed=seed)
    content_layer = resolve_layers(network, (settings.content_layer,) if settings.content_layer else (), "content")[0]
    layers = (content_layer, *resolve_layers(network, settings.style_layers, "style"))
    content = image_io.load_image(image_io.list_images(settings.content)[0], settings.size)
    return [
        (f"scale {scale} {size[0]}x{size[1]}", estimate(network, layers, size))
        for scale, size in enumerate(scale_sizes(content.shape, settings.scales), start=1)
    ], settings.steps

