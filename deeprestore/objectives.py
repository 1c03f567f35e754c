"""Objectives: weighted sums of named loss terms, always minimised.

A term is a function from the probe's features `{layer: tensor}` to one value per image. Objectives
combine with `+`, `-` and scalar `*`, so ascent is a minus sign in the recipe:
`-l2("block4_conv3") - 0.5 * l2("block5_conv1")`. Evaluating an objective gives the total to minimise
(summed over the batch, so each image gets its own gradient) and each term's unweighted value, averaged
over the batch, under its dotted name (`l2.block4_conv3`): the columns of the loss log.
"""

import dataclasses
from typing import Callable

import keras


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
