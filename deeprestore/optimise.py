"""The one image-optimisation loop, shared by dream, style, texture and optimisation-based inversion.

`optimise(engine, images, steps, step_rule)` repeats: jitter the batch, compute the objective and its
gradient with respect to the pixels in one compiled call, undo the jitter on the gradient, take a
step, run the callbacks that are due, and log each term. An `Engine` compiles an objective over a
probe once and is reused across octaves and images. A step rule is a callable
`(images, gradient, step) -> images`; a callback is `(images, step) -> images`.
"""

import dataclasses
import warnings

import numpy as np
from tqdm.auto import tqdm

from deeprestore import backend, interrupts
from deeprestore.errors import DeepRestoreError
from deeprestore.probes import FeatureProbe


class Engine:
    """An objective over a probe's features, compiled with its gradient.

    Args:
        objective: An `Objective` whose layers the probe provides.
        probe: A `FeatureProbe`.
    """

    def __init__(self, objective, probe):
        missing = [layer for layer in objective.layers if layer != "images" and layer not in probe.layers]
        if missing:
            raise ValueError(f"The probe lacks layers {missing} that the objective reads.")
        self.objective = objective
        self.probe = probe
        self._compiled = backend.value_and_gradient(self._loss, probe.variables)

    @classmethod
    def for_objective(cls, objective, network):
        """An engine with a probe of exactly the layers the objective reads."""
        return cls(objective, FeatureProbe(network, [layer for layer in objective.layers if layer != "images"]))

    def _loss(self, images, targets):
        return self.objective({**self.probe(images), "images": images, "targets": targets})

    def __call__(self, images, targets=None):
        """Returns `(total, {term: value}, gradient)` for a numpy batch and the terms' target arrays."""
        targets = {name: np.asarray(value, np.float32) for name, value in (targets or {}).items()}
        total, values, gradient = self._compiled(np.asarray(images, np.float32), targets)
        return total, {name: float(value) for name, value in values.items()}, gradient


def normalised_descent(step_size):
    """Gradient descent with the step divided by the mean absolute gradient of each image.

    The normalisation keeps one step size usable across layers (seed 003, section 2.3). The mean is
    over every axis but the first, so the rule works on any batch of variables (pixels, or the
    spectra of a `parametrisations.FourierImage`).

    Args:
        step_size: The step in units of the mean absolute gradient (DeepDream's usual 0.01).
    """

    def rule(images, gradient, step):
        scale = np.mean(np.abs(gradient), axis=tuple(range(1, gradient.ndim)), keepdims=True) + 1e-8
        return images - step_size * gradient / scale

    return rule


def gradient_descent(step_size):
    """Plain gradient descent with a fixed step."""

    def rule(images, gradient, step):
        return images - step_size * gradient

    return rule


def step_schedule(boundaries=(), factors=()):
    """A piecewise-constant multiplier of the learning rate: `factors[i]` from step `boundaries[i]` on.

    Example: `step_schedule((300, 600), (0.1, 0.01))` divides the rate by 10 at step 300 and 600.
    """
    boundaries, factors = tuple(boundaries), tuple(factors)
    if len(boundaries) != len(factors):
        raise ValueError("A step schedule needs one factor per boundary.")

    def multiplier(step):
        value = 1.0
        for boundary, factor in zip(boundaries, factors):
            if step >= boundary:
                value = factor
        return value

    return multiplier


class Momentum:
    """SGD with momentum: `v = momentum * v - rate(t) * g; x += v` (Mahendran & Vedaldi 2015).

    Args:
        learning_rate: The base rate.
        momentum: The momentum coefficient.
        schedule: `step -> multiplier` of the rate (e.g. `step_schedule`).
    """

    def __init__(self, learning_rate, momentum=0.9, schedule=None):
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.schedule = schedule or (lambda step: 1.0)
        self.velocity = None

    def __call__(self, images, gradient, step):
        if self.velocity is None or self.velocity.shape != images.shape:
            self.velocity = np.zeros_like(images)
        self.velocity = self.momentum * self.velocity - self.learning_rate * self.schedule(step) * gradient
        return images + self.velocity


class Adam:
    """Adam on the pixels (Kingma & Ba, 2015), with an optional step schedule (Mahendran & Vedaldi 2016).

    Args:
        learning_rate: The base rate.
        beta_1: Decay of the first moment.
        beta_2: Decay of the second moment.
        epsilon: Added to the root of the second moment.
        schedule: `step -> multiplier` of the rate.
    """

    def __init__(self, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8, schedule=None):
        self.learning_rate = learning_rate
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.schedule = schedule or (lambda step: 1.0)
        self.moments = None
        self.count = 0

    def __call__(self, images, gradient, step):
        if self.moments is None or self.moments[0].shape != images.shape:
            self.moments = (np.zeros_like(images), np.zeros_like(images))
            self.count = 0
        self.count += 1
        first = self.beta_1 * self.moments[0] + (1 - self.beta_1) * gradient
        second = self.beta_2 * self.moments[1] + (1 - self.beta_2) * gradient**2
        self.moments = (first, second)
        corrected = first / (1 - self.beta_1**self.count)
        scale = np.sqrt(second / (1 - self.beta_2**self.count)) + self.epsilon
        return images - self.learning_rate * self.schedule(step) * corrected / scale


@dataclasses.dataclass
class LBFGS:
    """L-BFGS-B from scipy driven by the compiled value-and-gradient: the usual optimiser of Gatys-style
    transfer. Pixels stay within `bounds`. No jitter: L-BFGS needs the same function at every step.

    Attributes:
        bounds: `(low, high)` for every pixel, or None.
        history: Number of correction pairs kept (scipy's `maxcor`).
    """

    bounds: tuple | None = (0.0, 1.0)
    history: int = 10


def roll(images, shift):
    """Rolls a batch by `(dy, dx)` pixels with wrap-around (jitter)."""
    return np.roll(images, shift, axis=(1, 2))


def every(interval, callback):
    """Runs `callback(images, step)` after every `interval`-th step."""

    def maybe(images, step):
        return callback(images, step) if (step + 1) % interval == 0 else images

    return maybe


def clamp(low=0.0, high=1.0):
    """Keeps pixels within the valid range."""
    return lambda images, step: np.clip(images, low, high)


@dataclasses.dataclass
class Progress:
    """What the loop reports: a tqdm description, whether to show bars, and the log to write."""

    description: str = "optimise"
    show: bool = True
    log: object = None
    first_step: int = 0
    context: dict = dataclasses.field(default_factory=dict)
    notify: object = None  # `message -> None` for notices (L-BFGS stopping early); None: a Python warning


def optimise(engine, images, steps, step_rule, jitter=0, callbacks=(), rng=None, progress=None, targets=None):
    """Optimises a batch of images to minimise the engine's objective.

    Args:
        engine: An `Engine`.
        images: `(batch, height, width, 3)` float32 RGB.
        steps: Number of steps.
        step_rule: `(images, gradient, step) -> images`.
        jitter: Largest random shift, in pixels, applied before each step (0: none).
        callbacks: `(images, step) -> images`, run after each step in order.
        rng: A `numpy.random.Generator` for the jitter.
        progress: A `Progress` (bar and loss log).
        targets: `{term name: array}` the objective's targets (see `objectives`).

    Returns:
        The optimised images, and the last `{term: value}` with `total`.

    Raises:
        DeepRestoreError: The loss stopped being finite.
    """
    progress = progress or Progress()
    rng = rng or np.random.default_rng(0)
    images = np.array(images, np.float32)
    if isinstance(step_rule, LBFGS):
        if jitter:
            raise DeepRestoreError("L-BFGS cannot be combined with jitter; expected --jitter 0 or another optimiser.")
        return _optimise_lbfgs(engine, images, steps, step_rule, progress, targets)
    values = {}
    bar = tqdm(range(steps), desc=progress.description, disable=not progress.show, leave=False)
    for step in bar:
        interrupts.raise_if_requested()  # a deferred SIGTERM stops here, between two steps
        shift = tuple(rng.integers(-jitter, jitter + 1, size=2)) if jitter else (0, 0)
        total, values, gradient = engine(roll(images, shift), targets)
        if not np.isfinite(total) or not np.all(np.isfinite(gradient)):
            raise DeepRestoreError(
                f"The loss became {total} at step {progress.first_step + step + 1} ({progress.description}); "
                "expected finite values: lower the step size or check the input."
            )
        images = step_rule(images, roll(gradient, (-shift[0], -shift[1])), step)
        for callback in callbacks:
            images = callback(images, step)
        values = {**values, "total": total}
        if progress.log is not None:
            progress.log.log(progress.first_step + step + 1, values, **progress.context)
        bar.set_postfix(loss=f"{total:.4g}", refresh=False)
    return images, values


def _optimise_lbfgs(engine, images, steps, rule, progress, targets):
    """`optimise` for L-BFGS: scipy's minimiser calls the compiled function; each iteration is a step.

    scipy's stopping tests are absolute (projected gradient below 1e-5, relative loss change with a
    floor of 1), so a loss with small weights (style's 2.5e-8 content weight) "converges" before its
    first step. The minimiser therefore sees the loss divided by the largest absolute gradient at the
    start: the same minimum at any loss weights, with a gradient near 1. The log keeps the true values.
    When scipy stops before `steps` iterations, its reason goes to `progress.notify`.
    """
    import scipy.optimize

    shape = images.shape
    last = {}
    scale = {"divisor": None}

    def function(flat):
        total, values, gradient = engine(flat.reshape(shape).astype(np.float32), targets)
        if not np.isfinite(total):
            raise DeepRestoreError(f"The loss became {total} ({progress.description}); expected finite values.")
        last.update(values=values, total=total)
        if scale["divisor"] is None:
            largest = float(np.max(np.abs(gradient)))
            scale["divisor"] = largest if np.isfinite(largest) and largest > 0 else 1.0
        return float(total) / scale["divisor"], gradient.astype(np.float64).ravel() / scale["divisor"]

    bar = tqdm(total=steps, desc=progress.description, disable=not progress.show, leave=False)
    counter = {"step": 0}

    def after_iteration(flat):
        interrupts.raise_if_requested()  # a deferred SIGTERM stops here, between two steps
        counter["step"] += 1
        if progress.log is not None:
            progress.log.log(progress.first_step + counter["step"], {**last["values"], "total": last["total"]},
                             **progress.context)
        bar.update(1)
        bar.set_postfix(loss=f"{last['total']:.4g}", refresh=False)

    bounds = None if rule.bounds is None else [rule.bounds] * images.size
    result = scipy.optimize.minimize(
        function, images.astype(np.float64).ravel(), jac=True, method="L-BFGS-B", bounds=bounds,
        callback=after_iteration, options={"maxiter": steps, "maxcor": rule.history, "maxfun": steps * 4},
    )
    bar.close()
    if counter["step"] < steps:
        _notify(progress, f"L-BFGS stopped after {counter['step']} of {steps} iterations ({progress.description}): "
                          f"scipy says '{result.message}'.")
    return result.x.reshape(shape).astype(np.float32), {**last.get("values", {}), "total": last.get("total")}


def _notify(progress, message):
    if progress.notify is None:
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    else:
        progress.notify(message)
