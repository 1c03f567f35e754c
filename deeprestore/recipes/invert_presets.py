"""The presets of optimisation-based inversion (Mahendran & Vedaldi 2015, 2016, and the measured `lbfgs`):
the objective, the step rules and constraints, chosen by a layer's depth, and the inputs of a run.

The loss is `C * ||phi(x) - phi0||^2 / ||phi0||^2 + R_alpha(x) + R_TV(x)` with the priors on the
network's input (mean-subtracted, 0-255), normalised as in the 2016 paper:
`R_alpha = sum_ij ||x_ij / B||^alpha / (H W)` and `R_TV = sum_ij ((dx^2 + dy^2) / V^2)^(beta/2) / (H W)`,
`B = 80` and `V = B / 6.5`.
"""

import dataclasses

import keras
import numpy as np

from deeprestore import images as image_io
from deeprestore import objectives
from deeprestore.errors import DeepRestoreError
from deeprestore.optimise import LBFGS, Adam, Constraint, Momentum, step_schedule
from deeprestore.recipes.checks import check_learning_rate

# Mahendran & Vedaldi 2016: the typical pixel norm of a mean-subtracted 0-255 image, and the TV scale.
B = 80.0
V = B / 6.5


@dataclasses.dataclass(frozen=True)
class Preset:
    """One paper's settings for a layer.

    Attributes:
        alpha: Exponent of the alpha-norm prior.
        beta: Exponent of the total-variation prior.
        feature_weight: `C`, the weight of the normalised feature loss.
        alpha_weight: Weight of the alpha-norm prior.
        tv_weight: Weight of the total-variation prior.
        jitter: Largest random shift per step, in pixels.
        optimiser: `momentum`, `adam` or `lbfgs`.
        learning_rate: On [0, 1] pixels (none for L-BFGS).
        steps: Iterations.
        constrain: Keep each pixel's norm within `2 B` (the 2016 range constraint).
        history: Correction pairs L-BFGS keeps (scipy's `maxcor`).
        start_noise: Half-width of the uniform noise, around mid-grey, that the optimisation starts from
            (0.5: uniform on [0, 1]).
    """

    alpha: float
    beta: float
    feature_weight: float
    alpha_weight: float
    tv_weight: float
    jitter: int
    optimiser: str
    learning_rate: float
    steps: int
    constrain: bool
    history: int = 10
    start_noise: float = 0.5


def depth_band(network, layer):
    """The layer's stage in Mahendran & Vedaldi's tables: 0 up to conv1 (norm1), 1 up to conv2 (norm2),
    2 up to conv3, 3 up to conv4, 4 up to conv5, 5 from pool5 on.

    AlexNet's stages end at norm1, norm2, relu3, relu4 and relu5. VGG's are the analogous blocks: the
    first two blocks up to their last ReLU, blocks 3 and 4 up to their pooling, block 5 up to its last
    ReLU.
    """
    layers = network.layers
    index = layers.index(layer)
    if network.name == "alexnet":
        marks = ["norm1", "norm2", "relu3", "relu4", "relu5"]
        bands = [0, 1, 2, 3, 4]
    else:
        marks = [name for name in ("block1_conv2", "block2_conv2", "block3_pool", "block4_pool", "block5_conv3",
                                   "block5_conv4") if name in layers]
        bands = [0, 1, 2, 3, 4, 4][: len(marks)]
    for mark, band in zip(marks, bands):
        if mark in layers and index <= layers.index(mark):
            return band
    return 5


# Mahendran & Vedaldi 2016's feature weight C and jitter by stage (conv1, conv2, conv3, conv4, conv5,
# pool5 on): C = 300 up to conv3, 100 at conv4, 20 at conv5, 1 from pool5; jitter 1 up to norm1, 2 up to
# norm2, 4 up to conv5, 8 from pool5.
FEATURE_WEIGHTS = (300.0, 300.0, 300.0, 100.0, 20.0, 1.0)
JITTER = (1, 2, 4, 4, 4, 8)
# Mahendran & Vedaldi 2015's TV weight: 0.5 for conv1 to conv2, 5 for conv3 to conv4, 50 from conv5 on.
TV_WEIGHTS_2015 = (0.5, 0.5, 5.0, 5.0, 50.0, 50.0)
# The `lbfgs` preset, chosen by `experiments/invert_sweep.py` (VGG16 offline weights, astronaut at 128 px,
# block2_conv2, 300 iterations from uniform noise; the table is on the manual's invert page). With the
# 2016 priors at weight 1 the alpha-norm costs 59 per pixel of that image and TV 23, against C = 300
# times a feature error of a few thousandths: L-BFGS reached 14.9 dB. Without the alpha-norm (the
# [0, 1] bounds keep the range), TV weights 0.01, 0.1 and 0.3 gave 17.3, 18.6 and 20.2 dB (SSIM 0.70,
# 0.82, 0.80) with 10 correction pairs; TV 0.2 with 50 pairs gave 20.9 dB, SSIM 0.83, feature error
# 0.004. C stays 300 at every depth, so that deep layers are matched closely too.
LBFGS_FEATURE_WEIGHT = 300.0
LBFGS_TV_WEIGHT = 0.2
LBFGS_HISTORY = 50


def preset(name, network, layer):
    """The settings of a preset for a layer of a network.

    mv2015: alpha 6, beta 2, TV weight 0.5 for conv1 to conv2, 5 for conv3 to conv4, 50 from conv5 on,
    SGD with momentum 0.9 and a decaying step, 600 iterations (and the 2016 feature weights C, see
    below). mv2016: C = 300 up to conv3, 100 at conv4, 20 at conv5, 1 from pool5; jitter 1 up to norm1,
    2 up to norm2, 4 up to conv5, 8 from pool5; Adam with a step schedule, 3500 iterations, the 2B range
    constraint. lbfgs: the 2016 objective with the weights measured for L-BFGS (`LBFGS_TV_WEIGHT`:
    C = 300 at every depth, TV weight 0.2, no alpha-norm), no jitter, L-BFGS with 50 correction pairs
    and the pixels kept in [0, 1], 300 iterations.
    """
    band = depth_band(network, layer)
    feature_weight = FEATURE_WEIGHTS[band]
    if name == "mv2015":
        # The 2015 TV weights on the 2016 normalisation of priors and data term (C by depth): the 2015
        # paper's own scaling of the data term is not reproduced here.
        return Preset(6.0, 2.0, feature_weight, 1.0, TV_WEIGHTS_2015[band], 0, "momentum", 0.01, 600, False)
    if name == "lbfgs":
        return Preset(6.0, 2.0, LBFGS_FEATURE_WEIGHT, 0.0, LBFGS_TV_WEIGHT, 0, "lbfgs", 0.0, 300, False,
                      history=LBFGS_HISTORY)
    return Preset(6.0, 2.0, feature_weight, 1.0, 1.0, JITTER[band], "adam", 0.05, 3500, True)


def inversion_objective(layer, settings, pixels, prior_on="preprocess", norm=B):
    """`C * feature + R_alpha + R_TV` for images of `pixels` = H W.

    Args:
        layer: The inverted layer.
        settings: A `Preset`.
        pixels: Positions of the optimised tensor, `H W`.
        prior_on: What the priors read: the network's input, or the intermediate layer inverted to.
        norm: `B`, the typical norm of one position of that tensor (the TV scale is `B / 6.5`).
    """
    return (
        settings.feature_weight * objectives.normalised_distance(layer)
        + (settings.alpha_weight / pixels) * objectives.alpha_norm(
            settings.alpha, prior_on, scale=norm, pixel_norm=True)
        + (settings.tv_weight / pixels) * objectives.total_variation(settings.beta, prior_on, scale=norm / 6.5)
    )


def range_constraint(spec):
    """Projects each pixel of the network's input onto the ball of norm `2 B` (Mahendran & Vedaldi 2016),
    on the device after every step.

    The network's preprocessing and its inverse are affine per pixel (a colour matrix and an offset),
    so they are read off the spec's numpy functions once and applied with `keras.ops`.
    """
    basis = np.concatenate([np.zeros((1, 3), np.float32), np.eye(3, dtype=np.float32)])
    inputs = spec.preprocess(basis)
    to_inputs, input_offset = inputs[1:] - inputs[:1], inputs[0]
    channels = np.concatenate([np.zeros((1, inputs.shape[-1]), np.float32), np.eye(inputs.shape[-1], dtype=np.float32)])
    outputs = spec.deprocess(channels)
    to_images, image_offset = outputs[1:] - outputs[:1], outputs[0]

    def project(images, number):
        inputs = keras.ops.matmul(images, to_inputs) + input_offset
        norms = keras.ops.sqrt(keras.ops.sum(keras.ops.square(inputs), axis=-1, keepdims=True))
        inputs = inputs * keras.ops.minimum(1.0, 2 * B / keras.ops.maximum(norms, 1e-8))
        return keras.ops.matmul(inputs, to_images) + image_offset

    return Constraint(("range", tuple(to_inputs.ravel()), tuple(input_offset.ravel())), project)


def step_rule_for(settings, steps, bounds=(0.0, 1.0)):
    """Momentum SGD or Adam, with the rate divided by 10 after 60% and again after 85% of the steps, or
    L-BFGS keeping every variable within `bounds` (`(low, high)`, either None for no limit, or None)."""
    if settings.optimiser == "lbfgs":
        return LBFGS(bounds=bounds, history=settings.history)
    schedule = step_schedule((int(0.6 * steps), int(0.85 * steps)), (0.1, 0.01))
    if settings.optimiser == "momentum":
        return Momentum(settings.learning_rate, 0.9, schedule)
    return Adam(settings.learning_rate, schedule=schedule)


def chosen_preset(settings, network, layer):
    """The preset for the layer, with the settings' steps and learning rate where given.

    Raises:
        DeepRestoreError: A learning rate is given for a preset that uses L-BFGS, which has none.
    """
    check_learning_rate(settings)
    chosen = preset(settings.preset, network, layer)
    return dataclasses.replace(
        chosen, steps=settings.steps or chosen.steps, learning_rate=settings.learning_rate or chosen.learning_rate
    )


def load_images(pending, size):
    """`(batch, size, size, 3)` images of `pending` items `(position, source, name)`, resized."""
    return np.stack([image_io.resize(image_io.load_image(source), square(size)) for _, source, _ in pending])


def square(size):
    return (size, size) if isinstance(size, (int, np.integer)) else tuple(size)


def source_layer(network, to, layer):
    """The canonical name of `--to`, checked to come before the inverted layer.

    Raises:
        DeepRestoreError: `to` is unknown, or not below `layer`.
    """
    try:
        source = network.resolve(to)
    except DeepRestoreError as error:
        raise DeepRestoreError(f"--to: {error}") from None
    order = network.layers
    if order.index(source) >= order.index(layer):
        raise DeepRestoreError(
            f"--to '{to}' is not below the inverted layer '{layer}' of '{network.name}'; expected one of the "
            f"layers before it: {', '.join(order[: order.index(layer)])}."
        )
    return source

