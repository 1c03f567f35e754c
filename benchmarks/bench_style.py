"""Times our style-transfer step against the keras-io neural-style-transfer example's, side by side.

Usage: `python benchmarks/bench_style.py [--size 400 --steps 2 --network vgg19 --weights random]`.

One script, one network (VGG19 with seeded random weights by default: the speed of a step does not
depend on the values of the weights, and both sides use the same ones), the same layers (keras-io's:
content block5_conv2, style block1_conv1 .. block5_conv1, all after their ReLU), image size and backend:
- ours: `Engine` over `deeprestore.recipes.style.style_objective`, the content activations and style
  Gram matrices computed once and passed as targets, one Adam step per iteration;
- keras-io (keras.io/examples/generative/neural_style_transfer): one `tf.function` that pushes the
  content, style and generated images through the network as one batch every step, recomputes the
  style Grams each time, and an SGD step with `apply_gradients`.
Prints seconds per step for each and the steps-per-second ratio (the goal: 2.5 or more at 400 px).
"""

import argparse
import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

from deeprestore import objectives
from deeprestore.networks import create_network
from deeprestore.optimise import Adam, Engine, Progress, optimise
from deeprestore.recipes.style import style_objective
from deeprestore.settings import StyleSettings

CONTENT_LAYER = "block5_conv2"  # keras-io's names, the same tensors here: after the ReLU
STYLE_LAYERS = tuple(f"block{block}_conv1" for block in range(1, 6))
CONTENT_WEIGHT = 2.5e-8  # keras-io's weights
STYLE_WEIGHT = 1e-6
TV_WEIGHT = 1e-6


def keras_io_step(network, content, style, size):
    """The keras-io example's `compute_loss_and_grads` and SGD step, on our network's model."""
    model = network.model
    names = (CONTENT_LAYER, *STYLE_LAYERS)
    extractor = keras.Model(model.input, {name: model.get_layer(name).output for name in names})

    def gram_matrix(x):
        x = tf.transpose(x, (2, 0, 1))
        features = tf.reshape(x, (tf.shape(x)[0], -1))
        return tf.matmul(features, tf.transpose(features))

    def style_loss(style_features, combination):
        channels, pixels = 3, size * size  # sic: keras-io normalises by 3 channels
        difference = gram_matrix(style_features) - gram_matrix(combination)
        return tf.reduce_sum(tf.square(difference)) / (4.0 * (channels**2) * (pixels**2))

    def total_variation_loss(x):
        a = tf.square(x[:, : size - 1, : size - 1, :] - x[:, 1:, : size - 1, :])
        b = tf.square(x[:, : size - 1, : size - 1, :] - x[:, : size - 1, 1:, :])
        return tf.reduce_sum(tf.pow(a + b, 1.25))

    @tf.function
    def compute_loss_and_grads(combination, base, reference):
        with tf.GradientTape() as tape:
            features = extractor(tf.concat([base, reference, combination], axis=0))
            layer = features[CONTENT_LAYER]
            loss = CONTENT_WEIGHT * tf.reduce_sum(tf.square(layer[2] - layer[0]))
            for name in STYLE_LAYERS:
                loss += (STYLE_WEIGHT / len(STYLE_LAYERS)) * style_loss(features[name][1], features[name][2])
            loss += TV_WEIGHT * total_variation_loss(combination)
        return loss, tape.gradient(loss, combination)

    optimizer = keras.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(100.0, 100, 0.96))
    combination = tf.Variable(content[None])
    base, reference = tf.constant(content[None]), tf.constant(style[None])

    def steps(count):
        for _ in range(count):
            _, gradients = compute_loss_and_grads(combination, base, reference)
            optimizer.apply_gradients([(gradients, combination)])
        combination.numpy()

    return steps


def our_step(network, content, style):
    """Our style step: the compiled objective over the generated image only, targets computed once."""
    settings = StyleSettings(content_weight=CONTENT_WEIGHT, style_weight=STYLE_WEIGHT, tv_weight=0.0)
    weights = np.full(len(STYLE_LAYERS), 1.0 / len(STYLE_LAYERS))
    engine = Engine.for_objective(style_objective(CONTENT_LAYER, STYLE_LAYERS, weights, settings), network)
    content_features = engine.probe.features(content[None])
    style_features = engine.probe.features(style[None])
    targets = {f"content.{CONTENT_LAYER}": content_features[CONTENT_LAYER],
               **{f"gram.{layer}": objectives.gram_numpy(style_features[layer][0])[None] for layer in STYLE_LAYERS}}
    state = {"image": content[None].copy(), "rule": Adam(0.02)}

    def steps(count):
        state["image"], _ = optimise(engine, state["image"], count, state["rule"], callbacks=[Progress(show=False)],
                                     targets=targets)

    return steps


def seconds_per_step(function, steps):
    """Warms `function` up with one step, then times `steps` steps."""
    function(1)
    start = time.perf_counter()
    function(steps)
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=400, help="image side")
    parser.add_argument("--steps", type=int, default=2, help="timed steps of each side")
    parser.add_argument("--network", default="vgg19", help="registered network")
    parser.add_argument("--weights", default="random", help="weights for both sides")
    arguments = parser.parse_args()

    network = create_network(arguments.network, arguments.weights, "max")
    rng = np.random.default_rng(0)
    content, style = (rng.uniform(size=(arguments.size, arguments.size, 3)).astype(np.float32) for _ in range(2))
    ours = seconds_per_step(our_step(network, content, style), arguments.steps)
    theirs = seconds_per_step(keras_io_step(network, content, style, arguments.size), arguments.steps)
    print(f"backend {keras.backend.backend()}, {arguments.network} {arguments.weights} weights, "
          f"{arguments.size}x{arguments.size}")
    print(f"{'':10} {'s/step':>8} {'steps/s':>8}")
    print(f"{'ours':10} {ours:8.3f} {1 / ours:8.3f}")
    print(f"{'keras-io':10} {theirs:8.3f} {1 / theirs:8.3f}")
    print(f"ratio of steps/s (ours / keras-io): {theirs / ours:.2f}x")


if __name__ == "__main__":
    main()
