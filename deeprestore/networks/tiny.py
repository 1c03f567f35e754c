"""`tiny`: a small seeded network for fast tests, built like the real ones.

Two convolution blocks with pre- and post-ReLU layers, max or average pooling and a fully
convolutional head of 10 classes. It has no trained weights: `auto` gives seeded random ones.
"""

import keras

from deeprestore.networks import base


def build(pooling="max", include_top=False, seed=0):
    """Builds the tiny network taking RGB [0, 1] batches of any size (at least 4x4)."""
    # A seed generator, not an int: an int seed makes every layer draw the same stream, so layers of one
    # shape get identical kernels and all others scaled copies of one another.
    initializer = keras.initializers.GlorotUniform(seed=keras.random.SeedGenerator(seed))
    images = keras.Input((None, None, 3), name="images")
    outputs = base.CaffePreprocessing((0.5, 0.5, 0.5), scale=1.0, bgr=False, name="preprocess")(images)
    for block, filters in ((1, 8), (2, 16)):
        outputs = keras.layers.Conv2D(
            filters, 3, padding="same", kernel_initializer=initializer, name=f"conv{block}"
        )(outputs)
        outputs = keras.layers.ReLU(name=f"relu{block}")(outputs)
        pool = keras.layers.MaxPooling2D if pooling == "max" else keras.layers.AveragePooling2D
        outputs = pool(2, name=f"pool{block}")(outputs)
    if include_top:
        outputs = keras.layers.Conv2D(10, 1, kernel_initializer=initializer, name="fc3")(outputs)
        outputs = keras.layers.Softmax(name="prob")(outputs)
    return keras.Model(images, outputs, name="tiny")


SPEC = base.NetworkSpec(
    name="tiny",
    summary="two small convolution blocks with seeded random weights, for tests",
    build=build,
    input_size=(16, 16),
    mean=(0.5, 0.5, 0.5),
    scale=1.0,
    bgr=False,
    layer_sets=base.LayerSets(
        content="relu2", style=("relu1", "relu2"), texture=("relu1", "pool1", "pool2"), dream=("relu2",)
    ),
    head=("fc3", "prob"),
    num_classes=10,
    trained=False,
)
