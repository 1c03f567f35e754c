"""Image parametrisations: how the optimised variables become a batch of RGB images in [0, 1].

A parametrisation holds `parameters` (any float array) and maps them to images with `decode(parameters)`
in `keras.ops`, inside the compiled step, so the optimisation loop differentiates through it (its
adjoint is the autodiff's); `encode(images)` inverts `decode` (also in `keras.ops`, so a regulariser
that acts on pixels can decode, change and re-encode on the device), and `image_change(direction,
parameters)` is the forward derivative. `images(parameters)` and `parameters_of(images)` are the same
maps on numpy arrays, for the host (a start image, saving). Plain pixels need no parametrisation: the
optimiser works on the images themselves. `FourierImage` is lucid's decorrelated-colour Fourier
parametrisation; pass it to `optimise` in its `Plan(parametrisation)`, and read the images back with
`parametrisation.images(result)`. `normalised_image_descent` is DeepDream's normalised step on parameters.

Reference:
    Olah, Mordvintsev & Schubert, 2017. Feature visualization (Distill); the lucid library's
    `optvis.param.fft_image` and `to_valid_rgb(decorrelate=True, sigmoid=True)`.
"""

import keras
import numpy as np

from deeprestore.optimise import StepRule
from deeprestore.settings import PARAMETRISATIONS  # noqa: F401 (the names, where the defaults live)

# How far from 0 and 1 `FourierImage.parameters_of` clips pixels before inverting the sigmoid.
DEFAULT_MARGIN = 0.01

# The square root of ImageNet's colour correlation matrix, from lucid's `color_correlation_svd_sqrt`:
# images are built in a decorrelated colour space and mapped back to RGB with it.
COLOUR_CORRELATION_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
# Normalised so that its largest column has unit norm, as lucid does.
COLOUR_CORRELATION = COLOUR_CORRELATION_SQRT / np.max(np.linalg.norm(COLOUR_CORRELATION_SQRT, axis=0))


def spectrum_frequencies(height, width):
    """The spatial frequency `sqrt(fy^2 + fx^2)` of each entry of a real 2-D FFT, `(height, width // 2 + 1)`."""
    rows = np.fft.fftfreq(height)[:, None]
    columns = np.fft.rfftfreq(width)[None, :]
    return np.sqrt(rows**2 + columns**2)


def _fft_rows(real, imaginary, inverse=False):
    """The 1-D FFT (or inverse FFT) along axis -2 of a complex array given as real and imaginary parts.

    keras.ops transforms the last axis only, and has no 1-D inverse: the rows are moved last, and
    the inverse is the conjugate of the forward transform of the conjugate, over the length.
    """
    order = (0, 1, 3, 2)
    real, imaginary = keras.ops.transpose(real, order), keras.ops.transpose(imaginary, order)
    if inverse:
        length = real.shape[-1]
        real, imaginary = keras.ops.fft((real, -imaginary))
        real, imaginary = real / length, -imaginary / length
    else:
        real, imaginary = keras.ops.fft((real, imaginary))
    return keras.ops.transpose(real, order), keras.ops.transpose(imaginary, order)


class FourierImage:
    """A batch of images represented by the Fourier spectra of decorrelated colour channels.

    Each colour channel's spectrum is scaled by 1 / frequency, so that a step moves all frequencies
    alike instead of favouring the high ones that pixels amplify; an inverse real FFT gives the
    channel; `COLOUR_CORRELATION` maps the decorrelated channels to RGB, and a sigmoid maps them
    into [0, 1]. A gradient step on these parameters is a preconditioned step on the pixels, which
    gives smoother, more natural images than optimising pixels directly.

    Reference:
        Olah, Mordvintsev & Schubert, 2017. Feature visualization. Distill.

    Args:
        shape: `(batch, height, width)` of the images.
        seed: Seed of the random initial spectrum.
        standard_deviation: Of the initial spectrum's entries (lucid's 0.01: images start near grey).
        decay_power: The spectrum is scaled by `1 / frequency ** decay_power`.

    Attributes:
        parameters: The initial parameters, `(batch, 3, 2, height, width // 2 + 1)` float32: the real
            and imaginary parts of each colour channel's spectrum.
    """

    def __init__(self, shape, seed=0, standard_deviation=0.01, decay_power=1.0):
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"Expected shape (batch, height, width) with positive sizes; received {shape}.")
        self.batch, self.height, self.width = (int(size) for size in shape)
        self.decay_power = float(decay_power)
        frequencies = spectrum_frequencies(self.height, self.width)
        # The floor keeps the zero frequency finite; sqrt(h * w) undoes irfft2's 1 / (h * w) (as in lucid).
        floor = 1.0 / max(self.height, self.width)
        self.scale = (np.sqrt(self.height * self.width) / np.maximum(frequencies, floor) ** decay_power).astype(
            np.float32)
        rng = np.random.default_rng(seed)
        shape = (self.batch, 3, 2, self.height, self.width // 2 + 1)
        self.parameters = rng.normal(0.0, standard_deviation, shape).astype(np.float32)

    @property
    def key(self):
        """What a compiled step depends on."""
        return ("fourier", self.batch, self.height, self.width, self.decay_power)

    def _check(self, parameters):
        parameters = self.parameters if parameters is None else np.asarray(parameters, np.float32)
        if parameters.shape != self.parameters.shape:
            raise ValueError(f"Expected parameters of shape {self.parameters.shape}; received {parameters.shape}.")
        return parameters

    def colours(self, parameters):
        """The decorrelated-colour images before the sigmoid, `(batch, height, width, 3)`: a linear map."""
        real, imaginary = _fft_rows(parameters[:, :, 0] * self.scale, parameters[:, :, 1] * self.scale, inverse=True)
        channels = keras.ops.irfft((real, imaginary), fft_length=self.width)  # (batch, 3, height, width)
        # lucid divides by 4 so that the initial spectrum gives images of moderate contrast.
        return keras.ops.matmul(keras.ops.transpose(channels, (0, 2, 3, 1)) / 4.0,
                                COLOUR_CORRELATION.T.astype(np.float32))

    def decode(self, parameters):
        """The images of `parameters`, `(batch, height, width, 3)` in [0, 1] (tensors in, tensors out)."""
        return keras.ops.sigmoid(self.colours(parameters))

    def encode(self, images, margin=DEFAULT_MARGIN):
        """The parameters whose images are `images`: the inverse of `decode` (tensors in, tensors out).

        Every step of the decoder is inverted: the sigmoid by the logit, the colour matrix by its
        inverse, the inverse real FFT by a forward one, and the frequency scale by a division. Pixels
        are first clipped into `[margin, 1 - margin]`, since the sigmoid reaches neither 0 nor 1 and
        its gradient vanishes near both: a pixel encoded at 0.01 still moves a tenth as fast as grey.
        """
        images = keras.ops.clip(images, margin, 1.0 - margin)
        colours = keras.ops.log(images) - keras.ops.log(1.0 - images)  # the logit
        inverse = np.linalg.inv(COLOUR_CORRELATION.T).astype(np.float32)
        channels = keras.ops.transpose(keras.ops.matmul(colours, inverse) * 4.0, (0, 3, 1, 2))  # (batch, 3, h, w)
        real, imaginary = keras.ops.rfft(channels)
        real, imaginary = _fft_rows(real, imaginary)
        return keras.ops.stack([real / self.scale, imaginary / self.scale], axis=2)

    def parameters_of(self, images, margin=DEFAULT_MARGIN):
        """`encode` on numpy: float32 parameters `(batch, 3, 2, height, width // 2 + 1)` of `images`.

        Images within `[margin, 1 - margin]` come back exactly (to float32 rounding).
        """
        images = np.asarray(images, np.float32)
        expected = (self.batch, self.height, self.width, 3)
        if images.shape != expected:
            raise ValueError(f"Expected images of shape {expected}; received {images.shape}.")
        return np.asarray(self.encode(images, margin), np.float32)

    def images(self, parameters=None):
        """The images of `parameters` (default: the initial ones) as numpy, `(batch, height, width, 3)`."""
        return np.asarray(self.decode(self._check(parameters)), np.float32)

    def image_change(self, direction, parameters):
        """How the images move when the parameters move by a small `direction`: the decoder's Jacobian
        applied to it (the forward derivative of `decode` at `parameters`; tensors in, tensors out)."""
        images = self.decode(parameters)
        return images * (1.0 - images) * self.colours(direction)


class normalised_image_descent(StepRule):
    """DeepDream's normalised step (`optimise.normalised_descent`) taken on a parametrisation's parameters,
    scaled so that each image moves by `step_size` in mean absolute pixel value, as a normalised step on
    the pixels does.

    The descent direction is the parameters' gradient; its length is set by the decoder's Jacobian
    (`image_change`), so one `--step-size` means the same pixel change with or without the
    parametrisation, at every image size.

    Args:
        step_size: The mean absolute pixel change of one step, per image.
        parametrisation: The parametrisation the parameters belong to (a `FourierImage`).
    """

    def __init__(self, step_size, parametrisation):
        self.hyperparameters = {"step_size": float(step_size)}
        self.parametrisation = parametrisation

    @property
    def key(self):
        return ("normalised_image_descent", self.parametrisation.key)

    def apply(self, hyperparameters, variables, gradient, state, step):
        change = self.parametrisation.image_change(gradient, variables)  # (batch, height, width, 3)
        scale = keras.ops.mean(keras.ops.abs(change), axis=(1, 2, 3)) + 1e-12
        scale = keras.ops.reshape(scale, (-1,) + (1,) * (len(gradient.shape) - 1))
        return variables - hyperparameters["step_size"] * gradient / scale, state
