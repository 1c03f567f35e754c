"""Pieces the recipes share: the network of a run, cached target features, the optimiser named on the
command line, and the inputs of a run, item by item (what is left to do, where outputs go, seeds)."""

import contextlib
import dataclasses
import os
import pathlib

import keras
import numpy as np

from deeprestore.cache import ActivationCache, MemoryActivationCache
from deeprestore.errors import DeepRestoreError
from deeprestore.experiment import output_name  # noqa: F401 (the recipes' name for it)
from deeprestore.losslog import LossLog
from deeprestore.networks import create_network
from deeprestore.optimise import LBFGS, Adam
from deeprestore.probes import FeatureProbe


@contextlib.contextmanager
def network_precision(precision):
    """Builds the networks made inside it in `precision` (`settings.PRECISIONS`): `bfloat16` is Keras's
    `mixed_bfloat16` policy (weights stay float32, layers compute in bfloat16; `optimise.Engine` casts
    the features back to float32 before the objective), `float32` the usual arithmetic."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def open_network(settings, run, seed, echo, include_top=False):
    """Builds the settings' network in their precision, says which weights it uses, and records them in the run."""
    with network_precision(getattr(settings, "precision", "float32")):
        network = create_network(settings.network, settings.weights, settings.pooling, include_top=include_top,
                                 seed=seed)
    network.weights.tell(echo, run.note)
    run.update_config(weights=network.weights.as_config())
    return network


def notifier(run, echo):
    """`message -> None`: prints a notice with `echo` and records it in the run's `notices.txt`."""

    def notify(message):
        echo(message)
        run.note(message)

    return notify


def resolve_layers(network, layers, kind):
    """Canonical names of the given layers, or of the network's default `kind` layers (`content`, `style`,
    `texture`, `dream`) when none are given; defaults are looked up only then, since a model file may
    declare none."""
    if not layers:
        default = getattr(network.spec.layer_sets, kind)
        layers = (default,) if isinstance(default, str) else default
    return tuple(network.resolve(layer) for layer in layers)


def weights_for(values, count, what):
    """Normalised blend or layer weights: equal when none are given, else one per item, summing to 1.

    Raises:
        DeepRestoreError: The number of weights does not match the number of items.
    """
    if not values:
        return np.full(count, 1.0 / count)
    if len(values) != count:
        raise DeepRestoreError(f"Got {len(values)} {what} weights for {count} {what}s; expected one per {what}.")
    values = np.asarray(values, np.float64)
    if values.sum() <= 0 or (values < 0).any():
        raise DeepRestoreError(f"{what.capitalize()} weights {tuple(values)} must be non-negative with a positive sum.")
    return values / values.sum()


class TargetFeatures:
    """Activations of fixed images (content, style, guide, inversion target), computed once.

    They are stored in an activation cache (see `activation_cache`), keyed by role, source and size,
    with the network (with its pooling and arithmetic), weights hash and preprocessing as attributes,
    so a later run with the same cache reuses them and a run with different weights, `--pooling` or
    `--precision` never does.

    Args:
        network: The `Network`.
        layers: Every layer a target may be needed at.
        cache: An HDF5 cache file (shared, as `--cache`), or a cache from `activation_cache`.
    """

    def __init__(self, network, layers, cache):
        self.network = network
        self.probe = FeatureProbe(network, layers)
        self.cache = ActivationCache(cache) if isinstance(cache, (str, os.PathLike)) else cache

    def __call__(self, role, source, image, layers=None):
        """Returns `{layer: activation}` (no batch axis) of one image."""
        layers = tuple(layers or self.probe.layers)
        try:
            self.network.output_shapes(*image.shape[:2], layers=layers)
        except DeepRestoreError as error:  # say which image, before the network fails on it
            raise DeepRestoreError(f"The {role} image '{source}' ({image.shape[0]}x{image.shape[1]} after resizing): "
                                   f"{error}") from None
        key = f"{role}:{source}@{image.shape[0]}x{image.shape[1]}"
        return self.cache.get_or_compute(
            key, image, layers, lambda batch, missing: self.probe.features(batch),
            network=self.network.computation, weights_sha256=self.network.weights.sha256,
            preprocessing=self.network.spec.describe_preprocessing(),
        )


def activation_cache(settings, run):
    """Where a run keeps the activations of its fixed images: only where the file saves work.

    `--cache FILE` is shared with other runs and processes (locked writes). A named run keeps its own
    `activations.h5` per task, reread when the task is resubmitted. A plain run is never resumed or
    joined, so nothing would read its file again: it keeps them in memory and writes no file.
    """
    if settings.cache:
        return ActivationCache(settings.cache)
    if run.name is not None:
        return ActivationCache(run.activations_path, shared=False)  # the task's owner is its only writer
    return MemoryActivationCache()


def step_rule(optimiser, learning_rate):
    """The step rule for `--optimiser`: L-BFGS-B in [0, 1], or Adam."""
    if optimiser == "lbfgs":
        return LBFGS(bounds=(0.0, 1.0))
    return Adam(learning_rate)


@dataclasses.dataclass(frozen=True)
class Outputs:
    """Where one item's outputs go: the run directory itself for a single image, or
    `items/<NNN_name>/` of the run for each image of a folder or list (see `recipes.dream`, `recipes.denoise_apply`)."""

    path: pathlib.Path

    @property
    def images_dir(self):
        (self.path / "images").mkdir(parents=True, exist_ok=True)
        return self.path / "images"

    @property
    def losses_dir(self):
        (self.path / "losses").mkdir(parents=True, exist_ok=True)
        return self.path / "losses"


def item_rng(seed, position):
    """The random generator of one item: seeded by the run's seed and the item's position, so an item's
    result does not depend on the shard that computes it or the items done before it."""
    return np.random.default_rng([seed, position])


def final_losses(directory):
    """`{term: value}` at the last logged step of each term of a loss-log folder."""
    return {term: float(values[-1]) for term, values in LossLog.read(directory).items() if len(values)}
