"""The one image-optimisation loop, shared by dream, style, texture and optimisation-based inversion.

A step has lucid's shape: parameters -> parametrisation -> transforms -> (tiles) -> network ->
objective, differentiated as one function, then the step rule and the constraints, all inside one
compiled function that runs several steps per call (`keras.ops.fori_loop`) and returns each step's
loss terms as arrays for the loss log. Control comes back to the host between these chunks of steps:
that is where progress is shown, the log written, host callbacks (saving images) run and an
interruption is noticed. The random numbers of a chunk (jitter shifts, random scales and rotations, tile
shifts) are drawn on the host and passed in. Each is a function of the seed, the random source and the
step's number in the whole run alone (`StepRandom`), never of how the steps were grouped into chunks
(which follows the wall clock) or where a run was split, so `--seed` reproduces a run on every backend.

An `Engine` holds an objective over a probe and compiles, once per configuration, the chunk function
and a plain value-and-gradient (for scipy's L-BFGS, which must stay on the host). A step rule
(`normalised_descent`, `gradient_descent`, `Momentum`, `Adam`, `Adagrad`) is written in `keras.ops` on
a state it declares. A constraint (`clamp`, or `Constraint(key, function)`) runs on the device after
every step; a callback `(images, step) -> images` runs on the host, after every step unless it is
wrapped by `every(interval, callback)`.
"""

import dataclasses
import functools
import hashlib
import time
import typing
import warnings
from collections.abc import Callable

import keras
import numpy as np
from tqdm.auto import tqdm

from deeprestore import backend, interrupts
from deeprestore.errors import DeepRestoreError
from deeprestore.probes import FeatureProbe

# The weight of the squared distance to the box in the on-device L-BFGS (`_optimise_lbfgs_on_device`): of
# 0.01, 0.1, 1, 3 and 100 tried on the tiny network's style objective, 1 came closest to L-BFGS-B's result
# after 30 iterations (2.7% above it; 0.01: 17%, 100: 9 times it; without the penalty 19%).
BOUND_PENALTY = 1.0

# Most steps one compiled call runs (a fixed number, so that one trace serves every run length); the
# loop also returns to the host about every CHUNK_SECONDS, where an interruption can be noticed. Under
# JAX on a CPU a call runs one step (`backend.steps_per_call`).
CHUNK_STEPS = 16
CHUNK_SECONDS = 2.0


class Engine:
    """An objective over a probe's features, compiled with its gradient.

    Args:
        objective: An `Objective` whose layers the probe provides.
        probe: A `FeatureProbe` (or a `SegmentProbe`).
    """

    def __init__(self, objective, probe):
        missing = [layer for layer in objective.layers if layer != "images" and layer not in probe.layers]
        if missing:
            raise ValueError(f"The probe lacks layers {missing} that the objective reads.")
        self.objective = objective
        self.probe = probe
        self._compiled = {}

    @classmethod
    def for_objective(cls, objective, network):
        """An engine with a probe of exactly the layers the objective reads."""
        return cls(objective, FeatureProbe(network, [layer for layer in objective.layers if layer != "images"]))

    def loss(self, images, targets):
        """`(total, {term: value})` of a batch of images, as tensors (traceable)."""
        features = self.probe(images)
        # Under mixed precision the network computes in bfloat16; objectives always sum in float32.
        features = {name: keras.ops.cast(value, "float32") for name, value in features.items()}
        return self.objective({**features, "images": images, "targets": targets})

    def value_and_gradient(self, variables, targets, plan, draws):
        """`(total, {term: value}, gradient)` with respect to `variables` under `plan`, as tensors
        (traceable): the parametrisation decodes, the transforms apply, and the tiling splits the work."""

        def transformed(values):
            images = plan.parametrisation.decode(values) if plan.parametrisation is not None else values
            for transform, source in zip(plan.transforms, plan.sources):
                images = transform.apply(images, draws[source])
            return images

        height, width = _image_shape(variables, plan.parametrisation)
        if plan.tiling is None or not plan.tiling.splits(height, width):
            return backend.gradient(lambda values: self.loss(transformed(values), targets), variables)
        images = transformed(variables)
        total, values, image_gradient = plan.tiling.value_and_gradient(
            lambda tiles: self.loss(tiles, targets), images, draws[plan.sources[-1]], self.objective.names)
        if plan.parametrisation is None and not plan.transforms:
            return total, values, image_gradient
        # The tiles' image gradient, pulled back through the transforms and the parametrisation: the
        # gradient of <transformed(variables), image_gradient> is exactly that vector-Jacobian product.
        _, _, gradient = backend.gradient(
            lambda parameters: (keras.ops.sum(transformed(parameters) * image_gradient), {}), variables)
        return total, values, gradient

    def compiled(self, key, build):
        """The compiled function `build()` makes, kept under `key` so that it is traced once per shape."""
        if key not in self._compiled:
            self._compiled[key] = backend.compiled(build(), self.probe.variables, static_shapes=True)
        return self._compiled[key]

    def __call__(self, variables, targets=None, parametrisation=None, tiling=None, rng=None):
        """Returns `(total, {term: value}, gradient)` as numpy for a batch and the terms' target arrays,
        through a parametrisation and a tiling if given (`rng` draws the tiles' shift)."""
        plan = Plan(parametrisation=parametrisation, tiling=tiling)
        variables = np.asarray(variables, np.float32)
        draws = {}
        if tiling is not None:
            height, width = _image_shape(variables, parametrisation)
            draws[plan.sources[-1]] = tiling.draw(rng or np.random.default_rng(0), 1, height, width)[0]

        def build():
            def function(values, target_values, draws):
                return self.value_and_gradient(values, target_values, plan, draws)

            return function

        total, values, gradient = self.compiled(("value_and_gradient", plan.key), build)(
            variables, _as_arrays(targets), draws)
        return float(total), {name: float(value) for name, value in values.items()}, gradient


def _image_shape(variables, parametrisation):
    if parametrisation is not None:
        return parametrisation.height, parametrisation.width
    return variables.shape[1], variables.shape[2]


def _as_arrays(targets):
    return {name: np.asarray(value, np.float32) for name, value in (targets or {}).items()}


@dataclasses.dataclass(frozen=True)
class Plan:
    """How a step turns the variables into what the network sees: everything but the objective and the rule.

    Attributes:
        parametrisation: How the variables become pixels (`parametrisations.FourierImage`), or None for pixels.
        transforms: Random transforms of the pixels (`transforms.RandomScale`, ...), after `jitter`.
        tiling: A `transforms.Tiling`, to compute each step tile by tile, or None.
        jitter: Largest random shift, in pixels, of the images before each step (0: none); the first transform.
        seed: The seed of the jitter's, the transforms' and the tiles' draws: a `numpy.random.Generator` (its
            seed counts, not its state), an int or sequence of ints, a `StepRandom`, or None for 0. Each
            step's draws depend on it, the source and the step's number in the whole run alone.
    """

    parametrisation: object = None
    transforms: tuple = ()
    tiling: object = None
    jitter: int = 0
    seed: object = None

    def with_jitter_first(self):
        """The same plan with its jitter as the first of its transforms (what the loop applies)."""
        from deeprestore.transforms import Jitter

        if not self.jitter:
            return self
        return dataclasses.replace(self, transforms=(Jitter(self.jitter), *self.transforms), jitter=0)

    @property
    def random(self):
        """The `StepRandom` of `seed`."""
        return self.seed if isinstance(self.seed, StepRandom) else StepRandom(0 if self.seed is None else self.seed)

    @property
    def key(self):
        return (getattr(self.parametrisation, "key", None), tuple(transform.key for transform in self.transforms),
                getattr(self.tiling, "key", None))

    @property
    def sources(self):
        """The name of each random source, the transforms' then the tiling's: its key, numbered where a key
        repeats, so that two equal transforms draw apart."""
        keys = [*(transform.key for transform in self.transforms), *([self.tiling.key] if self.tiling else [])]
        return tuple(str(key) if keys[:index].count(key) == 0 else f"{key}#{keys[:index].count(key) + 1}"
                     for index, key in enumerate(keys))


class StepRandom:
    """The random numbers of a run, as a function of the seed, the random source and the step alone.

    Each random source (a transform, the tiles) has at each step a generator of its own: numpy's Philox,
    a counter-based generator whose streams are independent by design, keyed by the seed and the
    source's name and started at a counter holding the step's number in the whole run (as the loss log
    numbers it). So a step's draws do not depend on how the steps are grouped into compiled chunks,
    on where a run was split into several `optimise` calls (given `Progress.first_step`), or on which
    other sources are present, and no two (source, step) pairs share a stream.

    Args:
        seed: An int, a sequence of ints, a `numpy.random.SeedSequence`, or a `numpy.random.Generator`,
            of which the seed sequence counts (not the numbers already drawn from it).
    """

    def __init__(self, seed=0):
        if isinstance(seed, np.random.Generator):
            if seed.bit_generator.seed_seq is None:
                raise ValueError("Expected a generator made from a seed (numpy.random.default_rng(seed)); got one "
                                 "made from a bare key or state.")
            seed = seed.bit_generator.seed_seq
        self.sequence = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        self._keys = {}

    def generator(self, source, step):
        """The generator of source `source` (a name) at step `step` (a non-negative int)."""
        if source not in self._keys:
            # The source's name, hashed to 128 bits, extends the seed's spawn key: a child of the seed.
            words = np.frombuffer(hashlib.sha256(source.encode()).digest()[:16], np.uint32)
            child = np.random.SeedSequence(self.sequence.entropy, pool_size=self.sequence.pool_size,
                                           spawn_key=(*self.sequence.spawn_key, *(int(word) for word in words)))
            self._keys[source] = child.generate_state(2, np.uint64)
        # The step fills the counter's highest word; a step's draws use the lower ones (2**192 blocks).
        return np.random.Generator(np.random.Philox(key=self._keys[source], counter=[0, 0, 0, step]))

    def draws(self, source, steps, draw):
        """One chunk's draws of one source: `draw(generator)` (a batch of one) for each step of `steps`, joined.

        The draws are those of `generator(source, step)`; one generator is moved to each step's counter,
        which costs a third of making a new one.
        """
        generator = self.generator(source, 0)
        fresh = generator.bit_generator.state
        draws = []
        for step in steps:
            counter = np.array([0, 0, 0, step], np.uint64)
            generator.bit_generator.state = {**fresh, "state": {**fresh["state"], "counter": counter}}
            draws.append(draw(generator))
        return np.concatenate(draws)


# Step rules. Each has `hyperparameters` (floats passed to the compiled function, so that a new step
# size does not recompile), a `key` (what does need a new compilation), `initial_state(variables)` and
# `apply(hyperparameters, variables, gradient, state, step)` in keras.ops.


class StepRule:
    """A step rule: `apply` moves the variables along the gradient and updates the rule's state."""

    hyperparameters: typing.ClassVar[dict] = {}  # name -> value, passed to `apply` without recompiling

    @property
    def key(self):
        return (type(self).__name__,)

    def initial_state(self, variables):
        return ()

    def apply(self, hyperparameters, variables, gradient, state, step):
        raise NotImplementedError

    def __call__(self, variables, gradient, step):
        """One step of a stateless rule on numpy arrays (for tests and host code)."""
        hyperparameters = {name: np.float32(value) for name, value in self.hyperparameters.items()}
        moved, _ = self.apply(hyperparameters, keras.ops.convert_to_tensor(np.asarray(variables, np.float32)),
                              keras.ops.convert_to_tensor(np.asarray(gradient, np.float32)), (), step)
        return np.asarray(moved)


def _per_item_mean(values):
    """The mean over every axis but the first, shaped to broadcast against `values`."""
    return keras.ops.mean(values, axis=tuple(range(1, len(values.shape))), keepdims=True)


class normalised_descent(StepRule):
    """Gradient descent with the step divided by the mean absolute gradient of each image.

    The normalisation keeps one step size usable across layers (seed 003, section 2.3). The mean is
    over every axis but the first, so the rule works on any batch of variables.

    Args:
        step_size: The step in units of the mean absolute gradient (DeepDream's usual 0.01).
    """

    def __init__(self, step_size):
        self.hyperparameters = {"step_size": float(step_size)}

    def apply(self, hyperparameters, variables, gradient, state, step):
        scale = _per_item_mean(keras.ops.abs(gradient)) + 1e-8
        return variables - hyperparameters["step_size"] * gradient / scale, state


class gradient_descent(StepRule):
    """Plain gradient descent with a fixed step."""

    def __init__(self, step_size):
        self.hyperparameters = {"step_size": float(step_size)}

    def apply(self, hyperparameters, variables, gradient, state, step):
        return variables - hyperparameters["step_size"] * gradient, state


@dataclasses.dataclass(frozen=True)
class step_schedule:
    """A piecewise-constant multiplier of the learning rate: `factors[i]` from step `boundaries[i]` on.

    Example: `step_schedule((300, 600), (0.1, 0.01))` divides the rate by 10 at step 300 and 600.
    Called on a Python int or on a step tensor inside the compiled loop.
    """

    boundaries: tuple = ()
    factors: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "boundaries", tuple(self.boundaries))
        object.__setattr__(self, "factors", tuple(float(factor) for factor in self.factors))
        if len(self.boundaries) != len(self.factors):
            raise ValueError("A step schedule needs one factor per boundary.")

    def __call__(self, step):
        if isinstance(step, int):
            value = 1.0
            for boundary, factor in zip(self.boundaries, self.factors):
                if step >= boundary:
                    value = factor
            return value
        value = keras.ops.ones((), "float32")
        for boundary, factor in zip(self.boundaries, self.factors):
            value = keras.ops.where(step >= boundary, factor, value)
        return value


class _ScheduledRule(StepRule):
    """A rule with a learning rate and an optional schedule (part of the compiled function's key)."""

    def __init__(self, learning_rate, schedule, **hyperparameters):
        self.learning_rate = learning_rate
        self.schedule = schedule or step_schedule()
        self.hyperparameters = {"learning_rate": float(learning_rate), **hyperparameters}

    @property
    def key(self):
        return (type(self).__name__, self.schedule)

    def rate(self, hyperparameters, step):
        return hyperparameters["learning_rate"] * self.schedule(step)


class Momentum(_ScheduledRule):
    """SGD with momentum: `v = momentum * v - rate(t) * g; x += v` (Mahendran & Vedaldi 2015).

    Args:
        learning_rate: The base rate.
        momentum: The momentum coefficient.
        schedule: A `step_schedule` multiplying the rate.
    """

    def __init__(self, learning_rate, momentum=0.9, schedule=None):
        super().__init__(learning_rate, schedule, momentum=float(momentum))

    def initial_state(self, variables):
        return (np.zeros_like(variables),)

    def apply(self, hyperparameters, variables, gradient, state, step):
        velocity = hyperparameters["momentum"] * state[0] - self.rate(hyperparameters, step) * gradient
        return variables + velocity, (velocity,)


class Adam(_ScheduledRule):
    """Adam on the pixels (Kingma & Ba, 2015), with an optional step schedule (Mahendran & Vedaldi 2016).

    Args:
        learning_rate: The base rate.
        beta_1: Decay of the first moment.
        beta_2: Decay of the second moment.
        epsilon: Added to the root of the second moment.
        schedule: A `step_schedule` multiplying the rate.
    """

    def __init__(self, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8, schedule=None):
        super().__init__(learning_rate, schedule, beta_1=float(beta_1), beta_2=float(beta_2), epsilon=float(epsilon))

    def initial_state(self, variables):
        return (np.zeros_like(variables), np.zeros_like(variables), np.zeros((), np.float32))

    def apply(self, hyperparameters, variables, gradient, state, step):
        beta_1, beta_2 = hyperparameters["beta_1"], hyperparameters["beta_2"]
        first, second, count = state
        count = count + 1.0
        first = beta_1 * first + (1 - beta_1) * gradient
        second = beta_2 * second + (1 - beta_2) * keras.ops.square(gradient)
        corrected = first / (1 - keras.ops.power(beta_1, count))
        scale = keras.ops.sqrt(second / (1 - keras.ops.power(beta_2, count))) + hyperparameters["epsilon"]
        return variables - self.rate(hyperparameters, step) * corrected / scale, (first, second, count)


class Adagrad(_ScheduledRule):
    """Adagrad (Duchi, Hazan & Singer, 2011): each variable's step divided by the root of its summed
    squared gradients, so rarely moved pixels keep large steps (seed 003 compares it for dreams).

    Args:
        learning_rate: The base rate.
        initial_accumulator: Starting value of the sum of squares (Keras's 0.1).
        epsilon: Added to the root of the sum.
        schedule: A `step_schedule` multiplying the rate.
    """

    def __init__(self, learning_rate, initial_accumulator=0.1, epsilon=1e-7, schedule=None):
        super().__init__(learning_rate, schedule, epsilon=float(epsilon))
        self.initial_accumulator = float(initial_accumulator)

    def initial_state(self, variables):
        return (np.full_like(variables, self.initial_accumulator),)

    def apply(self, hyperparameters, variables, gradient, state, step):
        accumulator = state[0] + keras.ops.square(gradient)
        step_size = self.rate(hyperparameters, step) / (keras.ops.sqrt(accumulator) + hyperparameters["epsilon"])
        return variables - step_size * gradient, (accumulator,)


@dataclasses.dataclass
class LBFGS:
    """L-BFGS-B from scipy driven by the compiled value-and-gradient: the usual optimiser of Gatys-style
    transfer. Pixels stay within `bounds`. No jitter: L-BFGS needs the same function at every step.

    It runs its `steps` unless the objective has stopped moving in its own units: the loss fell by less
    than `tolerance` of its value over the last `window` iterations. scipy's own tests (projected gradient
    below 1e-5, relative change with a floor of 1) are absolute, so they depend on the loss's scale and
    are switched off; the test here holds at any loss weight.

    Attributes:
        bounds: `(low, high)` for every pixel, or None.
        history: Number of correction pairs kept (scipy's `maxcor`).
        tolerance: Relative decrease of the loss over `window` iterations below which it has converged.
        window: Number of iterations the decrease is measured over.
        on_device: Under JAX with optax installed, optax's L-BFGS with whole iterations compiled
            (`_optimise_lbfgs_on_device`) instead of scipy's L-BFGS-B on the host.
    """

    bounds: tuple | None = (0.0, 1.0)
    history: int = 10
    tolerance: float = 1e-6
    window: int = 10
    on_device: bool = False

    def converged(self, losses):
        """Whether the losses of the iterations so far (oldest first) say the optimum is reached."""
        if len(losses) <= self.window:
            return False
        before, now = losses[-1 - self.window], losses[-1]
        return before - now <= self.tolerance * abs(now)


@dataclasses.dataclass(frozen=True)
class Constraint:
    """What runs on the device after every step: `function(variables, number) -> variables`, with
    `number` the 1-based step count of the whole run (a tensor). `key` names it for compilation."""

    key: tuple
    function: Callable = dataclasses.field(compare=False, hash=False)

    def __call__(self, variables, number):
        """The constraint on a numpy batch (for tests and host code)."""
        return np.asarray(self.function(keras.ops.convert_to_tensor(np.asarray(variables, np.float32)), number))


def clamp(low=0.0, high=1.0):
    """Keeps pixels within the valid range, on the device after every step."""
    return Constraint(("clamp", low, high), lambda variables, number: keras.ops.clip(variables, low, high))


@dataclasses.dataclass(frozen=True)
class every:
    """Runs the host callback `callback(images, step)` after every `interval`-th step, counting from
    `offset` steps before this loop (a run's steps numbered across several loops)."""

    interval: int
    callback: Callable
    offset: int = 0

    def due_in(self, step):
        """How many steps from local step `step` on until the callback is due (1: after this one)."""
        return self.interval - (self.offset + step) % self.interval

    def __call__(self, images, step):
        return self.callback(images, step) if self.due_in(step) == 1 else images


@dataclasses.dataclass
class Progress:
    """What the loop reports and where its steps stand in the run: a tqdm description, whether to show
    bars, the log to write, the number of the first step in the whole run, the log rows' context and where
    notices go. `optimise` takes it among its callbacks (as Keras's `fit` takes its progress bar)."""

    description: str = "optimise"
    show: bool = True
    log: object = None
    first_step: int = 0
    context: dict = dataclasses.field(default_factory=dict)
    notify: object = None  # `message -> None` for notices (L-BFGS stopping early); None: a Python warning


@dataclasses.dataclass
class Partial:
    """Where an interrupted optimisation stood: attached to the `KeyboardInterrupt` as `partial`, so the
    caller can keep the work (see `deeprestore.driver`).

    Attributes:
        variables: The optimised variables after the last whole step (images, or a parametrisation's
            parameters).
        images: Their pixels, `(batch, height, width, 3)` (None where the variables are not an image).
        step: Steps done, counted from the run's first (`Progress.first_step`).
        steps: The step the optimisation was to end at, counted alike.
        stage: What was optimised (the progress bar's description).
        first_step: The run's step this optimisation started after (`Progress.first_step`): it had done
            `step - first_step` of its `steps - first_step`.
        context: Where in the run it was (`Progress.context`: the image and scale of a style, the frame,
            octave and stage of a dream), so a method can continue there.
    """

    variables: object
    images: object
    step: int
    steps: int
    stage: str = ""
    first_step: int = 0
    context: dict = dataclasses.field(default_factory=dict)


def _keep_partial(error, variables, step, steps, progress, parametrisation):
    """Attaches the innermost interrupted optimisation's `Partial` to `error`."""
    if getattr(error, "partial", None) is None:
        variables = np.asarray(variables, np.float32)
        images = variables if parametrisation is None else parametrisation.images(variables)
        error.partial = Partial(variables, np.asarray(images, np.float32), progress.first_step + step,
                                progress.first_step + steps, progress.description, progress.first_step,
                                dict(progress.context))


def optimise(engine, images, steps, step_rule, plan=None, callbacks=(), targets=None):
    """Optimises a batch of images (or a parametrisation's parameters) to minimise the engine's objective.

    Args:
        engine: An `Engine`.
        images: `(batch, height, width, 3)` float32 RGB, or the plan's parametrisation's parameters.
        steps: Number of steps.
        step_rule: A `StepRule`, or `LBFGS`.
        plan: A `Plan`: the parametrisation, jitter, transforms, tiling and the seed of their draws (a step's
            number in the whole run is `Progress.first_step` plus its own); None for pixels as they are.
        callbacks: `Constraint`s (on the device, every step), host callbacks `(images, step) -> images`
            (after every step, or on the interval of `every`) and at most one `Progress` (bar, loss log,
            the first step's number; without one, a bar labelled "optimise").
        targets: `{term name: array}` the objective's targets (see `objectives`).

    Returns:
        The optimised images (or parameters), and the last `{term: value}` with `total`.

    Raises:
        DeepRestoreError: The loss stopped being finite.
    """
    plan = (plan or Plan()).with_jitter_first()
    progress = next((callback for callback in callbacks if isinstance(callback, Progress)), None) or Progress()
    variables = np.array(images, np.float32)
    if isinstance(step_rule, LBFGS):
        if plan.transforms or plan.tiling is not None:
            raise DeepRestoreError("L-BFGS cannot be combined with jitter; expected --jitter 0 or another optimiser.")
        if step_rule.on_device and backend.device_lbfgs_available():
            return _optimise_lbfgs_on_device(engine, variables, steps, step_rule, progress, targets,
                                             plan.parametrisation)
        return _optimise_lbfgs(engine, variables, steps, step_rule, progress, targets, plan.parametrisation)
    constraints = tuple(callback for callback in callbacks if isinstance(callback, Constraint))
    host_callbacks = [callback for callback in callbacks if not isinstance(callback, (Constraint, Progress))]
    loop = _Loop(engine, plan, step_rule, constraints, backend.steps_per_call(CHUNK_STEPS))
    state = step_rule.initial_state(variables)
    target_arrays = _as_arrays(targets)
    values = {}
    bar = tqdm(total=steps, desc=progress.description, disable=not progress.show, leave=False)
    step, limit = 0, _chunk_limit(loop.capacity)
    try:
        while step < steps:
            interrupts.raise_if_requested()  # a deferred SIGTERM stops here, between two chunks of steps
            count = min(limit, steps - step, _steps_to_next_callback(host_callbacks, step))
            started = time.perf_counter()
            variables, state, rows = loop(variables, state, step, count, progress.first_step, target_arrays)
            limit = _chunk_limit(loop.capacity, count, time.perf_counter() - started)
            for index in range(count):
                values = loop.row_values(rows[index])
                if not rows[index][-1]:
                    raise DeepRestoreError(
                        f"The loss became {values['total']} at step {progress.first_step + step + index + 1} "
                        f"({progress.description}); expected finite values: lower the step size or check the input."
                    )
                if progress.log is not None:
                    progress.log.log(progress.first_step + step + index + 1, values, **progress.context)
            step += count
            for callback in host_callbacks:
                variables = np.asarray(callback(variables, step - 1), np.float32)
            bar.update(count)
            bar.set_postfix(loss=f"{values['total']:.4g}", refresh=False)
    except KeyboardInterrupt as error:
        _keep_partial(error, variables, step, steps, progress, plan.parametrisation)
        raise
    bar.close()
    return variables, values


def _chunk_limit(capacity, count=0, seconds=0.0):
    """Most steps the next chunk may run: the whole capacity at first, then as many as take about
    CHUNK_SECONDS at the pace of the last chunk (`count` steps in `seconds`)."""
    if not count:
        return capacity
    return max(1, min(capacity, int(CHUNK_SECONDS * count / max(seconds, 1e-9))))


def _steps_to_next_callback(callbacks, step):
    """How many steps may run before a host callback is due (it runs after the chunk's last step)."""
    due = [callback.due_in(step) if isinstance(callback, every) else 1 for callback in callbacks]
    return min(due, default=CHUNK_STEPS)


class _Loop:
    """The compiled chunk of steps for one engine, plan, rule and set of constraints, with the plan's random
    draws and the rule's hyperparameters."""

    def __init__(self, engine, plan, rule, constraints, capacity):
        self.engine = engine
        self.plan = plan
        self.rule = rule
        self.constraints = constraints
        self.capacity = max(1, capacity)
        self.random = plan.random
        self.hyperparameters = {name: np.float32(value) for name, value in rule.hyperparameters.items()}
        self.names = (*engine.objective.names, "total")
        key = ("loop", plan.key, rule.key, tuple(constraint.key for constraint in constraints), self.capacity)
        self.function = engine.compiled(key, self._build)

    def _build(self):
        engine, plan, rule, constraints, capacity = self.engine, self.plan, self.rule, self.constraints, self.capacity
        width = len(self.names) + 1

        def run(variables, state, count, numbers, draws, hyperparameters, targets):
            def body(index, carry):
                variables, state, rows = carry
                step_draws = {key: value[index] for key, value in draws.items()}
                total, values, gradient = engine.value_and_gradient(variables, targets, plan, step_draws)
                number = numbers[index]
                variables, state = rule.apply(hyperparameters, variables, gradient, state, draws["step"][index])
                for constraint in constraints:
                    variables = constraint.function(variables, number)
                finite = keras.ops.logical_and(keras.ops.isfinite(total),
                                               keras.ops.all(keras.ops.isfinite(gradient)))
                row = keras.ops.stack([*(values[name] for name in self.names[:-1]), total,
                                       keras.ops.cast(finite, "float32")])
                rows = keras.ops.slice_update(rows, (index, 0), keras.ops.reshape(row, (1, width)))
                return variables, state, rows

            rows = keras.ops.zeros((capacity, width), "float32")
            if capacity == 1:  # one step, without a loop around it (see `backend.steps_per_call`)
                return body(0, (variables, state, rows))
            return keras.ops.fori_loop(0, count, body, (variables, state, rows))

        return run

    def __call__(self, variables, state, step, count, first_step, targets):
        """Runs `count` steps from local step `step`, with the draws the plan's seed gives steps numbered
        from `first_step` on; returns the variables, state and the logged rows."""
        height, width = _image_shape(variables, self.plan.parametrisation)
        draws = {"step": np.zeros(self.capacity, np.int32)}
        draws["step"][:count] = np.arange(step, step + count)
        numbers = (first_step + 1 + draws["step"]).astype(np.int32)
        sampled = [functools.partial(transform.draw, count=1) for transform in self.plan.transforms]
        if self.plan.tiling is not None:
            sampled.append(functools.partial(self.plan.tiling.draw, count=1, height=height, width=width))
        for source, draw in zip(self.plan.sources, sampled):
            draws[source] = _padded(self.random.draws(source, numbers[:count], draw), self.capacity)
        variables, state, rows = self.function(variables, state, np.int32(count), numbers, draws,
                                               self.hyperparameters, targets)
        return np.asarray(variables), state, np.asarray(rows)

    def row_values(self, row):
        return {name: float(value) for name, value in zip(self.names, row)}


def _padded(values, capacity):
    """Random draws for a chunk, padded with zeros to the compiled chunk's fixed length."""
    values = np.asarray(values)
    padding = np.zeros((capacity - len(values), *values.shape[1:]), values.dtype)
    return np.concatenate([values, padding])


def _optimise_lbfgs(engine, images, steps, rule, progress, targets, parametrisation=None):
    """`optimise` for L-BFGS: scipy's minimiser calls the compiled function; each iteration is a step.

    The minimiser sees the loss divided by its largest absolute gradient at the start, so that it works
    in the same numbers at any loss weights (style's content weight is 2.5e-8); the log keeps the true
    values. scipy's tolerances are off: `rule.converged` decides, on the true loss, whether to stop
    before `steps`. When it stops before `steps` iterations, the reason goes to `progress.notify`.
    """
    import scipy.optimize

    shape = images.shape
    last = {}
    scale = {"divisor": None}

    def function(flat):
        total, values, gradient = engine(flat.reshape(shape).astype(np.float32), targets, parametrisation)
        if not np.isfinite(total):
            raise DeepRestoreError(f"The loss became {total} ({progress.description}); expected finite values.")
        last.update(values=values, total=total)
        if scale["divisor"] is None:
            largest = float(np.max(np.abs(gradient)))
            scale["divisor"] = largest if np.isfinite(largest) and largest > 0 else 1.0
        return float(total) / scale["divisor"], gradient.astype(np.float64).ravel() / scale["divisor"]

    bar = tqdm(total=steps, desc=progress.description, disable=not progress.show, leave=False)
    losses = []
    accepted = {"x": images}

    def after_iteration(intermediate_result):
        accepted["x"] = intermediate_result.x
        interrupts.raise_if_requested()  # a deferred SIGTERM stops here, between two steps
        # scipy passes the accepted iterate's loss; `last` may hold a later line-search trial's values.
        losses.append(float(intermediate_result.fun) * scale["divisor"])
        if progress.log is not None:
            progress.log.log(progress.first_step + len(losses), {**last["values"], "total": last["total"]},
                             **progress.context)
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4g}", refresh=False)
        if rule.converged(losses):
            raise StopIteration

    bounds = None if rule.bounds is None else [rule.bounds] * images.size
    try:
        result = scipy.optimize.minimize(
            function, images.astype(np.float64).ravel(), jac=True, method="L-BFGS-B", bounds=bounds,
            callback=after_iteration,
            options={"maxiter": steps, "maxcor": rule.history, "maxfun": steps * 20, "ftol": 0.0, "gtol": 0.0},
        )
    except KeyboardInterrupt as error:
        _keep_partial(error, np.reshape(accepted["x"], shape), len(losses), steps, progress, parametrisation)
        raise
    bar.close()
    if len(losses) < steps:
        reason = (f"the loss fell by less than {rule.tolerance:g} of its value over {rule.window} iterations"
                  if rule.converged(losses) else f"scipy says '{result.message}'")
        _notify(progress, f"L-BFGS stopped after {len(losses)} of {steps} iterations ({progress.description}): "
                          f"{reason}.")
    return result.x.reshape(shape).astype(np.float32), {**last.get("values", {}), "total": last.get("total")}


def _optimise_lbfgs_on_device(engine, images, steps, rule, progress, targets, parametrisation=None):
    """`optimise` for L-BFGS under JAX: optax's L-BFGS with its zoom line search, whole iterations compiled.

    Up to `backend.steps_per_call(CHUNK_STEPS)` iterations run in one call, the loss log's rows coming
    back with them; the host decides between calls whether `rule.converged`. The loss is scaled as
    scipy's path scales it. optax's L-BFGS knows no bounds: it minimises the loss of the clipped pixels
    plus `BOUND_PENALTY` times the squared distance of the pixels to the box, which pulls a pixel pushed
    past a bound back to it, and the result is clipped. Without bounds it reaches scipy's objective (to
    6 digits after 30 iterations on the tiny network); with them it ends 2.7-3.7% above it
    (`benchmarks/bench_lbfgs.py`), which is why it is not the default.
    """
    shape = images.shape
    names = engine.objective.names
    capacity = backend.steps_per_call(CHUNK_STEPS)
    target_arrays = _as_arrays(targets)

    def objective(values, targets):
        if rule.bounds is not None:
            values = keras.ops.clip(values, *rule.bounds)
        pixels = parametrisation.decode(values) if parametrisation is not None else values
        return engine.loss(pixels, targets)

    key = ("lbfgs", getattr(parametrisation, "key", None), rule.history, rule.bounds, capacity)

    def penalty(values):  # in the scaled loss's units, whose largest gradient at the start is 1
        return BOUND_PENALTY * keras.ops.sum(keras.ops.square(values - keras.ops.clip(values, *rule.bounds)))

    run = engine.compiled(key, lambda: backend.lbfgs_iterations(objective, names, rule.history, capacity,
                                                                None if rule.bounds is None else penalty))
    _, _, gradient = engine(images, targets, parametrisation)
    largest = float(np.max(np.abs(gradient)))
    divisor = np.float32(largest if np.isfinite(largest) and largest > 0 else 1.0)
    variables, state = images, backend.lbfgs_state(images, rule.history)
    bar = tqdm(total=steps, desc=progress.description, disable=not progress.show, leave=False)
    losses, values = [], {}
    try:
        while len(losses) < steps and not rule.converged(losses):
            interrupts.raise_if_requested()  # a deferred SIGTERM stops here, between two calls
            count = min(capacity, steps - len(losses))
            moved, moved_state, rows = run(variables, state, np.int32(count), divisor, target_arrays)
            for row in rows[:count]:
                values = {name: float(value) for name, value in zip((*names, "total"), row)}
                if not row[-1]:
                    raise DeepRestoreError(f"The loss became {values['total']} ({progress.description}); expected "
                                           "finite values.")
                losses.append(values["total"])
                if progress.log is not None:
                    progress.log.log(progress.first_step + len(losses), values, **progress.context)
                bar.update(1)
                if rule.converged(losses):
                    break
            variables, state = moved, moved_state
            bar.set_postfix(loss=f"{losses[-1]:.4g}", refresh=False)
    except KeyboardInterrupt as error:
        _keep_partial(error, _clipped(variables, rule.bounds), len(losses), steps, progress, parametrisation)
        raise
    bar.close()
    if len(losses) < steps:
        _notify(progress, f"L-BFGS stopped after {len(losses)} of {steps} iterations ({progress.description}): the "
                          f"loss fell by less than {rule.tolerance:g} of its value over {rule.window} iterations.")
    return _clipped(np.asarray(variables, np.float32).reshape(shape), rule.bounds), values


def _clipped(variables, bounds):
    return variables if bounds is None else np.clip(variables, *bounds)


def _notify(progress, message):
    if progress.notify is None:
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    else:
        progress.notify(message)
