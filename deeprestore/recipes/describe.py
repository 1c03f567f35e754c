"""Patch descriptors: train seed 004's descriptor on triplets and score descriptors with HPatches.

Reference:
    Hassan, 2019 (seed 004): a HardNet-like descriptor trained with a triplet loss on (denoised)
    N-HPatches, scored by verification, matching and retrieval mAP. Balntas et al., 2017 (HPatches).

`train` draws fresh triplets of tracks from the split's train sequences each epoch, fits the
descriptor through `deeprestore.training.train` (Keras `fit`, step-exact checkpoints of weights,
optimiser and dropout state, so `--resume` continues a run exactly), and evaluates the three mAPs on
the test sequences after every epoch (seed 004's figure 6), writing `results.json`, `results.txt` and
`results.png` into the run as `describe_evaluate.evaluate` does for trained descriptors, baselines and
descriptor CSV folders.
"""

import functools
import math
import pathlib

import keras
import numpy as np

from deeprestore import training
from deeprestore.backend import DataParallel
from deeprestore.descriptors import evaluation, hpatches, model
from deeprestore.errors import DeepRestoreError
from deeprestore.losslog import LossLog, plot_curves
from deeprestore.recipes import checks
from deeprestore.recipes.describe_data import prepare_dataset, prepare_tasks, save_results, split_name

DESCRIPTOR_FILE = checks.DESCRIPTOR_FILE


class PatchSource:
    """The patches a descriptor sees: clean, noisy, or noisy through a denoiser, as float32 32x32."""

    def __init__(self, inputs, denoiser=None):
        if inputs == "denoised" and denoiser is None:
            raise DeepRestoreError("Inputs 'denoised' need a denoiser; "
                                   "expected --denoiser PATH to a saved Keras model.")
        self.inputs = inputs
        self.denoiser = load_denoiser(denoiser) if inputs == "denoised" else None

    def patches(self, sequence, image):
        """`(count, 32, 32)` float32 patches of one image of a sequence."""
        stacks = sequence.images if self.inputs == "clean" else sequence.noisy
        if stacks is None:
            raise DeepRestoreError(f"Sequence '{sequence.name}' has no '_noise' twins; expected them for "
                                   f"inputs '{self.inputs}', or --inputs clean.")
        patches = hpatches.resize_patches(stacks[image], model.PATCH_SIZE)
        if self.denoiser is not None:
            patches = np.clip(np.asarray(self.denoiser.predict(patches[..., None], batch_size=256, verbose=0)),
                              0.0, 1.0).reshape(patches.shape).astype(np.float32)
        return patches


def load_denoiser(path):
    """Loads a saved Keras denoiser and checks that it maps (N, 32, 32, 1) to the same shape."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DeepRestoreError(f"Denoiser '{path}' not found; expected a saved Keras model (.keras).")
    try:
        denoiser = keras.saving.load_model(path, compile=False, safe_mode=True)  # never unpickle a Lambda
    except Exception as error:  # Keras raises many types for a foreign file
        raise DeepRestoreError(f"Denoiser '{path}' could not be loaded ({error}); expected a .keras model.") from None
    patch = (None, model.PATCH_SIZE, model.PATCH_SIZE, 1)
    takes = tuple(denoiser.input_shape) if not isinstance(denoiser.input_shape, list) else None
    if takes is None or len(takes) != 4 or any(size not in (None, want) for size, want in zip(takes[1:], patch[1:])):
        raise DeepRestoreError(f"Denoiser '{path}' takes {denoiser.input_shape}; "
                               f"expected a model of (N, 32, 32, 1) gray patches.")
    try:  # a fully convolutional denoiser declares (None, None, None, 1): ask what a 32x32 patch gives
        shape = tuple(denoiser.compute_output_shape(patch))
    except Exception as error:  # a model that cannot take (N, 32, 32, 1) raises whatever its first layer raises
        raise DeepRestoreError(f"Denoiser '{path}' cannot take patches of shape {patch} ({error}); "
                               f"expected a model of (N, 32, 32, 1) gray patches.") from None
    if shape[1:] != patch[1:]:
        raise DeepRestoreError(f"Denoiser '{path}' outputs {shape} for {patch} patches; expected {patch}.")
    return denoiser


def describe_dataset(descriptor, dataset, names, source):
    """`{sequence: {image: (count, 128) float32}}` for the named sequences.

    Every stack goes through the network in one `predict` call: one call per stack (16 per sequence)
    spent most of an evaluation in per-call overhead.
    """
    stacks = [(name, image, source.patches(dataset[name], image)) for name in names for image in hpatches.IMAGES]
    if not stacks:
        return {}
    descriptors = model.describe_patches(descriptor, np.concatenate([patches for _, _, patches in stacks]))
    described, start = {}, 0
    for name, image, patches in stacks:
        described.setdefault(name, {})[image] = descriptors[start:start + len(patches)]
        start += len(patches)
    return described


def patch_bank(dataset, names, source):
    """All patches of the named sequences as 8-bit grey levels `(patches, 32, 32)` uint8, and their
    tracks `(tracks, 16)`.

    A quarter of float32's memory: clean and noisy patches are 8-bit already (exactly so when no resize
    is needed); resized or denoised ones are rounded to the nearest level. `TripletBatches` turns them
    back into floats in [0, 1] a batch at a time.
    """
    patches, tracks, start = [], [], 0
    for name in names:
        stacks = [np.round(source.patches(dataset[name], image) * 255.0).astype(np.uint8) for image in hpatches.IMAGES]
        count = dataset[name].count
        patches.extend(stacks)
        tracks.append(start + np.arange(len(stacks))[None, :] * count + np.arange(count)[:, None])
        start += count * len(stacks)
    return np.concatenate(patches), np.concatenate(tracks)


class TripletBatches(keras.utils.PyDataset):
    """Batches of triplets `(batch, members, 32, 32, 1)` float32 in [0, 1] gathered from a uint8 patch
    bank, in the order of `indices` `(triplets, members)`, with dummy targets (the triplet losses ignore
    them).

    With `augment` (a seed: a tuple of ints), each triplet is flipped and rotated by a multiple of 90
    degrees, the same for its three patches, drawn from a generator seeded by `augment` and the batch
    number.
    """

    def __init__(self, bank, indices, batch_size, augment=None):
        super().__init__()
        self.bank, self.indices, self.batch_size, self.augment = bank, indices, batch_size, augment

    def __len__(self):
        return math.ceil(len(self.indices) / self.batch_size)

    def __getitem__(self, number):
        rows = self.indices[number * self.batch_size:(number + 1) * self.batch_size]
        triplets = self.bank[rows]
        if self.augment is not None:
            codes = np.random.default_rng([*self.augment, number]).integers(0, 8, len(rows))
            for code in np.unique(codes):  # the eight flips and rotations of the square
                chosen = triplets[codes == code]
                chosen = chosen[..., ::-1] if code & 4 else chosen
                triplets[codes == code] = np.rot90(chosen, k=int(code & 3), axes=(2, 3))
        triplets = triplets.astype(np.float32) / np.float32(255.0)
        return triplets[..., None], np.zeros(len(rows), np.float32)


def member_sets(positives):
    """The track columns positives are drawn from (`None`: any two): per level, the reference and the
    level's images, in `patch_bank`'s column order (`hpatches.IMAGES`)."""
    if positives == "any":
        return None
    return [[0, *(column for column, image in enumerate(hpatches.IMAGES) if image[0] == level)]
            for level in hpatches.LEVELS]


def _optimizer(settings):
    learning_rate = settings.learning_rate or (0.1 if settings.optimiser == "sgd" else 1e-3)
    if settings.schedule == "cosine":  # a function of the optimiser's step count, which checkpoints keep
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, settings.steps)
    if settings.optimiser == "sgd":
        return keras.optimizers.SGD(learning_rate)
    return keras.optimizers.Adam(learning_rate)


def steps_per_epoch(triplets, batch_size):
    """Full batches in an epoch of `triplets` fresh triplets (at least one).

    Raises:
        DeepRestoreError: Fewer triplets than a batch.
    """
    if triplets < batch_size:
        raise DeepRestoreError(f"--triplets {triplets} is fewer than --batch-size {batch_size}; expected at least one "
                               "batch of triplets per epoch.")
    return triplets // batch_size


def triplet_batches(bank, sampler, settings):
    """`batches(step) -> (triplets, dummy targets)`: step `s` is batch `s % n` of epoch `s // n`'s fresh
    triplets (`n` full batches per epoch), a function of the seed and step alone."""
    per_epoch = steps_per_epoch(settings.triplets, settings.batch_size)

    @functools.lru_cache(maxsize=2)
    def epoch_batches(epoch):
        indices = sampler.sample(settings.triplets, epoch, distinct_tracks=settings.loss == "hardest",
                                 batch_size=settings.batch_size, group_count=settings.batch_sequences)
        augment = (sampler.seed, epoch) if settings.augment else None
        return TripletBatches(bank, indices[:, :model.MEMBERS[settings.loss]], settings.batch_size, augment=augment)

    def batches(step):
        epoch, index = divmod(step, per_epoch)
        return epoch_batches(epoch)[index]

    return batches


def train(settings, run, seed=0, echo=print, show_progress=True, resume=False):
    """Trains the descriptor, evaluating it after every epoch, and writes results into the run.

    Training goes through `deeprestore.training.train` (Keras `fit`, step-exact checkpoints); with
    `resume` it continues from the run's last checkpoint.

    Returns:
        The final results dict (see `evaluation.summarise`).
    """
    root = prepare_dataset(settings, run, seed)
    split = hpatches.resolve_split(root, split_name(settings), settings.tasks)
    train_inputs = settings.train_inputs or settings.inputs
    noisy = "clean" not in (settings.inputs, train_inputs)
    dataset = hpatches.load_dataset(root, split.test + split.train, noisy=noisy)
    if not split.train:
        raise DeepRestoreError(f"Split '{split.name}' has no train sequences; expected a split such as a, b, c, "
                               "illum or view.")
    task_lists = prepare_tasks(settings, root, split, dataset, run, seed)
    evaluation_source = PatchSource(settings.inputs, settings.denoiser)
    training_source = (evaluation_source if train_inputs == settings.inputs
                       else PatchSource(train_inputs, settings.denoiser))
    bank, tracks = patch_bank(dataset, split.train, training_source)
    groups = np.repeat(np.arange(len(split.train)), [dataset[name].count for name in split.train])
    sampler = model.TripletSampler(tracks, seed=seed, groups=groups, member_sets=member_sets(settings.positives))
    batches = triplet_batches(bank, sampler, settings)
    per_epoch = steps_per_epoch(settings.triplets, settings.batch_size)

    parallel = DataParallel(settings.devices)
    parallel.check_batch(settings.batch_size)
    run.update_config(devices=list(parallel.devices), steps_per_epoch=per_epoch)
    with parallel.scope():  # the weights and the optimiser's state live on every device
        keras.utils.set_random_seed(seed)
        descriptor = model.descriptor_network(settings.l2_normalise, settings.dropout, seed=seed,
                                              standardise=settings.standardise)
        trainer = model.triplet_model(descriptor, model.MEMBERS[settings.loss])
        trainer.compile(optimizer=_optimizer(settings), loss=model.create_loss(settings.loss, settings.margin))
    log = LossLog(run.losses_dir)
    results = {}

    def evaluate_descriptor(step):
        results["last"] = evaluation.evaluate(describe_dataset(descriptor, dataset, split.test, evaluation_source),
                                              task_lists, split.test)
        summary = results["last"]["summary"]
        log.log(step, {f"map.{task}": value for task, value in summary.items()})
        echo(f"step {step}/{settings.steps} (epoch {step / per_epoch:g}): "
             + ", ".join(f"{task} {value:.3f}" for task, value in summary.items()))

    callbacks = [training.ProgressBar("describe", show_progress),
                 training.Every(per_epoch, evaluate_descriptor, settings.steps)]
    if settings.tensorboard:
        callbacks.append(training.TensorBoardCallback(run.path / "tensorboard", per_epoch, settings.steps))
    training.train(trainer, batches, training.Schedule(settings.steps, settings.checkpoint_every,
                                                       keep_every=settings.keep_every),
                   training.Storage(run.checkpoints_dir, run.losses_dir, resume), parallel=parallel,
                   callbacks=callbacks)
    log.close()
    log.plot()
    _plot_map(run, log)
    descriptor.save(run.path / DESCRIPTOR_FILE)
    if "last" not in results:  # resumed a finished run: evaluate once more for the results files
        evaluate_descriptor(settings.steps)
    echo(save_results(run, {"descriptor": results["last"]}).rstrip())
    return results["last"]


def _plot_map(run, log):
    """Seed 004's figure 6: the three mAPs against the epoch."""
    curves = {}
    for task in ("verification", "matching", "retrieval"):
        values = log.values(f"map.{task}")
        curves[task] = ([step for step, _ in values], [value for _, value in values])
    plot_curves(run.images_dir / "map.png", curves, "mAP on the test sequences", "step", "mAP", logy=False)


def load_descriptor(path):
    """A trained descriptor from a `describe train` run directory or a `.keras` file."""
    path = pathlib.Path(path)
    file = path / DESCRIPTOR_FILE if path.is_dir() else path
    if not file.is_file():
        raise DeepRestoreError(f"Descriptor '{path}' not found; expected a `describe train` run directory "
                               f"(holding {DESCRIPTOR_FILE}) or a .keras file.")
    try:
        descriptor = keras.saving.load_model(file, compile=False, safe_mode=True)  # never unpickle a Lambda
    except Exception as error:  # Keras, h5py and zipfile each raise their own kinds for a foreign file
        raise DeepRestoreError(f"Descriptor '{file}' could not be loaded ({' '.join(str(error).split())[:160]}); "
                               "expected a .keras model saved by `describe train`.") from None
    if not isinstance(descriptor, keras.Model):
        raise DeepRestoreError(f"Descriptor '{file}' holds a {type(descriptor).__name__}; expected a Keras model.")
    return descriptor
