"""`tiny`: a small seeded network for fast tests, built like the real ones.

Two convolution blocks with pre- and post-ReLU layers, max or average pooling and a fully
convolutional head of 10 classes. It has no trained weights: `auto` gives seeded random ones.
"""

from deeprestore import architectures
from deeprestore.networks import base


def build(pooling="max", include_top=False, seed=0):
    """Builds the tiny network taking RGB [0, 1] batches of any size (at least 4x4)."""
    preprocessing = {"mean": (0.5, 0.5, 0.5), "scale": 1.0, "bgr": False}
    return base.build_model("tiny", architectures.tiny(), preprocessing, pooling, include_top, seed)


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
    head=architectures.head_names("tiny"),
    num_classes=10,
    trained=False,
)
