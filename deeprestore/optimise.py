"""The one image-optimisation loop, shared by dream, style, texture and optimisation-based inversion.

`optimise(engine, images, steps, step_rule)` repeats: jitter the batch, compute the objective and its
gradient with respect to the pixels in one compiled call, undo the jitter on the gradient, take a
step, run the callbacks that are due, and log each term. An `Engine` compiles an objective over a
probe once and is reused across octaves and images. A step rule is a callable
`(images, gradient, step) -> images`; a callback is `(images, step) -> images`.
"""

import dataclasses

import numpy as np
from tqdm.auto import tqdm

from deeprestore import backend
from deeprestore.errors import DeepRestoreError


class Engine:
    """An objective over a probe's features, compiled with its gradient.

    Args:
        objective: An `Objective` whose layers the probe provides.
        probe: A `FeatureProbe`.
    """

    def __init__(self, objective, probe):
        missing = [layer for layer in objective.layers if layer not in probe.layers]
        if missing:
            raise ValueError(f"The probe lacks layers {missing} that the objective reads.")
        self.objective = objective
        self.probe = probe
        self._compiled = backend.value_and_gradient(self._loss, probe.variables)

    def _loss(self, images):
        return self.objective(self.probe(images))

    def __call__(self, images):
        """Returns `(total, {term: value}, gradient)` for a numpy batch."""
        total, values, gradient = self._compiled(np.asarray(images, np.float32))
        return total, {name: float(value) for name, value in values.items()}, gradient


def normalised_descent(step_size):
    """Gradient descent with the step divided by the mean absolute gradient of each image.

    The normalisation keeps one step size usable across layers (seed 003, section 2.3).

    Args:
        step_size: The step in units of the mean absolute gradient (DeepDream's usual 0.01).
    """

    def rule(images, gradient, step):
        scale = np.mean(np.abs(gradient), axis=(1, 2, 3), keepdims=True) + 1e-8
        return images - step_size * gradient / scale

    return rule


def gradient_descent(step_size):
    """Plain gradient descent with a fixed step."""

    def rule(images, gradient, step):
        return images - step_size * gradient

    return rule


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


def optimise(engine, images, steps, step_rule, jitter=0, callbacks=(), rng=None, progress=None):
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

    Returns:
        The optimised images, and the last `{term: value}` with `total`.

    Raises:
        DeepRestoreError: The loss stopped being finite.
    """
    progress = progress or Progress()
    rng = rng or np.random.default_rng(0)
    images = np.array(images, np.float32)
    values = {}
    bar = tqdm(range(steps), desc=progress.description, disable=not progress.show, leave=False)
    for step in bar:
        shift = tuple(rng.integers(-jitter, jitter + 1, size=2)) if jitter else (0, 0)
        total, values, gradient = engine(roll(images, shift))
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
