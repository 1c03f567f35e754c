"""The checks of each experiment's inputs that run before any backend loads (see `deeprestore.driver`):
each reads what it is given (images, lists, the network and its layer names, options that cannot go
together) and returns the run's items, so a bad input is a one-line error in about the time Python
takes to start. Nothing here imports Keras: a registered network's layer names come from
`deeprestore.architectures`; a model file's are checked once the backend has loaded it.
"""

from deeprestore import architectures
from deeprestore import images as image_io
from deeprestore.errors import DeepRestoreError
from deeprestore.inversion import specs as module_specs
from deeprestore.restoration import corruptions, models
from deeprestore.sharding import shard


def network_layers(network, layers, include_top=False, option=None):
    """Refuses an unknown network, or a layer name (or alias) of `layers` it lacks; empty names (a
    default) pass. `option` prefixes the message (`--to: Unknown layer ...`), as the recipe does.

    Raises:
        DeepRestoreError: Unknown network or layer.
    """
    try:
        architectures.check_layers(network, [layer for layer in layers if layer], include_top)
    except DeepRestoreError as error:
        if option is None or str(error).startswith("Unknown network"):
            raise
        raise DeepRestoreError(f"{option}: {error}") from None


def style(settings):
    """The network and its layers, every content image of this task's shard and every style image;
    returns the whole list of content images (the run's items)."""
    network_layers(settings.network, (settings.content_layer, *settings.style_layers))
    sources = image_io.list_images(settings.content)
    for source in (*shard(sources, settings.shard), *settings.styles):
        image_io.load_image(source)  # fail on a bad image before building anything
    return sources


def texture(settings):
    """The network and its layers, every source; a texture run has no items."""
    network_layers(settings.network, settings.layers)
    for source in settings.sources:
        image_io.load_image(source)


def check_learning_rate(settings):
    """Refuses a learning rate given with a preset whose optimiser (L-BFGS) has none.

    Raises:
        DeepRestoreError: `settings.learning_rate` is set and the preset is `lbfgs`.
    """
    if settings.preset == "lbfgs" and settings.learning_rate:
        raise DeepRestoreError(f"--learning-rate {settings.learning_rate:g} was given with --preset lbfgs, whose "
                               "L-BFGS has no learning rate; expected no --learning-rate, or --preset mv2015 or "
                               "mv2016.")


def invert(settings):
    """The network, the inverted layer and `--to`, a learning rate only where the preset has one, every image
    of this task's shard; returns the whole list of images (the run's items)."""
    network_layers(settings.network, (settings.layer,))
    network_layers(settings.network, (settings.to,), option="--to")
    check_learning_rate(settings)
    sources = image_io.list_images(settings.images)
    for source in shard(sources, settings.shard):
        image_io.load_image(source)
    return sources


def deconvnet(settings):
    """`invert --method deconvnet`: the network and its layers (settings as a dict); a run without items."""
    network_layers(settings["network"], settings["layers"])


def learned(settings):
    """`invert --method learned`: a network given names a registered one or a model file; its layers are the
    stack's, checked once the stack is read."""
    if settings["network"] is not None:
        architectures.check_network(settings["network"])


def stack(settings):
    """The network, and `--from` and `--to` of the default chain (`image` is the image), or the module spec
    file that replaces them: its fields and types, and the layers its modules take and reconstruct (the
    shapes are checked with the network built); a training run has no items."""
    if not settings.modules:
        network_layers(settings.network, [layer for layer in (settings.source, settings.target) if layer != "image"])
        return
    specs = module_specs.load_specs(settings.modules)
    names = [spec.name for spec in specs]
    architectures.check_network(settings.network)
    for spec in specs:
        for field in ("input", "target"):
            value = getattr(spec, field)
            if (field == "input" and value in names) or (field == "target" and value == module_specs.IMAGE):
                continue
            try:
                network_layers(settings.network, (value,))
            except DeepRestoreError as error:
                raise module_specs.not_a_layer(spec, field, names, settings.network, error) from None


def denoise_train(settings):
    """The model's name and the corruption's spelling (the rest is checked with the model's defaults filled
    in, `recipes.denoise.resolve`); a training run has no items."""
    models.get_spec(settings.model)
    if settings.corruption is not None:
        corruptions.parse(settings.corruption)


def denoise_apply(settings):
    """The inputs, read before any backend loads: `--clean` or `--corruption`, the corruption's
    spelling, one clean image per input, every image of this task's shard. Returns the whole list of
    images (the run's items)."""
    if settings.clean and settings.corruption:
        raise DeepRestoreError("Got both --clean and --corruption; expected one: --clean names the clean version of "
                               "--images, --corruption makes --images the clean version.")
    if settings.corruption:
        corruptions.parse(settings.corruption)
    sources = image_io.list_images(settings.images)
    for source, clean in shard(zip(sources, clean_sources(settings, len(sources))), settings.shard):
        image_io.load_image(source)
        if clean:
            image_io.load_image(clean)
    return sources


def clean_sources(settings, count):
    """The clean reference of each input (None when unknown): `--clean` lists one per input, by position.

    Raises:
        DeepRestoreError: `--clean` lists a different number of images than `--images`.
    """
    if not settings.clean:
        return [None] * count
    cleans = image_io.list_images(settings.clean)
    if len(cleans) != count:
        raise DeepRestoreError(f"--clean lists {len(cleans)} image(s) for {count} in --images; expected one clean "
                               "image per input, in the same order.")
    return cleans
