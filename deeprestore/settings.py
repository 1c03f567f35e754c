"""Every command's settings and their defaults, in one place.

Each experiment has a frozen dataclass here. The CLI takes its option defaults from these and the
recipes take an instance, so a default is written once. This module imports nothing heavy (no Keras),
so the CLI can read it before choosing a backend.
"""

import dataclasses

START_CHOICES = ("image", "noise", "grey")


@dataclasses.dataclass(frozen=True)
class DreamSettings:
    """DeepDream: gradient ascent on the L2 norm of layers, over octaves (seed 003; Mordvintsev et al.).

    Attributes:
        image: Start image: a path or a bundled sample.
        network: Registered network name.
        weights: `auto`, `imagenet`, `offline`, `random` or a path.
        pooling: `max` or `average`.
        layers: Layers whose L2 norm is raised; empty means the network's default dream layers.
        size: Longer side of the working image, in pixels (0 keeps the input size).
        octaves: Number of scales, processed from the smallest.
        octave_scale: Size ratio between consecutive octaves.
        steps: Gradient steps per octave.
        step_size: Step in units of the mean absolute gradient.
        jitter: Largest random shift before each step, in pixels.
        start: `image` (the input), `noise` (uniform, seeded) or `grey`.
        cache: HDF5 activation cache shared across runs (default: the run's own activations.h5).
    """

    image: str = "astronaut"
    network: str = "vgg16"
    weights: str = "auto"
    pooling: str = "max"
    layers: tuple = ()
    size: int = 384
    octaves: int = 4
    octave_scale: float = 1.4
    steps: int = 10
    step_size: float = 0.008
    jitter: int = 32
    start: str = "image"
    cache: str | None = None


DREAM = DreamSettings()
