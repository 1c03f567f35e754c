"""The checks of each experiment's inputs that run before any backend loads (see `deeprestore.driver`):
each reads what it is given (images, lists, options that cannot go together) and returns the run's
items, so a bad input is a one-line error in about the time Python takes to start. Nothing here
imports Keras.
"""

from deeprestore import images as image_io
from deeprestore.errors import DeepRestoreError
from deeprestore.restoration import corruptions
from deeprestore.sharding import shard


def style(settings):
    """Every content image of this task's shard and every style image; returns the whole list of
    content images (the run's items)."""
    sources = image_io.list_images(settings.content)
    for source in (*shard(sources, settings.shard), *settings.styles):
        image_io.load_image(source)  # fail on a bad image before building anything
    return sources


def texture(settings):
    """Every source; a texture run has no items."""
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
    """A learning rate only where the preset has one, every image of this task's shard; returns the whole
    list of images (the run's items)."""
    check_learning_rate(settings)
    sources = image_io.list_images(settings.images)
    for source in shard(sources, settings.shard):
        image_io.load_image(source)
    return sources


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
