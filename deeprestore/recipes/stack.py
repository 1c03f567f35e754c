"""Training a stack of inversion modules: data, activations, the training model, figures and metrics.

The images are resized once into an HDF5 dataset and the frozen network's activations of the layers
the modules read are cached beside it; each step then reads a seeded batch of cached activations,
from memory or, for caches too large for it, from HDF5 in block-shuffled chunks (`batches(step)`
depends only on the step, so a resumed run sees the batches an uninterrupted one would). Training
goes through `deeprestore.training.train` (Keras `fit`); every `validate_every` steps and at the end
the validation losses are logged, the modules saved to `modules/` and the chain's reconstructions of
a few validation images drawn into `images/validation-<step>.png` (and, with `--tensorboard`, into
the run's TensorBoard events).

Reference:
    Dosovitskiy & Brox, 2016. Inverting visual representations with convolutional networks.
    Harder, 2017. Deep restoration (MSc thesis progress reports, seed 000).
"""

import functools
import pathlib

import numpy as np

from deeprestore import figures, training
from deeprestore.backend import DataParallel
from deeprestore.datasets import ActivationStore, BlockShuffledBatches, ImageDataset, source_fingerprint
from deeprestore.errors import DeepRestoreError
from deeprestore.inversion import metrics
from deeprestore.inversion.specs import IMAGE_LAYER, check_specs, default_specs, load_specs
from deeprestore.inversion.stack import Stack, layer_scales, modules_directory
from deeprestore.losslog import LossLog, plot_curves
from deeprestore.networks import create_network

# Cached activations up to this size are read into memory; larger ones are read from HDF5 in chunks of
# at most CHUNK_BYTES, each made of blocks of consecutive images, a batch drawing on BLOCKS_PER_BATCH
# blocks or more.
IN_MEMORY_BYTES = 2 << 30
CHUNK_BYTES = 64 << 20
BLOCKS_PER_BATCH = 4
# Above this many loss terms (per-channel losses) only the per-module and per-channel plots are drawn:
# one subplot per term would take minutes to draw and be unreadable.
MAX_PLOTTED_TERMS = 24
# Training images whose activations set each layer's normalising scale.
SCALE_IMAGES = 256


def stack_specs(settings, network):
    """The module specs of a run: the spec file, or the default chain from `source` to `target`."""
    if settings.modules:
        return load_specs(settings.modules)
    return default_specs(network, settings.source, settings.target, settings.module_type)


def prepare_data(settings, network, layers, directory, seed=0, show_progress=False):
    """Builds (or reuses) the resized dataset and the cached activations of `layers`.

    Returns:
        `(dataset, store, train_indices, validation_indices)`.
    """
    size = (settings.size, settings.size)
    fingerprint = source_fingerprint(settings.images, size)
    dataset = ImageDataset.build(directory / f"images-{fingerprint[:16]}.h5", settings.images, size, show_progress)
    store = ActivationStore(directory / f"activations-{fingerprint[:16]}-{network.slug}-{network.weights.sha256[:12]}",
                            dataset, network)
    store.ensure(layers, batch_size=settings.batch_size, show_progress=show_progress)
    train_indices, validation_indices = dataset.split(settings.validation, seed)
    return dataset, store, train_indices, validation_indices


def batch_source(stack, mode, store, train_indices, batch_size, seed, in_memory_bytes=None):
    """`batches(step) -> (inputs, targets)` of training images' cached activations of the layers the
    training model of `mode` reads (`Stack.layers_needed`).

    A cache that fits in `in_memory_bytes` (default `IN_MEMORY_BYTES`) is loaded once and each step
    draws a seeded random batch; a larger one is read from HDF5 in block-shuffled chunks
    (`BlockShuffledBatches`), since reading scattered rows from disk every step is slower than
    recomputing the network.

    Returns:
        `(batches, read, model_inputs, batching)`: `read(indices)` reads any rows, `model_inputs` are
        the layers the model takes, `batching` is `random` or `block-shuffled`.
    """
    layers = stack.layers_needed(mode)
    model_inputs = tuple(dict.fromkeys(stack.resolved.input_layer[name] for name in stack.names
                                       if mode == "separate" or not stack.resolved.takes_module(name)))

    def split(values):
        return ({layer: values[layer] for layer in model_inputs},
                {name: values[stack.resolved.target_layer[name]] for name in stack.names})

    if store.nbytes(layers) <= (IN_MEMORY_BYTES if in_memory_bytes is None else in_memory_bytes):
        cached = store.load(layers)

        def read(indices):
            return {layer: cached[layer][indices] for layer in layers}

        def batches(step):
            rng = np.random.default_rng([seed, step])
            return split(read(np.sort(rng.choice(train_indices, size=min(batch_size, len(train_indices)),
                                                 replace=False))))

        return batches, read, model_inputs, "random"

    read = functools.partial(store.read, layers)
    row_bytes = store.nbytes(layers) / len(store.dataset)
    blocks = BlockShuffledBatches(read, train_indices, batch_size, block_rows=max(1, batch_size // BLOCKS_PER_BATCH),
                                  chunk_steps=int(CHUNK_BYTES // (batch_size * row_bytes)), seed=seed)
    return (lambda step: split(blocks(step))), read, model_inputs, "block-shuffled"


def train_stack(settings, run, seed=0, resume=False, show_progress=True, echo=print):
    """Trains the modules of a stack and writes modules, losses, figures and metrics into a run.

    Args:
        settings: A `StackSettings`.
        run: The `RunDir`; with `resume`, a run of the same settings to continue.
        seed: Seed of the initial weights, the validation split and the batches.
        resume: Continue from the run's last checkpoint.
        show_progress: Whether to show progress bars.
        echo: Where one-line notices go.

    Returns:
        The last validation losses `{name: value}`.

    Raises:
        DeepRestoreError: Bad specs, data or settings; `training.Interrupted` on a signal.
    """
    network = create_network(settings.network, settings.weights, seed=seed)
    network.weights.tell(echo, run.note)
    size = (settings.size, settings.size)
    resolved = check_specs(network, stack_specs(settings, network), size)
    mode = "joint" if settings.mode == "fine-tune" else settings.mode
    if settings.mode == "fine-tune" and not settings.init:
        raise DeepRestoreError("Mode fine-tune needs --init RUN, a stack run whose modules to start from.")
    layers = Stack(network, resolved, {}).layers_needed(mode)
    data = pathlib.Path(settings.data_cache) if settings.data_cache else run.path / "data"
    dataset, store, train_indices, validation_indices = prepare_data(settings, network, layers, data, seed,
                                                                    show_progress)
    parallel = DataParallel(settings.devices)
    parallel.check_batch(min(settings.batch_size, len(train_indices)))
    with parallel.scope():  # the modules and Adam's state live on every device
        stack = Stack.build(network, resolved, seed=seed,
                            scales=layer_scales(store.read(layers, train_indices[:SCALE_IMAGES])))
        if settings.init:
            stack.load_weights(modules_directory(settings.init))
        learning_rate = settings.fine_tune_learning_rate if settings.mode == "fine-tune" else settings.learning_rate
        model = stack.compile(stack.training_model(mode), mode, learning_rate, settings.channel_losses)
    batches, read, model_inputs, batching = batch_source(stack, mode, store, train_indices,
                                                         settings.batch_size, seed)
    validation_values = read(validation_indices)

    def validation():
        for start in range(0, len(validation_indices), settings.batch_size):
            part = {layer: values[start:start + settings.batch_size] for layer, values in validation_values.items()}
            yield ({layer: part[layer] for layer in model_inputs},
                   {name: part[resolved.target_layer[name]] for name in stack.names})

    run.update_config(
        weights=network.weights.as_config(), modules=[spec.as_dict() for spec in resolved.specs], scales=stack.scales,
        loss_weights=stack.loss_weights(mode), layers=list(layers), batching=batching,
        dataset={"path": str(dataset.path), "images": len(dataset), "train": len(train_indices),
                 "validation": len(validation_indices), "fingerprint": dataset.fingerprint},
        devices=list(parallel.devices),
    )
    source = resolved.sources()[0]
    figure_indices = validation_indices[:settings.figure_images]

    def reconstructions():
        return chain_images(stack, source, {source: validation_values[source][:len(figure_indices)]})

    def save_and_draw(step):
        stack.save(run.path / "modules", size, network.weights.sha256)
        images = reconstructions()
        if images is not None:
            figures.save_difference_figure(run.images_dir / f"validation-{step:06d}.png",
                                           dataset.images(figure_indices), images)

    callbacks = [training.ProgressBar(f"stack {settings.mode}", show_progress),
                 training.Every(settings.validate_every, save_and_draw, settings.steps)]
    if settings.tensorboard:
        callbacks.append(training.TensorBoardCallback(
            run.path / "tensorboard", settings.validate_every, settings.steps,
            images=lambda: {} if (images := reconstructions()) is None else {"reconstructions": images}))
    results = training.train(
        model, batches, training.Schedule(settings.steps, settings.checkpoint_every, settings.validate_every,
                                          keep_every=settings.keep_every),
        training.Storage(run.checkpoints_dir, run.losses_dir, resume), validation=validation, parallel=parallel,
        callbacks=callbacks)
    if not (run.path / "modules" / "specs.json").is_file():  # resumed at its last step: nothing trained
        save_and_draw(settings.steps)
    write_summary(run, stack, source, dataset, validation_indices, validation_values, settings.batch_size)
    return results


def chain_images(stack, layer, activations, batch_size=8):
    """RGB [0, 1] reconstructions through the chain from `layer`, or None when it does not reach the image."""
    chain = stack.resolved.chain_from(layer)
    final = [name for name in chain if stack.resolved.target_layer[name] == IMAGE_LAYER]
    if not final:
        return None
    outputs = stack.reconstruct(activations[layer], layer, batch_size)
    return stack.network.spec.deprocess(outputs[final[-1]])


def write_summary(run, stack, source, dataset, validation_indices, validation_values, batch_size):
    """Writes the loss plots (every term, each module's train and validation loss, each channel's error
    where logged) and, when the chain reaches the image, `metrics.json` of the validation
    reconstructions (MSE, PSNR, SSIM) and the figure `reconstructions.png`."""
    log = LossLog(run.losses_dir)
    if len(list(run.losses_dir.glob("*.csv"))) <= MAX_PLOTTED_TERMS:
        log.plot()
    for name in stack.names:
        channels = {path.stem.rsplit("_", 1)[-1]: tuple(zip(*log.values(path.stem)))
                    for path in sorted(run.losses_dir.glob(f"train.{name}_channel_*.csv"))}
        if channels:
            figures.save_channel_heatmap(run.losses_dir / f"channels-{name}.png", channels,
                                         f"{name}: error per channel (train)")
    curves = {}
    for name in stack.names:
        for split in ("train", "validation"):
            values = log.values(f"{split}.{name}_loss")
            if values:
                curves[f"{name} ({split})"] = tuple(zip(*values))
    if curves:
        plot_curves(run.losses_dir / "modules.png", curves, "module losses", "step", "mean squared error")
    reconstructions = chain_images(stack, source, {source: validation_values[source]}, batch_size)
    if reconstructions is None:
        return
    images = dataset.images(validation_indices)
    summary = metrics.summary(images, reconstructions)
    run.save_json("metrics.json", {"source": source, "validation_images": len(images), **summary})
    title = (f"{stack.network.name}: validation images reconstructed from {source} by {len(stack.names)} "
             f"module{'s' * (len(stack.names) != 1)}, mean PSNR {summary['mean']['psnr']:.1f} dB")
    figures.save_difference_figure(run.path / "reconstructions.png", images[:8], reconstructions[:8], title=title)
