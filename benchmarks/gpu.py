"""One prepared command for a GPU machine: how fast deeprestore's steps run, and how much of the device they use.

Usage: `KERAS_BACKEND=jax python benchmarks/gpu.py [--smoke] [--steps 20]` from the repository root
(under 5 minutes on one GPU; `--smoke` runs the same code at tiny sizes on a CPU in seconds, as the
test suite does so that this script cannot rot).

Prints, for the dream step (VGG16, deeprestore's default dream layers, the normalised step with the
clamp) and the style step (VGG19's keras-io layers, Adam) at 512 and 1024 px in float32 and bfloat16:
milliseconds per step (the whole step compiled, 16 steps per call), the step's FLOPs counted from the
layer shapes as `--dry-run` does (`deeprestore.estimate`: forward and input gradient of every layer),
the fraction of the device's matrix-multiply rate that reaches (the rate measured in this script with a
large matmul in the same precision), the seconds the first call took beyond a timed one (compilation),
and the device's peak memory so far (JAX's `memory_stats()`, TensorFlow's `get_memory_info`; a CPU
reports none). Then the L-BFGS style step that `style` and `texture` use by default (scipy's L-BFGS-B
on the host calling the compiled loss and gradient once per evaluation): milliseconds per iteration and
the share of wall time spent on the host, outside the compiled function. Then images (or triplets) per
second of three training steps: a joint inversion stack (VGG16 pool1 to image), DnCNN on 40x40 grey
patches, and the HardNet descriptor on 32x32 triplets; and DnCNN data-parallel over two devices against
one, where two exist. Weights are seeded random ones: the speed of a step does not depend on their
values, and the machine needs no download. On JAX nothing here imports TensorFlow; the script checks
that at the end. `benchmarks/requirements-gpu.txt` lists what a GPU machine without TensorFlow needs.
"""

import argparse
import contextlib
import os
import sys
import time

import numpy as np

# The repository root, so that `python benchmarks/gpu.py` imports this checkout's package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras

from deeprestore import backend, objectives
from deeprestore.estimate import estimate
from deeprestore.networks import create_network
from deeprestore.optimise import LBFGS, Adam, Engine, Progress, clamp, normalised_descent, optimise
from deeprestore.recipes.common import network_precision
from deeprestore.recipes.style import style_objective
from deeprestore.settings import PRECISIONS, StyleSettings

FULL = dict(network="vgg16", style_network="vgg19", sizes=(512, 1024), matmul=8192, stack_size=64, stack_batch=32,
            dncnn="dncnn-s", dncnn_patch=40, dncnn_batch=128, descriptor_batch=512)
# The same code at sizes a CPU runs in seconds, on the registry's tiny network (and the CPU-sized DnCNN, the
# same code as the paper's DnCNN-S at another depth and width).
SMOKE = dict(network="tiny", style_network="tiny", sizes=(32,), matmul=256, stack_size=16, stack_batch=2,
             dncnn="dncnn", dncnn_patch=8, dncnn_batch=2, descriptor_batch=2)


def timed_calls(function, repeats):
    """`(median seconds of a call, seconds the first call took beyond that)`: the first call compiles."""
    start = time.perf_counter()
    function()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    median = float(np.median(times))
    return median, max(first - median, 0.0)


def seconds_per_call(function, repeats):
    """The median wall time of `function()` after one warm-up call (which compiles)."""
    return timed_calls(function, repeats)[0]


def peak_memory():
    """The default device's peak memory use so far in bytes, or None where the backend reports none
    (JAX and TensorFlow on a CPU)."""
    if backend.name() == "jax":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        return stats.get("peak_bytes_in_use")
    import tensorflow as tf

    if not tf.config.list_logical_devices("GPU"):
        return None
    return tf.config.experimental.get_memory_info("GPU:0")["peak"]


def format_memory(peak):
    return f"{peak / 2**20:.0f}" if peak is not None else "n/a"


def matmul_rate(size, precision):
    """FLOP/s of a `size` x `size` matrix product in `precision` on the default device."""
    matrix = keras.ops.convert_to_tensor(np.random.default_rng(0).standard_normal((size, size)), dtype=precision)
    product = backend.compiled(lambda values: keras.ops.sum(keras.ops.cast(keras.ops.matmul(values, values),
                                                                           "float32")))
    return 2.0 * size**3 / seconds_per_call(lambda: product(matrix), 5)


def dream_case(network, size):
    """The dream step's engine, start, rule, constraints, targets and layers at `size`."""
    layers = network.spec.layer_sets.dream
    objective = -sum((objectives.l2(layer) for layer in layers[1:]), objectives.l2(layers[0]))
    engine = Engine.for_objective(objective, network)
    images = np.random.default_rng(0).uniform(size=(1, size, size, 3)).astype(np.float32)
    return engine, images, normalised_descent(0.01), [clamp()], {}, layers


def style_case(network, size):
    """The style step (keras-io's layers where the network has them) at `size`, its targets computed once."""
    settings = StyleSettings()
    content = network.resolve(network.spec.layer_sets.content)
    style_layers = tuple(network.resolve(layer) for layer in network.spec.layer_sets.style)
    weights = np.full(len(style_layers), 1.0 / len(style_layers))
    engine = Engine.for_objective(style_objective(content, style_layers, weights, settings), network)
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(1, size, size, 3)).astype(np.float32)
    features = engine.probe.features(rng.uniform(size=(1, size, size, 3)).astype(np.float32))
    targets = {f"content.{content}": features[content],
               **{f"gram.{layer}": objectives.gram_numpy(features[layer][0])[None] for layer in style_layers}}
    return engine, images, Adam(0.02), [], targets, (content, *style_layers)


def step_row(case, network, size, precision, steps, rates):
    """`(ms per step, GFLOPs per step, fraction of the matmul rate, compile seconds)` of one recipe's step."""
    engine, images, rule, callbacks, targets, layers = case(network, size)

    def run():
        optimise(engine, images, steps, rule, callbacks=[*callbacks, Progress(show=False)], targets=targets)

    seconds, compile_seconds = timed_calls(run, 2)
    seconds /= steps
    flops = estimate(network, layers, (size, size), rate=1.0).flops_per_step
    return seconds * 1e3, flops / 1e9, flops / seconds / rates[precision], compile_seconds


class _Iterations:
    """A loss log that only counts the iterations `optimise` logs."""

    def __init__(self):
        self.count = 0

    def log(self, step, values, **context):
        self.count += 1


class _TimedEngine:
    """An engine that adds up the wall time of its calls (the compiled loss and gradient, with transfers)."""

    def __init__(self, engine):
        self.engine, self.seconds = engine, 0.0

    def __call__(self, *arguments, **keywords):
        start = time.perf_counter()
        result = self.engine(*arguments, **keywords)
        self.seconds += time.perf_counter() - start
        return result


def lbfgs_row(network, size, steps):
    """`(ms per iteration, share of wall time on the host, iterations run)` of the style step under L-BFGS-B,
    as `style` and `texture` run it by default (see `deeprestore.optimise.LBFGS`)."""
    engine, images, _, _, targets, _ = style_case(network, size)
    notices = []
    optimise(engine, images, 1, LBFGS(), callbacks=[Progress(show=False, notify=notices.append)], targets=targets)
    timed, iterations = _TimedEngine(engine), _Iterations()
    start = time.perf_counter()
    optimise(timed, images, steps, LBFGS(), targets=targets,
             callbacks=[Progress(show=False, log=iterations, notify=notices.append)])
    seconds = time.perf_counter() - start
    return seconds / max(iterations.count, 1) * 1e3, 1.0 - timed.seconds / seconds, iterations.count


def training_rate(model, inputs, targets, repeats=5, parallel=None):
    """Examples per second of `train_on_batch`; with `parallel`, inside its scope, which splits the batch
    over its devices."""
    batch = len(keras.tree.flatten(inputs)[0])

    def train():
        with parallel.scope() if parallel is not None else contextlib.nullcontext():
            model.train_on_batch(inputs, targets)

    return batch / seconds_per_call(train, repeats)


def stack_rate(sizes):
    """Images per second of a joint inversion stack's training step (pool1 to image, modules only)."""
    from deeprestore.inversion.specs import check_specs, default_specs
    from deeprestore.inversion.stack import Stack

    network = create_network(sizes["network"], "random")
    side = (sizes["stack_size"], sizes["stack_size"])
    resolved = check_specs(network, default_specs(network, "pool1", "image", "cd"), side)
    stack = Stack.build(network, resolved)
    model = stack.compile(stack.training_model("joint"), "joint", 1e-3)
    rng = np.random.default_rng(0)
    batch = sizes["stack_batch"]
    inputs = {layer: rng.uniform(size=(batch, *resolved.shapes[layer])).astype(np.float32)
              for layer in dict.fromkeys(resolved.input_layer[name] for name in stack.names
                                         if not resolved.takes_module(name))}
    outputs = keras.tree.map_structure(lambda values: np.zeros(values.shape, np.float32), model(inputs))
    return training_rate(model, inputs, outputs)


def dncnn(name, batch, patch, parallel=None):
    """A compiled DnCNN (`name`: dncnn-s, the paper's, or dncnn) and a batch of grey patches (40x40 in DnCNN's
    paper)."""
    from deeprestore.restoration.models import compile_model, create_model

    with parallel.scope() if parallel is not None else network_precision("float32"):
        model = compile_model(create_model(name, channels=1), "mse", "adam", 1e-3)
    patches = np.random.default_rng(0).uniform(size=(batch, patch, patch, 1)).astype(np.float32)
    return model, patches, patches


def descriptor_rate(batch):
    """Triplets per second of the HardNet descriptor's training step (triplet loss, Adam)."""
    from deeprestore.descriptors.model import create_loss, descriptor_network, triplet_model

    model = triplet_model(descriptor_network())
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=create_loss("triplet"))
    triplets = np.random.default_rng(0).uniform(size=(batch, 3, 32, 32, 1)).astype(np.float32)
    return training_rate(model, triplets, np.zeros((batch,), np.float32))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the tiny network: a CPU check")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per call (default 32; smoke 1)")
    options = parser.parse_args(argv)
    sizes = SMOKE if options.smoke else FULL
    steps = options.steps or (1 if options.smoke else 32)
    started = time.perf_counter()
    print(f"backend {backend.name()}, device {backend.device()}, devices {', '.join(backend.parallel_devices())}")
    rates = {precision: matmul_rate(sizes["matmul"], precision) for precision in PRECISIONS}
    print("matmul " + ", ".join(f"{precision} {rate / 1e12:.2f} TFLOP/s" for precision, rate in rates.items())
          + f" ({sizes['matmul']}x{sizes['matmul']})")
    print(f"{'step':24} {'ms/step':>9} {'GFLOP/step':>11} {'of matmul':>10} {'compile s':>10} {'peak MiB':>9}")
    for label, case, name in (("dream", dream_case, sizes["network"]), ("style", style_case, sizes["style_network"])):
        for precision in PRECISIONS:
            with network_precision(precision):
                network = create_network(name, "random")
            for size in sizes["sizes"]:
                milliseconds, gigaflops, fraction, compile_seconds = step_row(case, network, size, precision, steps,
                                                                              rates)
                print(f"{f'{label} {size} px {precision}':24} {milliseconds:9.2f} {gigaflops:11.4g} {fraction:10.1%} "
                      f"{compile_seconds:10.2f} {format_memory(peak_memory()):>9}", flush=True)
    with network_precision("float32"):
        network = create_network(sizes["style_network"], "random")
    for size in sizes["sizes"]:
        milliseconds, host, iterations = lbfgs_row(network, size, max(steps, 2))
        print(f"style L-BFGS {size} px float32: {milliseconds:.2f} ms/iteration over {iterations} iterations, "
              f"{host:.0%} of it on the host; peak MiB {format_memory(peak_memory())}", flush=True)
    print(f"joint stack (pool1 to image, {sizes['stack_size']} px): {stack_rate(sizes):.0f} images/s")
    patch = sizes["dncnn_patch"]
    rate = training_rate(*dncnn(sizes["dncnn"], sizes["dncnn_batch"], patch))
    print(f"DnCNN training ({sizes['dncnn']}, {patch}x{patch}): {rate:.0f} patches/s")
    print(f"descriptor training (32x32 triplets): {descriptor_rate(sizes['descriptor_batch']):.0f} triplets/s")
    if len(backend.parallel_devices()) >= 2:
        parallel = backend.DataParallel(2)
        two = training_rate(*dncnn(sizes["dncnn"], 2 * sizes["dncnn_batch"], patch, parallel), parallel=parallel)
        one = training_rate(*dncnn(sizes["dncnn"], 2 * sizes["dncnn_batch"], patch))
        print(f"DnCNN data-parallel over 2 devices (batch {2 * sizes['dncnn_batch']}): {two:.0f} patches/s, "
              f"{two / one:.2f}x one device on the same batch ({one:.0f} patches/s)")
    else:
        print("data-parallel step: one device only, not run")
    peak = peak_memory()
    print("peak device memory: " + (f"{peak / 2**20:.0f} MiB" if peak is not None
                                    else f"unavailable on {backend.device()} (the backend reports none)"))
    print(f"total {time.perf_counter() - started:.0f} s")
    if backend.name() == "jax" and "tensorflow" in sys.modules:
        sys.exit("TensorFlow was imported on the JAX backend; expected none (the GPU machine has none).")


if __name__ == "__main__":
    main()
