"""Objectives: weighted sums of named loss terms, always minimised.

A term is a function from the probe's features `{layer: tensor}` to one value per image. Objectives
combine with `+`, `-` and scalar `*`, so ascent is a minus sign in the recipe:
`-l2("block4_conv3") - 0.5 * l2("block5_conv1")`. Evaluating an objective gives the total to minimise
(summed over the batch, so each image gets its own gradient) and each term's unweighted value, averaged
over the batch, under its dotted name (`l2.block4_conv3`): the columns of the loss log.

Terms read the probe's features by layer name; the key `images` holds the RGB [0, 1] input itself and
the layer `preprocess` the network's input (0-255, BGR, mean subtracted), where Mahendran & Vedaldi's
priors are defined. Fixed targets (content activations, style Grams, an inversion target, a guide)
are not baked into the terms: a term reads `features["targets"][its name]`, and the caller passes the
arrays with every evaluation. One compiled function then serves every image and every scale.
"""

import dataclasses
from collections.abc import Callable

import keras
import numpy as np


@dataclasses.dataclass(frozen=True)
class Term:
    """One named loss term: `function(features) -> (batch,)` over the features of `layers`."""

    name: str
    layers: tuple
    function: Callable
    weight: float = 1.0


class Objective:
    """A weighted sum of named terms.

    Args:
        terms: The terms; names must be unique.
    """

    def __init__(self, terms):
        self.terms = tuple(terms)
        names = [term.name for term in self.terms]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"Objective terms must have unique names; got {', '.join(duplicates)} twice.")

    @property
    def layers(self):
        """Every layer the terms read, in order of first use."""
        return tuple(dict.fromkeys(layer for term in self.terms for layer in term.layers))

    @property
    def names(self):
        return tuple(term.name for term in self.terms)

    def __add__(self, other):
        return Objective(self.terms + other.terms)

    def __sub__(self, other):
        return self + (-1.0) * other

    def __neg__(self):
        return (-1.0) * self

    def __mul__(self, scale):
        return Objective(dataclasses.replace(term, weight=term.weight * float(scale)) for term in self.terms)

    __rmul__ = __mul__

    def __call__(self, features):
        """Returns `(total, {name: value})`: the weighted total summed over the batch, and each term's
        unweighted value averaged over the batch."""
        total = 0.0
        values = {}
        for term in self.terms:
            value = term.function(features)  # (batch,)
            total = total + term.weight * keras.ops.sum(value)
            values[term.name] = keras.ops.mean(value)
        return total, values

    def __repr__(self):
        return " + ".join(f"{term.weight:g} * {term.name}" for term in self.terms)


def _per_image(tensor):
    """Flattens everything but the batch axis."""
    return keras.ops.reshape(tensor, (keras.ops.shape(tensor)[0], -1))


def l2(layer):
    """Mean squared activation of a layer: the DeepDream objective (seed 003, 2.1: z = x^T x; the mean
    rather than the sum keeps values comparable across image sizes).

    Args:
        layer: Canonical layer name.
    """
    return Objective([Term(f"l2.{layer}", (layer,), lambda features: keras.ops.mean(
        keras.ops.square(_per_image(features[layer])), axis=1))])


def channel(layer, index):
    """Mean activation of one channel of a layer.

    Args:
        layer: Canonical layer name.
        index: Channel index.
    """
    return Objective([Term(f"channel.{layer}.{index}", (layer,), lambda features: keras.ops.mean(
        _per_image(features[layer][..., index]), axis=1))])


def neuron(layer, index, position=None):
    """Activation of one unit: channel `index` at `position` (row, column), default the centre.

    Args:
        layer: Canonical layer name.
        index: Channel index.
        position: `(row, column)` in the layer's grid, or None for the centre.
    """

    def function(features):
        activation = features[layer]
        shape = keras.ops.shape(activation)  # dynamic under a shape-relaxed tf.function
        row, column = position if position is not None else (shape[1] // 2, shape[2] // 2)
        return activation[:, row, column, index]

    return Objective([Term(f"neuron.{layer}.{index}", (layer,), function)])


def class_logit(layer, index):
    """A class score before the softmax, averaged over positions: with the fully-convolutional head a
    large input gives a map of scores, and the mean raises the class everywhere (seed 003, 2.4).

    Args:
        layer: The logits layer (`fc8`).
        index: Class index.
    """
    return Objective([Term(f"class.{index}", (layer,), lambda features: keras.ops.mean(
        _per_image(features[layer][..., index]), axis=1))])


def guide(layer):
    """Guided dreaming: at each position, the largest dot product between the image's activation
    vector and any of the guide image's activation vectors, averaged over positions.

    The gradient pulls each position towards the guide features it already resembles most, so the
    guide need not have the dreamed image's size (Mordvintsev et al., 2015, DeepDream notebook).
    Target `guide.<layer>`: the guide's activations as `(positions, channels)`.

    Args:
        layer: Canonical layer name.
    """
    name = f"guide.{layer}"

    def function(features):
        activation = features[layer]
        flat = keras.ops.reshape(activation, (keras.ops.shape(activation)[0], -1, activation.shape[-1]))
        products = keras.ops.einsum("bpc,gc->bpg", flat, features["targets"][name])
        return keras.ops.mean(keras.ops.max(products, axis=2), axis=1)

    return Objective([Term(name, (layer,), function)])


def gram(activation):
    """Gram matrices of a batch of activations, normalised by the number of positions.

    `G[b, k, l] = sum_ij a[b, i, j, k] a[b, i, j, l] / (height * width)`. Dividing by the positions
    makes Grams of images of different sizes comparable (texture synthesis at any output size).
    """
    flat = keras.ops.reshape(activation, (keras.ops.shape(activation)[0], -1, activation.shape[-1]))
    positions = keras.ops.cast(keras.ops.shape(flat)[1], activation.dtype)
    return keras.ops.einsum("bpk,bpl->bkl", flat, flat) / positions


def gram_numpy(activation):
    """Numpy `gram` of one activation `(height, width, channels)`."""
    flat = np.asarray(activation, np.float64).reshape(-1, activation.shape[-1])
    return (flat.T @ flat / flat.shape[0]).astype(np.float32)


def gram_distance(layer, normalise=False):
    """Gatys et al.'s style (texture) loss at one layer.

    `E = sum_kl (G_kl - A_kl)^2 / (4 N^2)` with `N` channels and `G`, `A` the generated and target
    Grams normalised by the number of positions `M`. With unnormalised Grams this is the paper's
    `1 / (4 N^2 M^2) sum (G - A)^2`, the same value when both images have `M` positions.

    Reference:
        Gatys, Ecker & Bethge, 2015. Texture synthesis using convolutional neural networks;
        A neural algorithm of artistic style.

    Target `gram.<layer>`: `(batch or 1, channels, channels)` Grams (blend several styles by averaging
    their Grams with the blend weights).

    With `normalise`, the distance is divided by the target's own `sum A^2 / (4 N^2)`, so every layer
    starts on the same scale whatever its activations' magnitude. Gatys et al. got the same balance by
    rescaling VGG's weights to a mean activation of one per filter; networks here are not rescaled.

    Args:
        layer: Canonical layer name.
        normalise: Divide by the target's squared norm (scale-free per layer).
    """
    name = f"gram.{layer}"

    def function(features):
        activation = features[layer]
        target = features["targets"][name]
        distance = keras.ops.sum(keras.ops.square(gram(activation) - target), axis=(1, 2))
        if normalise:
            return distance / (keras.ops.sum(keras.ops.square(target), axis=(1, 2)) + 1e-12)
        return distance / (4.0 * activation.shape[-1] ** 2)

    return Objective([Term(name, (layer,), function)])


def colour_statistics(image):
    """Numpy target of `colour_distance` for one RGB image `(height, width, 3)`: `(4, 3)` float32, the mean
    colour in the first row and the colours' covariance below it."""
    flat = np.asarray(image, np.float64).reshape(-1, 3)
    mean = flat.mean(axis=0)
    centred = flat - mean
    return np.concatenate([mean[None], centred.T @ centred / flat.shape[0]]).astype(np.float32)


def colour_distance():
    """A colour prior: how far the images' mean colour and colour covariance are from a target's.

    `||m - m0||^2 / ||m0||^2 + ||C - C0||_F^2 / ||C0||_F^2` over the RGB [0, 1] pixels, each part divided
    by its target's squared norm, as `gram_distance(normalise=True)` is. A grey source has a covariance
    of rank one (every channel moves together), so per-pixel colour noise, which the Gram loss of a
    network that ignores colour lets through, costs as much as a wrong contrast.

    Target `colour.images`: `(batch or 1, 4, 3)` from `colour_statistics` (blend several sources by
    averaging them with the blend weights).
    """
    name = "colour.images"

    def function(features):
        images = features["images"]
        flat = keras.ops.reshape(images, (keras.ops.shape(images)[0], -1, 3))  # (batch, positions, 3)
        mean = keras.ops.mean(flat, axis=1)  # (batch, 3)
        centred = flat - mean[:, None, :]
        covariance = keras.ops.einsum("bpk,bpl->bkl", centred, centred) / keras.ops.cast(
            keras.ops.shape(flat)[1], images.dtype)
        target = features["targets"][name]
        target_mean, target_covariance = target[:, 0, :], target[:, 1:, :]
        mean_part = keras.ops.sum(keras.ops.square(mean - target_mean), axis=1) / (
            keras.ops.sum(keras.ops.square(target_mean), axis=1) + 1e-12)
        covariance_part = keras.ops.sum(keras.ops.square(covariance - target_covariance), axis=(1, 2)) / (
            keras.ops.sum(keras.ops.square(target_covariance), axis=(1, 2)) + 1e-12)
        return mean_part + covariance_part

    return Objective([Term(name, ("images",), function)])


def content_distance(layer):
    """Gatys et al.'s content loss: `1/2 sum (F - P)^2` between the activations and a target.

    Target `content.<layer>`: `(batch, height, width, channels)` activations of the content images.

    Args:
        layer: Canonical layer name.
    """
    name = f"content.{layer}"

    def function(features):
        return 0.5 * keras.ops.sum(_per_image(keras.ops.square(features[layer] - features["targets"][name])), axis=1)

    return Objective([Term(name, (layer,), function)])


def normalised_distance(layer):
    """Mahendran & Vedaldi's feature loss `||phi(x) - phi0||^2 / ||phi0||^2`, per image.

    Reference:
        Mahendran & Vedaldi, 2015. Understanding deep image representations by inverting them.

    Target `feature.<layer>`: `(batch, height, width, channels)` activations `phi0`.

    Args:
        layer: Canonical layer name.
    """
    name = f"feature.{layer}"

    def function(features):
        target = features["targets"][name]
        norms = keras.ops.sum(_per_image(keras.ops.square(target)), axis=1) + 1e-12
        return keras.ops.sum(_per_image(keras.ops.square(features[layer] - target)), axis=1) / norms

    return Objective([Term(name, (layer,), function)])


def alpha_norm(alpha, layer="preprocess", scale=1.0, pixel_norm=False):
    """The alpha-norm prior `sum |x / scale|^alpha` of an image, per image.

    Mahendran & Vedaldi use it on the network's input (`preprocess`, mean subtracted), with alpha = 6
    (2015) and, in 2016, on each pixel's colour vector norm, with `scale` = B = 80 and weight `1 / (H W)`.

    Args:
        alpha: The exponent.
        layer: The image representation: `preprocess` (network input) or `images` (RGB [0, 1]).
        scale: Divides the image first, keeping the value in a sane range for large alpha.
        pixel_norm: Sum `||x_ij / scale||^alpha` over pixels (the norm over channels) instead of over
            every value.
    """

    def function(features):
        scaled = features[layer] / scale
        if pixel_norm:
            value = keras.ops.power(keras.ops.sum(keras.ops.square(scaled), axis=-1) + 1e-12, alpha / 2.0)
        else:
            value = keras.ops.power(keras.ops.abs(scaled), alpha)
        return keras.ops.sum(_per_image(value), axis=1)

    return Objective([Term(f"alpha_norm.{layer}", (layer,), function)])


def total_variation(beta=2.0, layer="images", scale=1.0):
    """The total-variation prior `TV_beta = sum ((dx^2 + dy^2) / scale^2) ^ (beta / 2)`, per image.

    Differences are taken to the right and below each pixel (the last row and column are dropped).
    beta = 2 is the squared-gradient smoothness of style transfer; Mahendran & Vedaldi use beta = 2
    (2015) and, in 2016, `scale` = V = B / 6.5.

    Args:
        beta: The exponent.
        layer: `images` (RGB [0, 1]) or `preprocess` (network input).
        scale: Divides the differences first.
    """

    def function(features):
        image = features[layer]
        dx = (image[:, :-1, 1:, :] - image[:, :-1, :-1, :]) / scale
        dy = (image[:, 1:, :-1, :] - image[:, :-1, :-1, :]) / scale
        squared = keras.ops.square(dx) + keras.ops.square(dy)
        value = squared if beta == 2.0 else keras.ops.power(squared + 1e-8, beta / 2.0)
        return keras.ops.sum(_per_image(value), axis=1)

    return Objective([Term(f"tv.{layer}", (layer,), function)])
