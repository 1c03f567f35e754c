"""`deeprestore denoise`: train restoration models (seeds 001, 004), apply them, list them."""

import click

from deeprestore import settings as defaults
from deeprestore.commands.aliases import aliased_option
from deeprestore.commands.common import devices_option, item_names, name_option, run_recipe
from deeprestore.commands.resume import resume_run, training_options
from deeprestore.errors import DeepRestoreError

TRAIN = defaults.DENOISE
APPLY = defaults.DENOISE_APPLY
MODEL_DEFAULT = "per model; see `deeprestore denoise models`"


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
@click.option("--model", default=TRAIN.model, help="unet, dncnn, autoencoder, autoencoder-v2, autoencoder-bn or "
              "autoencoder-dropout (see `deeprestore denoise models`).")
@click.option("--data", default=TRAIN.data, type=click.Path(exists=True),
              help="Folder (or list file) of training images, or of HPatches pairs <image>.png + <image>_noise.png "
              "[default: the bundled photos but camera].")
@click.option("--channels", default=TRAIN.channels, type=click.Choice(["1", "3"]),
              help=f"1 (grey) or 3 (RGB) [default: {MODEL_DEFAULT}].")
@click.option("--corruption", default=TRAIN.corruption, metavar="KIND:VALUE",
              help="gaussian:SIGMA, salt-and-pepper:AMOUNT, centre:FRACTION or perturbation:easy|hard|tough "
              f"(our N-HPatches-like noise) [default: {MODEL_DEFAULT}].")
@click.option("--patch-size", default=TRAIN.patch_size, type=click.IntRange(min=4),
              help=f"Side of the training patches, a multiple of 4 [default: {MODEL_DEFAULT}].")
@click.option("--batch-size", default=TRAIN.batch_size, type=click.IntRange(min=1),
              help=f"Patches per step [default: {MODEL_DEFAULT}].")
@click.option("--steps", default=TRAIN.steps, type=click.IntRange(min=1),
              help=f"Training steps in all, also when resuming [default: {MODEL_DEFAULT}].")
@click.option("--loss", default=TRAIN.loss, type=click.Choice(defaults.DENOISE_LOSSES),
              help=f"Mean absolute error, mean squared error or binary cross-entropy [default: {MODEL_DEFAULT}].")
@aliased_option("--optimiser", "optimiser", aliases=("--optimizer",), default=TRAIN.optimiser,
              type=click.Choice(defaults.DENOISE_OPTIMISERS),
              help=f"SGD with Nesterov momentum, or Adam [default: {MODEL_DEFAULT}].")
@click.option("--learning-rate", default=TRAIN.learning_rate, type=click.FloatRange(min=0.0, min_open=True),
              help=f"Step size [default: {MODEL_DEFAULT}].")
@click.option("--momentum", default=TRAIN.momentum, type=click.FloatRange(0.0, 1.0, max_open=True),
              help=f"Nesterov momentum of SGD [default: {MODEL_DEFAULT}].")
@click.option("--schedule", default=TRAIN.schedule, type=click.Choice(defaults.DENOISE_SCHEDULES),
              help="Step size: cosine decay to 0 over --steps, or constant (seed 004). Resuming with more --steps "
              "stretches the decay over the new total from then on.")
@click.option("--validation-fraction", default=TRAIN.validation_fraction,
              type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
              help="Share of each image (bottom rows) or stack (last patches) kept for validation.")
@click.option("--validation-batches", default=TRAIN.validation_batches, type=click.IntRange(min=1),
              help="Fixed validation batches.")
@click.option("--validate-every", default=TRAIN.validate_every, type=click.IntRange(min=0),
              help="Steps between validations (0: only at the end).")
@click.option("--checkpoint-every", default=TRAIN.checkpoint_every, type=click.IntRange(min=1),
              help="Steps between checkpoints.")
@click.option("--test-image", default=TRAIN.test_image,
              help="Image held out for the final PSNR/SSIM table: a file or a bundled sample.")
@click.option("--test-size", default=TRAIN.test_size, type=click.IntRange(min=0),
              help="Longer side of the test image in pixels (0: full size).")
@click.option("--baselines/--no-baselines", default=TRAIN.baselines,
              help="Also score scikit-image's classical methods.")
@devices_option(TRAIN.devices)
@training_options(TRAIN)
@click.pass_context
def train_command(context, resume, **options):
    """Train a restoration model on corrupted patches; writes model.keras, curves and a score table."""
    from deeprestore.recipes.denoise import resolve, train_denoiser

    options["channels"] = None if options["channels"] is None else int(options["channels"])
    state = context.obj
    if resume:
        resume_run(context, resume, "denoise-train", defaults.DenoiseSettings, options,
                   lambda settings, run, seed: train_denoiser(settings, run, seed=seed, resume=True,
                                                              show_progress=not state.quiet, echo=state.echo),
                   stored_key="resolved")
        return
    settings = defaults.DenoiseSettings(**options)
    resolve(settings)  # fail on an unknown model or corruption, a bad patch size or loss before any work
    if settings.data is not None and settings.corruption is not None:
        from deeprestore.restoration.data import is_paired_folder

        if is_paired_folder(settings.data):
            raise DeepRestoreError(f"--corruption {settings.corruption} does not apply to the HPatches pairs in "
                                   f"'{settings.data}'; their _noise twins are the inputs. Expected no --corruption.")
    run_recipe(state, "denoise-train", settings, lambda run: train_denoiser(
        settings, run, seed=state.seed, show_progress=not state.quiet, echo=state.echo))


@command.command("apply")
@click.option("--model", "model", required=True, type=click.Path(exists=True),
              help="A `denoise train` run directory, or a saved .keras model.")
@aliased_option("--images", "images", aliases=("--image",), required=True,
              help="Image(s) to restore: a file, a bundled sample (camera, astronaut, ...), a folder or a list file "
              "(each restored into items/<NNN_name>/ of the run).")
@click.option("--clean", default=APPLY.clean,
              help="The clean version of --images, for PSNR and SSIM: as many images, in the same order.")
@click.option("--corruption", default=APPLY.corruption, metavar="KIND:VALUE",
              help="Corrupt --images first (seeded), which then serves as the clean reference: gaussian:SIGMA, "
              "salt-and-pepper:AMOUNT, centre:FRACTION or perturbation:easy|hard|tough.")
@click.option("--grey", is_flag=True, default=APPLY.grey,
              help="Convert a colour image to grey for a one-channel model.")
@click.option("--size", default=APPLY.size, type=click.IntRange(min=0),
              help="Longer side the image is resized to first (0: keep its size).")
@click.option("--tile", default=APPLY.tile, type=click.IntRange(min=4),
              help="Side of the tiles large images are restored in (a multiple of 4); bounds the memory used.")
@click.option("--overlap", default=APPLY.overlap, type=click.IntRange(min=0),
              help="Pixels tiles overlap on each side (a multiple of 4; at least the receptive field for seamless "
              "tiles).")
@click.option("--baselines/--no-baselines", default=APPLY.baselines,
              help="Also run and score scikit-image's classical methods.")
@click.option("--shard", default=APPLY.shard,
              help="I/N: restore only the I-th of N shares of a folder or list (array jobs).")
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
