"""DeepDream from Python: the pieces `deeprestore dream` glues together, in one octave."""

import numpy as np

from deeprestore import objectives
from deeprestore.images import load_image, save_image
from deeprestore.networks import create_network
from deeprestore.optimise import Engine, Plan, clamp, normalised_descent, optimise

network = create_network("vgg16", weights="offline")
images = load_image("astronaut", size=128)[None]  # (1, height, width, 3) RGB in [0, 1]
objective = -objectives.l2("block4_conv3")  # every objective is minimised: ascent is a minus sign
engine = Engine.for_objective(objective, network)
dreamed, losses = optimise(engine, images, steps=10, step_rule=normalised_descent(0.01),
                           plan=Plan(jitter=16, seed=np.random.default_rng(0)), callbacks=[clamp()])
print(losses)  # the last value of each named term, and the total
save_image("dream.png", dreamed[0])
