"""Objectives: reference values against numpy, and the algebra of weights and names."""

import keras
import numpy as np
import pytest

from deeprestore import objectives


@pytest.fixture
def features(rng):
    return {"a": rng.normal(size=(2, 4, 5, 6)).astype(np.float32),
            "b": rng.normal(size=(2, 3, 3, 2)).astype(np.float32)}


def test_l2_is_the_mean_square_of_each_image(features):
    total, values = objectives.l2("a")(features)
    per_image = np.mean(features["a"].reshape(2, -1) ** 2, axis=1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(total), per_image.sum(), rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(values["l2.a"]), per_image.mean(), rtol=1e-5)


def test_channel_is_the_mean_of_one_channel(features):
    total, _ = objectives.channel("a", 3)(features)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(total), features["a"][..., 3].mean(axis=(1, 2)).sum(),
                               rtol=1e-5)


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


def numpy_gram(activation):
    flat = activation.reshape(activation.shape[0], -1, activation.shape[-1]).astype(np.float64)
    return np.einsum("bpk,bpl->bkl", flat, flat) / flat.shape[1]


def test_gram_matrix_matches_numpy(features):
    np.testing.assert_allclose(keras.ops.convert_to_numpy(objectives.gram(features["a"])), numpy_gram(features["a"]),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(objectives.gram_numpy(features["a"][0]), numpy_gram(features["a"])[0], rtol=1e-5)


def test_gram_distance_is_the_papers_normalisation(features, rng):
    target = rng.normal(size=(1, 6, 6)).astype(np.float32)
    total, _ = objectives.gram_distance("a")({**features, "targets": {"gram.a": target}})
    expected = np.sum((numpy_gram(features["a"]) - target) ** 2, axis=(1, 2)) / (4 * 6**2)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(total), expected.sum(), rtol=1e-4)
    # With unnormalised Grams G = F^T F and M positions: 1 / (4 N^2 M^2) sum (G - A)^2.
    positions = 4 * 5
    flat = features["a"].reshape(2, -1, 6).astype(np.float64)
    paper = (np.sum((np.einsum("bpk,bpl->bkl", flat, flat) - target * positions) ** 2, axis=(1, 2))
             / (4 * 36 * positions**2))
    np.testing.assert_allclose(expected, paper, rtol=1e-6)


def test_normalised_gram_distance_is_scale_free(features, rng):
    target = numpy_gram(features["a"][:1]).astype(np.float32) * 2
    value = objectives.gram_distance("a", normalise=True)({**features, "targets": {"gram.a": target}})[0]
    scaled = {**features, "a": features["a"] * 10, "targets": {"gram.a": target * 100}}
    np.testing.assert_allclose(keras.ops.convert_to_numpy(value),
                               keras.ops.convert_to_numpy(objectives.gram_distance("a", normalise=True)(scaled)[0]),
                               rtol=1e-4)


def test_colour_distance_compares_numpys_mean_and_covariance(rng):
    images = rng.uniform(size=(2, 5, 7, 3)).astype(np.float32)
    source = rng.uniform(size=(6, 6, 3))
    target = objectives.colour_statistics(source)
    np.testing.assert_allclose(target[0], source.reshape(-1, 3).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(target[1:], np.cov(source.reshape(-1, 3).T, bias=True), rtol=1e-5)
    _, values = objectives.colour_distance()({"images": images, "targets": {"colour.images": target[None]}})
    expected = []
    for image in images:
        mean, covariance = image.reshape(-1, 3).mean(axis=0), np.cov(image.reshape(-1, 3).T, bias=True)
        expected.append(np.sum((mean - target[0]) ** 2) / np.sum(target[0] ** 2)
                        + np.sum((covariance - target[1:]) ** 2) / np.sum(target[1:] ** 2))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(values["colour.images"]), np.mean(expected), rtol=1e-4)


def test_colour_distance_is_zero_for_the_sources_own_colours(rng):
    source = rng.uniform(size=(1, 6, 6, 3)).astype(np.float32)
    target = objectives.colour_statistics(source[0])[None]
    total, _ = objectives.colour_distance()({"images": source, "targets": {"colour.images": target}})
    assert abs(float(keras.ops.convert_to_numpy(total))) < 1e-6


def test_content_distance_is_half_the_squared_error(features, rng):
    target = rng.normal(size=features["a"].shape).astype(np.float32)
    total, _ = objectives.content_distance("a")({**features, "targets": {"content.a": target}})
    np.testing.assert_allclose(keras.ops.convert_to_numpy(total), 0.5 * np.sum((features["a"] - target) ** 2),
                               rtol=1e-5)


def test_normalised_feature_distance_matches_mahendran_vedaldi(features, rng):
    target = rng.normal(size=features["a"].shape).astype(np.float32)
    _, values = objectives.normalised_distance("a")({**features, "targets": {"feature.a": target}})
    per_image = np.sum((features["a"] - target).reshape(2, -1) ** 2, 1) / np.sum(target.reshape(2, -1) ** 2, 1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(values["feature.a"]), per_image.mean(), rtol=1e-5)


def test_total_variation_matches_numpy(rng):
    images = rng.uniform(size=(2, 5, 6, 3)).astype(np.float32)
    dx = images[:, :-1, 1:] - images[:, :-1, :-1]
    dy = images[:, 1:, :-1] - images[:, :-1, :-1]
    for beta in (1.0, 2.0, 3.0):
        total, _ = objectives.total_variation(beta, scale=0.5)({"images": images})
        expected = np.sum(((dx**2 + dy**2) / 0.25 + (1e-8 if beta != 2 else 0)) ** (beta / 2))
        np.testing.assert_allclose(keras.ops.convert_to_numpy(total), expected, rtol=1e-4)


def test_alpha_norm_matches_numpy_per_value_and_per_pixel(rng):
    inputs = rng.normal(size=(2, 4, 4, 3)).astype(np.float32) * 50
    total, _ = objectives.alpha_norm(6, "preprocess", scale=80.0)({"preprocess": inputs})
    np.testing.assert_allclose(keras.ops.convert_to_numpy(total), np.sum(np.abs(inputs / 80.0) ** 6), rtol=1e-4)
    total, _ = objectives.alpha_norm(6, "preprocess", scale=80.0, pixel_norm=True)({"preprocess": inputs})
    norms = np.linalg.norm(inputs / 80.0, axis=-1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(total), np.sum(norms**6), rtol=1e-4)


def test_guide_takes_the_best_matching_guide_vector(rng):
    activation = rng.normal(size=(1, 2, 2, 3)).astype(np.float32)
    guide = rng.normal(size=(5, 3)).astype(np.float32)
    total, _ = objectives.guide("a")({"a": activation, "targets": {"guide.a": guide}})
    expected = np.mean(np.max(activation.reshape(-1, 3) @ guide.T, axis=1))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(total), expected, rtol=1e-5)
