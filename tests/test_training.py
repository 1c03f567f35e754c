"""The training path: checkpoints, exact resuming (also after a kill), signals, logs."""

import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import h5py
import keras
import numpy as np
import pytest

from deeprestore import training
from deeprestore.errors import DeepRestoreError
from deeprestore.losslog import LossLog

# A small model with batch norm and dropout, so that statistics and seed state must be restored too.
MODEL_SOURCE = textwrap.dedent("""
    import keras, numpy as np

    def make_model():
        keras.utils.set_random_seed(1)
        inputs = keras.Input((6,))
        x = keras.layers.Dense(8, activation="relu")(inputs)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Dropout(0.3, seed=2)(x)
        model = keras.Model(inputs, keras.layers.Dense(2)(x))
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
        return model

    def batches(step):
        rng = np.random.default_rng(step)
        inputs = rng.normal(size=(16, 6)).astype("float32")
        return inputs, np.stack([inputs[:, 0] - inputs[:, 1], inputs[:, 2] * 0.5], axis=1)
""")
namespace = {}
exec(MODEL_SOURCE, namespace)
make_model, batches = namespace["make_model"], namespace["batches"]


def weights_of(model):
    return [np.asarray(variable.value) for variable in model.variables]


def test_training_lowers_the_loss_and_logs_every_step(tmp_path):
    model = make_model()
    training.train(model, batches, training.Schedule(steps=30, checkpoint_every=10),
                   training.Storage(tmp_path / "ck", tmp_path / "losses"))
    values = LossLog.read(tmp_path / "losses")["train.loss"]
    assert len(values) == 30 and values[-5:].mean() < values[:5].mean()


def test_step_batches_copy_apart_only_the_arrays_that_share_memory():
    layer = np.arange(48, dtype=np.float32).reshape(2, 4, 6)
    other = np.ones((2, 3), np.float32)
    # one array as an input and a target (stack), a view of it, and an array of its own
    inputs, targets = training.StepBatches(lambda step: ({"a": layer, "b": other}, {"c": layer, "d": layer[:, 1:]}),
                                           0, 1)[0]
    assert inputs["a"] is layer and inputs["b"] is other  # the first user keeps the array: nothing copied
    arrays = [inputs["a"], inputs["b"], targets["c"], targets["d"]]
    assert not any(np.shares_memory(first, second) for index, first in enumerate(arrays) for second in arrays[:index])
    np.testing.assert_array_equal(targets["c"], layer)
    np.testing.assert_array_equal(targets["d"], layer[:, 1:])


def test_fit_reads_every_step_batch_once_in_order():
    from deeprestore import backend

    def batches(step):
        return {"x": np.full((2, 3), step, np.float32)}, np.full((2, 1), -step, np.float32)

    steps = training.StepBatches(batches, 3, 8)
    data = backend.fit_data(steps)
    read = list(data.as_numpy_iterator()) if backend.name() == "tensorflow" else [steps[i] for i in range(len(data))]
    assert len(read) == 5
    for step, (inputs, targets) in zip(range(3, 8), read):
        np.testing.assert_array_equal(inputs["x"], batches(step)[0]["x"])
        np.testing.assert_array_equal(targets, batches(step)[1])


def test_a_checkpoint_restores_model_and_optimiser_state(tmp_path):
    model = make_model()
    training.train(model, batches, training.Schedule(steps=5, checkpoint_every=5), training.Storage(tmp_path))
    restored = make_model()
    state = training.load_checkpoint(restored, tmp_path)
    assert state["step"] == 5
    for left, right in zip(weights_of(model), weights_of(restored)):
        np.testing.assert_array_equal(left, right)
    for left, right in zip(model.optimizer.variables, restored.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(left.value), np.asarray(right.value))


def test_resuming_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    straight = make_model()
    training.train(straight, batches, training.Schedule(steps=20, checkpoint_every=5),
                   training.Storage(tmp_path / "a"))
    first = make_model()
    training.train(first, batches, training.Schedule(steps=10, checkpoint_every=5), training.Storage(tmp_path / "b"))
    resumed = make_model()
    training.train(resumed, batches, training.Schedule(steps=20, checkpoint_every=5),
                   training.Storage(tmp_path / "b", resume=True))
    for left, right in zip(weights_of(straight), weights_of(resumed)):  # bit for bit, dropout's seed state too
        np.testing.assert_array_equal(left, right)


def test_checkpoints_keep_the_last_and_every_nth(tmp_path):
    training.train(make_model(), batches, training.Schedule(steps=14, checkpoint_every=2, keep_every=6),
                   training.Storage(tmp_path))
    assert sorted(path.name for path in tmp_path.glob("step-*")) == [
        "step-00000006.weights.h5", "step-00000012.weights.h5", "step-00000014.weights.h5"]
    assert training.read_state(tmp_path)["file"] == "step-00000014.weights.h5"


def test_checkpoints_are_keyed_by_variable_path(tmp_path):
    model = make_model()
    training.train(model, batches, training.Schedule(steps=2, checkpoint_every=2), training.Storage(tmp_path))
    with h5py.File(tmp_path / "step-00000002.weights.h5", "r") as file:
        keys = set()
        file.visititems(lambda key, item: keys.add(key) if isinstance(item, h5py.Dataset) else None)
    assert {f"model/{variable.path}" for variable in model.variables} <= keys
    assert any("seed_generator_state" in key for key in keys)  # dropout's, which save_weights leaves out
    assert {f"optimizer/{variable.path}" for variable in model.optimizer.variables} <= keys


def test_tensorboard_events_hold_every_logged_value_and_the_images(tmp_path):
    import tensorflow as tf

    samples = np.random.default_rng(0).random((2, 4, 4, 3)).astype("float32")
    board = training.TensorBoardCallback(tmp_path / "events", 3, 6, images=lambda: {"samples": samples})
    training.train(make_model(), batches, training.Schedule(steps=6, checkpoint_every=3, validate_every=3),
                   training.Storage(tmp_path / "ck"), validation=lambda: [batches(100)], callbacks=[board])
    steps = {}
    for path in (tmp_path / "events").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    assert steps["train/loss"] == [1, 2, 3, 4, 5, 6]
    assert steps["validation/loss"] == [3, 6] and steps["samples/0"] == steps["samples/1"] == [3, 6]


def test_validation_is_logged_on_its_interval(tmp_path):
    model = make_model()
    results = training.train(
        model, batches, training.Schedule(steps=12, checkpoint_every=6, validate_every=4),
        training.Storage(tmp_path / "ck", tmp_path / "losses"), validation=lambda: [batches(1000), batches(1001)],
    )
    assert [step for step, _ in LossLog(tmp_path / "losses").values("validation.loss")] == [4, 8, 12]
    assert set(results) >= {"loss"}


def test_a_non_finite_loss_is_a_clear_error(tmp_path):
    model = make_model()

    def bad(step):
        inputs, targets = batches(step)
        return inputs, targets * np.float32("nan")

    with pytest.raises(DeepRestoreError, match="non-finite at step 1"):
        training.train(model, bad, training.Schedule(steps=5), training.Storage(tmp_path))


def test_a_missing_or_mismatched_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(DeepRestoreError, match="No checkpoint"):
        training.load_checkpoint(make_model(), tmp_path)
    training.train(make_model(), batches, training.Schedule(steps=2, checkpoint_every=2), training.Storage(tmp_path))
    other = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    other.compile(optimizer="adam", loss="mse")
    with pytest.raises(DeepRestoreError, match="variables"):
        training.load_checkpoint(other, tmp_path)


SCRIPT = MODEL_SOURCE + textwrap.dedent("""
    import sys, time
    from deeprestore import training

    def slow_batches(step):
        time.sleep(0.02)
        print(f"step {step}", flush=True)
        return batches(step)

    try:
        training.train(make_model(), slow_batches, training.Schedule(steps=int(sys.argv[2]), checkpoint_every=5),
                       training.Storage(sys.argv[1], resume=sys.argv[3] == "resume"))
    except training.Interrupted as error:
        print(f"interrupted: {error}", flush=True)
        sys.exit(130)
""")


def start_training(tmp_path, steps, mode):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    return subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "ck"), str(steps), mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(pathlib.Path(__file__).parents[1])},
    )


def wait_for_step(process, step):
    for line in process.stdout:
        if line.startswith("step ") and int(line.split()[1]) >= step:
            return
    raise AssertionError(f"training ended before step {step}: {process.stderr.read()[-2000:]}")


# SIGTERM's checkpoint-and-resume is also tested through the CLI (test_cluster_templates.py, test_interrupts.py).
@pytest.mark.parametrize("sig", [pytest.param(signal.SIGTERM, marks=pytest.mark.slow), signal.SIGKILL],
                         ids=["sigterm", "sigkill"])
def test_a_killed_training_process_resumes_to_the_same_weights(tmp_path, sig):
    process = start_training(tmp_path, 400, "fresh")
    wait_for_step(process, 12)
    process.send_signal(sig)
    output, errors = process.communicate(timeout=120)
    state = training.read_state(tmp_path / "ck")
    assert (state is not None and state["step"] % 5 == 0) or sig == signal.SIGTERM
    if sig == signal.SIGTERM:
        assert process.returncode == 130 and "interrupted" in output, errors[-2000:]
    else:
        assert process.returncode == -signal.SIGKILL
    assert not list(pathlib.Path(tmp_path / "ck").glob(".*partial"))
    assert sorted(path.name for path in (tmp_path / "ck").glob("step-*")) == [state["file"]]  # only the last kept
    resumed_step = state["step"]
    assert resumed_step >= 5
    # Resume up to a few steps past the kill, and compare with an uninterrupted run of the same length.
    target = resumed_step + 5
    process = start_training(tmp_path, target, "resume")
    output, errors = process.communicate(timeout=120)
    assert process.returncode == 0, errors[-2000:]
    assert f"step {resumed_step - 1}\n" not in output  # nothing before the checkpoint was redone
    resumed = make_model()
    training.load_checkpoint(resumed, tmp_path / "ck")
    straight = make_model()
    training.train(straight, batches, training.Schedule(steps=target, checkpoint_every=5),
                   training.Storage(tmp_path / "s"))
    for left, right in zip(weights_of(straight), weights_of(resumed)):
        np.testing.assert_allclose(left, right, rtol=1e-5, atol=1e-6)
