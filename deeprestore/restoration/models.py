"""The denoiser registry: `create_model(name, channels)`, `get_spec(name)`, `list_models()`.

Each entry is a `ModelSpec`: how to build the network, the task it solves (`denoise` or `inpaint`),
whether its output is linear or a sigmoid, and the training defaults its seed used (loss, optimiser,
learning rate, batch and patch size), which every `denoise train` option overrides. Every network is
fully convolutional with standard Keras layers only, so a saved `model.keras` loads with
`keras.saving.load_model` in any program, and takes `(batch, height, width, channels)` float32 batches
in [0, 1] whose height and width are multiples of `SIZE_MULTIPLE`. Keras is imported by the functions
that build, measure or compile a model, so the registry (names, tasks, defaults) is read before any
backend loads: `denoise train --model` is checked in the time Python takes to start.
"""

import dataclasses

from deeprestore.errors import DeepRestoreError

# Two 2x2 poolings (the autoencoder) need sides divisible by 4; one rule for every model keeps the
# tiling in `apply` simple.
SIZE_MULTIPLE = 4
TASKS = ("denoise", "inpaint")
LOSSES = {"mae": "mean_absolute_error", "mse": "mean_squared_error", "bce": "binary_crossentropy"}
OPTIMISERS = ("sgd", "adam")
# cszn/DnCNN's Keras code: batch-norm epsilon 1e-4 and momentum 0, so the moving statistics are those
# of the last training batch (no warm-up bias in short runs).
DNCNN_EPSILON = 1e-4
DNCNN_MOMENTUM = 0.0
AUTOENCODER_DROPOUT = 0.25


@dataclasses.dataclass(frozen=True)
class TrainingDefaults:
    """What a model trains with unless told otherwise (seed values where the seed gives them).

    Attributes:
        loss: `mae`, `mse` or `bce`.
        optimiser: `sgd` (with Nesterov momentum) or `adam`.
        learning_rate: Step size.
        momentum: Nesterov momentum of `sgd` (unused by `adam`).
        batch_size: Patches per step.
        patch_size: Side of the square training patches, a multiple of `SIZE_MULTIPLE`.
        steps: Training steps of the bundled default run (sized to finish in about a minute on a CPU).
        channels: 1 (grey) or 3 (RGB).
        corruption: Corruption applied to clean patches, as a `corruptions.parse` spec.
    """

    loss: str
    optimiser: str
    learning_rate: float
    momentum: float
    batch_size: int
    patch_size: int
    steps: int
    channels: int
    corruption: str


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered restoration network.

    Attributes:
        name: Registry name.
        summary: One line for listings.
        reference: Where the architecture comes from.
        task: `denoise` (noisy in, clean out) or `inpaint` (image with a hole in, full image out).
        output: `linear` or `sigmoid` (binary cross-entropy needs `sigmoid`).
        build: `(channels, seed) -> keras.Model`.
        defaults: `TrainingDefaults`.
    """

    name: str
    summary: str
    reference: str
    task: str
    output: str
    build: object
    defaults: TrainingDefaults


def _seeded(initializer, seed):
    import keras

    # A seed generator, not an int: an int seed gives every layer of one shape the same kernel.
    return initializer(seed=keras.random.SeedGenerator(seed))


def unet(channels=1, seed=0):
    """Seed 004's shallow U-Net: 59,777 trainable parameters on one channel.

    Conv 16 3x3, max-pool 2, Conv 32 3x3, upsampling 2, Conv 64 2x2, concatenation with the first
    convolution (80 maps), Conv 64 3x3, Conv `channels` 3x3 linear; ReLU and same padding elsewhere;
    kernels from a truncated normal (He), as in the Keras U-Net the report follows.

    Reference:
        Hassan, 2019. Deep Learning Final Report (seed 004), figure 1. Ronneberger, Fischer & Brox,
        2015. U-Net: convolutional networks for biomedical image segmentation.
    """
    import keras

    initializer = _seeded(keras.initializers.HeNormal, seed)

    def conv(filters, size, name, activation="relu"):
        return keras.layers.Conv2D(filters, size, padding="same", activation=activation,
                                   kernel_initializer=initializer, name=name)

    images = keras.Input((None, None, channels), name="images")
    down = conv(16, 3, "conv1")(images)  # (batch, height, width, 16)
    bottleneck = conv(32, 3, "conv2")(keras.layers.MaxPooling2D(2, name="pool1")(down))
    up = conv(64, 2, "conv3")(keras.layers.UpSampling2D(2, name="up1")(bottleneck))
    merged = keras.layers.Concatenate(name="concat")([up, down])  # (batch, height, width, 80)
    outputs = conv(channels, 3, "conv5", activation=None)(conv(64, 3, "conv4")(merged))
    return keras.Model(images, outputs, name="unet")


def dncnn(channels=1, seed=0, depth=17, filters=64, batch_norm=True, residual=True, name="dncnn"):
    """DnCNN: `depth` convolutions of `filters` maps with batch normalisation, learning the noise (residual).

    Layer 1 is Conv+ReLU (with bias), layers 2 to `depth - 1` Conv (no bias)+BN+ReLU, the last Conv (no
    bias) to the noise, and the output is input minus noise. At the paper's 17 layers of 64 maps:
    640 + 15 x (36,864 + 128) + 576 = 556,096 trainable parameters on one channel (the report's
    count), plus 1,920 batch-norm statistics. `batch_norm=False` gives the middle convolutions biases
    instead; `residual=False` makes the last convolution output the clean image itself (the two
    ablations of the paper's section 4).

    Reference:
        Zhang, Zuo, Chen, Meng & Zhang, 2017. Beyond a Gaussian denoiser: residual learning of deep CNN
        for image denoising (and its Keras code, cszn/DnCNN: orthogonal kernels, BN epsilon 1e-4).
    """
    import keras

    initializer = _seeded(keras.initializers.Orthogonal, seed)
    images = keras.Input((None, None, channels), name="images")
    features = keras.layers.Conv2D(filters, 3, padding="same", kernel_initializer=initializer, name="conv1")(images)
    features = keras.layers.ReLU(name="relu1")(features)
    for index in range(2, depth):
        features = keras.layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm,
                                       kernel_initializer=initializer, name=f"conv{index}")(features)
        if batch_norm:
            features = keras.layers.BatchNormalization(epsilon=DNCNN_EPSILON, momentum=DNCNN_MOMENTUM,
                                                       name=f"bn{index}")(features)
        features = keras.layers.ReLU(name=f"relu{index}")(features)
    last = keras.layers.Conv2D(channels, 3, padding="same", use_bias=not residual, kernel_initializer=initializer,
                               name=f"conv{depth}")(features)
    outputs = keras.layers.Subtract(name="residual")([images, last]) if residual else last
    return keras.Model(images, outputs, name=name)


def autoencoder(channels=3, seed=0, doubled=False, batch_norm=False, dropout=0.0, name="autoencoder"):
    """Seed 001's convolutional autoencoder for inpainting a missing middle.

    Seven convolutions, two max-pools, two upsamplings: Conv 32, Conv 32, pool, Conv 64, pool,
    Conv 128 (the 1/4-size bottleneck), upsample, Conv 64, upsample, Conv 32, Conv `channels` with a
    sigmoid; 3x3 kernels, ReLU, same padding. The report gives the layer counts, not the widths: the
    widths here are ours. Variants: `doubled` repeats each hidden convolution (13 in all, "v2"),
    `batch_norm` puts batch normalisation after each hidden convolution (before its ReLU), `dropout`
    drops that fraction of each hidden convolution's outputs.

    Reference:
        Mesana, 2017. Deep Learning Class Project Journal, day 2 (seed 001).
    """
    import keras

    initializer = _seeded(keras.initializers.GlorotUniform, seed)
    counter = iter(range(1, 100))

    def block(features, filters):
        for _ in range(2 if doubled else 1):
            index = next(counter)
            features = keras.layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm,
                                           kernel_initializer=initializer, name=f"conv{index}")(features)
            if batch_norm:
                features = keras.layers.BatchNormalization(name=f"bn{index}")(features)
            features = keras.layers.ReLU(name=f"relu{index}")(features)
            if dropout:
                features = keras.layers.Dropout(dropout, seed=seed + index, name=f"dropout{index}")(features)
        return features

    images = keras.Input((None, None, channels), name="images")
    features = block(block(images, 32), 32)
    features = block(keras.layers.MaxPooling2D(2, name="pool1")(features), 64)
    features = block(keras.layers.MaxPooling2D(2, name="pool2")(features), 128)  # (batch, height/4, width/4, 128)
    features = block(keras.layers.UpSampling2D(2, name="up1")(features), 64)
    features = block(keras.layers.UpSampling2D(2, name="up2")(features), 32)
    outputs = keras.layers.Conv2D(channels, 3, padding="same", activation="sigmoid", kernel_initializer=initializer,
                                  name=f"conv{next(counter)}")(features)
    return keras.Model(images, outputs, name=name)


def _autoencoder_variant(name, **options):
    return lambda channels=3, seed=0: autoencoder(channels, seed, name=name, **options)


# Seed 004 trained the U-Net with SGD (Nesterov momentum 0.9) at 1e-5 on batches of 50 32x32 patches
# with mean absolute error, for 30 epochs of N-HPatches (hundreds of thousands of steps); at 1e-5 a few
# hundred steps leave it where it started, so the default here is the learning rule the seed chose for
# DnCNN, Adam at 1e-3, on batches of 16 (more steps per CPU minute). `--optimiser sgd --learning-rate
# 1e-5 --batch-size 50` is the seed's exact recipe. DnCNN: Adam at 1e-3 (seed 004), 40x40 patches (Zhang
# et al.). Seed 001: Adam and binary cross-entropy on 64x64 images with the middle 32x32 missing; its
# batch size is not given.
_SEED_004_UNET = TrainingDefaults(loss="mae", optimiser="adam", learning_rate=1e-3, momentum=0.9, batch_size=16,
                                  patch_size=32, steps=1000, channels=1, corruption="gaussian:0.1")
# DnCNN-S as Zhang et al. trained it: 40x40 patches, batches of 128, mean squared error on the noise,
# 50 epochs of 1,600 batches (80,000 steps). The paper used SGD with momentum 0.9 and weight decay,
# the step size decaying exponentially from 0.1 to 1e-4; the authors' Keras port, which seed 004
# follows, uses Adam at 1e-3, as here.
_PAPER_DNCNN = dataclasses.replace(_SEED_004_UNET, loss="mse", batch_size=128, patch_size=40, steps=80_000)
# `dncnn`, the DnCNN sized for CPU budgets: 10 convolutions of 32 maps (7.5x fewer operations per
# pixel than the paper's 17 of 64), residual learning and MSE, without batch normalisation, which at
# equal CPU budgets of a few minutes held it far back (experiments/denoise_ablation.py), for 2,000 steps:
# at 1,000 it trailed NL-means on the held-out camera (29.54 against 29.62 dB), at 2,000 it beats it on
# every held-out photo (the manual's denoise page has the table and the default run's learning curve).
DNCNN_DEPTH, DNCNN_FILTERS = 10, 32
_CPU_DNCNN = dataclasses.replace(_SEED_004_UNET, loss="mse", patch_size=40, steps=2000)
_SEED_001 = TrainingDefaults(loss="bce", optimiser="adam", learning_rate=1e-3, momentum=0.0, batch_size=32,
                             patch_size=32, steps=300, channels=3, corruption="centre:0.5")
_AUTOENCODER_REFERENCE = "Mesana 2017, seed 001"

REGISTRY = {spec.name: spec for spec in (
    ModelSpec("unet", "seed 004's shallow U-Net: 5 convolutions, one pool, one skip connection",
              "Hassan 2019, seed 004",
              "denoise", "linear", unet, _SEED_004_UNET),
    ModelSpec("dncnn", f"DnCNN sized for CPUs: {DNCNN_DEPTH} convolutions of {DNCNN_FILTERS} maps, residual "
              "learning, no batch norm", "Zhang et al. 2017", "denoise", "linear",
              lambda channels=1, seed=0: dncnn(channels, seed, depth=DNCNN_DEPTH, filters=DNCNN_FILTERS,
                                               batch_norm=False),
              _CPU_DNCNN),
    ModelSpec("dncnn-s", "DnCNN-S as published: 17 convolutions of 64 maps, batch norm, residual learning "
              "(predicts the noise)", "Zhang et al. 2017; seed 004", "denoise", "linear", dncnn, _PAPER_DNCNN),
    ModelSpec("autoencoder", "seed 001's convolutional autoencoder: 7 convolutions, 2 pools, 2 upsamplings",
              _AUTOENCODER_REFERENCE, "inpaint", "sigmoid", _autoencoder_variant("autoencoder"), _SEED_001),
    ModelSpec("autoencoder-v2", "the autoencoder with every hidden convolution doubled (13 convolutions)",
              _AUTOENCODER_REFERENCE, "inpaint", "sigmoid",
              _autoencoder_variant("autoencoder-v2", doubled=True), _SEED_001),
    ModelSpec("autoencoder-bn", "the autoencoder with batch normalisation after each hidden convolution",
              _AUTOENCODER_REFERENCE, "inpaint", "sigmoid",
              _autoencoder_variant("autoencoder-bn", batch_norm=True), _SEED_001),
    ModelSpec("autoencoder-dropout", f"the autoencoder with dropout {AUTOENCODER_DROPOUT} after each hidden "
              "convolution", _AUTOENCODER_REFERENCE, "inpaint", "sigmoid",
              _autoencoder_variant("autoencoder-dropout", dropout=AUTOENCODER_DROPOUT), _SEED_001),
)}


def list_models():
    """Returns the registered model names."""
    return tuple(REGISTRY)


def get_spec(name):
    """Returns the registry entry of a model.

    Raises:
        DeepRestoreError: No model has that name.
    """
    if name not in REGISTRY:
        raise DeepRestoreError(f"Unknown model '{name}'; expected one of {', '.join(REGISTRY)}.")
    return REGISTRY[name]


def create_model(name, channels=None, seed=0):
    """Builds a registered model with seeded weights.

    Args:
        name: A registered name (`list_models()`).
        channels: 1 or 3; `None` takes the model's default.
        seed: Seed of the initial weights and of dropout.

    Returns:
        An uncompiled `keras.Model` taking `(batch, height, width, channels)`.

    Raises:
        DeepRestoreError: Unknown model or channel count.
    """
    spec = get_spec(name)
    channels = spec.defaults.channels if channels is None else channels
    if channels not in (1, 3):
        raise DeepRestoreError(f"Model '{name}' takes 1 or 3 channels; got {channels}.")
    return spec.build(channels=channels, seed=seed)


def trainable_parameters(model):
    """The number of trainable parameters of a model."""
    import keras

    return sum(int(keras.ops.size(variable)) for variable in model.trainable_variables)


def check_loss(loss, name, output):
    """Raises a `DeepRestoreError` for an unknown loss, or binary cross-entropy on a linear output."""
    if loss not in LOSSES:
        raise DeepRestoreError(f"Unknown loss '{loss}'; expected one of {', '.join(LOSSES)}.")
    if loss == "bce" and output != "sigmoid":
        raise DeepRestoreError(
            f"Loss 'bce' needs outputs in [0, 1]; model '{name}' has a {output} output. Expected "
            "--loss mae or mse, or an autoencoder model."
        )


def compile_model(model, loss, optimiser, learning_rate, momentum=0.0, output="linear", decay_steps=None):
    """Compiles a restoration model with a named loss and optimiser and a mean-squared-error metric.

    Only Keras's own losses, optimisers, schedules and metrics are used, so the saved model loads anywhere.

    Args:
        model: The model.
        loss: `mae`, `mse` or `bce`.
        optimiser: `sgd` (Nesterov momentum) or `adam`.
        learning_rate: Step size (the first one, with `decay_steps`).
        momentum: Nesterov momentum for `sgd`.
        output: The model's output kind, `linear` or `sigmoid`.
        decay_steps: Cosine decay of the step size to 0 over this many steps; None keeps it constant.

    Raises:
        DeepRestoreError: Unknown loss or optimiser, or binary cross-entropy on a linear output.
    """
    import keras

    check_loss(loss, model.name, output)
    if optimiser not in OPTIMISERS:
        raise DeepRestoreError(f"Unknown optimiser '{optimiser}'; expected one of {', '.join(OPTIMISERS)}.")
    if decay_steps:
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps)
    if optimiser == "sgd":
        step_rule = keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=momentum > 0)
    else:
        step_rule = keras.optimizers.Adam(learning_rate)
    model.compile(optimizer=step_rule, loss=LOSSES[loss], metrics=["mse"])
    return model
