"""Every command's settings: their defaults, types, ranges and help, each written once.

Each experiment has a frozen dataclass here. A field holds everything about one setting: its type (the
annotation), its default, and in its metadata (see `option`) its help, its range or choices and how the
command line spells it. The commands generate their click options from the fields
(`deeprestore.options`), the recipes take an instance, `config.json` stores it, and the
classes' docstrings list the fields' help for the API reference; so `--help`, the stored settings and
the manual cannot drift apart. This module imports nothing heavy (no Keras, no click), so the CLI can
read it before choosing a backend.
"""

import dataclasses
import inspect

START_CHOICES = ("image", "noise", "grey")
# The network's arithmetic in the image-optimisation recipes: `bfloat16` is Keras's mixed precision
# (weights, the image and the step stay float32; the forward and backward passes run in bfloat16).
PRECISIONS = ("float32", "bfloat16")
# What the optimiser steps on: the pixels, or a decorrelated-colour Fourier spectrum (`parametrisations`).
PARAMETRISATIONS = ("pixels", "fourier")
POOLINGS = ("max", "average")
TILE_MODES = ("random", "contiguous", "overlap")

# The keys `option` puts in a field's metadata, besides `help`.
_OPTION_KEYS = ("flag", "aliases", "choices", "at_least", "at_most", "above", "below", "item", "path", "exists",
                "metavar", "kind", "required", "shown_default")


def option(default, help, **details):
    """A settings field with its command-line option described in its metadata.

    Args:
        default: The default value. A tuple makes a repeatable option (see `item`), a bool a flag
            (`--x/--no-x` when it defaults to True).
        help: The help text, shown by `--help`, in the manual's CLI reference and in the class's
            docstring.
        **details: What the option needs beyond the field's type and default, all optional:
            `flag` (its spelling when not `--field-name`, e.g. `--from`), `aliases` (old spellings that
            parse but are left out of `--help`), `choices`, the bounds `at_least`/`at_most` (closed)
            and `above`/`below` (open), `item` (the type of a repeatable option's values, default str),
            `path` (`file`, `folder` or `any`) with `exists`, `metavar`, `kind` (`size` for
            `HEIGHTxWIDTH`, `devices` for a count or `all`), `required`, `shown_default` (what `--help`
            says of a None default).

    Returns:
        A `dataclasses.field`.

    Raises:
        TypeError: An unknown detail (a typo would otherwise be silently ignored).
    """
    unknown = set(details) - set(_OPTION_KEYS)
    if unknown:
        raise TypeError(f"unknown option details {sorted(unknown)}; expected some of {_OPTION_KEYS}")
    return dataclasses.field(default=default, metadata={"help": help, **details})


def settings_class(cls):
    """Makes `cls` a frozen dataclass and lists its fields' help under `Args:` in its docstring
    (they are its constructor's arguments; the API reference shows each beside its type)."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    entries = [f"    {field.name}: {field.metadata['help']}" for field in dataclasses.fields(cls)]
    cls.__doc__ = inspect.cleandoc(cls.__doc__) + "\n\nArgs:\n" + "\n".join(entries) + "\n"
    return cls


# Fields several commands share, written once.

MODEL_FILES = "Network name or Keras model file (see `deeprestore nets` and the manual's networks page)."
DEVICES_HELP = ("Devices to train on, data-parallel: a number (the first GPUs, or CPU devices where there are no "
                "GPUs) or all. --batch-size is the global batch, split evenly (a multiple of the devices); the "
                "learning rate is not rescaled.")


def network_field():
    return option("vgg16", MODEL_FILES)


def weights_field():
    return option("auto", "auto, imagenet, offline, random, or a weights file (see the manual's networks page).")


def precision_field():
    return option("float32", "The network's arithmetic: bfloat16 is mixed precision for GPUs (the image and the step "
                             "stay float32).", choices=PRECISIONS)


def pooling_field(default):
    return option(default, "Pooling of the network: max, or average (smoother gradients; the paper's choice for "
                           "style and textures).", choices=POOLINGS)


def cache_field():
    return option(None, "HDF5 activation cache shared across runs (default: a named run's own activations.h5; a "
                        "plain run keeps them in memory).", path="file")


def shard_field():
    return option(None, "I/N: process only the I-th of N shares of a folder or list of images (cluster array jobs).",
                  metavar="I/N")


def data_cache_field(what):
    return option(None, f"Folder for the resized dataset and {what}, shared across runs (default: the run's data/).",
                  path="folder")


def devices_field():
    return option(1, DEVICES_HELP, kind="devices")


def keep_every_field():
    return option(0, "Keep every checkpoint whose step is a multiple of this besides the last (0: only the last).",
                  at_least=0)


def tensorboard_field():
    return option(False, "Also write TensorBoard event files (losses, and images at each validation) into the run's "
                         "tensorboard/; uses TensorFlow's writer, also on JAX.")


@settings_class
class DreamSettings:
    """DeepDream: normalised gradient ascent on layer objectives, over octaves (seed 003; Mordvintsev et al.).

    Objective options are strings as typed on the command line (`block4_conv3:0.5`); the dream recipe
    parses them (`deeprestore.recipes.dream.parse_terms`). All given terms are summed; with none, the
    network's default dream layers are used.
    """

    images: str = option("astronaut", "Start image: a file, a bundled sample (astronaut, brick, chelsea, coffee, "
                                      "grass, ...), or a folder or list file of images (dreamed one by one with the "
                                      "network loaded once).", aliases=("--image",))
    network: str = network_field()
    weights: str = weights_field()
    precision: str = precision_field()
    pooling: str = pooling_field("max")
    layers: tuple = option((), "Raise the L2 norm of a layer's response, with a weight (default 1); repeat for a "
                               "weighted sum. Without any objective option: the network's dream layers.",
                           flag="--layer", metavar="LAYER[:WEIGHT]")
    channels: tuple = option((), "Raise the mean activation of one channel; repeatable.", flag="--channel",
                             metavar="LAYER:INDEX[:WEIGHT]")
    neurons: tuple = option((), "Raise one unit: a channel at the centre of the layer's grid; repeatable.",
                            flag="--neuron", metavar="LAYER:INDEX[:WEIGHT]")
    classes: tuple = option((), "Raise a class logit (pre-softmax), averaged over the convolutional head's positions; "
                                "builds the classifier head (needs --weights imagenet, a file or random).",
                            flag="--class", metavar="INDEX[:WEIGHT]")
    guide: str | None = option(None, "Guided dreaming: at the L2 layers, raise the dot product with this image's "
                                     "features.", metavar="IMAGE")
    cycle: tuple = option((), "A stage of a multi-layer cycle, run in the order given (seed 003, 2.5); replaces "
                              "--layer, --steps and --step-size.", metavar="LAYER:STEP_SIZE:STEPS")
    cycles: int = option(1, "Passes over the --cycle stages at each octave.", at_least=1)
    size: int = option(384, "Longer side of the working image in pixels (0: keep the input size).", at_least=0)
    octaves: int = option(4, "Number of scales, processed from the smallest.", at_least=1)
    octave_scale: float = option(1.4, "Size ratio between consecutive octaves.", at_least=1.0)
    steps: int = option(10, "Gradient steps per octave.", at_least=1)
    step_size: float = option(0.008, "Step in units of the mean absolute gradient.", above=0.0)
    jitter: int = option(32, "Largest random shift before each step, pixels.", at_least=0)
    start: str = option("image", "Start from the image, seeded uniform noise, or grey.", choices=START_CHOICES)
    tile: int = option(0, "Compute gradients tile by tile, tiles of this many pixels (0: whole image).", at_least=0)
    tile_mode: str = option("random", "random: grid shifted each step, no seams; contiguous: fixed grid, seams show; "
                                      "overlap: fixed grid with --tile-overlap, shared regions updated several times.",
                            choices=TILE_MODES)
    tile_overlap: int = option(124, "Overlap of neighbouring tiles in overlap mode, pixels (seed 003: 124 on 224 px "
                                    "tiles).", at_least=0)
    blur_every: int = option(0, "Gaussian blur every this many steps (0: never).", at_least=0)
    blur_sigma: float = option(0.5, "Standard deviation of the blur, pixels.", at_least=0.0)
    clamp: bool = option(True, "Keep pixels within [0, 1] after each step.")
    scaling: float = option(1.0, "Scale the image towards grey by this factor after each step (1: off; seed 003).",
                            above=0.0, at_most=1.0)
    l2_decay: float = option(0.0, "Weight of an L2 penalty mean((x - 0.5)^2) on the image (0: off).", at_least=0.0)
    parametrisation: str = option(
        "pixels", "What each octave steps on: the pixels, or a decorrelated-colour Fourier spectrum (lucid's, see "
                  "`deeprestore.parametrisations`; smoother patterns). Jitter, tiles, blur, scaling and L2 decay "
                  "apply to its images; its sigmoid keeps pixels in [0, 1], so it refuses --no-clamp.",
        choices=PARAMETRISATIONS)
    decay_power: float = option(0.5, "fourier: scale the spectrum by 1 / frequency ^ this. lucid's 1 spends a dream's "
                                     "steps on low-frequency colour drift; 0.5 keeps the patterns and smooths them.",
                                at_least=0.0)
    frames: int = option(1, "Zoom loop: frames, each dreamed from the previous one zoomed (centre 1/--zoom resized "
                            "back); saved as PNGs and a GIF (1: off).", at_least=1)
    zoom: float = option(1.05, "Zoom factor between frames.", at_least=1.0)
    save_every: int = option(0, "Save the image every this many steps into images/ (0: never).", at_least=0)
    cache: str | None = cache_field()
    shard: str | None = shard_field()


DREAM = DreamSettings()

MODULE_TYPES = ("cd", "dc", "dd", "upconv")
STACK_MODES = ("separate", "joint", "end-to-end", "fine-tune")


@settings_class
class StackSettings:
    """Training a stack of inversion modules, one per network operation (seed 000; Dosovitskiy & Brox)."""

    network: str = network_field()
    weights: str = weights_field()
    modules: str | None = option(None, "JSON/YAML module spec file (default: one module per operation from --from to "
                                       "--to).", path="file", exists=True)
    source: str = option("pool1", "Layer the default chain inverts from (e.g. pool1).", flag="--from")
    target: str = option("image", "Layer the default chain inverts to, or image.", flag="--to")
    module_type: str = option("cd", "Type of every default module: conv-deconv, deconv-conv, deconv-deconv or "
                                    "upsample-conv.", flag="--type", choices=MODULE_TYPES)
    mode: str = option("separate", "separate: each module on true activations; joint: weighted sum of module losses "
                                   "along the chain; end-to-end: final loss only; fine-tune: joint from --init at "
                                   "--fine-tune-learning-rate.", choices=STACK_MODES)
    images: str = option("bundled", "Training images: bundled (scikit-image photos, crops and flips), a folder or a "
                                    "list file.")
    size: int = option(64, "Side of the square training crops (VGG convolutions work at any size).", at_least=8)
    validation: int = option(10, "Images held out for validation.", at_least=1)
    steps: int = option(200, "Optimisation steps in all (a resumed run continues to this many).", at_least=1)
    batch_size: int = option(8, "Images per step.", at_least=1)
    learning_rate: float = option(1e-3, "Adam's learning rate.", above=0.0)
    fine_tune_learning_rate: float = option(1e-4, "Adam's learning rate in --mode fine-tune.", above=0.0)
    init: str | None = option(None, "Stack run (or its modules/ folder) whose module weights to start from.",
                              path="folder", exists=True)
    validate_every: int = option(50, "Steps between validation losses and reconstruction figures (0: only at the "
                                     "end).", at_least=0)
    checkpoint_every: int = option(50, "Steps between checkpoints (what a killed run can lose).", at_least=1)
    channel_losses: bool = option(False, "Also log each target channel's error.")
    data_cache: str | None = data_cache_field("cached activations")
    figure_images: int = option(4, "Validation images in each reconstruction figure.", at_least=1)
    devices: int | str = devices_field()
    keep_every: int = keep_every_field()
    tensorboard: bool = tensorboard_field()


STACK = StackSettings()


@settings_class
class LearnedInversionSettings:
    """Defaults of `invert --method learned`: reconstruction through a trained stack."""

    stack: str | None = option(None, "A stack run (or its modules/ folder) from `deeprestore stack`.", path="folder",
                               exists=True)
    layer: str = option("", "Layer to reconstruct from; empty means the stack's deepest input.")
    size: int = option(0, "Side of the square centre crops; 0 means the size the stack was trained at.", at_least=0)
    batch_size: int = option(8, "Images per forward pass.", at_least=1)


INVERT_LEARNED = LearnedInversionSettings()


@settings_class
class DeconvnetSettings:
    """Defaults of `invert --method deconvnet` (Zeiler & Fergus 2014; seed 002)."""

    images: str = option("bundled", "Images to search for the strongest activations: bundled, a folder or a list "
                                    "file.")
    layers: tuple = option((), "Layers to visualise; empty means every pooling layer.", flag="--layer")
    channels: int = option(8, "Channels per layer (the first ones), a row each in the figure.", at_least=1)
    top: int = option(9, "Strongest activations shown per channel (nine in Zeiler & Fergus).", at_least=1)
    size: int = option(0, "Side of the square centre crops; 0 means the network's input size.", at_least=0)
    batch_size: int = option(8, "Images per forward pass.", at_least=1)
    data_cache: str | None = data_cache_field("activation maxima")


INVERT_DECONVNET = DeconvnetSettings()

DENOISE_LOSSES = ("mae", "mse", "bce")
DENOISE_OPTIMISERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant")
# What `--help` says of a `denoise train` option left None: the model's own training default.
MODEL_DEFAULT = "per model; see `deeprestore denoise models`"
CORRUPTIONS = ("gaussian:SIGMA, salt-and-pepper:AMOUNT, centre:FRACTION or perturbation:easy|hard|tough (our "
               "N-HPatches-like noise)")


# The bundled photos `denoise train` never trains on by default: its learning curve is measured on them.
HELD_OUT_SAMPLES = ("camera", "astronaut")


@settings_class
class DenoiseSettings:
    """`denoise train`: a restoration model trained on corrupted patches (seeds 001 and 004).

    Options left `None` take the model's own training defaults (its seed's values; `deeprestore
    denoise models` lists them), so every model trains as its seed did unless told otherwise.
    """

    model: str = option("unet", "unet, dncnn, autoencoder, autoencoder-v2, autoencoder-bn or autoencoder-dropout "
                                "(see `deeprestore denoise models`).")
    data: str | None = option(None, "Folder (or list file) of training images, or of HPatches pairs <image>.png + "
                                    "<image>_noise.png.", path="any", exists=True,
                              shown_default="the bundled photos but camera")
    channels: int | None = option(None, "1 (grey) or 3 (RGB).", choices=(1, 3), shown_default=MODEL_DEFAULT)
    corruption: str | None = option(None, f"Applied to clean patches: {CORRUPTIONS}; not used with HPatches pairs.",
                                    metavar="KIND:VALUE", shown_default=MODEL_DEFAULT)
    patch_size: int | None = option(None, "Side of the training patches, a multiple of 4.", at_least=4,
                                    shown_default=MODEL_DEFAULT)
    batch_size: int | None = option(None, "Patches per step.", at_least=1, shown_default=MODEL_DEFAULT)
    steps: int | None = option(None, "Training steps in all (a resumed run continues to this many).", at_least=1,
                               shown_default=MODEL_DEFAULT)
    loss: str | None = option(None, "Mean absolute error, mean squared error or binary cross-entropy.",
                              choices=DENOISE_LOSSES, shown_default=MODEL_DEFAULT)
    optimiser: str | None = option(None, "SGD with Nesterov momentum, or Adam.", choices=DENOISE_OPTIMISERS,
                                   aliases=("--optimizer",), shown_default=MODEL_DEFAULT)
    learning_rate: float | None = option(None, "Step size.", above=0.0, shown_default=MODEL_DEFAULT)
    momentum: float | None = option(None, "Nesterov momentum of SGD.", at_least=0.0, below=1.0,
                                    shown_default=MODEL_DEFAULT)
    schedule: str = option("cosine", "Step size: cosine decay to 0 over --steps (so the last weights are not caught "
                                     "mid-swing), or constant (seed 004). Resuming with more --steps stretches the "
                                     "decay over the new total from then on.", choices=SCHEDULES)
    validation_fraction: float = option(0.2, "Share of each image (bottom rows) or stack (last patches) kept for "
                                             "validation.", above=0.0, below=1.0)
    validation_batches: int = option(2, "Fixed validation batches, each --batch-size patches.", at_least=1)
    validate_every: int = option(50, "Steps between validations (0: only at the end).", at_least=0)
    checkpoint_every: int = option(50, "Steps between checkpoints.", at_least=1)
    test_image: str = option("camera", "Image held out for the final PSNR/SSIM table: a file or a bundled sample.")
    test_size: int = option(256, "Longer side of the test image and the --held-out images in pixels (0: full "
                                 "size).", at_least=0)
    held_out: tuple = option(HELD_OUT_SAMPLES, "Images the learning curve is measured on (files, folders or "
                                               "bundled samples; repeat for several); without --data, training uses "
                                               "the bundled photos but these.")
    curve_every: int = option(100, "Steps between the learning curve's held-out evaluations (0: none; a curve "
                                   "needs a noise --corruption).", at_least=0)
    baselines: bool = option(True, "Also score scikit-image's classical methods.")
    devices: int | str = devices_field()
    keep_every: int = keep_every_field()
    tensorboard: bool = tensorboard_field()


@settings_class
class DenoiseApplySettings:
    """`denoise apply`: a trained model on images, each scored against its clean image when known."""

    model: str | None = option(None, "A `denoise train` run directory, or a saved .keras model.", path="any",
                               exists=True, required=True)
    images: str | None = option(None, "Image(s) to restore: a file, a bundled sample (camera, astronaut, ...), a "
                                      "folder or a list file (each restored into items/<NNN_name>/ of the run).",
                                aliases=("--image",), required=True)
    clean: str | None = option(None, "The clean version of --images, for PSNR and SSIM: as many images, in the same "
                                     "order.")
    corruption: str | None = option(None, f"Corrupt --images first (seeded), which then serves as the clean "
                                          f"reference: {CORRUPTIONS}.", metavar="KIND:VALUE")
    grey: bool = option(False, "Convert a colour image to grey for a one-channel model.")
    size: int = option(0, "Longer side the image is resized to first (0: keep its size).", at_least=0)
    tile: int = option(256, "Side of the tiles large images are restored in (a multiple of 4); bounds the memory "
                            "used.", at_least=4)
    overlap: int = option(32, "Pixels tiles overlap on each side (a multiple of 4; at least the receptive field for "
                              "seamless tiles).", at_least=0)
    baselines: bool = option(True, "Also run and score scikit-image's classical methods.")
    shard: str | None = shard_field()


DENOISE = DenoiseSettings()
DENOISE_APPLY = DenoiseApplySettings()

INIT_CHOICES = ("content", "noise", "style")
OPTIMISER_CHOICES = ("lbfgs", "adam")


@settings_class
class StyleSettings:
    """Neural style transfer (Gatys, Ecker & Bethge, 2015)."""

    content: str = option("chelsea", "Content image(s): a file, a folder, a list file or a bundled sample.")
    styles: tuple = option(("coffee",), "Style image; repeat to blend several (their Gram matrices, by "
                                        "--style-blend).", flag="--style")
    style_blend: tuple = option((), "Blend weight of each style image (default: equal).", item=float)
    network: str = option("vgg16", f"{MODEL_FILES} The paper used VGG19; VGG16 has offline weights.")
    weights: str = weights_field()
    precision: str = precision_field()
    pooling: str = pooling_field("average")
    content_layer: str = option("", "Content layer (default: the network's; VGG: block4_conv2, Gatys's rectified "
                                    "conv4_2).")
    style_layers: tuple = option((), "Style layer; repeat (default: the network's; VGG: block1_conv1 .. block5_conv1).",
                                 flag="--style-layer")
    style_layer_weights: tuple = option((), "Weight of each style layer (default: equal, summing to 1).",
                                        flag="--style-layer-weight", item=float)
    content_weight: float = option(1.0, "Weight of the content loss (the paper's alpha).", at_least=0.0)
    style_weight: float = option(1e3, "Weight of the style loss (the paper's beta; alpha / beta = 1e-3).",
                                 at_least=0.0)
    tv_weight: float = option(0.0, "Weight of a squared total-variation smoothness term.", at_least=0.0)
    init: str = option("content", "Start from the content image, seeded noise, or the (first) style image.",
                       choices=INIT_CHOICES)
    optimiser: str = option("lbfgs", "lbfgs (the standard for this method) or adam.", choices=OPTIMISER_CHOICES)
    learning_rate: float = option(0.02, "Adam's learning rate on [0, 1] pixels.", above=0.0)
    steps: int = option(60, "Iterations at each scale.", at_least=1)
    size: int = option(256, "Longer side of the output in pixels.", at_least=16)
    style_scale: float = option(1.0, "Size of the style images relative to the output.", above=0.0)
    scales: int = option(1, "Coarse-to-fine: number of resolutions, each twice the previous.", at_least=1)
    preserve_colour: bool = option(False, "Transfer on luminance only, keeping the content's colours.")
    cache: str | None = cache_field()
    shard: str | None = shard_field()


STYLE = StyleSettings()


@settings_class
class TextureSettings:
    """Texture synthesis from Gram matrices (Gatys, Ecker & Bethge, 2015)."""

    sources: tuple = option(("brick",), "Texture image (a file or a bundled sample: brick, grass, gravel, ...); "
                                        "repeat to blend.", flag="--source")
    blend: tuple = option((), "Blend weight of each source (default: equal).", item=float)
    network: str = network_field()
    weights: str = weights_field()
    precision: str = precision_field()
    pooling: str = pooling_field("average")
    layers: tuple = option((), "Gram layer; repeat (default: block1_conv1 and pool1 .. pool4, the seed's slides).",
                           flag="--layer")
    layer_weights: tuple = option((), "Weight of each layer (default: equal).", flag="--layer-weight", item=float)
    size: tuple = option((192, 192), "Output size, e.g. 256 or 192x320; independent of the sources' size.",
                         kind="size")
    source_size: int = option(256, "Longer side the sources are resized to before their Grams are taken.",
                              at_least=16)
    count: int = option(1, "Textures synthesised as one batch, from different seeded noise.", at_least=1)
    optimiser: str = option("lbfgs", "lbfgs or adam.", choices=OPTIMISER_CHOICES)
    learning_rate: float = option(0.02, "Adam's learning rate.", above=0.0)
    steps: int = option(400, "Iterations.", at_least=1)
    # The defaults (pixels, colour prior 1, 400 steps) were chosen by `experiments/texture_defaults.py` on the
    # bundled brick, gravel and grass (VGG16 offline weights, 128 px): see the manual's texture page. Pixels
    # alone leave per-pixel colour noise that the Gram loss of these weights does not see (38-40/255 from
    # grey); the colour prior removes it (2.5-2.9/255), and keeps bricks more rectangular than Fourier does. At
    # 100 steps the loss still fell 11-19% every 10 iterations; at 400 about 1%, with the paper's loss 8-14x lower.
    colour_weight: float = option(1.0, "Weight of the colour prior: the distance of the output's colour mean and "
                                       "covariance from the sources' (see `objectives.colour_distance`; 0: none), "
                                       "against Gram layer weights that sum to 1.", at_least=0.0)
    tv_weight: float = option(0.0, "Weight of a smoothness prior: the mean squared difference of neighbouring "
                                   "pixels (0: none).", at_least=0.0)
    cache: str | None = cache_field()
    parametrisation: str = option(
        "pixels", "What is optimised: the pixels, or a decorrelated-colour Fourier spectrum (lucid's, see "
                  "`deeprestore.parametrisations`; L-BFGS then runs without bounds).", choices=PARAMETRISATIONS)


TEXTURE = TextureSettings()

INVERT_PRESETS = ("lbfgs", "mv2015", "mv2016")


@settings_class
class InvertSettings:
    """Optimisation-based inversion (Mahendran & Vedaldi 2015, 2016): find an image whose activations
    at a layer match an image's, starting from noise.

    Its fields are also the `invert` command's options of the other methods, whose help says how they
    read them.
    """

    images: str = option("astronaut", "Image(s) to invert: a file, a folder, a list file or a bundled sample "
                                      "(deconvnet default: the bundled set).")
    network: str = option("vgg16", "Network name or Keras model file (learned: the stack's; see `deeprestore nets`).")
    weights: str = weights_field()
    precision: str = precision_field()
    pooling: str = pooling_field("max")
    layer: str = option("block3_conv3_preact", "Layer to invert, pre- or post-activation (learned: the stack's deepest "
                                        "input; deconvnet: every pooling layer).")
    preset: str = option("lbfgs", "lbfgs (the mv2016 objective with weights measured for L-BFGS: C 300, TV 0.2, "
                                  "no alpha-norm; no jitter; 300 L-BFGS iterations), mv2015 (alpha 6, TV by depth, "
                                  "momentum SGD) or mv2016 (normalised priors, jitter, range constraint, Adam).",
                         choices=INVERT_PRESETS)
    size: int = option(0, "Side of the (square) images; 0: the network's input size (learned: the stack's training "
                          "size).", at_least=0)
    steps: int = option(0, "Iterations (0: the preset's).", at_least=0)
    learning_rate: float = option(0.0, "Learning rate on [0, 1] pixels (0: the preset's; none for lbfgs).",
                                  at_least=0.0)
    cache: str | None = cache_field()
    shard: str | None = shard_field()
    to: str = option("", "Reconstruct the activations of this lower layer instead of the image (see "
                         "`deeprestore.recipes.invert_layer`; default: the image).", metavar="LAYER")


INVERT = InvertSettings()

DESCRIBE_INPUTS = ("clean", "noisy", "denoised")
DESCRIBE_LOSSES = ("triplet", "hardest")
DESCRIBE_POSITIVES = ("any", "level")
DESCRIBE_OPTIMISERS = ("sgd", "adam")
DESCRIBE_SPLITS = ("a", "b", "c", "illum", "view", "full")  # the official ones; splits.json names others
DESCRIBE_BASELINES = ("raw16", "sift")


@settings_class
class DescribeDataSettings:
    """Where `describe` finds patches and tasks (shared by training and evaluation)."""

    data: str | None = option(None, "HPatches-format dataset folder (default: a synthetic one made from the bundled "
                                    "photos, into the run).", path="folder", exists=True)
    split: str | None = option(None, f"Benchmark split: {', '.join(DESCRIBE_SPLITS)}, or one named in the splits.json "
                                     "of the dataset folder or of <tasks>/splits/ (which replaces the official ones); "
                                     "the synthetic data also has heldout: train on every bundled photo, test on "
                                     "photos training never sees.", shown_default="heldout without --data, else a")
    inputs: str = option("clean", "Patches the descriptor sees: clean, the _noise twins, or those through "
                                  "--denoiser.", choices=DESCRIBE_INPUTS)
    denoiser: str | None = option(None, "Saved Keras model (.keras) mapping (N,32,32,1) to (N,32,32,1), for --inputs "
                                        "denoised.", path="file", exists=True)
    tasks: str | None = option(None, "Folder of benchmark task files (default: <data>/tasks, else generated, seeded, "
                                     "into the run's tasks/).", path="folder", exists=True)
    patches: int = option(64, "Tracks per sequence of the synthetic dataset.", at_least=8)
    pairs: int = option(10_000, "Verification pairs to generate when there are no task files (benchmark: 1000000).",
                        at_least=10)
    queries: int = option(100, "Retrieval queries to generate (benchmark: 5000).", at_least=1)
    distractors: int = option(20_000, "Retrieval distractors to generate (benchmark: 20000).", at_least=1)


@settings_class
class DescribeSettings(DescribeDataSettings):
    """`describe train`: seed 004's HardNet-like descriptor trained on triplets, mAP every epoch.

    The defaults were measured on the held-out sets (manual, docs/experiments/describe.rst, and
    experiments/describe_ablation.py): HardNet's loss on L2-normalised descriptors with Adam beats seed
    004's triplet loss with SGD; every training photo, 256 tracks a sequence, a cosine step size,
    4 x 8192 triplets (512 steps) and no dropout each added to the held-out scores, within 15 minutes on
    2 cores.
    """

    patches: int = option(256, "Tracks per sequence of the synthetic training photos (the held-out photos' keep "
                               "64, as describe synth --heldout draws them).", at_least=8)
    train_inputs: str | None = option(None, "Patches to train on (default: --inputs).", choices=DESCRIBE_INPUTS)
    loss: str = option("hardest", "triplet: seed 004's margin on mean squared distances; hardest: HardNet's hardest "
                                  "in batch.", choices=DESCRIBE_LOSSES)
    margin: float = option(1.0, "The triplet margin.", at_least=0.0)
    optimiser: str = option("adam", "Plain SGD (seed 004: no momentum) or Adam.", choices=DESCRIBE_OPTIMISERS,
                            aliases=("--optimizer",))
    learning_rate: float | None = option(None, "Step size (default: 0.1 for SGD, seed 004's, and 0.001 for Adam).",
                                         above=0.0)
    schedule: str = option("cosine", "Step size: cosine decay to 0 over --steps (HardNet decays its step size to 0 "
                                     "too), or constant (seed 004). Resuming with more --steps stretches the decay "
                                     "over the new total from then on.", choices=SCHEDULES)
    steps: int = option(512, "Training steps in all, also when resuming; an epoch is --triplets // --batch-size steps "
                             "of fresh triplets, with the mAPs measured after each.", at_least=1)
    checkpoint_every: int = option(128, "Steps between checkpoints.", at_least=1)
    triplets: int = option(8192, "Fresh triplets drawn each epoch.", at_least=1)
    batch_size: int = option(64, "Triplets per step.", at_least=2)
    batch_sequences: int = option(0, "Sequences each batch draws its tracks from (0: all): negatives from the same "
                                     "images are what matching must tell apart.", at_least=0)
    positives: str = option("any", "any: anchor and positive are any two patches of a track; level: two of the "
                                   "reference and one level's five images (e, h or t, drawn uniformly), as alike "
                                   "as the benchmark's pairs of that level.", choices=DESCRIBE_POSITIVES)
    augment: bool = option(False, "Flip and rotate each triplet by a multiple of 90 degrees, the same for its three "
                                  "patches.")
    l2_normalise: bool = option(True, "L2-normalise the descriptors (HardNet).")
    standardise: bool = option(True, "Standardise each patch (zero mean, unit deviation) inside the model; seed 004 "
                                     "fed raw pixels.")
    dropout: float = option(0.0, "Dropout rate before the last convolution (seed 004 and HardNet: 0.3, which "
                                  "held the default's 512 steps back on the held-out sets).", at_least=0.0, below=1.0)
    devices: int | str = option(1, f"{DEVICES_HELP} --triplets must be a multiple too.", kind="devices")
    keep_every: int = keep_every_field()
    tensorboard: bool = tensorboard_field()


@settings_class
class DescribeEvaluateSettings(DescribeDataSettings):
    """`describe evaluate`: the HPatches protocol on a trained descriptor and/or descriptor CSV folders."""

    model: str | None = option(None, "A `describe train` run directory or a descriptor .keras file.", path="any",
                               exists=True)
    descriptors: tuple = option((), "Descriptor CSV folder in the benchmark layout (<root>/<name>); repeat to compare "
                                    "several.", path="folder", exists=True)
    export: bool = option(False, "Also write the model's descriptors as CSV into the run's descriptors/.")
    baselines: tuple = option((), "Also score a built-in descriptor: raw16 (16x16 pixels, zero mean, unit norm) or "
                                  "sift (scikit-image's, at the patch centre); repeat for several.", flag="--baseline",
                              choices=DESCRIBE_BASELINES)
    delimiter: str | None = option(None, "Field separator of the descriptor CSVs (default: detected per file: , ; tab "
                                         "or spaces).")


DESCRIBE = DescribeSettings()
DESCRIBE_EVALUATE = DescribeEvaluateSettings()
