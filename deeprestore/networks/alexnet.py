"""AlexNet as in Caffe's BVLC reference model, with local response normalisation and grouped
convolutions.

227x227 input; conv1 11x11 stride 4, 96 maps, valid; ReLU; LRN (radius 2, alpha 2e-5, beta 0.75,
bias 1); max-pool 3x3 stride 2 (overlapping); conv2 5x5, 256 maps, 2 groups; ReLU; LRN; pool;
conv3 3x3, 384; conv4 3x3, 384, 2 groups; conv5 3x3, 256, 2 groups; pool5; fc6, fc7 4096; fc8 1000.
The head is fully convolutional (fc6 a 6x6 convolution over pool5), like VGG's here. Grouped kernels
have Keras's layout `(height, width, channels / groups, filters)`, the layout of the widely shared
`bvlc_alexnet.npy`. Keras ships no AlexNet weights: pass that file (or any Caffe conversion) as
`--weights PATH`.
"""

import keras

from deeprestore.networks import base
from deeprestore.networks.layers import LocalResponseNormalization

# The BVLC ImageNet mean, BGR, on the 0-255 scale.
IMAGENET_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
# name, filters, kernel size, stride, padding, groups, followed by LRN, followed by pooling
CONVOLUTIONS = (
    ("1", 96, 11, 4, "valid", 1, True, True),
    ("2", 256, 5, 1, "same", 2, True, True),
    ("3", 384, 3, 1, "same", 1, False, False),
    ("4", 384, 3, 1, "same", 2, False, False),
    ("5", 256, 3, 1, "same", 2, False, True),
)


def build(pooling="max", include_top=False, seed=0):
    """Builds AlexNet taking RGB [0, 1] batches of any size (at least 227x227 for the head).

    Args:
        pooling: `max` (as trained) or `average`.
        include_top: Whether to build the fully-convolutional classifier head.
        seed: Seed of the random initial weights.

    Returns:
        A functional `keras.Model`.
    """
    # A seed generator, not an int: an int seed makes every layer draw the same stream, so layers of one
    # shape get identical kernels and all others scaled copies of one another.
    initializer = keras.initializers.GlorotUniform(seed=keras.random.SeedGenerator(seed))
    images = keras.Input((None, None, 3), name="images")
    outputs = base.CaffePreprocessing(IMAGENET_MEAN_BGR, name="preprocess")(images)
    pool = keras.layers.MaxPooling2D if pooling == "max" else keras.layers.AveragePooling2D
    for index, filters, size, stride, padding, groups, normalise, pooled in CONVOLUTIONS:
        outputs = keras.layers.Conv2D(
            filters, size, strides=stride, padding=padding, groups=groups,
            kernel_initializer=initializer, name=f"conv{index}",
        )(outputs)
        outputs = keras.layers.ReLU(name=f"relu{index}")(outputs)
        if normalise:
            outputs = LocalResponseNormalization(name=f"norm{index}")(outputs)
        if pooled:
            outputs = pool(3, strides=2, name=f"pool{index}")(outputs)
    if include_top:
        for index, filters, size in (("6", 4096, 6), ("7", 4096, 1), ("8", 1000, 1)):
            outputs = keras.layers.Conv2D(filters, size, kernel_initializer=initializer, name=f"fc{index}")(outputs)
            if index != "8":
                outputs = keras.layers.ReLU(name=f"relu{index}")(outputs)
        outputs = keras.layers.Softmax(name="prob")(outputs)
    return keras.Model(images, outputs, name="alexnet")


SPEC = base.NetworkSpec(
    name="alexnet",
    summary="Caffe BVLC AlexNet (Krizhevsky et al. 2012): LRN, grouped convolutions, 227x227 input",
    build=build,
    input_size=(227, 227),
    mean=IMAGENET_MEAN_BGR,
    scale=255.0,
    bgr=True,
    layer_sets=base.LayerSets(
        content="relu4", style=("relu1", "relu2", "relu3", "relu4", "relu5"),
        texture=("relu1", "pool1", "pool2", "pool5"), dream=("relu4",),
    ),
    head=("fc6", "relu6", "fc7", "relu7", "fc8", "prob"),
)
