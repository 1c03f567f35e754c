"""Stack training: each module learns, joint training optimises the weighted sum, runs resume after a
kill, and the command writes a complete run directory."""

import json
import pathlib

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from deeprestore import training
from deeprestore.cli import cli
from deeprestore.datasets import ActivationStore, BlockShuffledBatches, ImageDataset
from deeprestore.inversion.specs import check_specs, default_specs, parse_spec
from deeprestore.inversion.stack import Stack, layer_scales
from deeprestore.losslog import LossLog
from deeprestore.recipes import stack as stack_recipe

SIZE = (16, 16)
TINY_STACK = ("stack", "--network", "tiny", "--weights", "random", "--from", "pool2", "--size", "16",
              "--batch-size", "4", "--validation", "6")


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny):
    """The bundled images at 16x16 and tiny's activations of them, shared by this file's tests."""
    directory = tmp_path_factory.mktemp("data")
    dataset = ImageDataset.build(directory / "images.h5", "bundled", SIZE)
    store = ActivationStore(directory / "activations", dataset, tiny)
    store.ensure(("preprocess", "conv1", "pool1", "conv2", "pool2"))
    return directory, dataset, store.load(("preprocess", "conv1", "pool1", "conv2", "pool2"))


def batches_for(stack, mode, values, batch_size=8):
    inputs = [stack.resolved.input_layer[name] for name in stack.names
              if mode == "separate" or not stack.resolved.takes_module(name)]

    def batches(step):
        chosen = np.sort(np.random.default_rng(step).choice(len(values["conv1"]), batch_size, replace=False))
        return ({layer: values[layer][chosen] for layer in dict.fromkeys(inputs)},
                {name: values[stack.resolved.target_layer[name]][chosen] for name in stack.names})

    return batches


def train_tiny(tiny, values, tmp_path, mode, chain, steps, learning_rate=3e-3, scales=None):
    stack = Stack.build(tiny, check_specs(tiny, chain, SIZE), scales=scales)
    model = stack.compile(stack.training_model(mode), mode, learning_rate)
    training.train(model, batches_for(stack, mode, values), training.Schedule(steps, checkpoint_every=steps),
                   training.Storage(tmp_path / "checkpoints", tmp_path / "losses"))
    return stack, LossLog.read(tmp_path / "losses")


def test_a_few_steps_lower_each_modules_loss(tiny, data, tmp_path):
    _, losses = train_tiny(tiny, data[2], tmp_path, "separate", default_specs(tiny, "pool2"), steps=40)
    for name in ("pool2_to_conv2", "conv2_to_pool1", "pool1_to_conv1", "conv1_to_image"):
        values = losses[f"train.{name}_loss"]
        assert values[-5:].mean() < 0.8 * values[:5].mean(), name


def test_joint_training_optimises_the_weighted_sum_and_logs_each_term(tiny, data, tmp_path):
    chain = default_specs(tiny, "pool1")  # pool1_to_conv1, conv1_to_image
    chain = [parse_spec({**chain[0].as_dict(), "weight": None}),  # the automatic weight, then a given one
             parse_spec({**chain[1].as_dict(), "weight": 2.0})]
    scales = layer_scales(data[2])
    stack, losses = train_tiny(tiny, data[2], tmp_path, "joint", chain, steps=30, scales=scales)
    automatic = 1.0 / scales["conv1"] ** 2
    assert stack.loss_weights("joint") == {"pool1_to_conv1": pytest.approx(automatic), "conv1_to_image": 2.0}
    first, second = losses["train.pool1_to_conv1_loss"], losses["train.conv1_to_image_loss"]
    np.testing.assert_allclose(losses["train.loss"], automatic * first + 2.0 * second, rtol=1e-4)
    assert losses["train.loss"][-5:].mean() < 0.8 * losses["train.loss"][:5].mean()
    # The image module reads the first module's output, not the true conv1 activations.
    assert [tensor.name for tensor in stack.training_model("joint").inputs] == ["pool1"]


def test_null_joint_weights_measure_each_loss_in_its_layers_normalised_units(tiny, data):
    scales = layer_scales(data[2])
    default = Stack.build(tiny, check_specs(tiny, default_specs(tiny, "pool2"), SIZE), scales=scales)
    assert set(default.loss_weights("joint").values()) == {1.0}
    specs = [parse_spec({**spec.as_dict(), "weight": None}) for spec in default_specs(tiny, "pool2")]
    stack = Stack.build(tiny, check_specs(tiny, specs, SIZE), scales=scales)
    weights = stack.loss_weights("joint")
    for name in stack.names:
        target = stack.resolved.target_layer[name]
        assert weights[name] == pytest.approx(1.0 / scales[target] ** 2), name
    # Each weighted term is then the error relative to its layer's mean square: a module that outputs
    # zeros scores exactly 1 on every layer, however large that layer's values.
    for name in stack.names:
        target = data[2][stack.resolved.target_layer[name]]
        assert weights[name] * np.mean(np.square(target, dtype=np.float64)) == pytest.approx(1.0, rel=1e-5)


def test_modules_out_of_the_loss_are_logged_with_weight_zero(tiny):
    chain = default_specs(tiny, "pool1")
    chain[0] = parse_spec({**chain[0].as_dict(), "in_loss": False})
    stack = Stack.build(tiny, check_specs(tiny, chain, SIZE))
    assert stack.loss_weights("joint") == {"pool1_to_conv1": 0.0, "conv1_to_image": 1.0}
    assert stack.loss_weights("end-to-end") == {"pool1_to_conv1": 0.0, "conv1_to_image": 1.0}
    assert stack.loss_weights("separate") == {"pool1_to_conv1": 1.0, "conv1_to_image": 1.0}


def test_activation_reads_of_any_rows_equal_the_loaded_cache(tiny, data):
    directory, dataset, loaded = data
    store = ActivationStore(directory / "activations", dataset, tiny)
    indices = np.array([0, 1, 2, 5, 9, 10, 11])  # three runs of consecutive rows
    read = store.read(("conv1", "pool2"), indices[::-1])
    for layer in ("conv1", "pool2"):
        np.testing.assert_array_equal(read[layer], loaded[layer][indices])
    assert store.read(("conv1",), [])["conv1"].shape == (0, *loaded["conv1"].shape[1:])


def test_block_shuffled_batches_read_few_slices_and_depend_only_on_the_step():
    values = np.arange(100) * 10
    slices = []

    def read(indices):
        slices.append(len(np.split(indices, np.flatnonzero(np.diff(indices) != 1) + 1)))
        return {"rows": values[indices]}

    indices = np.delete(np.arange(100), [5, 50, 51])  # 97 training rows, with gaps
    batches = BlockShuffledBatches(read, indices, batch_size=8, block_rows=4, chunk_steps=3, seed=1)
    served = [batches(step)["rows"] // 10 for step in range(30)]
    assert all(len(batch) == 8 for batch in served)
    first_epoch = np.concatenate(served[:12])  # 97 // 8 = 12 steps: 96 distinct training rows
    assert len(set(first_epoch)) == 96 and set(first_epoch) <= set(indices)
    assert not np.array_equal(np.concatenate(served[12:24]), first_epoch)  # each epoch shuffles anew
    # One read per chunk of 3 steps (10 in 30 steps), each of 6 blocks of 4 rows: at most 6 slices, plus
    # one for each gap a block straddles.
    assert len(slices) == 10 and max(slices) <= 8
    # A fresh reader (a resumed run) serves the same batch at any step.
    resumed = BlockShuffledBatches(read, indices, batch_size=8, block_rows=4, chunk_steps=3, seed=1)
    for step in (29, 7, 13, 0):
        np.testing.assert_array_equal(resumed(step)["rows"] // 10, served[step])


def invoke(tmp_path, *arguments):
    result = CliRunner().invoke(cli, ["--runs", str(tmp_path / "runs"), "--quiet", *arguments], catch_exceptions=False)
    return result, pathlib.Path(result.output.strip().splitlines()[-1]) if result.exit_code == 0 else None


@pytest.fixture(scope="module")
def stack_run(tmp_path_factory, data):
    tmp_path = tmp_path_factory.mktemp("cli")
    result, run = invoke(tmp_path, *TINY_STACK, "--steps", "6", "--validate-every", "3", "--checkpoint-every", "3",
                         "--channel-losses", "--data-cache", str(data[0]))
    assert result.exit_code == 0, result.output
    return run


def test_stack_writes_a_complete_run_directory(stack_run):
    assert (stack_run / "status").read_text().strip() == "complete"
    config = json.loads((stack_run / "config.json").read_text())
    assert config["settings"]["mode"] == "separate" and len(config["modules"]) == 4
    assert config["dataset"]["validation"] == 6 and config["dataset"]["train"] == 94
    names = {path.name for path in (stack_run / "modules").iterdir()}
    assert names == {"specs.json"} | {f"{name}.weights.h5" for name in
                                      ("pool2_to_conv2", "conv2_to_pool1", "pool1_to_conv1", "conv1_to_image")}
    figures = {path.name for path in (stack_run / "images").iterdir()}
    assert figures == {"validation-000003.png", "validation-000006.png"}
    losses = LossLog.read(stack_run / "losses")
    assert len(losses["train.conv1_to_image_loss"]) == 6 and len(losses["validation.conv1_to_image_loss"]) == 2
    assert len(losses["train.conv1_to_image_channel_002"]) == 6 and "train.pool2_to_conv2_channel_015" in losses
    assert (stack_run / "losses" / "modules.png").exists()
    assert (stack_run / "losses" / "channels-conv1_to_image.png").exists()
    measures = json.loads((stack_run / "metrics.json").read_text())
    assert measures["validation_images"] == 6 and set(measures["mean"]) == {"mse", "psnr", "ssim"}
    assert (stack_run / "reconstructions.png").exists()


def test_fine_tuning_starts_from_a_runs_modules(stack_run, tmp_path, data):
    result, run = invoke(tmp_path, *TINY_STACK, "--mode", "fine-tune", "--init", str(stack_run), "--steps", "1",
                         "--data-cache", str(data[0]))
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["settings"]["fine_tune_learning_rate"] == 1e-4
    result, _ = invoke(tmp_path, *TINY_STACK, "--mode", "fine-tune", "--steps", "1", "--data-cache", str(data[0]))
    assert result.exit_code == 1 and "needs --init RUN" in result.output


@pytest.mark.parametrize("arguments, message", [
    (("--from", "relu1"), "is not the output of an operation modules invert"),
    (("--validation", "100"), "Cannot hold out 100 validation images from 100"),
    (("--images", "nowhere"), "Image 'nowhere' not found"),
])
def test_stack_user_errors_are_one_line(tmp_path, arguments, message):
    result = CliRunner().invoke(cli, ["--runs", str(tmp_path / "runs"), "--quiet", *TINY_STACK, "--steps", "1",
                                      *arguments])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def module_weights(run):
    weights = {}

    def collect(prefix):
        return lambda name, item: weights.__setitem__(f"{prefix}/{name}", item[()]) \
            if isinstance(item, h5py.Dataset) else None

    for path in sorted((run / "modules").glob("*.weights.h5")):
        with h5py.File(path, "r") as file:
            file.visititems(collect(path.name))
    return weights


def test_a_stack_reading_hdf5_in_blocks_resumes_to_the_same_weights(tmp_path, data, monkeypatch):
    monkeypatch.setattr(stack_recipe, "IN_MEMORY_BYTES", 0)  # as if the cache did not fit in memory
    common = ["--checkpoint-every", "3", "--validate-every", "0", "--data-cache", str(data[0])]
    _, stopped = invoke(tmp_path / "stopped", *TINY_STACK, "--steps", "3", *common)
    result, resumed = invoke(tmp_path / "stopped", "stack", "--resume", str(stopped), "--steps", "8")
    assert result.exit_code == 0 and resumed == stopped
    assert json.loads((stopped / "config.json").read_text())["batching"] == "block-shuffled"
    _, straight = invoke(tmp_path / "straight", *TINY_STACK, "--steps", "8", *common)
    left, right = module_weights(straight), module_weights(stopped)
    assert left.keys() == right.keys() and left
    for name in left:
        np.testing.assert_allclose(left[name], right[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_resume_refuses_changed_settings(stack_run, tmp_path):
    result = CliRunner().invoke(cli, ["--runs", str(tmp_path), "stack", "--resume", str(stack_run), "--size", "32"])
    assert result.exit_code == 1 and "--size 32 differs from the run's stored 16" in result.output
