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


from deeprestore import architectures
from deeprestore.networks import base

# The BVLC ImageNet mean, BGR, on the 0-255 scale.
IMAGENET_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)


def build(pooling="max", include_top=False, seed=0):
    """Builds AlexNet taking RGB [0, 1] batches of any size (at least 227x227 for the head).

    Args:
        pooling: `max` (as trained) or `average`.
        include_top: Whether to build the fully-convolutional classifier head.
        seed: Seed of the random initial weights.

    Returns:
        A functional `keras.Model`.
    """
    return base.build_model("alexnet", architectures.alexnet(), {"mean": IMAGENET_MEAN_BGR},
                            pooling, include_top, seed)


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
    head=architectures.head_names("alexnet"),
)
