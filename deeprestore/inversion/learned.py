"""Learned inversion: reconstruct images from a layer through a trained stack of modules.

`invert_learned` is the recipe-level function behind `deeprestore invert --method learned`: it
loads a stack run's modules, computes the true activations of the chosen layer for some images, runs
the chain of modules down to the image and writes into a run directory every module's output
(`reconstructions.h5`), the seed-000 four-column figure (`difference.png`), the reconstructions
started from each layer along the chain (`depth.png`), and MSE/PSNR/SSIM (`metrics.json`).

Reference:
    Dosovitskiy & Brox, 2016. Inverting visual representations with convolutional networks.
    Harder, 2017. Deep restoration (MSc thesis progress reports, seed 000).
"""

import json
import pathlib

import numpy as np

from deeprestore import figures
from deeprestore import images as image_io
from deeprestore.datasets import load_images, write_atomically
from deeprestore.errors import DeepRestoreError
from deeprestore.inversion import metrics
from deeprestore.inversion.specs import IMAGE_LAYER, short_name
from deeprestore.inversion.stack import SPECS_FILE, Stack, modules_directory
from deeprestore.networks import create_network
from deeprestore.probes import FeatureProbe


def stack_weights(stack):
    """The weights option a stack run was trained with (`auto` for a bare modules folder)."""
    config = pathlib.Path(stack) / "config.json"
    if config.is_file():
        return json.loads(config.read_text()).get("settings", {}).get("weights", "auto")
    return "auto"


def invert_learned(settings, images, run, network=None, weights=None, seed=0, echo=print):
    """Reconstructs images from a layer through a trained stack and writes figures and metrics.

    Args:
        settings: A `LearnedInversionSettings`: the `stack` (a stack run directory or its `modules/`
            folder), the `layer` to reconstruct from (name or alias; empty: the stack's deepest input),
            the `size` of the square centre crops (0: the size the stack was trained at) and the
            `batch_size` of a forward pass.
        images: An image source (file, bundled sample, folder, list file) or a sequence of them.
        run: The `RunDir` to write into.
        network: The network's name; must be the one the stack was trained on (default: that one).
        weights: The network's weights (default: those the stack was trained with).
        seed: Seed of random network weights, where those are used.
        echo: Where one-line notices go.

    Returns:
        The metrics written to `metrics.json`.

    Raises:
        DeepRestoreError: No stack at `stack`, another network, an unknown layer, or bad images.
    """
    stack, layer, size, batch_size = settings.stack, settings.layer, settings.size, settings.batch_size
    directory = modules_directory(stack)
    if not (directory / SPECS_FILE).is_file():
        raise DeepRestoreError(f"'{stack}' holds no trained modules; expected a stack run directory (from "
                               "`deeprestore stack`) or its modules/ folder.")
    saved = json.loads((directory / SPECS_FILE).read_text())
    if network is not None and network != saved["network"]:
        raise DeepRestoreError(f"The stack in '{stack}' inverts '{saved['network']}', not '{network}'; expected "
                               "the network it was trained on.")
    network = create_network(saved["network"], weights or stack_weights(stack), seed=seed)
    network.weights.tell(echo, run.note)
    if saved.get("weights_sha256") not in (None, network.weights.sha256):
        echo(f"Warning: the stack was trained on other weights of {network.name} (sha256 "
             f"{saved['weights_sha256'][:12]}...); its reconstructions through these will be poor.")
    size = (size, size) if size else tuple(saved["size"])
    model = Stack.load(network, directory, size)
    resolved = model.resolved
    layer = network.resolve(layer) if layer else resolved.sources()[0]
    chain = resolved.chain_from(layer)
    if not chain:
        raise DeepRestoreError(f"No module of the stack reconstructs from '{layer}'; expected one of "
                               f"{', '.join(dict.fromkeys(resolved.input_layer.values()))}.")
    keys, batch = load_images(images, size)
    layers = tuple(dict.fromkeys([layer] + [resolved.input_layer[name] for name in chain]
                                 + [resolved.target_layer[name] for name in chain]))
    true = FeatureProbe(network, layers).features(batch, batch_size)
    outputs = model.reconstruct(true[layer], layer, batch_size)
    run.update_config(stack=str(stack), network=network.name, weights=network.weights.as_config(), layer=layer,
                      size=list(size), chain=list(chain), sources=keys)

    def write(file):
        file.create_dataset("images", data=batch)
        file.create_dataset(f"activations/{layer}", data=true[layer])
        for name, output in outputs.items():
            file.create_dataset(f"modules/{name}", data=output)
            file[f"modules/{name}"].attrs["target"] = resolved.target_layer[name]

    write_atomically(run.path / "reconstructions.h5", write)
    result = {"stack": str(stack), "layer": layer, "chain": list(chain), "sources": keys,
              "modules": module_errors(resolved, outputs, true)}
    image_modules = [name for name in chain if resolved.target_layer[name] == IMAGE_LAYER]
    if image_modules:
        reconstructions = network.spec.deprocess(outputs[image_modules[-1]])
        result.update(metrics.summary(batch, reconstructions))
        figures.save_difference_figure(
            run.path / "difference.png", batch, reconstructions, row_titles=[pathlib.Path(key).stem for key in keys],
            title=f"{network.name}: learned inversion from {short_name(network, layer)} through {len(chain)} modules")
        for index, (key, reconstruction) in enumerate(zip(keys, reconstructions)):
            image_io.save_image(run.images_dir / f"{index:03d}_{pathlib.Path(key).stem}.png", reconstruction)
        result["by_layer"] = depth_figure(run, model, network, batch, true, chain, batch_size)
    else:
        echo(f"The chain from '{layer}' ends at '{resolved.target_layer[chain[-1]]}', not the image: only "
             "reconstructions.h5 and the module errors are written.")
    run.save_json("metrics.json", result)
    return result


def module_errors(resolved, outputs, true):
    """Each module's mean squared error against the true activation of its target, and relative to
    the target's variance (0 is perfect, 1 is as bad as predicting the mean)."""
    errors = {}
    for name, output in outputs.items():
        target = resolved.target_layer[name]
        if target not in true:
            continue
        mse = float(np.mean((output - true[target]) ** 2))
        errors[name] = {"target": target, "mse": mse, "relative_mse": mse / max(float(np.var(true[target])), 1e-12)}
    return errors


def depth_figure(run, stack, network, batch, true, chain, batch_size):
    """Draws `depth.png`, the image beside its reconstructions from each layer along the chain (deepest
    first), and returns the mean metrics of each."""
    rows, by_layer, titles = [list(batch)], {}, ["image"]
    for name in chain:
        start = stack.resolved.input_layer[name]
        outputs = stack.reconstruct(true[start], start, batch_size)
        final = [module for module in outputs if stack.resolved.target_layer[module] == IMAGE_LAYER]
        reconstructions = np.clip(network.spec.deprocess(outputs[final[-1]]), 0.0, 1.0)
        rows.append(list(reconstructions))
        by_layer[short_name(network, start)] = metrics.summary(batch, reconstructions)["mean"]
        titles.append(f"from {short_name(network, start)}")
    figures.save_figure(run.path / "depth.png", figures.image_grid(
        list(map(list, zip(*rows))), column_titles=titles, smallest=figures.SMALLEST_PANEL,
        title=f"{network.name}: reconstructions from each layer along the chain"))
    return by_layer
