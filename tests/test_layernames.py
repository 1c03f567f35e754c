"""Tests for layer naming 2 (keras.applications' names mean its tensors) and for reading what earlier
versions wrote under naming 1 with its meaning: run configs on `--resume`, a named run's resubmission and
`summary`, item records, and saved stacks."""

import json

import pytest
from click.testing import CliRunner

from deeprestore import layernames
from deeprestore.cli import cli
from deeprestore.errors import DeepRestoreError
from deeprestore.rundir import RunDir


def old_run(tmp_path, command, settings, folder="old", **extra):
    """A run directory `<tmp_path>/<command>/<folder>` as a version before naming 2 left it: its
    config.json has no `layer_naming`."""
    path = tmp_path / command / folder
    (path / "losses").mkdir(parents=True)
    (path / "images").mkdir()
    config = {"settings": settings, "seed": 3, "command": command, "created": "2026-01-01T00:00:00+00:00",
              "deeprestore_version": "0.1.0", **extra}
    (path / "config.json").write_text(json.dumps(config))
    (path / "status").write_text("complete\n")
    return path


def invoke(tmp_path, *arguments):
    return CliRunner().invoke(cli, ["--runs", str(tmp_path / "runs"), "--quiet", *arguments])


@pytest.mark.parametrize("old, new", [
    ("block4_conv3", "block4_conv3_preact"), ("block4_conv3:0.5", "block4_conv3_preact:0.5"),
    ("block3_conv3:0.01:3", "block3_conv3_preact:0.01:3"), ("fc1", "fc6"), ("predictions:281", "fc8:281"),
    ("block4_relu3", "block4_relu3"), ("conv4_2", "conv4_2"), ("relu4_2:12", "relu4_2:12"), ("pool1", "pool1"),
    ("image", "image"),
])
def test_a_name_typed_under_naming_1_is_spelled_for_the_same_tensor(old, new):
    assert layernames.upgrade_term(old) == new


def test_canonical_names_and_loss_names_of_naming_1_follow_their_layers():
    assert layernames.upgrade_canonical("block2_conv2") == "block2_conv2_preact"
    assert layernames.upgrade_canonical("block2_relu2") == "block2_conv2"
    assert layernames.upgrade_loss_name("l2.block4_relu3") == "l2.block4_conv3"
    assert layernames.upgrade_loss_name("channel.block4_conv3.12") == "channel.block4_conv3_preact.12"
    assert layernames.upgrade_loss_name("class.281") == "class.281"


def test_an_old_vgg_config_is_read_with_its_old_meaning_and_a_new_config_records_its_naming(tmp_path):
    settings = {"network": "vgg16", "layer": "block2_conv2", "to": "", "layers": ["block4_conv3:0.5", "block5_relu1"],
                "channels": ["fc2:7"], "images": "block1_conv1.png"}
    path = old_run(tmp_path, "dream", settings)

    config = RunDir.open(path).config

    assert config["settings"] == {**settings, "layer": "block2_conv2_preact",
                                  "layers": ["block4_conv3_preact:0.5", "block5_relu1"], "channels": ["fc7:7"]}
    assert config["layer_naming"] == 2 and config["layer_naming_read_from"] == 1
    new = RunDir.create(tmp_path / "runs", "dream", {"settings": {"network": "vgg16", "layer": "block2_conv2"}},
                        argv=[])
    stored = json.loads((new.path / "config.json").read_text())
    assert stored["layer_naming"] == layernames.LAYER_NAMING and stored["settings"]["layer"] == "block2_conv2"
    assert RunDir.open(new.path).config["settings"]["layer"] == "block2_conv2"


def test_the_canonical_names_an_old_recipe_recorded_are_renamed_with_their_layers(tmp_path):
    path = old_run(tmp_path, "invert", {"network": "vgg19", "layer": "relu3_4", "to": "block1_conv2"},
                   layer="block3_relu4", to="block1_conv2", content_layer="block4_relu2")

    config = RunDir.open(path).config

    assert (config["layer"], config["to"], config["content_layer"]) == (
        "block3_conv4", "block1_conv2_preact", "block4_conv2")
    assert config["settings"]["layer"] == "relu3_4" and config["settings"]["to"] == "block1_conv2_preact"


def test_old_configs_of_other_networks_keep_their_names(tmp_path):
    settings = {"network": "tiny", "layer": "conv2", "layers": ["block1_conv1"]}  # a tiny name, never renamed

    config = RunDir.open(old_run(tmp_path, "invert", settings)).config

    assert config["settings"] == settings and config["layer_naming"] == 2


def test_a_stack_configs_modules_layers_and_scales_are_renamed_with_their_layers(tmp_path):
    path = old_run(tmp_path, "stack", {"network": "vgg16", "source": "pool1", "target": "image"},
                   modules=[{"name": "pool1_to_conv1_2", "input": "block1_pool", "target": "block1_conv2"}],
                   layers=["block1_pool", "block1_conv2", "block1_relu2"], scales={"block1_conv2": 2.0})

    config = RunDir.open(path).config

    assert config["modules"] == [{"name": "pool1_to_conv1_2", "input": "block1_pool", "target": "block1_conv2_preact"}]
    assert config["layers"] == ["block1_pool", "block1_conv2_preact", "block1_conv2"]
    assert config["scales"] == {"block1_conv2_preact": 2.0}


def test_resume_compares_an_old_runs_layer_with_its_old_meaning(tmp_path):
    path = old_run(tmp_path, "stack", {"network": "vgg16", "source": "block1_conv2", "target": "image",
                                       "devices": 1})
    before = (path / "config.json").read_bytes()

    renamed = invoke(tmp_path, "stack", "--resume", str(path), "--from", "block1_conv2")
    # Its own layer in today's spelling passes the comparison; --devices 3 then stops it before any work.
    same = invoke(tmp_path, "stack", "--resume", str(path), "--from", "block1_conv2_preact", "--devices", "3")

    assert renamed.exit_code == 1
    assert "--from block1_conv2 differs from the run's stored block1_conv2_preact" in renamed.output
    assert same.exit_code == 1 and "--devices 3" in same.output and "--from" not in same.output
    assert (path / "config.json").read_bytes() == before


def test_a_named_run_of_naming_1_refuses_a_task_whose_layer_name_now_means_another_tensor(tmp_path):
    old_run(tmp_path / "runs", "invert", {"network": "vgg16", "layer": "block3_conv3"}, folder="job", name="job")
    refused = r"settings\.layer='block3_conv3_preact'.*settings\.layer='block3_conv3'"
    with pytest.raises(DeepRestoreError, match=refused):
        RunDir.join(tmp_path / "runs", "invert", "job", {"settings": {"network": "vgg16", "layer": "block3_conv3"},
                                                         "seed": 3}, argv=[])

    joined = RunDir.join(tmp_path / "runs", "invert", "job",
                         {"settings": {"network": "vgg16", "layer": "block3_conv3_preact"}, "seed": 3}, argv=[])

    assert joined.config["settings"]["layer"] == "block3_conv3_preact"


def test_summary_of_an_old_run_names_each_loss_by_the_tensor_it_measured(tmp_path):
    path = old_run(tmp_path, "dream", {"network": "vgg16", "layers": ["block4_conv3", "block4_relu3"]},
                   items=["000_a", "001_b"])
    (path / "complete").mkdir()
    (path / "complete" / "000_a.json").write_text(json.dumps(
        {"name": "000_a", "position": 0, "metrics": {"l2.block4_conv3": 1.0, "l2.block4_relu3": 2.0}}))
    RunDir(path).complete_item("001_b", {"position": 1, "metrics": {"l2.block4_conv3_preact": 3.0,
                                                                    "l2.block4_conv3": 4.0}})

    result = invoke(tmp_path, "summary", str(path))

    assert result.exit_code == 0, result.output
    summary = json.loads((path / "summary.json").read_text())
    assert summary["columns"] == ["l2.block4_conv3_preact", "l2.block4_conv3"]
    assert summary["mean"] == {"l2.block4_conv3_preact": 2.0, "l2.block4_conv3": 3.0}


def test_a_stack_saved_under_naming_1_loads_with_its_modules_targeting_the_convolutions(tmp_path):
    from deeprestore.inversion.specs import check_specs, default_specs
    from deeprestore.inversion.stack import SPECS_FILE, Stack
    from deeprestore.networks import create_network

    network = create_network("vgg16", weights="random")
    resolved = check_specs(network, default_specs(network, "conv1_2"), (8, 8))
    Stack.build(network, resolved, scales={"block1_conv2_preact": 2.0, "block1_conv1_preact": 3.0}).save(
        tmp_path, (8, 8))
    saved = json.loads((tmp_path / SPECS_FILE).read_text())
    assert saved["layer_naming"] == 2
    assert [(module["input"], module["target"]) for module in saved["modules"]] == [
        ("block1_conv2_preact", "block1_conv1_preact"), ("conv1_2_to_conv1_1", "image")]
    # As naming 1 wrote it: the convolutions under their keras.applications names, no layer_naming.
    del saved["layer_naming"]
    saved["modules"][0].update(input="block1_conv2", target="block1_conv1")
    saved["scales"] = {"block1_conv2": 2.0, "block1_conv1": 3.0}
    (tmp_path / SPECS_FILE).write_text(json.dumps(saved))

    loaded = Stack.load(network, tmp_path)

    assert loaded.resolved.input_layer["conv1_2_to_conv1_1"] == "block1_conv2_preact"
    assert loaded.resolved.target_layer["conv1_2_to_conv1_1"] == "block1_conv1_preact"
    assert loaded.scales == {"block1_conv2_preact": 2.0, "block1_conv1_preact": 3.0}
