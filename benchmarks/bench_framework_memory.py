"""Measures the memory a process uses before any image work: the framework baseline of `--dry-run`.

Usage: `python benchmarks/bench_framework_memory.py [--backends tensorflow jax]`.

For each backend, a fresh interpreter imports deeprestore and Keras on that backend, builds the `tiny`
network and runs one compiled value-and-gradient step of a dream objective on a 16x16 image, then
reports its peak resident set size (`ru_maxrss`). The tiny network's own tensors are a few kilobytes,
so the peak is what the framework (libraries, thread pools, the compiled step's runtime) costs any run;
`deeprestore.estimate.FRAMEWORK_BYTES` stores these numbers. Further children do the same for AlexNet at
227x227 and VGG16 and VGG19 at 96x96 and print each peak beside the estimate; a straight line through
(weights, peak minus the estimate without its weight term) gives what a real network's compiled step adds
(the intercept, added to JAX's baseline) and the copies of the weights the backend holds (the slope,
`deeprestore.estimate.WEIGHT_COPIES`).
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

CHILD = r"""
import json, resource, sys
import numpy as np
from deeprestore import objectives
from deeprestore.networks import create_network
from deeprestore.optimise import Engine
network_name, size = sys.argv[1], int(sys.argv[2])
network = create_network(network_name, "random", "max", seed=0)
layer = network.spec.layer_sets.dream
layer = layer if isinstance(layer, str) else layer[-1]
engine = Engine.for_objective(-objectives.l2(network.resolve(layer)), network)
images = np.random.default_rng(0).uniform(size=(1, size, size, 3)).astype(np.float32)
for _ in range(3):
    engine(images)
result = {"peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
if network_name != "tiny":
    from deeprestore.estimate import estimate
    item = estimate(network, (network.resolve(layer),), (size, size), rate=1e9)
    weights = sum(int(np.prod(variable.shape)) * 4 for variable in network.model.weights)
    result.update(estimate_bytes=item.peak_bytes, weights_bytes=weights,
                  unweighted_bytes=item.peak_bytes - item.weight_bytes - item.framework_bytes)
print(json.dumps(result))
"""


def measure(backend, network, size):
    environment = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    completed = subprocess.run([sys.executable, "-c", CHILD, network, str(size)], capture_output=True, text=True,
                               env=environment, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


CHECKS = (("alexnet", 227), ("vgg16", 96), ("vgg19", 96))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax"])
    arguments = parser.parse_args()
    for backend in arguments.backends:
        baseline = measure(backend, "tiny", 16)["peak_bytes"]
        print(f"{backend}: framework baseline {baseline / 2**20:.0f} MiB")
        weights, beyond = [], []
        for network, size in CHECKS:
            check = measure(backend, network, size)
            print(f"  {network} {size}x{size} step: peak {check['peak_bytes'] / 2**20:.0f} MiB, estimate "
                  f"{check['estimate_bytes'] / 2**20:.0f} MiB ({check['weights_bytes'] / 2**20:.0f} MiB of weights)")
            weights.append(check["weights_bytes"])
            beyond.append(check["peak_bytes"] - baseline - check["unweighted_bytes"])
        slope, intercept = np.polyfit(weights, beyond, 1)
        print(f"  peak - baseline - activations - images = {intercept / 2**20:.0f} MiB + {slope:.2f} x weights")


if __name__ == "__main__":
    main()
