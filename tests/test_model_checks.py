"""Saved models read without Keras (`deeprestore.modelconfig`): a model file's layer names, a saved
model's input, a stack run's specs, each refused in one line before any backend loads."""

import json
import pathlib
import subprocess
import sys
import zipfile

import h5py
import pytest

from deeprestore import modelconfig
from deeprestore.errors import DeepRestoreError
from deeprestore.recipes import checks


def input_layer(name, shape):
    return {"class_name": "InputLayer", "config": {"batch_shape": shape, "name": name}, "name": name}


def layer(class_name, name):
    return {"class_name": class_name, "config": {"name": name}, "name": name}


def functional(shape, *layers, name="model"):
    """A functional model's config as Keras 3.15 writes it (one input, layers in order)."""
    return {"class_name": "Functional", "config": {"name": name, "layers": [input_layer("input_layer", shape), *layers],
                                                   "input_layers": ["input_layer", 0, 0]}}


def sequential(shape, *layers, name="block"):
    return {"class_name": "Sequential", "config": {"name": name, "layers": [input_layer(f"{name}_input", shape),
                                                                            *layers]}}


def archive(path, config, members=("config.json", "metadata.json", "model.weights.h5")):
    """A `.keras` file: the config, Keras's metadata and a weights member (not read before the backend)."""
    texts = {"config.json": json.dumps(config), "metadata.json": '{"keras_version": "3.15.1"}', "model.weights.h5": ""}
    with zipfile.ZipFile(path, "w") as file:
        for member in members:
            file.writestr(member, texts[member])
    return path


RGB = functional([None, None, None, 3], layer("Conv2D", "conv1"),
                 sequential([None, None, None, 8], layer("Conv2D", "conv2"), layer("ReLU", "relu2"), name="block2"))
GRAY = sequential([None, 16, 16, 1], layer("Conv2D", "conv1"), layer("Flatten", "flatten"), layer("Dense", "fc"))
DESCRIPTOR = functional([None, 32, 32, 1], layer("Conv2D", "conv1"), layer("Dense", "descriptor"))
TWO_CHANNELS = functional([None, None, None, 2], layer("Conv2D", "conv1"))


@pytest.fixture
def files(tmp_path):
    """The saved models and folders the cases read, by name."""
    legacy = tmp_path / "gray.h5"
    with h5py.File(legacy, "w") as file:
        file.attrs["model_config"] = json.dumps(GRAY)
    with h5py.File(tmp_path / "weights.h5", "w") as file:
        file.create_dataset("kernel", data=[1.0])
    (tmp_path / "text.keras").write_text("not a model")
    (tmp_path / "empty").mkdir()
    (tmp_path / "stack" / "modules").mkdir(parents=True)
    (tmp_path / "stack" / "modules" / "specs.json").write_text('{"network": "tiny", "modules": []}')
    return {"RGB": str(archive(tmp_path / "rgb.keras", RGB)), "GRAY": str(legacy),
            "DESCRIPTOR": str(archive(tmp_path / "descriptor.keras", DESCRIPTOR)),
            "TWO": str(archive(tmp_path / "two.keras", TWO_CHANNELS)),
            "NOWEIGHTS": str(archive(tmp_path / "bare.keras", RGB, ("config.json",))),
            "LIST": str(archive(tmp_path / "list.keras", [1, 2])),
            "TEXT": str(tmp_path / "text.keras"), "WEIGHTS": str(tmp_path / "weights.h5"),
            "MISSING": str(tmp_path / "missing.keras"), "EMPTY": str(tmp_path / "empty"),
            "STACK": str(tmp_path / "stack")}


def test_layer_names_flatten_nested_models_and_leave_out_inputs(files):
    assert modelconfig.layer_names(RGB) == ("conv1", "conv2", "relu2")
    legacy = modelconfig.read_config(files["GRAY"], "Model file", "")
    assert modelconfig.layer_names(legacy) == ("conv1", "flatten", "fc")
    assert modelconfig.input_shapes(RGB) == [(None, None, None, 3)]
    assert modelconfig.input_shapes(GRAY) == [(None, 16, 16, 1)]
    assert modelconfig.layer_names({"class_name": "MyModel", "config": {}}) is None  # left to the backend


def test_a_model_files_layer_is_refused_with_the_message_the_built_network_gives(files):
    checks.network_layers(files["RGB"], ["conv2", "relu2", "preprocess", ""])
    with pytest.raises(DeepRestoreError, match=r"Unknown layer 'nope' for network '.*rgb.keras'. Known layers: "
                                               "preprocess, conv1, conv2, relu2. Run `deeprestore nets"):
        checks.network_layers(files["RGB"], ["nope"])
    with pytest.raises(DeepRestoreError, match=r"--to: Unknown layer 'relu2' for network '.*gray.h5'"):
        checks.network_layers(files["GRAY"], ["relu2"], option="--to")


def test_a_descriptors_input_must_take_gray_32x32_patches(files):
    checks.descriptor(files["DESCRIPTOR"])
    checks.denoiser(files["DESCRIPTOR"])
    with pytest.raises(DeepRestoreError, match=r"takes inputs of shape \(N, None, None, 3\); expected a model of "
                                               r"\(N, 32, 32, 1\) gray patches"):
        checks.descriptor(files["RGB"])


# Bad saved models each command refuses in one line, with what the line says.
BAD_MODELS = [
    (("dream", "--network", "RGB", "--layer", "nope"), "Unknown layer 'nope' for network '"),
    (("invert", "--network", "GRAY", "--layer", "conv1", "--to", "relu9"), "--to: Unknown layer 'relu9'"),
    (("texture", "--network", "MISSING"), "Model file '"),
    (("dream", "--network", "TEXT"), "is not a Keras model file (not a zip archive); expected a Keras model file"),
    (("dream", "--network", "NOWEIGHTS"), "is a zip archive without model.weights.h5"),
    (("style", "--network", "LIST"), "holds a list without a 'config' object"),
    (("dream", "--network", "WEIGHTS"), "holds no model architecture (no model_config: weights only?)"),
    (("describe", "evaluate", "--model", "EMPTY"), "is a folder without descriptor.keras; expected a `describe"),
    (("describe", "evaluate", "--model", "RGB"), "takes inputs of shape (N, None, None, 3); expected"),
    (("describe", "evaluate", "--model", "TEXT"), "Descriptor '"),
    (("describe", "train", "--inputs", "denoised", "--denoiser", "GRAY"), "Denoiser '"),
    (("denoise", "apply", "--model", "EMPTY"), "is a folder without model.keras; expected a `denoise train` run"),
    (("denoise", "apply", "--model", "TWO"), "takes inputs of shape (N, None, None, 2); expected"),
    (("denoise", "apply", "--model", "DESCRIPTOR", "--corruption", "gaussian:0.1"), None),  # a good model gets past
    (("invert", "--method", "learned", "--stack", "EMPTY"), "holds no trained modules (no specs.json)"),
    (("invert", "--method", "learned", "--stack", "STACK", "--network", "vgg16"), "inverts 'tiny', not 'vgg16'"),
    (("invert", "--method", "learned", "--stack", "STACK", "--layer", "relu9"), "Unknown layer 'relu9' for"),
]


def test_bad_saved_models_are_one_line_each_without_a_backend(files, tmp_path):
    """In a fresh interpreter: every model file, saved model and stack run above is refused in one `Error:`
    line with Keras never imported (a good one gets to the next check: its images)."""
    cases = [[files.get(argument, argument) for argument in arguments] for arguments, _ in BAD_MODELS]
    cases[-4] += ["--images", str(tmp_path / "no-image.png")]
    code = ("import json, sys\nfrom click.testing import CliRunner\nfrom deeprestore.cli import cli\n"
            f"runs = {str(tmp_path / 'runs')!r}\n"
            f"results = [CliRunner().invoke(cli, ['--runs', runs, *case]) for case in {cases!r}]\n"
            "print(json.dumps([[result.exit_code, result.output] for result in results]\n"
            "                 + [[name for name in ('keras', 'tensorflow', 'jax') if name in sys.modules]]))\n")
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             cwd=pathlib.Path(__file__).resolve().parent.parent)
    *results, loaded = json.loads(process.stdout.strip().splitlines()[-1])
    assert loaded == [], process.stderr[-500:]
    for (arguments, message), (code, output) in zip(BAD_MODELS, results):
        errors = [line for line in output.splitlines() if line.startswith("Error")]
        message = message or "no-image.png"
        assert code != 0 and len(errors) == 1 and message in errors[0] and "Traceback" not in output, (arguments,
                                                                                                      output)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("config.json"))
