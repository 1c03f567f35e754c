"""The networks' layers as data (`deeprestore.architectures`): the names the builders give, and the names the
checks refuse before any backend loads."""

import json
import pathlib
import subprocess
import sys

import pytest

from deeprestore import architectures
from deeprestore.errors import DeepRestoreError
from deeprestore.recipes import checks

# The builds a test can afford: tiny with and without its head, the VGG and AlexNet trunks with random
# weights (about a second each on two cores); their heads' names are checked against the spec below.
BUILDS = [("tiny", False), ("tiny", True), ("alexnet", False), ("vgg16", False)]
# Bad names each command refuses in one line, with what the line says.
BAD_NAMES = [
    (("dream", "--network", "vgg17"), "Unknown network 'vgg17'; expected one of vgg16, vgg19, alexnet, tiny"),
    (("dream", "--layer", "block9_conv1"), "Unknown layer 'block9_conv1' for network 'vgg16'"),
    (("dream", "--network", "vgg19", "--channel", "conv5_9:3"), "Unknown layer 'conv5_9' for network 'vgg19'"),
    (("dream", "--network", "alexnet", "--layer", "fc7"), "Layer 'fc7' of network 'alexnet' belongs to the classifier"),
    (("dream", "--network", "tiny", "--cycle", "relu9:0.01:3"), "Unknown layer 'relu9' for network 'tiny'"),
    (("style", "--network", "tiny", "--content-layer", "relu7"), "Unknown layer 'relu7' for network 'tiny'"),
    (("style", "--network", "vgg19", "--style-layer", "block6_conv1"), "Unknown layer 'block6_conv1'"),
    (("texture", "--network", "alexnet", "--layer", "norm9"), "Unknown layer 'norm9' for network 'alexnet'"),
    (("invert", "--network", "tiny", "--layer", "relu9"), "Unknown layer 'relu9' for network 'tiny'"),
    (("invert", "--network", "tiny", "--layer", "relu2", "--to", "conv9"), "--to: Unknown layer 'conv9'"),
    (("invert", "--method", "deconvnet", "--network", "vgg16", "--layer", "pool9"), "Unknown layer 'pool9'"),
    (("invert", "--method", "learned", "--stack", "RUN", "--network", "vgg17"), "Unknown network 'vgg17'"),
    (("stack", "--network", "tiny", "--from", "pool9"), "Unknown layer 'pool9' for network 'tiny'"),
    (("stack", "--network", "vgg16", "--to", "relu9_1"), "Unknown layer 'relu9_1' for network 'vgg16'"),
    (("denoise", "train", "--model", "unet2"), "Unknown model 'unet2'; expected one of unet, dncnn"),
    (("stack", "--network", "tiny", "--modules", "KIND"), "type 'zz' is unknown; expected one of cd, dc, dd, upconv"),
    (("stack", "--network", "tiny", "--modules", "LAYER"),
     "Module 'back' has input 'pool9', which is not a layer of 'tiny' or a module (back). Unknown layer 'pool9'"),
]
# Module spec files the stack cases above read: a module of an unknown kind, one from an unknown layer.
SPEC_FILES = {"KIND": '[{"name": "back", "input": "pool1", "target": "image", "type": "zz"}]',
              "LAYER": '[{"name": "back", "input": "pool9", "target": "image"}]'}


@pytest.mark.parametrize(("network", "top"), BUILDS)
def test_the_names_here_are_the_built_models_names(network, top):
    import keras

    from deeprestore.networks import REGISTRY

    model = REGISTRY[network].build("max", top, seed=0)
    built = tuple(layer.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer))
    assert built == architectures.layer_names(network, include_top=top)


@pytest.mark.parametrize("network", list(architectures.ARCHITECTURES))
def test_each_registered_network_takes_its_names_and_aliases_and_its_spec_reads_them_here(network):
    from deeprestore.networks import REGISTRY

    spec = REGISTRY[network]
    assert spec.head == architectures.head_names(network) and spec.aliases == architectures.ALIASES[network]
    names = architectures.layer_names(network, include_top=True)
    checks.network_layers(network, [*names, *spec.aliases], include_top=True)  # pre- and post-activation, aliases
    assert all(target in names for target in spec.aliases.values())
    if spec.head:
        with pytest.raises(DeepRestoreError, match="belongs to the classifier head"):
            checks.network_layers(network, [spec.head[0]])


def test_a_model_file_is_read_for_its_names_and_an_unregistered_name_refused():
    with pytest.raises(DeepRestoreError, match=r"Model file 'models/mine\.keras' not found"):
        checks.network_layers("models/mine.keras", ["anything"])
    with pytest.raises(DeepRestoreError, match="Unknown network 'mine'"):
        checks.network_layers("mine", ["anything"])


def test_bad_names_are_one_line_each_without_a_backend(tmp_path):
    """In a fresh interpreter: every bad network, layer (VGG16, VGG19, AlexNet, tiny; names and aliases), model
    name and module spec (kind, layer) is refused in one `Error:` line with Keras never imported."""
    files = {"RUN": str(tmp_path)}
    for name, text in SPEC_FILES.items():
        (tmp_path / f"{name}.json").write_text(text)
        files[name] = str(tmp_path / f"{name}.json")
    cases = [[files.get(argument, argument) for argument in arguments] for arguments, _ in BAD_NAMES]
    code = ("import json, sys\nfrom click.testing import CliRunner\nfrom deeprestore.cli import cli\n"
            f"results = [CliRunner().invoke(cli, ['--runs', {str(tmp_path)!r}, *case]) for case in {cases!r}]\n"
            "print(json.dumps([[result.exit_code, result.output] for result in results]\n"
            "                 + [[name for name in ('keras', 'tensorflow', 'jax') if name in sys.modules]]))\n")
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             cwd=pathlib.Path(__file__).resolve().parent.parent)
    *results, loaded = json.loads(process.stdout.strip().splitlines()[-1])
    assert loaded == [], process.stderr[-500:]
    for (arguments, message), (code, output) in zip(BAD_NAMES, results):
        errors = [line for line in output.splitlines() if line.startswith("Error")]
        assert code == 1 and len(errors) == 1 and message in errors[0] and "Traceback" not in output, (arguments,
                                                                                                      output)
    assert not any(tmp_path.rglob("config.json"))
