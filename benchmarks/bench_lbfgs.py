"""L-BFGS on the device (optax's, under JAX) against scipy's L-BFGS-B on the host, on the style objective.

Usage: `KERAS_BACKEND=jax python benchmarks/bench_lbfgs.py [--network tiny --size 64 --iterations 50 --unbounded
--rounds 2]` (JAX is set when KERAS_BACKEND is not; optax must be installed).

One script, one engine, one start: the style objective of `deeprestore style` (content, Gram and total
variation terms at its default weights, the targets of seeded random content and style images computed
once), pixels within [0, 1], `--iterations` iterations each way, no early stop (`tolerance=0`):
- scipy: `LBFGS()`, scipy's L-BFGS-B driving the compiled value and gradient, one host round trip per
  function evaluation (the default path);
- device: `LBFGS(on_device=True)`, optax's L-BFGS with its zoom line search, whole iterations compiled
  (`backend.steps_per_call` of them per call: one on a CPU).
Each way's objective is evaluated afresh at its result (the true loss, pixels within the bounds), and
the difference is stated relative to scipy's. The two ways alternate for `--rounds` rounds after a
first call of each that compiles; wall and CPU seconds per iteration are the best round's.
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from deeprestore import backend, objectives
from deeprestore.networks import create_network
from deeprestore.optimise import LBFGS, Engine, Progress, optimise
from deeprestore.recipes.style import style_objective
from deeprestore.settings import StyleSettings


class Count:
    """A loss log that counts the iterations `optimise` logs."""

    def __init__(self):
        self.count = 0

    def log(self, step, values, **context):
        self.count += 1


def style_case(network, size):
    """The engine, start and targets of the style objective at `size` (as `benchmarks/gpu.py` builds it)."""
    content = network.resolve(network.spec.layer_sets.content)
    style_layers = tuple(network.resolve(layer) for layer in network.spec.layer_sets.style)
    weights = np.full(len(style_layers), 1.0 / len(style_layers))
    engine = Engine.for_objective(style_objective(content, style_layers, weights, StyleSettings()), network)
    rng = np.random.default_rng(0)
    start = rng.uniform(size=(1, size, size, 3)).astype(np.float32)
    content_features = engine.probe.features(rng.uniform(size=(1, size, size, 3)).astype(np.float32))
    style_features = engine.probe.features(rng.uniform(size=(1, size, size, 3)).astype(np.float32))
    targets = {f"content.{content}": content_features[content],
               **{f"gram.{layer}": objectives.gram_numpy(style_features[layer][0])[None] for layer in style_layers}}
    return engine, start, targets


def run(engine, start, targets, rule, iterations):
    """`(result, iterations logged, wall seconds, CPU seconds)` of one optimisation."""
    count = Count()
    wall, cpu = time.perf_counter(), time.process_time()
    result, _ = optimise(engine, start, iterations, rule, targets=targets,
                         callbacks=[Progress(show=False, log=count, notify=lambda message: None)])
    return result, count.count, time.perf_counter() - wall, time.process_time() - cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="tiny")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--unbounded", action="store_true", help="Both ways without the [0, 1] bounds.")
    arguments = parser.parse_args()
    if not backend.device_lbfgs_available():
        raise SystemExit("Expected the JAX backend with optax installed (pip install optax).")
    network = create_network(arguments.network, "random")
    engine, start, targets = style_case(network, arguments.size)
    bounds = None if arguments.unbounded else (0.0, 1.0)
    ways = {"scipy": LBFGS(bounds, tolerance=0.0), "device": LBFGS(bounds, tolerance=0.0, on_device=True)}
    for rule in ways.values():  # compile
        run(engine, start, targets, rule, 2)
    best, results = {}, {}
    for _ in range(arguments.rounds):
        for name, rule in ways.items():
            result, count, wall, cpu = run(engine, start, targets, rule, arguments.iterations)
            results[name] = (result, count)
            if name not in best or wall < best[name][0] * count / best[name][2]:
                best[name] = (wall / count, cpu / count, count)
    initial = engine(start, targets)[0]
    print(f"{arguments.network} at {arguments.size}x{arguments.size}, {arguments.iterations} iterations, bounds "
          f"{bounds}, {backend.device()}; the objective was {initial:.6g} at the start")
    objective = {name: engine(result, targets)[0] for name, (result, _) in results.items()}
    for name in ways:
        wall, cpu, count = best[name]
        print(f"  {name:7} objective {objective[name]:.6g} after {results[name][1]} iterations; "
              f"{wall * 1e3:.1f} ms per iteration ({cpu * 1e3:.1f} ms CPU)")
    difference = (objective["device"] - objective["scipy"]) / abs(objective["scipy"])
    print(f"  device against scipy: objective {difference:+.2%}, time per iteration "
          f"{best['device'][0] / best['scipy'][0]:.2f}x wall, {best['device'][1] / best['scipy'][1]:.2f}x CPU")


if __name__ == "__main__":
    main()
