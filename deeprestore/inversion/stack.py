"""A stack: inversion modules built for one network, trained together or apart, chained to reconstruct.

`Stack.build(network, resolved)` makes one Keras model per module (`resolved` from `check_specs`).
`training_model(mode)` wires them into one multi-output Keras model whose outputs are named after the
modules, so Keras logs `<module>_loss` for each and `train` turns them into loss-log columns:

- `separate`: every module takes the true activations of its input layer and learns from its own
  loss; mathematically the same as training each alone (the parameters are disjoint).
- `joint`: modules that take another module's output take it; the objective is the weighted sum of
  the losses of the modules marked `in_loss`; the others are logged with weight 0. A module's weight
  is its spec's `weight` (1 by default), or with `weight: null` `1 / scale^2` of its target layer,
  which measures its mean squared error in that layer's normalised units. The default of 1 lets
  large-valued layers weigh more, and reconstructed better in our runs (see docs/experiments/stack.rst).
- `end-to-end`: the chain, with only the final modules' losses in the objective.

`reconstruct(activations, layer)` runs the chain from a layer down, returning every module's output.
A stack saves to a folder of `specs.json` and one `<module>.weights.h5` per module.

Reference:
    Harder, 2017. Deep restoration (MSc thesis progress reports): modules "specify in and out tensor
    ... and whether reconstruction becomes part of the loss".
"""

import dataclasses
import json
import os
import pathlib

import keras
import numpy as np

from deeprestore import layernames
from deeprestore.datasets import reserve
from deeprestore.errors import DeepRestoreError
from deeprestore.inversion.modules import build_module
from deeprestore.inversion.specs import SPECS_FILE, check_specs, load_specs, modules_directory  # noqa: F401

MODES = ("separate", "joint", "end-to-end")
# A bound of a module's weights file: its float32 values (variables are float32, also under mixed
# precision), HDF5's groups and attributes (measured 29 KB for the tiny network's conv1 module) per file
# and per variable.
_WEIGHTS_OVERHEAD = 32768
_VARIABLE_OVERHEAD = 4096


def layer_scales(activations):
    """`{layer: root mean square of its activations}`: the fixed scales modules normalise by."""
    return {layer: max(float(np.sqrt(np.mean(np.square(values, dtype=np.float64)))), 1e-6)
            for layer, values in activations.items()}


class ChannelError(keras.metrics.MeanMetricWrapper):
    """Mean squared error of one channel (logged as `<module>_channel_<c>` when asked for)."""

    def __init__(self, channel, name=None, **kwargs):
        self.channel = int(channel)
        super().__init__(fn=self._error, name=name or f"channel_{self.channel:03d}", **kwargs)

    def _error(self, targets, outputs):
        # (batch,) per-example errors, averaged by the wrapper
        return keras.ops.mean(keras.ops.square(targets[..., self.channel] - outputs[..., self.channel]), axis=(1, 2))

    def get_config(self):
        return {"channel": self.channel, "name": self.name}


class Stack:
    """Inversion modules for one network, by name.

    Args:
        network: The `Network` whose layers the modules invert.
        resolved: `ResolvedSpecs` from `check_specs`.
        modules: `{name: keras.Model}`, one per spec.
    """

    def __init__(self, network, resolved, modules, scales=None):
        self.network = network
        self.resolved = resolved
        self.modules = modules
        self.scales = dict(scales or {})

    @classmethod
    def build(cls, network, resolved, seed=0, scales=None):
        """Builds freshly initialised modules for resolved specs; module i is seeded `seed * 1000 + i`.

        Args:
            network: The `Network`.
            resolved: `ResolvedSpecs`.
            seed: Seed of the initial weights.
            scales: `{layer: typical magnitude}` (see `layer_scales`); layers not in it use 1.
        """
        scales = dict(scales or {})
        modules = {}
        for index, spec in enumerate(resolved.specs):
            source, target = resolved.input_layer[spec.name], resolved.target_layer[spec.name]
            modules[spec.name] = build_module(spec, resolved.shapes[source][-1], resolved.shapes[target][-1],
                                              seed=seed * 1000 + index, input_scale=scales.get(source, 1.0),
                                              output_scale=scales.get(target, 1.0))
        return cls(network, resolved, modules, scales)

    @classmethod
    def load(cls, network, directory, size=None):
        """Loads a saved stack (`specs.json` and weights) for `network`.

        Args:
            network: The network the modules were trained on.
            directory: A folder written by `save` (a stack run's `modules/`).
            size: `(height, width)` to check the specs at (default: the size they were trained at).

        Raises:
            DeepRestoreError: The folder holds no stack, or it was trained on another network.
        """
        directory = pathlib.Path(directory)
        if not (directory / SPECS_FILE).is_file():
            raise DeepRestoreError(
                f"'{directory}' holds no trained modules; expected a stack run directory or its modules/ "
                f"folder with {SPECS_FILE} and <module>.weights.h5 files.")
        saved = json.loads((directory / SPECS_FILE).read_text())
        if saved.get("network") != network.name:
            raise DeepRestoreError(f"The modules in '{directory}' invert '{saved.get('network')}', not "
                                   f"'{network.name}'; expected the network they were trained on.")
        specs, scales = load_specs(directory / SPECS_FILE), saved.get("scales")
        if "layer_naming" not in saved and layernames.renamed(network.name):
            # Saved before naming 2: its `block1_conv2` is the convolution, `block1_conv2_preact` now.
            specs = [dataclasses.replace(spec, **{field: layernames.upgrade_canonical(getattr(spec, field))
                                                  for field in ("input", "target")}) for spec in specs]
            scales = scales and {layernames.upgrade_canonical(layer): value for layer, value in scales.items()}
        resolved = check_specs(network, specs, tuple(size or saved["size"]))
        stack = cls.build(network, resolved, scales=scales)
        stack.load_weights(directory)
        return stack

    @property
    def names(self):
        return self.resolved.names

    def layers_needed(self, mode):
        """The network layers a training model of `mode` reads: its inputs and every target."""
        inputs = [self.resolved.input_layer[name] for name in self.names
                  if mode == "separate" or not self.resolved.takes_module(name)]
        targets = [self.resolved.target_layer[name] for name in self.names]
        return tuple(dict.fromkeys(inputs + targets))

    def loss_weights(self, mode):
        """`{module: weight}` of each module's loss in the objective of `mode` (0: logged only)."""
        if mode == "separate":
            return dict.fromkeys(self.names, 1.0)
        if mode == "end-to-end":
            final = self.resolved.final()
            return {name: 1.0 if name in final else 0.0 for name in self.names}
        weights = {}
        for spec in self.resolved.specs:
            weight = self.automatic_weight(spec.name) if spec.weight is None else spec.weight
            weights[spec.name] = weight if spec.in_loss else 0.0
        if not any(weights.values()):
            raise DeepRestoreError("No module is in the joint objective; expected at least one module with "
                                   "in_loss true and a weight above 0.")
        return weights

    def automatic_weight(self, name):
        """`1 / scale^2` of the module's target layer: its mean squared error in normalised units."""
        return 1.0 / self.scales.get(self.resolved.target_layer[name], 1.0) ** 2

    def training_model(self, mode):
        """One Keras model with every module: inputs named after network layers, outputs after modules.

        Raises:
            DeepRestoreError: An unknown mode.
        """
        if mode not in MODES:
            raise DeepRestoreError(f"Unknown training mode '{mode}'; expected one of {', '.join(MODES)}.")
        inputs, outputs = {}, {}
        for spec in self.resolved.specs:
            if mode != "separate" and self.resolved.takes_module(spec.name):
                source = outputs[spec.input]
            else:
                layer = self.resolved.input_layer[spec.name]
                if layer not in inputs:
                    inputs[layer] = keras.Input((None, None, self.resolved.shapes[layer][-1]), name=layer)
                source = inputs[layer]
            outputs[spec.name] = self.modules[spec.name](source)
        return keras.Model(inputs, outputs, name=f"stack_{mode.replace('-', '_')}")

    def compile(self, model, mode, learning_rate, channel_losses=False):
        """Compiles a training model with Adam, a mean-squared-error loss per module and the mode's
        loss weights; with `channel_losses`, one `ChannelError` metric per target channel."""
        metrics = {name: [ChannelError(channel) for channel in range(self._target_channels(name))]
                   if channel_losses else [] for name in self.names}
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=dict.fromkeys(self.names, "mse"),
                      loss_weights=self.loss_weights(mode), metrics=metrics)
        return model

    def _target_channels(self, name):
        return self.resolved.shapes[self.resolved.target_layer[name]][-1]

    def reconstruct(self, activations, layer, batch_size=8):
        """Runs the chain of modules from `layer` down and returns every module's output.

        Args:
            activations: `(batch, height, width, channels)` true activations of `layer`.
            layer: The canonical layer they come from.
            batch_size: Images per forward pass.

        Returns:
            `{module: numpy array}` in chain order.

        Raises:
            DeepRestoreError: No module takes `layer`.
        """
        chain = self.resolved.chain_from(layer)
        if not chain:
            raise DeepRestoreError(
                f"No module reconstructs from layer '{layer}'; expected one of "
                f"{', '.join(dict.fromkeys(self.resolved.input_layer.values()))}.")
        tensors = {layer: keras.Input((None, None, activations.shape[-1]), name=layer)}
        outputs = {}
        for name in chain:
            outputs[name] = self.modules[name](tensors[self.resolved.input_layer[name]])
            tensors[self.resolved.target_layer[name]] = outputs[name]
        model = keras.Model(tensors[layer], outputs)
        parts = [model(activations[start:start + batch_size], training=False)
                 for start in range(0, len(activations), batch_size)]
        return {name: np.concatenate([keras.ops.convert_to_numpy(part[name]) for part in parts]) for name in chain}

    def save(self, directory, size, weights_sha256=None):
        """Writes `specs.json` and each module's weights into `directory`, each file atomically."""
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, module in self.modules.items():
            # Keras insists on the `.weights.h5` suffix, so the partial file keeps it.
            temporary = directory / f".{name}.partial.weights.h5"
            # Keras writes through HDF5, which can crash on a full disk: the space is reserved first.
            reserve({temporary: _WEIGHTS_OVERHEAD + sum(int(np.prod(variable.shape)) * 4 + _VARIABLE_OVERHEAD
                                                        for variable in module.variables)})
            module.save_weights(temporary)
            os.replace(temporary, directory / f"{name}.weights.h5")
        data = {"network": self.network.name, "layer_naming": layernames.LAYER_NAMING,
                "weights_sha256": weights_sha256, "size": list(size),
                "scales": self.scales, "modules": [spec.as_dict() for spec in self.resolved.specs]}
        temporary = directory / f".{SPECS_FILE}.partial"
        temporary.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(temporary, directory / SPECS_FILE)
        return directory

    def load_weights(self, directory, names=None):
        """Loads each module's weights from `<directory>/<module>.weights.h5`.

        Raises:
            DeepRestoreError: A module's file is missing or does not fit it.
        """
        directory = pathlib.Path(directory)
        for name in names or self.names:
            path = directory / f"{name}.weights.h5"
            if not path.is_file():
                raise DeepRestoreError(f"Module '{name}' has no weights in '{directory}'; expected {path.name} "
                                       "from a stack run with a module of that name.")
            try:
                self.modules[name].load_weights(path)
            except ValueError as error:
                raise DeepRestoreError(f"The weights in '{path}' do not fit module '{name}' "
                                       f"({' '.join(str(error).split())[:160]}).") from None
