"""`deeprestore denoise`: train restoration models (seeds 001, 004), apply them, list them."""

import click

from deeprestore import settings as defaults
from deeprestore.commands.common import item_names, name_option, run_recipe
from deeprestore.commands.options import settings_options
from deeprestore.commands.resume import name_option as training_name_option
from deeprestore.commands.resume import resume_option
from deeprestore.commands.resume import train_command as train
from deeprestore.errors import DeepRestoreError


@click.group("denoise")
def command():
    """Image restoration (seeds 001, 004): train a denoiser or inpainter, apply it, list the models."""


@command.command("models")
def list_models():
    """List the restoration models with their parameters and training defaults."""
    from deeprestore.restoration import models

    for name in models.list_models():
        spec = models.get_spec(name)
        values = spec.defaults
        parameters = models.trainable_parameters(models.create_model(name, channels=values.channels))
        click.echo(f"{name:<20} {spec.task:<8} {parameters:>8,} parameters  {spec.summary}")
        click.echo(f"{'':<29} defaults: {values.channels} channel(s), {values.corruption}, loss {values.loss}, "
                   f"{values.optimiser} "
                   f"{values.learning_rate:g}" + (f" momentum {values.momentum:g}" if values.optimiser == "sgd" else "")
                   + f", batch {values.batch_size} x {values.patch_size}x{values.patch_size}, {values.steps} steps")


@command.command("train")
@settings_options(defaults.DenoiseSettings)
@resume_option
@training_name_option
@click.pass_context
def train_command(context, resume, name, **options):
    """Train a restoration model on corrupted patches; writes model.keras, curves and a score table."""
    from deeprestore.recipes.denoise import resolve, train_denoiser

    state = context.obj

    def check(settings):
        resolve(settings)  # fail on an unknown model or corruption, a bad patch size or loss before any work
        if settings.data is not None and settings.corruption is not None:
            from deeprestore.restoration.data import is_paired_folder

            if is_paired_folder(settings.data):
                raise DeepRestoreError(f"--corruption {settings.corruption} does not apply to the HPatches pairs in "
                                       f"'{settings.data}'; their _noise twins are the inputs. Expected no "
                                       "--corruption.")

    train(context, "denoise-train", defaults.DenoiseSettings, options,
          lambda settings, run, seed, resume: train_denoiser(settings, run, seed=seed, resume=resume,
                                                             show_progress=not state.quiet, echo=state.echo),
          resume=resume, name=name, stored_key="resolved", check=check)


@command.command("apply")
@settings_options(defaults.DenoiseApplySettings)
@name_option
@click.pass_obj
def apply_command(state, name, **options):
    """Restore images of any size with a trained model; with clean references, score them."""
    from deeprestore import images as image_io
    from deeprestore.recipes.denoise import apply_denoiser, clean_sources, input_image, load_model
    from deeprestore.restoration import corruptions
    from deeprestore.restoration.apply import check_tiling
    from deeprestore.sharding import shard

    if options["clean"] and options["corruption"]:
        raise DeepRestoreError("Got both --clean and --corruption; expected one: --clean names the clean version of "
                               "--images, --corruption makes --images the clean version.")
    settings = defaults.DenoiseApplySettings(**options)
    check_tiling(settings.tile, settings.overlap)
    if settings.corruption:
        corruptions.parse(settings.corruption)
    sources = image_io.list_images(settings.images)
    selected = shard(zip(sources, clean_sources(settings, len(sources))), settings.shard)
    model, _ = load_model(settings.model)
    for source, clean in selected:  # fail on a missing image or one the model cannot take before any work
        input_image(source, int(model.inputs[0].shape[-1]), settings.grey, settings.size)
        if clean:
            image_io.load_image(clean)
    run_recipe(state, "denoise-apply", settings, lambda run: apply_denoiser(
        settings, run, seed=state.seed, echo=state.echo), name=name, items=item_names(sources))
