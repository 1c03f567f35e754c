"""The experiments, each one registered value (`deeprestore.driver.Experiment`): adding an experiment is
writing one here, and the driver gives it its command, checks, run directory, loop and signals.

This module imports no backend: each part that needs one is named as `module:function` and imported
when the driver calls it, after the inputs are checked.
"""

import dataclasses
import importlib

from deeprestore import settings as defaults
from deeprestore.errors import DeepRestoreError
from deeprestore.experiment import Experiment
from deeprestore.recipes import checks


def later(path):
    """`module:function` of `deeprestore.recipes` (or another package module), imported when called."""
    module, name = path.split(":")

    def call(*arguments, **keywords):
        return getattr(importlib.import_module(f"deeprestore.{module}"), name)(*arguments, **keywords)

    call.__name__ = name
    call.__qualname__ = path
    return call


def dream_estimates(settings, seed):
    rows = later("recipes.dream:dream_estimates")(settings, seed=seed)
    return [(label, item) for label, item, _ in rows], [steps for _, _, steps in rows]


DREAM = Experiment(
    "dream", defaults.DreamSettings,
    "DeepDream: normalised gradient ascent on layers, channels, neurons, classes or a guide, over octaves.",
    check=later("recipes.dream_terms:check"), setup=later("recipes.dream:setup"), step=later("recipes.dream:step"),
    estimate=dream_estimates, partial=True,
)
STYLE = Experiment(
    "style", defaults.StyleSettings,
    "Neural style transfer (Gatys et al.): content of one image, Gram matrices of others.",
    check=checks.style, setup=later("recipes.style:setup"), step=later("recipes.style:step"),
    figures=later("recipes.style:plots"), estimate=later("recipes.style:style_estimates"), partial=True,
)
TEXTURE = Experiment(
    "texture", defaults.TextureSettings,
    "Texture synthesis (Gatys et al.): match Gram matrices of a source, at any output size.",
    check=checks.texture, setup=later("recipes.texture:setup"), step=later("recipes.texture:step"),
    estimate=later("recipes.texture:texture_estimates"), partial=True,
)

INVERT_SUMMARY = "Reconstruct images from a layer's activations, and measure how well."
# `invert`: three experiments behind `--method`, sharing the options of what is inverted.
_INVERTED = (defaults.InvertSettings, ("images", "network", "weights", "precision", "pooling", "layer", "size"), "")
_BATCH = (defaults.LearnedInversionSettings, ("batch_size",), "learned, deconvnet: ")


def _given(options, given, name, default):
    return options[name] if name in given else default


def learned_settings(options, given):
    """`invert --method learned`: the stack's own layer, size, network and weights unless given."""
    if options.get("stack") is None:
        raise DeepRestoreError("--method learned needs --stack RUN, a run directory of `deeprestore stack`.")
    chosen = dataclasses.replace(defaults.INVERT_LEARNED, stack=options["stack"], size=options["size"],
                                 batch_size=options["batch_size"], layer=_given(options, given, "layer", ""))
    return {"method": "learned", **dataclasses.asdict(chosen), "images": options["images"],
            "network": _given(options, given, "network", None), "weights": _given(options, given, "weights", None)}


def deconvnet_settings(options, given):
    """`invert --method deconvnet`: the bundled images and every pooling layer unless given."""
    chosen = dataclasses.replace(
        defaults.INVERT_DECONVNET, images=_given(options, given, "images", defaults.INVERT_DECONVNET.images),
        layers=(options["layer"],) if "layer" in given else (), channels=options["channels"], top=options["top"],
        size=options["size"], batch_size=options["batch_size"], data_cache=options["data_cache"])
    return {"method": "deconvnet", **dataclasses.asdict(chosen), "network": options["network"],
            "weights": options["weights"]}


def _fields(settings_class, values):
    return settings_class(**{field.name: values[field.name] for field in dataclasses.fields(settings_class)})


def learned_step(context, prepared, items):
    settings = context.settings
    later("inversion.learned:invert_learned")(
        _fields(defaults.LearnedInversionSettings, settings), settings["images"], context.run, settings["network"],
        settings["weights"], seed=context.seed, echo=context.echo)
    return {}


def deconvnet_step(context, prepared, items):
    settings = context.settings
    later("inversion.deconvnet:invert_deconvnet")(
        settings["network"], settings["weights"], context.run, _fields(defaults.DeconvnetSettings, settings),
        seed=context.seed, show_progress=context.show_progress, echo=context.echo)
    return {}


def deconvnet_estimates(settings, seed):
    return later("inversion.deconvnet:deconvnet_estimates")(
        settings["network"], _fields(defaults.DeconvnetSettings, settings), seed=seed)


def nothing(context):
    """A setup with nothing to build ahead (the step builds what it needs)."""


INVERT_OPTIMISE = Experiment(
    "invert", defaults.InvertSettings, INVERT_SUMMARY, method="optimise",
    options=(_INVERTED, (defaults.InvertSettings, ("preset", "steps", "learning_rate", "to", "cache", "shard"),
                         "optimise: ")),
    check=checks.invert, setup=later("recipes.invert:setup"),
    step=later("recipes.invert:step"), batch=None, estimate=later("recipes.invert:invert_estimates"), partial=True,
)
INVERT_LEARNED = Experiment(
    "invert", defaults.LearnedInversionSettings, method="learned", build=learned_settings, named=False,
    options=(_INVERTED, (defaults.LearnedInversionSettings, ("stack",), "learned: "), _BATCH),
    check=checks.learned, setup=nothing, step=learned_step,
)
INVERT_DECONVNET = Experiment(
    "invert", defaults.DeconvnetSettings, method="deconvnet", build=deconvnet_settings, named=False,
    options=(_INVERTED, _BATCH, (defaults.DeconvnetSettings, ("channels", "top", "data_cache"), "deconvnet: ")),
    check=checks.deconvnet, setup=nothing, step=deconvnet_step, estimate=deconvnet_estimates,
)
INVERT_HELP = ("optimise: Mahendran & Vedaldi from noise; learned: through a trained `stack`; deconvnet: Zeiler & "
               "Fergus projections of the strongest activations.")


# What each method of a command is, and the options refused with a method that does not take them.
METHODS = {"invert": (INVERT_HELP, ("to",))}


# --- training: a whole-run step, resumed from its last checkpoint ------------------------------------------


def stack_train(context, resume):
    later("recipes.stack:train_stack")(context.settings, context.run, seed=context.seed, resume=resume,
                                       show_progress=context.show_progress, echo=context.echo)


def denoise_train(context, resume):
    later("recipes.denoise:train_denoiser")(context.settings, context.run, seed=context.seed, resume=resume,
                                            show_progress=context.show_progress, echo=context.echo)


def describe_train(context, resume):
    later("recipes.describe:train")(context.settings, context.run, seed=context.seed, echo=context.echo,
                                    show_progress=context.show_progress, resume=resume)


def denoise_validate(settings):
    """Fails on an unknown model or corruption, a bad patch size or loss, or a corruption of paired data."""
    later("recipes.denoise:resolve")(settings)
    if (settings.data is not None and settings.corruption is not None
            and later("restoration.data:is_paired_folder")(settings.data)):
        raise DeepRestoreError(f"--corruption {settings.corruption} does not apply to the HPatches pairs in "
                                   f"'{settings.data}'; their _noise twins are the inputs. Expected no --corruption.")


def describe_check(settings):
    """Fails before any work when denoised inputs lack a denoiser, or it is not a model of 32x32 gray patches."""
    import click

    wanted = {settings.inputs, getattr(settings, "train_inputs", None)}
    if "denoised" in wanted and settings.denoiser is None:
        raise click.BadParameter("--inputs/--train-inputs denoised need --denoiser PATH.", param_hint="--denoiser")
    if "denoised" in wanted:
        checks.denoiser(settings.denoiser)


def describe_validate(settings):
    describe_check(settings)
    later("recipes.describe:steps_per_epoch")(settings.triplets, settings.batch_size)


def describe_epochs(context, options):
    """Turns the old `--epochs N` into `--steps`: N epochs of `--triplets // --batch-size` steps (those
    of the resumed run unless given)."""
    import click

    from deeprestore.options import given_options
    from deeprestore.rundir import RunDir

    epochs = options.pop("epochs", None)
    if epochs is None:
        return
    given = given_options(context, options)
    if "steps" in given:
        raise DeepRestoreError(f"Got --epochs {epochs} and --steps {options['steps']}; expected one (--epochs is the "
                               "old spelling of --steps).")
    sizes = {name: options[name] for name in ("triplets", "batch_size")}
    if options.get("resume") is not None:
        stored = RunDir.open(options["resume"]).config.get("settings") or {}
        sizes = {name: value if name in given else stored.get(name, value) for name, value in sizes.items()}
    options["steps"] = epochs * later("recipes.describe:steps_per_epoch")(sizes["triplets"], sizes["batch_size"])
    context.set_parameter_source("steps", click.core.ParameterSource.COMMANDLINE)


def _epochs_option(function):
    import click

    return click.option("--epochs", type=click.IntRange(min=1), default=None, hidden=True,
                        help="Old spelling of the training length: --steps of that many epochs.")(function)


STACK = Experiment(
    "stack", defaults.StackSettings,
    "Train inversion modules that reconstruct a layer's input from its output, stacked to go deep.",
    check=checks.stack, train=stack_train,
)
DENOISE_TRAIN = Experiment(
    "denoise train", defaults.DenoiseSettings,
    "Train a restoration model on corrupted patches; writes model.keras, curves and a score table.",
    check=checks.denoise_train, train=denoise_train, validate=denoise_validate, stored_key="resolved",
)
DESCRIBE_TRAIN = Experiment(
    "describe train", defaults.DescribeSettings,
    "Train seed 004's descriptor; mAP after every epoch, checkpoints, results.json/txt/png.",
    train=describe_train, check=describe_check, validate=describe_validate, extra=(_epochs_option,),
    prepare=describe_epochs,
)

DENOISE_APPLY = Experiment(
    "denoise apply", defaults.DenoiseApplySettings,
    "Restore images of any size with a trained model; with clean references, score them.",
    check=checks.denoise_apply, validate=later("recipes.denoise_apply:validate"),
    setup=later("recipes.denoise_apply:setup"), step=later("recipes.denoise_apply:step"),
)

# Every experiment, in the order `--help` lists them.
EXPERIMENTS = (DREAM, STYLE, TEXTURE, INVERT_OPTIMISE, INVERT_LEARNED, INVERT_DECONVNET, STACK, DENOISE_TRAIN,
               DENOISE_APPLY, DESCRIBE_TRAIN)
