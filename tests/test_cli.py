"""The command line: run directories, errors as one line with an exit code, the nets listing."""

import json
import pathlib

import numpy as np
import pytest
from click.testing import CliRunner

from deeprestore.cli import cli
from deeprestore.losslog import LossLog


@pytest.fixture
def runner():
    return CliRunner()


def invoke(runner, tmp_path, *arguments):
    return runner.invoke(cli, ["--runs", str(tmp_path / "runs"), "--quiet", *arguments], catch_exceptions=False)


TINY_DREAM = ("dream", "--network", "tiny", "--size", "32", "--octaves", "2", "--steps", "3", "--jitter", "2")


def test_dream_writes_a_complete_run_directory(runner, tmp_path):
    result = invoke(runner, tmp_path, *TINY_DREAM)
    assert result.exit_code == 0, result.output
    run = pathlib.Path(result.output.strip().splitlines()[-1])
    assert run.parent == tmp_path / "runs" / "dream"
    assert (run / "status").read_text().strip() == "complete"
    config = json.loads((run / "config.json").read_text())
    assert config["settings"]["network"] == "tiny" and config["seed"] == 0
    assert config["weights"]["source"] == "random" and len(config["weights"]["sha256"]) == 64
    assert config["backend"] and config["device"] and config["versions"]["keras"]
    assert (run / "argv.txt").exists()
    # a plain run is never resumed or joined: its activations stay in memory, and no lock file is left
    assert not [path for path in run.rglob("*") if path.name.startswith("activations.h5")]
    assert {path.name for path in (run / "images").iterdir()} == {"octave_1.png", "octave_2.png", "start.png"}
    assert (run / "dream.png").exists() and (run / "losses" / "losses.png").exists()
    steps = LossLog.read(run / "losses")
    assert len(steps["total"]) == 6 and len(steps["l2.relu2"]) == 6


def test_dream_from_noise_is_reproducible_with_a_seed(runner, tmp_path):
    import imageio.v3 as imageio

    outputs = []
    for _ in range(2):
        result = invoke(runner, tmp_path, *TINY_DREAM, "--start", "noise")
        outputs.append(imageio.imread(pathlib.Path(result.output.strip().splitlines()[-1]) / "dream.png"))
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_dream_raises_the_objective(runner, tmp_path):
    result = invoke(runner, tmp_path, *TINY_DREAM, "--octaves", "1", "--steps", "6")
    values = LossLog.read(pathlib.Path(result.output.strip().splitlines()[-1]) / "losses")["l2.relu2"]
    assert values[-1] > values[0]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (("dream", "--network", "resnet"), "Unknown network 'resnet'; expected one of vgg16, vgg19, alexnet, tiny"),
        (("dream", "--network", "tiny", "--layer", "conv9", "--size", "32"),
         "Unknown layer 'conv9' for network 'tiny'"),
        (("dream", "--images", "missing.png"), "Image 'missing.png' not found"),
        (("dream", "--network", "tiny", "--weights", "nowhere.h5", "--size", "32"),
         "Weights file 'nowhere.h5' not found"),
        (("dream", "--network", "alexnet"), "No weights found for network 'alexnet'"),
        (("nets", "alexnet", "--top", "--size", "100"), "too small"),
    ],
)
def test_user_errors_are_one_line_with_a_nonzero_exit(runner, tmp_path, arguments, message):
    result = invoke(runner, tmp_path, *arguments)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("Error:")]) == 1


def test_a_failed_run_is_not_marked_complete(runner, tmp_path):
    invoke(runner, tmp_path, "dream", "--network", "tiny", "--layer", "conv9", "--size", "32")
    for status in (tmp_path / "runs").glob("dream/*/status"):
        assert status.read_text().startswith("failed")


def test_wrongly_shaped_weights_name_the_layer_and_both_shapes(runner, tmp_path):
    import h5py

    with h5py.File(tmp_path / "bad.h5", "w") as file:
        group = file.create_group("conv1")
        group.create_dataset("conv1/kernel:0", data=np.zeros((5, 5, 3, 8), np.float32))
        group.create_dataset("conv1/bias:0", data=np.zeros((8,), np.float32))
        group.attrs["weight_names"] = ["conv1/kernel:0", "conv1/bias:0"]
        file.attrs["layer_names"] = ["conv1"]
    result = invoke(runner, tmp_path, "dream", "--network", "tiny", "--size", "32",
                    "--weights", str(tmp_path / "bad.h5"))
    assert result.exit_code == 1
    assert "layer 'conv1'" in result.output and "(5, 5, 3, 8)" in result.output and "(3, 3, 3, 8)" in result.output


def test_bad_option_values_are_refused_before_any_work(runner, tmp_path):
    result = invoke(runner, tmp_path, "dream", "--steps", "0")
    assert result.exit_code == 2 and "--steps" in result.output
    assert not (tmp_path / "runs").exists()


def test_nets_lists_every_network(runner, tmp_path):
    result = invoke(runner, tmp_path, "nets")
    assert result.exit_code == 0
    assert [line.split()[0] for line in result.output.splitlines()] == ["vgg16", "vgg19", "alexnet", "tiny"]


def test_nets_lists_layers_with_shapes_and_aliases(runner, tmp_path):
    result = invoke(runner, tmp_path, "nets", "vgg16", "--size", "64x96")
    assert result.exit_code == 0
    lines = {line.split()[1]: line for line in result.output.splitlines()[1:] if line.split()[0].isdigit()}
    assert "64x96x64" in lines["block1_conv1_preact"] and "conv1_1" in lines["block1_conv1_preact"]
    assert "pre-activation" in lines["block1_conv1_preact"]
    # keras.applications' block1_conv1 is after its ReLU; naming 1's ReLU name is an alias of it.
    assert "post-activation" in lines["block1_conv1"] and "relu1_1, block1_relu1" in lines["block1_conv1"]
    assert "block1_conv1 is the ReLU output" in result.output and "block1_conv1_preact" in result.output
    assert "2x3x512" in lines["block5_pool"]


def test_python_m_deeprestore_behaves_like_the_command():
    import subprocess
    import sys

    completed = subprocess.run([sys.executable, "-m", "deeprestore", "--help"], capture_output=True, text=True)
    assert completed.returncode == 0 and "dream" in completed.stdout and "nets" in completed.stdout


def test_dream_over_a_folder_writes_one_item_per_image_and_shards_cover_it(runner, tmp_path):
    from deeprestore.images import save_image

    folder = tmp_path / "inputs"
    for index in range(3):
        save_image(folder / f"photo{index}.png", np.full((32, 32, 3), (index + 1) / 4, np.float32))
    result = invoke(runner, tmp_path, *TINY_DREAM, "--images", str(folder))
    run = pathlib.Path(result.output.strip().splitlines()[-1])
    items = sorted(path.name for path in (run / "items").iterdir())
    assert items == ["000_photo0", "001_photo1", "002_photo2"]
    assert all((run / "items" / item / "dream.png").exists() for item in items)
    assert (run / "items" / items[0] / "losses" / "total.csv").exists()
    markers = {path.stem: json.loads(path.read_text()) for path in (run / "complete").iterdir()}
    assert set(markers) == set(items) and markers["001_photo1"]["octave_sizes"] == [[23, 23], [32, 32]]
    assert json.loads((run / "config.json").read_text())["items"] == items
    names = []
    for index in range(2):
        result = invoke(runner, tmp_path, *TINY_DREAM, "--images", str(folder), "--shard", f"{index}/2")
        names += [path.name for path in (pathlib.Path(result.output.strip().splitlines()[-1]) / "items").iterdir()]
    assert sorted(names) == items


def test_help_of_every_command_loads_no_backend():
    import subprocess
    import sys

    # One interpreter runs every `--help` in turn, so the check costs one start-up, not twenty.
    script = """
import sys, time
import click
from deeprestore.cli import cli

def paths(command, prefix=()):
    yield prefix
    if isinstance(command, click.Group):
        for name, subcommand in command.commands.items():
            yield from paths(subcommand, prefix + (name,))

start = time.perf_counter()
for path in paths(cli):
    try:
        cli([*path, '--help'], prog_name='deeprestore')
    except SystemExit as exit:
        assert exit.code == 0, (path, exit.code)
    loaded = [name for name in ('keras', 'tensorflow', 'jax') if name in sys.modules]
    assert not loaded, (path, loaded)
print('helps', len(list(paths(cli))), 'seconds', time.perf_counter() - start)
"""
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "helps 17" in completed.stdout.splitlines()[-1]
    assert float(completed.stdout.split()[-1]) < 30  # generous: the point is no framework, not a benchmark
