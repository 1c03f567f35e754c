"""The checks of each experiment's inputs that run before any backend loads (see `deeprestore.driver`):
each reads what it is given (images, lists, the network and its layer names, options that cannot go
together) and returns the run's items, so a bad input is a one-line error in about the time Python
takes to start. Nothing here imports Keras: a registered network's layer names come from
`deeprestore.architectures`, a saved model's (a model file given as `--network`, a denoiser, a
descriptor) from its architecture read as JSON (`deeprestore.modelconfig`).
"""

import json
import pathlib

from deeprestore import architectures, modelconfig
from deeprestore import images as image_io
from deeprestore.errors import DeepRestoreError
from deeprestore.inversion import specs as module_specs
from deeprestore.restoration import corruptions, models
from deeprestore.sharding import shard

# What a finished training run saves its model as (read by `denoise apply --model` and `describe
# evaluate --model`, given the run directory).
DENOISER_FILE = "model.keras"
DESCRIPTOR_FILE = "descriptor.keras"
# The patches a descriptor, or a denoiser of its inputs, takes (`descriptors.model.PATCH_SIZE`).
PATCH_SHAPE = (None, 32, 32, 1)
PATCHES = "(N, 32, 32, 1) gray patches"


def network_layers(network, layers, include_top=False, option=None):
    """Refuses an unknown network, or a layer name (or alias) of `layers` it lacks; empty names (a
    default) pass. `option` prefixes the message (`--to: Unknown layer ...`), as the recipe does. A
    model file's names are read from its architecture, as the network built from it names them.

    Raises:
        DeepRestoreError: Unknown network or layer, or a model file that is not a Keras model.
    """
    try:
        architectures.check_layers(network, [layer for layer in layers if layer], include_top)
        if architectures.is_model_path(network):
            model_file_layers(network, [layer for layer in layers if layer])
    except DeepRestoreError as error:
        if option is None or str(error).startswith("Unknown network"):
            raise
        raise DeepRestoreError(f"{option}: {error}") from None


def model_file_layers(network, layers):
    """Refuses a `--network` model file that is missing or not a Keras model, or one of `layers` it lacks
    (the message `Network.resolve` gives once it is built: its layers are `preprocess`, deeprestore's
    conversion, and the model's own, nested models flattened). A model whose config does not list its
    layers (a subclassed one) is left to the backend.

    Raises:
        DeepRestoreError: As above.
    """
    path = pathlib.Path(network)
    if path.name.endswith(".weights.h5"):
        raise DeepRestoreError(f"'{path}' holds weights only; expected a full model file for --network (a weights "
                               "file goes with a registered network: --network vgg16 --weights FILE).")
    expected = f"a Keras model file ({', '.join(architectures.MODEL_FILE_SUFFIXES)}) saved by model.save()"
    names = modelconfig.layer_names(modelconfig.read_config(path, "Model file", expected))
    if names is None:
        return
    for layer in layers:
        architectures.resolve_layer(network, layer, ("preprocess", *names), {})


def saved_model(source, what, run_file, command, wanted, expected):
    """Refuses a saved model (a `command` run directory holding `run_file`, or the file itself, or only
    a file where `run_file` is None) that is not a Keras model, or whose input is not `wanted`.

    Raises:
        DeepRestoreError: A folder without the file, or a file that is not a model of that input.
    """
    path = pathlib.Path(source)
    kinds = f"a .keras file of {expected}"
    if run_file:
        kinds = f"a `{command}` run directory or {kinds}"
    if path.is_dir():
        if run_file is None:
            raise DeepRestoreError(f"{what} '{source}' is a folder; expected {kinds}.")
        if not (path / run_file).is_file() and (path / "config.json").is_file():
            status = path / "status"
            status = status.read_text().strip() if status.is_file() else "unknown"
            raise DeepRestoreError(f"Run '{source}' has no {run_file}; expected a finished `{command}` run (its "
                                   f"status is '{status}').")
        if not (path / run_file).is_file():
            raise DeepRestoreError(f"{what} '{source}' is a folder without {run_file}; expected {kinds}.")
        path = path / run_file
    config = modelconfig.read_config(path, what, kinds)
    modelconfig.check_input(config, path, what, wanted, f"a model of {expected}")


def descriptor(path):
    """`describe evaluate --model`: a `describe train` run or a descriptor of 32x32 gray patches."""
    saved_model(path, "Descriptor", DESCRIPTOR_FILE, "describe train", PATCH_SHAPE, PATCHES)


def denoiser(path):
    """`--denoiser` of the descriptor commands: a denoiser file of 32x32 gray patches."""
    saved_model(path, "Denoiser", None, "denoise train", PATCH_SHAPE, PATCHES)


def stack_run(stack, network):
    """`invert --method learned --stack`: a stack run directory or its `modules/` folder, holding the specs
    of a stack trained on `network` (when given).

    Raises:
        DeepRestoreError: No stack there, specs that are not a stack's, or another network.
    """
    specs = module_specs.modules_directory(stack) / module_specs.SPECS_FILE
    expected = "a stack run directory (from `deeprestore stack`) or its modules/ folder"
    if not specs.is_file():
        raise DeepRestoreError(f"'{stack}' holds no trained modules (no {module_specs.SPECS_FILE}); expected "
                               f"{expected}.")
    try:
        saved = json.loads(specs.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise DeepRestoreError(f"'{specs}' is not valid JSON ({error}); expected the specs of {expected}.") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("network"), str):
        raise DeepRestoreError(f"'{specs}' names no network; expected the specs of {expected}.")
    if network is not None and network != saved["network"]:
        raise DeepRestoreError(f"The stack in '{stack}' inverts '{saved['network']}', not '{network}'; expected "
                               "the network it was trained on.")
    return saved["network"]


def style(settings):
    """The network and its layers, every content image of this task's shard and every style image;
    returns the whole list of content images (the run's items)."""
    network_layers(settings.network, (settings.content_layer, *settings.style_layers))
    sources = image_io.list_images(settings.content)
    for source in (*shard(sources, settings.shard), *settings.styles):
        image_io.load_image(source)  # fail on a bad image before building anything
    return sources


def texture(settings):
    """The network and its layers, every source; a texture run has no items."""
    network_layers(settings.network, settings.layers)
    for source in settings.sources:
        image_io.load_image(source)


def check_learning_rate(settings):
    """Refuses a learning rate given with a preset whose optimiser (L-BFGS) has none.

    Raises:
        DeepRestoreError: `settings.learning_rate` is set and the preset is `lbfgs`.
    """
    if settings.preset == "lbfgs" and settings.learning_rate:
        raise DeepRestoreError(f"--learning-rate {settings.learning_rate:g} was given with --preset lbfgs, whose "
                               "L-BFGS has no learning rate; expected no --learning-rate, or --preset mv2015 or "
                               "mv2016.")


def invert(settings):
    """The network, the inverted layer and `--to`, a learning rate only where the preset has one, every image
    of this task's shard; returns the whole list of images (the run's items)."""
    network_layers(settings.network, (settings.layer,))
    network_layers(settings.network, (settings.to,), option="--to")
    check_learning_rate(settings)
    sources = image_io.list_images(settings.images)
    for source in shard(sources, settings.shard):
        image_io.load_image(source)
    return sources


def deconvnet(settings):
    """`invert --method deconvnet`: the network and its layers (settings as a dict); a run without items."""
    network_layers(settings["network"], settings["layers"])


def learned(settings):
    """`invert --method learned`: a network given names a registered one or a model file, the stack's
    specs are there and name that network, and `--layer` is one of the network's (whether a module
    reconstructs from it is checked once the stack is read)."""
    if settings["network"] is not None:
        architectures.check_network(settings["network"])
    network_layers(stack_run(settings["stack"], settings["network"]), (settings["layer"],))


def stack(settings):
    """The network, and `--from` and `--to` of the default chain (`image` is the image), or the module spec
    file that replaces them: its fields and types, and the layers its modules take and reconstruct (the
    shapes are checked with the network built); a training run has no items."""
    if not settings.modules:
        network_layers(settings.network, [layer for layer in (settings.source, settings.target) if layer != "image"])
        return
    specs = module_specs.load_specs(settings.modules)
    names = [spec.name for spec in specs]
    architectures.check_network(settings.network)
    for spec in specs:
        for field in ("input", "target"):
            value = getattr(spec, field)
            if (field == "input" and value in names) or (field == "target" and value == module_specs.IMAGE):
                continue
            try:
                network_layers(settings.network, (value,))
            except DeepRestoreError as error:
                raise module_specs.not_a_layer(spec, field, names, settings.network, error) from None


def denoise_train(settings):
    """The model's name and the corruption's spelling (the rest is checked with the model's defaults filled
    in, `recipes.denoise.resolve`); a training run has no items."""
    models.get_spec(settings.model)
    if settings.corruption is not None:
        corruptions.parse(settings.corruption)


def denoise_apply(settings):
    """The inputs, read before any backend loads: `--clean` or `--corruption`, the corruption's
    spelling, one clean image per input, every image of this task's shard. Returns the whole list of
    images (the run's items)."""
    if settings.clean and settings.corruption:
        raise DeepRestoreError("Got both --clean and --corruption; expected one: --clean names the clean version of "
                               "--images, --corruption makes --images the clean version.")
    if settings.corruption:
        corruptions.parse(settings.corruption)
    saved_model(settings.model, "Model", DENOISER_FILE, "denoise train", (None, None, None, (1, 3)),
                "(N, height, width, 1 or 3) images")
    sources = image_io.list_images(settings.images)
    for source, clean in shard(zip(sources, clean_sources(settings, len(sources))), settings.shard):
        image_io.load_image(source)
        if clean:
            image_io.load_image(clean)
    return sources


def clean_sources(settings, count):
    """The clean reference of each input (None when unknown): `--clean` lists one per input, by position.

    Raises:
        DeepRestoreError: `--clean` lists a different number of images than `--images`.
    """
    if not settings.clean:
        return [None] * count
    cleans = image_io.list_images(settings.clean)
    if len(cleans) != count:
        raise DeepRestoreError(f"--clean lists {len(cleans)} image(s) for {count} in --images; expected one clean "
                               "image per input, in the same order.")
    return cleans
