"""Training speed of one inversion module with cached activations against recomputing the network.

Trains VGG16's pool2-to-conv2_2 module (the default `cd` module) for a few steps three ways, through
the one training path (`deeprestore.training.train`), and prints steps per second side by side:

- cached, in memory: targets and inputs read from the HDF5 activation cache, loaded once (what
  `deeprestore stack` does when the cache fits in memory);
- cached, HDF5 scattered rows: the same cache, each step's random rows read from disk;
- cached, HDF5 block-shuffled: the same cache read from disk in block-shuffled chunks (what
  `deeprestore stack` does when the cache does not fit in memory, `BlockShuffledBatches`);
- recomputed: the frozen network computes pool2 and conv2_2 from the images every step.

Usage: python3 benchmarks/bench_stack.py [--size 64] [--batch-size 8] [--steps 20] [--weights auto]
"""

import argparse
import pathlib
import tempfile
import time

import keras
import numpy as np

from deeprestore import training
from deeprestore.datasets import ActivationStore, ImageDataset
from deeprestore.inversion.specs import check_specs, default_specs
from deeprestore.inversion.stack import Stack
from deeprestore.networks import create_network
from deeprestore.recipes.stack import batch_source

SOURCE, TARGET = "block2_pool", "block2_conv2_preact"  # pool2 -> conv2_2 (pre-activation)


def timed_training(model, batches, steps, directory):
    """Steps per second of `steps` training steps after two warm-up steps (compilation).

    `train` always writes a checkpoint after its last step; the time of one checkpoint, measured
    apart, is subtracted (the recomputing model's checkpoint holds the frozen network too).
    """
    training.train(model, batches, training.Schedule(2, checkpoint_every=1000), training.Storage(directory / "warm"))
    start = time.perf_counter()
    training.save_checkpoint(model, directory / "alone", 0)
    checkpoint = time.perf_counter() - start
    start = time.perf_counter()
    training.train(model, lambda step: batches(step + 2), training.Schedule(steps, checkpoint_every=10**9),
                   training.Storage(directory / "timed"))
    return steps / (time.perf_counter() - start - checkpoint)


def module_model(network, size, learning_rate=1e-3):
    stack = Stack.build(network, check_specs(network, default_specs(network, "pool2", "conv2_2"), size))
    model = stack.compile(stack.training_model("separate"), "separate", learning_rate)
    return stack, model


def recomputing_model(network, stack, learning_rate=1e-3):
    """Images in; the module's output minus the frozen network's conv2_2 out, trained towards zero: the
    same loss as the cached model, with the network run inside every step."""
    network.model.trainable = False
    images = network.model.input
    pool2 = network.model.get_layer(SOURCE).output
    conv2_2 = network.model.get_layer(TARGET).output
    module = stack.modules[stack.names[0]]
    difference = keras.layers.Subtract(name="difference")([module(pool2), conv2_2])
    model = keras.Model(images, difference)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="side of the training crops")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    parser.add_argument("--weights", default="auto", help="VGG16 weights (auto, random, ...)")
    options = parser.parse_args()
    size = (options.size, options.size)
    network = create_network("vgg16", options.weights)
    with tempfile.TemporaryDirectory() as folder:
        folder = pathlib.Path(folder)
        dataset = ImageDataset.build(folder / "images.h5", "bundled", size)
        store = ActivationStore(folder / "activations", dataset, network)
        start = time.perf_counter()
        store.ensure((SOURCE, TARGET), batch_size=options.batch_size)
        caching = time.perf_counter() - start
        cached = store.load((SOURCE, TARGET))
        stack, model = module_model(network, size)
        name = stack.names[0]

        def chosen(step):
            return np.sort(np.random.default_rng(step).choice(len(dataset), options.batch_size, replace=False))

        def from_memory(step):
            indices = chosen(step)
            return {SOURCE: cached[SOURCE][indices]}, {name: cached[TARGET][indices]}

        def from_disk(step):
            values = store.read((SOURCE, TARGET), chosen(step))
            return {SOURCE: values[SOURCE]}, {name: values[TARGET]}

        def from_images(step):
            images = dataset.images(chosen(step))
            return images, np.zeros((len(images), *cached[TARGET].shape[1:]), np.float32)

        blocks = batch_source(stack, "separate", store, np.arange(len(dataset)), options.batch_size, seed=0,
                              in_memory_bytes=0)[0]
        rates = {"cached, in memory": timed_training(model, from_memory, options.steps, folder / "memory"),
                 "HDF5 scattered rows": timed_training(model, from_disk, options.steps, folder / "disk"),
                 "HDF5 block-shuffled": timed_training(model, blocks, options.steps, folder / "blocks")}
        rates["recomputed"] = timed_training(recomputing_model(network, stack), from_images, options.steps,
                                             folder / "recompute")
    print(f"VGG16 {name}, {options.size}x{options.size}, batch {options.batch_size}, {options.steps} steps, "
          f"{keras.backend.backend()}; caching {len(dataset)} images took {caching:.1f} s")
    for label, rate in rates.items():
        print(f"  {label:<20} {rate:6.2f} steps/s   {rate / rates['recomputed']:5.2f}x recomputed")


if __name__ == "__main__":
    main()
