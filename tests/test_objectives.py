"""Objectives: reference values against numpy, and the algebra of weights and names."""

import keras
import numpy as np
import pytest

from deeprestore import objectives


@pytest.fixture
def features(rng):
    return {"a": rng.normal(size=(2, 4, 5, 6)).astype(np.float32), "b": rng.normal(size=(2, 3, 3, 2)).astype(np.float32)}


def test_l2_is_the_mean_square_of_each_image(features):
    total, values = objectives.l2("a")(features)
    per_image = np.mean(features["a"].reshape(2, -1) ** 2, axis=1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(total), per_image.sum(), rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(values["l2.a"]), per_image.mean(), rtol=1e-5)


def test_channel_is_the_mean_of_one_channel(features):
    total, _ = objectives.channel("a", 3)(features)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(total), features["a"][..., 3].mean(axis=(1, 2)).sum(), rtol=1e-5)


def test_weight_scales_each_term_and_values_stay_unweighted(features):
    objective = -objectives.l2("a") + 0.5 * objectives.l2("b")
    total, values = objective(features)
    a = np.mean(features["a"].reshape(2, -1) ** 2, axis=1)
    b = np.mean(features["b"].reshape(2, -1) ** 2, axis=1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(total), -a.sum() + 0.5 * b.sum(), rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(values["l2.b"]), b.mean(), rtol=1e-5)
    assert objective.layers == ("a", "b")
    assert objective.names == ("l2.a", "l2.b")


def test_subtraction_is_addition_of_the_negative(features):
    left = keras.ops.convert_to_numpy((objectives.l2("a") - objectives.l2("b"))(features)[0])
    right = keras.ops.convert_to_numpy((objectives.l2("a") + (-1) * objectives.l2("b"))(features)[0])
    np.testing.assert_allclose(left, right, rtol=1e-6)


def test_duplicate_term_names_are_refused():
    with pytest.raises(ValueError, match="unique"):
        objectives.l2("a") + objectives.l2("a")
