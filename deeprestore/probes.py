"""A feature probe: named activations of a network from one forward pass.

`FeatureProbe(network, layers)` is a Keras model from the network's input to a dict
`{layer: activation}`; it computes only what those layers need. Calling it inside a compiled
function gives tensors; `features(images)` gives numpy arrays, batch by batch.
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
        return {layer: np.concatenate([part[layer] for part in parts]) for layer in self.layers}
