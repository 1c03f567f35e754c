"""Restoration: train a denoiser or inpainter on corrupted patches, and apply it to whole images.

Reference:
    Hassan, 2019 (seed 004): the U-Net and DnCNN denoisers of N-HPatches. Mesana, 2017 (seed 001): a
    convolutional autoencoder filling in a missing middle.

`train_denoiser` trains a registered model through `deeprestore.training.train` (Keras `fit`,
checkpoints, exact resume), saves `model.keras`, draws the loss curves and scores the model on held-out material against
the corrupted input and scikit-image's classical methods. `denoise apply` (`recipes.denoise_apply`)
restores images of any size with a saved model, with the loading helpers here.
"""

import dataclasses
import pathlib

import keras
import numpy as np

from deeprestore import images as image_io
from deeprestore.backend import DataParallel
from deeprestore.errors import DeepRestoreError
from deeprestore.losslog import LossLog, plot_curves
from deeprestore.recipes import checks
from deeprestore.recipes.common import notifier
from deeprestore.restoration import corruptions, data, models
from deeprestore.restoration.curves import LearningCurve
from deeprestore.restoration.report import Material, score
from deeprestore.training import Every, ProgressBar, Schedule, Storage, TensorBoardCallback, read_state, train

MODEL_FILE = checks.DENOISER_FILE
# Where the learning curve on the held-out images goes (`restoration.curves`).
CURVE_DIRECTORY = "curves"
# Patches scored when the held-out material is patches rather than a whole image.
EVALUATION_PATCHES = 64


def resolve(settings):
    """The settings with every `None` replaced by the model's own training default, checked.

    Raises:
        DeepRestoreError: Unknown model or corruption, a patch size that is not a multiple of 4, a
            loss the model's output cannot take, or a `--held-out` image that does not exist.
    """
    spec = models.get_spec(settings.model)
    filled = {field: getattr(spec.defaults, field) for field in dataclasses.asdict(spec.defaults)
              if hasattr(settings, field) and getattr(settings, field) is None}
    resolved = dataclasses.replace(settings, **filled)
    if resolved.patch_size % models.SIZE_MULTIPLE:
        raise DeepRestoreError(f"--patch-size {resolved.patch_size} is not a multiple of {models.SIZE_MULTIPLE}; "
                               "expected e.g. 32 or 40.")
    models.check_loss(resolved.loss, spec.name, spec.output)
    corruptions.parse(resolved.corruption)
    if resolved.curve_every:
        for entry in resolved.held_out:
            if str(entry) not in image_io.SAMPLES and not pathlib.Path(str(entry)).exists():
                raise DeepRestoreError(f"--held-out '{entry}' not found; expected an image file, a folder of images "
                                       f"or a bundled sample ({', '.join(image_io.SAMPLES)}).")
    return resolved


def load_data(settings, seed):
    """The training `PatchData` and, for image data, the corruption; pairs come corrupted already."""
    sampling = data.Sampling(settings.batch_size, seed, settings.validation_fraction, settings.validation_batches)
    if settings.data is not None and data.is_paired_folder(settings.data):
        if settings.channels != 1:
            raise DeepRestoreError(f"HPatches pairs in '{settings.data}' are grey; got --channels {settings.channels}, "
                                   "expected 1.")
        clean, noisy, names = data.read_pairs(settings.data)
        return data.PatchData.from_pairs(clean, noisy, sampling, names=names), None
    if settings.data is None:
        sources = tuple(name for name in image_io.SAMPLES if name not in settings.held_out)
    else:
        sources = image_io.list_images(settings.data)
    clean = [data.to_channels(image_io.load_image(source), settings.channels, source) for source in sources]
    corruption = corruptions.parse(settings.corruption)
    patches = data.PatchData.from_images(clean, settings.patch_size, corruption, sampling, names=sources)
    return patches, corruption


def train_denoiser(settings, run, seed=0, resume=False, show_progress=True, echo=print):
    """Trains a restoration model into a run: checkpoints, losses, `model.keras`, curves and a score table.

    Args:
        settings: A `DenoiseSettings` (`None` fields take the model's defaults).
        run: The `RunDir`; with `resume`, one that holds checkpoints.
        seed: Seed of the weights, the patches and the corruption.
        resume: Continue from the run's last checkpoint.
        show_progress: Whether to show a progress bar.
        echo: Where the score table and notices go.

    Returns:
        The score rows (see `evaluation.compare`).
    """
    settings = resolve(settings)
    spec = models.get_spec(settings.model)
    parallel = DataParallel(settings.devices)
    parallel.check_batch(settings.batch_size)
    patches, corruption = load_data(settings, seed)
    with parallel.scope():  # the weights and the optimiser's state live on every device
        model = models.create_model(settings.model, settings.channels, seed=seed)
        models.compile_model(model, settings.loss, settings.optimiser, settings.learning_rate, settings.momentum,
                             output=spec.output, decay_steps=settings.steps if settings.schedule == "cosine" else None)
    run.update_config(resolved=dataclasses.asdict(settings), task=spec.task, data=patches.description,
                      trainable_parameters=models.trainable_parameters(model), devices=list(parallel.devices))
    schedule = Schedule(steps=settings.steps, checkpoint_every=settings.checkpoint_every,
                        validate_every=settings.validate_every, keep_every=settings.keep_every)
    callbacks = [ProgressBar(f"denoise {settings.model}", show_progress)]
    curve = learning_curve(settings, run, model, corruption, seed, resume)
    if curve is not None:
        callbacks.append(Every(settings.curve_every, lambda step: curve.record(model, step), settings.steps))
    if settings.tensorboard:
        samples = patches.validation()[0]
        callbacks.append(TensorBoardCallback(
            run.path / "tensorboard", settings.validate_every, settings.steps,
            images=lambda: {"corrupted": samples[0][:4], "restored": model.predict(samples[0][:4], verbose=0),
                            "clean": samples[1][:4]}))
    train(model, patches.batch, schedule, Storage(run.checkpoints_dir, run.losses_dir, resume),
          validation=patches.validation, parallel=parallel, callbacks=callbacks)
    model.save(run.path / MODEL_FILE)
    plot_training_curves(run, settings.loss)
    if curve is not None:
        curve.plot(", ".join(curve.names))

    if corruption is None:  # HPatches pairs: score the validation patches
        inputs, targets = (np.concatenate(part)[:EVALUATION_PATCHES] for part in zip(*patches.validation()))
        material = Material(inputs, targets, spec.task, whole=False)
    elif corruption.task == "inpaint":  # holes only make sense at the scale of the training patches
        targets = held_out_patches(settings, EVALUATION_PATCHES)
        inputs = np.stack([corruption(target, rng=(seed, index)) for index, target in enumerate(targets)])
        material = Material(inputs, targets, corruption.task, whole=False, corruption=corruption)
    else:
        clean = data.to_channels(image_io.load_image(settings.test_image, settings.test_size or None),
                                 settings.channels, settings.test_image)
        material = Material(corruption(clean, rng=seed)[None], clean[None], corruption.task, whole=True,
                            corruption=corruption)
    rows = score(model, run, material, settings.baselines, echo)
    warning = unlearned_warning(rows, settings, spec)
    if warning:
        notifier(run, echo)(warning)
    return rows


def learning_curve(settings, run, model, corruption, seed, resume):
    """The run's `LearningCurve` on the held-out images (scored before the first step), or None: no
    `--curve-every`, or no noise to remove (HPatches pairs, inpainting)."""
    if not settings.curve_every or corruption is None or corruption.task != "denoise":
        return None
    state = read_state(run.checkpoints_dir) if resume else None
    sources = [source for entry in settings.held_out for source in image_io.list_images(entry)]
    clean = {pathlib.Path(source).stem: data.to_channels(image_io.load_image(source, settings.test_size or None),
                                                         settings.channels, source) for source in sources}
    curve = LearningCurve(run.path / CURVE_DIRECTORY, clean, corruption, seed=seed, baselines=settings.baselines,
                          start=state["step"] if state else 0)
    if not curve.rows:
        curve.record(model, 0)
    return curve


def unlearned_warning(rows, settings, spec):
    """A warning when the trained model restores no better than leaving the input alone (the score table's
    `input` row), the sign of a run too short to learn; None otherwise."""
    scores = {row["method"]: row["psnr"] for row in rows}
    if "model" not in scores or scores["model"] > scores.get("input", -np.inf):
        return None
    return (f"Warning: after {settings.steps} steps the {settings.model} model restores no better than its input "
            f"({scores['model']:.2f} dB against {scores['input']:.2f} dB): it has not learned yet; expected more "
            f"--steps (its default is {spec.defaults.steps}).")


def held_out_patches(settings, count):
    """Up to `count` non-overlapping patches of the test image, row by row."""
    image = data.to_channels(image_io.load_image(settings.test_image, settings.test_size or None),
                             settings.channels, settings.test_image)
    side = settings.patch_size
    found = [image[top:top + side, left:left + side] for top in range(0, image.shape[0] - side + 1, side)
             for left in range(0, image.shape[1] - side + 1, side)]
    if not found:
        raise DeepRestoreError(f"Test image '{settings.test_image}' is smaller than a {side}x{side} patch; "
                               "expected a larger --test-image or --test-size.")
    return np.stack(found[:: max(1, len(found) // count)][:count])


def plot_training_curves(run, loss):
    """Draws every logged term (`losses/losses.png`) and training against validation loss (`curves.png`)."""
    LossLog(run.losses_dir).plot()
    log = LossLog(run.losses_dir)
    curves = {part: tuple(zip(*log.values(f"{part}.loss"))) for part in ("train", "validation")}
    plot_curves(run.path / "curves.png", {part: curve for part, curve in curves.items() if curve},
                title=f"{loss} loss", xlabel="step", ylabel=loss)


def load_model(source):
    """A saved restoration model and its run's config (empty for a bare `.keras` file).

    Raises:
        DeepRestoreError: Neither a run directory with `model.keras` nor a readable `.keras` file.
    """
    path = pathlib.Path(source)
    config = {}
    if path.is_dir():
        from deeprestore.rundir import RunDir

        config = RunDir.open(path).config
        if not (path / MODEL_FILE).is_file():
            raise DeepRestoreError(f"Run '{path}' has no {MODEL_FILE}; expected a finished `denoise train` run "
                                   f"(its status is '{(path / 'status').read_text().strip()}').")
        path = path / MODEL_FILE
    elif not path.is_file():
        raise DeepRestoreError(
            f"Model '{source}' not found; expected a `denoise train` run directory or a .keras file.")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)  # never unpickle a Lambda
    except Exception as error:  # Keras raises many types for a file that is not a model
        raise DeepRestoreError(f"Model '{path}' could not be loaded ({' '.join(str(error).split())[:160]}); "
                               "expected a Keras .keras file.") from None
    return model, config


def input_image(source, channels, grey, size):
    """Loads an image with the channels a model takes; a colour image becomes grey only when asked.

    Raises:
        DeepRestoreError: A colour image for a one-channel model without `grey`.
    """
    image = image_io.load_image(source, size or None)
    if channels == 1 and not grey and not data.is_grey(image):
        raise DeepRestoreError(f"Image '{source}' is in colour (3 channels); the model takes 1 (grey). Expected a "
                               "grey image, or pass --grey to convert it.")
    return data.to_channels(image, channels, source)


def material_of(settings, source, clean_source, channels, corruption, task, seed):
    """One input as `Material`: corrupted here (then it is its own clean reference), or with its clean image."""
    image = input_image(source, channels, settings.grey, settings.size)
    clean = None
    if corruption is not None:
        clean, image = image, corruption(image, rng=seed)
    elif clean_source:
        clean = input_image(clean_source, channels, settings.grey, settings.size)
        if clean.shape != image.shape:
            raise DeepRestoreError(f"Clean image '{clean_source}' is {clean.shape[1]}x{clean.shape[0]}; expected the "
                                   f"size of '{source}', {image.shape[1]}x{image.shape[0]}.")
    return Material(image[None], None if clean is None else clean[None], task, whole=True, corruption=corruption)
