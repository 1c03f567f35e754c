"""`describe train` on one device against four in one process: where the weights part, step by step.

Usage: `python experiments/describe_devices.py [--steps 4 --folder DIR]`.

Two processes of two devices end `stack` and `denoise train` within 1e-7 of one process of four, and
`describe train` 4.7e-3 from it. This runs `describe train` (the tiny settings of the manual's check,
`--dropout 0`, a checkpoint every step, JAX with four virtual CPU devices) on `--devices 1` and on
`--devices 4` in one process each, and prints after each step the largest difference of any weight or
Adam moment, where it is, and the same without the biases of conv1 to conv6: each of those convolutions
is followed by batch normalisation, which subtracts the batch mean, so the loss does not depend on
these biases and their gradient is zero but for rounding.
"""

import argparse
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import h5py
import numpy as np

# the data, split and step size of the defaults this was measured with (split a: the quicker dataset)
ARGUMENTS = ("describe", "train", "--triplets", "64", "--batch-size", "16", "--pairs", "200", "--queries", "10",
             "--dropout", "0", "--checkpoint-every", "1", "--keep-every", "1", "--split", "a", "--patches", "64",
             "--schedule", "constant")
BEFORE_BATCH_NORMALISATION = re.compile(r"conv[1-6](/|_)bias")  # the variables and Adam moments of these biases


def train(folder, devices, steps):
    """Runs `describe train` into `folder`; returns its checkpoints folder."""
    root = pathlib.Path(__file__).resolve().parent.parent
    environment = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
                   "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    completed = subprocess.run([sys.executable, "-m", "deeprestore", "--runs", str(folder), "--quiet", *ARGUMENTS,
                                "--steps", str(steps), "--devices", str(devices)],
                               capture_output=True, text=True, env=environment, check=False)
    if completed.returncode:
        raise SystemExit(f"describe train --devices {devices} failed:\n{completed.stderr[-2000:]}")
    return pathlib.Path(completed.stdout.strip().splitlines()[-1]) / "checkpoints"


def arrays(path):
    found = {}
    with h5py.File(path, "r") as file:
        file.visititems(lambda key, item: found.update({key: item[()]}) if isinstance(item, h5py.Dataset) else None)
    return found


def largest(differences):
    key = max(differences, key=differences.get)
    return f"{differences[key]:.3g} ({key})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--folder", default=None, help="Where the runs go (default: a temporary folder).")
    arguments = parser.parse_args()
    folder = pathlib.Path(arguments.folder or tempfile.mkdtemp(prefix="describe-devices-"))
    one, four = (train(folder / f"devices-{devices}", devices, arguments.steps) for devices in (1, 4))
    print(f"describe train {' '.join(ARGUMENTS[2:])}: one device against four, JAX, one process")
    for step in range(1, arguments.steps + 1):
        name = f"step-{step:08d}.weights.h5"
        first, second = arrays(one / name), arrays(four / name)
        differences = {key: float(np.abs(first[key] - second[key]).max()) for key in first}
        rest = {key: value for key, value in differences.items() if not BEFORE_BATCH_NORMALISATION.search(key)}
        print(f"step {step}: largest difference {largest(differences)}; without the biases before batch "
              f"normalisation {largest(rest)}", flush=True)


if __name__ == "__main__":
    main()
