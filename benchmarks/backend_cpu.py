"""A dream step on a CPU, TensorFlow against JAX, and the settings that might close the gap.

Usage: `python benchmarks/backend_cpu.py [--size 224 --steps 2 --tile 112 --skip-flags]`.

Every case runs in a fresh interpreter (the backend and XLA's flags are fixed when it starts), one after
the other: VGG16 with seeded random weights (a step's cost does not depend on the weights' values), the
dream objective of `deeprestore dream`'s default layers (block4_conv3 and block5_conv1), its normalised
step, clamp and jitter (32 px), through `Engine` and `optimise` as the recipe runs them, on one
`--size` x `--size` image. A child reports the first call's wall and CPU seconds (compilation and one
step), then the wall and CPU seconds per step of `--steps` more steps in one `optimise` call (steady
state), and its peak resident memory (`ru_maxrss`). CPU seconds are the process's, all its threads
together (`time.process_time`): on a shared machine they are the trustworthy figure, wall seconds
depend on the load. The ratio is JAX's CPU seconds per step over TensorFlow's.

The cases:
- `tensorflow`: as shipped (16 steps per compiled call, a `tf.while_loop`);
- `jax`: as shipped (on a CPU one step per compiled call, `backend.steps_per_call`);
- `jax loop`: JAX with the steps inside the compiled call's `fori_loop`, as before that setting, and the
  same with each XLA CPU flag that might change it (`--skip-flags` leaves these out): the legacy runtime
  (`--xla_cpu_use_thunk_runtime=false`, deprecated in jaxlib 0.10 and ignored), single-threaded Eigen
  (`--xla_cpu_multi_thread_eigen=false`; XLA has no flag for the number of intra-op threads, the
  other setting), oneDNN (`--xla_cpu_use_onednn=true`) and no XNNPACK (`--xla_cpu_use_xnnpack=false`);
- `tiled`: both backends with `--tile` px tiles in random mode, whose tiles run in a compiled loop on
  both (`backend.sequential_loop`), as `dream --tile` does.
Then the cause in isolation, in one more JAX child and one TensorFlow child: the input gradient of one
3x3 convolution (56x56, 256 to 256 channels, as block3 of VGG16 at 224 px) at the top level of a compiled
function and inside a loop of one iteration, channels last (NHWC, Keras's layout) and first (NCHW).
"""

import argparse
import json
import os
import subprocess
import sys
import textwrap

LAYERS = ("block4_conv3", "block5_conv1")  # `deeprestore dream`'s default layers for VGG16
STEP_SIZE = 0.008  # dream's default step, in units of the mean absolute gradient
JITTER = 32  # dream's default jitter, pixels
FLAGS = ("--xla_cpu_use_thunk_runtime=false", "--xla_cpu_multi_thread_eigen=false", "--xla_cpu_use_onednn=true",
         "--xla_cpu_use_xnnpack=false")

# One dream step measured in a child: `loop` puts JAX's steps back into the compiled loop, `tile` tiles.
STEP = """
import json, resource, sys, time
import numpy as np
from deeprestore import backend, objectives
from deeprestore.networks import create_network
from deeprestore.optimise import Engine, Plan, Progress, clamp, normalised_descent, optimise
from deeprestore.transforms import Tiling

size, steps, loop, tile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "loop", int(sys.argv[4])
if loop:
    backend.steps_per_call = lambda steps: steps
network = create_network("vgg16", "random")
engine = Engine.for_objective(-(objectives.l2({layers[0]!r}) + objectives.l2({layers[1]!r})), network)
image = np.random.default_rng(0).random((1, size, size, 3), np.float32)

def timed(count):
    wall, cpu = time.perf_counter(), time.process_time()
    optimise(engine, image, count, normalised_descent({step_size}),
             plan=Plan(jitter={jitter}, tiling=Tiling(tile, "random") if tile else None),
             callbacks=[clamp(), Progress(show=False)])
    return time.perf_counter() - wall, time.process_time() - cpu

first = timed(1)
steady = timed(steps)
print(json.dumps({{"first_wall": first[0], "first_cpu": first[1], "wall": steady[0] / steps,
                   "cpu": steady[1] / steps, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""

# The cause alone: one convolution's input gradient, at the top level and inside a loop.
CONVOLUTION_JAX = """
import json, time
import jax, jax.numpy as jnp, numpy as np

def cpu_seconds(function, *args):
    jax.block_until_ready(function(*args))
    start = time.process_time()
    for _ in range(3):
        jax.block_until_ready(function(*args))
    return (time.process_time() - start) / 3

results = {}
for layout, numbers in (("NHWC", ("NHWC", "HWIO", "NHWC")), ("NCHW", ("NCHW", "OIHW", "NCHW"))):
    rng = np.random.default_rng(0)
    images = rng.random((1, 56, 56, 256) if layout == "NHWC" else (1, 256, 56, 56), np.float32)
    kernel = rng.normal(0, 0.05, (3, 3, 256, 256) if layout == "NHWC" else (256, 256, 3, 3)).astype(np.float32)
    convolve = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=numbers)
    gradient = lambda x, w: jax.grad(lambda x: jnp.sum(jnp.square(convolve(x, w))))(x)
    top = jax.jit(gradient)
    looped = jax.jit(lambda x, w, n: jax.lax.fori_loop(0, n, lambda i, x: x + 1e-6 * gradient(x, w), x))
    results[layout] = {"top": cpu_seconds(top, images, kernel), "loop": cpu_seconds(looped, images, kernel, 1)}
print(json.dumps(results))
"""

CONVOLUTION_TENSORFLOW = """
import json, time
import numpy as np, tensorflow as tf

rng = np.random.default_rng(0)
images = tf.constant(rng.random((1, 56, 56, 256), np.float32))
kernel = tf.constant(rng.normal(0, 0.05, (3, 3, 256, 256)).astype(np.float32))

def gradient(x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(tf.square(tf.nn.conv2d(x, kernel, 1, "SAME")))
    return tape.gradient(loss, x)

top = tf.function(gradient)
looped = tf.function(lambda x, n: tf.while_loop(lambda i, x: i < n, lambda i, x: (i + 1, x + 1e-6 * gradient(x)),
                                                 (0, x), parallel_iterations=1)[1])

def cpu_seconds(function, *args):
    function(*args).numpy()
    start = time.process_time()
    for _ in range(3):
        function(*args).numpy()
    return (time.process_time() - start) / 3

print(json.dumps({"NHWC": {"top": cpu_seconds(top, images), "loop": cpu_seconds(looped, images, tf.constant(1))}}))
"""


def child(script, backend, arguments=(), flags=()):
    """Runs `script` in a fresh interpreter on `backend` with XLA `flags`; returns its last line as JSON."""
    environment = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
                   "XLA_FLAGS": " ".join(flags), "PYTHONPATH": os.pathsep.join(filter(None, [
                       os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.environ.get("PYTHONPATH")]))}
    completed = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *map(str, arguments)],
                               capture_output=True, text=True, env=environment, check=False)
    if completed.returncode:
        raise SystemExit(f"A {backend} child failed ({' '.join(flags)}):\n{completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="Side of the dreamed image, pixels.")
    parser.add_argument("--steps", type=int, default=2, help="Steady-state steps timed after the first call.")
    parser.add_argument("--tile", type=int, default=112, help="Tile side of the tiled cases (0: none).")
    parser.add_argument("--skip-flags", action="store_true", help="Leave out the XLA flag cases.")
    arguments = parser.parse_args()
    step = STEP.format(layers=LAYERS, step_size=STEP_SIZE, jitter=JITTER)
    cases = [("tensorflow", "tensorflow", "shipped", 0, ()), ("jax", "jax", "shipped", 0, ()),
             ("jax loop", "jax", "loop", 0, ())]
    if not arguments.skip_flags:
        cases += [(f"jax loop {flag}", "jax", "loop", 0, (flag,)) for flag in FLAGS]
    if arguments.tile:
        cases += [(f"tensorflow tiled {arguments.tile}", "tensorflow", "shipped", arguments.tile, ()),
                  (f"jax tiled {arguments.tile}", "jax", "shipped", arguments.tile, ())]
    print(f"A dream step at {arguments.size}x{arguments.size} on VGG16 (random weights), {arguments.steps} steps "
          f"timed after the first call; CPU seconds are all of a process's threads.")
    print(f"{'case':58} {'first call s (CPU)':>19} {'compile CPU s':>14} {'s/step':>7} {'CPU s/step':>11} "
          f"{'x TF CPU':>9} {'peak RSS':>9}")
    baseline = {}
    for label, backend, mode, tile, flags in cases:
        result = child(step, backend, (arguments.size, arguments.steps, mode, tile), flags)
        if backend == "tensorflow":
            baseline[tile] = result["cpu"]
        ratio = result["cpu"] / baseline[tile] if tile in baseline else float("nan")
        print(f"{label:58} {result['first_wall']:8.1f} ({result['first_cpu']:6.1f}) "
              f"{result['first_cpu'] - result['cpu']:14.1f} {result['wall']:7.2f} {result['cpu']:11.2f} "
              f"{ratio:9.2f} {result['rss_mib']:5.0f} MiB", flush=True)
    print("\nThe cause alone: CPU seconds of one 3x3 convolution's input gradient (56x56, 256 to 256 channels)")
    for backend, script in (("tensorflow", CONVOLUTION_TENSORFLOW), ("jax", CONVOLUTION_JAX)):
        for layout, seconds in child(script, backend).items():
            print(f"  {backend:10} {layout}: {seconds['top']:.3f} s at the top level, {seconds['loop']:.3f} s in a "
                  f"loop ({seconds['loop'] / seconds['top']:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
