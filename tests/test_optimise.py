"""The optimisation loop: a few steps lower the objective; jitter, clamping and NaN handling; seeds that
reproduce a run however its steps are chunked."""

import keras
import numpy as np
import pytest
import scipy.stats

from deeprestore import objectives
from deeprestore import optimise as optimise_module
from deeprestore.errors import DeepRestoreError
from deeprestore.optimise import (
    Adagrad,
    Adam,
    Engine,
    Momentum,
    Plan,
    Progress,
    StepRandom,
    clamp,
    every,
    gradient_descent,
    normalised_descent,
    optimise,
)
from deeprestore.probes import FeatureProbe
from deeprestore.transforms import Jitter, RandomRotation, RandomScale, Tiling


@pytest.fixture
def engine(tiny):
    return Engine(-objectives.l2("relu2"), FeatureProbe(tiny, ["relu2"]))


def test_a_few_normalised_steps_raise_the_l2_norm(engine, rng):
    images = rng.uniform(size=(2, 16, 16, 3)).astype(np.float32)
    before, _, _ = engine(images)
    after_images, values = optimise(engine, images, 5, normalised_descent(0.02), Plan(seed=rng),
                                    callbacks=[Progress(show=False)])
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
    plain, _ = optimise(engine, images, 1, rule, callbacks=[Progress(show=False)])
    jittered, _ = optimise(engine, images, 1, rule, Plan(jitter=5, seed=np.random.default_rng(3)),
                           callbacks=[Progress(show=False)])
    np.testing.assert_allclose(jittered, plain, rtol=1e-5, atol=1e-6)


def test_callbacks_run_on_their_interval():
    calls = []
    callback = every(3, lambda images, step: calls.append(step) or images)
    for step in range(9):
        callback(None, step)
    assert calls == [2, 5, 8]


def test_clamp_keeps_pixels_in_range(engine, rng):
    images = rng.uniform(size=(1, 16, 16, 3)).astype(np.float32)
    result, _ = optimise(engine, images, 3, gradient_descent(100.0), callbacks=[clamp(), Progress(show=False)])
    assert result.min() >= 0.0 and result.max() <= 1.0


def test_a_non_finite_loss_stops_with_a_clear_error(engine):
    images = np.full((1, 16, 16, 3), 1e30, np.float32)  # squares overflow to inf
    with pytest.raises(DeepRestoreError, match="step 1"):
        optimise(engine, images, 3, normalised_descent(0.01), callbacks=[Progress(show=False)])


def test_the_engine_refuses_a_probe_without_the_objective_layers(tiny):
    with pytest.raises(ValueError, match="relu2"):
        Engine(-objectives.l2("relu2"), FeatureProbe(tiny, ["relu1"]))


def test_the_loop_logs_every_step(engine, rng, tmp_path):
    from deeprestore.losslog import LossLog

    log = LossLog(tmp_path)
    images = rng.uniform(size=(1, 16, 16, 3)).astype(np.float32)
    optimise(engine, images, 4, normalised_descent(0.01), callbacks=[Progress(show=False, log=log, first_step=10)])
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
    result, values = optimise(engine, images, 5, LBFGS(), callbacks=[Progress(show=False, notify=notices.append)])
    assert values["total"] < 0.5 * before
    assert not np.allclose(result, images)
    assert notices == []


def test_lbfgs_says_why_it_stopped_before_its_steps(tiny):
    from deeprestore.optimise import LBFGS

    # Black images at the lower bound already minimise this loss: scipy stops before its first step.
    engine = Engine(objectives.l2("preprocess"), FeatureProbe(tiny, ["preprocess"]))
    notices = []
    optimise(engine, np.zeros((1, 16, 16, 3), np.float32), 7, LBFGS(),
             callbacks=[Progress(show=False, notify=notices.append, description="test")])
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
             callbacks=[Progress(show=False, notify=notices.append, description="test")])
    assert len(notices) == 1 and "of 200 iterations (test): the loss fell by less than 0.1 of" in notices[0]


@pytest.mark.parametrize("rule", [normalised_descent(0.02), Momentum(0.05), Adam(0.05), Adagrad(0.05)],
                         ids=["normalised", "momentum", "adam", "adagrad"])
def test_every_step_rule_lowers_the_objective_in_the_compiled_loop(engine, rng, rule):
    images = rng.uniform(size=(1, 16, 16, 3)).astype(np.float32)
    result, _ = optimise(engine, images, 4, rule, callbacks=[Progress(show=False)])
    assert engine(result)[0] < engine(images)[0]


def test_the_seed_reproduces_jittered_tiled_steps(engine, rng):
    images = rng.uniform(size=(1, 40, 40, 3)).astype(np.float32)

    def run(seed):
        return optimise(engine, images, 3, normalised_descent(0.02),
                        Plan(tiling=Tiling(24, "random"), jitter=4, seed=np.random.default_rng(seed)),
                        callbacks=[Progress(show=False)])[0]

    np.testing.assert_array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


def chunked(monkeypatch, lengths):
    """Makes the loop (compiled for 40 steps a call) run chunks of exactly `lengths` steps, whatever the
    clock says; returns the list the chunks it runs are appended to."""
    planned, ran = iter(lengths), []
    monkeypatch.setattr(optimise_module, "CHUNK_STEPS", 40)
    monkeypatch.setattr(optimise_module.backend, "steps_per_call", lambda steps: steps)  # JAX on a CPU: 1
    monkeypatch.setattr(optimise_module, "_chunk_limit", lambda *args: next(planned, 40))
    call = optimise_module._Loop.__call__

    def counted(loop, variables, state, step, count, *args):
        ran.append(count)
        return call(loop, variables, state, step, count, *args)

    monkeypatch.setattr(optimise_module._Loop, "__call__", counted)
    return ran


def test_the_seed_reproduces_every_random_source_whatever_the_chunks(engine, rng, monkeypatch):
    images = rng.uniform(size=(1, 32, 32, 3)).astype(np.float32)
    sources = dict(jitter=3, transforms=(RandomScale((0.9, 1.0, 1.1)), RandomRotation((-8, 0, 8))),
                   tiling=Tiling(16, "random"))

    def run(lengths, seed=1, steps=40, first_step=0, start=images):
        ran = chunked(monkeypatch, lengths)
        result = optimise(engine, start, steps, normalised_descent(0.02),
                          Plan(**sources, seed=np.random.default_rng(seed)),
                          callbacks=[Progress(show=False, first_step=first_step)])[0]
        assert ran == lengths
        return result

    reference = run([16, 2, 14, 8])
    np.testing.assert_array_equal(run([5, 35]), reference)
    # Interrupted after step 25 and resumed from its images: the draws follow the run's step numbers.
    np.testing.assert_array_equal(run([15], steps=15, first_step=25, start=run([9, 16], steps=25)), reference)
    assert not np.array_equal(run([16, 2, 14, 8], seed=2), reference)
    np.testing.assert_array_equal(run([16, 2, 14, 8]), reference)


def test_each_source_and_step_has_its_own_stream():
    def shifts(random, source="jitter", steps=range(1, 601)):
        return random.draws(source, steps, lambda generator: Jitter(8).draw(generator, 1))

    random = StepRandom(np.random.default_rng([4, 1]))
    reference = shifts(random)
    np.testing.assert_array_equal(reference[10:20], shifts(random, steps=range(11, 21)))
    np.testing.assert_array_equal(reference[[6, 0]], np.concatenate(
        [Jitter(8).draw(random.generator("jitter", step), 1) for step in (7, 1)]))
    # A generator's seed counts, not its state: the same draws from a fresh one and from one drawn from.
    drawn_from = np.random.default_rng([4, 1])
    drawn_from.uniform(size=5)
    np.testing.assert_array_equal(shifts(StepRandom(drawn_from)), reference)
    # Uniform over [-8, 8], and uncorrelated across steps, sources and seeds.
    assert scipy.stats.chisquare(np.bincount(reference.ravel() + 8, minlength=17)).pvalue > 1e-3
    # Two equal transforms are two sources.
    plan = Plan(transforms=(Jitter(8), RandomScale((1.0, 1.1)), Jitter(8)), tiling=Tiling(16))
    assert plan.sources == ("('jitter', 8)", "('scale', (1.0, 1.1))", "('jitter', 8)#2", "('tiles', 16, 'random', 0)")
    others = [reference[1:], shifts(random, "tiles"), shifts(random, "jitter#2"), shifts(StepRandom([4, 2]))]
    for other in others:
        assert not np.array_equal(other, reference[: len(other)])
        assert abs(np.corrcoef(reference[: len(other)].ravel(), other.ravel())[0, 1]) < 0.2


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
    result, _ = optimise(engine, images, 5, Adam(0.1), callbacks=[Progress(show=False)])
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)


def test_host_callbacks_see_the_steps_they_are_due_on(engine, rng):
    seen = []
    images = rng.uniform(size=(1, 16, 16, 3)).astype(np.float32)
    optimise(engine, images, 7, normalised_descent(0.01), callbacks=[every(3, lambda values, step: seen.append(step)
                                                                          or values), Progress(show=False)])
    assert seen == [2, 5]
