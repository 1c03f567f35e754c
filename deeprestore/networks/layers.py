"""Layers that Keras lacks: Caffe's local response normalisation."""

import keras


@keras.saving.register_keras_serializable(package="deeprestore")
class LocalResponseNormalization(keras.layers.Layer):
    """Local response normalisation across channels (Krizhevsky et al., 2012), as in Caffe.

    `output = input / (bias + alpha * sum(input[c - radius : c + radius + 1] ** 2)) ** beta`, the sum
    over neighbouring channels, clipped at the edges. This is TensorFlow's parametrisation: Caffe's
    `local_size 5, alpha 1e-4` is `radius 2, alpha 1e-4 / 5 = 2e-5` here.

    Reference:
        Krizhevsky, Sutskever & Hinton, 2012. ImageNet classification with deep convolutional
        neural networks.

    Args:
        radius: Half-width of the channel window.
        alpha: Scale of the sum of squares.
        beta: Exponent.
        bias: Additive constant.
    """

    def __init__(self, radius=2, alpha=2e-5, beta=0.75, bias=1.0, **kwargs):
        super().__init__(**kwargs)
        self.radius = int(radius)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.bias = float(bias)

    def call(self, inputs):
        squares = keras.ops.square(inputs)
        channels = inputs.shape[-1]
        padded = keras.ops.pad(squares, [(0, 0)] * (len(inputs.shape) - 1) + [(self.radius, self.radius)])
        window = sum(padded[..., offset : offset + channels] for offset in range(2 * self.radius + 1))
        return inputs / keras.ops.power(self.bias + self.alpha * window, self.beta)

    def get_config(self):
        return {
            **super().get_config(),
            "radius": self.radius, "alpha": self.alpha, "beta": self.beta, "bias": self.bias,
        }
