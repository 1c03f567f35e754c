"""Every command's settings and their defaults, in one place.

Each experiment has a frozen dataclass here. The CLI takes its option defaults from these and the
recipes take an instance, so a default is written once. This module imports nothing heavy (no Keras),
so the CLI can read it before choosing a backend.
"""

import dataclasses

START_CHOICES = ("image", "noise", "grey")
# The network's arithmetic in the image-optimisation recipes: `bfloat16` is Keras's mixed precision
# (weights, the image and the step stay float32; the forward and backward passes run in bfloat16).
PRECISIONS = ("float32", "bfloat16")
# What the optimiser steps on: the pixels, or a decorrelated-colour Fourier spectrum (`parametrisations`).
PARAMETRISATIONS = ("pixels", "fourier")


@dataclasses.dataclass(frozen=True)
class DreamSettings:
    """DeepDream: normalised gradient ascent on layer objectives, over octaves (seed 003; Mordvintsev et al.).

    Objective options are strings as typed on the command line (`block4_relu3:0.5`); the dream recipe
    parses them (`deeprestore.recipes.dream.parse_terms`). All given terms are summed; with none, the
    network's default dream layers are used.

    Attributes:
        images: Start image(s): a file, a bundled sample, a folder or a list file.
        network: Registered network name, or a Keras model file (manual, docs/networks.rst: "Networks from
            model files").
        weights: `auto`, `imagenet`, `offline`, `random` or a path.
        precision: `float32`, or `bfloat16`: the network in mixed precision (see `PRECISIONS`).
        pooling: `max` or `average`.
        layers: `LAYER[:WEIGHT]`: raise the L2 norm of a layer (weight 1 by default).
        channels: `LAYER:INDEX[:WEIGHT]`: raise the mean activation of one channel.
        neurons: `LAYER:INDEX[:WEIGHT]`: raise one unit, channel INDEX at the centre of the layer's grid.
        classes: `INDEX[:WEIGHT]`: raise a class logit (pre-softmax), averaged over the positions of the
            fully convolutional head; builds the network with its classifier head.
        guide: Guide image: at the L2 layers, raise the dot product with the guide's features instead.
        cycle: `LAYER:STEP_SIZE:STEPS` stages run in order, `cycles` times, at each octave (seed 003,
            2.5); replaces `layers`, `steps` and `step_size`.
        cycles: Number of passes over the `cycle` stages.
        size: Longer side of the working image, in pixels (0 keeps the input size).
        octaves: Number of scales, processed from the smallest.
        octave_scale: Size ratio between consecutive octaves.
        steps: Gradient steps per octave.
        step_size: Step in units of the mean absolute gradient.
        jitter: Largest random shift before each step, in pixels.
        start: `image` (the input), `noise` (uniform, seeded) or `grey`.
        tile: Tile side in pixels for tile-by-tile gradients (0: whole image at once).
        tile_mode: `random` (grid shifted each step, no seams), `contiguous` (fixed grid, seams show) or
            `overlap` (fixed grid with `tile_overlap`, shared regions updated several times).
        tile_overlap: Overlap of neighbouring tiles in `overlap` mode (seed 003: 124 px on 224 px tiles).
        blur_every: Blur the image every this many steps (0: never).
        blur_sigma: Standard deviation of that Gaussian blur, in pixels.
        clamp: Keep pixels within [0, 1] after each step.
        scaling: Scale the image towards grey by this factor after each step (1: off; seed 003).
        l2_decay: Weight of an L2 penalty `mean((x - 0.5)^2)` on the image (0: off).
        frames: Zoom loop: dream this many frames, each started from the previous one zoomed (1: off).
        zoom: Zoom factor between frames (crop the centre 1/zoom and resize back).
        save_every: Save the image every this many steps into `images/` (0: never).
        cache: HDF5 activation cache shared across runs (default: the run's own activations.h5).
        shard: `I/N`: dream only the I-th of N shares of a folder or list of images (array jobs).
        parametrisation: `pixels`, or `fourier`: each octave's image is encoded as a decorrelated-colour
            Fourier spectrum (lucid's, see `deeprestore.parametrisations`) and the step taken on it.
        decay_power: With `fourier`, the spectrum is scaled by `1 / frequency ** decay_power`. lucid's 1
            spends a dream's steps on low-frequency colour drift; 0.5 keeps the patterns and smooths them.
    """

    images: str = "astronaut"
    network: str = "vgg16"
    weights: str = "auto"
    precision: str = "float32"
    pooling: str = "max"
    layers: tuple = ()
    channels: tuple = ()
    neurons: tuple = ()
    classes: tuple = ()
    guide: str | None = None
    cycle: tuple = ()
    cycles: int = 1
    size: int = 384
    octaves: int = 4
    octave_scale: float = 1.4
    steps: int = 10
    step_size: float = 0.008
    jitter: int = 32
    start: str = "image"
    tile: int = 0
    tile_mode: str = "random"
    tile_overlap: int = 124
    blur_every: int = 0
    blur_sigma: float = 0.5
    clamp: bool = True
    scaling: float = 1.0
    l2_decay: float = 0.0
    frames: int = 1
    zoom: float = 1.05
    save_every: int = 0
    cache: str | None = None
    shard: str | None = None
    parametrisation: str = "pixels"
    decay_power: float = 0.5


DREAM = DreamSettings()

MODULE_TYPES = ("cd", "dc", "dd", "upconv")
STACK_MODES = ("separate", "joint", "end-to-end", "fine-tune")


@dataclasses.dataclass(frozen=True)
class StackSettings:
    """Training a stack of inversion modules, one per network operation (seed 000; Dosovitskiy & Brox).

    Attributes:
        network: Registered network name, or a Keras model file (manual, docs/networks.rst: "Networks from
            model files").
        weights: `auto`, `imagenet`, `offline`, `random` or a path.
        modules: A JSON/YAML module spec file; None builds the default chain from `source` to `target`.
        source: Layer the default chain inverts from (e.g. `pool1`).
        target: Layer the default chain inverts to, or `image`.
        module_type: Type of every default module: `cd`, `dc`, `dd` or `upconv`.
        mode: `separate` (each module on true activations), `joint` (weighted sum of the modules'
            losses along the chain), `end-to-end` (final loss only) or `fine-tune` (joint, from the
            modules of `init`, at `fine_tune_learning_rate`).
        images: `bundled` (scikit-image photos, crops and flips), a folder or a list file.
        size: Side of the square training crops (VGG convolutions work at any size).
        validation: Images held out for validation.
        steps: Optimisation steps.
        batch_size: Images per step.
        learning_rate: Adam's learning rate.
        fine_tune_learning_rate: Adam's learning rate in `fine-tune` mode.
        init: A stack run (or its `modules/` folder) whose module weights to start from.
        validate_every: Steps between validation losses and reconstruction figures (0: only at the end).
        checkpoint_every: Steps between checkpoints.
        channel_losses: Whether to log each target channel's error too.
        data_cache: Folder for the resized dataset and cached activations, shared across runs (default:
            the run's `data/`).
        figure_images: Validation images in each reconstruction figure.
        devices: Devices each step's batch is split over (data parallelism), or `all`; `batch_size` is
            the global batch and must be a multiple of it.
        keep_every: Checkpoints at multiples of this step are kept besides the last (0: only the last).
        tensorboard: Also write TensorBoard event files into the run's `tensorboard/`.
    """

    network: str = "vgg16"
    weights: str = "auto"
    modules: str | None = None
    source: str = "pool1"
    target: str = "image"
    module_type: str = "cd"
    mode: str = "separate"
    images: str = "bundled"
    size: int = 64
    validation: int = 10
    steps: int = 200
    batch_size: int = 8
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-4
    init: str | None = None
    validate_every: int = 50
    checkpoint_every: int = 50
    channel_losses: bool = False
    data_cache: str | None = None
    figure_images: int = 4
    devices: int | str = 1
    keep_every: int = 0
    tensorboard: bool = False


STACK = StackSettings()


@dataclasses.dataclass(frozen=True)
class LearnedInversionSettings:
    """Defaults of `invert --method learned`: reconstruction through a trained stack.

    Attributes:
        stack: A stack run directory (or its `modules/` folder).
        layer: Layer to reconstruct from; empty means the stack's deepest input.
        size: Side of the square centre crops; 0 means the size the stack was trained at.
        batch_size: Images per forward pass.
    """

    stack: str | None = None
    layer: str = ""
    size: int = 0
    batch_size: int = 8


INVERT_LEARNED = LearnedInversionSettings()


@dataclasses.dataclass(frozen=True)
class DeconvnetSettings:
    """Defaults of `invert --method deconvnet` (Zeiler & Fergus 2014; seed 002).

    Attributes:
        images: Images to search for the strongest activations: `bundled`, a folder or a list file.
        layers: Layers to visualise; empty means every pooling layer.
        channels: How many channels per layer (the first ones) get a row in the figure.
        top: Strongest activations per channel (nine in Zeiler & Fergus).
        size: Side of the square centre crops; 0 means the network's input size.
        batch_size: Images per forward pass.
        data_cache: Folder for the resized dataset and activation maxima, shared across runs.
    """

    images: str = "bundled"
    layers: tuple = ()
    channels: int = 8
    top: int = 9
    size: int = 0
    batch_size: int = 8
    data_cache: str | None = None


INVERT_DECONVNET = DeconvnetSettings()

DENOISE_LOSSES = ("mae", "mse", "bce")
DENOISE_OPTIMISERS = ("sgd", "adam")
DENOISE_SCHEDULES = ("cosine", "constant")


@dataclasses.dataclass(frozen=True)
class DenoiseSettings:
    """`denoise train`: a restoration model trained on corrupted patches (seeds 001 and 004).

    Options left `None` take the model's own training defaults (its seed's values; `deeprestore
    denoise models` lists them), so every model trains as its seed did unless told otherwise.

    Attributes:
        model: Registered model name (`unet`, `dncnn`, `autoencoder`, ...).
        data: Training images: a folder of images, a list file, a folder of HPatches-format pairs
            (`<image>.png` and `<image>_noise.png` stacks), or `None` for the bundled photos.
        channels: 1 (grey) or 3 (RGB).
        corruption: `KIND:VALUE` applied to clean patches (`gaussian:0.1`, `salt-and-pepper:0.05`,
            `centre:0.5`, `perturbation:hard`); not used with HPatches pairs.
        patch_size: Side of the training patches (a multiple of 4).
        batch_size: Patches per step.
        steps: Training steps in all (a resumed run continues to this many).
        loss: `mae`, `mse` or `bce`.
        optimiser: `sgd` (Nesterov momentum) or `adam`.
        learning_rate: Step size.
        momentum: Nesterov momentum of `sgd`.
        schedule: `cosine` (the step size decays to 0 over `steps`, so the last weights are not caught
            mid-swing) or `constant` (seed 004).
        validation_fraction: Share of each image (bottom rows) or stack (last patches) for validation.
        validation_batches: Fixed validation batches, each `batch_size` patches.
        validate_every: Steps between validations (and the end).
        checkpoint_every: Steps between checkpoints.
        test_image: Image held out for the final PSNR/SSIM table (default: bundled `camera`).
        test_size: Longer side the test image is resized to (0: full size).
        baselines: Also score scikit-image's classical methods.
        devices: Devices each step's batch is split over (data parallelism), or `all`; `batch_size` is
            the global batch and must be a multiple of it.
        keep_every: Checkpoints at multiples of this step are kept besides the last (0: only the last).
        tensorboard: Also write TensorBoard event files into the run's `tensorboard/`.
    """

    model: str = "unet"
    data: str | None = None
    channels: int | None = None
    corruption: str | None = None
    patch_size: int | None = None
    batch_size: int | None = None
    steps: int | None = None
    loss: str | None = None
    optimiser: str | None = None
    learning_rate: float | None = None
    momentum: float | None = None
    schedule: str = "cosine"
    validation_fraction: float = 0.2
    validation_batches: int = 2
    validate_every: int = 50
    checkpoint_every: int = 50
    test_image: str = "camera"
    test_size: int = 256
    baselines: bool = True
    devices: int | str = 1
    keep_every: int = 0
    tensorboard: bool = False


@dataclasses.dataclass(frozen=True)
class DenoiseApplySettings:
    """`denoise apply`: a trained model on images, each scored against its clean image when known.

    Attributes:
        model: A `denoise train` run directory or a saved `.keras` model.
        images: The image(s) to restore: a file, a bundled sample, a folder or a list file.
        clean: Their clean versions (as many, in the same order), for PSNR and SSIM.
        corruption: Corrupt `image` with this `KIND:VALUE` first (then `image` is the clean reference).
        grey: Convert a colour image to grey for a one-channel model.
        size: Longer side the image is resized to first (0: keep its size).
        tile: Side of the tiles large images are cut into (a multiple of 4).
        overlap: Pixels tiles overlap on each side (a multiple of 4).
        baselines: Also run and score scikit-image's classical methods.
        shard: `I/N`: restore only the I-th of N shares of a folder or list of images (array jobs).
    """

    model: str | None = None
    images: str | None = None
    clean: str | None = None
    corruption: str | None = None
    grey: bool = False
    size: int = 0
    tile: int = 256
    overlap: int = 32
    baselines: bool = True
    shard: str | None = None


DENOISE = DenoiseSettings()
DENOISE_APPLY = DenoiseApplySettings()

INIT_CHOICES = ("content", "noise", "style")
OPTIMISER_CHOICES = ("lbfgs", "adam")


@dataclasses.dataclass(frozen=True)
class StyleSettings:
    """Neural style transfer (Gatys, Ecker & Bethge, 2015).

    Attributes:
        content: Content image(s): a file, a folder, a list file or a bundled sample.
        styles: Style images; their Gram matrices are blended with `style_blend`.
        style_blend: One weight per style image (default: equal).
        network: Registered network name or Keras model file (the paper used VGG19; VGG16 has offline weights).
        weights: `auto`, `imagenet`, `offline`, `random` or a path.
        precision: `float32`, or `bfloat16`: the network in mixed precision (see `PRECISIONS`).
        pooling: `average` (the paper: better gradients) or `max`.
        content_layer: Content layer; empty means the network's default (conv4_2's rectified output).
        style_layers: Style layers; empty means the network's defaults (conv1_1 .. conv5_1).
        style_layer_weights: One weight per style layer (default: equal, summing to 1).
        content_weight: Weight of the content loss (the paper's alpha).
        style_weight: Weight of the style loss (the paper's beta; alpha / beta = 1e-3).
        tv_weight: Weight of a squared total-variation smoothness term.
        init: Start from the `content` image, seeded `noise`, or the (first) `style` image.
        optimiser: `lbfgs` (the standard for this method) or `adam`.
        learning_rate: Adam's learning rate, on [0, 1] pixels.
        steps: Iterations at each scale.
        size: Longer side of the output in pixels.
        style_scale: Size of the style images relative to the output.
        scales: Coarse-to-fine: number of resolutions, each twice the previous.
        preserve_colour: Transfer on luminance only and keep the content's colours.
        cache: HDF5 activation cache shared across runs.
        shard: `I/N`: process only the I-th of N shares of the content images (cluster array jobs).
    """

    content: str = "chelsea"
    styles: tuple = ("coffee",)
    style_blend: tuple = ()
    network: str = "vgg16"
    weights: str = "auto"
    precision: str = "float32"
    pooling: str = "average"
    content_layer: str = ""
    style_layers: tuple = ()
    style_layer_weights: tuple = ()
    content_weight: float = 1.0
    style_weight: float = 1e3
    tv_weight: float = 0.0
    init: str = "content"
    optimiser: str = "lbfgs"
    learning_rate: float = 0.02
    steps: int = 60
    size: int = 256
    style_scale: float = 1.0
    scales: int = 1
    preserve_colour: bool = False
    cache: str | None = None
    shard: str | None = None


STYLE = StyleSettings()


@dataclasses.dataclass(frozen=True)
class TextureSettings:
    """Texture synthesis from Gram matrices (Gatys, Ecker & Bethge, 2015).

    Attributes:
        sources: Texture images; their Grams are blended with `blend`.
        blend: One weight per source (default: equal).
        network: Registered network name, or a Keras model file (manual, docs/networks.rst: "Networks from
            model files").
        weights: `auto`, `imagenet`, `offline`, `random` or a path.
        precision: `float32`, or `bfloat16`: the network in mixed precision (see `PRECISIONS`).
        pooling: `average` or `max`.
        layers: Gram layers; empty means conv1_1 and pool1 .. pool4 (the seed's slides).
        layer_weights: One weight per layer (default: equal).
        size: Output size, `(height, width)`; independent of the sources' size.
        source_size: Longer side the sources are resized to before their Grams are taken.
        count: Number of textures synthesised as one batch, from different seeded noise.
        optimiser: `lbfgs` or `adam`.
        learning_rate: Adam's learning rate.
        steps: Iterations.
        cache: HDF5 activation cache shared across runs.
        parametrisation: `fourier` (lucid's decorrelated-colour Fourier spectrum, see
            `deeprestore.parametrisations`; with `lbfgs` the optimiser then runs without bounds), or
            `pixels`. Fourier is the default because the Gram loss itself prefers per-pixel colour noise:
            a grey gravel source gave textures 40/255 from grey on pixels, 1.9/255 in Fourier, at a lower
            loss (VGG16 offline weights, 96x96, 100 L-BFGS steps; `tests/test_image_recipes.py` checks
            it on the tiny network).
    """

    sources: tuple = ("brick",)
    blend: tuple = ()
    network: str = "vgg16"
    weights: str = "auto"
    precision: str = "float32"
    pooling: str = "average"
    layers: tuple = ()
    layer_weights: tuple = ()
    size: tuple = (192, 192)
    source_size: int = 256
    count: int = 1
    optimiser: str = "lbfgs"
    learning_rate: float = 0.02
    steps: int = 100
    cache: str | None = None
    parametrisation: str = "fourier"


TEXTURE = TextureSettings()

INVERT_PRESETS = ("mv2015", "mv2016")


@dataclasses.dataclass(frozen=True)
class InvertSettings:
    """Optimisation-based inversion (Mahendran & Vedaldi 2015, 2016): find an image whose activations
    at a layer match an image's, starting from noise.

    Attributes:
        images: Image(s) to invert: a file, a folder, a list file or a bundled sample.
        network: Registered network name, or a Keras model file (manual, docs/networks.rst: "Networks from
            model files").
        weights: `auto`, `imagenet`, `offline`, `random` or a path.
        precision: `float32`, or `bfloat16`: the network in mixed precision (see `PRECISIONS`).
        pooling: `max` or `average`.
        layer: The layer to invert (pre- or post-activation).
        preset: `mv2015` (alpha 6, TV beta 2, SGD with momentum) or `mv2016` (normalised priors, jitter,
            range constraint, Adam).
        size: Longer side of the images; 0 keeps the network's native input size.
        steps: Iterations; 0 means the preset's.
        learning_rate: 0 means the preset's.
        cache: HDF5 activation cache shared across runs.
        shard: `I/N`: invert only the I-th of N shares of the images (cluster array jobs).
        to: A layer below `layer` to invert to instead of the image: its activations are reconstructed
            (see `deeprestore.recipes.invert_layer`); empty means the image.
    """

    images: str = "astronaut"
    network: str = "vgg16"
    weights: str = "auto"
    precision: str = "float32"
    pooling: str = "max"
    layer: str = "block3_conv3"
    preset: str = "mv2016"
    size: int = 0
    steps: int = 0
    learning_rate: float = 0.0
    cache: str | None = None
    shard: str | None = None
    to: str = ""


INVERT = InvertSettings()

DESCRIBE_INPUTS = ("clean", "noisy", "denoised")
DESCRIBE_LOSSES = ("triplet", "hardest")
DESCRIBE_OPTIMISERS = ("sgd", "adam")
DESCRIBE_SPLITS = ("a", "b", "c", "illum", "view", "full")  # the official ones; splits.json names others
DESCRIBE_BASELINES = ("raw16", "sift")


@dataclasses.dataclass(frozen=True)
class DescribeDataSettings:
    """Where `describe` finds patches and tasks (shared by training and evaluation).

    Attributes:
        data: HPatches-format dataset folder; `None` generates the synthetic dataset into the run.
        split: `a`, `b`, `c`, `illum`, `view` or `full`, or a split of the `splits.json` in the dataset
            folder or in `<tasks>/splits/` (which replaces the official ones).
        inputs: patches the descriptor sees: `clean`, `noisy` (`_noise` twins) or `denoised` (noisy
            twins through `denoiser`).
        denoiser: a saved Keras model (`.keras`) mapping (N, 32, 32, 1) to (N, 32, 32, 1).
        tasks: folder with the benchmark's task files; `None` uses `<data>/tasks` when it has them,
            else generates them (seeded) into the run's `tasks/`.
        patches: tracks per sequence of the synthetic dataset.
        pairs: verification pairs to generate (the benchmark: 1,000,000).
        queries: retrieval queries to generate (the benchmark: 5,000).
        distractors: retrieval distractors to generate (the benchmark: 20,000).
    """

    data: str | None = None
    split: str = "a"
    inputs: str = "clean"
    denoiser: str | None = None
    tasks: str | None = None
    patches: int = 64
    pairs: int = 10_000
    queries: int = 100
    distractors: int = 20_000


@dataclasses.dataclass(frozen=True)
class DescribeSettings(DescribeDataSettings):
    """`describe train`: seed 004's HardNet-like descriptor trained on triplets, mAP every epoch.

    Attributes (beyond `DescribeDataSettings`):
        train_inputs: patches to train on (`clean`, `noisy`, `denoised`); `None` means `inputs`.
        loss: `triplet` (seed 004: margin on mean squared distances) or `hardest` (HardNet).
        margin: the triplet margin.
        optimiser: `sgd` (seed 004: no momentum) or `adam`.
        learning_rate: step size; `None` means 0.1 for SGD (seed 004) and 0.001 for Adam.
        steps: training steps in all (a resumed run continues to this many); an epoch is
            `triplets // batch_size` steps of fresh triplets, and the mAPs are measured after each.
        checkpoint_every: steps between checkpoints.
        triplets: fresh triplets drawn each epoch.
        batch_size: triplets per step.
        l2_normalise: L2-normalise the descriptor's output (HardNet).
        standardise: standardise each input patch inside the model (zero mean, unit deviation; seed 004
            fed raw pixels: `False`).
        dropout: dropout rate before the last convolution.
        devices: devices each step's batch is split over, or `all`; `batch_size` and `triplets` must
            be multiples of it.
        keep_every: Checkpoints at multiples of this step are kept besides the last (0: only the last).
        tensorboard: Also write TensorBoard event files into the run's `tensorboard/`.
    """

    # Defaults measured on the held-out set (manual, docs/experiments/describe.rst): HardNet's loss on
    # L2-normalised descriptors with Adam beats seed 004's triplet loss with SGD, and 2 x 8192 triplets
    # fit in 15 minutes on 2 cores.
    train_inputs: str | None = None
    loss: str = "hardest"
    margin: float = 1.0
    optimiser: str = "adam"
    learning_rate: float | None = None
    steps: int = 256  # two epochs of --triplets
    checkpoint_every: int = 128
    triplets: int = 8192
    batch_size: int = 64
    l2_normalise: bool = True
    standardise: bool = True
    dropout: float = 0.3
    devices: int | str = 1
    keep_every: int = 0
    tensorboard: bool = False


@dataclasses.dataclass(frozen=True)
class DescribeEvaluateSettings(DescribeDataSettings):
    """`describe evaluate`: the HPatches protocol on a trained descriptor and/or descriptor CSV folders.

    Attributes (beyond `DescribeDataSettings`):
        model: a `describe train` run directory or a saved descriptor `.keras` file.
        descriptors: CSV folders in the benchmark layout (`<root>/<name>`), scored side by side.
        export: also write the model's descriptors as CSV into the run's `descriptors/`.
        baselines: built-in descriptors scored beside the others (`raw16`, `sift`).
        delimiter: the field separator of the descriptor CSVs; `None` detects it per file.
    """

    model: str | None = None
    descriptors: tuple = ()
    export: bool = False
    baselines: tuple = ()
    delimiter: str | None = None


DESCRIBE = DescribeSettings()
DESCRIBE_EVALUATE = DescribeEvaluateSettings()
