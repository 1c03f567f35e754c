"""`deeprestore denoise`: list the restoration models (seeds 001, 004); `denoise train` and `denoise apply`
are experiments of the registry (`recipes.registry`)."""

import click


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
