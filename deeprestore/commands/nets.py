"""`deeprestore nets`: the registered networks and their addressable layers."""

import click

from deeprestore.layernames import renamed
from deeprestore.options import parse_size


@click.command("nets")
@click.argument("name", required=False, metavar="[NAME|MODEL_FILE]")
@click.option("--size", default=None, help="Input size for the shapes, e.g. 224 or 256x320 (default: native).")
@click.option("--top", is_flag=True, help="Include the classifier head (fc6, fc7, fc8, prob).")
@click.option("--pooling", type=click.Choice(["max", "average"]), default="max")
@click.pass_obj
def command(state, name, size, top, pooling):
    """List the networks, or every addressable layer of NAME (or of a Keras model file) with its output shape."""
    from deeprestore.networks import create_network, get_spec, list_networks

    if name is None:
        for network in list_networks():
            spec = get_spec(network)
            click.echo(f"{network:<8} {spec.input_size[0]}x{spec.input_size[1]}  {spec.summary}")
        return
    network = create_network(name, weights="random", pooling=pooling, include_top=top)
    height, width = parse_size(size) if size else network.spec.input_size
    shapes = network.output_shapes(height, width)
    click.echo(f"{name}: layers for a {height}x{width} input (batch, height, width, channels)")
    if renamed(network.name):
        click.echo("keras.applications names mean its tensors: block1_conv1 is the ReLU output (post-activation), "
                   "block1_conv1_preact\nthe convolution before it; Caffe/MatConvNet aliases as in MatConvNet: "
                   "conv1_1 before the ReLU, relu1_1 after it.")
    width_of_names = max(len(layer) for layer in network.layers)
    for index, layer in enumerate(network.layers):
        kind = layer_kind(network.model.get_layer(layer))
        aliases = ", ".join(network.aliases_of(layer))
        shape = "x".join(str(dimension) for dimension in shapes[layer][1:])
        click.echo(f"{index:>3}  {layer:<{width_of_names}} {kind:<24} {shape:<14} {aliases}".rstrip())


def layer_kind(layer):
    """A short description of what a layer computes."""
    kinds = {
        "Conv2D": "conv (pre-activation)", "ReLU": "relu (post-activation)", "MaxPooling2D": "max pool",
        "AveragePooling2D": "average pool", "LocalResponseNormalization": "local response norm",
        "Softmax": "softmax", "CaffePreprocessing": "preprocessing", "InputConversion": "preprocessing",
    }
    return kinds.get(type(layer).__name__, type(layer).__name__)
