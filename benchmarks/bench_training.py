"""The training path (`deeprestore.training.train`, Keras `fit`) against the loop it replaced, and the
memory of a stack run whose activation cache is read from HDF5.

1. Steps per second on the same models and batches, side by side, in alternating rounds (machines are
   noisy): the U-Net denoiser on `PatchData` batches (`denoise train`'s defaults: 16 patches of 32x32),
   and a stack's VGG16 pool2-to-conv2_2 module (random weights) on cached activations held in memory.
   `previous_loop` is a copy of the hand-written `train_on_batch` loop that `training.train` was
   before it went through `fit` (per-step loss log rows, a checkpoint at the end), without the
   progress bar. Both write their loss log; `training.train`'s final checkpoint is timed apart and
   left out.
2. Peak resident memory (each child's own ru_maxrss) of `deeprestore stack` runs in child processes with the cache
   loaded into memory and with it read from HDF5 in block-shuffled chunks (`IN_MEMORY_BYTES = 0`).
3. (`--cases copies`) Steps per second of VGG16's default stack chain from pool2 to the image, whose
   batches hold each inner layer twice (one module's input, the module below's target), with
   `StepBatches` copying those apart (`training.separate_arrays`, which two devices need) against
   passing them as they are (which trains the same on one device), side by side in alternating rounds.

Usage: python3 benchmarks/bench_training.py [--steps 60] [--rounds 3] [--size 64] [--cases speed memory copies]
"""

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np

from deeprestore import training
from deeprestore.datasets import ActivationStore, ImageDataset
from deeprestore.images import load_image
from deeprestore.inversion.specs import check_specs, default_specs
from deeprestore.inversion.stack import Stack
from deeprestore.losslog import LossLog
from deeprestore.networks import create_network
from deeprestore.recipes.stack import batch_source
from deeprestore.restoration import corruptions, data, models

ROOT = pathlib.Path(__file__).parents[1]


def previous_loop(model, batches, start, steps, log_directory):
    """The loop `training.train` was: one `train_on_batch` per step, values logged per step."""
    log = LossLog(log_directory)
    for step in range(start, steps):
        values = {f"train.{name}": float(value)
                  for name, value in model.train_on_batch(*batches(step), return_dict=True).items()}
        if not all(np.isfinite(value) for value in values.values()):
            raise RuntimeError(f"non-finite loss at step {step + 1}")
        log.log(step + 1, values)
    log.close()


def fit_path(model, batches, start, steps, directory):
    """`training.train` over the steps `start` to `steps` of one model (which keeps its optimiser state)."""
    training.train(model, lambda step: batches(start + step), training.Schedule(steps - start, checkpoint_every=10**9),
                   training.Storage(directory / "checkpoints", directory / "losses"))


def fit_rate(model, batches, done, steps, directory, checkpoint_directory):
    """Steps per second of `steps` steps of `fit_path` from step `done`, less the time of the checkpoint
    it writes at its end (timed alone first, so only training steps are compared)."""
    start = time.perf_counter()
    training.save_checkpoint(model, checkpoint_directory, done)
    checkpoint = time.perf_counter() - start
    start = time.perf_counter()
    fit_path(model, batches, done, done + steps, directory)
    return steps / (time.perf_counter() - start - checkpoint)


def report(title, rates, ratio, inverse=False):
    """Prints each path's median steps/s with its rounds, then the ratio of the first path's median to the
    second's (the second's to the first's with `inverse`)."""
    print(title)
    for path, values in rates.items():
        print(f"  {path:<34} {statistics.median(values):8.2f} steps/s  (rounds: "
              + ", ".join(f"{value:.2f}" for value in values) + ")")
    first, second = (statistics.median(values) for values in rates.values())
    print(f"  {ratio}: {(second / first) if inverse else (first / second):.3f}", flush=True)


def compare(name, make_model, batches, steps, rounds, folder):
    """Median steps per second of each path over `rounds` alternating rounds, each path on its own copy
    of one model; `training.train`'s checkpoint after its last step is timed apart and left out."""
    rates = {"previous loop (train_on_batch)": [], "training.train (fit)": []}
    models_by_path = {path: make_model() for path in rates}
    warm = 3
    previous_loop(models_by_path["previous loop (train_on_batch)"], batches, 0, warm, folder / "old-warm")
    fit_path(models_by_path["training.train (fit)"], batches, 0, warm, folder / "new-warm")
    done = warm
    for _ in range(rounds):
        for path, model in models_by_path.items():
            if path.startswith("previous"):
                start = time.perf_counter()
                previous_loop(model, batches, done, done + steps, folder / "old")
                rates[path].append(steps / (time.perf_counter() - start))
            else:
                rates[path].append(fit_rate(model, batches, done, steps, folder / "new", folder / "alone"))
        done += steps
    report(f"{name}:", rates, "fit / previous loop", inverse=True)


def denoise_case(steps, rounds, folder):
    spec = models.get_spec("unet")
    clean = [data.to_channels(load_image(source), 1) for source in data.TRAINING_SAMPLES[:4]]
    patches = data.PatchData.from_images(clean, 32, corruptions.parse("gaussian:0.1"), data.Sampling(16))

    def make_model():
        model = models.create_model("unet", 1, seed=0)
        models.compile_model(model, "mae", "adam", 1e-3, output=spec.output)
        return model

    compare("denoise: unet, 16 patches of 32x32", make_model, patches.batch, steps, rounds, folder / "denoise")


def stack_case(size, steps, rounds, folder):
    network = create_network("vgg16", "random", seed=0)
    dataset = ImageDataset.build(folder / "images.h5", "bundled", (size, size))
    store = ActivationStore(folder / "activations", dataset, network)
    resolved = check_specs(network, default_specs(network, "pool2", "conv2_2"), (size, size))
    probe = Stack(network, resolved, {})
    layers = probe.layers_needed("separate")
    store.ensure(layers, batch_size=8)

    def make_model():
        stack = Stack.build(network, resolved, seed=0)
        return stack.compile(stack.training_model("separate"), "separate", 1e-3)

    stack = Stack.build(network, resolved, seed=0)
    batches, *_ = batch_source(stack, "separate", store, np.arange(len(dataset)), 8, 0)
    compare(f"stack: VGG16 pool2-to-conv2_2 module, 8 crops of {size}x{size}, cache in memory", make_model, batches,
            steps, rounds, folder / "stack")


def copies_case(size, steps, rounds, folder):
    folder.mkdir(parents=True, exist_ok=True)
    network = create_network("vgg16", "random", seed=0)
    dataset = ImageDataset.build(folder / "images.h5", "bundled", (size, size))
    store = ActivationStore(folder / "activations", dataset, network)
    resolved = check_specs(network, default_specs(network, "pool2"), (size, size))
    layers = Stack(network, resolved, {}).layers_needed("separate")
    store.ensure(layers, batch_size=8)
    stack = Stack.build(network, resolved, seed=0)
    batches, *_ = batch_source(stack, "separate", store, np.arange(len(dataset)), 8, 0)
    separate = training.separate_arrays
    paths = {"copied apart (separate_arrays)": separate, "as they are": lambda batch: batch}
    models_by_path = {}
    for path in paths:
        stack = Stack.build(network, resolved, seed=0)
        models_by_path[path] = stack.compile(stack.training_model("separate"), "separate", 1e-3)
    rates = {path: [] for path in paths}
    warm = 2
    for model in models_by_path.values():
        fit_path(model, batches, 0, warm, folder / "warm")
    done = warm
    try:
        for _ in range(rounds):
            for path, model in models_by_path.items():
                training.separate_arrays = paths[path]
                rates[path].append(fit_rate(model, batches, done, steps, folder / "timed", folder / "alone"))
            done += steps
    finally:
        training.separate_arrays = separate
    report(f"stack: VGG16 chain pool2 to image ({len(resolved.specs)} modules), 8 crops of {size}x{size}, one device:",
           rates, "copied / as they are")


MEMORY_SCRIPT = """
import atexit, resource, sys
from deeprestore.recipes import stack
if sys.argv[1] == "hdf5":
    stack.IN_MEMORY_BYTES = 0
report = sys.argv[2]
atexit.register(lambda: open(report, "w").write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)))
from deeprestore.cli import main
sys.argv = ["deeprestore", *sys.argv[3:]]
main()
"""


def peak_memory(mode, runs, arguments):
    """Peak resident memory in MiB of a `deeprestore stack` child process, and the batching it used."""
    report = pathlib.Path(runs).with_suffix(".maxrss")
    completed = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, mode, str(report), "--runs", str(runs), "--quiet",
                                *arguments], capture_output=True, text=True, check=False, cwd=ROOT)
    if completed.returncode:
        raise RuntimeError(completed.stderr[-2000:])
    run = pathlib.Path(completed.stdout.strip().splitlines()[-1])
    return int(report.read_text()) / 1024, json.loads((run / "config.json").read_text())["batching"]


def memory_case(size, folder):
    arguments = ["stack", "--network", "vgg16", "--weights", "random", "--from", "pool2", "--size", str(size),
                 "--steps", "20", "--validate-every", "0", "--data-cache", str(folder / "cache")]
    subprocess.run([sys.executable, "-m", "deeprestore", "--runs", str(folder / "warm"), "--quiet", *arguments[:-4],
                    "--steps", "1", "--data-cache", str(folder / "cache")], check=True, capture_output=True, cwd=ROOT)
    cache = sum(path.stat().st_size for path in (folder / "cache").rglob("*.h5"))
    print(f"stack run memory (VGG16 random, pool2 chain at {size}x{size}, 20 steps; cache {cache / 2**20:.1f} MiB):")
    for mode in ("hdf5", "memory"):
        peak, batching = peak_memory(mode, folder / mode, arguments)
        print(f"  {batching:<15} peak resident {peak:8.0f} MiB", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="timed steps per round and path")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=64, help="side of the stack's crops")
    parser.add_argument("--cases", nargs="+", default=["speed", "memory"], choices=["speed", "memory", "copies"])
    options = parser.parse_args()
    keras.utils.set_random_seed(0)
    with tempfile.TemporaryDirectory() as name:
        folder = pathlib.Path(name)
        if "speed" in options.cases:
            denoise_case(options.steps, options.rounds, folder)
            stack_case(options.size, options.steps, options.rounds, folder)
        if "memory" in options.cases:
            memory_case(options.size, folder / "memory")
        if "copies" in options.cases:
            copies_case(options.size, options.steps, options.rounds, folder / "copies")


if __name__ == "__main__":
    main()
