"""Describing an HPatches-format dataset: one `predict` call for every stack vs one call per stack.

`describe` scores a descriptor after every epoch by describing each of the 16 patch stacks of every
test sequence. This script times, side by side on the same synthetic dataset and network, the way
`deeprestore.recipes.describe.describe_dataset` does it (all stacks concatenated, one call) against the
straightforward loop (one `predict` per stack, as before), checks that both give the same descriptors,
and prints seconds per pass and the ratio.

Usage: python3 benchmarks/bench_describe.py [--patches 64] [--repeats 3]
"""

import argparse
import tempfile
import time

import numpy as np

from deeprestore.descriptors import hpatches, model, synthetic
from deeprestore.recipes.describe import PatchSource, describe_dataset

PATCHES = 64  # tracks per synthetic sequence (describe's default)
REPEATS = 3  # timed passes per way, after one warm-up pass each


def per_stack(descriptor, dataset, names, source):
    """The baseline: one `predict` call per stack."""
    return {name: {image: model.describe_patches(descriptor, source.patches(dataset[name], image))
                   for image in hpatches.IMAGES} for name in names}


def best_time(function, repeats):
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=PATCHES)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        synthetic.synthesize(folder, synthetic.SyntheticSpec(count=options.patches))
        names = hpatches.sequence_names(folder)
        dataset = hpatches.load_dataset(folder, names)
        descriptor = model.descriptor_network(seed=0)
        source = PatchSource("clean", None)
        loop, expected = best_time(lambda: per_stack(descriptor, dataset, names, source), options.repeats)
        batched, found = best_time(lambda: describe_dataset(descriptor, dataset, names, source), options.repeats)
    same = all(np.allclose(expected[name][image], found[name][image], atol=1e-5)
               for name in names for image in hpatches.IMAGES)
    patches = sum(len(found[name][image]) for name in names for image in hpatches.IMAGES)
    print(f"{len(names)} sequences, {patches} patches; descriptors equal: {same}")
    print(f"one predict per stack   {loop:8.3f} s")
    print(f"one predict in all      {batched:8.3f} s   ratio {loop / batched:.2f}x")


if __name__ == "__main__":
    main()
