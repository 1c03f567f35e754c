"""Times the random draws of the optimisation loop: a generator per step and source against one per run.

Usage: `python benchmarks/bench_step_draws.py [--network tiny --size 32 --tile 16 --steps 64 --rounds 5]`.

Since each step's draws became a function of (seed, source, step) alone (`optimise.StepRandom`: a
Philox generator per step and source, so that a seed reproduces a run however its steps are chunked),
the host makes a generator per step and source where it used to draw a whole chunk from one generator.
This script measures what that costs, side by side in one process:
- draws: the host time to draw one chunk of `CHUNK_STEPS` steps for jitter, random scale, random
  rotation and random tiles, per step (`StepRandom.draws`) against per chunk (the old scheme: one
  generator, `draw(rng, count)` per source);
- run: a whole `optimise` run of `--steps` steps with those four sources on `--network` at `--size`,
  with each scheme; the ratio is the share of a step that drawing costs. The default, the `tiny`
  network at 32 px, is the cheapest step there is, so the ratio is the worst case.
Both sides run interleaved, the best of `--rounds` counted, because the machine may be shared.
"""

import argparse
import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from deeprestore import objectives
from deeprestore import optimise as optimise_module
from deeprestore.networks import create_network
from deeprestore.optimise import Engine, Plan, Progress, StepRandom, normalised_descent, optimise
from deeprestore.transforms import Jitter, RandomRotation, RandomScale, Tiling

JITTER = 4  # pixels
SCALES = (0.9, 0.95, 1.0, 1.05, 1.1)
DEGREES = (-10, -5, 0, 5, 10)


class PerChunk(StepRandom):
    """The old scheme: every source draws a chunk's steps at once from one generator of the run."""

    def __init__(self, seed=0):
        super().__init__(seed)
        self.shared = np.random.default_rng(seed)

    def draws(self, source, steps, draw):
        return draw(self.shared, count=len(steps))


def draw_chunk(random, size, tile):
    """One chunk's draws of the four sources, as `_Loop` makes them."""
    steps = np.arange(1, optimise_module.CHUNK_STEPS + 1)
    for source, transform in [("jitter", Jitter(JITTER)), ("scale", RandomScale(SCALES)),
                              ("rotate", RandomRotation(DEGREES))]:
        random.draws(source, steps, lambda generator, count=1, transform=transform: transform.draw(generator, count))
    tiling = Tiling(tile, "random")
    random.draws("tiles", steps, lambda generator, count=1: tiling.draw(generator, count, size, size))


def best_time(function, rounds):
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="tiny")
    parser.add_argument("--layer", default=None, help="Objective layer (default: the network's last).")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--tile", type=int, default=16)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()

    schemes = {"per step": StepRandom, "per chunk (old)": PerChunk}
    draw_times = {name: [] for name in schemes}
    for _ in range(arguments.rounds):
        for name, scheme in schemes.items():
            draw_times[name].append(best_time(lambda scheme=scheme: draw_chunk(scheme(1), arguments.size,
                                                                                arguments.tile), 20))
    chunk = optimise_module.CHUNK_STEPS
    for name, times in draw_times.items():
        print(f"draws of a {chunk}-step chunk, 4 sources, {name}: {min(times) * 1e3:.3f} ms")

    network = create_network(arguments.network, weights="random", seed=0)
    layer = arguments.layer or network.layers[-1]
    engine = Engine.for_objective(-objectives.l2(layer), network)
    images = np.random.default_rng(0).uniform(size=(1, arguments.size, arguments.size, 3)).astype(np.float32)
    sources = dict(jitter=JITTER, transforms=(RandomScale(SCALES), RandomRotation(DEGREES)),
                   tiling=Tiling(arguments.tile, "random"))

    def run(scheme):
        optimise(engine, images, arguments.steps, normalised_descent(0.01), Plan(**sources, seed=scheme(1)),
                 callbacks=[Progress(show=False)])

    run(StepRandom)  # compiles
    run_times = {name: [] for name in schemes}
    for _ in range(arguments.rounds):
        for name, scheme in schemes.items():
            run_times[name].append(best_time(lambda scheme=scheme: run(scheme), 1))
    for name, times in run_times.items():
        print(f"{arguments.steps} steps of {arguments.network} {layer} at {arguments.size} px, draws {name}: "
              f"{min(times):.3f} s ({min(times) / arguments.steps * 1e3:.2f} ms a step)")
    ratio = min(run_times["per step"]) / min(run_times["per chunk (old)"])
    print(f"run time per step / per chunk: {ratio:.3f}")


if __name__ == "__main__":
    main()
