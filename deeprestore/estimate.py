"""Estimates of one image-optimisation step's peak memory and time, from layer shapes, before any work.

An `Estimate` comes from the output shapes of the layers a probe needs for an input size (no weights
are read and nothing is run): FLOPs are those of the convolutions forward plus their input gradient
backward (no weight gradients: the weights stay fixed); memory is the framework's own baseline
(measured once per backend, `FRAMEWORK_BYTES`), the network's weights (as many copies as the backend
holds, `WEIGHT_COPIES`), the activations kept for the backward pass and a gradient buffer, and the
full-size image buffers of the optimisation loop. With
tiles, activations and FLOPs are those of one tile (times the tile count for FLOPs) while the image
buffers stay full size. Time is FLOPs divided by a rate measured once per process with a float32 matrix
product, scaled by `CONVOLUTION_EFFICIENCY`. `--dry-run` prints a table of these.
"""

import dataclasses
import functools
import math
import time

import keras
import numpy as np

from deeprestore.transforms import tile_boxes

BYTES_PER_VALUE = 4  # float32 everywhere
# The optimisation loop keeps about this many full-size copies of the image batch at once: the images,
# a jittered copy, the gradient, the step's result, the octave's base and detail, a blurred copy.
IMAGE_BUFFERS = 8
# Fraction of the matrix-product rate that a whole dream step reaches: 0.8-1.1 measured for VGG16 at
# 224 and 384 px (block3 to block5) with TensorFlow on a 2-core x86 CPU. An estimate, not a promise.
CONVOLUTION_EFFICIENCY = 0.9
# What a process holds before any image work, by Keras backend: the peak resident set size of a process
# that imports deeprestore and runs three compiled steps of the `tiny` network on a 16x16 image (whose
# own tensors are kilobytes), measured by `benchmarks/bench_framework_memory.py` with TensorFlow 2.21 and
# JAX 0.10 on CPU (Keras 3.15, 2-core x86); for JAX, plus the 48 MiB that compiling a real network's step
# adds whatever its size (below).
FRAMEWORK_BYTES = {"tensorflow": 731 * 2**20, "jax": (405 + 48) * 2**20}
# Copies of the weights a backend holds during a step. The same script fits a line through the steps of
# AlexNet at 227 and VGG16 and VGG19 at 96 (9, 56 and 76 MiB of weights): with JAX, what they hold beyond
# the baseline, activations and images is 47-53 MiB + 2.5-2.9 x the weights in three runs (XLA keeps its own
# copies, in the layouts its convolutions use); with TensorFlow it does not grow with them (slope -0.5).
WEIGHT_COPIES = {"tensorflow": 1.0, "jax": 2.7}

@dataclasses.dataclass(frozen=True)
class Estimate:
    """What one optimisation step is expected to cost.

    Attributes:
        peak_bytes: Framework baseline + weights + activations + gradient buffer + image buffers.
        seconds_per_step: `flops_per_step / rate`.
        flops_per_step: Forward and input-gradient FLOPs of every tile.
        weight_bytes: The network's weights, as many copies as the backend holds (`WEIGHT_COPIES`).
        activation_bytes: Activations kept for the backward pass (one tile's) plus the gradient buffer.
        image_bytes: The loop's full-size image buffers.
        tiles: Tiles per step (1: whole image).
        rate: FLOP/s assumed.
        framework_bytes: What the process holds before any image work (`FRAMEWORK_BYTES`).
    """

    peak_bytes: int
    seconds_per_step: float
    flops_per_step: float
    weight_bytes: int
    activation_bytes: int
    image_bytes: int
    tiles: int
    rate: float
    framework_bytes: int = 0


@functools.cache
def matmul_rate(size=1024, repeats=5):
    """The float32 matrix-product rate of the active backend's device, in FLOP/s, median of `repeats`
    (the median, not the best: on a shared machine the best is a burst that steps do not sustain)."""
    matrix = keras.ops.convert_to_tensor(np.random.default_rng(0).standard_normal((size, size), dtype=np.float32))
    np.asarray(keras.ops.matmul(matrix, matrix))  # warm-up: kernels, thread pools, caches
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.asarray(keras.ops.matmul(matrix, matrix))  # the copy to numpy waits for the device
        seconds.append(time.perf_counter() - start)
    return 2.0 * size**3 / max(float(np.median(seconds)), 1e-9)


def _needed_layers(network, layers, start=None):
    """The network's layers a probe of `layers` computes, from the input (or from `start`'s output) up."""
    model = network.model
    first = model.input if start is None else model.get_layer(network.resolve(start)).output
    probe = keras.Model(first, [model.get_layer(network.resolve(layer)).output for layer in layers])
    return [layer for layer in probe.layers if not isinstance(layer, keras.layers.InputLayer)]


def _forward_flops(layer, output_shape):
    """Multiply-add FLOPs (2 per multiply-add) of one layer's forward pass; elementwise layers count one
    operation per output value."""
    positions = math.prod(output_shape[1:-1])
    if isinstance(layer, keras.layers.Conv2D):
        kernel = layer.kernel.shape  # (kernel height, kernel width, in channels, out channels)
        return 2.0 * positions * math.prod(kernel)
    if isinstance(layer, keras.layers.Dense):
        return 2.0 * positions * math.prod(layer.kernel.shape)
    return float(math.prod(output_shape[1:]))


def estimate(network, layers, size, batch=1, tile=None, rate=None, start=None):
    """Estimates the peak memory and time of one optimisation step.

    Args:
        network: A `Network`.
        layers: The layers the objective reads (names or aliases); the deepest decides the cost.
        size: `(height, width)` of the image.
        batch: Images optimised together.
        tile: Tile side for tile-by-tile gradients, or None.
        rate: FLOP/s to assume; default `matmul_rate() * CONVOLUTION_EFFICIENCY`.
        start: A layer whose activations are optimised instead of the image (`invert --to`): only the
            layers above it are computed, and the optimiser's buffers have its shape.

    Returns:
        An `Estimate`.

    Raises:
        DeepRestoreError: An unknown layer, or an input too small for the layers.
    """
    height, width = size
    rate = rate or matmul_rate() * CONVOLUTION_EFFICIENCY
    boxes = tile_boxes(height, width, tile) if tile else []
    size = (boxes[0].height, boxes[0].width) if boxes else (height, width)
    needed = _needed_layers(network, layers, start)
    shapes = network.output_shapes(*size, layers=[layer.name for layer in needed])
    variable = (height, width, 3)
    if start is not None:
        variable = network.output_shapes(height, width, layers=[network.resolve(start)])[network.resolve(start)][1:]
    forward = sum(_forward_flops(layer, shapes[layer.name]) for layer in needed)
    # The input gradient of a convolution costs what its forward pass does; elementwise layers about so.
    flops = 2.0 * forward * batch * max(1, len(boxes))
    values = [math.prod(shape[1:]) for shape in shapes.values()]
    activation_bytes = BYTES_PER_VALUE * batch * (sum(values) + 2 * max(values))
    backend = keras.backend.backend()
    copies = WEIGHT_COPIES.get(backend, max(WEIGHT_COPIES.values()))
    weights = BYTES_PER_VALUE * sum(math.prod(variable.shape) for variable in network.model.weights)
    weight_bytes = round(copies * weights)
    image_bytes = BYTES_PER_VALUE * batch * math.prod(variable) * IMAGE_BUFFERS
    framework_bytes = FRAMEWORK_BYTES.get(backend, max(FRAMEWORK_BYTES.values()))
    return Estimate(
        peak_bytes=framework_bytes + weight_bytes + activation_bytes + image_bytes, seconds_per_step=flops / rate,
        flops_per_step=flops, weight_bytes=weight_bytes, activation_bytes=activation_bytes, image_bytes=image_bytes,
        tiles=max(1, len(boxes)), rate=rate, framework_bytes=framework_bytes,
    )


def format_bytes(count):
    """`1536` -> `1.5 KiB`."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024.0


def format_seconds(seconds):
    """`95` -> `1.6 min`, `7200` -> `2.0 h`: a duration in the unit a reader plans with."""
    if seconds < 90:
        return f"{seconds:.3g} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_estimates(rows, steps):
    """A short table of estimates, one row each, a total and a footer saying how they were made.

    Args:
        rows: `(label, Estimate)` pairs, e.g. one per octave or scale.
        steps: Steps of each row: one number for every row, or one per row.

    Returns:
        The table as a string.
    """
    header = ("", "tiles", "peak memory", "framework", "weights", "activations", "images", "GFLOP/step", "time/step")
    lines = [header] + [
        (label, str(item.tiles), format_bytes(item.peak_bytes), format_bytes(item.framework_bytes),
         format_bytes(item.weight_bytes), format_bytes(item.activation_bytes), format_bytes(item.image_bytes),
         f"{item.flops_per_step / 1e9:.1f}", f"{item.seconds_per_step:.3g} s")
        for label, item in rows
    ]
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    text = ["  ".join(cell.ljust(width) if column == 0 else cell.rjust(width)
                      for column, (cell, width) in enumerate(zip(line, widths))).rstrip() for line in lines]
    estimates = [item for _, item in rows]
    if estimates:
        per_row = [steps] * len(estimates) if isinstance(steps, (int, np.integer)) else list(steps)
        total = sum(item.seconds_per_step * count for item, count in zip(estimates, per_row))
        counts = f"{per_row[0]} steps per row" if len(set(per_row)) == 1 else f"{' + '.join(map(str, per_row))} steps"
        text.append(f"Estimated peak memory {format_bytes(max(item.peak_bytes for item in estimates))}, "
                    f"total time about {format_seconds(total)} ({counts}).")
        text.append(
            f"From layer shapes: the framework's measured baseline ({keras.backend.backend()}) + weights + "
            f"activations kept for the backward pass + {IMAGE_BUFFERS} image buffers; time = FLOPs / "
            f"{estimates[0].rate / 1e9:.3g} GFLOP/s ({CONVOLUTION_EFFICIENCY:g} x this machine's measured matmul rate)."
        )
    return "\n".join(text)
