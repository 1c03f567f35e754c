"""A feature probe: named activations of a network from one forward pass.

`FeatureProbe(network, layers)` is a Keras model from the network's input to a dict
`{layer: activation}`; it computes only what those layers need. Calling it inside a compiled
function gives tensors; `features(images)` gives numpy arrays, batch by batch. A `SegmentProbe` does
the same from an intermediate layer's tensor instead of the image (inversion to a layer).
"""

import keras
import numpy as np

from deeprestore import backend


class FeatureProbe:
    """Named activations of `network` at `layers` (names or aliases, resolved to canonical names).

    Args:
        network: A `Network`.
        layers: Layer names or aliases.

    Raises:
        DeepRestoreError: A layer is unknown.
    """

    def __init__(self, network, layers):
        self.network = network
        self.layers = tuple(dict.fromkeys(network.resolve(layer) for layer in layers))
        outputs = {layer: network.model.get_layer(layer).output for layer in self.layers}
        self.model = keras.Model(network.model.input, outputs, name=f"{network.slug}_probe")
        self._forward = None

    def __call__(self, images):
        """Returns `{layer: tensor}` for a batch of RGB [0, 1] images (tensors in, tensors out).

        Raises:
            DeepRestoreError: The network cannot take images of this size (a model file with a fixed size).
        """
        height, width = images.shape[1:3]
        if height is not None and width is not None:
            self.network.spec.check_size(height, width)
        return self.model(images)

    @property
    def variables(self):
        """The weights the probe reads."""
        return self.model.variables

    def features(self, images, batch_size=8):
        """Returns `{layer: numpy array}` for a numpy batch, computed `batch_size` images at a time."""
        if self._forward is None:
            self._forward = backend.compiled(self.model, self.variables)
        images = np.asarray(images, np.float32)
        self.network.spec.check_size(*images.shape[1:3])
        parts = [self._forward(images[start : start + batch_size]) for start in range(0, len(images), batch_size)]
        # float32 whatever the network computes in (bfloat16 under mixed precision): these are targets.
        return {layer: np.concatenate([part[layer] for part in parts]).astype(np.float32) for layer in self.layers}


class SegmentProbe:
    """Named activations computed from one layer's tensor instead of from the image.

    The model is the part of the network between `source` and the `layers` above it (a Keras model
    cut from one named layer's output to others'). Called on a tensor of `source`'s shape divided by
    `scale`, it returns `{source: tensor * scale, layer: activation}`, so an optimiser can work on a
    variable of order one while objectives read the activations in the network's units.

    Args:
        network: A `Network`.
        source: Name or alias of the layer whose tensor is the input.
        layers: Names or aliases of layers above `source`.
        scale: What the input is multiplied by before it enters the network.

    Raises:
        DeepRestoreError: A layer is unknown.
        ValueError: A layer does not come after `source`.
    """

    def __init__(self, network, source, layers, scale=1.0):
        self.network = network
        self.source = network.resolve(source)
        targets = tuple(dict.fromkeys(network.resolve(layer) for layer in layers))
        order = network.layers
        below = [layer for layer in targets if order.index(layer) <= order.index(self.source)]
        if below:
            raise ValueError(f"Layers {below} do not come after '{self.source}'.")
        self.layers = (self.source, *targets)
        self.scale = float(scale)
        outputs = {layer: network.model.get_layer(layer).output for layer in targets}
        self.model = keras.Model(network.model.get_layer(self.source).output, outputs, name=f"{network.name}_segment")

    def __call__(self, tensors):
        """Returns `{layer: tensor}` for a batch of `source` tensors divided by `scale`."""
        tensors = tensors * self.scale
        return {self.source: tensors, **self.model(tensors)}

    @property
    def variables(self):
        """The weights the segment reads."""
        return self.model.variables
