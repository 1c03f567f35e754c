"""Training throughput of a denoiser (patches per second) through deeprestore's training path vs `model.fit`.

Trains DnCNN (by default) on 40x40 grey patches of the bundled photos with Gaussian noise, two ways,
after warming each up (tracing and compiling the train step), and prints patches per second side by
side and their ratio:

- deeprestore: `deeprestore.training.train` with `PatchData.batch`, which cuts, rotates and corrupts
  each step's patches on the fly from `(seed, step)` (what `deeprestore denoise train` does), logging
  every step's losses to CSV; its one final checkpoint is timed apart and subtracted;
- model.fit: Keras's own loop on the same patches generated beforehand as numpy arrays (no data work,
  no logging, no checkpoints): the baseline.

Usage: python3 benchmarks/bench_denoise.py [--model dncnn-s] [--batch-size 16] [--patch-size 40] [--steps 20]
"""

import argparse
import pathlib
import tempfile
import time

import numpy as np

from deeprestore import backend, training
from deeprestore import images as image_io
from deeprestore.restoration import corruptions, data, models

MODEL = "dncnn-s"  # the network trained (the paper's DnCNN-S, 17 x 64)
BATCH_SIZE = 16  # patches per step
PATCH_SIZE = 40  # side of the patches (DnCNN's 40x40)
STEPS = 20  # timed steps per way, after the warm-up
WARM_UP = 2  # untimed steps that trace and compile the train step
SIGMA = 0.1  # Gaussian noise level


def compiled_model(name, seed=0):
    spec = models.get_spec(name)
    model = models.create_model(name, channels=1, seed=seed)
    return models.compile_model(model, spec.defaults.loss, "adam", 1e-3, output=spec.output)


def deeprestore_throughput(name, patches, steps, directory):
    """Patches per second through `training.train` with on-the-fly batches, less one checkpoint's time."""
    model = compiled_model(name)
    training.train(model, patches.batch, training.Schedule(WARM_UP, checkpoint_every=10**9),
                   training.Storage(directory / "warm"))
    start = time.perf_counter()
    training.save_checkpoint(model, directory / "alone", 0)
    checkpoint = time.perf_counter() - start
    start = time.perf_counter()
    training.train(model, lambda step: patches.batch(step + WARM_UP), training.Schedule(steps, checkpoint_every=10**9),
                   training.Storage(directory / "timed", directory / "losses"))
    return steps * patches.batch_size / (time.perf_counter() - start - checkpoint)


def fit_throughput(name, patches, steps):
    """Patches per second of `model.fit` for one epoch over the same patches, made beforehand."""
    model = compiled_model(name)
    warm_inputs, warm_targets = patches.batch(0)
    model.fit(warm_inputs, warm_targets, batch_size=patches.batch_size, epochs=WARM_UP, verbose=0)
    batches = [patches.batch(step + WARM_UP) for step in range(steps)]
    inputs, targets = (np.concatenate(part) for part in zip(*batches))
    start = time.perf_counter()
    model.fit(inputs, targets, batch_size=patches.batch_size, epochs=1, shuffle=False, verbose=0)
    return len(inputs) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=MODEL, choices=models.list_models())
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--patch-size", type=int, default=PATCH_SIZE)
    parser.add_argument("--steps", type=int, default=STEPS)
    arguments = parser.parse_args()

    clean = [data.to_channels(image_io.load_image(name), 1) for name in data.TRAINING_SAMPLES]
    patches = data.PatchData.from_images(clean, arguments.patch_size, corruptions.gaussian_noise(SIGMA),
                                         data.Sampling(arguments.batch_size, seed=0))
    print(f"{arguments.model}: batches of {arguments.batch_size} {arguments.patch_size}x{arguments.patch_size} "
          f"grey patches, {arguments.steps} timed steps; backend {backend.name()} on {backend.device()}")
    with tempfile.TemporaryDirectory() as directory:
        ours = deeprestore_throughput(arguments.model, patches, arguments.steps, pathlib.Path(directory))
    baseline = fit_throughput(arguments.model, patches, arguments.steps)
    print(f"{'deeprestore.training.train (on-the-fly patches)':<50} {ours:8.1f} patches/s")
    print(f"{'model.fit (patches made beforehand)':<50} {baseline:8.1f} patches/s")
    print(f"{'ratio (deeprestore / fit)':<50} {ours / baseline:8.2f}")


if __name__ == "__main__":
    main()
