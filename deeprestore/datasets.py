"""Image datasets and a network's activations of them, in HDF5, for training on folders of any size.

An `ImageDataset` is one HDF5 file with every image of a source once, centre-cropped to the aspect
of the working size and resized to it, as uint8 `images (count, height, width, 3)` with the images'
keys: decoding and resizing happen once, not every step (seed 000: "resized dataset for runtime
speedups"). An `ActivationStore` is a folder with one HDF5 file per layer holding a frozen network's
activations of every image of a dataset, so training reads targets instead of recomputing the network.
Each file records what produced it (source fingerprint and size; network, weights sha256 and
preprocessing; the layer naming its file names follow, see `deeprestore.layernames`) and is reused
only when all of it matches. Every file is written under a temporary name
and renamed when complete, so a run killed mid-write leaves no file that looks finished.

The source `bundled` is scikit-image's sample photos with crops and horizontal flips: no download.
"""

import contextlib
import errno
import hashlib
import os
import pathlib

import h5py
import numpy as np
from tqdm.auto import tqdm

from deeprestore import images as image_io
from deeprestore import interrupts
from deeprestore.errors import DeepRestoreError
from deeprestore.layernames import LAYER_NAMING

BUNDLED = "bundled"
# Bumped whenever the bundled crops or the resizing change, so stale datasets are rebuilt.
_FORMAT_VERSION = "1"
# Four corner crops of this fraction of the shorter side, besides the full centre crop.
_CORNER_FRACTION = 0.6
BUNDLED_CROPS = 10  # per sample: the centre and four corners, each also flipped


def centre_crop(image, size):
    """Crops the largest centred region of `size`'s aspect ratio and resizes it to `size` `(h, w)`."""
    height, width = image.shape[:2]
    scale = min(height / size[0], width / size[1])
    crop_height, crop_width = max(1, round(size[0] * scale)), max(1, round(size[1] * scale))
    top, left = (height - crop_height) // 2, (width - crop_width) // 2
    return image_io.resize(image[top:top + crop_height, left:left + crop_width], tuple(size))


def dataset_length(source):
    """How many images `ImageDataset.build` makes of a source, without loading them."""
    return len(image_io.SAMPLES) * BUNDLED_CROPS if source == BUNDLED else len(image_io.list_images(source))


def bundled_images(size):
    """The bundled training images: each scikit-image sample's centre crop and four corner crops, each
    also flipped left-right, resized to `size`.

    Returns:
        A list of `(key, image)`.
    """
    found = []
    for sample in image_io.SAMPLES:
        image = image_io.load_image(sample)
        height, width = image.shape[:2]
        side = int(min(height, width) * _CORNER_FRACTION)
        crops = {"centre": image}
        for corner, (top, left) in {"top-left": (0, 0), "top-right": (0, width - side),
                                    "bottom-left": (height - side, 0),
                                    "bottom-right": (height - side, width - side)}.items():
            crops[corner] = image[top:top + side, left:left + side]
        for crop_name, crop in crops.items():
            resized = centre_crop(crop, size)
            found.append((f"{sample}/{crop_name}", resized))
            found.append((f"{sample}/{crop_name}/flipped", resized[:, ::-1]))
    return found


def load_images(sources, size):
    """Loads images from sources (files, bundled samples, folders, list files), centre-cropped to `size`.

    Args:
        sources: One source or a sequence of them; folders and list files expand to their images.
        size: `(height, width)`.

    Returns:
        `(keys, images)`: the source of each image and a float32 `(batch, height, width, 3)` batch.

    Raises:
        DeepRestoreError: A source is missing or unreadable.
    """
    sources = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    keys = [item for source in sources for item in image_io.list_images(source)]
    return keys, np.stack([centre_crop(image_io.load_image(key), tuple(size)) for key in keys])


def source_fingerprint(source, size):
    """A hash of what a dataset is made from: the source's files (names, sizes, times) and the size."""
    digest = hashlib.sha256(f"v{_FORMAT_VERSION}:{size[0]}x{size[1]}:".encode())
    if source == BUNDLED:
        digest.update(b"bundled")
    else:
        for item in image_io.list_images(source):
            path = pathlib.Path(item)
            stat = path.stat() if path.is_file() else None
            digest.update(f"{item}:{stat.st_size if stat else ''}:{stat.st_mtime_ns if stat else ''}\n".encode())
    return digest.hexdigest()


# HDF5's own bytes beside a chunked dataset's values: measured 11 KB for one small dataset (tiny network,
# two images); 16 KiB plus a chunk-index entry per chunk bounds it.
_HDF5_OVERHEAD = 16384
_HDF5_CHUNK_OVERHEAD = 64


def hdf5_bytes(shape, dtype, chunks):
    """An upper bound of the bytes an HDF5 file holding one chunked dataset of `shape` takes on disk."""
    return (int(np.prod(shape)) * np.dtype(dtype).itemsize + _HDF5_OVERHEAD
            + _HDF5_CHUNK_OVERHEAD * int(np.prod([-(-size // chunk) for size, chunk in zip(shape, chunks)])))


def reserve(sizes):
    """Checks that files of `{path: bytes}` fit on their disk together, before HDF5 writes them.

    HDF5 fails in the middle of a write on a full disk or past a file-size limit, prints its own
    tracebacks and can crash the process when the file is closed; so the space is first allocated
    (`posix_fallocate`) for every file at once, which fails cleanly, and then given back: HDF5 opens
    each file anew. Where the file system cannot allocate ahead, nothing is checked.

    Raises:
        DeepRestoreError: The files do not fit, naming the file, the bytes needed and the reason.
    """
    for path, size in sizes.items():
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.posix_fallocate(descriptor, 0, size)
        except OSError as error:
            if error.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                continue  # cannot tell ahead: HDF5 finds out as it writes
            for written in sizes:
                pathlib.Path(written).unlink(missing_ok=True)
            total = sum(sizes.values())
            raise DeepRestoreError(
                f"Storage failed writing '{path}': {error.strerror or error} ({len(sizes)} file"
                f"{'s' * (len(sizes) != 1)} of {total / 2**20:.2f} MiB in all, this one {size / 2**20:.2f} MiB, did "
                "not fit); expected a writable folder with free space (see --runs, --data-cache).") from None
        finally:
            os.close(descriptor)


def write_atomically(path, write, size=None):
    """Calls `write(h5py file)` on a temporary file and renames it to `path` once it is complete.

    With `size` (an upper bound of the file's bytes, see `hdf5_bytes`), the space is reserved first.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    try:
        if size is not None:
            reserve({temporary: size})
        with h5py.File(temporary, "w") as file:
            write(file)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def _attributes(path):
    """The root attributes of an HDF5 file as plain values, or None when it is missing or unreadable."""
    if not pathlib.Path(path).is_file():
        return None
    try:
        with h5py.File(path, "r") as file:
            return {key: (value.tolist() if hasattr(value, "tolist") else value) for key, value in file.attrs.items()}
    except OSError:
        return None


class ImageDataset:
    """Resized images in one HDF5 file, read by index as float32 RGB in [0, 1].

    Args:
        path: A file written by `ImageDataset.build`.
    """

    def __init__(self, path):
        self.path = pathlib.Path(path)
        attributes = _attributes(self.path)
        if attributes is None or "fingerprint" not in attributes:
            raise DeepRestoreError(f"'{self.path}' is not an image dataset; expected an HDF5 file written by "
                                   "deeprestore (delete it to rebuild it).")
        self.fingerprint = attributes["fingerprint"]
        self.size = tuple(attributes["size"])
        with h5py.File(self.path, "r") as file:
            self.keys = tuple(key.decode() if isinstance(key, bytes) else key for key in file["keys"][()])

    @classmethod
    def build(cls, path, source, size, show_progress=False):
        """Returns the dataset of `source` at `size` in `path`, building it unless it already matches.

        Args:
            path: The HDF5 file.
            source: `bundled`, a folder of images, a list file, or one image.
            size: `(height, width)`.
            show_progress: Whether to show a progress bar while resizing.

        Raises:
            DeepRestoreError: The source has no readable images.
        """
        size = tuple(int(value) for value in size)
        fingerprint = source_fingerprint(source, size)
        existing = _attributes(path)
        if existing and existing.get("fingerprint") == fingerprint:
            return cls(path)
        items = bundled_images(size) if source == BUNDLED else image_io.list_images(source)

        def write(file):
            images = file.create_dataset("images", (len(items), *size, 3), dtype=np.uint8, chunks=(1, *size, 3))
            keys = []
            for index, item in enumerate(tqdm(items, desc="resizing images", disable=not show_progress, leave=False)):
                interrupts.raise_if_requested()
                key, image = item if source == BUNDLED else (item, centre_crop(image_io.load_image(item), size))
                images[index] = image_io.to_uint8(image)
                keys.append(key)
            file.create_dataset("keys", data=np.array(keys, dtype=h5py.string_dtype()))
            file.attrs.update(fingerprint=fingerprint, size=list(size), source=str(source), count=len(items))

        key_bytes = sum(len(str(item if source != BUNDLED else item[0]).encode()) + 16 for item in items)
        write_atomically(path, write, size=hdf5_bytes((len(items), *size, 3), np.uint8, (1, *size, 3)) + key_bytes)
        return cls(path)

    def __len__(self):
        return len(self.keys)

    def images(self, indices=None):
        """Float32 RGB [0, 1] images at sorted `indices` (all when None), `(batch, height, width, 3)`."""
        with h5py.File(self.path, "r") as file:
            data = file["images"][()] if indices is None else file["images"][np.sort(indices)]
        return data.astype(np.float32) / 255.0

    def split(self, validation, seed=0):
        """Splits the indices into sorted training and validation indices, `validation` images held out.

        Raises:
            DeepRestoreError: The dataset is too small to hold out `validation` images and train on one.
        """
        if not 0 < validation < len(self):
            raise DeepRestoreError(f"Cannot hold out {validation} validation images from {len(self)}; expected "
                                   f"between 1 and {len(self) - 1}.")
        order = np.random.default_rng(seed).permutation(len(self))
        return np.sort(order[validation:]), np.sort(order[:validation])


class ActivationStore:
    """A network's activations of every image of a dataset: `<folder>/<layer>.h5`, one file per layer.

    Args:
        directory: The folder (created when needed).
        dataset: The `ImageDataset`.
        network: The `Network` whose activations these are.
    """

    def __init__(self, directory, dataset, network):
        self.directory = pathlib.Path(directory)
        self.dataset = dataset
        self.network = network
        self.metadata = {
            "dataset": dataset.fingerprint, "network": network.name, "weights_sha256": network.weights.sha256,
            "preprocessing": network.spec.describe_preprocessing(), "pooling": network.pooling,
            # A file named `block2_conv2.h5` before naming 2 holds the pre-activation: never reused as today's.
            "layer_naming": LAYER_NAMING,
        }

    def path(self, layer, kind="activations"):
        return self.directory / (f"{layer}.h5" if kind == "activations" else f"{layer}.{kind}.h5")

    def has(self, layer, kind="activations"):
        """Whether a complete file for `layer` matches this dataset and network."""
        attributes = _attributes(self.path(layer, kind))
        return attributes is not None and all(attributes.get(key) == value for key, value in self.metadata.items())

    def ensure(self, layers, batch_size=16, dtype="float32", show_progress=False):
        """Computes and stores the activations of every layer in `layers` that is missing or stale.

        The network runs once over the dataset for all missing layers together.

        Returns:
            The layers computed (empty when all were stored).
        """
        from deeprestore.probes import FeatureProbe

        missing = tuple(layer for layer in dict.fromkeys(layers) if not self.has(layer))
        if not missing:
            return ()
        probe = FeatureProbe(self.network, missing)
        size = self.dataset.size
        shapes = {layer: shape[1:] for layer, shape in self.network.output_shapes(*size, layers=missing).items()}
        temporaries = {layer: self.path(layer).with_name(f".{self.path(layer).name}.partial") for layer in missing}
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            reserve({temporaries[layer]: hdf5_bytes((len(self.dataset), *shapes[layer]), dtype, (1, *shapes[layer]))
                     for layer in missing})
            with contextlib.ExitStack() as stack:
                files = {}
                for layer in missing:
                    files[layer] = stack.enter_context(h5py.File(temporaries[layer], "w"))
                    files[layer].create_dataset("activations", (len(self.dataset), *shapes[layer]), dtype=dtype,
                                                chunks=(1, *shapes[layer]))
                chunk = max(batch_size, 64)
                for start in tqdm(range(0, len(self.dataset), chunk), desc="caching activations",
                                  disable=not show_progress, leave=False):
                    interrupts.raise_if_requested()
                    indices = np.arange(start, min(start + chunk, len(self.dataset)))
                    features = probe.features(self.dataset.images(indices), batch_size=batch_size)
                    for layer in missing:
                        files[layer]["activations"][start:start + len(indices)] = features[layer]
                for layer in missing:
                    files[layer].attrs.update(**self.metadata, layer=layer)
            for layer in missing:
                os.replace(temporaries[layer], self.path(layer))
        except BaseException:
            for temporary in temporaries.values():
                temporary.unlink(missing_ok=True)
            raise
        return missing

    def read(self, layers, indices):
        """`{layer: activations at sorted indices}` read from the files, one slice per run of
        consecutive indices (HDF5 pays per selected piece, so blocks of rows read much faster)."""
        indices = np.sort(np.asarray(indices, np.int64))
        runs = np.split(indices, np.flatnonzero(np.diff(indices) != 1) + 1) if len(indices) else []
        values = {}
        for layer in layers:
            with h5py.File(self.path(layer), "r") as file:
                stored = file["activations"]
                values[layer] = (np.concatenate([stored[run[0]:run[-1] + 1] for run in runs]) if runs
                                 else np.zeros((0, *stored.shape[1:]), stored.dtype))
        return values

    def load(self, layers):
        """`{layer: every image's activations}` in memory."""
        values = {}
        for layer in layers:
            with h5py.File(self.path(layer), "r") as file:
                values[layer] = file["activations"][()]
        return values

    def nbytes(self, layers):
        """Bytes the stored activations of `layers` take in memory."""
        total = 0
        for layer in layers:
            with h5py.File(self.path(layer), "r") as file:
                total += file["activations"].size * file["activations"].dtype.itemsize
        return total

    def channel_maxima(self, layer, batch_size=16, show_progress=False):
        """Each image's strongest activation per channel and where it is, computed once and stored.

        Only the maxima are stored (`<layer>.maxima.h5`), not the maps, so large layers and folders
        stay small on disk.

        Returns:
            `(maxima, positions)`: `(count, channels)` float32 values and `(count, channels, 2)` int
            `(row, column)` positions.
        """
        if not self.has(layer, "maxima"):
            from deeprestore.probes import FeatureProbe

            probe = FeatureProbe(self.network, (layer,))
            maxima, positions = [], []
            for start in tqdm(range(0, len(self.dataset), 64), desc=f"maxima of {layer}",
                              disable=not show_progress, leave=False):
                interrupts.raise_if_requested()
                indices = np.arange(start, min(start + 64, len(self.dataset)))
                maps = probe.features(self.dataset.images(indices), batch_size=batch_size)[layer]
                flat = maps.reshape(len(maps), -1, maps.shape[-1])  # (batch, positions, channels)
                best = flat.argmax(axis=1)
                maxima.append(np.take_along_axis(flat, best[:, None], axis=1)[:, 0])
                positions.append(np.stack(np.unravel_index(best, maps.shape[1:3]), axis=-1))

            def write(file):
                file.create_dataset("maxima", data=np.concatenate(maxima).astype(np.float32))
                file.create_dataset("positions", data=np.concatenate(positions).astype(np.int32))
                file.attrs.update(**self.metadata, layer=layer)

            write_atomically(self.path(layer, "maxima"), write)
        with h5py.File(self.path(layer, "maxima"), "r") as file:
            return file["maxima"][()], file["positions"][()]


class BlockShuffledBatches:
    """Step-deterministic batches of rows that an HDF5 file serves in a few contiguous slices.

    Reading scattered rows from HDF5 costs a seek per row, which can be slower than recomputing the
    network; these batches read contiguous blocks instead. The rows (`indices`, sorted) are cut into
    blocks of `block_rows` consecutive ones. Epoch e visits the blocks in an order shuffled by
    `(seed, e)` and cuts the rows in that order into chunks of `chunk_steps` batches; a chunk is read
    at once (one slice per run of consecutive rows) and kept for its steps, and its rows, shuffled by
    `(seed, e, chunk)`, make consecutive batches. An epoch serves `len(indices) // batch_size` batches
    (the rows left over are skipped that epoch). Batch `step` depends only on `step`, so a resumed run
    sees the batches an uninterrupted one would.

    Args:
        read: `sorted indices -> {name: rows}`, e.g. `functools.partial(store.read, layers)`.
        indices: The rows to draw from.
        batch_size: Rows per batch (at most `len(indices)`).
        block_rows: Consecutive rows per block.
        chunk_steps: Batches per chunk read at once.
        seed: Seed of the shuffles.
    """

    def __init__(self, read, indices, batch_size, block_rows, chunk_steps, seed=0):
        self.read = read
        self.indices = np.sort(np.asarray(indices, np.int64))
        if not len(self.indices):
            raise DeepRestoreError("No training rows to draw batches from; expected at least one image.")
        self.batch_size = min(batch_size, len(self.indices))
        self.block_rows = max(1, block_rows)
        self.seed = seed
        self.steps_per_epoch = len(self.indices) // self.batch_size
        self.chunk_steps = max(1, min(chunk_steps, self.steps_per_epoch))
        self._chunk = None  # ((epoch, chunk), values, shuffled positions)

    def epoch_order(self, epoch):
        """The rows epoch `epoch` serves, in order: its shuffled blocks, less the rows left over."""
        starts = np.arange(0, len(self.indices), self.block_rows)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(starts))
        rows = np.concatenate([self.indices[start:start + self.block_rows] for start in starts[order]])
        return rows[:self.steps_per_epoch * self.batch_size]

    def __call__(self, step):
        """`{name: rows}` of batch `step`."""
        epoch, position = divmod(step, self.steps_per_epoch)
        chunk, within = divmod(position, self.chunk_steps)
        if self._chunk is None or self._chunk[0] != (epoch, chunk):
            rows_per_chunk = self.chunk_steps * self.batch_size
            rows = np.sort(self.epoch_order(epoch)[chunk * rows_per_chunk:(chunk + 1) * rows_per_chunk])
            shuffled = np.random.default_rng([self.seed, epoch, chunk]).permutation(len(rows))
            self._chunk = ((epoch, chunk), self.read(rows), shuffled)
        _, values, shuffled = self._chunk
        taken = shuffled[within * self.batch_size:(within + 1) * self.batch_size]
        return {name: rows[taken] for name, rows in values.items()}
