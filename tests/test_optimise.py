"""The optimisation loop: a few steps lower the objective; jitter, clamping and NaN handling."""

import keras
import numpy as np
import pytest

from deeprestore import objectives
from deeprestore.errors import DeepRestoreError
from deeprestore.optimise import (
    Adagrad,
    Adam,
    Engine,
    Momentum,
    Progress,
    clamp,
    every,
    gradient_descent,
    normalised_descent,
    optimise,
)
from deeprestore.probes import FeatureProbe
from deeprestore.transforms import Tiling


@pytest.fixture
def engine(tiny):
    return Engine(-objectives.l2("relu2"), FeatureProbe(tiny, ["relu2"]))


def test_a_few_normalised_steps_raise_the_l2_norm(engine, rng):
    images = rng.uniform(size=(2, 16, 16, 3)).astype(np.float32)
    before, _, _ = engine(images)
    after_images, values = optimise(engine, images, 5, normalised_descent(0.02), rng=rng, progress=Progress(show=False))
    after, _, _ = engine(after_images)
    assert after < before
    assert set(values) == {"l2.relu2", "total"}


def test_normalised_step_moves_each_image_by_the_step_size_on_average(rng):
    images = np.zeros((2, 4, 4, 3), np.float32)
    gradient = rng.normal(size=images.shape).astype(np.float32) * np.array([1.0, 100.0])[:, None, None, None]
    moved = normalised_descent(0.1)(images, gradient, 0)
    np.testing.assert_allclose(np.abs(moved).mean(axis=(1, 2, 3)), [0.1, 0.1], rtol=1e-4)


def test_jitter_is_undone_on_the_gradient(tiny, rng):
    # A pixel-wise objective commutes with rolling, so a jittered step must equal an unjittered one.
    engine = Engine(objectives.l2("preprocess"), FeatureProbe(tiny, ["preprocess"]))
    images = rng.uniform(size=(1, 16, 16, 3)).astype(np.float32)
    rule = gradient_descent(0.1)
    plain, _ = optimise(engine, images, 1, rule, progress=Progress(show=False))
    jittered, _ = optimise(engine, images, 1, rule, jitter=5, rng=np.random.default_rng(3),
                           progress=Progress(show=False))
    np.testing.assert_allclose(jittered, plain, rtol=1e-5, atol=1e-6)


def test_callbacks_run_on_their_interval():
    calls = []
    callback = every(3, lambda images, step: calls.append(step) or images)
    for step in range(9):
        callback(None, step)
    assert calls == [2, 5, 8]


def test_clamp_keeps_pixels_in_range(engine, rng):
    images = rng.uniform(size=(1, 16, 16, 3)).astype(np.float32)
    result, _ = optimise(engine, images, 3, gradient_descent(100.0), callbacks=[clamp()], progress=Progress(show=False))
    assert result.min() >= 0.0 and result.max() <= 1.0


def test_a_non_finite_loss_stops_with_a_clear_error(engine):
    images = np.full((1, 16, 16, 3), 1e30, np.float32)  # squares overflow to inf
    with pytest.raises(DeepRestoreError, match="step 1"):
        optimise(engine, images, 3, normalised_descent(0.01), progress=Progress(show=False))


def test_the_engine_refuses_a_probe_without_the_objective_layers(tiny):
    with pytest.raises(ValueError, match="relu2"):
        Engine(-objectives.l2("relu2"), FeatureProbe(tiny, ["relu1"]))


def test_the_loop_logs_every_step(engine, rng, tmp_path):
    from deeprestore.losslog import LossLog

    log = LossLog(tmp_path)
    images = rng.uniform(size=(1, 16, 16, 3)).astype(np.float32)
    optimise(engine, images, 4, normalised_descent(0.01), progress=Progress(show=False, log=log, first_step=10))
    log.close()
    assert [step for step, _ in log.values("total")] == [11, 12, 13, 14]


@pytest.mark.parametrize("weight", [1e-9, 1.0, 1e6])
def test_lbfgs_makes_progress_at_any_loss_weight(tiny, rng, weight):
    # Unscaled, scipy's absolute tolerance (projected gradient 1e-5) stops a 1e-9-weighted loss at once.
    from deeprestore.optimise import LBFGS

    engine = Engine(weight * objectives.l2("relu2"), FeatureProbe(tiny, ["relu2"]))
    images = rng.uniform(size=(1, 16, 16, 3)).astype(np.float32)
    before, _, _ = engine(images)
    notices = []
    result, values = optimise(engine, images, 5, LBFGS(), progress=Progress(show=False, notify=notices.append))
    assert values["total"] < 0.5 * before
    assert not np.allclose(result, images)
    assert notices == []


def test_lbfgs_says_why_it_stopped_before_its_steps(tiny):
    from deeprestore.optimise import LBFGS

    # Black images at the lower bound already minimise this loss: scipy stops before its first step.
    engine = Engine(objectives.l2("preprocess"), FeatureProbe(tiny, ["preprocess"]))
    notices = []
    optimise(engine, np.zeros((1, 16, 16, 3), np.float32), 7, LBFGS(),
             progress=Progress(show=False, notify=notices.append, description="test"))
    assert len(notices) == 1 and "of 7 iterations (test)" in notices[0] and "scipy says" in notices[0]


def test_lbfgs_converges_in_the_losses_own_units_at_any_scale():
    from deeprestore.optimise import LBFGS

    rule = LBFGS(tolerance=1e-3, window=2)
    falling = [10.0, 5.0, 2.0, 1.0]
    assert not rule.converged(falling[:2])  # too few iterations to judge
    assert not rule.converged(falling)
    assert rule.converged([1.0, 1.0, 0.9999]) and rule.converged([1e-12, 1e-12, 0.9999e-12])
    assert not rule.converged([1e-12, 0.5e-12, 0.25e-12])  # a tiny loss still halving is not converged


@pytest.mark.parametrize("weight", [1e-9, 1e6])
def test_lbfgs_stops_when_the_loss_stops_falling_and_says_so(tiny, rng, weight):
    from deeprestore.optimise import LBFGS

    # A loose tolerance (a tenth of the loss per iteration) that this loss meets long before 200 steps,
    # at either weight: the test is on the loss's own units, not on scipy's absolute ones.
    engine = Engine(weight * objectives.l2("relu2"), FeatureProbe(tiny, ["relu2"]))
    images = rng.uniform(size=(1, 16, 16, 3)).astype(np.float32)
    notices = []
    optimise(engine, images, 200, LBFGS(tolerance=0.1, window=1),
             progress=Progress(show=False, notify=notices.append, description="test"))
    assert len(notices) == 1 and "of 200 iterations (test): the loss fell by less than 0.1 of" in notices[0]


@pytest.mark.parametrize("rule", [normalised_descent(0.02), Momentum(0.05), Adam(0.05), Adagrad(0.05)],
                         ids=["normalised", "momentum", "adam", "adagrad"])
def test_every_step_rule_lowers_the_objective_in_the_compiled_loop(engine, rng, rule):
    images = rng.uniform(size=(1, 16, 16, 3)).astype(np.float32)
    result, _ = optimise(engine, images, 4, rule, progress=Progress(show=False))
    assert engine(result)[0] < engine(images)[0]


def test_the_seed_reproduces_jittered_tiled_steps(engine, rng):
    images = rng.uniform(size=(1, 40, 40, 3)).astype(np.float32)

    def run(seed):
        return optimise(engine, images, 3, normalised_descent(0.02), jitter=4, rng=np.random.default_rng(seed),
                        progress=Progress(show=False), tiling=Tiling(24, "random"))[0]

    np.testing.assert_array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


def test_adam_in_the_loop_matches_a_numpy_reference(tiny, rng):
    # A linear objective has a constant gradient, so Adam's moments follow the closed form step by step.
    engine = Engine(objectives.Objective([objectives.Term("sum.images", ("images",), lambda features: keras.ops.sum(
        keras.ops.reshape(features["images"], (1, -1)) * np.arange(48, dtype=np.float32)[None] / 48, axis=1))]),
        FeatureProbe(tiny, ["preprocess"]))
    images = rng.uniform(size=(1, 4, 4, 3)).astype(np.float32)
    gradient = (np.arange(48, dtype=np.float32) / 48).reshape(images.shape)
    expected, first, second = images.astype(np.float64), 0.0, 0.0
    for count in range(1, 6):
        first = 0.9 * first + 0.1 * gradient
        second = 0.999 * second + 0.001 * gradient**2
        expected = expected - 0.1 * (first / (1 - 0.9**count)) / (np.sqrt(second / (1 - 0.999**count)) + 1e-8)
    result, _ = optimise(engine, images, 5, Adam(0.1), progress=Progress(show=False))
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)


def test_host_callbacks_see_the_steps_they_are_due_on(engine, rng):
    seen = []
    images = rng.uniform(size=(1, 16, 16, 3)).astype(np.float32)
    optimise(engine, images, 7, normalised_descent(0.01), callbacks=[every(3, lambda values, step: seen.append(step)
                                                                          or values)], progress=Progress(show=False))
    assert seen == [2, 5]
