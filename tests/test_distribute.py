"""Data-parallel training on two virtual CPU devices: the same updates as one device on the whole batch.

The device count is fixed when a backend starts, so each test runs in a fresh Python process that
splits the CPU into two devices first (TensorFlow: logical devices; JAX: an XLA flag).
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

TWO_TENSORFLOW_DEVICES = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
"""

# Two steps of Adam on 1 device and on 2, a run checkpointed on 2 devices resumed on 1, and the errors. The
# model has no batch normalisation (per-device statistics differ) and no dropout (per-device seeds).
# `Probe` records the batch each replica's trace sees, so that a "parallel" step handing every
# device the whole batch fails too. As in stack training, one array of a batch is an input and the
# target of another output; it is 64-byte aligned, the arrays tf.data does not copy, so that a batch
# whose leaves share memory corrupts the two-device step (see `training.separate_arrays`).
EQUALITY_SCRIPT = """
import json, pathlib, sys, tempfile
import keras, numpy as np
from deeprestore import training
from deeprestore.backend import DataParallel
from deeprestore.errors import DeepRestoreError

seen = []

class Probe(keras.layers.Layer):
    def call(self, inputs, training=None):
        if training:  # the training steps' traces (validation's test steps are checked by their values)
            seen.append(inputs.shape[0])
        return inputs

def make_model(parallel):
    with parallel.scope():
        keras.utils.set_random_seed(1)
        inputs = {"values": keras.Input((6,), name="values"), "other": keras.Input((6,), name="other")}
        hidden = keras.layers.Dense(8, activation="relu")(Probe()(keras.layers.Rescaling(0.5)(inputs["values"])))
        outputs = {"out": keras.layers.Dense(2, name="out")(hidden),
                   "echo": keras.layers.Dense(6, name="echo")(inputs["other"])}
        model = keras.Model(inputs, outputs)
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss={"out": "mse", "echo": "mse"},
                      metrics={"out": ["mae"], "echo": []})
    return model

def aligned(values):
    buffer = np.empty(values.size + 16, values.dtype)
    start = (-buffer.ctypes.data % 64) // values.itemsize
    array = buffer[start:start + values.size].reshape(values.shape)
    array[...] = values
    return array

def batches(step):
    rng = np.random.default_rng(step)
    inputs = aligned(rng.normal(size=(8, 6)).astype("float32"))
    return ({"values": inputs, "other": inputs[:, ::-1].copy()},
            {"out": np.stack([inputs[:, 0] - inputs[:, 1], inputs[:, 2] * 0.5], axis=1), "echo": inputs})

def validation():  # a last batch of 3, which splits over no number of devices
    return [batches(100), keras.tree.map_structure(lambda values: values[:3], batches(101))]

def run(parallel, steps, folder, resume=False, model=None):
    model = model or make_model(parallel)
    predicted = []
    predict = training.Every(0, lambda step: predicted.append(model.predict(validation()[1][0], verbose=0)), steps)
    validated = training.train(model, batches, training.Schedule(steps=steps, checkpoint_every=2),
                               training.Storage(pathlib.Path(folder) / "checkpoints", pathlib.Path(folder) / "losses",
                                                resume),
                               validation=validation, parallel=parallel, callbacks=[predict])
    losses = (pathlib.Path(folder) / "losses" / "train.loss.csv").read_text().split()[1:]
    odd.append([validated, {name: values.tolist() for name, values in predicted[-1].items()}])
    return model, [float(line.split(",")[1]) for line in losses]

odd = []

one, two = DataParallel(1), DataParallel(2)
folder = tempfile.mkdtemp()
single, single_losses = run(one, 2, folder + "/one")
seen.clear()
double, double_losses = run(two, 2, folder + "/two")
two_device_batches = [size for size in seen if isinstance(size, int)]
resumed, _ = run(one, 4, folder + "/two", resume=True)
straight, _ = run(one, 4, folder + "/straight")
errors = []
for attempt in (lambda: DataParallel(3), lambda: two.check_batch(7)):
    try:
        attempt()
    except DeepRestoreError as error:
        errors.append(str(error))
difference = lambda a, b: max(float(np.abs(np.asarray(x.value) - np.asarray(y.value)).max())
                              for x, y in zip(a.variables, b.variables))
print(json.dumps({"devices": list(two.devices), "replicas": two.replicas, "batches": two_device_batches,
                  "losses": [single_losses, double_losses], "weights": difference(single, double),
                  "optimizer": difference(single.optimizer, double.optimizer),
                  "resumed": difference(resumed, straight), "moved": difference(single, straight), "odd": odd[:2],
                  "all": DataParallel("all").replicas, "errors": errors}))
"""


def run_script(script, environment=None, timeout=240):
    completed = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], check=False, capture_output=True,
                               text=True, env={**os.environ, **(environment or {})}, timeout=timeout)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout.strip().splitlines()


def check_equality(result):
    assert result["replicas"] == 2 and len(result["devices"]) == 2
    np.testing.assert_allclose(result["losses"][1], result["losses"][0], rtol=1e-5)
    assert result["weights"] < 1e-6 and result["optimizer"] < 1e-6
    assert result["moved"] > 1e-3  # the comparisons are between weights that training changed
    assert result["resumed"] < 1e-6  # a 2-device checkpoint continues on 1 device as if never moved
    assert result["all"] == 2
    # validation with a last batch of 3 and a prediction of 3 in a callback, on 2 devices as on one
    (one_validated, one_predicted), (two_validated, two_predicted) = result["odd"]
    assert set(one_validated) == {"loss", "out_loss", "echo_loss", "out_mae"}
    np.testing.assert_allclose([two_validated[name] for name in one_validated], list(one_validated.values()), rtol=1e-5)
    for name, values in one_predicted.items():
        np.testing.assert_allclose(two_predicted[name], values, rtol=1e-5, atol=1e-6)
    too_many, odd_batch = result["errors"]
    assert "--devices 3" in too_many and "found 2" in too_many
    assert "--batch-size 7" in odd_batch and "multiple of 2" in odd_batch


@pytest.mark.slow  # test_multi_process's TensorFlow pair checks one process of four devices against two processes
def test_two_tensorflow_devices_give_the_update_of_one_on_the_whole_batch():
    result = json.loads(run_script(TWO_TENSORFLOW_DEVICES + EQUALITY_SCRIPT)[-1])
    check_equality(result)
    # each replica traced its half of the batch of 8 (1: the one-example step that builds the state)
    assert 4 in result["batches"] and set(result["batches"]) <= {1, 4}


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
def test_two_jax_devices_give_the_update_of_one_on_the_whole_batch():
    environment = {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
                   "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    check_equality(json.loads(run_script(EQUALITY_SCRIPT, environment)[-1]))


# The training commands on two devices, a stack run resumed on one, and a batch that does not split.
CLI_SCRIPT = """
import json, pathlib, sys
from click.testing import CliRunner
from deeprestore.cli import cli

def invoke(*arguments):
    result = CliRunner().invoke(cli, ["--runs", sys.argv[1], "--quiet", *arguments])
    return result.exit_code, result.output.strip().splitlines()[-1]

def config(run):
    return json.loads((pathlib.Path(run) / "config.json").read_text())

tiny_stack = ("stack", "--network", "tiny", "--weights", "random", "--from", "pool2", "--size", "16",
              "--validation", "6", "--batch-size", "4", "--validate-every", "0", "--checkpoint-every", "2")
tiny_denoise = ("denoise", "train", "--patch-size", "16", "--batch-size", "4", "--validation-batches", "1",
                "--test-size", "48", "--steps", "2", "--no-baselines")
stack_code, stack = invoke(*tiny_stack, "--steps", "2", "--devices", "2")
two_devices = config(stack)["devices"]
resume_code, resumed = invoke("stack", "--resume", stack, "--steps", "3", "--devices", "1")
denoise_code, denoised = invoke(*tiny_denoise, "--devices", "2")
odd_code, odd = invoke(*tiny_denoise, "--batch-size", "5", "--devices", "2")
print(json.dumps({
    "codes": [stack_code, resume_code, denoise_code, odd_code], "odd": odd,
    "stack": [two_devices, config(stack)["devices"], config(stack)["settings"]["devices"],
              (pathlib.Path(stack) / "status").read_text().strip(),
              json.loads((pathlib.Path(stack) / "checkpoints" / "state.json").read_text())["step"]],
    "denoise": [config(denoised)["devices"], (pathlib.Path(denoised) / "model.keras").is_file()]}))
"""


def test_training_commands_run_on_two_devices_and_resume_on_one(tmp_path):
    completed = subprocess.run([sys.executable, "-c", TWO_TENSORFLOW_DEVICES + CLI_SCRIPT, str(tmp_path / "runs")],
                               check=False, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["codes"] == [0, 0, 0, 1]
    assert "--batch-size 5 does not split evenly over 2 devices" in result["odd"]
    assert result["stack"] == [["CPU:0", "CPU:1"], ["cpu"], 1, "complete", 3]
    assert result["denoise"] == [["CPU:0", "CPU:1"], True]
