"""Times our dream step against the TensorFlow DeepDream tutorial's, and measures dream's peak memory.

Usage: `python benchmarks/bench_dream.py [--sizes 412x500 640x960 --tiled-size 1267x1537 --tile 512
--steps 4 --memory-size 4096 --untiled-memory-size 2048 --skip-memory]`.

Speed: one script, one network (VGG16 with the offline weights), the same layers, objective (mean
squared activation), image size and backend for both sides:
- ours: `Engine` + `optimise` (the whole step, with the normalised step and the clamp, compiled and run
  several steps per call), and for tiles a `Tiling` in random mode (even tiles inside the same call);
- the tutorial (tensorflow.org/tutorials/generative/deepdream): a `tf.function` running the gradient
  steps in-graph on one whole image, and for tiles its `TiledGradients` (random roll, a gradient of the
  whole rolled image per tile, in one `tf.function`), the step taken in Python.
Both sides run interleaved, the best of several rounds counted, because the machine may be shared.
A last row compares our tiled step with our untiled step on the tiled image (the cost of tiling).

Memory: peak RSS (`ru_maxrss` of each child process) of `deeprestore dream` for one step at a low layer
(so that a 4096x4096 step takes about a minute on a CPU), tiled at `--memory-size` against untiled at
`--untiled-memory-size` (4096x4096 untiled needs far more memory than a 24 GB machine has: the dry-run
estimate for it is printed beside), and tiled at that same size for a like-for-like ratio.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

from deeprestore import objectives
from deeprestore.estimate import estimate, format_bytes
from deeprestore.networks import create_network
from deeprestore.optimise import Engine, Plan, Progress, clamp, normalised_descent, optimise
from deeprestore.transforms import Tiling

LAYERS = ("block4_conv3", "block5_conv1")  # deeprestore's default dream layers for VGG16 (after the ReLU)
STEP_SIZE = 0.01  # the tutorial's step size; ours is in units of the mean absolute gradient
ROUNDS = 3  # interleaved rounds of each side; the best is reported
MEMORY_LAYER = "block1_conv2"  # low, so that one 4096x4096 step stays near a minute on 2 CPU cores


def tutorial_loss(model, images):
    """The tutorial's `calc_loss`, with our objective: the sum over layers of the mean squared activation."""
    activations = model(images)
    activations = activations if isinstance(activations, (list, tuple)) else [activations]
    return tf.add_n([tf.reduce_mean(tf.square(activation)) for activation in activations])


def tutorial_untiled(model):
    """The tutorial's `DeepDream` module: `steps` gradient steps on one whole image inside a tf.function."""

    @tf.function(input_signature=(tf.TensorSpec([None, None, 3], tf.float32), tf.TensorSpec([], tf.int32),
                                  tf.TensorSpec([], tf.float32)))
    def deepdream(image, steps, step_size):
        loss = tf.constant(0.0)
        for _ in tf.range(steps):
            with tf.GradientTape() as tape:
                tape.watch(image)
                loss = tutorial_loss(model, image[None])
            gradients = tape.gradient(loss, image)
            gradients /= tf.math.reduce_std(gradients) + 1e-8
            image = tf.clip_by_value(image + gradients * step_size, 0.0, 1.0)
        return loss, image

    return deepdream


def tutorial_tiled(model):
    """The tutorial's `TiledGradients`: roll the image at random, sum each tile's gradient of the whole
    rolled image, roll back, normalise."""

    @tf.function(input_signature=(tf.TensorSpec([None, None, 3], tf.float32), tf.TensorSpec([2], tf.int32),
                                  tf.TensorSpec([], tf.int32)))
    def gradients_of(image, image_size, tile_size):
        shift = tf.random.uniform([2], -tile_size, tile_size, dtype=tf.int32)
        rolled = tf.roll(image, shift=shift, axis=[0, 1])
        gradients = tf.zeros_like(rolled)
        # The tutorial drops the last row and column of tiles (`[:-1]`, against partial tiles); on an image
        # that is a multiple of the tile that would skip full tiles, so every full tile is kept here.
        xs = tf.range(0, image_size[1] - tile_size + 1, tile_size)
        ys = tf.range(0, image_size[0] - tile_size + 1, tile_size)
        for x in xs:
            for y in ys:
                with tf.GradientTape() as tape:
                    tape.watch(rolled)
                    loss = tutorial_loss(model, rolled[y : y + tile_size, x : x + tile_size][None])
                gradients = gradients + tape.gradient(loss, rolled)
        gradients = tf.roll(gradients, shift=-shift, axis=[0, 1])
        return gradients / (tf.math.reduce_std(gradients) + 1e-8)

    def step(image, tile_size):
        gradients = gradients_of(image, tf.shape(image)[:2], tf.constant(tile_size))
        return tf.clip_by_value(image + gradients * STEP_SIZE, 0.0, 1.0)

    return step


def best_seconds_per_step(ours, theirs, steps, rounds=ROUNDS):
    """`(ours, theirs)` best seconds per step: each side runs `function(1)` to warm up, then the two
    alternate for `rounds` rounds of `function(steps)`, so that a load that comes and goes on a shared
    machine falls on both sides alike rather than on whichever ran second."""
    ours(1)
    theirs(1)
    best = [np.inf, np.inf]
    for _ in range(rounds):
        for side, function in enumerate((ours, theirs)):
            start = time.perf_counter()
            function(steps)
            best[side] = min(best[side], (time.perf_counter() - start) / steps)
    return tuple(best)


def size_of(text):
    """`(height, width)` of `HxW` (or `N`: a square)."""
    height, _, width = text.partition("x")
    return int(height), int(width or height)


def speed(network, sizes, tiled_size, tile, steps):
    """`[(label, ours s/step, baseline s/step)]`: untiled at each size, tiled, and our tiled against our untiled."""
    model = keras.Model(network.model.input, [network.model.get_layer(layer).output for layer in LAYERS])
    engine = Engine.for_objective(-(objectives.l2(LAYERS[0]) + objectives.l2(LAYERS[1])), network)
    rng = np.random.default_rng(0)
    deepdream = tutorial_untiled(model)
    rows = []

    def ours_on(image, tiling=None):
        def run(count):
            optimise(engine, image[None], count, normalised_descent(STEP_SIZE), Plan(tiling=tiling),
                     callbacks=[clamp(), Progress(show=False)])

        return run

    for height, width in sizes:
        image = rng.uniform(size=(height, width, 3)).astype(np.float32)

        def theirs(count, image=image):
            deepdream(tf.constant(image), tf.constant(count), tf.constant(STEP_SIZE))[1].numpy()

        rows.append((f"untiled {height}x{width}", *best_seconds_per_step(ours_on(image), theirs, steps)))

    image = rng.uniform(size=(*tiled_size, 3)).astype(np.float32)
    tiled_step = tutorial_tiled(model)

    def theirs_tiled(count):
        current = tf.constant(image)
        for _ in range(count):
            current = tiled_step(current, tile)
        current.numpy()

    tiled_steps = max(1, steps // 2)
    ours_tiled = ours_on(image, Tiling(tile, "random"))
    label = f"tiled {tiled_size[0]}x{tiled_size[1]}, tile {tile}"
    rows.append((label, *best_seconds_per_step(ours_tiled, theirs_tiled, tiled_steps)))
    rows.append((f"{label}: ours untiled", *best_seconds_per_step(ours_tiled, ours_on(image), tiled_steps)))
    return rows


def tutorial_coverage(height, width, tile):
    """The share of an image's pixels the tutorial's tiles see in a step: only whole tiles, so a band
    at the bottom and right (rolled at random) is left out, where our tiles cover every pixel."""
    return (height // tile) * (width // tile) * tile * tile / (height * width)


def peak_rss(arguments):
    """Runs `deeprestore dream` with `arguments` in a child process; returns (peak RSS bytes, seconds)."""
    with tempfile.TemporaryDirectory() as runs:
        command = [sys.executable, "-m", "deeprestore", "--runs", runs, "--quiet", "dream", "--weights", "offline",
                   "--layer", MEMORY_LAYER, "--octaves", "1", "--steps", "1", "--jitter", "0", *arguments]
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {process.stderr.read().decode()[-2000:]}")
        return usage.ru_maxrss * 1024, seconds  # ru_maxrss is in KiB on Linux


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=size_of, nargs="+", default=[(412, 500), (640, 960)],
                        help="untiled image sizes, HxW")
    parser.add_argument("--tiled-size", type=size_of, default=(1267, 1537), help="tiled image size, HxW")
    parser.add_argument("--tile", type=int, default=512, help="tile side")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per round (half for tiles)")
    parser.add_argument("--memory-size", type=int, default=4096, help="image side of the tiled memory run")
    parser.add_argument("--untiled-memory-size", type=int, default=2048, help="largest untiled side that fits")
    parser.add_argument("--memory-tile", type=int, default=512, help="tile side of the memory runs")
    parser.add_argument("--skip-memory", action="store_true", help="time the steps only")
    arguments = parser.parse_args()

    network = create_network("vgg16", "offline")
    print(f"backend {keras.backend.backend()}, VGG16 offline weights, layers {', '.join(LAYERS)}")
    print(f"{'':44} {'ours s/step':>12} {'baseline s/step':>16} {'speed ratio':>12}  (baseline: the tutorial)")
    for label, ours, theirs in speed(network, arguments.sizes, arguments.tiled_size, arguments.tile, arguments.steps):
        print(f"{label:44} {ours:12.3f} {theirs:16.3f} {theirs / ours:11.2f}x")
    coverage = tutorial_coverage(*arguments.tiled_size, arguments.tile)
    print(f"(the tutorial's tiled step sees {coverage:.0%} of the pixels, ours all of them: per pixel, divide "
          "its tiled time by that share)")
    if arguments.skip_memory:
        return
    print(f"\npeak RSS of `deeprestore dream`, one step at {MEMORY_LAYER}:")
    big, small, tile = arguments.memory_size, arguments.untiled_memory_size, arguments.memory_tile
    runs = [
        (f"{big}x{big} tiled ({tile})", ["--size", str(big), "--tile", str(tile)]),
        (f"{small}x{small} tiled ({tile})", ["--size", str(small), "--tile", str(tile)]),
        (f"{small}x{small} untiled", ["--size", str(small)]),
    ]
    for label, options in runs:
        rss, seconds = peak_rss(options)
        print(f"{label:34} {format_bytes(rss):>12} {seconds:8.1f} s")
    untiled = estimate(network, [MEMORY_LAYER], (big, big))
    print(f"{big}x{big} untiled: not run; dry-run estimate {format_bytes(untiled.peak_bytes)} plus the framework")


if __name__ == "__main__":
    main()
