"""Inversion modules: small two-operation Keras models that undo one operation of a network.

A module maps the activations of one layer back to those of a layer below it (or to the image). Each
has two operations with a ReLU between them; its type says which are convolutions (`c`) and which
transposed convolutions (`d`, "deconvolutions"):

- `cd`: convolution, ReLU, transposed convolution;
- `dc`: transposed convolution, ReLU, convolution;
- `dd`: transposed convolution, ReLU, transposed convolution;
- `upconv`: nearest-neighbour upsampling and a convolution, ReLU, convolution (no checkerboard
  artefacts: no operation has overlapping strided kernels).

Kernel sizes, strides, padding and the hidden channels are per operation, so the output size follows
Keras's convolution arithmetic; `specs.output_size` computes it without building anything. The last
operation is linear: targets are pre-activation tensors and the preprocessed (mean-subtracted) image,
which take both signs.

Reference:
    Dosovitskiy & Brox, 2016. Inverting visual representations with convolutional networks.
"""

import keras

from deeprestore.inversion.specs import TRANSPOSED


@keras.saving.register_keras_serializable(package="deeprestore")
class NearestUpsampling(keras.layers.Layer):
    """Nearest-neighbour upsampling by an integer factor, grown like a transposed convolution.

    With `padding="valid"` the output has `kernel_size - factor` more rows and columns (as a valid
    transposed convolution of that kernel would), filled by repeating the edge, so `upconv` modules can
    invert valid, overlapping operations such as AlexNet's conv1 and 3x3 stride-2 pooling.

    Args:
        factor: Integer upsampling factor.
        kernel_size: The kernel of the transposed convolution whose output size to match.
        padding: `same` (output `n * factor`) or `valid` (`n * factor + max(kernel_size - factor, 0)`).
    """

    def __init__(self, factor, kernel_size=1, padding="same", **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)
        self.kernel_size = int(kernel_size)
        self.padding = padding

    def call(self, inputs):
        outputs = keras.ops.repeat(keras.ops.repeat(inputs, self.factor, axis=1), self.factor, axis=2)
        extra = max(self.kernel_size - self.factor, 0) if self.padding == "valid" else 0
        if extra:
            # Symmetric padding of at most `factor` rows repeats the edge, which is already `factor` wide.
            before, after = extra // 2, extra - extra // 2
            outputs = keras.ops.pad(outputs, [(0, 0), (before, after), (before, after), (0, 0)], mode="symmetric")
        return outputs

    def compute_output_shape(self, input_shape):
        extra = max(self.kernel_size - self.factor, 0) if self.padding == "valid" else 0
        grown = [None if size is None else size * self.factor + extra for size in input_shape[1:3]]
        return (input_shape[0], *grown, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "kernel_size": self.kernel_size,
                "padding": self.padding}


def module_layers(spec, output_channels, seed=0):
    """The layers of one module, not yet built: `<name>_op1`, `<name>_relu`, `<name>_op2` (and
    `<name>_upsampling` first for `upconv`).

    Args:
        spec: A `ModuleSpec`.
        output_channels: Channels of its target (3 for the image).
        seed: Seed of the initial weights.
    """
    # A seed generator, not an int: see `deeprestore.networks.vgg.build`.
    initializer = keras.initializers.GlorotUniform(seed=keras.random.SeedGenerator(seed))
    layers = []
    channels = (spec.hidden, output_channels)
    for index, (kernel, stride, padding, transposed) in enumerate(
            zip(spec.kernel_sizes, spec.strides, spec.padding, TRANSPOSED[spec.type])):
        name = f"{spec.name}_op{index + 1}"
        if spec.type == "upconv" and index == 0:
            layers.append(NearestUpsampling(stride, kernel, padding, name=f"{spec.name}_upsampling"))
            layers.append(keras.layers.Conv2D(channels[index], kernel, padding="same",
                                              kernel_initializer=initializer, name=name))
        else:
            operation = keras.layers.Conv2DTranspose if transposed else keras.layers.Conv2D
            layers.append(operation(channels[index], kernel, strides=stride, padding=padding,
                                    kernel_initializer=initializer, name=name))
        if index == 0:
            layers.append(keras.layers.ReLU(name=f"{spec.name}_relu"))
    return layers


def build_module(spec, input_channels, output_channels, seed=0, input_scale=1.0, output_scale=1.0):
    """Builds the Keras model of one module, for inputs of any spatial size.

    The module works in normalised units: its input is divided by `input_scale` and its output
    multiplied by `output_scale` (fixed, the typical magnitude of each layer's activations). Without
    this, activations in the hundreds make each Adam step move hidden pre-activations by hundreds too,
    and a module's ReLUs can all die in its first steps.

    Args:
        spec: A `ModuleSpec`.
        input_channels: Channels of the module's input.
        output_channels: Channels of its target (3 for the image).
        seed: Seed of the initial weights.
        input_scale: Typical magnitude of the input activations.
        output_scale: Typical magnitude of the target activations.

    Returns:
        A `keras.Sequential` named `spec.name` (see `module_layers`).
    """
    return keras.Sequential([
        keras.Input((None, None, input_channels)),
        keras.layers.Rescaling(1.0 / input_scale, name=f"{spec.name}_normalise"),
        *module_layers(spec, output_channels, seed),
        keras.layers.Rescaling(output_scale, name=f"{spec.name}_denormalise"),
    ], name=spec.name)
