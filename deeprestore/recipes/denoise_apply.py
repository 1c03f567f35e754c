"""`denoise apply`: restore images of any size with a saved model, tile by tile, and score them where
the clean image is known. A single image writes into the run directory itself; the images of a folder
or list file (or of a `--shard` of one, or of a named run) each write into `items/<NNN_name>/`, named
by their position in the whole list.
"""

import dataclasses

from deeprestore import images as image_io
from deeprestore.recipes.checks import clean_sources
from deeprestore.recipes.common import Outputs
from deeprestore.restoration import corruptions
from deeprestore.sharding import shard


def validate(settings):
    """What needs the backend: the tiling, the model, and every image of this task's shard in the
    channels the model takes."""
    from deeprestore.recipes.denoise import input_image, load_model
    from deeprestore.restoration.apply import check_tiling

    check_tiling(settings.tile, settings.overlap)
    model, _ = load_model(settings.model)
    for source in shard(image_io.list_images(settings.images), settings.shard):
        input_image(source, int(model.inputs[0].shape[-1]), settings.grey, settings.size)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """The model, the channels it takes, each input's clean image, the corruption and the task."""

    model: object
    channels: int
    cleans: list
    corruption: object
    task: str


def setup(context):
    """Loads the model once and records what it restores in the run."""
    from deeprestore.recipes.denoise import load_model

    settings = context.settings
    model, config = load_model(settings.model)
    channels = int(model.inputs[0].shape[-1])
    cleans = clean_sources(settings, len(image_io.list_images(settings.images)))
    corruption = corruptions.parse(settings.corruption) if settings.corruption else None
    task = corruption.task if corruption is not None else config.get("task", "denoise")
    context.run.update_config(model_config=config.get("resolved"), channels=channels, task=task)
    return Prepared(model, channels, cleans, corruption, task)


def step(context, prepared, items):
    """Restores one image (corrupted first with `--corruption`, seeded by the run's seed and its
    position) and scores it where its clean image is known."""
    from deeprestore.recipes.denoise import material_of
    from deeprestore.restoration.report import score

    (position, source, name), = items
    settings, run = context.settings, context.run
    outputs = Outputs(run.path if context.single else run.path / "items" / name)
    outputs.path.mkdir(parents=True, exist_ok=True)
    material = material_of(settings, source, prepared.cleans[position], prepared.channels, prepared.corruption,
                           prepared.task, (context.seed, position))
    if not context.single:
        context.echo(name)
    rows = score(prepared.model, outputs, material, settings.baselines, context.echo,
                 tiling={"tile": settings.tile, "overlap": settings.overlap})
    metrics = {f"{row['method']}.{measure}": row[measure] for row in rows for measure in ("psnr", "ssim")}
    return {name: {"clean": prepared.cleans[position], "metrics": metrics}}
