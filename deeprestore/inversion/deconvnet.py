"""Zeiler & Fergus's deconvnet: project one activation, or one channel, of a layer back to pixels.

The forward pass records the *switches* of every max-pooling layer (where each window's maximum
was). The projection then runs the layers backwards from the chosen layer: a convolution is undone
by filtering with its transposed filters (no bias), a ReLU by rectifying the signal, max pooling by
*unpooling* each value into its switch (overlapping windows add up), and local response
normalisation is passed through unchanged. Every other activation of the layer is zeroed first.
The result is in the network's input space (for Caffe models mean-subtracted BGR); `display` maps it
to an RGB image with grey for zero.

`invert_deconvnet` is the recipe-level function behind `deeprestore invert --method deconvnet`: over
a set of images it finds each channel's strongest activations (from maxima cached in HDF5) and draws,
per layer, their projections beside the matching receptive-field patches.

Reference:
    Zeiler & Fergus, 2014. Visualizing and understanding convolutional networks. ECCV.
"""

import math
import pathlib

import keras
import numpy as np

from deeprestore import figures, interrupts
from deeprestore.datasets import ActivationStore, ImageDataset, source_fingerprint
from deeprestore.errors import DeepRestoreError
from deeprestore.networks import create_network
from deeprestore.settings import INVERT_DECONVNET

# Layers a projection passes through unchanged (Zeiler & Fergus pass contrast normalisation through).
_PASS_THROUGH = ("LocalResponseNormalization", "Dropout")
# Smallest side, in pixels, a receptive-field cell is drawn at (small fields are enlarged to it).
MIN_CELL = 48


def _pooling_geometry(size, pool, stride, padding):
    """`(output size, padding before, padded size)` of one axis of a pooling window grid."""
    if padding == "valid":
        output = (size - pool) // stride + 1
        return output, 0, size
    output = -(-size // stride)
    total = max((output - 1) * stride + pool - size, 0)
    return output, total // 2, size + total


def switches(inputs, pool_size, strides, padding="valid"):
    """Where each max-pooling window's maximum is: its index `dy * pool + dx` within the window.

    Args:
        inputs: `(batch, height, width, channels)` input of the pooling layer.
        pool_size: Window side.
        strides: Step between windows.
        padding: `valid` or `same` (padding never wins the maximum).

    Returns:
        An int tensor `(batch, out_height, out_width, channels)`; ties go to the first index.
    """
    height, width = inputs.shape[1], inputs.shape[2]
    rows, top, padded_height = _pooling_geometry(height, pool_size, strides, padding)
    columns, left, padded_width = _pooling_geometry(width, pool_size, strides, padding)
    if padded_height != height or padded_width != width:
        lowest = keras.ops.min(inputs) - 1.0
        inputs = keras.ops.pad(inputs - lowest, [(0, 0), (top, padded_height - height - top),
                                                 (left, padded_width - width - left), (0, 0)]) + lowest
    candidates = [inputs[:, dy:dy + (rows - 1) * strides + 1:strides, dx:dx + (columns - 1) * strides + 1:strides]
                  for dy in range(pool_size) for dx in range(pool_size)]
    return keras.ops.argmax(keras.ops.stack(candidates, axis=-1), axis=-1)  # (batch, rows, columns, channels)


def unpool(signal, switch, pool_size, strides, input_shape, padding="valid"):
    """Places each value of `signal` at its window's switch; overlapping windows add up.

    Args:
        signal: `(batch, out_height, out_width, channels)` values to unpool.
        switch: The pooling layer's `switches`.
        pool_size, strides, padding: The pooling layer's.
        input_shape: `(height, width)` of the pooling layer's input.

    Returns:
        A `(batch, height, width, channels)` tensor, zero off the switches.
    """
    height, width = input_shape
    rows, columns, channels = signal.shape[1], signal.shape[2], signal.shape[3]
    _, top, padded_height = _pooling_geometry(height, pool_size, strides, padding)
    _, left, padded_width = _pooling_geometry(width, pool_size, strides, padding)
    result = 0.0
    for dy in range(pool_size):
        for dx in range(pool_size):
            chosen = signal * keras.ops.cast(keras.ops.equal(switch, dy * pool_size + dx), signal.dtype)
            # Zero insertion: each value followed by `strides - 1` zeros along both axes.
            spread = keras.ops.pad(chosen[:, :, None, :, None, :],
                                   [(0, 0), (0, 0), (0, strides - 1), (0, 0), (0, strides - 1), (0, 0)])
            spread = keras.ops.reshape(spread, (-1, rows * strides, columns * strides, channels))
            spread = keras.ops.pad(spread, [(0, 0), (dy, max(padded_height - dy - rows * strides, 0)),
                                            (dx, max(padded_width - dx - columns * strides, 0)), (0, 0)])
            result = result + spread[:, :padded_height, :padded_width]
    return result[:, top:top + height, left:left + width]


def transposed_filtering(signal, layer, input_shape):
    """Filters a convolution layer's output-space signal with its transposed filters, without bias.

    Grouped convolutions (AlexNet) filter each group's channels with that group's filters.

    Args:
        signal: `(batch, out_height, out_width, filters)`.
        layer: The `keras.layers.Conv2D`.
        input_shape: `(height, width)` of the layer's input; rows and columns no window reached stay 0.

    Raises:
        DeepRestoreError: A strided convolution with `same` padding, whose alignment is ambiguous.
    """
    stride, padding = layer.strides[0], layer.padding
    if stride > 1 and padding == "same":
        raise DeepRestoreError(f"The deconvnet cannot undo strided 'same' convolution '{layer.name}'; expected "
                               "valid padding or stride 1.")
    kernel = layer.kernel  # (height, width, channels / groups, filters)
    groups = layer.groups
    per_group = kernel.shape[-1] // groups
    parts = [keras.ops.conv_transpose(signal[..., group * per_group:(group + 1) * per_group],
                                      kernel[..., group * per_group:(group + 1) * per_group],
                                      strides=stride, padding=padding)
             for group in range(groups)]
    result = parts[0] if groups == 1 else keras.ops.concatenate(parts, axis=-1)
    missing_rows, missing_columns = input_shape[0] - result.shape[1], input_shape[1] - result.shape[2]
    if missing_rows or missing_columns:
        result = keras.ops.pad(result, [(0, 0), (0, missing_rows), (0, missing_columns), (0, 0)])
    return result


class Deconvnet:
    """The deconvnet attached to one layer of a network.

    Args:
        network: A `Network` built with max pooling.
        layer: The layer to project from (name or alias).

    Raises:
        DeepRestoreError: The layer is unknown, or a layer below it cannot be undone (average pooling).
    """

    def __init__(self, network, layer):
        self.network = network
        self.layer = network.resolve(layer)
        self.path = []
        for item in network.model.layers[network.layers.index("preprocess") + 2:]:
            kind = type(item).__name__
            if not isinstance(item, (keras.layers.Conv2D, keras.layers.ReLU, keras.layers.MaxPooling2D)) \
                    and kind not in _PASS_THROUGH:
                raise DeepRestoreError(f"The deconvnet cannot undo layer '{item.name}' ({kind}) of "
                                       f"'{network.name}'; expected convolutions, ReLUs, max pooling and LRN "
                                       "(build the network with --pooling max).")
            self.path.append(item)
            if item.name == self.layer:
                break

    def forward(self, images):
        """Runs images up to the layer, recording each pooling layer's input shape and switches.

        Returns:
            `(activations, record)`: the layer's activations and `{pooling layer: (switches, (h, w))}`.
        """
        outputs = self.network.model.get_layer("preprocess")(keras.ops.convert_to_tensor(images, "float32"))
        record = {}
        for item in self.path:
            if isinstance(item, keras.layers.MaxPooling2D):
                record[item.name] = (switches(outputs, item.pool_size[0], item.strides[0], item.padding),
                                     tuple(outputs.shape[1:3]))
            elif isinstance(item, keras.layers.Conv2D):
                record[item.name] = (None, tuple(outputs.shape[1:3]))
            outputs = item(outputs)
        return outputs, record

    def backward(self, signal, record):
        """Projects a signal at the layer back to the network's input space through the recorded
        switches: `(batch, height, width, 3)`."""
        signal = keras.ops.convert_to_tensor(signal, "float32")
        for item in reversed(self.path):
            if isinstance(item, keras.layers.MaxPooling2D):
                switch, shape = record[item.name]
                signal = unpool(signal, switch, item.pool_size[0], item.strides[0], shape, item.padding)
            elif isinstance(item, keras.layers.Conv2D):
                signal = transposed_filtering(signal, item, record[item.name][1])
            elif isinstance(item, keras.layers.ReLU):
                signal = keras.ops.relu(signal)
        return keras.ops.convert_to_numpy(signal)

    def project(self, images, channel, positions=None):
        """Projects one channel of the layer back to the input, every other activation zeroed.

        Args:
            images: `(batch, height, width, 3)` RGB in [0, 1].
            channel: The channel.
            positions: Optional `(batch, 2)` rows and columns: keep only that one activation per image
                (Zeiler & Fergus's projection of a single strong activation) instead of the whole map.

        Returns:
            `(projections, activations)`: projections in input space, `(batch, height, width, 3)`, and
            the layer's activations.
        """
        activations, record = self.forward(images)
        activations = keras.ops.convert_to_numpy(activations)
        signal = np.zeros_like(activations)
        if positions is None:
            signal[..., channel] = activations[..., channel]
        else:
            for index, (row, column) in enumerate(np.asarray(positions)):
                signal[index, row, column, channel] = activations[index, row, column, channel]
        return self.backward(signal, record), activations


def display(projection, bgr=True, percentile=99.5):
    """A projection as an RGB image: zero is grey, and the `percentile`-th largest magnitude reaches 0
    or 1 (larger ones are clipped), so a few extreme pixels do not leave the rest invisible."""
    projection = np.asarray(projection, np.float32)
    projection = projection[..., ::-1] if bgr else projection
    largest = float(np.percentile(np.abs(projection), percentile))
    if largest == 0:
        largest = float(np.abs(projection).max())
    return np.full_like(projection, 0.5) if largest == 0 else np.clip(0.5 + projection / (2 * largest), 0.0, 1.0)


def receptive_field(network, layer, size):
    """The receptive field of the units of `layer` for a `size` `(height, width)` input.

    Returns:
        `(extent, jump, first)`: the side of a unit's field in pixels, the pixels between neighbouring
        units' fields, and the (possibly negative) top-left coordinate of the first unit's field.
    """
    layer = network.resolve(layer)
    shapes = network.output_shapes(*size)
    extent, jump, first, current = 1, 1, 0, size[0]
    for item in network.model.layers[network.layers.index("preprocess") + 2:]:
        if isinstance(item, (keras.layers.Conv2D, keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)):
            kernel = item.kernel_size[0] if isinstance(item, keras.layers.Conv2D) else item.pool_size[0]
            stride = item.strides[0]
            output = shapes[item.name][1]
            before = max((output - 1) * stride + kernel - current, 0) // 2 if item.padding == "same" else 0
            first -= before * jump
            extent += (kernel - 1) * jump
            jump *= stride
            current = output
        if item.name == layer:
            break
    return extent, jump, first


def crop(image, row, column, field, fill=0.5):
    """The `extent` x `extent` patch of `image` seen by unit `(row, column)`, padded with `fill`."""
    extent, jump, first = field
    top, left = first + row * jump, first + column * jump
    padded = np.full((extent, extent, image.shape[-1]), fill, np.float32)
    source = image[max(top, 0):max(top + extent, 0), max(left, 0):max(left + extent, 0)]
    padded[max(-top, 0):max(-top, 0) + source.shape[0], max(-left, 0):max(-left, 0) + source.shape[1]] = source
    return padded


def enlarge(image, extent, smallest=MIN_CELL):
    """Repeats pixels so that a receptive field of `extent` pixels is drawn at least `smallest` wide."""
    factor = max(1, math.ceil(smallest / extent))
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def strongest(maxima, positions, channel, top):
    """Indices and positions of the `top` images whose maximum in `channel` is largest, largest first."""
    order = np.argsort(-maxima[:, channel], kind="stable")[:top]
    return order, positions[order, channel]


def layer_figure(network, layer, dataset, found_maxima, channels, top, batch_size=8):
    """Draws one row per channel: the projections of its `top` strongest activations (in a square grid)
    beside the receptive-field patches of the images they come from; `found_maxima` are the `(maxima,
    positions)` of `ActivationStore.channel_maxima`.

    Returns:
        `(figure, rows)`: the figure array and, per channel, `[(image key, row, column, value), ...]`.
    """
    maxima, positions = found_maxima
    deconvnet = Deconvnet(network, layer)
    field = receptive_field(network, layer, dataset.size)
    side = math.ceil(math.sqrt(top))
    figure_rows, found = [], {}
    for channel in channels:
        interrupts.raise_if_requested()
        indices, spots = strongest(maxima, positions, channel, top)
        images = dataset.images(indices)
        order = np.argsort(indices, kind="stable")  # dataset.images returns sorted indices
        images = images[np.argsort(order, kind="stable")]
        projections = np.concatenate([deconvnet.project(images[start:start + batch_size], channel,
                                                        spots[start:start + batch_size])[0]
                                      for start in range(0, len(images), batch_size)])
        shown = [enlarge(display(crop(projection, *spot, field, fill=0.0), network.spec.bgr), field[0])
                 for projection, spot in zip(projections, spots)]
        patches = [enlarge(crop(image, *spot, field), field[0]) for image, spot in zip(images, spots)]
        grids = [figures.image_grid([cells[start:start + side] for start in range(0, len(cells), side)], gap=1)
                 for cells in (shown, patches)]
        figure_rows.append(grids)
        found[int(channel)] = [
            {"image": dataset.keys[index], "row": int(spot[0]), "column": int(spot[1]),
             "activation": float(maxima[index, channel])} for index, spot in zip(indices, spots)]
    figure = figures.image_grid(
        figure_rows, gap=6, column_titles=("projections", "image patches"), smallest=figures.SMALLEST_PANEL,
        row_titles=[f"channel {channel}" for channel in channels],
        title=f"{network.name} {layer}: each channel's {top} strongest activations (receptive field {field[0]} px)")
    return figure, found


def deconvnet_estimates(network, settings=INVERT_DECONVNET, seed=0):
    """`([(label, Estimate)], batches)` for `--dry-run` of `invert_deconvnet` with `settings`: per layer,
    one forward-and-backward batch stands for a step; the search for maxima is a forward pass (half a
    step) per batch of the dataset, and each channel's projections one step per batch of its `top`
    activations. No weights are loaded.
    """
    images, layers, channels, top = settings.images, settings.layers, settings.channels, settings.top
    size, batch_size = settings.size, settings.batch_size
    from deeprestore.datasets import dataset_length
    from deeprestore.estimate import estimate

    network = create_network(network, "random", "max", seed=seed)
    layers = tuple(network.resolve(layer) for layer in layers) or tuple(
        layer for layer in network.layers if isinstance(network.model.get_layer(layer), keras.layers.MaxPooling2D))
    size = (size, size) if size else tuple(network.spec.input_size)
    count = dataset_length(images)
    rows, batches = [], []
    for layer in layers:
        shown = min(channels, network.output_shapes(*size, layers=[layer])[layer][-1])
        label = f"{layer} ({count} images, {shown} channels)"
        rows.append((label, estimate(network, (layer,), size, batch=batch_size)))
        batches.append(math.ceil(math.ceil(count / batch_size) / 2) + shown * math.ceil(top / batch_size))
    return rows, batches


def invert_deconvnet(network, weights, run, settings=INVERT_DECONVNET, seed=0, show_progress=True, echo=print):
    """Draws Zeiler & Fergus's figures: per layer, the strongest activations' projections and patches.

    Args:
        network: The network's name.
        weights: `auto`, `imagenet`, `offline`, `random` or a path.
        run: The `RunDir` to write into.
        settings: A `DeconvnetSettings`: `images` (`bundled`, a folder or a list file) searched for
            strong activations; `layers` to draw (names or aliases; empty: every max-pooling layer);
            `channels` per layer (the first ones, or a sequence of channel indices); the `top`
            activations per channel; the `size` of the square centre crops (0: the network's input
            size); `batch_size` images per forward pass; `data_cache`, the folder for the resized
            dataset and cached maxima (default: the run's `data/`).
        seed: Seed of random network weights, where those are used.
        show_progress: Whether to show progress bars.
        echo: Where one-line notices go.

    Returns:
        `{layer: {channel: [strongest activations]}}`, also written to `strongest.json`.

    Raises:
        DeepRestoreError: Unknown layers or channels, or unreadable images.
    """
    images, layers, channels, top = settings.images, settings.layers, settings.channels, settings.top
    size, batch_size, data_cache = settings.size, settings.batch_size, settings.data_cache
    network = create_network(network, weights, "max", seed=seed)
    network.weights.tell(echo, run.note)
    layers = tuple(network.resolve(layer) for layer in layers) or tuple(
        layer for layer in network.layers if isinstance(network.model.get_layer(layer), keras.layers.MaxPooling2D))
    size = (size, size) if size else tuple(network.spec.input_size)
    data = run.path / "data" if data_cache is None else pathlib.Path(data_cache)
    fingerprint = source_fingerprint(images, size)
    dataset = ImageDataset.build(data / f"images-{fingerprint[:16]}.h5", images, size, show_progress)
    store = ActivationStore(data / f"activations-{fingerprint[:16]}-{network.slug}-{network.weights.sha256[:12]}",
                            dataset, network)
    run.update_config(weights=network.weights.as_config(), layers=list(layers), size=list(size),
                      dataset={"path": str(dataset.path), "images": len(dataset)})
    if top > len(dataset):
        raise DeepRestoreError(f"Cannot show the top {top} activations of {len(dataset)} images; expected --top at "
                               f"most the number of images.")
    found = {}
    for layer in layers:
        maxima, positions = store.channel_maxima(layer, batch_size, show_progress)
        chosen = range(min(channels, maxima.shape[1])) if isinstance(channels, int) else tuple(channels)
        bad = [channel for channel in chosen if not 0 <= channel < maxima.shape[1]]
        if bad:
            raise DeepRestoreError(
                f"Channel {bad[0]} does not exist in '{layer}'; expected 0 to {maxima.shape[1] - 1}.")
        figure, found[layer] = layer_figure(network, layer, dataset, (maxima, positions), chosen, top, batch_size)
        figures.save_figure(run.path / f"{layer}.png", figure)
    run.save_json("strongest.json", found)
    return found
