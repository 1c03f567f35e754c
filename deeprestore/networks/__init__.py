"""The network registry: `create_network(name, weights=...)` and `list_networks()`.

Each entry is a `NetworkSpec` (see `base`); a name that is the path of a Keras model file builds that
model instead (see `modelfile`). `create_network` builds the model and loads weights from
`auto`, `imagenet`, `offline`, `random` or a file, never silently: the returned network's `weights`
says where they came from, with the file's sha256.
"""

import hashlib
import pathlib

from deeprestore import architectures
from deeprestore.errors import DeepRestoreError
from deeprestore.networks import alexnet, modelfile, tiny, vgg, weights
from deeprestore.networks.base import POOLINGS, LayerSets, Network, NetworkSpec, WeightsInfo

REGISTRY = {spec.name: spec for spec in (vgg.spec("vgg16"), vgg.spec("vgg19"), alexnet.SPEC, tiny.SPEC)}


def list_networks():
    """Returns the registered network names."""
    return tuple(REGISTRY)


def get_spec(name):
    """Returns the registry entry of a network.

    Raises:
        DeepRestoreError: No network has that name.
    """
    if name not in REGISTRY:
        raise architectures.unknown_network(name)
    return REGISTRY[name]


def create_network(name, weights="auto", pooling="max", include_top=False, seed=0):
    """Builds a registered network and loads its weights.

    Args:
        name: A registered name (`list_networks()`), or the path of a Keras model file with its
            convention file beside it (see `modelfile`).
        weights: `auto` (ImageNet if it can be loaded, else the offline weights where the network has
            them), `imagenet`, `offline`, `random` (seeded), or the path of a weights file. A model file
            takes `auto` (its own weights) or `random`.
        pooling: `max` or `average`.
        include_top: Whether to build the classifier head (fc6, fc7, fc8, prob).
        seed: Seed of random weights.

    Returns:
        A `Network`.

    Raises:
        DeepRestoreError: Unknown network or pooling, or weights that cannot be found or do not fit.
    """
    if modelfile.is_model_path(name):
        return modelfile.create_model_network(name, weights, pooling, include_top, seed)
    spec = get_spec(name)
    if pooling not in POOLINGS:
        raise DeepRestoreError(f"Unknown pooling '{pooling}'; expected one of {', '.join(POOLINGS)}.")
    model = spec.build(pooling, include_top, seed=seed)
    info = load_weights(spec, model, str(weights), include_top, seed)
    return Network(spec, model, info, pooling=pooling, include_top=include_top)


def load_weights(spec, model, choice, include_top, seed):
    """Loads the weights named by `choice` into `model` and says where they came from."""
    if choice == "random" or (choice == "auto" and not spec.trained):
        digest = hashlib.sha256(f"random:{spec.name}:{seed}".encode()).hexdigest()
        notice = f"Using random weights (seed {seed}) for {spec.name}: it has no trained weights to load."
        if choice == "random":
            notice = f"Using random weights (seed {seed}) for {spec.name}, as asked."
        return WeightsInfo("random", None, digest, notice)
    if choice == "imagenet" or (choice == "auto" and spec.imagenet is not None):
        if spec.imagenet is None:
            raise DeepRestoreError(
                f"Keras has no ImageNet weights for '{spec.name}'; pass --weights PATH (for AlexNet a "
                "Caffe-converted bvlc_alexnet.npy, .npz or .h5) or --weights random."
            )
        try:
            path = spec.imagenet(include_top)
        except DeepRestoreError as error:
            if choice == "imagenet" or spec.offline is None:
                raise DeepRestoreError(f"{error} Pass --weights PATH with a local copy.") from None
            return _load_offline(spec, model, include_top, reason=str(error))
        weights.assign(model, weights.read_table(path), spec.weight_aliases, path.name)
        return WeightsInfo("imagenet", str(path), weights.sha256(path), f"Using ImageNet weights from {path}.")
    if choice in ("auto", "offline"):
        if spec.offline is None:
            raise DeepRestoreError(
                f"No weights found for network '{spec.name}': Keras cannot download ImageNet weights for it and "
                "none are bundled; pass --weights PATH with a weights file (.weights.h5, .h5, or a "
                "Caffe-converted .npy/.npz such as bvlc_alexnet.npy) or --weights random."
            )
        return _load_offline(spec, model, include_top)
    path = pathlib.Path(choice)
    weights.assign(model, weights.read_table(path), spec.weight_aliases, path.name)
    return WeightsInfo("file", str(path.resolve()), weights.sha256(path), f"Using weights from {path}.")


def _load_offline(spec, model, include_top, reason=None):
    if include_top:
        raise DeepRestoreError(
            f"The offline weights of '{spec.name}' cover only the convolutional layers; the classifier head "
            "needs --weights imagenet or --weights PATH."
            + (f" (ImageNet weights failed: {reason})" if reason else "")
        )
    path, table, notice = spec.offline()
    weights.assign(model, table, spec.weight_aliases, pathlib.Path(path).name)
    if reason:
        notice = f"{notice} ImageNet weights were not used: {reason}"
    line = f"Using offline weights for {spec.name}, not ImageNet's (details in the run's notices.txt)."
    return WeightsInfo("offline", str(path), weights.sha256(path), notice, line=line)


__all__ = [
    "POOLINGS", "LayerSets", "Network", "NetworkSpec", "WeightsInfo", "create_network", "get_spec", "list_networks",
    "load_weights",
]
