"""An HDF5 cache of the activations of fixed images, reused only when nothing that shaped them changed.

An `ActivationCache` is one HDF5 file with a group per image key and a dataset per layer inside it
(`<group>/block1_conv1`, without the batch dimension). Each group's attributes record what produced
it: the network with its pooling and arithmetic, the sha256 of its weights, the preprocessing, the
layer naming its dataset names were written under (`deeprestore.layernames`: an entry from before
VGG's `block2_conv2` meant the ReLU output has none, so its `block2_conv2`, the pre-activation, is
never served as today's), the image size and the sha256 of the image itself; each dataset carries the
sha256 of its own values. A lookup whose metadata differs in any way, or whose values do not match
their digest (a damaged or tampered entry), discards the entry and recomputes it, so a cache is never
silently wrong.

One file may be shared by any number of processes, on one machine or across an array job's nodes. The
file is never modified in place: a writer takes an exclusive `fcntl` lock on `<file>.lock`, copies the
current file into memory, adds its entries there, writes the result to a temporary file beside it
and renames that over the file. So a reader (which takes no lock) always opens a whole file, before or
after a write; writers take turns and each starts from the latest file, so no write is lost; and a process killed at any
moment leaves the file as it was before or after its write (a leftover temporary copy is removed by
the next writer). HDF5's own file locking is not used: it is unreliable on network file systems,
where POSIX record locks (`fcntl`) are what the NFS lock manager implements. The price is one copy
of the file per write (in memory, then on disk), and writes happen only when targets are first computed.
"""

import contextlib
import dataclasses
import fcntl
import hashlib
import io
import os
import pathlib
import tempfile

import h5py
import numpy as np

from deeprestore.errors import DeepRestoreError
from deeprestore.layernames import LAYER_NAMING

_METADATA_NAMES = ("network", "weights_sha256", "preprocessing", "layer_naming", "image_size", "image_sha256")
# Group names keep letters, digits, `_` and `-`; every other byte (including `/` and `.`, which HDF5
# reads as path syntax) is written as `%XX`, so any key maps to one flat group name and back.
_SAFE_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


@dataclasses.dataclass
class CacheStats:
    """Counts of layer activations served from the cache (hits) and computed (misses)."""

    hits: int = 0
    misses: int = 0
    compute_calls: int = 0


class MemoryActivationCache:
    """`ActivationCache.get_or_compute` for one process, in memory: for a run whose activations no other
    process and no later run reads (a plain run, which cannot be resumed or resubmitted), where a file
    would save no work. An entry is reused only for the same key and metadata, as in the file."""

    def __init__(self):
        self.stats = CacheStats()
        self._entries = {}

    def get_or_compute(self, key, image, layers, compute, *, network, weights_sha256, preprocessing):
        """As `ActivationCache.get_or_compute`."""
        layers = (layers,) if isinstance(layers, str) else tuple(layers)
        image = _checked_image(image)
        metadata = image_metadata(image, network=network, weights_sha256=weights_sha256, preprocessing=preprocessing)
        stored = self._entries.setdefault((key, *sorted(metadata.items())), {})
        missing = tuple(layer for layer in layers if layer not in stored)
        self.stats.hits += len(layers) - len(missing)
        self.stats.misses += len(missing)
        if missing:
            outputs = _checked_outputs(compute(image[None], missing), missing, 1)
            self.stats.compute_calls += 1
            stored.update({layer: outputs[layer][0] for layer in missing})
        return {layer: stored[layer] for layer in layers}


def group_name(key):
    """The HDF5 group name for an image key: `%XX` escapes for every byte outside `[A-Za-z0-9_-]`."""
    if not key:
        raise ValueError("An activation cache key must be a non-empty string")
    return "".join(chr(byte) if byte in _SAFE_BYTES else f"%{byte:02X}" for byte in key.encode("utf-8"))


def image_metadata(image, *, network, weights_sha256, preprocessing):
    """The attributes that must match for cached activations of `image` to be reused."""
    return {"network": str(network), "weights_sha256": str(weights_sha256),
            "preprocessing": str(preprocessing), "layer_naming": str(LAYER_NAMING), **_fingerprint(image)}


def _fingerprint(image):
    image = np.ascontiguousarray(image, dtype=np.float32)  # the same pixels always hash the same
    return {"image_size": tuple(int(size) for size in image.shape[:2]),
            "image_sha256": hashlib.sha256(image.tobytes()).hexdigest()}


class ActivationCache:
    """Activations of fixed images per key and layer, stored in one HDF5 file.

    Args:
        path: the HDF5 file; created on the first write if missing.
        shared: whether other processes may write it at the same time (a `--cache FILE`), so writers lock
            `<file>.lock`; a run's own `activations.h5` has one writer, its owner, and needs no lock file.

    Raises:
        DeepRestoreError: if `path` exists and is not an HDF5 file.
    """

    def __init__(self, path, shared=True):
        self.path = pathlib.Path(path)
        self.shared = shared
        self.stats = CacheStats()
        self._check_is_hdf5()

    def get_or_compute(self, key, image, layers, compute, *, network, weights_sha256, preprocessing):
        """Returns the activations of one image, computing only what the cache lacks.

        Args:
            key: names the image, e.g. its path; any string.
            image: float32 array `(height, width, 3)`.
            layers: tuple of layer names.
            compute: `compute(images, missing_layers) -> {layer: array (batch, ...)}`, called with a
                batch of one image and the layers to compute, only when some are missing or stale.
            network: the network's name, pooling and arithmetic (`Network.computation`).
            weights_sha256: the sha256 of the network's weights.
            preprocessing: a description of the network's preprocessing.

        Returns:
            Dict mapping each layer to its activation array, without the batch dimension.
        """
        return self.get_or_compute_many([key], [image], layers, compute, network=network,
                                        weights_sha256=weights_sha256, preprocessing=preprocessing)[key]

    def get_or_compute_many(self, keys, images, layers, compute, *, network, weights_sha256,
                            preprocessing):
        """Returns the activations of several images, computing what is missing in one call per size.

        All images that need computing and share a size go to `compute` as one batch, with the union
        of their missing layers; each image then stores only the layers it lacked.

        Args:
            keys: distinct image keys.
            images: a batch `(batch, height, width, 3)` or a sequence of `(height, width, 3)` arrays.
            layers, compute, network, weights_sha256, preprocessing: as in `get_or_compute`.

        Returns:
            Dict mapping each key to `{layer: activation array without the batch dimension}`.
        """
        layers = (layers,) if isinstance(layers, str) else tuple(layers)
        keys, images = list(keys), [_checked_image(image) for image in images]
        if len(keys) != len(images) or len(set(keys)) != len(keys):
            raise ValueError(f"Expected one distinct key per image; got {keys} for {len(images)} images")
        metadata = [image_metadata(image, network=network, weights_sha256=weights_sha256,
                                   preprocessing=preprocessing) for image in images]
        results, missing = {}, {}
        with self._reading() as file:
            for key, expected in zip(keys, metadata):
                results[key] = self._read(file, key, layers, expected)
                missing[key] = tuple(layer for layer in layers if layer not in results[key])
        indices_by_size = {}
        for index, key in enumerate(keys):
            self.stats.hits += len(layers) - len(missing[key])
            self.stats.misses += len(missing[key])
            if missing[key]:
                indices_by_size.setdefault(images[index].shape, []).append(index)
        for indices in indices_by_size.values():
            computed_layers = tuple(layer for layer in layers
                                    if any(layer in missing[keys[index]] for index in indices))
            outputs = compute(np.stack([images[index] for index in indices]), computed_layers)
            self.stats.compute_calls += 1
            outputs = _checked_outputs(outputs, computed_layers, len(indices))
            with self._writing() as file:
                for position, index in enumerate(indices):
                    key = keys[index]
                    new = {layer: outputs[layer][position] for layer in missing[key]}
                    self._write(file, key, new, metadata[index])
                    results[key].update(new)
        return {key: {layer: results[key][layer] for layer in layers} for key in keys}

    def contains(self, key, layer, *, image=None, **metadata):
        """Whether a complete entry for `key` holds `layer` and matches the given metadata.

        Args:
            key: the image key.
            layer: a layer name.
            image: if given, its size and content must match too.
            **metadata: any of `network`, `weights_sha256`, `preprocessing`, `layer_naming`, `image_size`,
                `image_sha256`; only the given ones are compared, and `layer_naming` (default: this
                version's) always.
        """
        unknown = set(metadata) - set(_METADATA_NAMES)
        if unknown:
            raise ValueError(f"Unknown cache metadata {sorted(unknown)}; expected {_METADATA_NAMES}")
        metadata.setdefault("layer_naming", LAYER_NAMING)  # a name means its tensor only under one naming
        if image is not None:
            metadata.update(_fingerprint(_checked_image(image)))
        with self._reading() as file:
            group = self._complete_group(file, key)
            if group is None or not _valid_layers(group, (layer,)):
                return False
            stored = _stored_metadata(group)
            return all(stored.get(name) == _normalised(name, value) for name, value in metadata.items())

    def keys(self):
        """The keys of every complete entry, sorted."""
        with self._reading() as file:
            return sorted(str(group.attrs["key"]) for group in file.values()
                          if _is_complete(group) and "key" in group.attrs)

    @contextlib.contextmanager
    def _reading(self):
        """Opens the current file to read, without a lock; a file that does not exist yet yields `{}`."""
        if not self.path.exists():
            yield {}
            return
        self._check_is_hdf5()
        try:
            # Writers only ever rename a whole new file over this one, so no HDF5 lock is needed.
            file = h5py.File(self.path, "r", locking=False)
        except OSError as error:
            raise DeepRestoreError(f"Activation cache '{self.path}' could not be read ({_one_line(error)}); "
                                   "expected a readable HDF5 activation cache.") from None
        with file:
            yield file

    @contextlib.contextmanager
    def _writing(self):
        """Yields a copy of the current file to add entries to, then renames it over the file (see module)."""
        temporary = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._locked():
                self._remove_leftovers()
                self._check_is_hdf5()
                current = self.path.read_bytes() if self.path.exists() else b""
                image = io.BytesIO(current)
                # HDF5 edits the copy in memory: on a full disk the library fails mid-write and can crash
                # when the file is closed, whereas Python's own write below fails cleanly with ENOSPC.
                with h5py.File(image, "a" if current else "w") as file:
                    yield file
                descriptor, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.",
                                                         suffix=".tmp")
                with os.fdopen(descriptor, "wb") as copy:
                    copy.write(image.getbuffer())
                    copy.flush()
                    os.fsync(copy.fileno())
                os.chmod(temporary, 0o644)  # mkstemp makes it private; a shared cache is meant to be read by all
                os.replace(temporary, self.path)
                temporary = None
                _sync(self.path.parent)
        except OSError as error:
            raise DeepRestoreError(f"Activation cache '{self.path}' could not be written ({_one_line(error)}); "
                                   "expected a writable folder with free space. The cache is unchanged.") from None
        finally:
            if temporary is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)

    @contextlib.contextmanager
    def _locked(self):
        """Holds an exclusive POSIX lock on `<file>.lock` (released by the kernel if the process dies).

        The lock file stays: removing it while another writer waits on it would let a third lock a new
        one (and on NFS, unlinking an open file leaves `.nfs*` files behind). An unshared cache locks nothing.
        """
        if not self.shared:
            yield
            return
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.lockf(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(lock, fcntl.LOCK_UN)

    def _remove_leftovers(self):
        """Removes temporary copies of killed writers; called under the lock, when no writer is active."""
        for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                leftover.unlink()

    def _check_is_hdf5(self):
        if self.path.exists() and not (self.path.is_file() and h5py.is_hdf5(self.path)):
            raise DeepRestoreError(f"Activation cache '{self.path}' is not an HDF5 file; expected an "
                                   "HDF5 activation cache or no file (delete it or pass another --cache).")

    def _complete_group(self, file, key):
        group = file.get(group_name(key))
        return group if _is_complete(group) else None

    def _read(self, file, key, layers, expected):
        """The cached layers of `key` whose metadata matches `expected`, as `{layer: array}`.

        An entry whose values do not match their digests, or that is malformed in any way, is missing.
        """
        group = self._complete_group(file, key)
        try:
            if group is None or _stored_metadata(group) != expected:
                return {}
            return _valid_layers(group, [layer for layer in layers if layer in group])
        except (KeyError, TypeError, ValueError, OSError):
            return {}

    def _write(self, file, key, activations, metadata):
        """Adds `activations` to the group of `key`, replacing the group if it is stale or damaged."""
        name = group_name(key)
        group = file.get(name)
        if group is not None and not _reusable(group, metadata):
            del file[name]
            group = None
        if group is None:
            group = file.create_group(name)
            group.attrs["key"] = key
            for attribute, value in metadata.items():
                group.attrs[attribute] = np.array(value) if attribute == "image_size" else value
        # Cleared while datasets are written and set last, so a copy is never renamed into place with a
        # half-written entry marked complete (belt and braces: the rename already makes writes whole).
        group.attrs["complete"] = False
        for layer, activation in activations.items():
            if layer in group:
                del group[layer]
            activation = np.ascontiguousarray(activation)
            group.create_dataset(layer, data=activation).attrs["sha256"] = _digest(activation)
        file.flush()
        group.attrs["complete"] = True


def _is_complete(group):
    try:
        return isinstance(group, h5py.Group) and bool(group.attrs.get("complete", False))
    except (TypeError, ValueError, OSError):
        return False


def _reusable(group, metadata):
    """Whether a group can take more layers: complete, the same metadata, and every dataset intact."""
    try:
        return (_is_complete(group) and _stored_metadata(group) == metadata
                and len(_valid_layers(group, list(group))) == len(group))
    except (KeyError, TypeError, ValueError, OSError):
        return False


def _valid_layers(group, layers):
    """`{layer: array}` of the given layers whose float values match the digest stored with them."""
    valid = {}
    for layer in layers:
        dataset = group.get(layer)
        if not isinstance(dataset, h5py.Dataset) or dataset.dtype.kind != "f":
            continue
        value = dataset[()]
        if str(dataset.attrs.get("sha256", "")) == _digest(value):
            valid[layer] = value
    return valid


def _digest(array):
    array = np.ascontiguousarray(array)
    return hashlib.sha256(f"{array.dtype.str}{array.shape}".encode() + array.tobytes()).hexdigest()


def _sync(path):
    """Flushes a file or folder to disk, so a rename after it never exposes unwritten data."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _one_line(error):
    return " ".join(str(error).split()) or type(error).__name__


def _checked_image(image):
    image = np.ascontiguousarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise DeepRestoreError(f"Image of shape {image.shape} cannot be cached; expected (height, width, 3)")
    return image


def _checked_outputs(outputs, layers, batch_size):
    """`compute`'s outputs as numpy arrays, checked to hold every layer for the whole batch."""
    checked = {layer: np.asarray(outputs[layer]) for layer in layers if layer in outputs}
    shapes = {layer: checked[layer].shape if layer in checked else None for layer in layers}
    if any(shape is None or shape[:1] != (batch_size,) for shape in shapes.values()):
        raise ValueError(f"compute returned shapes {shapes}; expected each layer with batch {batch_size}")
    return checked


def _normalised(name, value):
    return tuple(int(size) for size in value) if name == "image_size" else str(value)


def _stored_metadata(group):
    return {name: _normalised(name, group.attrs[name])
            for name in _METADATA_NAMES if name in group.attrs}
