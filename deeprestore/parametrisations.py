"""Image parametrisations: how the optimised variables become a batch of RGB images in [0, 1].

A parametrisation holds `parameters` (any float array) and maps them to images with `images(parameters)`;
`gradient(image_gradient, parameters)` maps a gradient with respect to the images back to the parameters
by the chain rule (the exact adjoint of `images`), `image_change(direction, parameters)` is the forward
derivative, and `parameters_of(images)` inverts `images`, so that an optimisation can start from a given
image. Plain pixels need no parametrisation: the optimiser works on the images themselves. `FourierImage`
is lucid's decorrelated-colour Fourier parametrisation, written in numpy because it runs outside the
compiled network step. `ParametrisedEngine` wraps an `Engine` so that `optimise` runs unchanged on the
parameters, with jitter applied to the decoded images; pass `optimise` no jitter, and callbacks only if
they act on parameters (blur acts on pixels: decode, blur and re-encode), and read the images back with
`parametrisation.images(result)`. `normalised_image_descent` is DeepDream's normalised step on parameters.

Reference:
    Olah, Mordvintsev & Schubert, 2017. Feature visualization (Distill); the lucid library's
    `optvis.param.fft_image` and `to_valid_rgb(decorrelate=True, sigmoid=True)`.
"""

import numpy as np

PARAMETRISATIONS = ("pixels", "fourier")
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


def _sigmoid(values):
    return 0.5 * (1.0 + np.tanh(0.5 * values))  # the tanh form never overflows


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
        frequencies = spectrum_frequencies(self.height, self.width)
        # The floor keeps the zero frequency finite; sqrt(h * w) undoes irfft2's 1 / (h * w) (as in lucid).
        floor = 1.0 / max(self.height, self.width)
        self.scale = np.sqrt(self.height * self.width) / np.maximum(frequencies, floor) ** decay_power
        columns = self.width // 2 + 1
        rng = np.random.default_rng(seed)
        shape = (self.batch, 3, 2, self.height, columns)
        self.parameters = rng.normal(0.0, standard_deviation, shape).astype(np.float32)
        # irfft2 counts every column but the zero (and, for even widths, the Nyquist) frequency twice.
        self._multiplicity = np.full(columns, 2.0)
        self._multiplicity[0] = 1.0
        if self.width % 2 == 0:
            self._multiplicity[-1] = 1.0

    def _check(self, parameters):
        parameters = self.parameters if parameters is None else np.asarray(parameters)
        if parameters.shape != self.parameters.shape:
            raise ValueError(f"Expected parameters of shape {self.parameters.shape}; received {parameters.shape}.")
        return parameters.astype(np.float64)

    def _colours(self, parameters):
        """The decorrelated-colour images before the sigmoid, `(batch, height, width, 3)` float64."""
        spectrum = (parameters[:, :, 0] + 1j * parameters[:, :, 1]) * self.scale  # (batch, 3, height, columns)
        channels = np.fft.irfft2(spectrum, s=(self.height, self.width), axes=(-2, -1))  # (batch, 3, height, width)
        # lucid divides by 4 so that the initial spectrum gives images of moderate contrast.
        return np.moveaxis(channels, 1, -1) / 4.0 @ COLOUR_CORRELATION.T

    def parameters_of(self, images, margin=DEFAULT_MARGIN):
        """The parameters whose images are `images`: the inverse of `images(parameters)`.

        Every step of the decoder is inverted: the sigmoid by the logit, the colour matrix by its
        inverse, the inverse real FFT by a forward one, and the frequency scale by a division. Pixels
        are first clipped into `[margin, 1 - margin]`, since the sigmoid reaches neither 0 nor 1 and
        its gradient vanishes near both: a pixel encoded at 0.01 still moves a tenth as fast as grey.
        Images within that range come back exactly (to float32 rounding).

        Args:
            images: `(batch, height, width, 3)` of this parametrisation's shape.
            margin: How far from 0 and 1 pixels are clipped before the logit.

        Returns:
            float32 parameters of shape `(batch, 3, 2, height, width // 2 + 1)`.
        """
        images = np.asarray(images, np.float64)
        expected = (self.batch, self.height, self.width, 3)
        if images.shape != expected:
            raise ValueError(f"Expected images of shape {expected}; received {images.shape}.")
        images = np.clip(images, margin, 1.0 - margin)
        colours = np.log(images) - np.log1p(-images)  # the logit
        channels = np.moveaxis(colours @ np.linalg.inv(COLOUR_CORRELATION.T) * 4.0, -1, 1)  # (batch, 3, height, width)
        spectrum = np.fft.rfft2(channels, axes=(-2, -1)) / self.scale
        return np.stack([spectrum.real, spectrum.imag], axis=2).astype(np.float32)

    def images(self, parameters=None, dtype=np.float32):
        """The images of `parameters` (default: the initial ones), `(batch, height, width, 3)` in [0, 1]."""
        return _sigmoid(self._colours(self._check(parameters))).astype(dtype)

    def image_change(self, direction, parameters=None):
        """How the images move when the parameters move by a small `direction`: the decoder's Jacobian
        applied to it (the forward derivative of `images` at `parameters`).

        Args:
            direction: An array of the parameters' shape.
            parameters: Where the derivative is taken (default: the initial parameters).

        Returns:
            float64 `(batch, height, width, 3)`.
        """
        images = _sigmoid(self._colours(self._check(parameters)))
        return images * (1.0 - images) * self._colours(self._check(direction))

    def gradient(self, image_gradient, parameters=None):
        """The gradient with respect to the parameters, given the gradient with respect to `images(parameters)`.

        The chain rule through each step, in reverse: the sigmoid's derivative, the colour matrix's
        transpose, the 1/4, and the adjoint of the inverse real FFT (a forward real FFT weighted by how
        often irfft2 counts each column, over `height * width`) times the frequency scale.

        Args:
            image_gradient: `(batch, height, width, 3)`.
            parameters: The parameters the images came from (default: the initial ones).

        Returns:
            float32 array of the parameters' shape.
        """
        parameters = self._check(parameters)
        image_gradient = np.asarray(image_gradient, np.float64)
        expected = (self.batch, self.height, self.width, 3)
        if image_gradient.shape != expected:
            raise ValueError(f"Expected an image gradient of shape {expected}; received {image_gradient.shape}.")
        images = _sigmoid(self._colours(parameters))
        colours = image_gradient * images * (1.0 - images) @ COLOUR_CORRELATION / 4.0  # (batch, height, width, 3)
        channels = np.moveaxis(colours, -1, 1)  # (batch, 3, height, width)
        spectrum = np.fft.rfft2(channels, axes=(-2, -1)) * self._multiplicity / (self.height * self.width) * self.scale
        return np.stack([spectrum.real, spectrum.imag], axis=2).astype(np.float32)


class ParametrisedEngine:
    """An `Engine` seen through a parametrisation: called on parameters, it returns their gradient.

    `optimise(ParametrisedEngine(engine, parametrisation), parametrisation.parameters, ...)` optimises
    the parameters with any step rule, L-BFGS included (without bounds: `LBFGS(bounds=None)`, since the
    sigmoid already keeps the images in [0, 1]). `optimise`'s own jitter and callbacks would act on the
    parameter array, so pass none: jitter is applied here instead, to the decoded images, and the
    gradient rolled back before it is mapped to the parameters.

    Args:
        engine: An `Engine` (or anything called as `engine(images, targets) -> (total, values, gradient)`).
        parametrisation: A parametrisation such as `FourierImage`.
        jitter: Largest random shift of the decoded images, in pixels (0: none).
        rng: A `numpy.random.Generator` for the jitter.
    """

    def __init__(self, engine, parametrisation, jitter=0, rng=None):
        self.engine = engine
        self.parametrisation = parametrisation
        self.jitter = int(jitter)
        self.rng = rng or np.random.default_rng(0)

    def __call__(self, parameters, targets=None):
        """Returns `(total, {term: value}, parameter gradient)`."""
        shift = (tuple(int(value) for value in self.rng.integers(-self.jitter, self.jitter + 1, size=2))
                 if self.jitter else (0, 0))
        images = np.roll(self.parametrisation.images(parameters), shift, axis=(1, 2))
        total, values, gradient = self.engine(images, targets)
        gradient = np.roll(np.asarray(gradient), (-shift[0], -shift[1]), axis=(1, 2))
        return total, values, self.parametrisation.gradient(gradient, parameters)


def normalised_image_descent(step_size, parametrisation):
    """DeepDream's normalised step (`optimise.normalised_descent`) taken on a parametrisation's parameters,
    scaled so that each image moves by `step_size` in mean absolute pixel value, as a normalised step on
    the pixels does.

    The descent direction is the parameters' gradient; its length is set by the decoder's Jacobian
    (`image_change`), so one `--step-size` means the same pixel change with or without the
    parametrisation, at every image size.

    Args:
        step_size: The mean absolute pixel change of one step, per image.
        parametrisation: The parametrisation the parameters belong to (a `FourierImage`).

    Returns:
        A step rule `(parameters, gradient, step) -> parameters`.
    """

    def rule(parameters, gradient, step):
        change = parametrisation.image_change(gradient, parameters)  # (batch, height, width, 3)
        scale = np.mean(np.abs(change), axis=(1, 2, 3)).reshape((-1,) + (1,) * (gradient.ndim - 1)) + 1e-12
        return (parameters - step_size * gradient / scale).astype(np.float32)

    return rule
